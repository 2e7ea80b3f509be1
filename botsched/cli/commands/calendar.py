"""``botsched calendar sync``: keep one bot per meeting of an iCalendar file.

Thin like the rest of the CLI: the rules live in ``botsched.calsync`` (pure), which is
imported only when the command runs, so ``icalendar`` costs nothing to other commands.
"""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from botsched.core.errors import BotschedError, InvalidInput
from botsched.cli.main import changed, json_text, print_errors, printable, warn

if TYPE_CHECKING:  # pragma: no cover
    from botsched.calsync import Action

calendar_app = typer.Typer(
    help="Bots for the meetings in a calendar.\n\nExample: botsched calendar sync work.ics --dry-run",
    no_args_is_help=True,
)

#: ``--days`` at most a year: a sync looks ahead, it does not plan a decade.
MAX_DAYS = 366


def _read_source(source: str) -> bytes:
    if source == "-":
        return sys.stdin.buffer.read()
    try:
        with open(source, "rb") as handle:
            return handle.read()
    except OSError as exc:
        raise InvalidInput(f"cannot read {source}: {exc.strerror or exc}") from None


@calendar_app.command("sync")
def sync(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="An iCalendar (.ics) file, or '-' for stdin.")],
    days: Annotated[int, typer.Option("--days", help="Look this many days ahead from now.")] = 14,
    join_offset: Annotated[
        Optional[str],
        typer.Option("--join-offset", metavar="DURATION", help="Join relative to the start: -1m is a minute early."),
    ] = None,
    bot_name: Annotated[Optional[str], typer.Option("--bot-name", help="Name of the bots (default: config).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")] = False,
) -> None:
    """Create, reschedule and cancel bots so every meeting in the calendar has one.

    One bot per occurrence with a Zoom, Meet, Teams or Webex link; a re-run changes only what the calendar changed.

    Skipped: cancelled, declined (config calendar.email), all-day and past events.

    Bots already staged or in a meeting are never touched.

    Example: botsched calendar sync ~/Downloads/work.ics --join-offset -1m --dry-run
    """
    from botsched.core import config
    from botsched.core.paths import resolve_paths
    from botsched.core.timeparse import parse_duration, resolve_zone
    from botsched.core.validation import validate_bot_name

    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"--days must be between 1 and {MAX_DAYS}, not {days}")
    offset_us = 0
    if join_offset is not None and join_offset.strip() not in ("0", "+0", "-0"):
        offset_us = parse_duration(join_offset)
    if bot_name is not None:
        validate_bot_name(bot_name)
    settings = config.load(resolve_paths().config)
    zone = resolve_zone(settings["defaults.timezone"])
    data = _read_source(source)

    from botsched import calsync
    from botsched.client.connection import connect

    now_us = time.time_ns() // 1000
    expansion = calsync.expand(
        data, now_us, days=days, join_offset_us=offset_us, email=settings["calendar.email"], zone=zone,
        source="stdin" if source == "-" else source,
    )
    warnings: list[str] = list(expansion.warnings)  # unreadable events, ignored lines
    failure: BotschedError | None = None
    with connect() as conn:
        page, _ = conn.call("list", states=[], limit=0, dedup_prefix=calsync.KEY_PREFIX)
        actions = calsync.plan(
            expansion.wanted, page["bots"], now_us, skipped=expansion.skipped,
            horizon_us=expansion.window_end_us + offset_us,
        )
        if not dry_run:
            failure = _apply(conn, actions, bot_name, warnings)
    warn(warnings)
    if as_json:
        report = {
            "dry_run": dry_run,
            "window": {
                "start": calsync.instant_text(expansion.window_start_us),
                "end": calsync.instant_text(expansion.window_end_us),
            },
            "actions": [item.as_json() for item in actions],
            "counts": calsync.counts(actions),
        }
        sys.stdout.write(json_text(report) + "\n")
    else:
        _render(actions, dry_run, days)
    if failure is not None:
        raise typer.Exit(failure.exit_code)


def _apply(conn: Any, actions: list[Action], bot_name: str | None, warnings: list[str]) -> BotschedError | None:
    """Cancels first (a replaced bot frees its key), then reschedules, then creates.

    A failure of one action (say the bot got staged meanwhile: exit 4) marks it
    ``failed`` and the sync goes on; the first such error decides the exit code. A lost
    daemon (5) or a bug (1) stops the sync.
    """
    first: BotschedError | None = None
    not_cancelled: set[str] = set()
    for kind in ("cancel", "reschedule", "create"):
        if kind == "create":
            _create_together(conn, actions, bot_name, not_cancelled, warnings)
        for item in actions:
            if item.action != kind or (kind == "create" and item.bot_id is not None):  # (created together)
                continue
            if kind == "create" and item.key in not_cancelled:  # its old bot still holds the key
                item.action, item.reason = "failed", "create skipped: the bot it replaces could not be cancelled"
                continue
            try:
                if kind == "cancel":
                    conn.call("cancel", id=item.bot_id)
                    changed(f"cancelled {item.bot_id}")
                elif kind == "reschedule":
                    _, notes = conn.call("reschedule", id=item.bot_id, join_at=item.join_at)
                    changed(f"rescheduled {item.bot_id}")
                    warnings.extend(f"{item.summary}: {note}" for note in notes)
                else:
                    bot, notes = conn.call(
                        "create", meeting_url=item.meeting_url, bot_name=bot_name, join_at=item.join_at,
                        metadata=item.metadata, deduplication_key=item.key,
                    )
                    changed(f"created {bot['id']}")
                    item.bot_id = bot["id"]
                    item.state = bot["state"]
                    warnings.extend(f"{item.summary}: {note}" for note in notes)
            except BotschedError as exc:
                if exc.exit_code in (1, 5):
                    raise
                print_errors(f"{kind} {item.key}: {exc.message}")
                if kind == "cancel":
                    not_cancelled.add(item.key)
                item.reason = f"{kind} failed: {exc.message}"
                item.action = "failed"
                first = first or exc
    return first


#: From this many creates on, a sync sends them as one ``create_many`` (one request, one
#: transaction: a first sync of 1,000 meetings is one commit, not 1,000).
BULK_CREATES = 20
#: Bots per chunk line of the ``create_many`` stream (each well under 4 KiB here).
BULK_CHUNK = 100


def _create_together(conn: Any, actions: list[Action], bot_name: str | None, skip: set[str],
                     warnings: list[str]) -> None:
    """The plan's creates in one ``create_many``. It is all or nothing: if the daemon
    refuses any of them (a key taken meanwhile, a join time passed), nothing is created
    and ``_apply`` creates them one by one, naming each failure. (Issue 16, calsync.)"""
    from botsched.core import protocol

    items = [item for item in actions if item.action == "create" and item.key not in skip]
    if len(items) < BULK_CREATES:
        return
    fields = [{"line": number, "meeting_url": item.meeting_url, "join_at": item.join_at, "metadata": item.metadata,
               "deduplication_key": item.key, **({"bot_name": bot_name} if bot_name is not None else {})}
              for number, item in enumerate(items, 1)]
    chunks = [protocol.encode({"items": fields[i : i + BULK_CHUNK]}) for i in range(0, len(fields), BULK_CHUNK)]
    try:
        ids, notes = conn.call_bulk("create_many", chunks, bots=False)
    except BotschedError as exc:
        if exc.exit_code in (1, 5):
            raise
        return
    for item, bot_id in zip(items, ids, strict=True):
        changed(f"created {bot_id}")
        item.bot_id, item.state = bot_id, "scheduled"
    warnings.extend(notes)


_DONE = {"create": "created", "reschedule": "rescheduled", "cancel": "cancelled"}
_STYLE = {"create": "green", "reschedule": "yellow", "cancel": "red", "unchanged": "dim", "skipped": "dim",
          "failed": "bold red"}


def _zone() -> Any:
    """The zone people read times in, the one ``botsched list`` shows (config
    ``defaults.timezone``, else ``TZ``, POSIX rules such as ``JST-9`` included)."""
    from botsched.cli import render

    return render.display_zone()


def _local_time(text: str | None, zone: Any, time_only: bool = False) -> str:
    if not text:
        return "—"
    from datetime import datetime

    from botsched.cli import render

    moment = render.in_zone(datetime.fromisoformat(text.replace("Z", "+00:00")), zone)
    return moment.strftime("%H:%M" if time_only else "%a %d %b %H:%M")


def _short_time(text: str, beside: str | None, zone: Any) -> str:
    """A previous time, as short as it can be next to the new one."""
    full = _local_time(text, zone)
    same_day = beside is not None and _local_time(beside, zone)[:10] == full[:10]
    return _local_time(text, zone, time_only=True) if same_day else full


def _render(actions: list[Action], dry_run: bool, days: int) -> None:
    """A compact table (bots without a meeting link only counted) and a summary line."""
    from rich.table import Table
    from rich.text import Text

    from botsched import calsync

    from botsched.cli import render

    out = render.console()
    if not actions:
        out.print(f"No meetings in the next {days} day(s).")
        return
    zone = _zone()
    total = calsync.counts(actions)
    no_url = sum(1 for a in actions if a.action == "skipped" and a.reason == calsync.NO_URL)
    shown = [a for a in actions if not (a.action == "skipped" and a.reason == calsync.NO_URL)]
    if shown:
        with_bots = any(a.bot_id for a in shown)
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("ACTION", no_wrap=True)
        table.add_column("WHEN (local)", no_wrap=True)
        table.add_column("EVENT", overflow="fold", ratio=1)
        if with_bots:
            table.add_column("BOT", no_wrap=True)
        for item in shown:
            label = item.action if dry_run else _DONE.get(item.action, item.action)
            style = _STYLE.get(item.action, "")
            moment = item.join_at if item.action not in ("skipped", "failed") or item.join_at else item.start
            event = Text(printable(item.summary))  # anyone can send an invite: no escapes obeyed
            if item.previous_join_at:
                event.append(f" (was {_short_time(item.previous_join_at, moment, zone)})", style="dim")
            if item.reason and item.action != "reschedule":
                event.append(f" — {printable(item.reason)}", style="dim" if item.action != "failed" else "red")
            row: list[Any] = [Text(label, style=style), Text(_local_time(moment, zone), style="dim" if
                              item.action == "skipped" else ""), event]
            if with_bots:
                row.append(Text(printable(item.bot_id or "")))
            table.add_row(*row)
        out.print(table)
    parts = []
    for name in ("create", "reschedule", "cancel"):
        if total[name]:
            parts.append(f"{total[name]} to {name}" if dry_run else f"{total[name]} {_DONE[name]}")
    parts.append(f"{total['unchanged']} unchanged")
    skipped = f"{total['skipped']} skipped"
    if no_url:
        skipped += f" ({no_url} without a meeting URL)"
    parts.append(skipped)
    if total["failed"]:
        parts.append(f"{total['failed']} failed")
    out.print(("Dry run: " if dry_run else "") + ", ".join(parts) + ".")
