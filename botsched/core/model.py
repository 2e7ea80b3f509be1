"""The typed shapes that travel: a bot and its events as JSON (SPEC §3), and the internal
tuples the daemon passes between service, scheduler and store.

Stdlib only, no I/O. Only the daemon imports this at run time (``typing`` costs start-up the
CLI's fast path cannot spare); the CLI reads these types under ``TYPE_CHECKING``.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from typing import NamedTuple, NotRequired, TypedDict

from botsched.core import states
from botsched.core.timeparse import format_instant

_ID_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#: byte -> letter/digit for bytes < 248 (= 4 x 62); bytes >= 248 are dropped: no modulo bias.
_ID_TABLE = bytes(_ID_ALPHABET[b % 62] for b in range(248)) + bytes(8)
_ID_REJECT = bytes(range(248, 256))


class BotEvent(TypedDict):
    """One entry of a bot's ``events`` (SPEC §3): ``at`` is UTC ISO 8601 with microseconds."""

    state: str
    at: str
    detail: str | None
    #: cluster mode only (SPEC §10): the agent that recorded it
    agent: NotRequired[str | None]


class StreamEvent(BotEvent):
    """An event on the ``events``/``wait`` stream: it names its bot."""

    bot_id: str


class Bot(TypedDict):
    """A bot as ``show --json`` prints it and the socket carries it (SPEC §3)."""

    id: str
    meeting_url: str
    bot_name: str
    state: str
    join_at: str | None
    created_at: str
    updated_at: str
    metadata: dict[str, str]
    deduplication_key: str | None
    #: cluster mode only (SPEC §10): the agent that staged it, null until then
    agent: NotRequired[str | None]
    events: list[BotEvent]


def make_bot(
    bot_id: str,
    meeting_url: str,
    bot_name: str,
    state: str,
    join_at: str | None,
    created_us: int,
    updated_us: int,
    metadata_json: str,
    dedup_key: str | None,
    events: list[Event],
    agent: str | None = None,
    clustered: bool = False,
) -> Bot:
    """The wire form of a stored bot (SPEC §3): stores hand over columns, this shapes them.
    A shared (cluster) store's bots also say which agent staged them (SPEC §10)."""
    bot: Bot = {
        "id": bot_id,
        "meeting_url": meeting_url,
        "bot_name": bot_name,
        "state": state,
        "join_at": join_at,
        "created_at": format_instant(created_us),
        "updated_at": format_instant(updated_us),
        "metadata": json.loads(metadata_json),
        "deduplication_key": dedup_key,
        "events": [] if clustered else [event.to_json() for event in events],
    }
    if clustered:
        shown = [event.to_json() for event in events]
        del bot["events"]  # type: ignore[misc]  # re-added after "agent": events stay last (SPEC §3)
        bot["agent"] = agent
        bot["events"] = shown
    return bot


def new_bot_id() -> str:
    """``bot_`` + 16 uniformly random letters and digits (rejection sampling, no modulo bias;
    done with ``bytes.translate`` because bulk creates make 100,000 of them)."""
    while True:
        raw = secrets.token_bytes(24).translate(None, _ID_REJECT)
        if len(raw) >= 16:
            return "bot_" + raw[:16].translate(_ID_TABLE).decode()


class NewBot(NamedTuple):
    """A validated create request, ready to insert (a tuple: bulk creates make 100,000)."""

    meeting_url: str
    bot_name: str
    join_at: str | None
    join_at_us: int | None
    metadata: dict[str, str]
    dedup_key: str | None

    @property
    def initial_state(self) -> str:
        return states.SCHEDULED if self.join_at_us is not None else states.READY


class Event(NamedTuple):
    """One row of a bot's history (a tuple: a burst or a bulk makes thousands)."""

    seq: int
    bot_id: str
    state: str
    at_us: int
    detail: str | None
    #: the agent that recorded it (cluster mode); None on the single-machine store
    agent: str | None = None

    def to_json(self) -> BotEvent:
        shaped: BotEvent = {"state": self.state, "at": format_instant(self.at_us), "detail": self.detail}
        if self.agent is not None:
            shaped["agent"] = self.agent
        return shaped

    def to_stream_json(self) -> StreamEvent:
        """The form the ``events`` and ``wait`` streams send: with the bot's id first."""
        shaped: StreamEvent = {"bot_id": self.bot_id, "state": self.state, "at": format_instant(self.at_us),
                               "detail": self.detail}
        if self.agent is not None:
            shaped["agent"] = self.agent
        return shaped


@dataclass(frozen=True)
class Due:
    """A bot the scheduler must act on now."""

    id: str
    state: str
    join_at_us: int
