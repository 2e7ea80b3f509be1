"""Errors that carry their exit code, so every layer can raise and the CLI maps them once.

The ``code`` travels over the socket; the client turns it back into the same class.
"""

from __future__ import annotations

from enum import IntEnum  # ``re`` (imported by every CLI path) loads ``enum``: no start-up cost


class ExitStatus(IntEnum):
    """Every exit status botsched uses (SPEC §5), in one place, like httpie's."""

    SUCCESS = 0
    INTERNAL = 1  # a bug
    INVALID = 2
    NOT_FOUND = 3
    CONFLICT = 4
    UNAVAILABLE = 5
    TIMEOUT = 124  # like timeout(1)
    INTERRUPTED = 130  # Ctrl-C: 128 + SIGINT, as shells report it
    BROKEN_PIPE = 141  # 128 + SIGPIPE, as if killed by it



class BotschedError(Exception):
    """Base class: an error the user should see as one ``error:`` line."""

    exit_code: int = ExitStatus.INTERNAL
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(BotschedError):
    """Bad time, time in the past, bad URL, bad option (exit 2)."""

    exit_code: int = ExitStatus.INVALID
    code = "invalid"


class NotFound(BotschedError):
    """No such bot (exit 3)."""

    exit_code: int = ExitStatus.NOT_FOUND
    code = "not_found"


class Conflict(BotschedError):
    """The bot's state does not allow this, or a duplicate dedup key (exit 4)."""

    exit_code: int = ExitStatus.CONFLICT
    code = "conflict"


class DaemonUnavailable(BotschedError):
    """The daemon is not running and could not be started, or did not answer (exit 5)."""

    exit_code: int = ExitStatus.UNAVAILABLE
    code = "unavailable"


class WaitTimeout(BotschedError):
    """``wait`` gave up (exit 124, like ``timeout(1)``)."""

    exit_code: int = ExitStatus.TIMEOUT
    code = "timeout"


_BY_CODE = {cls.code: cls for cls in (BotschedError, InvalidInput, NotFound, Conflict, DaemonUnavailable, WaitTimeout)}


def from_code(code: str, message: str) -> BotschedError:
    """Rebuild the error a daemon answered with (unknown codes become internal errors)."""
    return _BY_CODE.get(code, BotschedError)(message)
