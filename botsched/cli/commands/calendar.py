"""``botsched calendar sync|add|list|remove``: keep one bot per meeting of an iCalendar
file, once (``sync FILE``) or for as long as the daemon follows the calendar (``add``).

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


def _offset_us(join_offset: str | None) -> int:
    from botsched.core.timeparse import parse_duration

    if join_offset is None or join_offset.strip() in ("0", "+0", "-0"):
        return 0
    return parse_duration(join_offset)


def _is_followed_name(source: str) -> bool:
    """``calendar sync NAME``: a word that could be a followed calendar's name and is no
    file here (a file named like a calendar is synced as ``./NAME``)."""
    import os

    from botsched.calsync.keys import _NAME

    return bool(_NAME.fullmatch(source)) and not os.path.exists(source)


def sync(source: str | None, days: int | None, join_offset: str | None, bot_name: str | None, dry_run: bool,
         as_json: bool) -> int:
    """``calendar sync FILE`` or, for a followed calendar (or all of them), ``calendar
    sync [NAME]``: the exit code of the first failed action, else 0."""
    if source is None or _is_followed_name(source):
        given = [flag for flag, value in (("--days", days), ("--join-offset", join_offset), ("--bot-name", bot_name))
                 if value is not None]
        if given:
            raise InvalidInput(f"{given[0]} is a setting of the followed calendar (given to calendar add); "
                               "to change it, remove the calendar and add it again")
        return sync_followed(source, dry_run, as_json)
    return sync_file(source, DEFAULT_DAYS if days is None else days, join_offset, bot_name, dry_run, as_json)


def sync_file(source: str, days: int, join_offset: str | None, bot_name: str | None, dry_run: bool,
              as_json: bool) -> int:
    """Plan (and unless ``dry_run`` apply) the calendar; the exit code of the first
    failed action, else 0."""
    from botsched.core import config
    from botsched.core.paths import resolve_paths
    from botsched.core.validation import validate_bot_name

    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"--days must be between 1 and {MAX_DAYS}, not {days}")
    offset_us = _offset_us(join_offset)
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




# -- followed calendars (issue 16) ---------------------------------------------------


def add(source: str, name: str | None, every: str, days: int, join_offset: str | None, bot_name: str | None,
        user: str | None, password_file: str | None, password_env: str | None, as_json: bool) -> int:
    """Follow a calendar: the daemon stores it, syncs it at once and then every ``every``."""
    import os

    from botsched.calsync.keys import validate_calendar_name
    from botsched.calsync.sources import parse_source
    from botsched.client.connection import connect
    from botsched.core.timeparse import parse_duration
    from botsched.core.validation import validate_bot_name

    if name is not None:
        validate_calendar_name(name)
    every_us = parse_duration(every)
    if not 1 <= days <= MAX_DAYS:
        raise InvalidInput(f"--days must be between 1 and {MAX_DAYS}, not {days}")
    offset_us = _offset_us(join_offset)
    if bot_name is not None:
        validate_bot_name(bot_name)
    if password_file is not None:
        password_file = os.path.abspath(os.path.expanduser(password_file))
        if not os.path.isfile(password_file):
            raise InvalidInput(f"--password-file {password_file}: no such file")
    if password_env is not None and not password_env.replace("_", "a").isalnum():
        raise InvalidInput(f"--password-env takes the name of an environment variable, not {password_env!r}")
    parsed = parse_source(source, user=user, password_file=password_file, password_env=password_env)
    if parsed.kind == "file" and not os.path.isfile(parsed.location):
        raise InvalidInput(f"{parsed.location}: no such file")
    request: dict[str, Any] = {
        "source": {"kind": parsed.kind, "location": parsed.location, "user": parsed.user,
                   "password_file": parsed.password_file, "password_env": parsed.password_env},
        "every_us": every_us, "days": days, "join_offset_us": offset_us,
    }
    if name is not None:
        request["name"] = name
    if bot_name is not None:
        request["bot_name"] = bot_name
    with connect() as conn:
        result, warnings = conn.call(Op.CALENDAR_ADD, **request)
    cal, report = result["calendar"], result["sync"]
    changed(f"followed calendar {cal['name']}")
    warn(warnings)
    if as_json:
        emit_json(result)
        return 0
    from botsched.cli.output import say

    if report is not None:
        from botsched.cli.render.calendar import sync_table

        sync_table(_actions_of(report), False, cal["days"])
    say(f"Following {cal['name']} ({cal['source']}), every {_duration(cal['every_seconds'])}; "
        f"its bots' keys start with ical/{cal['name']}:")
    return 0


def _duration(seconds: int) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"


def _actions_of(report: dict[str, Any]) -> list[Action]:
    """The daemon's report back into ``Action``s, for the same table ``sync FILE`` draws."""
    from botsched.calsync import Action

    fields = ("action", "key", "summary", "join_at", "reason", "bot_id", "meeting_url", "state",
              "previous_join_at", "start")
    return [Action(**{k: item.get(k) for k in fields}) for item in report.get("actions", [])]


def sync_followed(name: str | None, dry_run: bool, as_json: bool) -> int:
    """``calendar sync [NAME]``: the daemon polls now (the whole feed) and applies."""
    from botsched.client.connection import connect

    with connect() as conn:
        reports, warnings = conn.call(Op.CALENDAR_SYNC, **({"name": name} if name is not None else {}),
                                      dry_run=dry_run)
    warn(warnings)
    failed = [r for r in reports if "error" in r]
    for report in reports:
        for item in report.get("actions", []):
            if item["action"] == "failed":
                print_errors(f"{report['name']}: {item['key']}: {item['reason']}")
    if as_json:
        emit_json(reports if name is None else reports[0])
    else:
        from botsched.cli.output import say
        from botsched.cli.render.calendar import sync_table

        if not reports:
            say("No calendars are followed (botsched calendar add SOURCE).")
        for report in reports:
            if "error" in report:
                continue
            if name is None:
                say(f"{report['name']}:")
            sync_table(_actions_of(report), dry_run, report.get("days", DEFAULT_DAYS))
    for report in failed:
        print_errors(f"{report['name']}: {report['error']}")
    if failed:  # a calendar that could not be read (SourceError, exit 2 like a bad file)
        return 2
    return 4 if any(i["action"] == "failed" for r in reports for i in r.get("actions", [])) else 0


def list_calendars(as_json: bool) -> None:
    from botsched.client.connection import connect

    with connect() as conn:
        calendars, warnings = conn.call(Op.CALENDAR_LIST)
    warn(warnings)
    if as_json:
        emit_json(calendars)
        return
    from botsched.cli.render.calendar import followed_table

    followed_table(calendars)


def remove(name: str, as_json: bool) -> None:
    from botsched.calsync.keys import validate_calendar_name
    from botsched.client.connection import connect

    validate_calendar_name(name)
    with connect() as conn:
        result, warnings = conn.call(Op.CALENDAR_REMOVE, name=name)
    changed(f"removed calendar {name}")
    warn(warnings)
    if as_json:
        emit_json(result)
        return
    from botsched.cli.output import say

    cancelled, left = result["cancelled"], result["left_alone"]
    line = f"Removed {name}: cancelled {len(cancelled)} scheduled bot(s)"
    if left:
        line += f"; {len(left)} bot(s) already under way left alone ({', '.join(b['id'] for b in left[:5])})"
    say(line + ".")
