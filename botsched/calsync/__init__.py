"""Calendar sync, the pure core: iCalendar text in, a plan of bot changes out.

- ``ics``: reading and expanding a calendar (``expand``);
- ``links``: finding an occurrence's meeting link;
- ``keys``: deduplication keys, per followed calendar;
- ``plan``: what to create, reschedule and cancel;
- ``sources``: fetching a file, an https feed or a CalDAV collection;
- ``follow``: when to poll a followed calendar next.

The command (``botsched.cli.calendar``) applies the plan; it imports this package only
when it runs, so ``icalendar`` costs nothing to other commands. The names below are the
package's interface (the CLI and the tests use them as ``calsync.NAME``).
"""

from __future__ import annotations

from botsched.calsync.ics import declined_by, expand, parse_calendars
from botsched.calsync.keys import (
    KEY_PREFIX,
    MAX_UID_IN_KEY,
    calendar_of,
    event_key,
    key_base,
    key_prefix,
    uid_part,
    validate_calendar_name,
)
from botsched.calsync.links import find_meeting_url, links_in_text, meeting_platform
from botsched.calsync.model import (
    ACTIONS,
    ALL_DAY,
    CANCELLED,
    CANCELS_BOT,
    DUPLICATE,
    JOIN_PASSED,
    LEFT_ALONE,
    MAX_SUMMARY,
    MAX_UID_META,
    NO_URL,
    STARTED,
    TERMINAL,
    Action,
    Expansion,
    Skipped,
    Wanted,
    instant_text,
)
from botsched.calsync.plan import counts, plan
from botsched.core.timeparse import parse_instant

__all__ = [
    "ACTIONS", "ALL_DAY", "CANCELLED", "CANCELS_BOT", "DUPLICATE", "JOIN_PASSED", "KEY_PREFIX", "LEFT_ALONE",
    "MAX_SUMMARY", "MAX_UID_IN_KEY", "MAX_UID_META", "NO_URL", "STARTED", "TERMINAL", "Action", "Expansion",
    "Skipped", "Wanted", "calendar_of", "counts", "declined_by", "event_key", "expand", "find_meeting_url",
    "instant_text",
    "key_base", "key_prefix", "links_in_text", "meeting_platform", "parse_calendars", "parse_instant", "plan",
    "uid_part", "validate_calendar_name",
]
