"""Time input and output: ``--join-at`` parsing, durations, and the wire format of instants.

Internally every instant is an ``int`` of microseconds since the Unix epoch (UTC): exact,
cheap to compare and index. Only stdlib is imported here, because this module sits on the
CLI's fast path (``create -q``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, tzinfo

from botsched.core.errors import InvalidInput

#: A zone, or a function that finds it (config + system lookups cost a few ms: only paid
#: when a time without an offset needs it).
ZoneSource = tzinfo | Callable[[], tzinfo] | None

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

    __slots__ = ("note", "text", "us", "warnings")

    def __init__(self, us: int, text: str, warnings: list[str] | None = None, note: str | None = None) -> None:
        self.us = us
        self.text = text
        self.warnings = warnings if warnings is not None else []
        self.note = note  # how an `at`-style phrase was resolved ("3pm is Tue 2026-12-01 15:00 CET ...")

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


_POSIX_TZ_CHARS = re.compile(r"[A-Za-z0-9<>+\-:.,/]+", re.ASCII)
#: A version-2 TZif block with no transitions and one (unused) type: with a POSIX rule as
#: its footer, a whole zone file that is nothing but the rule.
_EMPTY_TZIF = b"TZif2" + bytes(15) + bytes(16) + (1).to_bytes(4, "big") + (4).to_bytes(4, "big") + bytes(6) + b"UTC\0"


def posix_zone(rule: str) -> tzinfo | None:
    """A POSIX ``TZ`` rule (``JST-9``, ``EST5EDT,M3.2.0,M11.1.0``, ``<+0330>-3:30``) as a
    zone that follows it the way the C library does, or ``None`` when it is not one.

    The rule is the footer of an in-memory TZif file without transitions, so ``zoneinfo``
    (its public ``from_file``) applies it to every instant: offsets, summer time, the
    names ``%Z`` shows and the fold of the repeated hour all come from the stdlib.
    A summer time without its rules (``AAA3BBB``) is not taken: the C libraries disagree
    on it (glibc borrows the transitions of a ``posixrules`` file, when there is one).
    """
    if not _POSIX_TZ_CHARS.fullmatch(rule):
        return None
    footer = rule
    if "," in rule and _ZERO_BASED_DAY.search(rule):
        shift = _zero_based_day_shift()
        head, rules = rule.split(",", 1)
        rules = _ZERO_BASED_DAY.sub(lambda m: str(int(m.group()) + shift), "," + rules)
        if any(int(day) > 365 for day in _ZERO_BASED_DAY.findall(rules)):
            return None
        footer = head + rules
    return _footer_zone(footer, rule)


#: The zero-based day form of a rule's date (``,59/2``; not ``J60`` nor ``M3.2.0``).
_ZERO_BASED_DAY = re.compile(r"(?<=,)\d+(?=[/,]|$)", re.ASCII)
_day_shift: list[int] = []


def _footer_zone(footer: str, key: str) -> tzinfo | None:
    import io
    from zoneinfo import ZoneInfo

    data = _EMPTY_TZIF * 2 + b"\n" + footer.encode() + b"\n"  # the 32-bit and the 64-bit block, then the rule
    try:
        return ZoneInfo.from_file(io.BytesIO(data), key=key)
    except ValueError:
        return None


def _zero_based_day_shift() -> int:
    """How many days ``zoneinfo`` is early on a zero-based day (CPython 3.11 puts ``,100``
    on day 99; the C library on day 100): measured once, so a fixed Python needs nothing."""
    if not _day_shift:
        probe = _footer_zone("A0B,100/0,200/0", "probe")
        day_100 = datetime(2027, 1, 1, tzinfo=UTC) + timedelta(days=100)
        early = probe is not None and (day_100 - timedelta(hours=1)).astimezone(probe).utcoffset() != timedelta(0)
        _day_shift.append(1 if early else 0)
    return _day_shift[0]


def _tz_zone(value: str) -> tzinfo:
    """The zone a ``TZ`` value means, in the C library's order: empty is UTC, then a zone
    file (an IANA name, or an absolute path), then a POSIX rule; anything else is refused."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = value.removeprefix(":")
    if not name:
        return UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        pass
    if name.startswith("/"):
        try:
            with open(name, "rb") as handle:
                return ZoneInfo.from_file(handle, key=name)
        except (OSError, ValueError):
            pass
    zone = posix_zone(name)
    if zone is not None:
        return zone
    if "," not in name and posix_zone(name + ",M3.2.0,M11.1.0") is not None:
        raise InvalidInput(
            f"TZ={value!r} has a summer time but not when it starts and ends: add the rules, "
            f"e.g. TZ='{name},M3.2.0,M11.1.0', or use a zone name like America/New_York"
        )
    raise InvalidInput(
        f"TZ={value!r} is neither a time zone name (like Europe/Berlin) nor a POSIX TZ rule "
        "(like CET-1CEST,M3.5.0,M10.5.0/3); fix or unset TZ"
    )


def system_zone() -> tzinfo:
    """The system's time zone: ``TZ`` when set (an IANA name, a zone file or a POSIX rule,
    as the C library reads it; ``InvalidInput`` when it is none of them), else
    ``/etc/localtime``."""
    value = os.environ.get("TZ")
    if value is not None:
        return _tz_zone(value)
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        target = os.path.realpath("/etc/localtime")
        if "zoneinfo/" in target:
            return ZoneInfo(target.split("zoneinfo/", 1)[1])
        with open("/etc/localtime", "rb") as handle:  # a copy, not a link: read it as it is
            return ZoneInfo.from_file(handle, key="localtime")
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
        phrase = _parse_phrase(raw, now_us, zone, warnings)
        if phrase is None:
            raise InvalidInput(
                f"bad time {text!r}: use ISO 8601 like 2026-12-01T15:00:00Z, a local 2026-12-01T16:00, +10m, "
                "or a time the way `at` takes them: 15:00, 3pm, tomorrow 09:30, mon 10:00, noon"
            )
        return phrase
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


# -- times the way `at` takes them (SPEC §5) -------------------------------------------

_WEEKDAYS = {name: day for day, names in enumerate((
    ("mon", "monday"), ("tue", "tues", "tuesday"), ("wed", "wednesday"), ("thu", "thur", "thurs", "thursday"),
    ("fri", "friday"), ("sat", "saturday"), ("sun", "sunday"),
)) for name in names}
_CLOCK = re.compile(r"(\d{1,2}):(\d{2})", re.ASCII)
_AMPM = re.compile(r"(\d{1,2})(?::(\d{2}))?\s*([ap])\.?m\.?", re.ASCII)
_NAMED = {"noon": (12, 0), "midnight": (0, 0)}


def _time_of_day(word: str) -> tuple[int, int] | None:
    """``15:00``, ``3pm``, ``3:30 pm``, ``noon``, ``midnight`` -> (hour, minute)."""
    if word in _NAMED:
        return _NAMED[word]
    clock = _CLOCK.fullmatch(word)
    if clock:
        hour, minute = int(clock.group(1)), int(clock.group(2))
        return (hour, minute) if hour < 24 and minute < 60 else None
    ampm = _AMPM.fullmatch(word)
    if ampm:
        hour, minute = int(ampm.group(1)), int(ampm.group(2) or 0)
        if not 1 <= hour <= 12 or minute >= 60:
            return None
        return (hour % 12 + (12 if ampm.group(3) == "p" else 0), minute)
    return None


def _split_phrase(raw: str) -> tuple[str | None, tuple[int, int]] | None:
    """A day word (``today``, ``tomorrow``, a weekday) and a time of day, in either order."""
    words = raw.lower().split()
    if not words or len(words) > 3:
        return None
    for day_first in (True, False):
        day_words, time_words = (words[:1], words[1:]) if day_first else (words[-1:], words[:-1])
        named_day = bool(day_words) and (day_words[0] in _WEEKDAYS or day_words[0] in ("today", "tomorrow"))
        day = day_words[0] if named_day else None
        if day is None or not time_words:
            continue
        clock = _time_of_day(" ".join(time_words)) or _time_of_day("".join(time_words))
        if clock is not None:
            return day, clock
    clock = _time_of_day(" ".join(words)) or _time_of_day("".join(words))
    return (None, clock) if clock is not None else None


def _parse_phrase(raw: str, now_us: int, zone: ZoneSource, warnings: list[str]) -> JoinTime | None:
    """``15:00``, ``3pm``, ``tomorrow 09:30``, ``mon 10:00``, ``noon``, ``midnight`` in the
    local zone. Without a day: today, or tomorrow when that time has passed. A weekday:
    the first such day (today included) on which that time is still ahead. ``today`` and
    ``tomorrow`` mean just that (a ``today`` time already past is refused later, as past).
    Times the clocks skip on a DST day are refused; a repeated hour takes the first."""
    found = _split_phrase(raw)
    if found is None:
        return None
    day, (hour, minute) = found
    if callable(zone):
        zone = zone()
    zone = zone or system_zone()
    today = from_us(now_us).astimezone(zone).date()

    def at(offset_days: int) -> datetime:
        date = today + timedelta(days=offset_days)
        naive = datetime(date.year, date.month, date.day, hour, minute)
        return _localize(naive, zone, f"{naive:%Y-%m-%d %H:%M}", warnings)

    if day == "today":
        moment = at(0)
    elif day == "tomorrow":
        moment = at(1)
    else:
        ahead = 0 if day is None else (_WEEKDAYS[day] - today.weekday()) % 7
        moment = at(ahead)
        if to_us(moment) <= now_us:
            moment = at(ahead + (1 if day is None else 7))
    us = to_us(moment)
    text = format_instant(us, 0)
    return JoinTime(us, text, warnings, note=f"{raw!r} is {moment:%a %Y-%m-%d %H:%M %Z} ({text})")


#: The furthest ahead a bot may join: three years (and a leap day), like Attendee. Beyond
#: that a time is far more likely a typo (2062 for 2026) than a plan, and near year 9999
#: it cannot even be shown in a zone east of UTC.
MAX_AHEAD_US = (3 * 365 + 1) * 86_400 * US_PER_S


def check_join_time(join: JoinTime, now_us: int, stage_lead_us: int) -> list[str]:
    """Refuse a join time in the past or more than three years ahead; warn when it leaves
    less than the stage lead. (The daemon's rule: every entry point goes through it.)"""
    join_us = join.us
    if join_us <= now_us:
        raise InvalidInput(f"join time {join.text} is in the past (now is {format_instant(now_us, 0)})")
    if join_us - now_us > MAX_AHEAD_US:
        raise InvalidInput(
            f"join time {join.text} is more than 3 years ahead (the latest is "
            f"{format_instant(now_us + MAX_AHEAD_US, 0)}): check the year"
        )
    if join_us - now_us < stage_lead_us:
        left, lead = (join_us - now_us) / US_PER_S, stage_lead_us / US_PER_S
        return [
            (f"join time is only {left:.1f}s away, less than the stage lead of {lead:g}s: "
             "the bot may not have time to spin up")
        ]
    return []
