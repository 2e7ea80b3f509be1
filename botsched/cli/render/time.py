"""Times for people: local (in the one display zone) beside UTC, and "in 3 minutes".

Stdlib only (no pendulum): relative times round to the nearest unit, so a bot created
with ``--join-at +3m`` reads "in 3 minutes", not the floored "in 2 minutes".
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, tzinfo

from botsched.cli.output import display_zone

__all__ = ["display_zone", "duration", "event_time", "gap", "in_zone", "local", "parse", "relative", "when",
           "zone_label"]


def parse(text: str) -> datetime:
    """A wire instant (``...Z`` or with an offset) as an aware datetime."""
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


def in_zone(moment: datetime, zone: tzinfo) -> datetime:
    """``moment`` in ``zone``, or left in UTC where the zone would leave the calendar
    (a bot stored for 9999-12-31 before such times were refused)."""
    try:
        return moment.astimezone(zone)
    except (OverflowError, ValueError):
        return moment.astimezone(UTC)


def local(text: str, zone: tzinfo, fmt: str = "%Y-%m-%d %H:%M:%S %Z") -> str:
    return in_zone(parse(text), zone).strftime(fmt)


def zone_label(zone: tzinfo, now: float | None = None) -> str:
    """The zone's name as a column header shows it ("JST", "CET"), the same in every screen."""
    moment = datetime.fromtimestamp(time.time() if now is None else now, zone)
    return moment.strftime("%Z") or "local"


#: (seconds in the unit, its name), largest first.
_UNITS = ((365.25 * 86400, "year"), (30.44 * 86400, "month"), (7 * 86400, "week"), (86400, "day"),
          (3600, "hour"), (60, "minute"), (1, "second"))


def relative(text: str, now: float | None = None) -> str:
    """"in 3 minutes" / "2 hours ago": the largest unit that rounds to at least one of it,
    rounded to the nearest (2 min 59.9 s is "3 minutes"; 2 min 29 s is "2 minutes")."""
    seconds = parse(text).timestamp() - (time.time() if now is None else now)
    span = abs(seconds)
    if span < 10:
        phrase = "a few seconds"
    else:
        index = next(i for i, (size, _) in enumerate(_UNITS) if span >= size)
        count = int(span / _UNITS[index][0] + 0.5)  # half up: 2 min 30 s is "3 minutes"
        if index and count * _UNITS[index][0] >= _UNITS[index - 1][0]:
            index, count = index - 1, 1  # 59 min 50 s rounds to "1 hour", not "60 minutes"
        name = _UNITS[index][1]
        phrase = f"{count} {name}{'s' if count != 1 else ''}"
    return f"in {phrase}" if seconds > 0 else f"{phrase} ago"


def when(text: str | None) -> tuple[str, str]:
    """("2026-12-01 16:00:00 CET", "in 3 minutes") for a UTC ISO time, or dashes."""
    if not text:
        return "—", ""
    return local(text, display_zone()), relative(text)


def duration(seconds: float) -> str:
    """4s, 12m 5s, 3h 2m, 2d 4h."""
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def gap(seconds: float) -> str:
    """Time between two events: +0.2s, +8m 0s."""
    if seconds < 60:
        return f"+{seconds:.1f}s" if seconds >= 0.1 else f"+{seconds * 1000:.0f}ms"
    return "+" + duration(seconds)


def event_time(text: str, zone: tzinfo) -> str:
    """An event's moment to the millisecond: 2026-12-01 16:00:00.250 CET."""
    moment = in_zone(parse(text), zone)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} " + moment.strftime("%Z")
