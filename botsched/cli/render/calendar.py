"""The ``calendar sync`` screen: what was (or would be) created, moved and cancelled, with
times in the one display zone ``list`` uses, labelled with its name."""

from __future__ import annotations

from datetime import tzinfo
from typing import TYPE_CHECKING, Any

from rich.table import Table
from rich.text import Text

from botsched.cli.output import printable
from botsched.cli.render.screen import console
from botsched.cli.render.time import display_zone, local, zone_label

if TYPE_CHECKING:  # pragma: no cover
    from botsched.calsync import Action

_DONE = {"create": "created", "reschedule": "rescheduled", "cancel": "cancelled"}
_STYLE = {"create": "green", "reschedule": "yellow", "cancel": "red", "unchanged": "dim", "skipped": "dim",
          "failed": "bold red"}


def _local_time(text: str | None, zone: tzinfo, time_only: bool = False) -> str:
    if not text:
        return "—"
    return local(text, zone, "%H:%M" if time_only else "%a %d %b %H:%M")


def _short_time(text: str, beside: str | None, zone: tzinfo) -> str:
    """A previous time, as short as it can be next to the new one."""
    full = _local_time(text, zone)
    same_day = beside is not None and _local_time(beside, zone)[:10] == full[:10]
    return _local_time(text, zone, time_only=True) if same_day else full


def sync_table(actions: list[Action], dry_run: bool, days: int) -> None:
    """A compact table (bots without a meeting link only counted) and a summary line."""
    from botsched import calsync

    out = console()
    if not actions:
        out.print(f"No meetings in the next {days} day(s).")
        return
    zone = display_zone()
    total = calsync.counts(actions)
    no_url = sum(1 for a in actions if a.action == "skipped" and a.reason == calsync.NO_URL)
    shown = [a for a in actions if not (a.action == "skipped" and a.reason == calsync.NO_URL)]
    if shown:
        with_bots = any(a.bot_id for a in shown)
        table = Table(box=None, header_style="bold", pad_edge=False)
        table.add_column("ACTION", no_wrap=True)
        table.add_column(f"WHEN ({zone_label(zone)})", no_wrap=True)
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


def followed_table(calendars: list[dict[str, Any]]) -> None:
    """``calendar list``: one row per followed calendar; when it last synced, and (one
    line) why it last failed."""
    from botsched.cli.render.time import duration, relative

    out = console()
    if not calendars:
        out.print("No calendars are followed. Add one: botsched calendar add SOURCE")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for name, extra in (("NAME", {"no_wrap": True}), ("SOURCE", {"overflow": "fold", "ratio": 1}),
                        ("EVERY", {"no_wrap": True}), ("BOTS", {"no_wrap": True, "justify": "right"}),
                        ("LAST SYNC", {"no_wrap": True}), ("NEXT", {"no_wrap": True}),
                        ("STATUS", {"overflow": "fold", "ratio": 1})):
        table.add_column(name, **extra)
    for cal in calendars:
        success = relative(cal["last_success"]) if cal["last_success"] else "never"
        upcoming = "now" if cal.get("polling") else (relative(cal["next_poll"]) if cal["next_poll"] else "—")
        if cal["status"] == "failing":
            status = Text(f"failing ({cal['failures']}x, {relative(cal['last_error_at'])}): "
                          f"{printable(cal['last_error'])}", style="red")
        elif cal["status"] == "new":
            status = Text("not synced yet", style="dim")
        else:
            status = Text("ok", style="green")
            if cal["last_error"] and cal["last_error_at"]:
                status.append(f" (last error {relative(cal['last_error_at'])}: {printable(cal['last_error'])})",
                              style="dim")
        table.add_row(Text(printable(cal["name"])), Text(printable(cal["source"])), duration(cal["every_seconds"]),
                      str(cal["bots"]), success, upcoming, status)
    out.print(table)
