"""Time input and output: ``--join-at`` parsing, durations, and the wire format of instants.

Internally every instant is an ``int`` of microseconds since the Unix epoch (UTC): exact,
cheap to compare and index. Only stdlib is imported here, because this module sits on the
CLI's fast path (``create -q``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import datetime, timedelta, timezone, tzinfo

from botsched.errors import InvalidInput

#: A zone, or a function that finds it (config + system lookups cost a few ms: only paid
#: when a time without an offset needs it).
ZoneSource = tzinfo | Callable[[], tzinfo] | None

UTC = timezone.utc
US_PER_S = 1_000_000
_EPOCH_NAIVE = datetime(1970, 1, 1)

_DURATION = re.compile(r"^(?:(\d+)d)?(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$", re.ASCII)
_FRACTION = re.compile(r"\d[Tt ]\d{2}:\d{2}:\d{2}[.,](\d+)", re.ASCII)
#: Already canonical (what the CLI sends): parsed without the general machinery.
_CANONICAL = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,6}))?Z", re.ASCII)
_HAS_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}", re.ASCII)


class JoinTime:
    """A parsed ``--join-at``: the instant, its canonical UTC text, and any warnings.
    (A plain class: ``dataclasses`` costs ~10 ms of start-up on the ``create -q`` path.)"""

    __slots__ = ("us", "text", "warnings")

    def __init__(self, us: int, text: str, warnings: list[str] | None = None) -> None:
        self.us = us
        self.text = text
        self.warnings = warnings if warnings is not None else []

    def __repr__(self) -> str:
        return f"JoinTime({self.us}, {self.text!r}, {self.warnings!r})"


def to_us(moment: datetime) -> int:
    """Aware datetime -> microseconds since the epoch, exactly (no float rounding)."""
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US_PER_S + delta.microseconds


def from_us(us: int) -> datetime:
    return datetime(1970, 1, 1, tzinfo=UTC) + timedelta(microseconds=us)


def format_instant(us: int, digits: int = 6) -> str:
    """UTC ISO 8601 ending in ``Z`` with ``digits`` (0-6) fractional digits, truncated."""
    text = (_EPOCH_NAIVE + timedelta(microseconds=us)).isoformat(timespec="microseconds")
    return (text[: 20 + digits] if digits > 0 else text[:19]) + "Z"


def parse_instant(text: str) -> int:
    """Parse a stored/wire instant (ISO 8601 with offset) back to microseconds."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"not an ISO 8601 time: {text!r}") from None
    if moment.tzinfo is None:
        raise InvalidInput(f"time {text!r} has no UTC offset")
    return to_us(moment)


def parse_duration(text: str) -> int:
    """``+1h30m``, ``90s``, ``-1m``, ``2d`` -> signed microseconds."""
    raw = text.strip()
    sign = -1 if raw.startswith("-") else 1
    body = raw[1:] if raw[:1] in "+-" else raw
    match = _DURATION.match(body)
    if not body or not match or not any(match.groups()):
        raise InvalidInput(f"bad duration {text!r}: use forms like 90s, 10m, 2h, 1d or 1h30m")
    days, hours, minutes, seconds = (int(g) if g else 0 for g in match.groups())
    total_s = ((days * 24 + hours) * 60 + minutes) * 60 + seconds
    return sign * total_s * US_PER_S


def system_zone() -> tzinfo:
    """The system's time zone as an IANA zone when we can name it (honours ``TZ``)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = os.environ.get("TZ", "").lstrip(":")
    if name:
        try:
            return ZoneInfo(name)
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
    except (ZoneInfoNotFoundError, ValueError, OSError):
        pass
    local = datetime.now().astimezone().tzinfo
    return local if local is not None else UTC


def resolve_zone(name: str | None) -> tzinfo:
    """Config ``defaults.timezone`` (an IANA name) or, when empty, the system's zone."""
    if not name:
        return system_zone()
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInput(f"unknown time zone {name!r} (use an IANA name like Europe/Berlin)") from None


def _localize(naive: datetime, zone: tzinfo, text: str, warnings: list[str]) -> datetime:
    """Attach a local zone to a naive time, refusing times a DST jump skips."""
    first = naive.replace(tzinfo=zone, fold=0)
    second = naive.replace(tzinfo=zone, fold=1)
    if first.astimezone(UTC).astimezone(zone).replace(tzinfo=None) != naive:
        raise InvalidInput(f"{text} does not exist in time zone {zone} (the clocks skip it); add an offset")
    if first.utcoffset() != second.utcoffset():
        warnings.append(f"{text} happens twice in time zone {zone}; using the first ({first.isoformat()})")
    return first


def parse_join_at(text: str, now_us: int, zone: ZoneSource = None) -> JoinTime:
    """Parse ``--join-at`` (SPEC §5): ISO 8601 with offset, naive local, or ``+1h30m``.

    Keeps the precision it was given: no fraction in, no fraction out. Relative times
    are kept to the millisecond. Does not judge past/future: see ``check_join_time``.
    """
    try:
        return _parse_join_at(text, now_us, zone)
    except (OverflowError, ValueError):
        raise InvalidInput(f"time {text!r} is out of range") from None


def _parse_join_at(text: str, now_us: int, zone: ZoneSource) -> JoinTime:
    canonical = _CANONICAL.fullmatch(text)
    if canonical:  # the daemon's common case: a bulk create sends 100,000 of these
        *fields, fraction = canonical.groups()
        year, month, day, hour, minute, second = map(int, fields)
        micro = int(fraction.ljust(6, "0")) if fraction else 0
        moment = datetime(year, month, day, hour, minute, second, micro, tzinfo=UTC)
        return JoinTime(to_us(moment), text)
    raw = text.strip()
    warnings: list[str] = []
    if raw.startswith("+"):
        us = now_us + parse_duration(raw)
        us -= us % 1000
        return JoinTime(us, format_instant(us, 3), warnings)
    if raw.startswith("-"):
        raise InvalidInput(f"join time {text!r} is in the past: use +DURATION for a time from now")
    if not _HAS_TIME.match(raw):
        raise InvalidInput(
            f"bad time {text!r}: use ISO 8601 like 2026-12-01T15:00:00Z, a local 2026-12-01T16:00, or +10m"
        )
    if raw[-1:] == "z":  # RFC 3339 allows lower case; fromisoformat does not
        raw = raw[:-1] + "Z"
    fraction = _FRACTION.search(raw)
    digits = len(fraction.group(1)) if fraction else 0
    if digits > 6:
        raise InvalidInput(f"bad time {text!r}: at most 6 fractional digits (microseconds)")
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise InvalidInput(
            f"bad time {text!r}: use ISO 8601 like 2026-12-01T15:00:00Z, a local 2026-12-01T16:00, or +10m"
        ) from None
    if moment.tzinfo is None:
        if callable(zone):
            zone = zone()
        moment = _localize(moment, zone or system_zone(), raw, warnings)
    us = to_us(moment)
    return JoinTime(us, format_instant(us, digits), warnings)


def check_join_time(join: JoinTime, now_us: int, stage_lead_us: int) -> list[str]:
    """Refuse a join time in the past; warn when it leaves less than the stage lead."""
    join_us = join.us
    if join_us <= now_us:
        raise InvalidInput(f"join time {join.text} is in the past (now is {format_instant(now_us, 0)})")
    if join_us - now_us < stage_lead_us:
        left, lead = (join_us - now_us) / US_PER_S, stage_lead_us / US_PER_S
        return [
            f"join time is only {left:.1f}s away, less than the stage lead of {lead:g}s: "
            "the bot may not have time to spin up"
        ]
    return []
