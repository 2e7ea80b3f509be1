"""The bot screens: the ``list`` table, the ``show`` card, event lines, the ``create`` and
``reschedule`` confirmations and ``daemon status``; times in the one display zone."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

from rich.console import Console, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from botsched.cli.output import printable
from botsched.cli.render import time as clock
from botsched.cli.render.screen import (
    STATE_STYLES,
    STATE_WIDTH,
    UNLIMITED_WIDTH,
    console,
    emit,
    state_text,
)
from botsched.core import states

# -- bits -------------------------------------------------------------------------


def platform_of(url: str) -> str:
    from botsched.core.platforms import detect_platform

    return detect_platform(url) or "other"


# -- list -------------------------------------------------------------------------


def bot_table(bots: list[dict[str, Any]], more: bool) -> None:
    out = console()
    bots = printable(bots)
    if not bots:
        emit(out, Text.assemble("No bots. ", ("Create one: botsched create MEETING_URL --join-at +10m", "dim")))
        return
    zone = clock.display_zone()
    zone_name = clock.zone_label(zone)
    rows = []
    for bot in bots:
        if bot["join_at"]:
            local = Text(clock.local(bot["join_at"], zone, "%Y-%m-%d %H:%M"))
            relative = Text(clock.relative(bot["join_at"]))
        else:
            local = Text("ad-hoc", style="dim")
            relative = Text(clock.relative(bot["created_at"]))
        rows.append([Text(bot["id"]), state_text(bot["state"]), local, relative,
                     Text(platform_of(bot["meeting_url"])), Text(bot["bot_name"])])
    columns = ["ID", "STATE", f"JOIN AT ({zone_name})", "WHEN", "PLATFORM", "NAME"]
    hidden: list[str] = []
    table = _table(columns, rows)
    while _natural_width(out, table) > out.width and len(columns) > 4:
        hidden.insert(0, columns.pop().lower())  # NAME, then PLATFORM, give way on a narrow screen
        rows = [row[:-1] for row in rows]
        table = _table(columns, rows)
    footer = Text(style="dim")
    if more:
        footer.append(f"Showing the first {len(bots)} bots; more exist: use --limit N to see more, --limit 0 for all.")
    else:
        footer.append(f"{len(bots)} bot{'s' if len(bots) != 1 else ''}.")
    if hidden:
        footer.append(f" ({' and '.join(hidden)} hidden to fit the terminal; see botsched show ID)")
    emit(out, table, footer)


def bot_table_pages(pages: Iterator[list[dict[str, Any]]], more: Callable[[], bool]) -> None:
    """``bot_table`` for a streamed list: each page printed as it arrives, in the columns
    (and widths) the first page chose, so a list of 100,000 bots never sits in memory."""
    out = console()
    zone = clock.display_zone()
    columns = ["ID", "STATE", f"JOIN AT ({clock.zone_label(zone)})", "WHEN", "PLATFORM", "NAME"]
    widths: list[int] | None = None
    hidden: list[str] = []
    count = 0
    for page in pages:
        rows = [_row(bot, zone) for bot in printable(page)]
        if not rows:
            continue
        if widths is None:
            table = _table(columns, rows)
            while _natural_width(out, table) > out.width and len(columns) > 4:
                hidden.insert(0, columns.pop().lower())
                rows = [row[:len(columns)] for row in rows]
                table = _table(columns, rows)
            widths = [max([len(column), *(row[i].cell_len for row in rows)]) for i, column in enumerate(columns)]
        table = Table(box=None, header_style="bold", pad_edge=False, show_header=count == 0)
        for column, width in zip(columns, widths, strict=True):
            table.add_column(column, no_wrap=True, overflow="ellipsis", width=width)
        for row in rows:
            table.add_row(*row[:len(columns)])
        out.print(table)
        count += len(rows)
    if count == 0:
        emit(out, Text.assemble("No bots. ", ("Create one: botsched create MEETING_URL --join-at +10m", "dim")))
        return
    footer = Text(style="dim")
    if more():
        footer.append(f"Showing the first {count} bots; more exist: use --limit N to see more, --limit 0 for all.")
    else:
        footer.append(f"{count} bot{'s' if count != 1 else ''}.")
    if hidden:
        footer.append(f" ({' and '.join(hidden)} hidden to fit the terminal; see botsched show ID)")
    out.print(footer)


def _row(bot: dict[str, Any], zone: Any) -> list[Text]:
    if bot["join_at"]:
        local = Text(clock.local(bot["join_at"], zone, "%Y-%m-%d %H:%M"))
        relative = Text(clock.relative(bot["join_at"]))
    else:
        local = Text("ad-hoc", style="dim")
        relative = Text(clock.relative(bot["created_at"]))
    return [Text(bot["id"]), state_text(bot["state"]), local, relative,
            Text(platform_of(bot["meeting_url"])), Text(bot["bot_name"])]


def _natural_width(out: Console, table: Table) -> int:
    return out.measure(table, options=out.options.update_width(UNLIMITED_WIDTH)).maximum


def _table(columns: list[str], rows: list[list[Any]]) -> Table:
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in columns:
        if column == "ID":
            table.add_column(column, no_wrap=True, min_width=20)
        elif column in ("PLATFORM", "NAME"):
            table.add_column(column, no_wrap=True, overflow="ellipsis")
        else:
            table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*row)
    return table


# -- show -------------------------------------------------------------------------


def bot_card(bot: dict[str, Any]) -> None:
    out = console()
    bot = printable(bot)
    zone = clock.display_zone()
    title = Text.assemble((bot["id"], "bold"), "  ", state_text(bot["state"]))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    grid.add_row("meeting", Text.assemble(bot["meeting_url"], "  ", (f"({platform_of(bot['meeting_url'])})", "dim")))
    grid.add_row("name", Text(bot["bot_name"]))
    if bot["join_at"]:
        grid.add_row("join at", Text.assemble(clock.local(bot["join_at"], zone), "  ",
                                              (clock.relative(bot["join_at"]), "bold"),
                                              "  ", (f"({bot['join_at']})", "dim")))
    else:
        grid.add_row("join at", Text("ad-hoc: joins as soon as it is created"))
    grid.add_row("created", Text.assemble(clock.local(bot["created_at"], zone), "  ",
                                          (clock.relative(bot["created_at"]), "dim")))
    if bot.get("updated_at") and bot["updated_at"] != bot["created_at"]:
        grid.add_row("updated", Text.assemble(clock.local(bot["updated_at"], zone), "  ",
                                              (clock.relative(bot["updated_at"]), "dim")))
    if bot.get("deduplication_key"):
        grid.add_row("dedup key", Text(bot["deduplication_key"]))
    if "agent" in bot:  # cluster mode (SPEC §10): which agent staged it
        grid.add_row("agent", Text(bot["agent"] or "none yet (not staged)"))
    for key, value in (bot.get("metadata") or {}).items():
        grid.add_row("metadata", Text(f"{key}={value}"))

    timeline = Table.grid(padding=(0, 2))
    timeline.add_column(style="dim", no_wrap=True)
    timeline.add_column(no_wrap=True)
    timeline.add_column(style="dim", no_wrap=True, justify="right")
    timeline.add_column()
    previous: datetime | None = None
    for event in bot.get("events") or []:
        moment = clock.parse(event["at"])
        gap = "" if previous is None else clock.gap((moment - previous).total_seconds())
        previous = moment
        detail = Text(event.get("detail") or "", style="red" if event["state"] == states.FATAL_ERROR else "")
        if event["state"] == states.JOINING and bot["join_at"]:
            late_ms = (moment - clock.parse(bot["join_at"])).total_seconds() * 1000
            detail.append(("  " if detail else "") + f"{late_ms:+.0f} ms from join_at", style="dim")
        if event.get("agent"):  # cluster mode: the agent that recorded it
            detail.append(("  " if detail else "") + f"[{event['agent']}]", style="dim")
        timeline.add_row(Text(clock.event_time(event["at"], zone)), state_text(event["state"]), Text(gap), detail)

    parts: list[RenderableType] = [title, Padding(grid, (0, 0, 0, 2)), Text(""), Text("Timeline", style="bold"),
                                   Padding(timeline, (0, 0, 0, 2))]
    steps = _next_steps(bot)
    if steps:
        hints = Table.grid(padding=(0, 2))
        hints.add_column(style="dim", no_wrap=True)
        hints.add_column(no_wrap=True)
        for label, command in steps:
            hints.add_row(label, Text(command))
        parts += [Text(""), Padding(hints, (0, 0, 0, 2))]
    emit(out, *parts)


def _next_steps(bot: dict[str, Any]) -> list[tuple[str, str]]:
    """What a person may want to do next with this bot, as commands to copy."""
    bot_id = bot["id"]
    if bot["state"] == states.SCHEDULED:
        return [("move it", f"botsched reschedule {bot_id} --join-at TIME"), ("delete it", f"botsched cancel {bot_id}")]
    if bot["state"] in states.IN_MEETING:
        return [("make it leave", f"botsched leave {bot_id}"), ("follow it", f"botsched events {bot_id} --follow")]
    if bot["state"] in (states.READY, states.STAGED, states.LEAVING, states.POST_PROCESSING):
        return [("follow it", f"botsched events {bot_id} --follow")]
    return []


# -- events -----------------------------------------------------------------------


def event_text(event: dict[str, Any], with_bot: bool = True) -> Text:
    event = printable(event)
    parts: list[Any] = [(clock.event_time(event["at"], clock.display_zone()) + "  ", "dim")]
    if with_bot and event.get("bot_id"):
        parts.append(f"{event['bot_id']}  ")
    detail = event.get("detail")
    state = event["state"].ljust(STATE_WIDTH) if detail else event["state"]
    parts.append(Text(state, style=STATE_STYLES.get(event["state"], "")))
    if detail:
        parts.append(("  " + detail, "red" if event["state"] == states.FATAL_ERROR else ""))
    return Text.assemble(*parts)


def print_event(event: dict[str, Any]) -> None:
    out = console()
    out.print(event_text(event))
    out.file.flush()
    sys.stdout.flush()


# -- create -----------------------------------------------------------------------


def created(bot: dict[str, Any]) -> None:
    out = console()
    bot = printable(bot)
    line = Text.assemble("Created ", (bot["id"], "bold"), f" ({platform_of(bot['meeting_url'])}): ")
    if bot["join_at"]:
        local, relative = clock.when(bot["join_at"])
        line.append(f"joins {local}, ")
        line.append(relative, style="bold")
    else:
        line.append("ad-hoc, joining now")
    emit(out, line)


def rescheduled(bot: dict[str, Any]) -> None:
    out = console()
    bot = printable(bot)
    local, relative = clock.when(bot["join_at"])
    emit(out, Text.assemble("Rescheduled ", (bot["id"], "bold"), f": joins {bot['join_at']} ({local}, {relative})"))


# -- daemon status ----------------------------------------------------------------


def status(info: dict[str, Any]) -> None:
    out = console()
    info = printable(info)
    headline = Text.assemble("botsched daemon ", ("running", "bold green"), f": pid {info['pid']}, "
                             f"version {info['version']}, up {clock.duration(info.get('uptime_seconds') or 0)}")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    grid.add_row("runner", Text(info.get("runner_detail") or info["runner"]))
    config = info.get("config") or {}
    if "scheduler.stage_lead_seconds" in config:
        grid.add_row("scheduler", Text(f"stages bots {_seconds(config['scheduler.stage_lead_seconds'])} ahead; "
                                  f"joins up to {_seconds(config.get('scheduler.misfire_grace_seconds', 0))} "
                                  f"late after downtime"))
    grid.add_row("socket", Text(info["socket"]))
    if info.get("store") == "postgresql":  # cluster mode (SPEC §10): the URL shown has no password
        grid.add_row("database", Text.assemble(info["database"], ("  (PostgreSQL, shared: botsched agents)", "dim")))
        grid.add_row("agent", Text(str(info.get("agent"))))
    else:
        grid.add_row("database", Text(info["database"]))
    config_file = info.get("config_file") or ""
    if config_file:
        note = "" if Path(config_file).exists() else "  (not created yet: all defaults; botsched config set KEY VALUE)"
        grid.add_row("config", Text.assemble(config_file, (note, "dim")))
    if info.get("log"):
        grid.add_row("log", Text(info["log"]))
    counts = info.get("counts") or {}
    total = sum(counts.values())
    bots = Text()
    for state, count in counts.items():
        if count:
            if bots:
                bots.append(", ")
            bots.append(f"{count} ")
            bots.append(state_text(state))
    if total:
        bots.append(f"  ({total} in all)", style="dim")
    else:
        bots.append("none yet")
    grid.add_row("bots", bots)
    parts: list[RenderableType] = [headline, Padding(grid, (0, 0, 0, 2))]
    if info["runner"] == "simulate":
        parts += [Text(""), Text("Runs are simulated: no real bot joins a meeting. To run your own bot:", style="dim"),
                  Text("  botsched config set runner.kind command\n"
                       "  botsched config set runner.command '[\"/path/to/your-bot\", \"--flag\"]'\n"
                       "  botsched daemon stop && botsched daemon start", style="dim")]
    emit(out, *parts)


def _seconds(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return clock.duration(number) if number >= 60 and number == int(number) else f"{number:g}s"
