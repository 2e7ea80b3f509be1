"""Everything the CLI writes: results as human text or JSON, ``warning:`` and ``error:``
lines, the record of changes made, the one reader of "a file or ``-``" and the one zone
times are read and shown in.

Stdlib only and imported by every command (the fast path included): rich and pendulum
live in ``botsched.cli.render``, which the human renderers import when a person reads.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC

from botsched.core.errors import BotschedError, InvalidInput

#: ``typing`` costs ~5 ms of start-up; type checkers read these imports, Python skips them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from datetime import tzinfo
    from re import Match, Pattern
    from typing import Any, NoReturn, TypeVar

    T = TypeVar("T")

# -- text that reaches a terminal -------------------------------------------------------

#: What a terminal would obey instead of print: C0 controls (ESC, BEL, CR, BS...), DEL,
#: C1 controls (8-bit CSI and OSC), bidirectional overrides, and lone surrogates (which
#: cannot even be encoded).
_UNSAFE = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_unsafe_patterns: dict[str, Pattern[str]] = {}
_SHORT_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_char(match: Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _SHORT_ESCAPES.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def printable(value: Any, keep: str = "") -> Any:
    """``value`` safe to show a person: every control character becomes an escape such as
    ``\\x1b`` (an invite titled ``ESC]0;pwned BEL`` prints as text, not as a new window
    title). Dicts and lists are cleaned all through; other values are returned as they are.
    ``keep`` lists characters to leave alone (``"\\n\\t"`` for log lines). Every human
    renderer goes through this; JSON output does not (it stays exact JSON)."""
    if isinstance(value, str):
        pattern = _unsafe_patterns.get(keep)
        if pattern is None:
            import re

            kept = f"(?![{re.escape(keep)}])" if keep else ""
            pattern = _unsafe_patterns[keep] = re.compile(f"{kept}[{_UNSAFE}]")
        return pattern.sub(_escape_char, value)
    if isinstance(value, dict):
        return {printable(key, keep): printable(item, keep) for key, item in value.items()}
    if isinstance(value, list):
        return [printable(item, keep) for item in value]
    return value


# -- stdout -------------------------------------------------------------------------------


def json_text(value: Any, indent: int | None = 2) -> str:
    """Exact JSON, with C1 control characters written as ``\\u0080``-style escapes (the same
    JSON value; an 8-bit CSI in a meeting title cannot reach the terminal through it)."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    if not text.isascii():
        import re

        text = re.sub("[\x80-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def emit_json(value: Any, indent: int | None = 2) -> None:
    """The one JSON writer: pretty for a result, one line (``indent=None``) per streamed event."""
    sys.stdout.write(json_text(value, indent) + "\n")


def emit(result: T, as_json: bool, human: Callable[[T], None]) -> None:
    """A command's result, as JSON or as ``human`` renders it (pipx's model: commands
    return data, this decides how it is shown)."""
    if as_json:
        emit_json(result)
    else:
        human(result)


def say(line: str) -> None:
    """One line of human output on stdout, control characters escaped."""
    sys.stdout.write(printable(line) + "\n")


# -- stderr -------------------------------------------------------------------------------


def _stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr gone too (``2>&1 | head``): nobody to tell
        pass


def warn(warnings: list[str]) -> None:
    """The one ``warning:`` writer."""
    for warning in warnings:
        _stderr(f"warning: {printable(warning)}\n")


def note(line: str) -> None:
    """What the command understood, on stderr (stdout stays the result): ``note: ...``."""
    _stderr(f"note: {printable(line)}\n")


def print_errors(message: str) -> None:
    """One ``error:`` line per line of ``message``, without exiting."""
    for line in message.splitlines() or ["failed"]:
        _stderr(f"error: {printable(line)}\n")


def fail(code: int, message: str) -> NoReturn:
    """Exit with SPEC §5's code after one ``error:`` line per message line."""
    print_errors(message)
    sys.exit(code)


# -- changes made -----------------------------------------------------------------------

#: What this command has changed that stays changed ("created bot_..."): once something
#: is here, failing to print the answer must not exit non-zero (a script that retries
#: would create a second bot). ``botsched.cli.main.run`` reads it.
_changes: list[str] = []


def changed(what: str) -> None:
    _changes.append(what)


def changes_text() -> str:
    """What was changed, in a few words ("" when nothing was)."""
    if len(_changes) <= 3:
        return "; ".join(_changes)
    return f"{'; '.join(_changes[:2])} and {len(_changes) - 2} more changes"


# -- input ------------------------------------------------------------------------------


def read_source(source: str) -> bytes:
    """The bytes of a file, or of stdin for ``-`` (``create --from``, ``calendar sync``)."""
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        with open(source, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise InvalidInput(f"cannot read {source}: {exc.strerror or exc}") from None


# -- the user's zone ----------------------------------------------------------------------


def user_zone() -> tzinfo:
    """The zone the user thinks in, for reading times and showing them: config
    ``defaults.timezone``, else the system's (``TZ``, POSIX rules included). Raises
    ``InvalidInput`` when neither names a zone."""
    from botsched.core import config
    from botsched.core.paths import resolve_paths
    from botsched.core.timeparse import resolve_zone

    return resolve_zone(config.load(resolve_paths().config)["defaults.timezone"])


_zone_warned: list[bool] = []


def display_zone() -> tzinfo:
    """``user_zone`` for output: a broken zone setting must not break a listing, so it
    warns once and shows UTC (every time printed says so with its %Z)."""

    try:
        return user_zone()
    except Exception as exc:  # noqa: BLE001 - an unreadable config must not break output either
        if isinstance(exc, BotschedError) and not _zone_warned:
            _zone_warned.append(True)
            warn([f"{exc.message}; times are shown in UTC"])
        return UTC
