"""Calendar sync, the pure core: an iCalendar file in, a plan of bot changes out.

No socket and no clock here: ``expand`` turns the bytes of an ``.ics`` file into the
bots it asks for over ``[now, now + days)`` (plus the occurrences it skips, with
reasons), and ``plan`` compares those with the calendar's existing bots. The command
(``botsched.calsync_cli``) reads the file, asks the daemon and applies the plan.

Parsing uses ``icalendar`` (RFC 5545, VTIMEZONE and Windows zone names such as
"W. Europe Standard Time") and ``recurring_ical_events`` (RRULE, RDATE, EXDATE,
RECURRENCE-ID, and X-WR-TIMEZONE as Google exports it).

Every occurrence maps to one bot through its deduplication key:

- a single event: ``ical:<UID>``
- an occurrence of a recurring series: ``ical:<UID>@<original start, UTC, ...Z>``
  (its RECURRENCE-ID), so moving the occurrence keeps the key and the bot.
"""

from __future__ import annotations

import hashlib
import html
import re
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone, tzinfo
from typing import Any
from urllib.parse import parse_qs, urlsplit

import icalendar
import recurring_ical_events

from botsched.errors import InvalidInput
from botsched.platforms import detect_platform
from botsched.timeparse import format_instant, from_us, parse_instant, to_us
from botsched.validation import validate_meeting_url

UTC = timezone.utc
KEY_PREFIX = "ical:"
US_PER_DAY = 86_400 * 1_000_000
#: Metadata stays far below the 16 KiB / 50 pair limits.
MAX_SUMMARY = 200
MAX_UID_META = 1000
#: A UID longer than this (or unprintable) is hashed in the key (keys are at most 256).
MAX_UID_IN_KEY = 200
TERMINAL = frozenset({"ended", "fatal_error"})

# -- skip reasons ------------------------------------------------------------------

CANCELLED = "event is cancelled"
ALL_DAY = "all-day event"
NO_URL = "no meeting URL"
STARTED = "already started"
JOIN_PASSED = "join time has already passed"
DUPLICATE = "duplicate of another event with the same UID and start"

#: Skip reasons for which an existing ``scheduled`` bot is cancelled; for the others
#: (the occurrence is under way) the bot is left alone.
CANCELS_BOT = (CANCELLED, ALL_DAY, NO_URL, "declined")


@dataclass(frozen=True)
class Wanted:
    """One occurrence that should have a bot."""

    key: str
    uid: str
    summary: str
    meeting_url: str
    start_us: int
    join_at_us: int

    @property
    def join_at(self) -> str:
        return instant_text(self.join_at_us)

    @property
    def metadata(self) -> dict[str, str]:
        return {"calendar_uid": self.uid[:MAX_UID_META], "calendar_summary": self.summary[:MAX_SUMMARY]}


@dataclass(frozen=True)
class Skipped:
    """One occurrence in the window that gets no bot, and why."""

    key: str
    uid: str
    summary: str
    start_us: int
    reason: str

    @property
    def cancels_bot(self) -> bool:
        return self.reason.startswith(CANCELS_BOT)


@dataclass
class Expansion:
    wanted: list[Wanted]
    skipped: list[Skipped]
    window_start_us: int
    window_end_us: int

    @property
    def no_url(self) -> int:
        return sum(1 for s in self.skipped if s.reason == NO_URL)


@dataclass
class Action:
    """One line of the plan: what happens to one key (and its bot)."""

    action: str  # create | reschedule | cancel | unchanged | skipped | failed (after applying)
    key: str
    summary: str
    join_at: str | None = None
    reason: str | None = None
    bot_id: str | None = None
    meeting_url: str | None = None
    state: str | None = None
    previous_join_at: str | None = None
    start: str | None = None  # the occurrence's start (UTC), when there is one
    metadata: dict[str, str] = field(default_factory=dict)
    sort_us: int = 0

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "action": self.action,
            "key": self.key,
            "bot_id": self.bot_id,
            "summary": self.summary,
            "join_at": self.join_at,
            "reason": self.reason,
            "meeting_url": self.meeting_url,
            "state": self.state,
            "start": self.start,
        }
        if self.previous_join_at is not None:
            out["previous_join_at"] = self.previous_join_at
        return out


ACTIONS = ("create", "reschedule", "cancel", "unchanged", "skipped")


def instant_text(us: int) -> str:
    """UTC ISO ``...Z``, whole seconds unless the time has a fraction."""
    return format_instant(us, 0 if us % 1_000_000 == 0 else 6)


# -- parsing -----------------------------------------------------------------------


def parse_calendars(data: bytes | str, source: str = "calendar") -> list[icalendar.Calendar]:
    """The VCALENDARs in the file; a clear ``InvalidInput`` (exit 2) when it is not one."""
    text = data.decode("utf-8", errors="replace") if isinstance(data, bytes) else data
    text = text.lstrip("\ufeff")
    if "BEGIN:VCALENDAR" not in text.upper():
        raise InvalidInput(f"{source}: not an iCalendar file (no BEGIN:VCALENDAR)")
    try:
        with warnings.catch_warnings():  # e.g. a guessed TZID: not worth a Python warning on stderr
            warnings.simplefilter("ignore")
            found = icalendar.Calendar.from_ical(text, multiple=True)
    except Exception as exc:  # icalendar raises ValueError, sometimes others, for bad input
        raise InvalidInput(f"{source}: not a valid iCalendar file: {_one_line(exc)}") from None
    calendars = [c for c in found if isinstance(c, icalendar.Calendar) and c.name == "VCALENDAR"]
    if not calendars:
        raise InvalidInput(f"{source}: not an iCalendar file (no VCALENDAR component)")
    return calendars


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return (text[:300] + "…") if len(text) > 300 else (text or type(exc).__name__)


# -- meeting URLs ------------------------------------------------------------------

_URL = re.compile(r"""https?://[^\s<>"'`{}|\\^\[\]]+""", re.IGNORECASE)
_HREF = re.compile(r"""href\s*=\s*(?:"([^"]*)"|'([^']*)')""", re.IGNORECASE)
_TAG = re.compile(r"<[^>]*>")
_LOOKS_HTML = re.compile(r"<(?:a|p|br|div|span|html|body|b|i|u|table|td|tr|font|strong|em)\b[^>]*>|</[a-z]+>", re.I)
_MEET_CODE = re.compile(r"^/(?:[a-z]{3}-[a-z]{4}-[a-z]{3}|lookup/)", re.IGNORECASE)

#: Properties whose value is a link as such, best first.
_LINK_PROPERTIES = ("X-GOOGLE-CONFERENCE", "CONFERENCE", "X-MICROSOFT-SKYPETEAMSMEETINGURL", "URL")
#: Free text that may mention a link.
_TEXT_PROPERTIES = ("LOCATION", "DESCRIPTION", "X-ALT-DESC")


def _values(component: Any, name: str) -> list[str]:
    value = component.get(name)
    if value is None:
        return []
    items = value if isinstance(value, list) else [value]
    return [str(item) for item in items if str(item).strip()]


def links_in_text(text: str) -> list[str]:
    """Every http(s) link in plain text or HTML (hrefs first), entities unescaped."""
    found: list[str] = []
    if _LOOKS_HTML.search(text):
        for double, single in _HREF.findall(text):
            found.extend(_URL.findall(html.unescape(double or single)))
        text = html.unescape(_TAG.sub(" ", text))
    elif "&amp;" in text or "&#" in text:
        text = html.unescape(text)
    found.extend(_URL.findall(text))
    links: list[str] = []
    for raw in found:
        link = _unwrap(_trim(raw))
        if link and link not in links:
            links.append(link)
    return links


def _trim(link: str) -> str:
    """Drop sentence punctuation and an unbalanced closing bracket from a link's end."""
    while link and link[-1] in ".,;:!?*'\")":
        if link[-1] == ")" and link.count("(") >= link.count(")"):
            break
        link = link[:-1]
    return link


def _unwrap(link: str) -> str:
    """Google redirect (``google.com/url?q=``) and Outlook Safe Links point elsewhere."""
    try:
        parts = urlsplit(link)
        host = (parts.hostname or "").lower()
    except ValueError:
        return link
    if host in ("google.com", "www.google.com") and parts.path == "/url":
        target = parse_qs(parts.query).get("q") or parse_qs(parts.query).get("url")
    elif host.endswith("safelinks.protection.outlook.com"):
        target = parse_qs(parts.query).get("url")
    else:
        return link
    return target[0] if target and _URL.fullmatch(target[0]) else link


def _join_score(link: str, platform: str) -> int:
    """2 for a link that joins a meeting, 1 for another link of the platform, 0 for help pages."""
    parts = urlsplit(link)
    path = parts.path or "/"
    lowered = path.lower()
    name = platform.lower()  # "zoom", "google meet", "microsoft teams", "webex" (any spelling)
    if "zoom" in name:
        return 2 if re.match(r"^/(?:j|my|w|s|wc/join)/", lowered) else 1
    if "meet" in name and "google" in name.replace("_", " "):
        return 2 if _MEET_CODE.match(path) else (0 if lowered in ("/", "") else 1)
    if "teams" in name:
        if "meetingoptions" in lowered:
            return 0
        return 2 if ("/meetup-join/" in lowered or lowered.startswith("/meet/")) else 1
    if "webex" in name:
        return 2 if re.search(r"/(?:meet|join|j\.php|wbxmjs/joinservice)", lowered) else 1
    return 1


def _valid(link: str) -> bool:
    try:
        validate_meeting_url(link)
    except InvalidInput:
        return False
    return True


def find_meeting_url(component: Any) -> str | None:
    """The occurrence's meeting link, or ``None``.

    A Zoom / Meet / Teams / Webex link wins wherever it is (conference properties,
    ``URL``, ``LOCATION``, the plain or HTML ``DESCRIPTION``), join links before help
    pages. Otherwise a link of another platform counts only when it is given as such:
    a conference property, ``URL``, or a ``LOCATION`` that is nothing but a link.
    """
    candidates: list[tuple[str, bool]] = []  # (link, stated as a link)
    for name in _LINK_PROPERTIES:
        for value in _values(component, name):
            candidates.extend((link, True) for link in links_in_text(value))
    for name in _TEXT_PROPERTIES:
        for value in _values(component, name):
            lone = name == "LOCATION" and _URL.fullmatch(value.strip()) is not None
            candidates.extend((link, lone) for link in links_in_text(value))
    best: tuple[int, int, str] | None = None
    for order, (link, _) in enumerate(candidates):
        platform = detect_platform(link)
        if platform is None or not _valid(link):
            continue
        rank = (_join_score(link, platform), -order, link)
        if best is None or rank[:2] > best[:2]:
            best = rank
    if best is not None and best[0] > 0:
        return best[2]
    for link, stated in candidates:
        if stated and _valid(link):
            return link
    return best[2] if best is not None else None


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


def uid_part(uid: str) -> str:
    """The UID as it appears in keys: itself, or a hash when it is too long or unprintable."""
    if uid and len(uid) <= MAX_UID_IN_KEY and uid.isprintable():
        return uid
    return "sha1-" + hashlib.sha1(uid.encode("utf-8", "surrogatepass")).hexdigest()


def event_key(uid: str, original_start: str | None) -> str:
    """``ical:<UID>`` for a single event, ``ical:<UID>@<original start>`` in a series."""
    base = KEY_PREFIX + uid_part(uid)
    return base if original_start is None else f"{base}@{original_start}"


def _recurring_uids(calendar: icalendar.Calendar) -> set[str]:
    """UIDs of series: a VEVENT with RRULE or RDATE, or an overridden occurrence."""
    uids: set[str] = set()
    for event in calendar.walk("VEVENT"):
        if any(name in event for name in ("RRULE", "RDATE", "RECURRENCE-ID")):
            uids.add(_uid_of(event))
    return uids


def _uid_of(event: Any) -> str:
    uid = str(event.get("UID", "")).strip()
    if uid:
        return uid
    # No UID (broken export): derive one from what identifies the event, stable across runs.
    start = event.get("DTSTART")
    basis = f"{event.get('SUMMARY', '')}|{start.to_ical().decode() if start is not None else ''}"
    return "nouid-" + hashlib.sha1(basis.encode()).hexdigest()[:20]


def _end(event: Any, start: date | datetime) -> date | datetime:
    try:
        end = event.end
    except Exception:  # no DTEND/DURATION, or an odd one: a moment (or one day)
        end = None
    if end is None:
        return start + timedelta(days=1) if not isinstance(start, datetime) else start
    return end


# -- expanding ---------------------------------------------------------------------


def expand(
    data: bytes | str | icalendar.Calendar | Sequence[icalendar.Calendar],
    now_us: int,
    *,
    days: int = 14,
    join_offset_us: int = 0,
    email: str | Iterable[str] | None = None,
    zone: tzinfo = UTC,
    source: str = "calendar",
) -> Expansion:
    """The bots a calendar asks for over ``[now, now + days)``, and what it skips.

    ``zone`` is the local zone for floating times and all-day dates (config
    ``defaults.timezone``). Occurrences that already ended or start after the window
    are left out silently; the ones under way are skipped as "already started".
    """
    if days <= 0:
        raise InvalidInput("--days must be 1 or more")
    if isinstance(data, (bytes, str)):
        calendars = parse_calendars(data, source)
    elif isinstance(data, icalendar.Calendar):
        calendars = [data]
    else:
        calendars = list(data)
    window_end = now_us + days * US_PER_DAY
    emails = _emails(email)
    wanted: list[Wanted] = []
    skipped: list[Skipped] = []
    seen: set[str] = set()
    # A day's margin each side: floating times are placed in `zone` only below.
    query_start = from_us(now_us - US_PER_DAY - max(join_offset_us, 0))
    query_end = from_us(window_end + US_PER_DAY)
    for calendar in calendars:
        recurring = _recurring_uids(calendar)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                occurrences = recurring_ical_events.of(
                    calendar, keep_recurrence_attributes=True, skip_bad_series=True
                ).between(query_start, query_end)
        except Exception as exc:  # a malformed calendar the library could not skip
            raise InvalidInput(f"{source}: cannot expand the calendar's events: {_one_line(exc)}") from None
        for event in occurrences:
            item = _judge(event, recurring, now_us, window_end, join_offset_us, emails, zone)
            if item is None:
                continue
            if item.key in seen:
                skipped.append(Skipped(item.key, item.uid, item.summary, item.start_us, DUPLICATE))
                continue
            seen.add(item.key)
            (wanted if isinstance(item, Wanted) else skipped).append(item)
    wanted.sort(key=lambda w: (w.join_at_us, w.key))
    skipped.sort(key=lambda s: (s.start_us, s.key))
    return Expansion(wanted, skipped, now_us, window_end)


def _judge(
    event: Any,
    recurring: set[str],
    now_us: int,
    window_end: int,
    offset_us: int,
    emails: set[str],
    zone: tzinfo,
) -> Wanted | Skipped | None:
    """One occurrence: a bot, a skip with its reason, or nothing (outside the window)."""
    start_prop = event.get("DTSTART")
    if start_prop is None:
        return None
    start = start_prop.dt
    all_day = not isinstance(start, datetime)
    start_us = _instant_us(start, zone)
    end_us = _instant_us(_end(event, start), zone)
    if start_us >= window_end or (end_us <= now_us and start_us < now_us):
        return None  # after the window, or over
    uid = _uid_of(event)
    summary = " ".join(str(event.get("SUMMARY", "")).split()) or "(no title)"
    original = None
    if uid in recurring:
        rid = event.get("RECURRENCE-ID")
        original = _original_start_text(rid.dt if rid is not None else start, zone)
    key = event_key(uid, original)

    def skip(reason: str) -> Skipped:
        return Skipped(key, uid, summary, start_us, reason)

    if str(event.get("STATUS", "")).upper() == "CANCELLED":
        return skip(CANCELLED)
    if all_day:
        return skip(ALL_DAY)
    who = declined_by(event, emails)
    if who is not None:
        return skip(f"declined by {who}")
    url = find_meeting_url(event)
    if url is None:
        return skip(NO_URL)
    join_us = start_us + offset_us
    if join_us <= now_us:
        return skip(STARTED if start_us < now_us else JOIN_PASSED)
    return Wanted(key, uid, summary, url, start_us, join_us)


# -- planning ----------------------------------------------------------------------


def _bot_join_us(bot: dict[str, Any]) -> int | None:
    text = bot.get("join_at")
    if not text:
        return None
    try:
        return parse_instant(text)
    except InvalidInput:
        return None


def plan(
    desired: Sequence[Wanted],
    existing_bots: Iterable[dict[str, Any]],
    now_us: int,
    *,
    skipped: Sequence[Skipped] = (),
    horizon_us: int | None = None,
) -> list[Action]:
    """What to do so that every wanted occurrence has exactly one bot.

    Only bots whose dedup key starts with ``ical:`` are looked at. A ``scheduled`` bot
    is rescheduled when its time differs, replaced (cancel + create) when the meeting
    link changed, and cancelled when its occurrence is gone (removed, cancelled,
    declined, lost its link) — unless it joins at or after ``horizon_us`` (beyond the
    window this run looked at). Bots in any other state are never touched: they are
    reported. A key whose bot already ran (``ended``/``fatal_error``) is done.
    """
    live: dict[str, dict[str, Any]] = {}
    finished: dict[str, dict[str, Any]] = {}
    for bot in existing_bots:
        key = bot.get("deduplication_key") or ""
        if not key.startswith(KEY_PREFIX):
            continue
        if bot.get("state") in TERMINAL:
            finished.setdefault(key, bot)
        else:
            live[key] = bot
    actions: list[Action] = []
    handled: set[str] = set()
    for want in desired:
        if want.key in handled:
            continue
        handled.add(want.key)
        actions.extend(_plan_wanted(want, live.get(want.key), finished.get(want.key)))
    for skip in skipped:
        if skip.key in handled:
            continue
        handled.add(skip.key)
        bot = live.get(skip.key)
        if bot is None:
            actions.append(Action("skipped", skip.key, skip.summary, None, skip.reason,
                                  start=instant_text(skip.start_us), sort_us=skip.start_us))
            continue
        actions.append(_plan_gone(bot, now_us, horizon_us, skip.reason if skip.cancels_bot else None, skip))
    for key, bot in live.items():
        if key not in handled:
            actions.append(_plan_gone(bot, now_us, horizon_us, "event removed from the calendar", None))
    actions.sort(key=lambda a: (a.sort_us, a.key, _ORDER.get(a.action, 9)))
    return actions


#: Display order of one key's actions (a replaced bot: cancel, then create).
_ORDER = {"cancel": 0, "create": 1}


def _summary_of(bot: dict[str, Any]) -> str:
    return (bot.get("metadata") or {}).get("calendar_summary") or "(unknown event)"


def _plan_wanted(want: Wanted, bot: dict[str, Any] | None, done: dict[str, Any] | None) -> list[Action]:
    def action(kind: str, reason: str | None = None, **extra: Any) -> Action:
        return Action(kind, want.key, want.summary, want.join_at, reason, meeting_url=want.meeting_url,
                      start=instant_text(want.start_us), metadata=want.metadata, sort_us=want.join_at_us, **extra)

    if bot is None:
        if done is not None:
            return [action("unchanged", f"bot already ran ({done['state']})", bot_id=done["id"], state=done["state"])]
        return [action("create")]
    state = bot.get("state")
    current_us = _bot_join_us(bot)
    ids = {"bot_id": bot["id"], "state": state}
    if state != "scheduled":
        if current_us is not None and current_us != want.join_at_us:
            return [action("skipped", f"event moved, but the bot is {state}: left alone",
                           previous_join_at=bot.get("join_at"), **ids)]
        return [action("unchanged", f"bot is {state}", **ids)]
    if bot.get("meeting_url") != want.meeting_url:
        return [
            Action("cancel", want.key, want.summary, bot.get("join_at"), "meeting link changed: replacing the bot",
                   bot_id=bot["id"], meeting_url=bot.get("meeting_url"), state=state,
                   start=instant_text(want.start_us), sort_us=want.join_at_us),
            action("create", "meeting link changed"),
        ]
    if current_us != want.join_at_us:
        return [action("reschedule", "join time changed", previous_join_at=bot.get("join_at"), **ids)]
    return [action("unchanged", **ids)]


def _plan_gone(
    bot: dict[str, Any], now_us: int, horizon_us: int | None, reason: str | None, skip: Skipped | None
) -> Action:
    """A live bot whose key is not wanted now; ``reason`` None means its occurrence is under way."""
    key = bot["deduplication_key"]
    summary = skip.summary if skip is not None else _summary_of(bot)
    join_us = _bot_join_us(bot)
    sort_us = join_us if join_us is not None else (skip.start_us if skip is not None else now_us)

    def action(kind: str, why: str) -> Action:
        return Action(kind, key, summary, bot.get("join_at"), why, bot_id=bot["id"],
                      meeting_url=bot.get("meeting_url"), state=bot.get("state"),
                      start=instant_text(skip.start_us) if skip is not None else None, sort_us=sort_us)

    state = bot.get("state")
    if state != "scheduled":
        if reason is None:
            return action("unchanged", f"bot is {state}")
        return action("skipped", f"{reason}, but the bot is {state}: left alone")
    if reason is None:
        return action("unchanged", skip.reason if skip is not None else "under way")
    if join_us is not None and join_us <= now_us:
        return action("unchanged", "bot is about to join: left alone")
    if skip is None and horizon_us is not None and join_us is not None and join_us >= horizon_us:
        return action("unchanged", "beyond the sync window")
    return action("cancel", reason)


def counts(actions: Iterable[Action]) -> dict[str, int]:
    result = {name: 0 for name in (*ACTIONS, "failed")}
    for item in actions:
        result[item.action] = result.get(item.action, 0) + 1
    return result
