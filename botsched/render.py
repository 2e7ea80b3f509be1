"""Human output: rich tables and cards, local times beside UTC, "in 3 minutes" via pendulum.

Only the human paths import this module (rich and pendulum cost ~50 ms to import);
``--json`` and ``-q`` output never touch it.
"""

from __future__ import annotations

import os
import sys
from typing import Any

import pendulum
from rich.console import Console
from rich.table import Table
from rich.text import Text

STATE_STYLES = {
    "scheduled": "cyan",
    "ready": "cyan",
    "staged": "blue",
    "joining": "yellow",
    "waiting_room": "yellow",
    "joined_not_recording": "green",
    "joined_recording": "bold green",
    "leaving": "magenta",
    "post_processing": "magenta",
    "ended": "dim",
    "fatal_error": "bold red",
}


def console(stderr: bool = False) -> Console:
    """Colours only on a terminal and never with NO_COLOR (rich honours both)."""
    return Console(stderr=stderr, highlight=False, no_color="NO_COLOR" in os.environ, soft_wrap=False)


def _local_zone() -> Any:
    try:
        return pendulum.local_timezone()
    except Exception:  # an unusual TZ setting must not break output
        return pendulum.timezone("UTC")


def when(text: str | None) -> tuple[str, str]:
    """("2026-12-01 16:00:00 CET", "in 3 minutes") for a UTC ISO time, or dashes."""
    if not text:
        return "—", ""
    moment = pendulum.parse(text)
    local = moment.in_timezone(_local_zone())
    return local.format("YYYY-MM-DD HH:mm:ss zz"), moment.diff_for_humans()


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def platform_of(url: str) -> str:
    from botsched.platforms import detect_platform

    return detect_platform(url) or "other"


def bot_table(bots: list[dict[str, Any]], more: bool) -> None:
    out = console()
    if not bots:
        out.print("No bots." if not more else "")
        return
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("ID", "STATE", "JOIN AT (local)", "WHEN", "NAME", "PLATFORM"):
        table.add_column(column, no_wrap=column != "NAME")
    for bot in bots:
        local, relative = when(bot["join_at"] or bot["created_at"])
        if bot["join_at"] is None:
            local, relative = "now (ad-hoc)", relative
        table.add_row(bot["id"], state_text(bot["state"]), local, relative, bot["bot_name"],
                      platform_of(bot["meeting_url"]))
    out.print(table)
    if more:
        out.print(f"[dim]… more bots exist beyond these {len(bots)}; use --limit N or --limit 0 for all[/dim]")


def bot_card(bot: dict[str, Any]) -> None:
    out = console()
    out.print(Text.assemble((bot["id"], "bold"), "  ", state_text(bot["state"])))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    local, relative = when(bot["join_at"])
    join = f"{bot['join_at']}  ({local}, {relative})" if bot["join_at"] else "ad-hoc (joins on creation)"
    grid.add_row("meeting", f"{bot['meeting_url']}  [{platform_of(bot['meeting_url'])}]")
    grid.add_row("name", bot["bot_name"])
    grid.add_row("join at", join)
    grid.add_row("created", bot["created_at"])
    if bot["deduplication_key"]:
        grid.add_row("dedup key", bot["deduplication_key"])
    for key, value in bot["metadata"].items():
        grid.add_row(f"meta {key}", value)
    out.print(grid)
    out.print(Text("events", style="bold"))
    for event in bot["events"]:
        out.print(event_text(event, with_bot=False))


def event_text(event: dict[str, Any], with_bot: bool = True) -> Text:
    local, _ = when(event["at"])
    parts: list[Any] = [(f"{local}  ", "dim")]
    if with_bot and event.get("bot_id"):
        parts.append(f"{event['bot_id']}  ")
    parts.append(state_text(event["state"]))
    if event.get("detail"):
        parts.append(f"  {event['detail']}")
    return Text.assemble(*parts)


def print_event(event: dict[str, Any]) -> None:
    console().print(event_text(event))
    sys.stdout.flush()


def created(bot: dict[str, Any]) -> None:
    out = console()
    if bot["join_at"]:
        local, relative = when(bot["join_at"])
        out.print(f"Created [bold]{bot['id']}[/bold]: joins {bot['join_at']} ({local}, {relative})")
    else:
        out.print(f"Created [bold]{bot['id']}[/bold]: ad-hoc, joining now")


def status(info: dict[str, Any]) -> None:
    out = console()
    out.print(f"[bold green]running[/bold green]  pid {info['pid']}  version {info['version']}  "
              f"up {info['uptime_seconds']:.0f}s")
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim")
    grid.add_column()
    grid.add_row("runner", info.get("runner_detail", info["runner"]))
    grid.add_row("socket", info["socket"])
    grid.add_row("database", info["database"])
    grid.add_row("config", info.get("config_file", ""))
    grid.add_row("log", info.get("log", ""))
    counts = ", ".join(f"{state} {count}" for state, count in info["counts"].items() if count) or "no bots"
    grid.add_row("bots", counts)
    out.print(grid)
