"""Human output: rich tables and cards, local times beside UTC, "in 3 minutes" via pendulum.

Only the human paths import this module (rich and pendulum cost ~50 ms to import);
``--json`` and ``-q`` output never touch it.

Colours appear only on a terminal and never with ``NO_COLOR`` (then no escape code at
all, not even bold). Into a pipe or a file nothing is cut to fit a screen: ids and URLs
come out whole, so ``botsched list | grep`` works.

Whatever came from outside (names, URLs, calendar titles, runner details) can hold
terminal escapes: every renderer here passes its data through ``printable`` first, so
they are shown as ``\x1b`` and never obeyed.
"""

from __future__ import annotations

import os
import re
import sys
from datetime import datetime, timezone, tzinfo
from pathlib import Path
from typing import Any

import pendulum
from rich.console import Console, RenderableType
from rich.padding import Padding
from rich.table import Table
from rich.text import Text

from botsched.cli.main import printable

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
IN_MEETING = ("joining", "waiting_room", "joined_not_recording", "joined_recording")
STATE_WIDTH = max(len(state) for state in STATE_STYLES)

#: Padding rich leaves at the end of a line (possibly inside closing escape codes).
_TRAILING = re.compile(r"[ \t]+((?:\x1b\[[0-9;]*m)*)$")
_UNLIMITED_WIDTH = 4096


def console(stderr: bool = False) -> Console:
    """Colours only on a terminal and never with NO_COLOR (https://no-color.org)."""
    stream = sys.stderr if stderr else sys.stdout
    options: dict[str, Any] = {}
    no_color = os.environ.get("NO_COLOR", "") != ""
    if no_color:
        options["color_system"] = None  # no escape codes at all (rich would keep bold/dim)
    try:
        terminal = stream.isatty()
    except (AttributeError, ValueError):
        terminal = False
    if not terminal and not os.environ.get("COLUMNS"):
        options["width"] = _UNLIMITED_WIDTH  # a pipe: never truncate an id to fit 80 columns
    return Console(stderr=stderr, highlight=False, no_color=no_color, soft_wrap=False, **options)


def _emit(out: Console, *renderables: RenderableType) -> None:
    """Print without the trailing padding rich adds to table cells."""
    with out.capture() as captured:
        for renderable in renderables:
            out.print(renderable)
    text = "\n".join(_TRAILING.sub(r"\1", line) for line in captured.get().split("\n"))
    out.file.write(text)
    out.file.flush()


# -- time -------------------------------------------------------------------------


def display_zone() -> tzinfo:
    """The zone people think in: config ``defaults.timezone``, else the system's (``TZ``:
    an IANA name or a POSIX rule such as ``JST-9``, as the C library reads it)."""
    from botsched.core.errors import BotschedError
    from botsched.cli.main import local_zone, warn

    global _zone_warned
    try:
        return local_zone()
    except Exception as exc:  # an unreadable config or a TZ that is no zone must not break output:
        if isinstance(exc, BotschedError) and not _zone_warned:
            _zone_warned = True
            warn([f"{exc.message}; times are shown in UTC"])
        return timezone.utc  # UTC, and every time says so (%Z)


_zone_warned = False


_zone = display_zone


def _parse(text: str) -> datetime:
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)


def in_zone(moment: datetime, zone: tzinfo) -> datetime:
    """``moment`` in ``zone``, or left in UTC where the zone would leave the calendar
    (a bot stored for 9999-12-31 before such times were refused)."""
    try:
        return moment.astimezone(zone)
    except (OverflowError, ValueError):
        return moment.astimezone(timezone.utc)


def _local(text: str, zone: tzinfo, fmt: str = "%Y-%m-%d %H:%M:%S %Z") -> str:
    return in_zone(_parse(text), zone).strftime(fmt)


def _relative(text: str) -> str:
    return pendulum.parse(text).diff_for_humans()


def when(text: str | None) -> tuple[str, str]:
    """("2026-12-01 16:00:00 CET", "in 3 minutes") for a UTC ISO time, or dashes."""
    if not text:
        return "—", ""
    return _local(text, _zone()), _relative(text)


def _duration(seconds: float) -> str:
    """4s, 12m 5s, 3h 2m, 2d 4h."""
    seconds = max(int(seconds), 0)
    days, rest = divmod(seconds, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs}s" if secs else f"{minutes}m"
    return f"{secs}s"


def _gap(seconds: float) -> str:
    """Time between two events: +0.2s, +8m 0s."""
    if seconds < 60:
        return f"+{seconds:.1f}s" if seconds >= 0.1 else f"+{seconds * 1000:.0f}ms"
    return "+" + _duration(seconds)


# -- bits -------------------------------------------------------------------------


def state_text(state: str) -> Text:
    return Text(state, style=STATE_STYLES.get(state, ""))


def platform_of(url: str) -> str:
    from botsched.core.platforms import detect_platform

    return detect_platform(url) or "other"


# -- list -------------------------------------------------------------------------


def bot_table(bots: list[dict[str, Any]], more: bool) -> None:
    out = console()
    bots = printable(bots)
    if not bots:
        _emit(out, Text.assemble("No bots. ", ("Create one: botsched create MEETING_URL --join-at +10m", "dim")))
        return
    zone = _zone()
    zone_name = datetime.now(zone).strftime("%Z") or "local"
    rows = []
    for bot in bots:
        if bot["join_at"]:
            local = Text(_local(bot["join_at"], zone, "%Y-%m-%d %H:%M"))
            relative = Text(_relative(bot["join_at"]))
        else:
            local = Text("ad-hoc", style="dim")
            relative = Text(_relative(bot["created_at"]))
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
    _emit(out, table, footer)


def _natural_width(out: Console, table: Table) -> int:
    return out.measure(table, options=out.options.update_width(_UNLIMITED_WIDTH)).maximum


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
    zone = _zone()
    title = Text.assemble((bot["id"], "bold"), "  ", state_text(bot["state"]))
    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="dim", no_wrap=True)
    grid.add_column()
    grid.add_row("meeting", Text.assemble(bot["meeting_url"], "  ", (f"({platform_of(bot['meeting_url'])})", "dim")))
    grid.add_row("name", Text(bot["bot_name"]))
    if bot["join_at"]:
        grid.add_row("join at", Text.assemble(_local(bot["join_at"], zone), "  ", (_relative(bot["join_at"]), "bold"),
                                              "  ", (f"({bot['join_at']})", "dim")))
    else:
        grid.add_row("join at", Text("ad-hoc: joins as soon as it is created"))
    grid.add_row("created", Text.assemble(_local(bot["created_at"], zone), "  ", (_relative(bot["created_at"]), "dim")))
    if bot.get("updated_at") and bot["updated_at"] != bot["created_at"]:
        grid.add_row("updated", Text.assemble(_local(bot["updated_at"], zone), "  ",
                                              (_relative(bot["updated_at"]), "dim")))
    if bot.get("deduplication_key"):
        grid.add_row("dedup key", Text(bot["deduplication_key"]))
    for key, value in (bot.get("metadata") or {}).items():
        grid.add_row("metadata", Text(f"{key}={value}"))

    timeline = Table.grid(padding=(0, 2))
    timeline.add_column(style="dim", no_wrap=True)
    timeline.add_column(no_wrap=True)
    timeline.add_column(style="dim", no_wrap=True, justify="right")
    timeline.add_column()
    previous: datetime | None = None
    for event in bot.get("events") or []:
        moment = _parse(event["at"])
        gap = "" if previous is None else _gap((moment - previous).total_seconds())
        previous = moment
        detail = Text(event.get("detail") or "", style="red" if event["state"] == "fatal_error" else "")
        if event["state"] == "joining" and bot["join_at"]:
            late_ms = (moment - _parse(bot["join_at"])).total_seconds() * 1000
            detail.append(("  " if detail else "") + f"{late_ms:+.0f} ms from join_at", style="dim")
        timeline.add_row(Text(_event_time(event["at"], zone)), state_text(event["state"]), Text(gap), detail)

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
    _emit(out, *parts)


def _next_steps(bot: dict[str, Any]) -> list[tuple[str, str]]:
    """What a person may want to do next with this bot, as commands to copy."""
    bot_id = bot["id"]
    if bot["state"] == "scheduled":
        return [("move it", f"botsched reschedule {bot_id} --join-at TIME"), ("delete it", f"botsched cancel {bot_id}")]
    if bot["state"] in IN_MEETING:
        return [("make it leave", f"botsched leave {bot_id}"), ("follow it", f"botsched events {bot_id} --follow")]
    if bot["state"] in ("ready", "staged", "leaving", "post_processing"):
        return [("follow it", f"botsched events {bot_id} --follow")]
    return []


# -- events -----------------------------------------------------------------------


def _event_time(text: str, zone: tzinfo) -> str:
    moment = in_zone(_parse(text), zone)
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond // 1000:03d} " + moment.strftime("%Z")


def event_text(event: dict[str, Any], with_bot: bool = True) -> Text:
    event = printable(event)
    parts: list[Any] = [(_event_time(event["at"], _zone()) + "  ", "dim")]
    if with_bot and event.get("bot_id"):
        parts.append(f"{event['bot_id']}  ")
    detail = event.get("detail")
    state = event["state"].ljust(STATE_WIDTH) if detail else event["state"]
    parts.append(Text(state, style=STATE_STYLES.get(event["state"], "")))
    if detail:
        parts.append(("  " + detail, "red" if event["state"] == "fatal_error" else ""))
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
        local, relative = when(bot["join_at"])
        line.append(f"joins {local}, ")
        line.append(relative, style="bold")
    else:
        line.append("ad-hoc, joining now")
    _emit(out, line)


def rescheduled(bot: dict[str, Any]) -> None:
    out = console()
    bot = printable(bot)
    local, relative = when(bot["join_at"])
    _emit(out, Text.assemble("Rescheduled ", (bot["id"], "bold"), f": joins {bot['join_at']} ({local}, {relative})"))


# -- daemon status ----------------------------------------------------------------


def status(info: dict[str, Any]) -> None:
    out = console()
    info = printable(info)
    headline = Text.assemble("botsched daemon ", ("running", "bold green"), f": pid {info['pid']}, "
                             f"version {info['version']}, up {_duration(info.get('uptime_seconds') or 0)}")
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
    _emit(out, *parts)


def _seconds(value: Any) -> str:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return _duration(number) if number >= 60 and number == int(number) else f"{number:g}s"
