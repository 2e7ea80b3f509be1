"""Reading and expanding iCalendar text: the bytes of a file in, the occurrences it asks for out.

No socket and no clock here: ``expand`` turns the bytes of an ``.ics`` file into the
bots it asks for over ``[now, now + days)`` (plus the occurrences it skips, with
reasons); ``plan`` compares those with the calendar's existing bots.

Reading happens in three steps:

1. **Scan** (here, plain text): unfold the lines, find each ``VEVENT`` and ``VTIMEZONE``
   with its line numbers, and fix what exporters get wrong in ways that have one right
   reading (a ``TZID`` with spaces around it, a ``TZID`` on an all-day date, Lotus
   Notes' ``RECURRENCE-ID`` on the series itself, spaces in an ``RDATE`` list).
2. **Select**: events that cannot touch the window (a meeting three years ago, a series
   that ended last spring) are left out before any real parsing — real exports are
   mostly history, and parsing is what costs.
3. **Parse and check** the rest with ``icalendar`` (RFC 5545, VTIMEZONE, Windows zone
   names) and expand them with ``recurring_ical_events`` (RRULE, RDATE, EXDATE,
   RECURRENCE-ID, RANGE=THISANDFUTURE, X-WR-TIMEZONE). An event whose times cannot be
   read is *skipped* with a reason that names its UID, the property and the line; the
   rest of the calendar still syncs, and the bots of such an event are left alone.

Every occurrence maps to one bot through its deduplication key (``keys``): its UID,
and in a series its original start (its RECURRENCE-ID), so moving it keeps its bot.
"""

from __future__ import annotations

import difflib
import hashlib
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

import icalendar
import recurring_ical_events  # type: ignore[import-untyped]
from icalendar.parser import unescape_backslash

try:  # recurring_ical_events' own dependency (it applies X-WR-TIMEZONE with it)
    import x_wr_timezone  # type: ignore[import-untyped]
except ImportError:  # pragma: no cover
    x_wr_timezone = None

from botsched.calsync.keys import event_key
from botsched.calsync.links import (
    CONFERENCE_PROPERTIES,
    LINK_PROPERTIES,
    OTHER_PROPERTIES,
    find_meeting_url,
)
from botsched.calsync.model import (
    ALL_DAY,
    CANCELLED,
    DUPLICATE,
    JOIN_PASSED,
    NO_URL,
    STARTED,
    US_PER_DAY,
    Expansion,
    Skipped,
    Wanted,
    instant_text,
)
from botsched.core.errors import InvalidInput
from botsched.core.timeparse import from_us, to_us


def parse_calendars(data: bytes | str, source: str = "calendar") -> list[icalendar.Calendar]:
    """The VCALENDARs of a file as ``icalendar`` reads them (all or nothing).

    ``expand`` does not need this (it reads event by event); it is here for callers
    that want the parsed objects.
    """
    text = _text_of(data, source)
    try:
        with warnings.catch_warnings():  # e.g. a guessed TZID: not worth a Python warning on stderr
            warnings.simplefilter("ignore")
            found = icalendar.Calendar.from_ical(text, multiple=True)
    except Exception as exc:  # noqa: BLE001  # icalendar raises ValueError, sometimes others, for bad input
        raise InvalidInput(f"{source}: not a valid iCalendar file: {_one_line(exc)}") from None
    calendars = [c for c in found if isinstance(c, icalendar.Calendar) and c.name == "VCALENDAR"]
    if not calendars:
        raise InvalidInput(f"{source}: not an iCalendar file (no VCALENDAR component)")
    return calendars


def _text_of(data: bytes | str, source: str) -> str:
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = text.lstrip("\ufeff")
    if "BEGIN:VCALENDAR" not in text.upper():
        raise InvalidInput(f"{source}: not an iCalendar file (no BEGIN:VCALENDAR)")
    return text


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "…") if len(text) > 300 else (text or type(exc).__name__)


def _shown(value: str, limit: int = 60) -> str:
    """A value quoted for a message: one line, at most ``limit`` characters."""
    value = " ".join(value.split()) if value.strip() else value
    return '"' + (value if len(value) <= limit else value[: limit - 1] + "…") + '"'


# -- attendees ---------------------------------------------------------------------

def _emails(configured: str | Iterable[str] | None) -> set[str]:
    if not configured:
        return set()
    items = re.split(r"[,\s]+", configured) if isinstance(configured, str) else list(configured)
    return {_address(item) for item in items if item.strip()}


def _address(value: str) -> str:
    text = str(value).strip()
    if text.lower().startswith("mailto:"):
        text = text[len("mailto:") :]
    return text.strip().lower()


def declined_by(component: Any, emails: set[str]) -> str | None:
    """The configured address that declined this occurrence (``PARTSTAT=DECLINED``), if any."""
    if not emails:
        return None
    attendees = component.get("ATTENDEE")
    if attendees is None:
        return None
    for attendee in attendees if isinstance(attendees, list) else [attendees]:
        address = _address(str(attendee))
        params = getattr(attendee, "params", {}) or {}
        if address in emails and str(params.get("PARTSTAT", "")).upper() == "DECLINED":
            return address
    return None


# -- time --------------------------------------------------------------------------


def _instant_us(value: date | datetime, zone: tzinfo) -> int:
    """An iCalendar time as microseconds: TZID/UTC as given, floating and dates in ``zone``."""
    if isinstance(value, datetime):
        if value.tzinfo is None or value.utcoffset() is None:
            value = value.replace(tzinfo=zone)
        return to_us(value)
    return to_us(datetime(value.year, value.month, value.day, tzinfo=zone))


def _original_start_text(value: date | datetime, zone: tzinfo) -> str:
    if not isinstance(value, datetime):
        return value.isoformat()
    return instant_text(_instant_us(value, zone))


def _first(component: Any, name: str) -> Any:
    value = component.get(name)
    return value[0] if isinstance(value, list) and value else value


def _uid_of(event: Any) -> str:
    uid = str(_first(event, "UID") or "").strip()
    if uid:
        return uid
    # No UID (broken export): derive one from what identifies the event, stable across runs.
    start = _first(event, "DTSTART")
    basis = f"{_first(event, 'SUMMARY') or ''}|{start.to_ical().decode() if start is not None else ''}"
    return "nouid-" + hashlib.sha1(basis.encode()).hexdigest()[:20]


def _summary_text(value: Any) -> str:
    return " ".join(str(value or "").split()) or "(no title)"


def _end(event: Any, start: date | datetime) -> date | datetime:
    try:
        end = event.end
    except Exception:  # noqa: BLE001  # no DTEND/DURATION, or an odd one: a moment (or one day)
        end = None
    if end is None:
        return start + timedelta(days=1) if not isinstance(start, datetime) else start
    return end  # type: ignore[no-any-return]  # icalendar's .end is a date or a datetime


# -- reading the file: lines, events, time zones -----------------------------------

_NAME = re.compile(r"([A-Za-z0-9-]+)[;:]")
_DATE8 = re.compile(r"\s*(\d{4})(\d\d)(\d\d)")
_ONLY_DATE = re.compile(r"\d{8}")
_DATE_TIME = re.compile(r"(\d{4})(\d\d)(\d\d)(T\d{6}Z?)?")
_DURATION = re.compile(r"([+-])?P(?:(\d+)W)?(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+)S)?)?$")
_UNTIL = re.compile(r"(?:^|;)\s*UNTIL\s*=\s*(\d{8})", re.IGNORECASE)
#: Properties whose value is a date or date-time (and may carry a TZID).
_DATE_PROPERTIES = frozenset({"DTSTART", "DTEND", "DUE", "RECURRENCE-ID", "RDATE", "EXDATE"})
#: Properties an event's times come from: one that cannot be read makes the event unreadable.
_TIME_PROPERTIES = ("DTSTART", "DTEND", "DURATION", "RECURRENCE-ID", "RRULE", "RDATE", "EXDATE", "EXRULE")
#: Properties an event may have at most once.
_ONCE = ("DTSTART", "DTEND", "DURATION", "RECURRENCE-ID")
_RULE_PROPERTIES = ("RRULE", "RDATE", "EXRULE")
#: What a sync reads of an event; everything else (DTSTAMP, ORGANIZER, X-MICROSOFT-CDO-*,
#: VALARMs, ...) is left out before parsing.
_READ = frozenset({"UID", "DTSTART", "DTEND", "DURATION", "RRULE", "RDATE", "EXDATE", "EXRULE", "RECURRENCE-ID",
                   "SEQUENCE", "STATUS", "SUMMARY", "ATTENDEE", *CONFERENCE_PROPERTIES, *OTHER_PROPERTIES})
#: Of those, the ones whose values are text (or a URI): read here, not by ``icalendar``,
#: whose parser steps through every character of a line in Python (a long HTML
#: description costs more than all the rest of its event).
_TEXT_READ = frozenset({"UID", "STATUS", "SUMMARY", *CONFERENCE_PROPERTIES, *OTHER_PROPERTIES})
#: Reading shortcuts that give the same result (``tests/calendar/test_calsync_fast.py``
#: compares): leave out events that cannot touch the window, move the starts of long
#: series and time zone rules near it, read text properties here. Off only in tests.
_FAST = True
_KINDS = {
    "vDDDTypes": "a date or date-time", "vDatetime": "a date-time", "vDate": "a date", "vTime": "a time",
    "vUTCOffset": "a UTC offset such as +0100", "vDuration": "a duration such as PT1H",
    "vPeriod": "a period (start/end)", "vRecur": "a recurrence rule", "vInt": "a whole number",
    "vFloat": "a number", "vGeo": "a latitude;longitude pair", "vBoolean": "TRUE or FALSE",
    "vDDDLists": "a list of dates or date-times", "vCalAddress": "an address", "vUri": "a URI",
    "vWeekday": "a weekday", "vFrequency": "a frequency",
}


class _Block:
    """One VEVENT or VTIMEZONE of the file: where its lines are, and its properties."""

    __slots__ = ("first", "kind", "last", "props", "stray")

    def __init__(self, kind: str, first: int) -> None:
        self.kind = kind
        self.first = first  # index of BEGIN: in the unfolded lines
        self.last = first  # index of END:
        self.props: dict[str, list[int]] = {}  # its own properties (not a VALARM's): NAME -> line indexes
        self.stray: list[int] = []  # lines inside it that are not content lines


class _RawCalendar:
    __slots__ = ("events", "first", "props", "zones")

    def __init__(self, first: int) -> None:
        self.first = first
        self.props: dict[str, list[int]] = {}
        self.events: list[_Block] = []
        self.zones: list[_Block] = []


class _Reader:
    """The file as unfolded content lines with their line numbers, and its structure."""

    def __init__(self, text: str, source: str, emails: Iterable[str] = ()) -> None:
        self.source = source
        self.calendar: str | None = None  # a followed calendar's name, for its keys
        self.emails = [email.lower() for email in emails if email]
        self.lines: list[str | None] = []  # None: a line taken out while fixing an event
        self.numbers: list[int] = []  # the file's line number where each content line starts
        self.problems: list[str] = []  # lines outside any event that could not be read
        self.stray = 0  # lines inside events that are not content lines (ignored)
        self._unfold(text)
        self.calendars = self._structure()

    def _unfold(self, text: str) -> None:
        lines, numbers = self.lines, self.numbers
        for number, raw in enumerate(text.split("\n"), 1):
            if raw[-1:] == "\r":
                raw = raw[:-1]
            if raw[:1] in (" ", "\t"):
                if lines and lines[-1] is not None:
                    lines[-1] += raw[1:]
                    continue
                raw = raw.strip()
            if raw.strip():
                lines.append(raw)
                numbers.append(number)

    def line_no(self, index: int) -> int:
        return self.numbers[index]

    def _structure(self) -> list[_RawCalendar]:
        calendars: list[_RawCalendar] = []
        stack: list[tuple[str, int]] = []
        calendar: _RawCalendar | None = None
        block: _Block | None = None
        lines = self.lines
        for index, line in enumerate(lines):
            assert line is not None
            match = _NAME.match(line)
            if match is None:
                if block is not None:
                    block.stray.append(index)
                    self.stray += 1
                else:
                    self.problems.append(f"line {self.numbers[index]}: {_shown(line)} is not an iCalendar line "
                                         "(NAME:VALUE)")
                continue
            name = match.group(1).upper()
            if name == "BEGIN":
                what = line[match.end():].strip().upper()
                stack.append((what, index))
                if len(stack) == 1:
                    if what == "VCALENDAR":
                        calendar = _RawCalendar(index)
                        calendars.append(calendar)
                    else:
                        calendar = None
                        self.problems.append(f"line {self.numbers[index]}: BEGIN:{what} outside a VCALENDAR")
                elif len(stack) == 2 and calendar is not None and what in ("VEVENT", "VTIMEZONE"):
                    block = _Block(what, index)
                continue
            if name == "END":
                what = line[match.end():].strip().upper()
                if not any(open_ == what for open_, _ in stack):
                    self.problems.append(f"line {self.numbers[index]}: END:{what} without a BEGIN:{what}")
                    continue
                while stack[-1][0] != what:  # an END that closes an outer component: close the inner ones
                    inner, at = stack.pop()
                    if len(stack) == 1 and block is not None:
                        self.problems.append(f"line {self.numbers[at]}: BEGIN:{inner} has no END:{inner}")
                        block = None
                stack.pop()
                if len(stack) == 1 and block is not None and calendar is not None:
                    block.last = index
                    (calendar.events if block.kind == "VEVENT" else calendar.zones).append(block)
                    block = None
                continue
            depth = len(stack)
            if block is not None:
                if depth == 2:
                    block.props.setdefault(name, []).append(index)
            elif depth == 1 and calendar is not None:
                calendar.props.setdefault(name, []).append(index)
            elif depth == 0:
                self.problems.append(f"line {self.numbers[index]}: {name} outside a VCALENDAR")
        if stack:
            what, at = stack[0]
            raise InvalidInput(f"{self.source}: not a complete iCalendar file: BEGIN:{what} on line "
                               f"{self.numbers[at]} has no END:{what} (the file is cut short)")
        return calendars

    # -- one property line -------------------------------------------------------

    def split(self, index: int) -> tuple[str, list[list[str]], str]:
        """``(NAME, [[PARAM, value], ...], value)`` of a content line; quotes honoured."""
        line = self.lines[index] or ""
        if '"' in line:
            sep, quoted = -1, False
            for position, char in enumerate(line):
                if char == '"':
                    quoted = not quoted
                elif char == ":" and not quoted:
                    sep = position
                    break
            head = line[:sep] if sep >= 0 else line
            parts = re.findall(r'(?:[^;"]|"[^"]*")+', head)
        else:
            sep = line.find(":")
            head = line[:sep] if sep >= 0 else line
            parts = head.split(";")
        value = line[sep + 1 :] if sep >= 0 else ""
        params = [[key.strip().upper(), raw] for key, _, raw in (part.partition("=") for part in parts[1:])]
        return parts[0].strip().upper() if parts else "", params, value

    def value(self, index: int) -> str:
        return self.split(index)[2]

    def first_value(self, block: _Block, name: str) -> str | None:
        found = block.props.get(name)
        return self.value(found[0]) if found else None

    def calendar_value(self, calendar: _RawCalendar, name: str) -> str | None:
        found = calendar.props.get(name)
        return self.value(found[0]) if found else None

    def param(self, index: int, name: str) -> str | None:
        for key, raw in self.split(index)[1]:
            if key == name:
                return raw
        return None

    def text(self, block: _Block) -> str:
        """The block as iCalendar text (a VTIMEZONE whole)."""
        stray = set(block.stray)
        return "".join(line + "\r\n" for index, line in enumerate(self.lines[block.first : block.last + 1], block.first)
                       if line is not None and index not in stray)

    def event_text(self, block: _Block) -> str:
        """A VEVENT as iCalendar text with only what a sync reads (``_READ``; of the
        ATTENDEEs only the configured addresses'): parsing is what costs, and a broken
        property nobody reads must not make the event unreadable."""
        lines, emails = self.lines, self.emails
        keep = [block.first]
        for name, indexes in block.props.items():
            if name in _READ and not (_FAST and name in _TEXT_READ):
                if name == "ATTENDEE":
                    indexes = [i for i in indexes if any(e in (lines[i] or "").lower() for e in emails)]
                keep.extend(indexes)
        keep.sort()
        keep.append(block.last)
        return "".join(lines[index] + "\r\n" for index in keep if lines[index] is not None)  # type: ignore[operator]


def _param_text(value: str) -> str:
    return f'"{value}"' if any(char in value for char in ';:,') else value


def _join(name: str, params: list[list[str]], value: str) -> str:
    return name + "".join(f";{key}={raw}" for key, raw in params) + ":" + value


def _fix_zones(reader: _Reader, calendar: _RawCalendar, low: date) -> None:
    """``TZID: 1`` (Outlook) names the zone ``1``, whatever the spaces: strip them in the
    VTIMEZONE, as the parser does in parameters (where quotes can keep them). And start
    each yearly rule of a VTIMEZONE shortly before the window (``_rebase_zone``)."""
    for zone in calendar.zones:
        for index in zone.props.get("TZID", []):
            value = reader.value(index)
            clean = value.strip().strip('"').strip()
            if clean != value:
                reader.lines[index] = "TZID:" + clean
        if _FAST:  # a fixed year: icalendar keeps the first zone of a TZID for the whole process
            _rebase_zone(reader, zone, min(ZONE_RULES_FROM, low.year - 2))


#: The year from which the yearly rules of a VTIMEZONE are read (see ``_rebase_zone``).
ZONE_RULES_FROM = 2020


def _rebase_zone(reader: _Reader, zone: _Block, year: int) -> None:
    """Move the onsets of a VTIMEZONE's yearly rules to their first one in ``year``.

    Outlook writes ``DTSTART:16010101T030000`` with ``RRULE:FREQ=YEARLY;...``, and the
    zone ``icalendar`` builds from that steps through every year since 1601 each time it
    is asked for an offset (thousands of times in a sync). When every observance
    (STANDARD / DAYLIGHT) is one such unending yearly rule, starting them at their
    first onset in ``year`` gives the same offsets from then on. (``year`` is fixed,
    ``ZONE_RULES_FROM``, not derived from now: ``icalendar`` caches a zone by TZID for
    the life of the process, so what it caches must not depend on the day.)
    """
    from dateutil.rrule import rrulestr  # type: ignore[import-untyped]

    observances: list[dict[str, list[int]]] = []
    current: dict[str, list[int]] | None = None
    for index in range(zone.first + 1, zone.last):
        line = reader.lines[index]
        if line is None:
            continue
        upper = line.upper()
        if upper.startswith("BEGIN:"):
            if current is not None or upper[6:].strip() not in ("STANDARD", "DAYLIGHT"):
                return  # something this does not know: leave the zone as it is
            current = {}
        elif upper.startswith("END:"):
            if current is not None:
                observances.append(current)
            current = None
        elif current is not None:
            match = _NAME.match(line)
            if match is not None:
                current.setdefault(match.group(1).upper(), []).append(index)
    if not observances or len(observances) > 2:
        return
    moves: list[tuple[int, str]] = []
    for observance in observances:
        starts, rules = observance.get("DTSTART", []), observance.get("RRULE", [])
        if len(starts) != 1 or len(rules) != 1 or "RDATE" in observance:
            return
        rule = reader.value(rules[0]).upper()
        if "FREQ=YEARLY" not in rule or "UNTIL" in rule or "COUNT" in rule:
            return
        match = _DATE_TIME.fullmatch(reader.value(starts[0]).strip())
        if match is None or (match[4] or "").endswith("Z") or int(match[1]) >= year:
            return
        try:
            begin = datetime.strptime(reader.value(starts[0]).strip(), "%Y%m%dT%H%M%S")
            onset = rrulestr(rule, dtstart=begin).after(datetime(year, 1, 1), inc=True)
        except (ValueError, TypeError, OverflowError):
            return
        if onset is None:
            return
        moves.append((starts[0], onset.strftime("%Y%m%dT%H%M%S")))
    for index, value in moves:
        prop, params, _ = reader.split(index)
        reader.lines[index] = _join(prop, params, value)


def _fix_event(reader: _Reader, block: _Block) -> None:
    """What exporters write that has one right reading, rewritten before parsing:

    - ``TZID`` parameters with spaces or quotes around the name are the stripped name;
    - a ``TZID`` on a date (``DTSTART;TZID=Europe/Berlin;VALUE=DATE:20300318``, SabreDAV)
      is meaningless: an all-day date stays a date;
    - spaces around the commas of an ``RDATE`` / ``EXDATE`` list, and a trailing comma;
    - ``DTEND`` and ``DURATION`` together (RFC 5545 forbids it): ``DTEND`` wins.
    """
    for name in _DATE_PROPERTIES:
        for index in block.props.get(name, ()):
            line = reader.lines[index] or ""
            if "TZID" not in line.upper() and name not in ("RDATE", "EXDATE"):
                continue
            prop, params, value = reader.split(index)
            new_params, changed = [], False
            is_date = any(k == "VALUE" and v.strip('"').upper() == "DATE" for k, v in params) or (all(
                _ONLY_DATE.fullmatch(item.strip()) for item in value.split(",") if item.strip()
            ) and bool(value.strip()))
            for key, raw in params:
                if key == "TZID":
                    clean = raw.strip().strip('"').strip()
                    if is_date and clean:
                        changed = True
                        continue
                    if clean and _param_text(clean) != raw:
                        raw, changed = _param_text(clean), True
                new_params.append([key, raw])
            if name in ("RDATE", "EXDATE"):
                tidy = ",".join(item.strip() for item in value.split(",") if item.strip())
                if tidy != value:
                    value, changed = tidy, True
            if changed:
                reader.lines[index] = _join(prop, new_params, value)
    if "DTEND" in block.props and "DURATION" in block.props:
        for index in block.props.pop("DURATION"):
            reader.lines[index] = None


def _fix_lotus_series(reader: _Reader, blocks: list[_Block]) -> None:
    """Lotus Notes writes a series as one VEVENT with ``RDATE`` *and* a ``RECURRENCE-ID``
    (its first occurrence): with no other VEVENT of the UID being the series, that one
    is the series, and its ``RECURRENCE-ID`` is dropped (otherwise only it is planned)."""
    if any("RECURRENCE-ID" not in block.props for block in blocks):
        return
    for block in blocks:
        if any(name in block.props for name in _RULE_PROPERTIES):
            for index in block.props.pop("RECURRENCE-ID"):
                reader.lines[index] = None
            return


def _rebase_series(reader: _Reader, block: _Block, low: date, wall_zone: tzinfo | None) -> None:
    """Start a long-running series shortly before the window instead of years ago.

    ``dateutil`` expands a rule from its DTSTART on, every time: a daily stand-up
    since 2019 is 2,000 occurrences to step over before the window. For the rules
    where it changes nothing after the new start — DAILY, WEEKLY or MONTHLY, without
    COUNT (which counts from DTSTART) or BYSETPOS/BYYEARDAY/BYWEEKNO, moved by whole
    periods of the rule (INTERVAL days, weeks, months), keeping the wall-clock time —
    DTSTART (and DTEND with it) is moved to the last start on the rule's own grid that
    ends a week before ``low``. Occurrences are then exactly the same from there on;
    the ones before it are history. An event without UID keeps its start (its key is
    made from it). A UTC start in a calendar with X-WR-TIMEZONE (``wall_zone``) keeps
    its wall-clock time in that zone, as ``x_wr_timezone`` reads it.
    """
    props = block.props
    if (len(props.get("RRULE", ())) != 1 or "EXRULE" in props or "RECURRENCE-ID" in props or "UID" not in props
            or len(props.get("DTSTART", ())) != 1 or len(props.get("DTEND", ())) > 1):
        return
    text = reader.value(props["RRULE"][0])
    rule = {name.strip().upper(): value.strip().upper() for name, _, value in
            (part.partition("=") for part in text.split(";") if part.strip())}
    freq, interval = rule.get("FREQ"), rule.get("INTERVAL", "1")
    if (freq not in ("DAILY", "WEEKLY", "MONTHLY") or rule.keys() & {"COUNT", "BYSETPOS", "BYYEARDAY", "BYWEEKNO"}
            or not interval.isdigit() or int(interval) < 1 or rrule_problem(text)):
        return
    step = int(interval)
    moments: list[tuple[int, datetime, bool]] = []  # (line, wall-clock start or end, written in UTC)
    for name in ("DTSTART", "DTEND"):
        for index in props.get(name, ()):
            value = reader.value(index).strip()
            match = _DATE_TIME.fullmatch(value)
            if match is None:
                return
            try:
                moment = datetime.strptime(value[:15] if match[4] else value[:8], "%Y%m%dT%H%M%S" if match[4]
                                           else "%Y%m%d")
            except ValueError:
                return
            utc = (match[4] or "").endswith("Z") and wall_zone is not None
            if utc:
                moment = moment.replace(tzinfo=UTC).astimezone(wall_zone).replace(tzinfo=None)
            moments.append((index, moment, utc))
    start = moments[0][1].date()
    length = (moments[1][1].date() - start).days if len(moments) > 1 else 0
    if length < 0:
        return
    target = low - timedelta(days=7 + length)
    if start >= target:
        return
    if freq == "MONTHLY":
        if start.day > 28:
            return
        months = ((target.year - start.year) * 12 + target.month - start.month) // step * step
        if start.day > target.day:
            months -= step  # (that month's day is after the target)
        total = start.month - 1 + months
        new = date(start.year + total // 12, total % 12 + 1, start.day)
    else:
        period = step * (7 if freq == "WEEKLY" else 1)
        new = start + timedelta(days=(target - start).days // period * period)
    shift = new - start
    if shift.days <= 0:
        return
    for index, moment, utc in moments:
        prop, params, value = reader.split(index)
        moved = moment + shift
        if utc:
            assert wall_zone is not None
            text = moved.replace(tzinfo=wall_zone).astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
        elif len(value.strip()) == 8:
            text = moved.strftime("%Y%m%d")
        else:
            text = moved.strftime("%Y%m%dT%H%M%S") + ("Z" if value.strip().endswith("Z") else "")
        reader.lines[index] = _join(prop, params, text)


# -- selecting what can touch the window --------------------------------------------


def _raw_date(value: str | None) -> date | None:
    if value is None:
        return None
    match = _DATE8.match(value)
    if match is None:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def _raw_days(value: str | None) -> int | None:
    """Whole days (rounded up) of a DURATION value; None when it is not a plain one."""
    if value is None:
        return None
    match = _DURATION.match(value.strip().upper())
    if match is None or match[1] == "-":
        return None
    weeks, days, hours, minutes, seconds = (int(part or 0) for part in match.groups()[1:])
    return weeks * 7 + days + (1 if hours or minutes or seconds else 0)


def _relevant(reader: _Reader, block: _Block, low: date, high: date) -> bool:
    """False only when the event surely has no occurrence in ``[low, high]`` (dates,
    with margin): then it need not be parsed at all. Anything unclear is kept."""
    props = block.props
    start = _raw_date(reader.first_value(block, "DTSTART"))
    if start is None:
        return True  # no DTSTART, or an odd one: parse it and say what is wrong
    if "DTEND" in props:
        end = _raw_date(reader.first_value(block, "DTEND"))
        if end is None:
            return True
    else:
        days = _raw_days(reader.first_value(block, "DURATION")) if "DURATION" in props else 0
        if days is None:
            return True
        end = start + timedelta(days=days)
    start, end = min(start, end), max(start, end)
    length = end - start
    if "RRULE" in props or "EXRULE" in props or "RDATE" in props:
        begins: list[date] = []  # of the RDATEs (periods: start and end)
        ends: list[date] = []
        for index in props.get("RDATE", ()):
            for item in (part for part in reader.value(index).split(",") if part.strip()):
                first, _, second = item.partition("/")
                begin = _raw_date(first)
                finish = _raw_date(second) if second else begin
                if begin is None or finish is None:
                    return True  # a duration as a period's end, or an odd value
                begins.append(begin)
                ends.append(finish)
        if start > high and all(day > high for day in begins):
            return False  # begins after the window
        if "RRULE" in props or "EXRULE" in props:
            untils = [_UNTIL.search(reader.value(index)) for index in props.get("RRULE", ())]
            if "EXRULE" in props or not untils or any(found is None for found in untils):
                return True  # unbounded (or COUNT: cheap enough to expand)
            last = max(_raw_date(found[1]) or high for found in untils if found is not None)
        else:
            last = start
        return max([last, *ends]) + length >= low
    if "RECURRENCE-ID" in props:
        index = props["RECURRENCE-ID"][0]
        original = _raw_date(reader.value(index))
        if original is None:
            return True
        if (reader.param(index, "RANGE") or "").strip('"').upper() == "THISANDFUTURE":
            return min(original, start) <= high  # moves every later occurrence
        return low <= original <= high or (start <= high and end >= low)
    return start <= high and end >= low


# -- checking one event --------------------------------------------------------------


class _NoStart(Exception):
    """A VEVENT without DTSTART (allowed in iTIP messages: METHOD:REQUEST, REPLY, ...)."""


_RRULE_PARTS = ("FREQ", "UNTIL", "COUNT", "INTERVAL", "BYSECOND", "BYMINUTE", "BYHOUR", "BYDAY", "BYMONTHDAY",
                "BYYEARDAY", "BYWEEKNO", "BYMONTH", "BYSETPOS", "WKST")
_FREQS = ("SECONDLY", "MINUTELY", "HOURLY", "DAILY", "WEEKLY", "MONTHLY", "YEARLY")
_WEEKDAY = re.compile(r"[+-]?(?:[1-9]|[1-4]\d|5[0-3])?(MO|TU|WE|TH|FR|SA|SU)", re.IGNORECASE)
_NUMBER_RANGES = {"BYSECOND": (0, 60, False), "BYMINUTE": (0, 59, False), "BYHOUR": (0, 23, False),
                  "BYMONTHDAY": (1, 31, True), "BYYEARDAY": (1, 366, True), "BYWEEKNO": (1, 53, True),
                  "BYMONTH": (1, 12, False), "BYSETPOS": (1, 366, True)}


def rrule_problem(rule: str) -> str | None:
    """What is wrong with an RRULE value, in words, or None when it reads fine."""
    seen: dict[str, str] = {}
    for part in (p for p in rule.strip().split(";") if p.strip()):
        name, equals, value = part.partition("=")
        name, value = name.strip().upper(), value.strip()
        if not equals or not value:
            return f"has {_shown(part)}, which is not NAME=VALUE"
        if name not in _RRULE_PARTS and not name.startswith("X-"):
            close = difflib.get_close_matches(name, _RRULE_PARTS, n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else ""
            return f"has an unknown part {name}{hint}"
        if name in seen:
            return f"gives {name} twice"
        seen[name] = value
    freq = seen.get("FREQ")
    if freq is None:
        return "has no FREQ"
    if freq.upper() not in _FREQS:
        return f"has FREQ={freq}, which is none of {', '.join(_FREQS)}"
    if "UNTIL" in seen and "COUNT" in seen:
        return "gives both UNTIL and COUNT"
    for name in ("COUNT", "INTERVAL"):
        if name in seen and not re.fullmatch(r"[+-]?\d+", seen[name]):
            return f"has {name}={seen[name]}, which is not a whole number"
    if "INTERVAL" in seen and int(seen["INTERVAL"]) < 1:
        return f"has INTERVAL={seen['INTERVAL']}, which is not 1 or more"
    if "UNTIL" in seen and not re.fullmatch(r"\d{8}(?:T\d{6}Z?)?", seen["UNTIL"].upper()):
        return f"has UNTIL={seen['UNTIL']}, which is not a date or date-time such as 20300630T235959Z"
    for name in ("BYDAY", "WKST"):
        for item in seen.get(name, "").split(",") if name in seen else ():
            if not _WEEKDAY.fullmatch(item.strip()) or (name == "WKST" and not item.strip().isalpha()):
                return f"has {name}={seen[name]}: {item.strip() or '(empty)'} is not a weekday (MO, TU, … SU)"
    for name, (low, high, signed) in _NUMBER_RANGES.items():
        for item in seen.get(name, "").split(",") if name in seen else ():
            item = item.strip()
            number = item[1:] if signed and item[:1] in "+-" else item
            if not number.isdigit() or not low <= int(number) <= high:
                return f"has {name}={seen[name]}: {item or '(empty)'} is not a number from {low} to {high}"
    return None


#: What a property's value must be, where its value type does not say it well.
_KIND_OF_PROPERTY = {"DURATION": "a duration such as PT1H", "RRULE": "a recurrence rule",
                     "EXRULE": "a recurrence rule", "TZOFFSETFROM": "a UTC offset such as +0100",
                     "TZOFFSETTO": "a UTC offset such as +0100"}


def _kind_of(reader: _Reader, index: int) -> str:
    prop, params, _ = reader.split(index)
    if prop in _KIND_OF_PROPERTY:
        return _KIND_OF_PROPERTY[prop]
    value_type = next((raw.strip('"').upper() for key, raw in params if key == "VALUE"), None)
    try:
        factory = icalendar.Calendar.types_factory.for_property(prop, value_type)
    except Exception:  # noqa: BLE001
        return "valid"
    return _KINDS.get(getattr(factory, "__name__", ""), "valid")


def _parses(reader: _Reader, index: int) -> bool:
    """Whether one content line's value reads as its type (time zones aside)."""
    prop, params, value = reader.split(index)
    value_type = next((raw.strip('"').upper() for key, raw in params if key == "VALUE"), None)
    try:
        factory: Any = icalendar.Calendar.types_factory.for_property(prop, value_type)
        if prop == "RDATE" and value_type is None and "/" in value:
            factory = icalendar.Calendar.types_factory.for_property(prop, "PERIOD")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            factory.from_ical(value)
    except Exception:  # noqa: BLE001
        return False
    return True


def _bad_value(reader: _Reader, block: _Block, name: str) -> str:
    """``NAME on line N is not a date or date-time ("...")``, for the first line of
    ``name`` in the block whose value does not read."""
    indexes = block.props.get(name) or [block.first]
    bad = next((index for index in indexes if not _parses(reader, index)), indexes[0])
    return f"{name} on line {reader.line_no(bad)} is not {_kind_of(reader, bad)} ({_shown(reader.value(bad))})"


def _explain_block(reader: _Reader, block: _Block) -> str:
    """Why a block that ``icalendar`` refused cannot be read: its first bad line."""
    for index in range(block.first + 1, block.last):
        if reader.lines[index] is None or index in block.stray:
            continue
        prop = reader.split(index)[0]
        if prop in ("BEGIN", "END"):
            continue
        if not _parses(reader, index):
            return f"{prop} on line {reader.line_no(index)} is not {_kind_of(reader, index)} " \
                   f"({_shown(reader.value(index))})"
    return f"{block.kind} on line {reader.line_no(block.first)} cannot be read"


def _times(prop: Any) -> list[Any]:
    """The values of a date-list property (RDATE, EXDATE; one line or several)."""
    items = prop if isinstance(prop, list) else [prop]
    out: list[Any] = []
    for item in items:
        dts = getattr(item, "dts", None)
        out.extend(entry.dt for entry in dts) if dts is not None else out.append(getattr(item, "dt", item))
    return out


def _check(reader: _Reader, block: _Block, event: Any, bad_zones: dict[str, str]) -> str | None:
    """What makes this event's times unreadable, or None. (No DTSTART: ``_NoStart``.)"""
    props = block.props
    for name in _ONCE:
        found = props.get(name, [])
        if len(found) > 1:
            where = " and again on ".join(f"line {reader.line_no(index)}" for index in found[:2])
            times = "twice" if len(found) == 2 else f"{len(found)} times"
            return f"{name} is given {times}: on {where}"
    if "DTSTART" not in props:
        raise _NoStart
    for name in _TIME_PROPERTIES:
        for index in props.get(name, ()):
            tzid = reader.param(index, "TZID")
            if tzid is not None and not tzid.strip().strip('"').strip():
                return f"{name} on line {reader.line_no(index)} has an empty TZID"
    broken = {name for name, _ in getattr(event, "errors", ()) if name}
    for name in _TIME_PROPERTIES:
        if name in broken:
            return (_rule_problem(reader, block) if name == "RRULE" else None) or _zone_problem(
                reader, block, name, bad_zones) or _bad_value(reader, block, name)
    start = event["DTSTART"].dt
    start_line = reader.line_no(props["DTSTART"][0])
    start_text = _shown(reader.value(props["DTSTART"][0]))
    if isinstance(start, time):
        return f"DTSTART on line {start_line} is a time of day without a date ({start_text})"
    if not isinstance(start, date):
        return f"DTSTART on line {start_line} is not a date or date-time ({start_text})"
    if "DTEND" in props:
        end = event["DTEND"].dt
        end_index = props["DTEND"][0]
        shown = _shown(reader.value(end_index))
        if isinstance(end, time):
            return f"DTEND on line {reader.line_no(end_index)} is a time of day without a date ({shown})"
        if not isinstance(end, date):
            return f"DTEND on line {reader.line_no(end_index)} is not a date or date-time ({shown})"
        if isinstance(end, datetime) != isinstance(start, datetime):
            kinds = ("a date-time", "a date") if isinstance(end, datetime) else ("a date", "a date-time")
            return (f"DTEND on line {reader.line_no(end_index)} is {kinds[0]} but DTSTART (line {start_line}) "
                    f"is {kinds[1]}")
    if "DURATION" in props and not isinstance(event["DURATION"].dt, timedelta):
        return _bad_value(reader, block, "DURATION")
    if "RECURRENCE-ID" in props and not isinstance(event["RECURRENCE-ID"].dt, date):
        return _bad_value(reader, block, "RECURRENCE-ID")
    for name in ("RDATE", "EXDATE"):
        if name not in props:
            continue
        for value in _times(event[name]):
            first = value[0] if isinstance(value, tuple) and name == "RDATE" else value
            if isinstance(first, time) or not isinstance(first, date):
                index = props[name][0]
                return f"{name} on line {reader.line_no(index)} has a value that is not a date or date-time " \
                       f"({_shown(reader.value(index))})"
    for name in ("DTSTART", "DTEND", "RECURRENCE-ID"):
        problem = _zone_problem(reader, block, name, bad_zones, event)
        if problem:
            return problem
    return _rule_problem(reader, block)


def _rule_problem(reader: _Reader, block: _Block) -> str | None:
    for index in block.props.get("RRULE", ()):
        problem = rrule_problem(reader.value(index))
        if problem:
            return f"RRULE on line {reader.line_no(index)} {problem} ({_shown(reader.value(index))})"
    return None


def _zone_problem(reader: _Reader, block: _Block, name: str, bad_zones: dict[str, str],
                  event: Any = None) -> str | None:
    """A time given in a zone whose VTIMEZONE could not be read (and that is no zone
    name icalendar knows otherwise: then the time would silently be floating)."""
    for index in block.props.get(name, ()):
        tzid = (reader.param(index, "TZID") or "").strip().strip('"').strip()
        if not tzid or tzid not in bad_zones:
            continue
        if event is not None:
            value = _first(event, name)
            moment = getattr(value, "dt", None)
            if isinstance(moment, datetime) and moment.tzinfo is not None:
                continue  # the name is an IANA or Windows zone: the time is right anyway
        return f"{name} on line {reader.line_no(index)} is in time zone {_shown(tzid)}, whose {bad_zones[tzid]}"
    return None


# -- expanding ---------------------------------------------------------------------


@dataclass
class _Event:
    """One VEVENT of the file and what became of it."""

    block: _Block
    uid: str
    component: Any = None
    problem: str | None = None
    no_start: bool = False


def _parse_events(reader: _Reader, blocks: list[_Block]) -> list[Any]:
    """The blocks as ``icalendar`` events (``None`` for one it refused): all in one go,
    one by one only when that fails."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if not blocks:
            return []
        text = "BEGIN:VCALENDAR\r\n" + "".join(reader.event_text(block) for block in blocks) + "END:VCALENDAR\r\n"
        try:
            found = icalendar.Calendar.from_ical(text).subcomponents
            if len(found) == len(blocks):
                return list(found)
        except Exception:  # noqa: BLE001  # one bad VALARM, say: find out which event it is
            pass
        events: list[Any] = []
        for block in blocks:
            try:
                events.append(icalendar.Event.from_ical(reader.event_text(block)))
            except Exception:  # noqa: BLE001
                events.append(None)
        return events


def _add_text(reader: _Reader, block: _Block, component: Any) -> None:
    """The text properties ``event_text`` left out, read as ``icalendar`` would: unescaped
    (``\\,`` is a comma) unless their type keeps the raw value (X- properties)."""
    for name in _TEXT_READ:
        for index in block.props.get(name, ()):
            if reader.lines[index] is None:
                continue
            prop, params, raw = reader.split(index)
            value_type = next((v.strip('"').upper() for k, v in params if k == "VALUE"), None)
            factory: Any = icalendar.Calendar.types_factory.for_property(prop, value_type)
            value = raw if hasattr(factory, "get_value_from_content_line") else unescape_backslash(raw)
            try:
                component.add(prop, factory(factory.from_ical(value)), encode=False)
            except Exception:  # noqa: BLE001  # text does not fail to parse; if it did, it is not read
                continue


def _parse_zones(reader: _Reader, calendar: _RawCalendar) -> dict[str, str]:
    """Read each VTIMEZONE (``icalendar`` keeps them for the events' TZIDs); the ones
    that cannot be read, by TZID, with why."""
    bad: dict[str, str] = {}
    for zone in calendar.zones:
        tzid = (reader.first_value(zone, "TZID") or "").strip()
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                icalendar.Timezone.from_ical(reader.text(zone))
        except Exception:  # noqa: BLE001
            bad[tzid] = f"VTIMEZONE (line {reader.line_no(zone.first)}) cannot be read: {_explain_block(reader, zone)}"
    return bad


def _summary_of_block(reader: _Reader, block: _Block, component: Any) -> str:
    if component is not None:
        return _summary_text(_first(component, "SUMMARY"))
    raw = reader.first_value(block, "SUMMARY") or ""
    return _summary_text(re.sub(r"\\([\\;,nN])", lambda m: " " if m[1] in "nN" else m[1], raw))


def _block_uid(reader: _Reader, block: _Block) -> str:
    return (reader.first_value(block, "UID") or "").strip()


def _unreadable_uid(reader: _Reader, block: _Block) -> str:
    """A stable stand-in UID for an unreadable event without one."""
    basis = f"{reader.first_value(block, 'SUMMARY') or ''}|{reader.first_value(block, 'DTSTART') or ''}"
    return "nouid-" + hashlib.sha1(basis.encode()).hexdigest()[:20]


def _what(uid: str, reader: _Reader, block: _Block) -> str:
    return f"event {uid}" if uid else f"the event without UID on line {reader.line_no(block.first)}"


def expand(
    data: bytes | str | icalendar.Calendar | Sequence[icalendar.Calendar],
    now_us: int,
    *,
    days: int = 14,
    join_offset_us: int = 0,
    email: str | Iterable[str] | None = None,
    zone: tzinfo = UTC,
    source: str = "calendar",
    calendar: str | None = None,
) -> Expansion:
    """The bots a calendar asks for over ``[now, now + days)``, and what it skips.

    ``calendar`` names a followed calendar: its keys are ``ical/<NAME>:...``
    (``keys.event_key``); without it, a file sync's ``ical:...``.

    ``zone`` is the local zone for floating times and all-day dates (config
    ``defaults.timezone``). Occurrences that already ended or start after the window
    are left out silently; the ones under way are skipped as "already started"; events
    whose times cannot be read are skipped with the reason (``unreadable``).
    """
    if days <= 0:
        raise InvalidInput("--days must be 1 or more")
    text: bytes | str
    if isinstance(data, icalendar.Calendar):
        text = data.to_ical()
    elif isinstance(data, (bytes, str)):
        text = data
    else:
        text = b"".join(calendar.to_ical() for calendar in data)
    emails = _emails(email)
    reader = _Reader(_text_of(text, source), source, emails)
    reader.calendar = calendar
    window_end = now_us + days * US_PER_DAY
    # A day's margin each side: floating times are placed in `zone` only below.
    query_start = from_us(now_us - US_PER_DAY - max(join_offset_us, 0))
    query_end = from_us(window_end + US_PER_DAY)
    # Dates (of any zone, UTC-14 to UTC+14 and then some) that can touch the query.
    low, high = query_start.date() - timedelta(days=2), query_end.date() + timedelta(days=2)
    wanted: list[Wanted] = []
    skipped: list[Skipped] = []
    unreadable: list[Skipped] = []
    seen: set[str] = set()
    total = readable = 0
    first_problem: str | None = None
    notes: list[str] = []
    for raw in reader.calendars:
        links: dict[tuple[int, ...], str | None] = {}  # per calendar: its occurrences are alive meanwhile
        total += len(raw.events)
        result = _expand_calendar(reader, raw, low, high, query_start, query_end, notes)
        readable += result.readable
        for item in result.skipped:
            first_problem = first_problem or item.reason
            unreadable.append(item)
        for event in result.occurrences:
            judged = _judge(event, result.recurring, result.this_and_future, now_us, window_end, join_offset_us,
                            emails, zone, links, calendar)
            if judged is None:
                continue
            if judged.key in seen:
                skipped.append(Skipped(judged.key, judged.uid, judged.summary, judged.start_us, DUPLICATE))
                continue
            seen.add(judged.key)
            if isinstance(judged, Wanted):
                wanted.append(judged)
            else:
                skipped.append(judged)
    if total and not readable:
        raise InvalidInput(f"{source}: no event could be read ({total} event{'s' if total != 1 else ''}); "
                           f"the first: {first_problem}")
    if not total and reader.problems:
        raise InvalidInput(f"{source}: not a valid iCalendar file: {reader.problems[0]}")
    for item in unreadable:
        if item.key not in seen:
            seen.add(item.key)
            skipped.append(item)
    count = sum(1 for item in unreadable if item.reason.startswith("cannot read"))
    if count:
        notes.insert(0, f"{source}: {count} event{'s' if count != 1 else ''} could not be read and "
                        f"{'are' if count != 1 else 'is'} skipped (see the reasons); "
                        f"{'their' if count != 1 else 'its'} bots are left alone")
    if reader.problems:
        more = f" (and {len(reader.problems) - 1} more)" if len(reader.problems) > 1 else ""
        notes.append(f"{source}: ignored {reader.problems[0]}{more}")
    wanted.sort(key=lambda w: (w.join_at_us, w.key))
    skipped.sort(key=lambda s: (-1 if s.start_us is None else s.start_us, s.key))
    return Expansion(wanted, skipped, now_us, window_end, notes)


@dataclass
class _CalendarResult:
    occurrences: list[Any]
    skipped: list[Skipped]
    recurring: set[str]
    this_and_future: dict[tuple[str, int], tuple[Any, Any]]
    readable: int


def _group(item: _Event) -> str:
    """What is read whole or not at all: a UID (a series and its overrides), or one
    event without UID."""
    return item.uid or f"#{item.block.first}"


def _expand_calendar(reader: _Reader, raw: _RawCalendar, low: date, high: date, query_start: datetime,
                     query_end: datetime, notes: list[str]) -> _CalendarResult:
    """One VCALENDAR: select, fix, parse and check its events, then expand them."""
    _fix_zones(reader, raw, low)
    by_uid: dict[str, list[_Block]] = {}
    recurring: set[str] = set()
    for block in raw.events:
        uid = _block_uid(reader, block)
        by_uid.setdefault(uid, []).append(block)
        if uid and any(name in block.props for name in (*_RULE_PROPERTIES, "RECURRENCE-ID")):
            recurring.add(uid)
    kept: list[_Event] = []
    readable = 0
    wall_zone = _wall_zone(reader, raw)
    for uid, blocks in by_uid.items():
        if uid:
            _fix_lotus_series(reader, blocks)
        relevant = [not _FAST or _relevant(reader, block, low, high) for block in blocks]
        if uid and any(relevant):  # an override in the window needs its series (its EXDATEs, SEQUENCE)
            relevant = [keep or "RECURRENCE-ID" not in block.props for keep, block in zip(relevant, blocks,
                                                                                             strict=True)]
        for block, keep in zip(blocks, relevant, strict=True):
            if keep:
                _fix_event(reader, block)
                if _FAST:
                    _rebase_series(reader, block, low, wall_zone)
                kept.append(_Event(block, uid))
            else:
                readable += 1  # read far enough to know it cannot touch the window
    bad_zones = _parse_zones(reader, raw) if kept else {}
    for item, component in zip(kept, _parse_events(reader, [item.block for item in kept]), strict=True):
        item.component = component
        if _FAST and component is not None:
            _add_text(reader, item.block, component)
        try:
            item.problem = (_explain_block(reader, item.block) if component is None
                            else _check(reader, item.block, component, bad_zones))
        except _NoStart:
            item.no_start = True
        readable += item.problem is None
    # A UID is read whole or not at all: one unreadable part (a broken override) spoils the series.
    spoiled: dict[str, list[_Event]] = {}
    for item in kept:
        if item.problem is not None:
            spoiled.setdefault(_group(item), []).append(item)
    skipped: list[Skipped] = []
    for items in spoiled.values():
        item = items[0]
        more = f" (and {len(items) - 1} more problem{'s' if len(items) > 2 else ''})" if len(items) > 1 else ""
        skipped.append(_unreadable(reader, item, f"cannot read {_what(item.uid, reader, item.block)}: "
                                                 f"{item.problem}{more}"))
    timed = {_group(item) for item in kept if item.problem is None and not item.no_start}
    method = (reader.calendar_value(raw, "METHOD") or "").strip().upper()
    for item in kept:
        if item.no_start and _group(item) not in timed and _group(item) not in spoiled:
            allowed = f" (allowed in a METHOD:{method} message)" if method else ""
            skipped.append(_unreadable(reader, item, f"nothing to join: {_what(item.uid, reader, item.block)} "
                                                     f"(line {reader.line_no(item.block.first)}) has no DTSTART"
                                                     f"{allowed}"))
            timed.add(_group(item))  # one row per UID
    good = [item for item in kept if item.problem is None and not item.no_start and _group(item) not in spoiled]
    occurrences, this_and_future, failed = _occurrences(reader, raw, good, query_start, query_end, notes)
    for item, why in failed:
        skipped.append(_unreadable(reader, item, f"cannot read {_what(item.uid, reader, item.block)}: {why}"))
    return _CalendarResult(occurrences, skipped, recurring, this_and_future, readable)


def _unreadable(reader: _Reader, item: _Event, reason: str) -> Skipped:
    uid = item.uid or _unreadable_uid(reader, item.block)
    summary = _summary_of_block(reader, item.block, item.component)
    return Skipped(event_key(uid, None, reader.calendar), uid, summary, None, reason,
                   unreadable=True)


def _wall_zone(reader: _Reader, raw: _RawCalendar) -> tzinfo | None:
    """The zone of the calendar's X-WR-TIMEZONE, if it names one."""
    for index in raw.props.get("X-WR-TIMEZONE", ())[:1]:
        try:
            return ZoneInfo(reader.value(index).strip().strip('"').strip())
        except Exception:  # noqa: BLE001  # not a zone name: ignored (with a warning, see _calendar_for)
            return None
    return None


def _calendar_for(reader: _Reader, raw: _RawCalendar, notes: list[str]) -> icalendar.Calendar:
    """An ``icalendar`` calendar with what the expansion needs of the file's header."""
    calendar = icalendar.Calendar()
    for index in raw.props.get("X-WR-TIMEZONE", ())[:1]:
        name = reader.value(index).strip().strip('"').strip()
        try:
            ZoneInfo(name)
        except Exception:  # noqa: BLE001  # not a zone name (or an empty one): the times stay as written
            notes.append(f"{reader.source}: X-WR-TIMEZONE on line {reader.line_no(index)} ({_shown(name)}) is not "
                         "a time zone: ignored")
        else:
            calendar["X-WR-TIMEZONE"] = name
    return calendar


def _series_problem(reader: _Reader, item: _Event) -> str:
    lines = [f"{name} on line {reader.line_no(index)}" for name in ("RRULE", "RDATE", "EXDATE")
             for index in item.block.props.get(name, ())]
    return "its occurrences cannot be worked out from " + (", ".join(lines) if lines else "its DTSTART")


def _query(calendar: icalendar.Calendar) -> tuple[list[Any], icalendar.Calendar]:
    """``recurring_ical_events``' series of a calendar, after X-WR-TIMEZONE (as ``of``
    does), and the calendar as expanded (the overrides' times as the library saw them)."""
    if x_wr_timezone is None:  # pragma: no cover
        query = recurring_ical_events.of(calendar, keep_recurrence_attributes=True, skip_bad_series=True)
        return list(query.series), calendar
    standard = x_wr_timezone.to_standard(calendar)
    query = recurring_ical_events.CalendarQuery(standard, keep_recurrence_attributes=True, skip_bad_series=True)
    return list(query.series), standard


def _occurrences(
    reader: _Reader, raw: _RawCalendar, good: list[_Event], start: datetime, end: datetime, notes: list[str]
) -> tuple[list[Any], dict[tuple[str, int], tuple[Any, Any]], list[tuple[_Event, str]]]:
    """Every occurrence of the good events over ``[start, end]``, the RANGE=THISANDFUTURE
    overrides (by UID and RECURRENCE-ID: their new start and RECURRENCE-ID), and the
    series that ``recurring_ical_events`` could not expand (with why)."""
    if not good:
        return [], {}, []
    groups: dict[str, list[_Event]] = {}
    for item in good:
        if not item.uid:  # give it its stand-in UID, so that its series can be told apart
            item.component["UID"] = _uid_of(item.component)
        groups.setdefault(str(item.component["UID"]), []).append(item)
    calendar = _calendar_for(reader, raw, notes)
    failed: list[tuple[_Event, str]] = []
    standards: list[icalendar.Calendar] = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for item in good:
            calendar.add_component(item.component)
        try:
            series, standard = _query(calendar)
            standards.append(standard)
        except Exception:  # noqa: BLE001  # something the library could not skip: UID by UID, to find it
            series = []
            for items in groups.values():
                alone = _calendar_for(reader, raw, [])
                for item in items:
                    alone.add_component(item.component)
                try:
                    found, standard = _query(alone)
                except Exception:  # noqa: BLE001
                    failed.append((items[0], _series_problem(reader, items[0])))
                    continue
                series.extend(found)
                standards.append(standard)
        built = {str(one.uid) for one in series}
        lost = {str(item.component["UID"]) for item, _ in failed}
        for uid, items in groups.items():
            if uid not in built and uid not in lost:  # skipped by the library as a bad series
                failed.append((items[0], _series_problem(reader, items[0])))
        occurrences: list[Any] = []
        for one in series:
            try:
                found = [occurrence.as_component(True) for occurrence in one.between(start, end)]
            except Exception:  # noqa: BLE001
                of_uid = groups.get(str(one.uid))
                if of_uid:
                    failed.append((of_uid[0], _series_problem(reader, of_uid[0])))
                continue
            occurrences.extend(found)
    this_and_future: dict[tuple[str, int], tuple[Any, Any]] = {}
    for standard in standards:
        for event in standard.walk("VEVENT"):
            rid: Any = event.get("RECURRENCE-ID")
            if rid is not None and str(rid.params.get("RANGE", "")).upper() == "THISANDFUTURE":
                moved: Any = event["DTSTART"]
                this_and_future[(_uid_of(event), _instant_us(rid.dt, UTC))] = (moved.dt, rid.dt)
    return occurrences, this_and_future, failed


def _judge(
    event: Any,
    recurring: set[str],
    this_and_future: dict[tuple[str, int], tuple[Any, Any]],
    now_us: int,
    window_end: int,
    offset_us: int,
    emails: set[str],
    zone: tzinfo,
    links: dict[tuple[int, ...], str | None] | None = None,
    calendar: str | None = None,
) -> Wanted | Skipped | None:
    """One occurrence: a bot, a skip with its reason, or nothing (outside the window).

    ``links`` caches meeting links by the identity of the link properties' values: the
    occurrences of a series are shallow copies of one component and share them (and
    those components live as long as the expansion, so the ids stay theirs)."""
    start = event["DTSTART"].dt
    all_day = not isinstance(start, datetime)
    start_us = _instant_us(start, zone)
    end_us = _instant_us(_end(event, start), zone)
    if start_us >= window_end or (end_us <= now_us and start_us < now_us):
        return None  # after the window, or over
    uid = _uid_of(event)
    summary = _summary_text(_first(event, "SUMMARY"))
    original = None
    if uid in recurring or (uid.startswith("nouid-") and any(n in event for n in ("RRULE", "RDATE", "RECURRENCE-ID"))):
        rid = event.get("RECURRENCE-ID")
        moment = rid.dt if rid is not None else start
        if rid is not None and str(rid.params.get("RANGE", "")).upper() == "THISANDFUTURE":
            moment = _original_of_later(uid, rid.dt, start, this_and_future)
        original = _original_start_text(moment, zone)
    key = event_key(uid, original, calendar)

    def skip(reason: str) -> Skipped:
        return Skipped(key, uid, summary, start_us, reason)

    statuses = event.get("STATUS")
    if any(str(s).strip().upper() == "CANCELLED" for s in (statuses if isinstance(statuses, list) else [statuses])):
        return skip(CANCELLED)
    if all_day:
        return skip(ALL_DAY)
    who = declined_by(event, emails)
    if who is not None:
        return skip(f"declined by {who}")
    if links is None:
        url = find_meeting_url(event)
    else:
        same = tuple(id(event.get(name)) for name in LINK_PROPERTIES)
        url = links[same] if same in links else links.setdefault(same, find_meeting_url(event))
    if url is None:
        return skip(NO_URL)
    join_us = start_us + offset_us
    if join_us <= now_us:
        return skip(STARTED if start_us < now_us else JOIN_PASSED)
    return Wanted(key, uid, summary, url, start_us, join_us)


def _original_of_later(uid: str, rid: Any, start: Any, this_and_future: dict[tuple[str, int], tuple[Any, Any]]) -> Any:
    """The original start of an occurrence that a ``RANGE=THISANDFUTURE`` override moved.

    ``recurring_ical_events`` gives every later occurrence the override's RECURRENCE-ID;
    each was moved by the override's shift (new start - RECURRENCE-ID, on the wall
    clock), so its own original start is its start minus that shift. The override itself
    keeps its RECURRENCE-ID.
    """
    found = this_and_future.get((uid, _instant_us(rid, UTC)))
    if found is None:
        return rid
    moved_start, original = found
    here, there = _pair(start, moved_start)
    if here == there:
        return rid  # the override itself
    new, old = _pair(moved_start, original)
    return start - (new - old)


def _pair(one: Any, two: Any) -> tuple[Any, Any]:
    """Two iCalendar times made comparable (dates, floating and zoned date-times mix)."""
    if isinstance(one, datetime) != isinstance(two, datetime):
        one, two = (v if isinstance(v, datetime) else datetime(v.year, v.month, v.day) for v in (one, two))
    if isinstance(one, datetime) and (one.tzinfo is None) != (two.tzinfo is None):
        one = one.replace(tzinfo=two.tzinfo) if one.tzinfo is None else one
        two = two.replace(tzinfo=one.tzinfo) if two.tzinfo is None else two
    return one, two

