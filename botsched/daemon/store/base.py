"""The store interface: exactly what the service and the scheduler ask of storage.

A second implementation (PostgreSQL, next) plugs in behind this without touching them;
``tests/contract/test_store_contract.py`` runs the same behaviour suite against each.

Rules every implementation keeps:

- Each state change is a compare-and-set (from state -> to state), atomic with its event
  row; racing actors for one bot have exactly one winner.
- Event sequence numbers are global, increasing, and never reused (not even after a cancel).
- Listeners (``on_events``, ``on_deleted``, given to the constructor) hear of changes only
  after their commit, in commit order.
- Methods take ``now_us`` from the caller: a store has no clock.
- A store speaks in data, not sentences: refusals are the typed exceptions below; the
  service words them for users. Only ``StorageError`` (the storage itself failed) carries
  a message of its own.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from contextlib import AbstractContextManager
from typing import Any, NamedTuple, Protocol

from botsched.core.errors import BotschedError, ExitStatus
from botsched.core.model import Bot, Due, Event, NewBot

#: (bot_id, from_state, to_state, detail): one compare-and-set for ``transition_many``.
Change = tuple[str, str, str, "str | None"]
EventListener = Callable[[list[Event]], None]
DeleteListener = Callable[[str], None]


class StorageError(BotschedError):
    """The database refused a write (full disk, read-only, corrupt): nothing was changed."""


class DatabaseGone(StorageError):
    """The database file (or its WAL) was deleted or replaced under the running daemon:
    commits would go to a file no one can open again, so changes are refused (exit 5)."""

    exit_code = ExitStatus.UNAVAILABLE
    code = "unavailable"


class NotScheduled(Exception):
    """A change allowed only while scheduled (reschedule, cancel) found the bot in
    ``state`` (``None``: no such bot). Nothing was changed."""

    def __init__(self, bot_id: str, state: str | None) -> None:
        super().__init__(bot_id, state)
        self.bot_id = bot_id
        self.state = state


class KeyClash(NamedTuple):
    """Item number ``item`` (from 0) of an insert wants dedup ``key``, which a live bot (``holder_id`` in
    ``holder_state``) or an earlier item of the same batch (``earlier_index``) holds."""

    item: int
    key: str
    holder_id: str | None
    holder_state: str | None
    earlier_index: int | None


class DuplicateKeys(Exception):
    """An insert refused (all of it) because of dedup keys; ``clashes`` names each item."""

    def __init__(self, clashes: list[KeyClash]) -> None:
        super().__init__(clashes)
        self.clashes = clashes


class IllegalTransition(ValueError):
    """A change the state machine does not allow: a bug in the caller, never user input."""


class Store(Protocol):
    """What the service and the scheduler call (the constructor is each implementation's)."""

    # -- life and health ------------------------------------------------------------

    def close(self) -> None: ...

    def check_files(self) -> str | None:
        """Why changes are refused since the storage went away under us; ``None`` if fine."""
        ...

    def checkpoint_due(self) -> bool:
        """Whether housekeeping (SQLite: folding the WAL back) should run now."""
        ...

    def checkpoint(self) -> None:
        """The housekeeping; safe to run in a worker thread while the loop goes on."""
        ...

    def hold_announcements(self) -> AbstractContextManager[None]:
        """Commits inside are announced to listeners only when the block ends."""
        ...

    # -- creating and changing ------------------------------------------------------

    def insert(self, bots: Sequence[NewBot], now_us: int) -> list[str]:
        """All in one transaction, or none (``DuplicateKeys``); returns the new ids in order."""
        ...

    def reschedule(self, bot_id: str, join_at: str, join_at_us: int, now_us: int) -> None:
        """A scheduled bot's new join time (``NotScheduled`` otherwise)."""
        ...

    def delete_scheduled(self, bot_id: str) -> None:
        """Cancel: a scheduled bot and its history deleted for good (``NotScheduled`` otherwise)."""
        ...

    def transition_many(self, changes: Sequence[Change], now_us: int) -> list[str]:
        """Compare-and-sets in one transaction, in order; the ids that really moved."""
        ...

    def transition(self, bot_id: str, old: str, new: str, now_us: int, detail: str | None = None) -> bool: ...

    def stage_many(self, due: Sequence[Due], now_us: int) -> list[str]:
        """scheduled -> staged, each fenced on its ``join_at_us``; the ids staged."""
        ...

    def note(self, bot_id: str, now_us: int, detail: str) -> None:
        """An event that is not a state change (e.g. waiting for a runner slot)."""
        ...

    # -- reading --------------------------------------------------------------------

    def get(self, bot_id: str) -> Bot | None: ...

    def get_many(self, bot_ids: Sequence[str]) -> list[Bot]:
        """The bots that exist, in the order asked."""
        ...

    def list_bots(
        self, state_filter: Iterable[str] = (), limit: int = 100, dedup_prefix: str | None = None
    ) -> tuple[list[Bot], bool]:
        """A page ordered by join_at (ad-hoc bots by created_at), and whether more match;
        ``limit`` 0 = all; ``dedup_prefix`` is literal."""
        ...

    def list_page(
        self, state_filter: Iterable[str], dedup_prefix: str | None, after: tuple[int, int, str] | None, size: int
    ) -> tuple[list[Bot], tuple[int, int, str] | None]:
        """At most ``size`` bots of ``list_bots``' order after the key ``after`` (None: from the
        start), and the key of the last one: a streamed list in bounded memory."""
        ...

    def ids(self, state_filter: Iterable[str] = (), prefix: str = "", limit: int = 1000) -> list[str]: ...

    def counts(self) -> dict[str, int]:
        """Bots per state, every state present."""
        ...

    def events(self, bot_id: str | None = None, after_seq: int = 0, limit: int = 0) -> list[Event]: ...

    def state_since(self, bot_id: str) -> tuple[str, int] | None:
        """The bot's state and when it entered it."""
        ...

    # -- the queue ------------------------------------------------------------------

    def next_time(self, state: str) -> int | None:
        """Earliest join_at (created_at for ad-hoc) among bots in ``state``."""
        ...

    def due(self, state: str, until_us: int, limit: int = 10_000) -> list[Due]: ...

    def in_states(self, wanted: Iterable[str]) -> list[Due]: ...

    # -- followed calendars (issue 16) ----------------------------------------------

    def calendars(self) -> list[dict[str, Any]]:
        """Every followed calendar: ``name``, ``source``, ``options``, ``poll``, ``created_us``."""
        ...

    def add_calendar(self, name: str, source: dict[str, Any], options: dict[str, Any], poll: dict[str, Any],
                     now_us: int) -> bool:
        """``False`` (nothing changed) when the name is taken."""
        ...

    def save_calendar_poll(self, name: str, poll: dict[str, Any]) -> bool:
        """``False`` when the calendar is gone."""
        ...

    def remove_calendar(self, name: str) -> bool: ...


#: Metadata as stored: compact JSON, non-ASCII kept as it is (both stores write it so).
metadata_json = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def insert_rows(ids: Sequence[str], bots: Sequence[NewBot], now_us: int) -> list[tuple[Any, ...]]:
    """The ``bots`` rows of an insert, in both stores' column order (id, meeting_url, bot_name,
    state, join_at, join_at_us, created_us, updated_us, metadata, dedup_key), sorted by id:
    random ids inserted in key order make far fewer B-tree page visits."""
    return sorted(
        (bot_id, bot.meeting_url, bot.bot_name, bot.initial_state, bot.join_at, bot.join_at_us, now_us, now_us,
         metadata_json(bot.metadata) if bot.metadata else "{}", bot.dedup_key)
        for bot_id, bot in zip(ids, bots, strict=True)
    )
