"""``create``, ``show``, ``list``, ``reschedule``, ``cancel``, ``leave``, ``wait``,
``events``, ``logs``: ask the daemon, return or show the result.

Stdlib only at import: ``create``/``show``/``list`` with ``--json`` or ``-q`` run from
here without Typer (``botsched.cli.main``). Their options are declared once, in the
``Spec`` tables below, for that path and for Typer alike.
"""

from __future__ import annotations

import sys
import time

from botsched.cli.fast import FLAG, INT, MANY, Opt, Spec
from botsched.cli.output import (
    changed,
    emit,
    emit_json,
    json_text,
    note,
    print_errors,
    printable,
    say,
    user_zone,
    warn,
)
from botsched.core import states
from botsched.core.errors import BotschedError, ExitStatus, InvalidInput, WaitTimeout
from botsched.core.protocol import Op

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Iterator
    from typing import Any

    from botsched.client.connection import Connection

#: ``list`` shows this many bots unless told otherwise (0 = all).
LIST_LIMIT = 100
#: ``list`` asks for a stream above this many bots (or with --limit 0).
STREAM_OVER = 1000


def connect(autostart: bool = True) -> Connection:
    from botsched.client.connection import connect as client_connect

    return client_connect(autostart=autostart)


def call(op: Op, **args: Any) -> Any:
    """One request to the daemon (autostarting it); warnings go to stderr."""
    with connect() as conn:
        result, warnings = conn.call(op, **args)
    warn(warnings)
    return result


def resolve_join_at(text: str | None) -> str | None:
    """Relative and local times mean *this shell's* now and zone: resolve them here, and
    say what an `at`-style phrase resolved to (SPEC §5), on stderr."""
    if text is None:
        return None
    from botsched.core.timeparse import parse_join_at

    parsed = parse_join_at(text, time.time_ns() // 1000, user_zone)  # the zone is looked up only if needed
    warn(parsed.warnings)
    if parsed.note:
        note(parsed.note)
    return parsed.text


# -- the fast three -----------------------------------------------------------------------


def create(url_arg: str | None, meeting_url: str | None, bot_name: str | None, join_at: str | None,
           metadata: list[str], dedup_key: str | None, as_json: bool, quiet: bool) -> None:
    """``botsched create`` (one bot): validate what only the client can, ask, print."""
    from botsched.core.validation import parse_metadata_pairs

    if url_arg and meeting_url and url_arg != meeting_url:
        raise InvalidInput("give the meeting URL once: as the argument or as --meeting-url")
    url = meeting_url or url_arg
    if not url:
        raise InvalidInput("a meeting URL is required (positional or --meeting-url)")
    bot = call(Op.CREATE, meeting_url=url, bot_name=bot_name, join_at=resolve_join_at(join_at),
               metadata=parse_metadata_pairs(metadata), deduplication_key=dedup_key)
    changed(f"created {bot['id']}")
    if quiet and not as_json:
        sys.stdout.write(bot["id"] + "\n")
    else:
        emit(bot, as_json, _human("created"))


def show(bot_id: str, as_json: bool) -> None:
    emit(call(Op.SHOW, id=bot_id), as_json, _human("bot_card"))


def list_bots(states: list[str], limit: int, as_json: bool) -> None:
    if limit < 0:
        raise InvalidInput("--limit must be 0 (no limit) or more")
    if limit == 0 or limit > STREAM_OVER:
        _list_streamed(states, limit, as_json)
        return
    page = call(Op.LIST, states=states, limit=limit)
    if as_json:
        emit_json(page["bots"])
    else:
        from botsched.cli.render import bots as render

        render.bot_table(page["bots"], page["more"])


def _list_streamed(states: list[str], limit: int, as_json: bool) -> None:
    """A big list, page by page as the daemon sends it (issue 12): bounded memory here and
    there; the JSON is the same array, the table the same columns."""
    outcome = {"more": False}

    def pages_of(conn: Connection) -> Iterator[list[dict[str, Any]]]:
        for message in conn.stream(Op.LIST, states=states, limit=limit, stream=True):
            if "bots" in message:
                yield message["bots"]
            elif isinstance(message.get("result"), dict):
                outcome["more"] = bool(message["result"].get("more"))

    with connect() as conn:
        bot_pages = pages_of(conn)
        if as_json:
            first = True
            for page in bot_pages:
                for bot in page:
                    sys.stdout.write(("[\n  " if first else ",\n  ") + json_text(bot, 2).replace("\n", "\n  "))
                    first = False
            sys.stdout.write("[]\n" if first else "\n]\n")
        else:
            from botsched.cli.render import bots as render

            render.bot_table_pages(bot_pages, lambda: outcome["more"])


def _human(name: str) -> Any:
    """The renderer ``name`` of ``botsched.cli.render.bots``, imported only when called
    (rich is for people, never for ``--json``)."""

    def show(result: Any) -> None:
        from botsched.cli.render import bots as render

        getattr(render, name)(result)

    return show


_JSON = Opt("as_json", "--json", kind=FLAG, help="Machine-readable JSON on stdout.")
_URL_HELP = "The meeting to join."
CREATE = Spec(create, [Opt("url_arg", help=_URL_HELP, metavar="MEETING_URL")], [
    Opt("meeting_url", "--meeting-url", help=_URL_HELP),
    Opt("bot_name", "--bot-name", help="Name shown in the meeting."),
    Opt("join_at", "--join-at", metavar="TIME",
        help="When to join: 2026-12-01T15:00:00Z, local 2026-12-01T16:00, +10m, 15:00, 3pm, tomorrow 09:30, "
             "mon 10:00, noon."),
    Opt("metadata", "--metadata", kind=MANY, metavar="KEY=VALUE", help="KEY=VALUE, repeatable."),
    Opt("dedup_key", "--dedup-key", help="Refuse a second live bot with this key."),
    _JSON,
    Opt("quiet", "-q", "--quiet", kind=FLAG, help="Print only the id."),
])
SHOW = Spec(show, [Opt("bot_id", help="The bot.")], [_JSON], required=("bot_id",))
LIST = Spec(list_bots, [], [
    Opt("states", "--state", kind=MANY, metavar="STATE", help="Only bots in this state (repeatable)."),
    Opt("limit", "--limit", kind=INT, default=LIST_LIMIT, metavar="N", help="At most N bots (0 = all)."),
    _JSON,
])
#: What the fast path serves (with ``--json`` or ``-q``).
FAST: dict[str, Spec] = {"create": CREATE, "show": SHOW, "list": LIST}


# -- the others ---------------------------------------------------------------------------


def reschedule(bot_id: str, join_at: str, as_json: bool) -> None:
    bot = call(Op.RESCHEDULE, id=bot_id, join_at=resolve_join_at(join_at))
    changed(f"rescheduled {bot['id']} to {bot['join_at']}")
    emit(bot, as_json, _human("rescheduled"))


def cancel(bot_ids: list[str]) -> int:
    """Cancel each bot; the first refusal decides the exit code, the others still go."""
    failure: BotschedError | None = None
    lost: OSError | None = None  # stdout went away: still cancel the rest, report it after
    with connect() as conn:
        for bot_id in bot_ids:
            try:
                conn.call(Op.CANCEL, id=bot_id)
            except BotschedError as exc:
                if exc.exit_code in (ExitStatus.INTERNAL, ExitStatus.UNAVAILABLE):
                    raise
                print_errors(exc.message)
                failure = failure or exc
                continue
            changed(f"cancelled {bot_id}")
            if lost is None:
                try:
                    say(f"cancelled {bot_id}")
                    sys.stdout.flush()
                except OSError as exc:
                    lost = exc
    if lost is not None and failure is None:
        raise lost
    return failure.exit_code if failure is not None else ExitStatus.SUCCESS


def leave(bot_id: str) -> None:
    bot = call(Op.LEAVE, id=bot_id)
    changed(f"asked {bot['id']} to leave")
    say(f"asked {bot['id']} to leave")


def wait(bot_id: str, state: str | None, timeout: float | None, as_json: bool) -> None:
    if timeout is not None and not 0 <= timeout < 10**9:  # also refuses nan and inf
        raise InvalidInput("--timeout must be 0 or more seconds")
    final: dict[str, Any] | None = None
    with connect() as conn:
        for message in conn.stream(Op.WAIT, id=bot_id, state=state, timeout=timeout):
            final = message.get("result")
    if final is None:  # pragma: no cover - the daemon always answers a wait
        raise WaitTimeout("no answer")
    emit(final, as_json, lambda bot: say(f"{bot['id']} {bot['state']}"))


def events(bot_id: str | None, follow: bool, as_json: bool) -> None:
    if as_json:
        def printer(event: dict[str, Any]) -> None:
            emit_json(event, indent=None)
            sys.stdout.flush()
    else:
        from botsched.cli.render.bots import print_event as printer
    with connect() as conn:
        for event in conn.stream(Op.EVENTS, id=bot_id, follow=follow):
            if "result" not in event:
                printer(event)


def logs(bot_id: str) -> None:
    """The runner's output: raw bytes into a pipe, escaped text on a terminal. One machine:
    the local runner log files; cluster mode: the daemon streams what the store keeps (any
    agent's bots), as base64 chunks."""
    import base64
    import codecs

    from botsched.core.paths import resolve_paths

    terminal = sys.stdout.isatty()  # a person reads it: escape what the terminal would obey
    decoder = codecs.getincrementaldecoder("utf-8")("replace")

    def out(chunk: bytes) -> None:
        if terminal:
            sys.stdout.write(printable(decoder.decode(chunk), keep="\n\t"))
        else:
            sys.stdout.buffer.write(chunk)  # into a pipe or file: the bytes as they are

    def end() -> None:
        if terminal:
            sys.stdout.write(printable(decoder.decode(b"", final=True), keep="\n\t"))

    answer: dict[str, Any] = {}
    wrote = False
    with connect() as conn:
        for message in conn.stream(Op.LOGS, id=bot_id):
            if "result" in message:
                answer = message["result"]
            else:
                out(base64.b64decode(message["data"]))
                wrote = True
    shown = answer.get("id", bot_id)
    if answer.get("stored"):
        end()
        if not wrote:
            sys.stderr.write(f"no runner output for {shown} (simulated runs and bots not yet staged have none)\n")
        return
    path = resolve_paths().runner_logs / f"{shown}.log"
    rotated = path.with_name(path.name + ".1")  # the daemon rotates a big log (issue 12): older part first
    try:
        for part in ([rotated] if rotated.exists() else []) + [path]:
            with open(part, "rb") as handle:
                while chunk := handle.read(65536):
                    out(chunk)
            end()
    except FileNotFoundError:
        sys.stderr.write(f"no runner output for {shown} (simulated runs and bots not yet staged have none)\n")


def complete_ids(*wanted: str) -> Any:
    """Shell completion of bot ids from a running daemon (never starts one, never fails)."""

    def complete(incomplete: str) -> list[str]:
        try:
            with connect(autostart=False) as conn:
                ids, _ = conn.call(Op.IDS, states=list(wanted), prefix=incomplete)
        except Exception:  # noqa: BLE001 - completion must stay quiet whatever happens
            return []
        return list(ids)

    return complete


#: Completion of the bots each command can act on.
IN_MEETING = tuple(state for state in states.ALL_STATES if state in states.IN_MEETING)
