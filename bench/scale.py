"""Does botsched stay small and quick with 1,000,000 scheduled bots? (issue 4's scale row)

Populates one daemon with ``--bots`` (default 1,000,000) bots spread over 30 days, through
``botsched create --from -`` in chunks of 100,000, and reports:

- daemon RSS (VmRSS) after populating and after a restart. Target ≤ 150 MB.
- ``daemon stop`` + ``daemon start`` until it answers. Target ≤ 2 s.
- ``create -q`` median wall at full size vs an empty store. Target ≤ 1.2×. An empty
  daemon runs beside the full one and the two are timed alternately, so a busy machine
  slows both alike.
- ``list --state staged --json`` wall (and the request alone, over the socket). Target ≤ 100 ms.

Takes minutes at 1M (populating dominates: it is printed); ``--bots 100000`` for a quick look.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    MEETING_URL,
    US,
    BenchDaemon,
    Metric,
    bench_args,
    bot_lines,
    jsonl,
    log,
    main_guard,
    median_of_runs,
    now_us,
    report,
)

CHUNK = 100_000
SPAN_US = 30 * 86_400 * US
CREATE_ARGV = ["create", "-q", MEETING_URL, "--join-at", "+1h"]
LIST_ARGV = ["list", "--state", "staged", "--json"]


def populate(daemon: BenchDaemon, count: int) -> float:
    """``count`` bots from 1 h to 30 days ahead via ``create --from -`` chunks; seconds taken."""
    first = now_us() + 3600 * US
    step = SPAN_US // max(count, 1)
    started = time.perf_counter()
    for offset in range(0, count, CHUNK):
        size = min(CHUNK, count - offset)
        lines = bot_lines(size, first + offset * step, step, prefix=f"s{offset}")
        daemon.cli("create", "--from", "-", "-q", input=jsonl(lines))
        done = offset + size
        elapsed = time.perf_counter() - started
        log(f"populated {done:,}/{count:,} in {elapsed:.0f}s ({done / elapsed:,.0f} bots/s), "
            f"RSS {daemon.rss_mb():.0f} MB")
    return time.perf_counter() - started


def request_s(daemon: BenchDaemon, op: str, **args: object) -> float:
    """One request's round trip over an already open connection (no CLI start-up)."""
    with daemon.connect() as conn:
        started = time.perf_counter()
        conn.call(op, **args)
        return time.perf_counter() - started


def side_by_side(full: BenchDaemon, empty: BenchDaemon, samples: int) -> dict[str, float]:
    """Medians of the CLI and request timings on both daemons, alternated round by round."""
    times: dict[str, list[float]] = {}
    for _ in range(samples):
        for name, daemon in (("full", full), ("empty", empty)):
            times.setdefault(f"create_{name}", []).append(daemon.time_cli(*CREATE_ARGV))
            times.setdefault(f"list_{name}", []).append(daemon.time_cli(*LIST_ARGV))
            times.setdefault(f"list_req_{name}", []).append(request_s(daemon, "list", states=["staged"], limit=100))
    med = {key: statistics.median(values) * 1000 for key, values in times.items()}
    med["create_ratio"] = med["create_full"] / med["create_empty"]
    return med


def restart(daemon: BenchDaemon) -> dict[str, float]:
    """``daemon stop`` then ``daemon start`` (which returns once the socket answers) + a ping."""
    stop_s = daemon.stop()
    start_s = daemon.start()
    ping_s = request_s(daemon, "ping")
    return {"stop_s": stop_s, "start_s": start_s + ping_s, "restart_s": stop_s + start_s + ping_s,
            "rss_restart": daemon.rss_mb()}


def metrics(count: int) -> list[Metric]:
    n = f"{count:,}"
    return [
        Metric("populate_s", f"populate {n} bots (create --from, 100k chunks)", "s"),
        Metric("populate_rate", "populate rate", "bots/s", digits=0),
        Metric("db_mb", "database + WAL on disk", "MB", digits=0),
        Metric("rss_empty", "daemon RSS, empty store", "MB"),
        Metric("rss_populated", f"daemon RSS after populating {n}", "MB", at_most=150),
        Metric("rss_restart", f"daemon RSS after a restart with {n}", "MB", at_most=150),
        Metric("stop_s", "daemon stop", "s", digits=2),
        Metric("start_s", "daemon start until it answers", "s", digits=2),
        Metric("restart_s", "daemon stop + start until it answers", "s", at_most=2, digits=2),
        Metric("create_empty", "create -q median wall, empty store", "ms"),
        Metric("create_full", f"create -q median wall, {n} bots", "ms"),
        Metric("create_ratio", f"create -q at {n} / empty", "×", at_most=1.2, digits=2),
        Metric("list_full", f"list --state staged --json wall, {n} bots", "ms", at_most=100),
        Metric("list_empty", "list --state staged --json wall, empty store", "ms"),
        Metric("list_req_full", f"list staged request alone, {n} bots", "ms", digits=2),
        Metric("list_req_empty", "list staged request alone, empty store", "ms", digits=2),
    ]


def main() -> int:
    parser = bench_args(__doc__.split("\n")[0])
    parser.add_argument("--bots", type=int, default=1_000_000, help="bots to populate (default 1,000,000)")
    parser.add_argument("--samples", type=int, default=20, help="CLI timings per command and store (default 20)")
    args = parser.parse_args()
    with BenchDaemon() as full, BenchDaemon() as empty:
        values: dict[str, float | None] = {"rss_empty": full.rss_mb()}
        log(f"populating {args.bots:,} bots in {full.home}")
        values["populate_s"] = populate(full, args.bots)
        values["populate_rate"] = args.bots / values["populate_s"]
        values["rss_populated"] = full.rss_mb()
        values["db_mb"] = sum(p.stat().st_size for p in full.home.glob("botsched.db*")) / 2**20
        runs: list[dict[str, float | None]] = []
        for run in range(1, args.runs + 1):
            log(f"run {run}/{args.runs}: restart, then {args.samples} timings per command on both stores")
            runs.append({**restart(full), **side_by_side(full, empty, args.samples)})
        values.update(median_of_runs(runs))
    report("botsched at scale", metrics(args.bots), values, as_json=args.json, runs=args.runs,
           extra={"bots": args.bots},
           note=f"populating {args.bots:,} bots took {values['populate_s']:.0f} s; "
                "RSS after populating is measured right after the last chunk.")
    return 0


if __name__ == "__main__":
    main_guard(main)
