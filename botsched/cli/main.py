"""The ``botsched`` entry point, and the fast path that scripts hit most.

``botsched create -q`` / ``--json`` is what cron jobs and calendar syncs run in loops, so
it must start fast: this module handles that path with stdlib imports only (no Typer,
rich, pendulum or daemon code). Anything it does not recognise exactly — other commands,
``--help``, human output, a malformed option — falls through to the full Typer CLI,
which owns every error message. The command's behaviour lives here once
(``create_bot``) and the Typer command calls it too.
"""

from __future__ import annotations

import json
import os
import sys
import time

#: ``typing`` costs ~5 ms of start-up; type checkers read these imports, Python skips them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

from botsched.core.errors import BotschedError, InvalidInput

# -- text that reaches a terminal -------------------------------------------------------

#: What a terminal would obey instead of print: C0 controls (ESC, BEL, CR, BS...), DEL,
#: C1 controls (8-bit CSI and OSC), bidirectional overrides, and lone surrogates (which
#: cannot even be encoded).
_UNSAFE = "\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_unsafe_patterns: dict[str, Any] = {}


_SHORT_ESCAPES = {"\n": "\\n", "\t": "\\t", "\r": "\\r"}


def _escape_char(match: Any) -> str:
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


def json_text(value: Any, indent: int | None = 2) -> str:
    """Exact JSON, with C1 control characters written as ``\\u0080``-style escapes (the same
    JSON value; an 8-bit CSI in a meeting title cannot reach the terminal through it)."""
    text = json.dumps(value, ensure_ascii=False, indent=indent)
    if not text.isascii():
        import re

        text = re.sub("[\x80-\x9f]", lambda m: f"\\u{ord(m.group()):04x}", text)
    return text


def emit_json(value: Any) -> None:
    sys.stdout.write(json_text(value) + "\n")


def say(line: str) -> None:
    """One line of human output on stdout, control characters escaped."""
    sys.stdout.write(printable(line) + "\n")


def _stderr(text: str) -> None:
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except (OSError, ValueError):  # stderr gone too (``2>&1 | head``): nobody to tell
        pass


def warn(warnings: list[str]) -> None:
    for warning in warnings:
        _stderr(f"warning: {printable(warning)}\n")


def print_errors(message: str) -> None:
    """One ``error:`` line per line of ``message``, without exiting."""
    for line in message.splitlines() or ["failed"]:
        _stderr(f"error: {printable(line)}\n")


# -- changes made, and output that could not be written ---------------------------------

#: What this command has changed that stays changed ("created bot_..."): once something
#: is here, failing to print the answer must not exit non-zero (a script that retries
#: would create a second bot).
_changes: list[str] = []


def changed(what: str) -> None:
    _changes.append(what)


def _changes_text() -> str:
    if len(_changes) <= 3:
        return "; ".join(_changes)
    return f"{'; '.join(_changes[:2])} and {len(_changes) - 2} more changes"


class _ClosedStdout:
    """``sys.stdout`` when fd 1 was closed at start (``>&-``): every write fails as
    write(2) would, with EBADF, and the one place that handles output errors decides."""

    encoding = "utf-8"
    errors = "strict"

    def write(self, data: Any) -> int:
        import errno

        raise OSError(errno.EBADF, "Bad file descriptor (stdout is closed)")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        import errno

        raise OSError(errno.EBADF, "Bad file descriptor (stdout is closed)")

    @property
    def buffer(self) -> _ClosedStdout:
        return self


def guard_std_fds() -> None:
    """A closed stdin, stdout or stderr becomes /dev/null for the process, so that no
    socket or database opened later gets fd 0-2 (our output must never go into the
    daemon's socket); a closed stdout also makes every write fail with EBADF."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if fd == 0:
            sys.stdin = open(fd, closefd=False)  # reads as empty
        elif fd == 1:
            sys.stdout = _ClosedStdout()  # type: ignore[assignment]
        else:
            sys.stderr = open(fd, "w", closefd=False)  # warnings vanish


def _is_output_error(exc: BaseException | None) -> bool:
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.EBADF)


def _output_lost(exc: OSError) -> NoReturn:
    """stdout went away: a broken pipe exits 141 (as if killed by SIGPIPE, like other
    tools), a closed stdout exits 1 -- unless this command already changed something:
    then it says so on stderr and exits 0 for a closed stdout (the change was made; a
    retry would make it twice)."""
    import errno

    try:  # the interpreter's last flush must not fail again
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass
    done = _changes_text()
    if exc.errno == errno.EPIPE:
        if done:
            warn([f"{done}, but the rest of the output went to a closed pipe"])
        sys.exit(141)
    if done:
        warn([f"{done}, but stdout is closed: the output was not written"])
        sys.exit(0)
    fail(1, "cannot write the output: stdout is closed (Bad file descriptor)")


def run(body: Callable[[], Any]) -> NoReturn:
    """Run a command and exit with SPEC §5's code: the one place where errors, output
    failures (closed stdout, broken pipe) and bugs become exit codes and ``error:`` lines,
    for the fast path and the Typer CLI alike."""
    try:
        code = body()
        sys.stdout.flush()  # buffered output fails here, where it is handled, not at exit
    except BotschedError as exc:
        fail(exc.exit_code, exc.message)
    except KeyboardInterrupt:
        sys.exit(130)
    except SystemExit as exc:  # click turns EPIPE into exit(1): undo that
        if _is_output_error(exc.__context__):
            _output_lost(exc.__context__)  # type: ignore[arg-type]
        raise
    except Exception as exc:
        if _is_output_error(exc):
            _output_lost(exc)  # type: ignore[arg-type]
        if _changes:  # the change was made: showing it failed, that is all
            warn([f"{_changes_text()}, but showing the result failed: {type(exc).__name__}: {exc}"])
            sys.exit(0)
        fail(1, f"internal error: {type(exc).__name__}: {exc} (please report this)")
    sys.exit(code if isinstance(code, int) else 0)


def call(op: str, **args: Any) -> Any:
    """One request to the daemon (autostarting it); warnings go to stderr."""
    from botsched.client.connection import connect

    with connect() as conn:
        result, warnings = conn.call(op, **args)
    warn(warnings)
    return result


def local_zone() -> Any:
    from botsched.core import config
    from botsched.core.paths import resolve_paths
    from botsched.core.timeparse import resolve_zone

    return resolve_zone(config.load(resolve_paths().config)["defaults.timezone"])


def resolve_join_at(text: str | None) -> str | None:
    """Relative and local times mean *this shell's* now and zone: resolve them here."""
    if text is None:
        return None
    from botsched.core.timeparse import parse_join_at

    parsed = parse_join_at(text, time.time_ns() // 1000, local_zone)  # looked up only if needed
    warn(parsed.warnings)
    return parsed.text


def create_bot(
    url_arg: str | None,
    meeting_url: str | None,
    bot_name: str | None,
    join_at: str | None,
    metadata: list[str],
    dedup_key: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """``botsched create`` (one bot): validate what only the client can, ask, print."""
    from botsched.core.validation import parse_metadata_pairs

    if url_arg and meeting_url and url_arg != meeting_url:
        raise InvalidInput("give the meeting URL once: as the argument or as --meeting-url")
    url = meeting_url or url_arg
    if not url:
        raise InvalidInput("a meeting URL is required (positional or --meeting-url)")
    bot = call(
        "create",
        meeting_url=url,
        bot_name=bot_name,
        join_at=resolve_join_at(join_at),
        metadata=parse_metadata_pairs(metadata),
        deduplication_key=dedup_key,
    )
    changed(f"created {bot['id']}")
    if as_json:
        emit_json(bot)
    elif quiet:
        sys.stdout.write(bot["id"] + "\n")
    else:
        from botsched.cli import render

        render.created(bot)


def fail(code: int, message: str) -> NoReturn:
    """Exit with SPEC §5's code after one ``error:`` line per message line."""
    print_errors(message)
    sys.exit(code)


def show_bot(bot_id: str, as_json: bool) -> None:
    bot = call("show", id=bot_id)
    if as_json:
        emit_json(bot)
    else:
        from botsched.cli import render

        render.bot_card(bot)


def list_bots(states: list[str], limit: int, as_json: bool) -> None:
    if limit < 0:
        raise InvalidInput("--limit must be 0 (no limit) or more")
    page = call("list", states=states, limit=limit)
    if as_json:
        emit_json(page["bots"])
    else:
        from botsched.cli import render

        render.bot_table(page["bots"], page["more"])


class FastCommand:
    """How to read one command's arguments on the fast path (a strict subset of what the
    Typer command accepts: anything else returns ``None`` and Typer takes over)."""

    def __init__(self, run: Callable[..., None], positional: list[str], values: dict[str, str],
                 repeated: dict[str, str], flags: dict[str, str], ints: tuple[str, ...] = ()) -> None:
        self.run, self.positional, self.values, self.repeated, self.flags, self.ints = (
            run, positional, values, repeated, flags, ints)

    def parse(self, args: list[str]) -> dict[str, Any] | None:
        parsed: dict[str, Any] = {name: None for name in [*self.positional, *self.values.values()]}
        parsed.update({key: [] for key in self.repeated.values()})
        parsed.update({key: False for key in self.flags.values()})
        free = list(self.positional)
        position = 0
        while position < len(args):
            arg = args[position]
            name, eq, value = arg.partition("=") if arg.startswith("--") else (arg, "", "")
            if name in self.flags and not eq:
                parsed[self.flags[name]] = True
            elif name in self.values or name in self.repeated:
                if not eq:
                    position += 1
                    if position >= len(args):
                        return None
                    value = args[position]
                if name in self.repeated:
                    parsed[self.repeated[name]].append(value)
                elif parsed[self.values[name]] is not None:
                    return None
                else:
                    parsed[self.values[name]] = value
            elif not arg.startswith("-") and free:
                parsed[free.pop(0)] = arg
            else:
                return None  # --help, --from, unknown options, extra arguments: Typer's job
            position += 1
        for key in self.ints:
            if parsed[key] is not None:
                if not parsed[key].isdigit():
                    return None
                parsed[key] = int(parsed[key])
        return parsed


_JSON = {"--json": "as_json"}
FAST: dict[str, FastCommand] = {
    "create": FastCommand(
        create_bot, ["url_arg"],
        {"--meeting-url": "meeting_url", "--bot-name": "bot_name", "--join-at": "join_at", "--dedup-key": "dedup_key"},
        {"--metadata": "metadata"}, {**_JSON, "-q": "quiet", "--quiet": "quiet"},
    ),
    "show": FastCommand(show_bot, ["bot_id"], {}, {}, _JSON),
    "list": FastCommand(list_bots, [], {"--limit": "limit"}, {"--state": "states"}, _JSON, ints=("limit",)),
}


def parse_fast(args: list[str]) -> tuple[FastCommand, dict[str, Any]] | None:
    """The command and its arguments when the fast path can serve them: machine output
    (``--json`` or ``-q``) and nothing unusual; else ``None``."""
    command = FAST.get(args[0]) if args else None
    parsed = command.parse(args[1:]) if command else None
    if command is None or parsed is None or not (parsed.get("as_json") or parsed.get("quiet")):
        return None
    if any(parsed.get(name) is None for name in command.positional if name != "url_arg"):
        return None  # a missing argument: Typer says so
    if "limit" in parsed and parsed["limit"] is None:
        parsed["limit"] = 100
    return command, parsed


def main(argv: list[str] | None = None) -> None:
    guard_std_fds()
    args = sys.argv[1:] if argv is None else argv
    if not args:
        args = ["--help"]  # like git and docker: bare `botsched` is help, exit 0
    fast = parse_fast(args)
    if fast is not None:
        command, parsed = fast
        run(lambda: command.run(**parsed))
    from botsched.cli.app import main as typer_main

    typer_main(args)
