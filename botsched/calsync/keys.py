"""Deduplication keys: one bot per occurrence, stable when the occurrence moves.

- a single event: ``ical:<UID>``; an occurrence of a series: ``ical:<UID>@<original
  start>`` (``calendar sync FILE``, the keys existing users have);
- the same behind ``ical/<NAME>:`` for a calendar the daemon follows, so that several
  calendars' bots stay apart (``ical:`` is not a prefix of ``ical/``, so a file sync
  never sees a followed calendar's bots, nor one followed calendar another's).
"""

from __future__ import annotations

import hashlib
import re

from botsched.core.errors import InvalidInput

KEY_PREFIX = "ical:"
#: A UID longer than this (or unprintable) is hashed in the key (keys are at most 256).
MAX_UID_IN_KEY = 200
#: A followed calendar's name: short, lower case, no ``:`` or ``/`` (it ends the prefix).
MAX_NAME = 32
_NAME = re.compile(rf"[a-z0-9][a-z0-9_-]{{0,{MAX_NAME - 1}}}")

def validate_calendar_name(name: str) -> str:
    """A followed calendar's name as keys carry it (``work``, ``team-sync``)."""
    if not _NAME.fullmatch(name):
        raise InvalidInput(f"bad calendar name {name!r}: use 1 to {MAX_NAME} lower-case letters, digits, '-' "
                           "or '_', starting with a letter or digit")
    return name


def key_prefix(calendar: str | None = None) -> str:
    """``ical:`` for ``calendar sync FILE``, ``ical/<NAME>:`` for a followed calendar."""
    return KEY_PREFIX if calendar is None else f"ical/{validate_calendar_name(calendar)}:"


def calendar_of(key: str) -> str | None:
    """The followed calendar a key belongs to (``None``: a file sync's, or not a calendar key)."""
    if not key.startswith("ical/"):
        return None
    name, colon, _ = key[len("ical/"):].partition(":")
    return name if colon and _NAME.fullmatch(name) else None


def uid_part(uid: str, limit: int = MAX_UID_IN_KEY) -> str:
    """The UID as it appears in keys: itself, or a hash when it is too long or unprintable."""
    if uid and len(uid) <= limit and uid.isprintable():
        return uid
    return "sha1-" + hashlib.sha1(uid.encode("utf-8", "surrogatepass")).hexdigest()


def event_key(uid: str, original_start: str | None, calendar: str | None = None) -> str:
    """``<prefix><UID>`` for a single event, ``<prefix><UID>@<original start>`` in a series.

    A followed calendar's longer prefix shortens the UIDs kept whole, so every key
    stays within the 256 characters of a dedup key; a file sync's keys are as before.
    """
    prefix = key_prefix(calendar)
    base = prefix + uid_part(uid, MAX_UID_IN_KEY - (len(prefix) - len(KEY_PREFIX)))
    return base if original_start is None else f"{base}@{original_start}"


_KEY_START = re.compile(r"@\d{4}-\d\d-\d\d(?:T\d\d:\d\d:\d\d(?:\.\d{1,6})?Z)?$")


def key_base(key: str) -> str:
    """A key without its ``@<original start>``: the key of the event as a whole."""
    return _KEY_START.sub("", key)
