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
import sys
import time

#: ``typing`` costs ~5 ms of start-up; type checkers read these imports, Python skips them.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn

from botsched.errors import BotschedError, InvalidInput


def emit_json(value: Any) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def warn(warnings: list[str]) -> None:
    for warning in warnings:
        sys.stderr.write(f"warning: {warning}\n")


def call(op: str, **args: Any) -> Any:
    """One request to the daemon (autostarting it); warnings go to stderr."""
    from botsched.client import connect

    with connect() as conn:
        result, warnings = conn.call(op, **args)
    warn(warnings)
    return result


def local_zone() -> Any:
    from botsched import config
    from botsched.paths import resolve_paths
    from botsched.timeparse import resolve_zone

    return resolve_zone(config.load(resolve_paths().config)["defaults.timezone"])


def resolve_join_at(text: str | None) -> str | None:
    """Relative and local times mean *this shell's* now and zone: resolve them here."""
    if text is None:
        return None
    from botsched.timeparse import parse_join_at

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
    from botsched.validation import parse_metadata_pairs

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
    if as_json:
        emit_json(bot)
    elif quiet:
        sys.stdout.write(bot["id"] + "\n")
    else:
        from botsched import render

        render.created(bot)


def fail(code: int, message: str) -> NoReturn:
    """Exit with SPEC §5's code after one ``error:`` line per message line."""
    for line in message.splitlines() or ["failed"]:
        sys.stderr.write(f"error: {line}\n")
    sys.exit(code)


def show_bot(bot_id: str, as_json: bool) -> None:
    bot = call("show", id=bot_id)
    if as_json:
        emit_json(bot)
    else:
        from botsched import render

        render.bot_card(bot)


def list_bots(states: list[str], limit: int, as_json: bool) -> None:
    if limit < 0:
        raise InvalidInput("--limit must be 0 (no limit) or more")
    page = call("list", states=states, limit=limit)
    if as_json:
        emit_json(page["bots"])
    else:
        from botsched import render

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
    args = sys.argv[1:] if argv is None else argv
    if not args:
        args = ["--help"]  # like git and docker: bare `botsched` is help, exit 0
    fast = parse_fast(args)
    if fast is not None:
        command, parsed = fast
        try:
            command.run(**parsed)
        except BotschedError as exc:
            fail(exc.exit_code, exc.message)
        except BrokenPipeError:
            sys.exit(141)
        except KeyboardInterrupt:
            sys.exit(130)
        sys.exit(0)
    from botsched.cli import main as typer_main

    typer_main(args)
