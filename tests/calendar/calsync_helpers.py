"""Shared helpers of the calendar sync tests: fixtures on disk, a fixed "now", date shifting,
and the environment of the end-to-end tests' homes (``tests.support.home.Home``).

(No ``__init__.py`` in this directory on purpose: a package named ``calendar`` would shadow
the standard library's.)
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from botsched import calsync
from botsched.core.timeparse import to_us
from tests.support.home import Home

UTC = UTC
FIXTURES = Path(__file__).parent / "fixtures"
BERLIN = ZoneInfo("Europe/Berlin")
#: The fixtures' week starts on this Monday.
ANCHOR = date(2030, 3, 18)
#: "now" for the unit tests: the Sunday before, noon UTC.
NOW = datetime(2030, 3, 17, 12, 0, tzinfo=UTC)
NOW_US = to_us(NOW)
EMAIL = "me@example.com"
#: What every end-to-end home runs with: the fixtures' zone, tables of a usual width.
HOME_ENV = {"TZ": "Europe/Berlin", "COLUMNS": "120"}

__all__ = ["Home"]  # re-exported for the tests' annotations


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def us(year: int, month: int, day: int, hour: int = 0, minute: int = 0, tz: Any = UTC) -> int:
    return to_us(datetime(year, month, day, hour, minute, tzinfo=tz))


def expand(source: str | bytes, now: int = NOW_US, **options: Any) -> calsync.Expansion:
    """``calsync.expand`` on a fixture name (or raw text) with the test defaults."""
    data = fixture_bytes(source) if isinstance(source, str) and source.endswith(".ics") else source
    options.setdefault("email", EMAIL)
    options.setdefault("zone", BERLIN)
    return calsync.expand(data, now, **options)


def by_summary(expansion: calsync.Expansion) -> dict[str, list[Any]]:
    found: dict[str, list[Any]] = {}
    for item in [*expansion.wanted, *expansion.skipped]:
        found.setdefault(item.summary, []).append(item)
    return found


def calendar(*events: str, extra: str = "") -> str:
    """A minimal VCALENDAR around VEVENT bodies (each without BEGIN/END lines)."""
    body = "".join(f"BEGIN:VEVENT\n{event.strip()}\nEND:VEVENT\n" for event in events)
    return f"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:-//botsched tests//EN\n{extra}{body}END:VCALENDAR\n"


# -- moving fixtures into the real future (end-to-end tests) -------------------------

_FIXTURE_DATE = re.compile(r"(?<=[:,=])(203\d)(\d\d)(\d\d)(?!\d\d)")


def shift_days(today: date | None = None) -> int:
    """Whole weeks that move the fixtures' Monday to the first Monday at least 2 days ahead."""
    today = today or datetime.now(UTC).date()
    target = today + timedelta(days=2)
    target += timedelta(days=(7 - target.weekday()) % 7)
    return (target - ANCHOR).days


def shifted(name: str, days: int | None = None) -> str:
    """A fixture's text with every 203x date moved by ``days`` (whole weeks keep weekdays)."""
    days = shift_days() if days is None else days

    def move(match: re.Match[str]) -> str:
        moved = date(int(match[1]), int(match[2]), int(match[3])) + timedelta(days=days)
        return moved.strftime("%Y%m%d")

    return _FIXTURE_DATE.sub(move, fixture_bytes(name).decode())


def actions_by(report: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [item for item in report["actions"] if item["action"] == action]
