"""The bot state machine (SPEC §4): which states exist and which changes are legal."""

from __future__ import annotations

SCHEDULED = "scheduled"
READY = "ready"
STAGED = "staged"
JOINING = "joining"
WAITING_ROOM = "waiting_room"
JOINED_NOT_RECORDING = "joined_not_recording"
JOINED_RECORDING = "joined_recording"
LEAVING = "leaving"
POST_PROCESSING = "post_processing"
ENDED = "ended"
FATAL_ERROR = "fatal_error"

ALL_STATES: tuple[str, ...] = (
    SCHEDULED,
    READY,
    STAGED,
    JOINING,
    WAITING_ROOM,
    JOINED_NOT_RECORDING,
    JOINED_RECORDING,
    LEAVING,
    POST_PROCESSING,
    ENDED,
    FATAL_ERROR,
)

TERMINAL: frozenset[str] = frozenset({ENDED, FATAL_ERROR})

#: States in which the bot is in (or entering) the meeting, so ``leave`` makes sense.
IN_MEETING: frozenset[str] = frozenset({JOINING, WAITING_ROOM, JOINED_NOT_RECORDING, JOINED_RECORDING})

#: States a runner may report once the join was signalled.
RUNNER_REPORTABLE: frozenset[str] = frozenset(
    {WAITING_ROOM, JOINED_NOT_RECORDING, JOINED_RECORDING, LEAVING, POST_PROCESSING, ENDED, FATAL_ERROR}
)

_IN_CALL = {WAITING_ROOM, JOINED_NOT_RECORDING, JOINED_RECORDING}

TRANSITIONS: dict[str, frozenset[str]] = {
    SCHEDULED: frozenset({STAGED, FATAL_ERROR}),
    READY: frozenset({JOINING, FATAL_ERROR}),
    STAGED: frozenset({JOINING, FATAL_ERROR}),
    JOINING: frozenset(_IN_CALL | {LEAVING, POST_PROCESSING, ENDED, FATAL_ERROR}),
    WAITING_ROOM: frozenset({JOINED_NOT_RECORDING, JOINED_RECORDING, LEAVING, POST_PROCESSING, ENDED, FATAL_ERROR}),
    JOINED_NOT_RECORDING: frozenset({JOINED_RECORDING, LEAVING, POST_PROCESSING, ENDED, FATAL_ERROR}),
    JOINED_RECORDING: frozenset({JOINED_NOT_RECORDING, LEAVING, POST_PROCESSING, ENDED, FATAL_ERROR}),
    LEAVING: frozenset({POST_PROCESSING, ENDED, FATAL_ERROR}),
    POST_PROCESSING: frozenset({ENDED, FATAL_ERROR}),
    ENDED: frozenset(),
    FATAL_ERROR: frozenset(),
}


def is_legal(current: str, new: str) -> bool:
    """True when a bot in ``current`` may move to ``new``."""
    return new in TRANSITIONS.get(current, frozenset())


def is_terminal(state: str) -> bool:
    return state in TERMINAL
