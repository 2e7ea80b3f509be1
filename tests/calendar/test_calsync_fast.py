"""The reading shortcuts change nothing: the same plan with and without them.

``calsync`` leaves out events that cannot touch the window, starts long series and time
zone rules shortly before it, and reads text properties itself (``calsync.ics._FAST``).
Here every fixture, and calendars from the benchmark's generator around DST changes,
with and without X-WR-TIMEZONE, are expanded both ways and must agree exactly.
"""

from __future__ import annotations

import importlib.util
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from calsync_helpers import BERLIN, EMAIL, FIXTURES, NOW_US

from botsched import calsync
from botsched.core.timeparse import to_us

BENCH = Path(__file__).resolve().parents[2] / "bench" / "calendar_sync.py"


def generator():  # the benchmark's calendar generator (bench/ is not a package)
    spec = importlib.util.spec_from_file_location("bench_calendar_sync", BENCH)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("bench_calendar_sync", module)
    sys.path.insert(0, str(BENCH.parent))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCH.parent))
    return module


def both_ways(monkeypatch: pytest.MonkeyPatch, data: bytes, now_us: int, **options: object) -> tuple:
    results = []
    for fast in (False, True):
        monkeypatch.setattr(calsync.ics, "_FAST", fast)
        result = calsync.expand(data, now_us, email=EMAIL, zone=BERLIN, **options)  # type: ignore[arg-type]
        results.append(([(w.key, w.join_at_us, w.summary, w.meeting_url) for w in result.wanted],
                        [(s.key, s.start_us, s.summary, s.reason) for s in result.skipped]))
    return results[0], results[1]


@pytest.mark.parametrize("name", sorted(path.name for path in FIXTURES.glob("*.ics")))
def test_fixtures_read_the_same(monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    slow, fast = both_ways(monkeypatch, (FIXTURES / name).read_bytes(), NOW_US, days=30)
    assert fast == slow


@pytest.mark.parametrize(
    ("today", "days", "x_wr"),
    [
        (date(2030, 3, 24), 14, True),  # across the spring DST change in Europe and (2 weeks earlier) the US
        (date(2030, 10, 21), 14, False),  # across the autumn one
        (date(2030, 7, 1), 60, True),
        (date(2031, 1, 2), 30, False),  # across a year end
    ],
)
def test_generated_calendars_read_the_same(monkeypatch: pytest.MonkeyPatch, today: date, days: int,
                                           x_wr: bool) -> None:
    text = generator().generate(700, today=today, seed=today.toordinal(), days=days)
    if not x_wr:
        text = text.replace("X-WR-TIMEZONE:Europe/Berlin\r\n", "")
    now_us = to_us(datetime(today.year, today.month, today.day, 12, tzinfo=UTC))
    slow, fast = both_ways(monkeypatch, text.encode(), now_us, days=days, join_offset_us=-60_000_000)
    assert len(slow[0]) > 20  # the window does hold meetings
    assert fast == slow


def test_a_series_moved_close_to_the_window_keeps_its_occurrences(monkeypatch: pytest.MonkeyPatch) -> None:
    start = date(2030, 3, 18) - timedelta(weeks=300)
    body = "\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN", "X-WR-TIMEZONE:America/New_York",
        "BEGIN:VEVENT", "UID:old-weekly", "SUMMARY:Old weekly",
        f"DTSTART:{start:%Y%m%d}T140000Z", f"DTEND:{start:%Y%m%d}T143000Z",  # 10:00 EDT in summer
        "RRULE:FREQ=WEEKLY;INTERVAL=2;BYDAY=MO,WE", "URL:https://zoom.us/j/1", "END:VEVENT",
        "BEGIN:VEVENT", "UID:old-monthly", "SUMMARY:Old monthly",
        "DTSTART;TZID=Europe/Berlin:20200114T090000", "DTEND;TZID=Europe/Berlin:20200114T100000",
        "RRULE:FREQ=MONTHLY;BYDAY=2TU", "URL:https://zoom.us/j/2", "END:VEVENT",
        "END:VCALENDAR", ""])
    slow, fast = both_ways(monkeypatch, body.encode(), NOW_US, days=60)
    assert fast == slow and len(slow[0]) >= 10


def test_an_override_in_the_window_keeps_its_ended_series(monkeypatch: pytest.MonkeyPatch) -> None:
    # The series ended long ago, but an override of it is in the window and its date is an
    # EXDATE of the series: without the series the override would show up.
    body = "\n".join([
        "BEGIN:VCALENDAR", "VERSION:2.0", "PRODID:-//t//EN",
        "BEGIN:VEVENT", "UID:ended", "SUMMARY:Ended", "DTSTART;TZID=Europe/Berlin:20270105T080000",
        "RRULE:FREQ=WEEKLY;UNTIL=20281231T235959Z", "EXDATE;TZID=Europe/Berlin:20300319T080000",
        "URL:https://zoom.us/j/1", "END:VEVENT",
        "BEGIN:VEVENT", "UID:ended", "SUMMARY:Ended", "RECURRENCE-ID;TZID=Europe/Berlin:20300319T080000",
        "DTSTART;TZID=Europe/Berlin:20300319T080000", "STATUS:CANCELLED", "URL:https://zoom.us/j/1", "END:VEVENT",
        "END:VCALENDAR", ""])
    slow, fast = both_ways(monkeypatch, body.encode(), NOW_US, days=14)
    assert fast == slow
