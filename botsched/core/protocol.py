"""The socket protocol: newline-delimited JSON, one object per line, versioned.

Request   ``{"v": 1, "op": "show", "args": {"id": "bot_..."}}``
Reply     ``{"v": 1, "ok": true, "result": ..., "warnings": [...]}``
Error     ``{"v": 1, "ok": false, "error": {"code": "not_found", "message": "..."}}``
Stream    ops ``events`` (with ``follow``) and ``wait`` send ``{"v": 1, "event": {...}}``
          lines before their final reply.
Bulk      ``create_many`` with ``args.chunks = K`` is followed by K lines
          ``{"items": [{"line": N, ...bot fields...}, ...]}``.

A connection is refused (``{"ok": false, "error": {"code": "refused", ...}}``, then the
daemon half-closes and reads what the client sent before closing) when it comes from
another uid or when the daemon has too many connections.

While a ``wait`` or a followed ``events`` stream is open, the connection carries nothing
else: the daemon watches it only for the client's end (EOF), so a departed client is
released at once, and bytes sent meanwhile are discarded.

Each line is at most ``MAX_LINE`` bytes; a longer one gets an error and the connection
is closed (there is no way to resynchronise inside an oversized line). Stdlib only: the
CLI's fast path imports this.
"""

from __future__ import annotations

import json
import re
from enum import StrEnum  # ``re`` imports ``enum`` already: no start-up cost

from botsched.core.errors import BotschedError, ExitStatus, InvalidInput

#: ``typing`` costs ~5 ms of start-up; type checkers read these imports, Python skips them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

VERSION = 1
#: A JSON escape of a UTF-16 surrogate; only lines with one need the full check.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
MAX_LINE = 1 << 20  # 1 MiB


class Op(StrEnum):
    """Every request the daemon serves; the value is what travels in ``"op"``."""

    CREATE = "create"
    CREATE_MANY = "create_many"
    RESCHEDULE = "reschedule"
    CANCEL = "cancel"
    LEAVE = "leave"
    SHOW = "show"
    LIST = "list"
    IDS = "ids"
    STATUS = "status"
    EVENTS = "events"
    WAIT = "wait"
    LOGS = "logs"
    PING = "ping"
    STOP = "stop"
    RELOAD = "reload"
    AGENTS = "agents"  # SPEC section 10: ``botsched agents``
    # SPEC section 8: ``botsched webhook ...``
    WEBHOOK_ADD = "webhook_add"
    WEBHOOK_LIST = "webhook_list"
    WEBHOOK_REMOVE = "webhook_remove"
    WEBHOOK_TEST = "webhook_test"
    WEBHOOK_DELIVERIES = "webhook_deliveries"
    WEBHOOK_REPLAY = "webhook_replay"
    CALENDAR_ADD = "calendar_add"
    CALENDAR_LIST = "calendar_list"
    CALENDAR_REMOVE = "calendar_remove"
    CALENDAR_SYNC = "calendar_sync"


class ProtocolError(InvalidInput):
    """A line that is not a well-formed request."""


class Refused(BotschedError):
    """The daemon is running but will not serve this client: it belongs to another user, or
    it has too many connections. Exit 5 like an unreachable daemon, but *not* a
    ``DaemonUnavailable``: ``daemon status`` must not call a running daemon "not running",
    and nothing should try to start a second one."""

    exit_code = ExitStatus.UNAVAILABLE
    code = "refused"


def encode(message: dict[str, Any]) -> bytes:
    try:
        return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"
    except UnicodeEncodeError:  # e.g. an argument with bytes that are not UTF-8
        raise InvalidInput("input is not valid UTF-8 text") from None


def has_surrogate_escape(raw: bytes) -> bool:
    """Whether a JSON text may decode to a lone surrogate (only then is a full check needed)."""
    return _SURROGATE_ESCAPE.search(raw) is not None


def decode(line: bytes) -> dict[str, Any]:
    """Parse one line into an object; any malformed input is a ``ProtocolError``."""
    try:
        message = json.loads(line.decode("utf-8"))
        if has_surrogate_escape(line):  # lone surrogates ("\ud800") cannot be stored or sent back
            json.dumps(message, ensure_ascii=False).encode("utf-8")
    except (ValueError, RecursionError) as exc:  # Unicode errors are ValueErrors
        raise ProtocolError(f"malformed request: {str(exc)[:200]}") from None
    if not isinstance(message, dict):
        raise ProtocolError("malformed request: expected a JSON object")
    return message


def request(op: str, **args: Any) -> bytes:
    return encode({"v": VERSION, "op": op, "args": args})


def parse_request(message: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    if message.get("v") != VERSION:
        raise ProtocolError(f"unsupported protocol version {message.get('v')!r} (this daemon speaks {VERSION})")
    op, args = message.get("op"), message.get("args", {})
    if not isinstance(op, str) or not isinstance(args, dict):
        raise ProtocolError("malformed request: needs a string 'op' and an object 'args'")
    return op, args


def reply(result: Any, warnings: list[str] | None = None) -> bytes:
    return encode({"v": VERSION, "ok": True, "result": result, "warnings": warnings or []})


def error_reply(exc: BotschedError) -> bytes:
    return encode({"v": VERSION, "ok": False, "error": {"code": exc.code, "message": exc.message}})


def event_line(event: dict[str, Any]) -> bytes:
    return encode({"v": VERSION, "event": event})
