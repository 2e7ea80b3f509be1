"""``botsched calendar sync``: keep one bot per meeting of an iCalendar file.

Thin like the rest of the CLI: the rules live in ``botsched.calsync`` (pure), which is
imported only when the command runs, so ``icalendar`` costs nothing to other commands.
The table is drawn by ``botsched.cli.render.calendar``, in the zone ``list`` uses.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from botsched.cli.output import (
    changed,
    emit_json,
    print_errors,
    read_source,
    user_zone,
    warn,
)
from botsched.core import states
from botsched.core.errors import BotschedError, ExitStatus, InvalidInput
from botsched.core.protocol import Op

if TYPE_CHECKING:  # pragma: no cover
    from botsched.calsync import Action

#: ``--days`` at most a year: a sync looks ahead, it does not plan a decade.
MAX_DAYS = 366


#: ``--days`` by default: two weeks ahead.
DEFAULT_DAYS = 14


def sync(source: str, days: int, join_offset: str | None, bot_name: str | None, dry_run: bool,
         as_json: bool) -> int:
    """Plan (and unless ``dry_run`` apply) the calendar; the exit code of the first
    failed action, else 0."""
    from botsched.core import config
    from botsched.core.paths import resolve_paths
    from botsched.core.timeparse import parse_duration
    from botsched.core.validation import validate_bot_name

    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"--days must be between 1 and {MAX_DAYS}, not {days}")
    offset_us = 0
    if join_offset is not None and join_offset.strip() not in ("0", "+0", "-0"):
        offset_us = parse_duration(join_offset)
    if bot_name is not None:
        validate_bot_name(bot_name)
    settings = config.load(resolve_paths().config)
    zone = user_zone()  # the one user zone: all-day and floating times read as list shows them
    data = read_source(source)

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
        page, _ = conn.call(Op.LIST, states=[], limit=0, dedup_prefix=calsync.KEY_PREFIX)
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
        emit_json(report)
    else:
        from botsched.cli.render.calendar import sync_table

        sync_table(actions, dry_run, days)
    return failure.exit_code if failure is not None else ExitStatus.SUCCESS


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
                    conn.call(Op.CANCEL, id=item.bot_id)
                    changed(f"cancelled {item.bot_id}")
                elif kind == "reschedule":
                    _, notes = conn.call(Op.RESCHEDULE, id=item.bot_id, join_at=item.join_at)
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
                if exc.exit_code in (ExitStatus.INTERNAL, ExitStatus.UNAVAILABLE):
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
        ids, notes = conn.call_bulk(Op.CREATE_MANY, chunks, bots=False)
    except BotschedError as exc:
        if exc.exit_code in (ExitStatus.INTERNAL, ExitStatus.UNAVAILABLE):
            raise
        return
    for item, bot_id in zip(items, ids, strict=True):
        changed(f"created {bot_id}")
        item.bot_id, item.state = bot_id, states.SCHEDULED
    warnings.extend(notes)


