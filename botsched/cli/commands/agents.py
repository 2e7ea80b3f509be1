"""``botsched agents`` (SPEC §10): the daemons sharing this store, from any of them.

Thin: the daemon reads the registry (cluster mode) or describes itself (the single-machine
SQLite store); this prints it. ``--json`` is SPEC's array exactly; warnings (an agent's
clock off the database's) go to stderr as ``warning:`` lines either way.
"""

from __future__ import annotations

from typing import Any

from botsched.cli.output import emit_json, say, warn
from botsched.core.protocol import Op


def _slots(row: dict[str, Any]) -> str:
    total = row["slots_total"]
    return f"{row['slots_used']}/{'-' if total is None else total}"


def _offset(row: dict[str, Any]) -> str:
    offset = row["clock_offset_ms"]
    return "?" if offset is None else f"{offset:+.1f} ms"


def _beat(text: str) -> str:
    """Heartbeats come every few seconds: their age in seconds, then in words."""
    import time

    from botsched.cli.render.time import parse, relative

    age = time.time() - parse(text).timestamp()
    return f"{max(age, 0):.1f}s ago" if age < 120 else relative(text)


def agents(as_json: bool) -> None:
    from botsched.client.connection import connect

    with connect() as conn:
        answer, warnings = conn.call(Op.AGENTS)
    rows: list[dict[str, Any]] = answer["agents"]
    warn(warnings)
    if as_json:
        emit_json(rows)
        return
    header = ["NAME", "ALIVE", "VERSION", "RUNNER", "SLOTS", "LAST HEARTBEAT", "CLOCK OFFSET"]
    cells = [[row["name"], "yes" if row["alive"] else "no", row["version"], row["runner"], _slots(row),
              _beat(row["last_heartbeat"]), _offset(row)] for row in rows]
    widths = [max(len(line[i]) for line in [header, *cells]) for i in range(len(header))]
    for line in [header, *cells]:
        say("  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip())
    if answer["store"] == "sqlite":
        say("single machine: this daemon is the only agent of its SQLite store "
            "(several machines share a PostgreSQL one: [store] url = \"postgresql://...\")")
