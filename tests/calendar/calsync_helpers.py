"""Shared helpers of the calendar sync tests: fixtures on disk, a fixed "now", date shifting,
and a throwaway botsched home for the end-to-end tests.

(No ``__init__.py`` in this directory on purpose: a package named ``calendar`` would shadow
the standard library's.)
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from botsched import calsync
from botsched.core.timeparse import to_us

UTC = timezone.utc
FIXTURES = Path(__file__).parent / "fixtures"
BERLIN = ZoneInfo("Europe/Berlin")
#: The fixtures' week starts on this Monday.
ANCHOR = date(2030, 3, 18)
#: "now" for the unit tests: the Sunday before, noon UTC.
NOW = datetime(2030, 3, 17, 12, 0, tzinfo=UTC)
NOW_US = to_us(NOW)
BOTSCHED = str(Path(sys.executable).parent / "botsched")
EMAIL = "me@example.com"


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


# -- a botsched home with its own daemon ---------------------------------------------


class Home:
    """A short BOTSCHED_HOME under /tmp (socket paths stay far below 107 bytes)."""

    def __init__(self, config: str) -> None:
        self.path = Path(tempfile.mkdtemp(prefix="bs", dir="/tmp"))
        (self.path / "config.toml").write_text(config)
        self.env = {k: v for k, v in os.environ.items() if not k.startswith("BOTSCHED_")}
        self.env.update({"BOTSCHED_HOME": str(self.path), "TZ": "Europe/Berlin", "NO_COLOR": "1",
                         "COLUMNS": "120"})

    def run(self, *args: str, input: str | None = None, check: bool = False) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([BOTSCHED, *args], input=input, env=self.env, capture_output=True, text=True,
                                timeout=60)
        assert "Traceback" not in result.stderr, result.stderr
        if check:
            assert result.returncode == 0, (result.returncode, result.stdout, result.stderr)
        return result

    def sync(self, ics: str, *options: str, expect: int = 0) -> dict[str, Any]:
        """``calendar sync - --json`` with the text on stdin; the parsed report."""
        result = self.run("calendar", "sync", "-", "--json", "--days", "60", *options, input=ics)
        assert result.returncode == expect, (result.returncode, result.stdout, result.stderr)
        return json.loads(result.stdout)

    def bots(self) -> list[dict[str, Any]]:
        """Every bot, straight from the daemon's socket (a process per check would be slow)."""
        from botsched.client.connection import connect
        from botsched.core.paths import resolve_paths

        with connect(resolve_paths({"BOTSCHED_HOME": str(self.path)}), autostart=False) as conn:
            page, _ = conn.call("list", states=[], limit=0)
        return page["bots"]

    def by_key(self) -> dict[str, dict[str, Any]]:
        return {bot["deduplication_key"]: bot for bot in self.bots()}

    def close(self) -> None:
        self.run("daemon", "stop")
        shutil.rmtree(self.path, ignore_errors=True)


def actions_by(report: dict[str, Any], action: str) -> list[dict[str, Any]]:
    return [item for item in report["actions"] if item["action"] == action]
