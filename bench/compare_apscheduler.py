"""botsched vs APScheduler 3.x on the same punctuality workloads (issue 4's last row).

APScheduler runs with its SQLAlchemy SQLite job store and its defaults (thread pool of
10, ``misfire_grace_time`` = 1 s, no coalescing): the configuration a user gets by
following its docs for durable jobs. Each of its jobs notes the wall clock when it starts
running; lateness is that minus the job's run date. Jobs it skips as misfired are counted
as dropped. botsched's figures come from ``punctuality.py``'s workloads, measured in the
same invocation, run for run alternately with APScheduler's, so both see the same machine.

Optional: needs ``pip install 'apscheduler<4' sqlalchemy`` (it exits 0 with that hint
when they are missing).
"""

from __future__ import annotations

import logging
import shutil
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    US,
    Metric,
    bench_args,
    format_table,
    log,
    machine,
    main_guard,
    median_of_runs,
    now_us,
    scratch_dir,
    summary_ms,
    verdict_mark,
)
from punctuality import Workload, default_workload, run_once

INSTALL_HINT = "pip install 'apscheduler<4' sqlalchemy"

_ran: list[tuple[int, int]] = []  # (scheduled µs, started µs), appended from worker threads
_ran_lock = threading.Lock()


def job(scheduled_us: int) -> None:
    """What every APScheduler job does: note when it started (module-level, so the
    SQLAlchemy store can keep a textual reference to it)."""
    started = now_us()
    with _ran_lock:
        _ran.append((scheduled_us, started))


def apscheduler_version() -> str | None:
    """The installed 3.x version, or None (after saying why) when it cannot be used."""
    try:
        import apscheduler
        import sqlalchemy  # noqa: F401
    except ImportError as exc:
        print(f"APScheduler comparison skipped: {exc.name} is not installed.\n"
              f"Install it into this environment with:  {INSTALL_HINT}")
        return None
    version = getattr(apscheduler, "__version__", None) or _dist_version("apscheduler")
    if not version.startswith("3."):
        print(f"APScheduler comparison skipped: found APScheduler {version}; this compares with 3.x "
              f"(its stable, widely used line).\nInstall it with:  {INSTALL_HINT}")
        return None
    return version


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def run_apscheduler(work: Workload) -> dict[str, float | None]:
    """The workload on APScheduler: add every job durably, then wait for runs and misfires."""
    from apscheduler.events import EVENT_JOB_MISSED
    from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
    from apscheduler.schedulers.background import BackgroundScheduler

    logging.getLogger("apscheduler").setLevel(logging.ERROR)  # one "was missed" line per dropped job
    workdir = scratch_dir()
    scheduler = BackgroundScheduler(
        jobstores={"default": SQLAlchemyJobStore(url=f"sqlite:///{workdir / 'jobs.sqlite'}")},
        timezone=UTC,
    )
    missed = 0

    def on_missed(event: Any) -> None:
        nonlocal missed
        missed += 1

    scheduler.add_listener(on_missed, EVENT_JOB_MISSED)
    _ran.clear()
    try:
        scheduler.start(paused=True)
        # Its durable adds are slow (one transaction each): leave time for them.
        first_us = now_us() + int((work.margin_s + work.bots / 100) * US)
        step_us = 0 if work.mode == "burst" else int(work.window_s * US / max(work.bots - 1, 1))
        started = time.perf_counter()
        for i in range(work.bots):
            when = first_us + i * step_us
            run_date = datetime.fromtimestamp(when // US, tz=UTC).replace(microsecond=when % US)
            scheduler.add_job(job, "date", run_date=run_date, args=[when], id=f"j{i}")
        add_s = time.perf_counter() - started
        if now_us() > first_us:
            log("warning: APScheduler was still adding jobs at the first run date")
        scheduler.resume()
        last_us = first_us + (work.bots - 1) * step_us
        deadline = time.monotonic() + (last_us - now_us()) / US + 30 + work.bots * 0.05
        while len(_ran) + missed < work.bots and time.monotonic() < deadline:
            time.sleep(0.2)
        time.sleep(0.5)  # let the last misfire events be counted
    finally:
        scheduler.shutdown(wait=False)
        shutil.rmtree(workdir, ignore_errors=True)
    with _ran_lock:
        late_ms = [(ran - due) / 1000 for due, ran in _ran]
    figures: dict[str, float | None] = {**summary_ms(late_ms, "late"), "missed": float(work.bots - len(late_ms)),
                                        "create_ms": add_s * 1000}
    if work.mode == "burst" and late_ms:
        figures["last_ms"] = max(late_ms)
    return figures


def rows_for(work: Workload) -> list[Metric]:
    """The compared figures (lower is better for all), with botsched's issue targets."""
    n = f"{work.bots:,}"
    rows = [
        Metric("late_p50", f"{work.mode}: lateness p50", "ms", digits=2),
        Metric("late_p99", f"{work.mode}: lateness p99", "ms", digits=2,
               at_most=2 if work.mode == "spread" else None),
    ]
    if work.mode == "burst":
        rows.append(Metric("last_ms", f"{work.mode}: last run − due time", "ms", at_most=20, digits=2))
    else:
        rows.append(Metric("late_max", f"{work.mode}: lateness max", "ms", at_most=10, digits=2))
    rows += [
        # botsched's stricter figure: the joining event as a client sees it, after the
        # durable commit (APScheduler has no equivalent, so that column stays n/a).
        Metric("seen_p99", f"{work.mode}: botsched joining seen by a follower, p99", "ms", digits=2),
        Metric("seen_max", f"{work.mode}: botsched joining seen by a follower, max", "ms", digits=2),
        Metric("missed", f"{work.mode}: dropped (never ran) of {n}", "", at_most=0, digits=0),
        Metric("create_ms", f"{work.mode}: time to schedule {n} durably", "ms", digits=0),
    ]
    return rows


def main() -> int:
    parser = bench_args(__doc__.split("\n")[0], runs=1)
    parser.add_argument("--mode", choices=["spread", "burst", "both"], default="both")
    parser.add_argument("--bots", type=int, help="jobs per workload (default 1,000)")
    parser.add_argument("--window", type=float, help="spread: seconds the run times cover (default 20)")
    args = parser.parse_args()
    version = apscheduler_version()
    if version is None:
        return 0
    modes = ["spread", "burst"] if args.mode == "both" else [args.mode]
    table: list[tuple[str, str, str, str, str]] = []
    results: list[dict[str, Any]] = []
    for mode in modes:
        work = default_workload(mode, "simulate", args.bots, args.window)
        ours: list[dict[str, float | None]] = []
        theirs: list[dict[str, float | None]] = []
        for number in range(1, args.runs + 1):
            log(f"{mode}: run {number}/{args.runs}: botsched")
            ours.append(run_once(work, observe=True))
            log(f"{mode}: run {number}/{args.runs}: APScheduler {version}")
            theirs.append(run_apscheduler(work))
        a, b = median_of_runs(ours), median_of_runs(theirs)
        for metric in rows_for(work):
            mine, other = a.get(metric.key), b.get(metric.key)
            ahead = None if mine is None or other is None else mine <= other
            results.append({"metric": f"{mode}.{metric.key}", "label": metric.label, "unit": metric.unit,
                            "botsched": mine, "apscheduler": other, "botsched_ahead": ahead,
                            "target": metric.target or None, "botsched_meets_target": metric.verdict(mine)})
            table.append((metric.label, metric.show(mine), metric.show(other), metric.target,
                          {True: "botsched", False: "APScheduler", None: ""}[ahead]))
    if args.json:
        import json

        json.dump({"benchmark": "botsched vs APScheduler", "apscheduler": version, "runs": args.runs,
                   "machine": machine(), "results": results}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    info = machine()
    print(f"botsched vs APScheduler {version} (SQLAlchemy SQLite job store, defaults)  "
          f"(median of {args.runs} run{'s' if args.runs != 1 else ''}; {info['cores']} cores, "
          f"load {info['load_average'][0]})")
    print(format_table(("metric", "botsched", f"APScheduler {version}", "botsched target", "ahead"), table))
    misses = [r["label"] for r in results if r["botsched_meets_target"] is False]
    if misses:
        print("botsched misses its target on: " + "; ".join(misses) + f"  ({verdict_mark(False)})")
    return 0


if __name__ == "__main__":
    main_guard(main)
