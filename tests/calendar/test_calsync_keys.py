"""Deduplication keys: stable when an event or one occurrence of a series moves."""

from __future__ import annotations

from calsync_helpers import by_summary, calendar, expand, fixture_bytes

from botsched import calsync

SERIES = "ical:weekly-sync-7f3a@example.com@"


def test_single_event_key_is_the_uid() -> None:
    keys = {w.summary: w.key for w in expand("google.ics").wanted}
    assert keys["Sprint planning"] == "ical:5k2j3h4g5f6d7s8a9q0w1e2r3t@google.com"


def test_series_keys_carry_the_original_start_in_utc() -> None:
    result = expand("recurring.ics", days=60)
    assert [(w.key, w.join_at) for w in result.wanted] == [
        (SERIES + "2030-03-18T08:30:00Z", "2030-03-18T08:30:00Z"),
        # moved from Monday 09:30 to Tuesday 14:00: the key keeps the original start
        (SERIES + "2030-03-25T08:30:00Z", "2030-03-26T13:00:00Z"),
        # RDATE: an extra occurrence
        (SERIES + "2030-03-27T15:00:00Z", "2030-03-27T15:00:00Z"),
        # 1 April is an EXDATE; 8 April is cancelled; after DST: 09:30 CEST = 07:30Z
        (SERIES + "2030-04-15T07:30:00Z", "2030-04-15T07:30:00Z"),
        (SERIES + "2030-04-22T07:30:00Z", "2030-04-22T07:30:00Z"),
    ]
    assert [(s.key, s.reason) for s in result.skipped] == [(SERIES + "2030-04-08T07:30:00Z", calsync.CANCELLED)]
    moved = by_summary(result)["Weekly sync (moved to Tuesday)"][0]
    assert moved.metadata["calendar_summary"] == "Weekly sync (moved to Tuesday)"


def test_moving_a_single_event_keeps_its_key() -> None:
    before = expand(calendar("UID:m\nSUMMARY:M\nDTSTART:20300318T100000Z\nURL:https://zoom.us/j/1").encode())
    after = expand(calendar("UID:m\nSUMMARY:M\nDTSTART:20300319T150000Z\nURL:https://zoom.us/j/1").encode())
    assert before.wanted[0].key == after.wanted[0].key == "ical:m"
    assert before.wanted[0].join_at != after.wanted[0].join_at


def test_moving_one_occurrence_keeps_its_key() -> None:
    text = fixture_bytes("recurring.ics").decode()
    plain = text.replace("DTSTART;TZID=Europe/Berlin:20300326T140000", "DTSTART;TZID=Europe/Berlin:20300325T093000")
    plain = plain.replace("DTEND;TZID=Europe/Berlin:20300326T143000", "DTEND;TZID=Europe/Berlin:20300325T100000")
    key = SERIES + "2030-03-25T08:30:00Z"
    moved = {w.key: w.join_at for w in expand(text.encode(), days=60).wanted}
    unmoved = {w.key: w.join_at for w in expand(plain.encode(), days=60).wanted}
    assert set(moved) == set(unmoved)
    assert (unmoved[key], moved[key]) == ("2030-03-25T08:30:00Z", "2030-03-26T13:00:00Z")


def test_keys_are_the_same_whatever_the_local_zone_for_zoned_events() -> None:
    from zoneinfo import ZoneInfo

    berlin = {w.key for w in expand("recurring.ics", days=60).wanted}
    tokyo = {w.key for w in expand("recurring.ics", days=60, zone=ZoneInfo("Asia/Tokyo")).wanted}
    assert berlin == tokyo


def test_long_or_odd_uids_are_hashed_to_fit() -> None:
    long_uid = "x" * 500
    assert calsync.uid_part(long_uid).startswith("sha1-") and len(calsync.uid_part(long_uid)) == 45
    assert calsync.uid_part("tab\there").startswith("sha1-")
    assert calsync.uid_part("normal@example.com") == "normal@example.com"
    key = calsync.event_key(long_uid, "2030-03-18T08:30:00Z")
    assert len(key) <= 256 and key.endswith("@2030-03-18T08:30:00Z")
    text = calendar(f"UID:{long_uid}\nSUMMARY:L\nDTSTART:20300318T100000Z\nURL:https://zoom.us/j/1").encode()
    [want] = expand(text).wanted
    assert want.key == calsync.event_key(long_uid, None)
    assert want.metadata["calendar_uid"] == long_uid  # the UID itself stays in the metadata


def test_every_key_is_a_valid_dedup_key() -> None:
    from botsched.core.validation import validate_dedup_key, validate_metadata

    for name in ("google.ics", "outlook.ics", "apple.ics", "recurring.ics", "dst.ics"):
        result = expand(name, days=300)
        for item in [*result.wanted, *result.skipped]:
            assert validate_dedup_key(item.key) == item.key
        for want in result.wanted:
            validate_metadata(want.metadata)
