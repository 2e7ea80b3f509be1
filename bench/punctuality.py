"""How close to ``join_at`` do bots join? (issue 4's first three rows)

Workloads, each in a fresh daemon:

- ``spread``: 1,000 bots with join_at evenly over 20 s, simulate runner.
  Lateness = the ``joining`` event's ``at`` − ``join_at``. Targets: p99 ≤ 2 ms, max ≤ 10 ms.
- ``burst``: 1,000 bots with one join_at. Target: the last ``joining`` ≤ 20 ms after it.
- ``--runner command``: 100 bots (over 10 s, or at once with ``--mode burst``) run by
  ``bench/runner_probe.py``, which records when it *reads* ``join`` on stdin: the
  lateness a real bot sees. Target p99 ≤ 10 ms.

Bots are created in one ``create_many`` request, early enough that every one is created
before its stage time (``stage_lead`` = 2 s by default), so staging, the exact-time wake-up
and the join path are all inside the measurement.

``--control`` first runs a bare asyncio loop (no daemon, no database) that naps and then
spins to the same instants the way the scheduler does: its lateness is what this machine
allows right now, so a busy machine's noise can be told apart from the daemon's own cost.

``--observe`` (on by default) also follows ``events --follow`` and reports when each ``joining`` reached a
client: that adds the durable commit and the fan-out, which the ``at`` stamp (taken when
the join is signalled) does not include.
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    BENCH_DIR,
    US,
    BenchDaemon,
    Metric,
    bench_args,
    bot_lines,
    log,
    main_guard,
    median_of_runs,
    now_us,
    parse_iso_us,
    report,
    summary_ms,
)

PROBE = BENCH_DIR / "runner_probe.py"


@dataclass(frozen=True)
class Workload:
    mode: str  # "spread" or "burst"
    bots: int
    window_s: float  # spread: join_at evenly over this many seconds
    runner: str = "simulate"  # or "command"
    stage_lead_s: float = 2.0
    #: The first join_at is this long after stage_lead from now: time to create them all.
    margin_s: float = 3.0

    @property
    def name(self) -> str:
        return self.mode if self.runner == "simulate" else f"{self.mode}-command"


def default_workload(mode: str, runner: str, bots: int | None = None, window_s: float | None = None) -> Workload:
    """The issue's sizes: 1,000 simulated bots over 20 s, or 100 command bots over 10 s."""
    if runner == "command":
        return Workload(mode, bots or 100, window_s or 10.0, runner)
    return Workload(mode, bots or 1000, window_s or 20.0, runner)


def daemon_config(work: Workload, home: Path) -> dict[str, Any]:
    config: dict[str, Any] = {
        "scheduler.stage_lead_seconds": work.stage_lead_s,
        "runner.kind": work.runner,
        # Every bot may hold a runner at once: the cap is not what is measured here.
        "runner.max_concurrent": max(50, work.bots + 10),
    }
    if work.runner == "command":
        config["runner.command"] = [sys.executable, str(PROBE)]
        config["runner.env"] = {"BENCH_OUT": str(home / "probe")}
    return config


class JoinWatcher:
    """Follows ``events --follow`` on its own connection and notes, per bot, when its
    ``joining`` event arrived (wall-clock µs)."""

    def __init__(self, daemon: BenchDaemon) -> None:
        self.seen_us: dict[str, int] = {}
        self._conn = daemon.connect()
        self._thread = threading.Thread(target=self._follow, daemon=True)
        self._thread.start()

    def _follow(self) -> None:
        try:
            for event in self._conn.stream("events", follow=True):
                if event.get("state") == "joining":
                    self.seen_us[event["bot_id"]] = now_us()
        except Exception:  # noqa: BLE001 - the stream ends when we shut the socket down
            pass

    def close(self) -> None:
        try:
            self._conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._thread.join(timeout=5)
        self._conn.close()


def _event_at(bot: dict[str, Any], state: str, last: bool = False) -> int | None:
    found = [parse_iso_us(e["at"]) for e in bot["events"] if e["state"] == state]
    if not found:
        return None
    return found[-1] if last else found[0]


def probe_lateness_ms(probe_dir: Path) -> list[float]:
    """What ``runner_probe.py`` wrote: read time (ns) and ``BOTSCHED_JOIN_AT``, per bot."""
    late: list[float] = []
    for path in probe_dir.iterdir():
        if path.name.startswith("."):
            continue
        read_ns, join_at = path.read_text().split("\n")[:2]
        late.append((int(read_ns) / 1000 - parse_iso_us(join_at)) / 1000)
    return late


def run_once(work: Workload, observe: bool = False) -> dict[str, float | None]:
    """One fresh daemon, one workload; the figures in ms (keys as in ``metrics()``)."""
    with BenchDaemon(lambda home: daemon_config(work, home)) as daemon:
        probe_dir = daemon.home / "probe"
        probe_dir.mkdir()
        first_us = now_us() + int((work.stage_lead_s + work.margin_s) * US)
        step_us = 0 if work.mode == "burst" else int(work.window_s * US / max(work.bots - 1, 1))
        items = list(bot_lines(work.bots, first_us, step_us, prefix=work.name))
        watcher = JoinWatcher(daemon) if observe else None
        try:
            started = time.perf_counter()
            daemon.create_many(items)
            create_s = time.perf_counter() - started
            if now_us() > first_us - work.stage_lead_s * US:
                log(f"warning: creating took {create_s:.1f}s, past the first stage time; raise margin_s")
            last_us = first_us + (work.bots - 1) * step_us
            log(f"{work.name}: {work.bots} bots created in {create_s * 1000:.0f} ms; joins in "
                f"{(first_us - now_us()) / US:.1f}s, over {(last_us - first_us) / US:.1f}s")
            time.sleep(max(0.0, (last_us - now_us()) / US + 0.3))
            limit = 30 + work.bots * 0.05
            daemon.wait_until(lambda c: c["scheduled"] + c["staged"] == 0, timeout=limit)
            if work.runner == "command":
                _wait_for_probes(daemon, probe_dir, work.bots, limit)
            bots = daemon.call("list", states=[], limit=0)["bots"]
        finally:
            if watcher is not None:
                watcher.close()
        return {**_figures(work, bots, probe_dir, watcher), "create_ms": create_s * 1000}


async def _hit_instants(instants_us: list[int], spin_s: float) -> list[float]:
    """Sleep to each instant in turn (nap on the loop, spin the last ``spin_s``): lateness in ms."""
    late: list[float] = []
    for target in instants_us:
        remaining = (target - now_us()) / US
        if remaining > spin_s:
            await asyncio.sleep(remaining - spin_s)
        while now_us() < target:
            pass
        late.append((now_us() - target) / 1000)
    return late


def control_once(work: Workload, spin_s: float = 0.002) -> dict[str, float | None]:
    """The spread schedule without botsched: the floor this machine sets at the moment."""
    first_us = now_us() + US
    step_us = 0 if work.mode == "burst" else int(work.window_s * US / max(work.bots - 1, 1))
    instants = [first_us + i * step_us for i in range(work.bots)]
    return summary_ms(asyncio.run(_hit_instants(instants, spin_s)), "control")


def _wait_for_probes(daemon: BenchDaemon, probe_dir: Path, expected: int, timeout: float) -> None:
    """Until every probe has written its file, or every bot is past the join anyway."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sum(1 for p in probe_dir.iterdir() if not p.name.startswith(".")) >= expected:
            return
        counts = daemon.counts()
        if counts["joining"] == 0 and counts["staged"] == 0 and counts["scheduled"] == 0:
            time.sleep(0.5)  # the stragglers' files, if any, land now
            return
        time.sleep(0.2)
    log("warning: not every runner probe reported in time")


def _figures(work: Workload, bots: list[dict[str, Any]], probe_dir: Path,
             watcher: JoinWatcher | None) -> dict[str, float | None]:
    join_us = {b["id"]: parse_iso_us(b["join_at"]) for b in bots}
    late_ms: list[float] = []
    for bot in bots:
        joined = _event_at(bot, "joining")
        if joined is not None:
            late_ms.append((joined - join_us[bot["id"]]) / 1000)
    figures: dict[str, float | None] = {
        **summary_ms(late_ms, "late"),
        "missed": float(work.bots - len(late_ms)),
        "fatal": float(sum(b["state"] == "fatal_error" for b in bots)),
    }
    if work.mode == "burst" and late_ms:
        figures["last_ms"] = max(late_ms)
    if work.runner == "command":
        figures.update(summary_ms(probe_lateness_ms(probe_dir), "read"))
    if watcher is not None:
        seen = [(t - join_us[i]) / 1000 for i, t in watcher.seen_us.items() if i in join_us]
        figures.update(summary_ms(seen, "seen"))
    return figures


def metrics(work: Workload, observe: bool = False, control: bool = False) -> list[Metric]:
    """What to show for a workload, with the issue's targets."""
    p = f"{work.name}."
    rows: list[Metric] = []
    if work.runner == "command":
        rows += [
            Metric(p + "read_p50", f"{work.name}: runner reads join, p50", "ms", digits=2),
            Metric(p + "read_p99", f"{work.name}: runner reads join, p99", "ms", at_most=10, digits=2),
            Metric(p + "read_max", f"{work.name}: runner reads join, max", "ms", digits=2),
        ]
    rows += [
        Metric(p + "late_p50", f"{work.name}: joining − join_at, p50", "ms", digits=2),
        Metric(p + "late_p99", f"{work.name}: joining − join_at, p99", "ms",
               at_most=2 if work.mode == "spread" and work.runner == "simulate" else None, digits=2),
    ]
    if work.mode == "burst":
        rows.append(Metric(p + "last_ms", f"{work.name}: last joining − join_at", "ms",
                           at_most=20 if work.runner == "simulate" else None, digits=2))
    else:
        rows.append(Metric(p + "late_max", f"{work.name}: joining − join_at, max", "ms",
                           at_most=10 if work.runner == "simulate" else None, digits=2))
    if observe:
        rows += [
            Metric(p + "seen_p50", f"{work.name}: seen by a follower, p50", "ms", digits=2),
            Metric(p + "seen_p99", f"{work.name}: seen by a follower, p99", "ms", digits=2),
            Metric(p + "seen_max", f"{work.name}: seen by a follower, max", "ms", digits=2),
        ]
    if control:
        rows += [
            Metric(p + "control_p50", f"{work.name}: control, bare loop, p50", "ms", digits=2),
            Metric(p + "control_p99", f"{work.name}: control, bare loop, p99", "ms", digits=2),
            Metric(p + "control_max", f"{work.name}: control, bare loop, max", "ms", digits=2),
        ]
    rows += [
        Metric(p + "missed", f"{work.name}: bots that never joined", "bots", at_most=0, digits=0),
        Metric(p + "create_ms", f"{work.name}: creating the {work.bots:,} (one create_many)", "ms", digits=0),
    ]
    return rows


def measure(work: Workload, runs: int, observe: bool = False, control: bool = False) -> dict[str, float | None]:
    """Median over ``runs`` fresh runs, keys prefixed with the workload's name."""
    results = []
    for number in range(1, runs + 1):
        log(f"{work.name}: run {number}/{runs}")
        result = run_once(work, observe)
        if control:
            log(f"{work.name}: run {number}/{runs}: control (bare asyncio loop, same instants)")
            result.update(control_once(work))
        results.append(result)
    return {f"{work.name}.{k}": v for k, v in median_of_runs(results).items()}


def main() -> int:
    parser = bench_args(__doc__.split("\n")[0])
    parser.add_argument("--mode", choices=["spread", "burst", "both"],
                        help="default: both with the simulate runner, spread with --runner command (the issue's row)")
    parser.add_argument("--runner", choices=["simulate", "command"], default="simulate",
                        help="command: bench/runner_probe.py as the bot (default: simulate)")
    parser.add_argument("--bots", type=int, help="bots per workload (default 1,000; 100 with --runner command)")
    parser.add_argument("--window", type=float, help="spread: seconds the join times cover (default 20; 10)")
    parser.add_argument("--stage-lead", type=float, default=2.0, help="scheduler.stage_lead_seconds (default 2)")
    parser.add_argument("--observe", action=argparse.BooleanOptionalAction, default=True,
                        help="also time when each joining event reaches an events --follow client (default on)")
    parser.add_argument("--control", action="store_true",
                        help="after each spread run, hit the same instants with a bare asyncio loop (machine floor)")
    args = parser.parse_args()
    chosen = args.mode or ("both" if args.runner == "simulate" else "spread")
    modes = ["spread", "burst"] if chosen == "both" else [chosen]
    values: dict[str, float | None] = {}
    shown: list[Metric] = []
    for mode in modes:
        work = replace(default_workload(mode, args.runner, args.bots, args.window), stage_lead_s=args.stage_lead)
        control = args.control and mode == "spread"
        values.update(measure(work, args.runs, args.observe, control))
        shown += metrics(work, args.observe, control)
    report("botsched punctuality", shown, values, as_json=args.json, runs=args.runs,
           note="joining − join_at uses the event's `at`, stamped when the scheduler signals the join.")
    return 0


if __name__ == "__main__":
    main_guard(main)
