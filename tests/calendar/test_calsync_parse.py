"""Parsing the exports: what each fixture turns into, and bad input."""

from __future__ import annotations

import pytest
from calsync_helpers import BERLIN, NOW_US, by_summary, calendar, expand, fixture_bytes, us

from botsched import calsync
from botsched.core.errors import InvalidInput


def test_google_export() -> None:
    result = expand("google.ics")
    wanted = {(w.summary, w.join_at, w.meeting_url) for w in result.wanted}
    assert wanted == {
        ("Sprint planning", "2030-03-18T09:00:00Z", "https://meet.google.com/abc-defg-hij"),
        ("Customer call: ACME pricing", "2030-03-19T15:00:00Z",
         "https://us02web.zoom.us/j/87654321098?pwd=QWxhZGRpbjpvcGVu"),
        ("Team standup", "2030-03-18T08:15:00Z", "https://meet.google.com/sta-ndup-now"),
        ("Team standup", "2030-03-22T08:15:00Z", "https://meet.google.com/sta-ndup-now"),
    }
    reasons = {(s.summary, s.reason) for s in result.skipped}
    assert reasons == {
        ("Lunch with Sam", calsync.NO_URL),
        ("Team standup", calsync.CANCELLED),  # one occurrence cancelled via RECURRENCE-ID
        ("Budget review", "declined by me@example.com"),
        ("Design crit", calsync.CANCELLED),
        ("Company offsite", calsync.ALL_DAY),
    }
    assert result.no_url == 1


def test_outlook_export_with_windows_zones_and_teams() -> None:
    result = by_summary(expand("outlook.ics"))
    review = result["Quarterly review"][0]
    # W. Europe Standard Time in March (before DST) is UTC+1.
    assert review.start_us == us(2030, 3, 20, 13, 0)
    assert review.meeting_url.startswith("https://teams.microsoft.com/l/meetup-join/19%3ameeting_NjA5ZTQ2YjEt")
    assert review.meeting_url.endswith("%22%7d")
    assert review.uid.startswith("040000008200E00074C5B7101A82E008")
    assert review.key == "ical:" + review.uid
    # Pacific Standard Time on 21 March is already PDT (UTC-7).
    partner = result["Partner sync (Fabrikam)"][0]
    assert partner.start_us == us(2030, 3, 21, 16, 0)
    assert partner.meeting_url == (
        "https://teams.microsoft.com/l/meetup-join/19%3ameeting_ZGVmYWJyaWth%40thread.v2/0"
        "?context=%7b%22Tid%22%3a%22f00d%22%7d"
    )
    demo = result["Vendor demo"][0]
    assert demo.start_us == us(2030, 3, 22, 7, 30)
    assert demo.meeting_url == "https://fabrikam.webex.com/fabrikam/j.php?MTID=m0123456789abcdef0123456789abcdef"


def test_apple_export() -> None:
    result = by_summary(expand("apple.ics"))
    design = result["Design review"][0]
    assert design.meeting_url == "https://acme.zoom.us/j/5551234567?pwd=ZmFrZQ"  # URL property
    assert design.start_us == us(2030, 3, 19, 15, 0)  # 11:00 EDT
    jordan = result["Call with Jordan"][0]  # floating 09:00, local zone Europe/Berlin
    assert jordan.start_us == us(2030, 3, 20, 8, 0)
    assert jordan.meeting_url == "https://meet.jit.si/acme-weekly-jordan"  # LOCATION that is only a link
    assert result["Fabrikam roadmap"][0].reason == "declined by me@example.com"  # MAILTO:ME@EXAMPLE.COM
    ama = result["Webex AMA"][0]
    assert ama.meeting_url == "https://fabrikam.webex.com/fabrikam/j.php?MTID=mfeedfacefeedfacefeedfacefeedface"


def test_metadata_names_the_event() -> None:
    [want] = [w for w in expand("google.ics").wanted if w.summary == "Sprint planning"]
    assert want.metadata == {"calendar_uid": "5k2j3h4g5f6d7s8a9q0w1e2r3t@google.com",
                             "calendar_summary": "Sprint planning"}


def test_long_summary_is_truncated_and_whitespace_collapsed() -> None:
    text = calendar(f"UID:long\nSUMMARY:{'word ' * 200}\n\tend\nDTSTART:20300318T100000Z\nURL:https://zoom.us/j/1")
    [want] = expand(text.encode()).wanted
    assert len(want.metadata["calendar_summary"]) == calsync.MAX_SUMMARY
    assert "  " not in want.summary


def test_crlf_bom_and_folded_lines() -> None:
    text = calendar("UID:crlf\nSUMMARY:Folded\nDTSTART:20300318T100000Z\n"
                    "DESCRIPTION:join https://zoom.us/j/12\n 345678 now")
    data = b"\xef\xbb\xbf" + text.replace("\n", "\r\n").encode()
    [want] = expand(data).wanted
    assert want.meeting_url == "https://zoom.us/j/12345678"


def test_several_calendars_in_one_file() -> None:
    one = calendar("UID:a\nSUMMARY:A\nDTSTART:20300318T100000Z\nURL:https://zoom.us/j/1")
    two = calendar("UID:b\nSUMMARY:B\nDTSTART:20300318T110000Z\nURL:https://zoom.us/j/2")
    assert {w.key for w in expand((one + two).encode()).wanted} == {"ical:a", "ical:b"}


def test_event_without_uid_gets_a_stable_key() -> None:
    text = calendar("SUMMARY:No UID\nDTSTART:20300318T100000Z\nURL:https://zoom.us/j/1").encode()
    [first] = expand(text).wanted
    [second] = expand(text).wanted
    assert first.key == second.key and first.key.startswith("ical:nouid-")


def test_no_events_is_fine() -> None:
    result = expand(calendar().encode())
    assert result.wanted == [] and result.skipped == []


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "not an iCalendar file"),
        (b"hello world\n", "not an iCalendar file"),
        (b"\x89PNG\r\n\x1a\n\x00\x00", "not an iCalendar file"),
        (b"BEGIN:VCALENDAR\nthis is not a content line\nEND:VCALENDAR\n", "not a valid iCalendar file"),
        (b"BEGIN:VCALENDAR\nVERSION:2.0\n", "iCalendar file"),
    ],
)
def test_bad_input_is_invalid_input(data: bytes, message: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        calsync.expand(data, NOW_US, source="x.ics")
    assert message in caught.value.message
    assert caught.value.message.startswith("x.ics: ")
    assert "\n" not in caught.value.message


def test_days_must_be_positive() -> None:
    with pytest.raises(InvalidInput):
        calsync.expand(fixture_bytes("google.ics"), NOW_US, days=0)


def test_accepts_parsed_calendars() -> None:
    [parsed] = calsync.parse_calendars(fixture_bytes("google.ics"))
    assert len(calsync.expand(parsed, NOW_US, zone=BERLIN, email="me@example.com").wanted) == 4
