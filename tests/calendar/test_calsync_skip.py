"""Which occurrences get no bot, and the reasons given."""

from __future__ import annotations

from calsync_helpers import NOW_US, calendar, expand, us

from botsched import calsync

URL = "URL:https://zoom.us/j/1"


def one(body: str, **options: object) -> calsync.Wanted | calsync.Skipped:
    result = expand(calendar(body).encode(), **options)
    items = [*result.wanted, *result.skipped]
    assert len(items) == 1, items
    return items[0]


def test_cancelled_event() -> None:
    item = one(f"UID:c\nSUMMARY:C\nDTSTART:20300318T100000Z\nSTATUS:CANCELLED\n{URL}")
    assert isinstance(item, calsync.Skipped) and item.reason == calsync.CANCELLED and item.cancels_bot


def test_all_day_event() -> None:
    item = one(f"UID:a\nSUMMARY:A\nDTSTART;VALUE=DATE:20300318\n{URL}")
    assert isinstance(item, calsync.Skipped) and item.reason == calsync.ALL_DAY


def test_declined_by_configured_address_case_insensitively() -> None:
    body = (f"UID:d\nSUMMARY:D\nDTSTART:20300318T100000Z\n{URL}\n"
            "ATTENDEE;PARTSTAT=DECLINED:MAILTO:Me@Example.COM\nATTENDEE;PARTSTAT=ACCEPTED:mailto:you@example.com")
    item = one(body, email=" ME@example.com ")
    assert isinstance(item, calsync.Skipped) and item.reason == "declined by me@example.com"


def test_declined_by_someone_else_is_kept() -> None:
    body = f"UID:d\nSUMMARY:D\nDTSTART:20300318T100000Z\n{URL}\nATTENDEE;PARTSTAT=DECLINED:mailto:you@example.com"
    assert isinstance(one(body), calsync.Wanted)


def test_declined_is_ignored_without_a_configured_address() -> None:
    body = f"UID:d\nSUMMARY:D\nDTSTART:20300318T100000Z\n{URL}\nATTENDEE;PARTSTAT=DECLINED:mailto:me@example.com"
    assert isinstance(one(body, email=""), calsync.Wanted)


def test_several_configured_addresses() -> None:
    body = f"UID:d\nSUMMARY:D\nDTSTART:20300318T100000Z\n{URL}\nATTENDEE;PARTSTAT=DECLINED:mailto:alias@example.com"
    assert isinstance(one(body, email="me@example.com, alias@example.com"), calsync.Skipped)


def test_tentative_and_needs_action_are_kept() -> None:
    for partstat in ("TENTATIVE", "NEEDS-ACTION", "ACCEPTED"):
        body = f"UID:d\nSUMMARY:D\nDTSTART:20300318T100000Z\n{URL}\nATTENDEE;PARTSTAT={partstat}:mailto:me@example.com"
        assert isinstance(one(body), calsync.Wanted)


def test_no_meeting_url_is_counted() -> None:
    result = expand(calendar("UID:n1\nSUMMARY:N\nDTSTART:20300318T100000Z\nLOCATION:Room 1",
                             "UID:n2\nSUMMARY:N\nDTSTART:20300318T110000Z").encode())
    assert result.no_url == 2 and not result.wanted


def test_past_occurrences_are_left_out_and_running_ones_skipped() -> None:
    body_past = f"UID:p\nSUMMARY:Past\nDTSTART:20300317T100000Z\nDTEND:20300317T110000Z\n{URL}"
    body_running = f"UID:r\nSUMMARY:Running\nDTSTART:20300317T113000Z\nDTEND:20300317T123000Z\n{URL}"
    result = expand(calendar(body_past, body_running).encode())  # now is 12:00Z
    assert not result.wanted
    assert [(s.summary, s.reason) for s in result.skipped] == [("Running", calsync.STARTED)]
    assert not result.skipped[0].cancels_bot


def test_join_offset_that_lands_in_the_past() -> None:
    body = f"UID:s\nSUMMARY:Soon\nDTSTART:20300317T120030Z\nDTEND:20300317T130000Z\n{URL}"
    assert isinstance(one(body), calsync.Wanted)
    item = one(body, join_offset_us=-60_000_000)
    assert isinstance(item, calsync.Skipped) and item.reason == calsync.JOIN_PASSED


def test_positive_join_offset_can_still_join_a_started_meeting() -> None:
    body = f"UID:s\nSUMMARY:Started\nDTSTART:20300317T115900Z\nDTEND:20300317T130000Z\n{URL}"
    item = one(body, join_offset_us=5 * 60_000_000)
    assert isinstance(item, calsync.Wanted) and item.join_at == "2030-03-17T12:04:00Z"


def test_window_is_now_plus_days() -> None:
    events = [f"UID:e{day}\nSUMMARY:E\nDTSTART:203003{day:02d}T100000Z\n{URL}" for day in range(18, 31)]
    result = expand(calendar(*events).encode(), days=3)  # 17 Mar 12:00 .. 20 Mar 12:00
    assert [w.key for w in result.wanted] == ["ical:e18", "ical:e19", "ical:e20"]
    assert result.window_end_us == NOW_US + 3 * 86_400_000_000


def test_join_offset_moves_the_join_time() -> None:
    item = one(f"UID:o\nSUMMARY:O\nDTSTART:20300318T100000Z\n{URL}", join_offset_us=-60_000_000)
    assert isinstance(item, calsync.Wanted)
    assert item.start_us == us(2030, 3, 18, 10) and item.join_at == "2030-03-18T09:59:00Z"


def test_the_same_event_twice_gives_one_bot() -> None:
    body = f"UID:dup\nSUMMARY:Dup\nDTSTART:20300318T100000Z\n{URL}"
    result = expand(calendar(body, body).encode())
    assert [w.key for w in result.wanted] == ["ical:dup"]


def test_one_event_in_two_calendars_of_a_file_gives_one_bot() -> None:
    first = calendar(f"UID:dup\nSUMMARY:First\nDTSTART:20300318T100000Z\n{URL}")
    second = calendar(f"UID:dup\nSUMMARY:Second\nDTSTART:20300319T100000Z\n{URL}")
    result = expand((first + second).encode())
    assert [(w.key, w.summary) for w in result.wanted] == [("ical:dup", "First")]
    assert [(s.summary, s.reason) for s in result.skipped] == [("Second", calsync.DUPLICATE)]


def test_cancelled_beats_all_day_and_missing_link() -> None:
    item = one("UID:x\nSUMMARY:X\nDTSTART;VALUE=DATE:20300318\nSTATUS:CANCELLED")
    assert isinstance(item, calsync.Skipped) and item.reason == calsync.CANCELLED
