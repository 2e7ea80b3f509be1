"""Time zones: TZID (IANA and Windows names, with or without VTIMEZONE), UTC, floating, DST."""

from __future__ import annotations

import warnings
from datetime import datetime
from zoneinfo import ZoneInfo

import pytest
from calsync_helpers import calendar, expand, us

from botsched import calsync
from botsched.core.timeparse import to_us

URL = "URL:https://zoom.us/j/1"


def joins(result: calsync.Expansion, summary: str) -> list[str]:
    return [w.join_at for w in result.wanted if w.summary == summary]


@pytest.fixture(scope="module")
def dst() -> calsync.Expansion:
    return expand("dst.ics", now=us(2030, 2, 28), days=300)


def test_berlin_series_keeps_10_oclock_across_spring_forward(dst: calsync.Expansion) -> None:
    # 31 March 2030: CET (UTC+1) -> CEST (UTC+2)
    assert joins(dst, "Berlin Monday review") == [
        "2030-03-25T09:00:00Z", "2030-04-01T08:00:00Z", "2030-04-08T08:00:00Z"]


def test_outlook_vtimezone_with_windows_name_across_spring_forward(dst: calsync.Expansion) -> None:
    assert joins(dst, "Outlook Thursday 1:1") == ["2030-03-28T15:00:00Z", "2030-04-04T14:00:00Z"]


def test_new_york_without_vtimezone_across_us_spring_forward(dst: calsync.Expansion) -> None:
    # 10 March 2030: EST (UTC-5) -> EDT (UTC-4)
    assert joins(dst, "New York Friday standup") == [
        "2030-03-01T14:00:00Z", "2030-03-08T14:00:00Z", "2030-03-15T13:00:00Z"]


def test_windows_name_without_vtimezone_uses_icalendars_mapping(dst: calsync.Expansion) -> None:
    # "Pacific Standard Time" -> America/Los_Angeles: 08:00 PST then 08:00 PDT
    assert joins(dst, "Pacific Tuesday sync") == ["2030-03-05T16:00:00Z", "2030-03-12T15:00:00Z"]


def test_floating_series_is_local_wall_clock(dst: calsync.Expansion) -> None:
    assert joins(dst, "Floating lunch call") == ["2030-03-25T11:00:00Z", "2030-04-01T10:00:00Z"]


def test_berlin_series_across_fall_back(dst: calsync.Expansion) -> None:
    # 27 October 2030: CEST -> CET
    assert joins(dst, "Autumn Friday retro") == ["2030-10-25T13:00:00Z", "2030-11-01T14:00:00Z"]


def test_series_keys_use_each_original_start_in_utc(dst: calsync.Expansion) -> None:
    keys = [w.key for w in dst.wanted if w.summary == "Berlin Monday review"]
    assert keys == [f"ical:dst-berlin@example.com@{w}" for w in
                    ("2030-03-25T09:00:00Z", "2030-04-01T08:00:00Z", "2030-04-08T08:00:00Z")]


def test_floating_follows_the_configured_zone() -> None:
    text = calendar(f"UID:f\nSUMMARY:F\nDTSTART:20300318T090000\n{URL}").encode()
    assert expand(text, zone=ZoneInfo("America/New_York")).wanted[0].join_at == "2030-03-18T13:00:00Z"
    assert expand(text, zone=ZoneInfo("Europe/Berlin")).wanted[0].join_at == "2030-03-18T08:00:00Z"


def test_utc_is_utc_whatever_the_zone() -> None:
    text = calendar(f"UID:u\nSUMMARY:U\nDTSTART:20300318T090000Z\n{URL}").encode()
    assert expand(text, zone=ZoneInfo("Asia/Tokyo")).wanted[0].join_at == "2030-03-18T09:00:00Z"


@pytest.mark.parametrize(
    ("tzid", "expected"),
    [
        ("W. Europe Standard Time", "2030-03-18T09:00:00Z"),
        ("Pacific Standard Time", "2030-03-18T17:00:00Z"),
        ("Eastern Standard Time", "2030-03-18T14:00:00Z"),
        ("GMT Standard Time", "2030-03-18T10:00:00Z"),
        ("Tokyo Standard Time", "2030-03-18T01:00:00Z"),
        ("Europe/Berlin", "2030-03-18T09:00:00Z"),
        ("/freeassociation.sourceforge.net/Europe/Berlin", "2030-03-18T09:00:00Z"),
    ],
)
def test_tzid_names_without_vtimezone(tzid: str, expected: str) -> None:
    text = calendar(f"UID:t\nSUMMARY:T\nDTSTART;TZID={tzid}:20300318T100000\n{URL}").encode()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing leaks (icalendar warns when it guesses a TZID)
        assert expand(text).wanted[0].join_at == expected


def test_unknown_tzid_is_treated_as_floating() -> None:
    text = calendar(f"UID:t\nSUMMARY:T\nDTSTART;TZID=Mars/Olympus_Mons:20300318T100000\n{URL}").encode()
    assert expand(text, zone=ZoneInfo("America/New_York")).wanted[0].join_at == "2030-03-18T14:00:00Z"


def test_x_wr_timezone_puts_google_utc_series_on_local_wall_clock() -> None:
    # Google sometimes exports a series in UTC with X-WR-TIMEZONE naming the real zone.
    body = f"UID:g\nSUMMARY:G\nDTSTART:20300325T090000Z\nRRULE:FREQ=WEEKLY;COUNT=2\n{URL}"
    text = calendar(body, extra="X-WR-TIMEZONE:Europe/Berlin\n").encode()
    # 10:00 CET, then 10:00 CEST (not 11:00)
    assert [w.join_at for w in expand(text, now=us(2030, 3, 20), days=30).wanted] == [
        "2030-03-25T09:00:00Z", "2030-04-01T08:00:00Z"]


def test_all_day_dates_are_local_days() -> None:
    text = calendar(f"UID:a\nSUMMARY:A\nDTSTART;VALUE=DATE:20300318\n{URL}").encode()
    [skip] = expand(text).skipped
    assert skip.start_us == to_us(datetime(2030, 3, 18, tzinfo=ZoneInfo("Europe/Berlin")))
