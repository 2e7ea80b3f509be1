"""Errors that carry their exit code, so every layer can raise and the CLI maps them once.

The ``code`` travels over the socket; the client turns it back into the same class.
"""

from __future__ import annotations


class BotschedError(Exception):
    """Base class: an error the user should see as one ``error:`` line."""

    exit_code = 1
    code = "internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(BotschedError):
    """Bad time, time in the past, bad URL, bad option (exit 2)."""

    exit_code = 2
    code = "invalid"


class NotFound(BotschedError):
    """No such bot (exit 3)."""

    exit_code = 3
    code = "not_found"


class Conflict(BotschedError):
    """The bot's state does not allow this, or a duplicate dedup key (exit 4)."""

    exit_code = 4
    code = "conflict"


class DaemonUnavailable(BotschedError):
    """The daemon is not running and could not be started, or did not answer (exit 5)."""

    exit_code = 5
    code = "unavailable"


class WaitTimeout(BotschedError):
    """``wait`` gave up (exit 124, like ``timeout(1)``)."""

    exit_code = 124
    code = "timeout"


_BY_CODE = {cls.code: cls for cls in (BotschedError, InvalidInput, NotFound, Conflict, DaemonUnavailable, WaitTimeout)}


def from_code(code: str, message: str) -> BotschedError:
    """Rebuild the error a daemon answered with (unknown codes become internal errors)."""
    return _BY_CODE.get(code, BotschedError)(message)
