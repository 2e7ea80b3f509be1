"""What a calendar asks for and what a sync does: the shared vocabulary of calsync.

``ics`` produces ``Wanted`` and ``Skipped`` occurrences, ``plan`` turns them into
``Action``s; both (and the CLI) read the skip reasons from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from botsched.core.timeparse import format_instant

US_PER_DAY = 86_400 * 1_000_000
#: Metadata stays far below the 16 KiB / 50 pair limits.
MAX_SUMMARY = 200
MAX_UID_META = 1000
TERMINAL = frozenset({"ended", "fatal_error"})

# -- skip reasons ------------------------------------------------------------------

CANCELLED = "event is cancelled"
ALL_DAY = "all-day event"
NO_URL = "no meeting URL"
STARTED = "already started"
JOIN_PASSED = "join time has already passed"
DUPLICATE = "duplicate of another event with the same UID and start"
#: The reason of a bot whose event is in the file but could not be read.
LEFT_ALONE = "its event could not be read: left alone"

#: Skip reasons for which an existing ``scheduled`` bot is cancelled; for the others
#: (the occurrence is under way, or could not be read) the bot is left alone.
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
    """One occurrence in the window that gets no bot, and why.

    ``unreadable``: the event (all of its occurrences) could not be read; ``key`` is
    then the event's key without a start, ``start_us`` usually ``None``, and every bot
    of the event is left alone rather than cancelled.
    """

    key: str
    uid: str
    summary: str
    start_us: int | None
    reason: str
    unreadable: bool = False

    @property
    def cancels_bot(self) -> bool:
        return not self.unreadable and self.reason.startswith(CANCELS_BOT)


@dataclass
class Expansion:
    wanted: list[Wanted]
    skipped: list[Skipped]
    window_start_us: int
    window_end_us: int
    #: Things worth a ``warning:`` line (unreadable events, ignored lines).
    warnings: list[str] = field(default_factory=list)

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
