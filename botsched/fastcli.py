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


_VALUE_OPTIONS = {"--meeting-url": "meeting_url", "--bot-name": "bot_name", "--join-at": "join_at",
                  "--dedup-key": "dedup_key", "--metadata": "metadata"}
_FLAGS = {"--json": "as_json", "-q": "quiet", "--quiet": "quiet"}


def parse_fast_create(args: list[str]) -> dict[str, Any] | None:
    """Arguments of ``create`` for the fast path, or ``None`` to let Typer handle them."""
    parsed: dict[str, Any] = {"url_arg": None, "meeting_url": None, "bot_name": None, "join_at": None,
                              "metadata": [], "dedup_key": None, "as_json": False, "quiet": False}
    position = 0
    while position < len(args):
        arg = args[position]
        name, eq, inline = arg.partition("=") if arg.startswith("--") else (arg, "", "")
        if name in _FLAGS and not eq:
            parsed[_FLAGS[name]] = True
        elif name in _VALUE_OPTIONS:
            if not eq:
                position += 1
                if position >= len(args):
                    return None
                inline = args[position]
            key = _VALUE_OPTIONS[name]
            if key == "metadata":
                parsed[key].append(inline)
            elif parsed[key] is not None:
                return None
            else:
                parsed[key] = inline
        elif not arg.startswith("-") and parsed["url_arg"] is None:
            parsed["url_arg"] = arg
        else:
            return None  # --help, --from, unknown options, a second positional: Typer's job
        position += 1
    return parsed if parsed["as_json"] or parsed["quiet"] else None


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        args = ["--help"]  # like git and docker: bare `botsched` is help, exit 0
    if args[:1] == ["create"]:
        fast = parse_fast_create(args[1:])
        if fast is not None:
            try:
                create_bot(**fast)
            except BotschedError as exc:
                fail(exc.exit_code, exc.message)
            except BrokenPipeError:
                sys.exit(141)
            except KeyboardInterrupt:
                sys.exit(130)
            sys.exit(0)
    from botsched.cli import main as typer_main

    typer_main(args)
