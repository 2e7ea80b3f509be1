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

``--webhook S`` (issue 14) runs each workload twice in the same invocation: as above, then
with one webhook endpoint whose receiver (``bench/webhooks.py``'s, its own process) answers
after S seconds, so the worker's every slot is held by a slow send during the joins. The
two rows side by side show whether deliveries delay the joins; the deliveries still
pending at the end are reported too (the slow receiver drains them long after).
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
    iso_us,
    log,
    main_guard,
    median_of_runs,
    now_us,
    parse_iso_us,
    report,
    summary_ms,
)

PROBE = BENCH_DIR / "runner_probe.py"

#: The runner-side probe in C (issue 12): it notes CLOCK_REALTIME the instant its read of
#: stdin returns ``join`` (no interpreter between the pipe and the clock), writes the same
#: file as runner_probe.py, and with "flood" in its metadata prints lines flat out after
#: joining until told to leave.
C_PROBE = r"""
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <fcntl.h>
/* 37 ms: past a burst's last read (~6 ms), and not a multiple of a spread's 50 ms spacing, so
   one probe's bookkeeping never lands on the next bot's join instant (at 50 ms it did). */
#define DEFER_US 37000
int main(void) {
    char buf[4096]; const char *out = getenv("BENCH_OUT"), *id = getenv("BOTSCHED_BOT_ID");
    const char *join_at = getenv("BOTSCHED_JOIN_AT"), *meta = getenv("BOTSCHED_METADATA");
    int flood = meta && strstr(meta, "flood") != NULL;
    const char *deferred = getenv("BENCH_DEFER");  /* "all": file and state line; "state": the line */
    int defer = deferred && !strcmp(deferred, "all"), defer_state = deferred && !strcmp(deferred, "state");
    for (;;) {
        ssize_t n = read(0, buf, sizeof buf - 1);
        if (n <= 0) return 0;
        struct timespec ts; clock_gettime(CLOCK_REALTIME, &ts);
        buf[n] = 0;
        if (strstr(buf, "join")) {
            char path[4096], tmp[4096];
            if (defer) usleep(DEFER_US);  /* --defer-probe: no work of its own while others wait for a CPU */
            snprintf(path, sizeof path, "%s/%s", out, id); snprintf(tmp, sizeof tmp, "%s/.%s.tmp", out, id);
            FILE *f = fopen(tmp, "w");
            if (f) { fprintf(f, "%lld\n%s\n", (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec, join_at);
                     fclose(f); rename(tmp, path); }
            if (defer_state) usleep(DEFER_US);
            write(1, "state joined_recording\n", 23);
            if (flood) {
                char line[64 * 1024]; size_t len = 0;
                while (len + 60 < sizeof line) len += snprintf(line + len, sizeof line - len,
                                                               "a runner printing flat out, line %zu\n", len);
                fcntl(0, F_SETFL, O_NONBLOCK);
                for (;;) { if (read(0, buf, sizeof buf) > 0) return 0; if (write(2, line, len) < 0) usleep(1000); }
            }
            if (!defer && !defer_state) usleep(50000);
            return 0;
        }
        if (strstr(buf, "leave")) return 0;
    }
}
"""


def build_c_probe(directory: Path) -> Path | None:
    """Compile the C probe with gcc into ``directory``; None (and a note) without gcc."""
    import shutil
    import subprocess

    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        log("no gcc: using the Python probe (bench/runner_probe.py)")
        return None
    source = directory / "probe.c"
    source.write_text(C_PROBE)
    binary = directory / "probe"
    subprocess.run([gcc, "-O2", "-o", str(binary), str(source)], check=True)
    return binary


TOMORROW = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86_400))


def load_worker(socket_path: str, connections: int, seconds: float) -> int:
    """``--load-worker``: ``connections`` sockets sending create, show, list flat out."""
    import json as json_mod

    async def one(n: int) -> int:
        reader, writer = await asyncio.open_unix_connection(socket_path, limit=1 << 24)
        done = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            writer.write(json_mod.dumps({"v": 1, "op": "create", "args": {
                "meeting_url": f"https://zoom.us/j/{n}{done}", "join_at": TOMORROW}}).encode() + b"\n")
            bot = json_mod.loads(await reader.readline())
            bot_id = bot.get("result", {}).get("id", "bot_AAAAAAAAAAAAAAAA")
            writer.write(json_mod.dumps({"v": 1, "op": "show", "args": {"id": bot_id}}).encode() + b"\n")
            await reader.readline()
            writer.write(json_mod.dumps({"v": 1, "op": "list", "args": {"limit": 20}}).encode() + b"\n")
            await reader.readline()
            done += 3
        writer.close()
        return done

    async def main() -> int:
        return sum(await asyncio.gather(*(one(n) for n in range(connections))))

    print(asyncio.run(main()))
    return 0


#: Runs its argv, output discarded; prints its wall seconds and peak RSS (KB). A child's peak
#: RSS counts the memory of the process it was forked from (before its exec): forked from
#: this benchmark, which holds 100,000 bots' lines, every child would show ~220 MB.
_TIMED_CHILD = """
import os, subprocess, sys, time
started = time.perf_counter()
child = subprocess.Popen(sys.argv[1:], stdout=subprocess.DEVNULL)
_, status, usage = os.wait4(child.pid, 0)
print(time.perf_counter() - started, usage.ru_maxrss)
sys.exit(os.waitstatus_to_exitcode(status))
"""


class Lister(threading.Thread):
    """``--list-during N``: ``botsched list --json --limit 0`` (output discarded) over and
    over from ``start_us`` until ``end_us``; its wall time and the client's peak RSS."""

    def __init__(self, daemon: BenchDaemon, start_us: int, end_us: int) -> None:
        super().__init__(daemon=True)
        self.daemon_ = daemon
        self.start_us, self.end_us = start_us, end_us
        self.walls: list[float] = []
        self.peak_kb = 0
        self.start()

    def run(self) -> None:
        import subprocess

        from _common import BOTSCHED

        time.sleep(max(0.0, (self.start_us - now_us()) / US))
        while not self.walls or now_us() < self.end_us:
            done = subprocess.run([sys.executable, "-c", _TIMED_CHILD, BOTSCHED, "list", "--json", "--limit", "0"],
                                  env=self.daemon_.env, stdout=subprocess.PIPE, check=True)
            wall, peak_kb = done.stdout.split()
            self.walls.append(float(wall))
            self.peak_kb = max(self.peak_kb, int(peak_kb))

    def figures(self) -> dict[str, float | None]:
        self.join(timeout=300)
        return {"list_s": max(self.walls, default=None), "list_rss_mb": self.peak_kb / 1024 or None}


class Load:
    """``--load N``: N connections in up to 4 client processes, for the length of a run."""

    def __init__(self, daemon: BenchDaemon, connections: int, seconds: float) -> None:
        import subprocess

        self.procs: list[Any] = []
        self.seconds = seconds
        if connections <= 0:
            return
        workers = min(4, connections)
        for w in range(workers):
            share = connections // workers + (1 if w < connections % workers else 0)
            self.procs.append(subprocess.Popen(
                [sys.executable, __file__, "--load-worker", str(daemon.paths.socket), str(share), str(seconds)],
                stdout=subprocess.PIPE, env=daemon.env))

    def requests_per_s(self) -> float | None:
        if not self.procs:
            return None
        total = sum(int((p.communicate(timeout=self.seconds + 60)[0] or b"0").split()[-1]) for p in self.procs)
        return total / self.seconds


@dataclass(frozen=True)
class Workload:
    mode: str  # "spread" or "burst"
    bots: int
    window_s: float  # spread: join_at evenly over this many seconds
    runner: str = "simulate"  # or "command"
    stage_lead_s: float = 2.0
    load: int = 0  # client connections sending create/show/list during the run
    flood: bool = False  # one more command bot that prints flat out from before the joins
    list_during: int = 0  # this many more bots (far away), and `list --json --limit 0` of them in a loop
    probe: str | None = None  # the runner binary (the C probe), else runner_probe.py
    webhook_s: float | None = None  # one webhook endpoint whose receiver answers after this long
    defer: str = ""  # the C probe sleeps before its own bookkeeping: "all" or "state" (--defer-probe)
    dump: str | None = None  # append each bot's runner-side read (join_at, ms late) to this file
    #: The first join_at is this long after stage_lead from now: time to create them all.
    margin_s: float = 3.0

    @property
    def name(self) -> str:
        name = self.mode if self.runner == "simulate" else f"{self.mode}-command"
        return (name + (f"-load{self.load}" if self.load else "") + ("-flood" if self.flood else "")
                + (f"-list{self.list_during}" if self.list_during else "")
                + (f"-webhook{self.webhook_s:g}s" if self.webhook_s is not None else "")
                + ("" if self.defer == "all" or self.runner != "command" else f"-defer-{self.defer or 'none'}"))


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
        config["runner.command"] = [work.probe] if work.probe else [sys.executable, str(PROBE)]
        config["runner.env"] = {"BENCH_OUT": str(home / "probe"), **({"BENCH_DEFER": work.defer} if work.defer else {})}
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


def probe_lateness_ms(probe_dir: Path, flood_join_at: str | None = None) -> list[float]:
    """What ``runner_probe.py`` wrote: read time (ns) and ``BOTSCHED_JOIN_AT``, per bot."""
    late: list[float] = []
    for path in probe_dir.iterdir():
        if path.name.startswith("."):
            continue
        read_ns, join_at = path.read_text().split("\n")[:2]
        if join_at == flood_join_at:
            continue
        late.append((int(read_ns) / 1000 - parse_iso_us(join_at)) / 1000)
    return late


def probe_reads(probe_dir: Path) -> list[tuple[float, str]]:
    """(lateness ms, join_at) per probe file."""
    found: list[tuple[float, str]] = []
    for path in probe_dir.iterdir():
        if path.name.startswith("."):
            continue
        read_ns, join_at = path.read_text().split("\n")[:2]
        found.append(((int(read_ns) / 1000 - parse_iso_us(join_at)) / 1000, join_at))
    return found


def run_once(work: Workload, observe: bool = False) -> dict[str, float | None]:
    """One fresh daemon, one workload; the figures in ms (keys as in ``metrics()``)."""
    import contextlib

    with contextlib.ExitStack() as stack:
        daemon = stack.enter_context(BenchDaemon(lambda home: daemon_config(work, home)))
        receiver = None
        if work.webhook_s is not None:
            from webhooks import Receiver

            receiver = stack.enter_context(Receiver(work.webhook_s))
            daemon.cli("webhook", "add", receiver.url)
        probe_dir = daemon.home / "probe"
        probe_dir.mkdir()
        first_us = now_us() + int((work.stage_lead_s + work.margin_s) * US)
        step_us = 0 if work.mode == "burst" else int(work.window_s * US / max(work.bots - 1, 1))
        items = list(bot_lines(work.bots, first_us, step_us, prefix=work.name))
        if work.flood:  # joins before the others stage, then prints until the run ends
            flood_at = now_us() + int(work.stage_lead_s * US) + 500_000
            items.append({"meeting_url": "https://zoom.us/j/999", "join_at": iso_us(flood_at),
                          "metadata": {"flood": "yes"}})
        watcher = JoinWatcher(daemon) if observe else None
        load = None
        lister = None
        if work.list_during:
            far = now_us() + 30 * 86_400 * US
            daemon.create_many(list(bot_lines(work.list_during, far, 1000, prefix="far")))
            first_us = max(first_us, now_us() + int((work.stage_lead_s + 1) * US))
            items = list(bot_lines(work.bots, first_us, step_us, prefix=work.name))
        try:
            started = time.perf_counter()
            daemon.create_many(items)
            expected = work.bots + (1 if work.flood else 0)
            create_s = time.perf_counter() - started
            if now_us() > first_us - work.stage_lead_s * US:
                log(f"warning: creating took {create_s:.1f}s, past the first stage time; raise margin_s")
            last_us = first_us + (work.bots - 1) * step_us
            log(f"{work.name}: {work.bots} bots created in {create_s * 1000:.0f} ms; joins in "
                f"{(first_us - now_us()) / US:.1f}s, over {(last_us - first_us) / US:.1f}s")
            if work.load:
                load = Load(daemon, work.load, (last_us - now_us()) / US + 0.5)
            if work.list_during:
                lister = Lister(daemon, first_us - 300_000, last_us + 300_000)
            time.sleep(max(0.0, (last_us - now_us()) / US + 0.3))
            limit = 30 + work.bots * 0.05
            rate = load.requests_per_s() if load is not None else None
            if work.flood:
                flooder = [b for b in daemon.call("list", states=["joined_recording"], limit=0)["bots"]
                           if b["meeting_url"].endswith("/999")]
                for bot in flooder:
                    daemon.call("leave", id=bot["id"])
            # (load and --list-during add bots far away: those stay scheduled)
            daemon.wait_until(lambda c: c["staged"] == 0 and (work.load > 0 or c["scheduled"] <= work.list_during),
                              timeout=limit)
            if work.runner == "command":
                _wait_for_probes(daemon, probe_dir, expected, limit)
            bots = [b for b in daemon.call("list", states=[], limit=0)["bots"]
                    if not b["meeting_url"].endswith("/999") and b["state"] != "scheduled"]
        finally:
            if watcher is not None:
                watcher.close()
        figures = {**_figures(work, bots, probe_dir, watcher), "create_ms": create_s * 1000}
        if rate is not None:
            figures["load_rps"] = rate
        if lister is not None:
            figures.update(lister.figures())
        if receiver is not None:
            import json

            [row] = json.loads(daemon.cli("webhook", "list", "--json").stdout)
            figures["webhook_sent"] = float(receiver.count)
            figures["webhook_pending"] = float(row["deliveries"]["pending"])
        if work.flood:
            figures["flood_log_mb"] = sum(p.stat().st_size for p in daemon.paths.runner_logs.glob("*.log*")) / 1e6
        return figures


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
        wanted = {b["join_at"] for b in bots}
        reads = sorted((at, ms) for ms, at in probe_reads(probe_dir) if at in wanted)
        read = [ms for _, ms in reads]
        if work.dump:
            with open(work.dump, "a") as out:
                out.writelines(f"{work.name}\t{at}\t{ms:.3f}\n" for at, ms in reads)
        figures.update(summary_ms(read, "read"))
        if work.mode == "burst" and read:
            figures["read_last"] = max(read)
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
            Metric(p + "read_p99", f"{work.name}: runner reads join, p99", "ms", digits=2),
            Metric(p + "read_max", f"{work.name}: runner reads join, max", "ms", digits=2),
        ]
        if work.mode == "burst":
            rows.append(Metric(p + "read_last", f"{work.name}: last runner reads join", "ms", digits=2))
    if work.load:
        rows.append(Metric(p + "load_rps", f"{work.name}: load served meanwhile", "req/s", digits=0))
    if work.list_during:
        rows.append(Metric(p + "list_s", f"{work.name}: one list --json --limit 0 (slowest)", "s", digits=2))
        rows.append(Metric(p + "list_rss_mb", f"{work.name}: peak RSS of the list client", "MB",
                           digits=0))
    if work.webhook_s is not None:
        rows.append(Metric(p + "webhook_sent", f"{work.name}: webhook requests answered by the end", "req",
                           digits=0))
        rows.append(Metric(p + "webhook_pending", f"{work.name}: deliveries still pending at the end", "dlv",
                           digits=0))
    if work.flood:
        rows.append(Metric(p + "flood_log_mb", f"{work.name}: runner logs on disk at the end", "MB", digits=1))
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
    parser.add_argument("--burst", action="store_true", help="same as --mode burst")
    parser.add_argument("--load", type=int, default=0,
                        help="N client connections sending create/show/list flat out during each run")
    parser.add_argument("--flood", action="store_true",
                        help="--runner command: one more bot whose runner prints flat out during the joins")
    parser.add_argument("--list-during", type=int, default=0, metavar="N",
                        help="create N more bots far away and run list --json --limit 0 of them during the joins")
    parser.add_argument("--probe", choices=["c", "python"], default="c",
                        help="--runner command: the runner-side probe (default c: compiled with gcc; "
                             "python: bench/runner_probe.py)")
    parser.add_argument("--defer-probe", choices=["all", "state", "none"], default="all",
                        help="--probe c: stamp the read of join, then sleep 37 ms before its own bookkeeping "
                             "(all, the default: result file and state line; state: the state line only; none: "
                             "the pre-issue-12 probe, whose file writes delay the probes still waiting for a CPU)")
    parser.add_argument("--dump", metavar="FILE",
                        help="--runner command: append each bot's runner-side read to FILE (workload, join_at, "
                             "ms late; one line per bot per run), to see which joins make the tail")
    parser.add_argument("--control", action="store_true",
                        help="after each spread run, hit the same instants with a bare asyncio loop (machine floor)")
    parser.add_argument("--webhook", type=float, default=None, metavar="S",
                        help="run each workload again with a webhook endpoint whose receiver answers after S s")
    args = parser.parse_args()
    chosen = "burst" if args.burst else args.mode or ("both" if args.runner == "simulate" else "spread")
    import tempfile

    build = Path(tempfile.mkdtemp(prefix="botsched-probe-"))
    probe = build_c_probe(build) if args.runner == "command" and args.probe == "c" else None
    modes = ["spread", "burst"] if chosen == "both" else [chosen]
    values: dict[str, float | None] = {}
    shown: list[Metric] = []
    for mode in modes:
        work = replace(default_workload(mode, args.runner, args.bots, args.window), stage_lead_s=args.stage_lead,
                       load=args.load, flood=args.flood, probe=str(probe) if probe else None,
                       list_during=args.list_during, dump=args.dump,
                       defer="" if args.defer_probe == "none" else args.defer_probe)
        control = args.control and mode == "spread"
        variants = [work] if args.webhook is None else [work, replace(work, webhook_s=args.webhook)]
        for variant in variants:
            values.update(measure(variant, args.runs, args.observe, control))
            shown += metrics(variant, args.observe, control)
    import os
    import shutil

    shutil.rmtree(build, ignore_errors=True)
    load_avg = " ".join(f"{x:.2f}" for x in os.getloadavg())
    report("botsched punctuality", shown, values, as_json=args.json, runs=args.runs,
           note="joining − join_at uses the event's `at`, stamped when the join is sent; 'runner reads join' "
                f"is the runner's own CLOCK_REALTIME (the honest figure). Load average at the end: {load_avg}.")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--load-worker":
        sys.exit(load_worker(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    main_guard(main)
