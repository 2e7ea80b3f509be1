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

KEY_PREFIX = "ical:"
#: A UID longer than this (or unprintable) is hashed in the key (keys are at most 256).
MAX_UID_IN_KEY = 200

def uid_part(uid: str) -> str:
    """The UID as it appears in keys: itself, or a hash when it is too long or unprintable."""
    if uid and len(uid) <= MAX_UID_IN_KEY and uid.isprintable():
        return uid
    return "sha1-" + hashlib.sha1(uid.encode("utf-8", "surrogatepass")).hexdigest()


def event_key(uid: str, original_start: str | None) -> str:
    """``ical:<UID>`` for a single event, ``ical:<UID>@<original start>`` in a series."""
    base = KEY_PREFIX + uid_part(uid)
    return base if original_start is None else f"{base}@{original_start}"


_KEY_START = re.compile(r"@\d{4}-\d\d-\d\d(?:T\d\d:\d\d:\d\d(?:\.\d{1,6})?Z)?$")


def key_base(key: str) -> str:
    """A key without its ``@<original start>``: the key of the event as a whole."""
    return _KEY_START.sub("", key)
