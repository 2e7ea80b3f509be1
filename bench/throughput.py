"""How many bots per second go in? (issue 4's throughput row)

(a) ``botsched create --from -`` of 100,000 JSON lines: bots/s over the whole command
    (client parsing and validation, the socket, one transaction). Target ≥ 20,000/s.
    For reference, the same bots as one ``create_many`` request with no CLI in front.
(b) 1,000 sequential ``botsched create -q URL --join-at +1h`` processes: creates/s as a
    shell loop sees it (interpreter start-up and imports dominate). Target ≥ 15/s.
(c) Requests over ONE socket connection (``botsched.client.connection.connect()``): ``create`` then
    ``show`` of that bot, in a loop. Target ≥ 2,000 requests/s; ``create`` alone and
    ``show`` alone are shown too, since each create is a durable commit and a show is not.

(d) 64 connections at once (``--connections``), each sending ``create`` (durable: answered
    only once committed) flat out from 4 client processes: requests/s. Target ≥ 4,000.

All in one daemon (default config); join times are days away so nothing stages.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

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

DAY_US = 86_400 * US


def bulk_cli(daemon: BenchDaemon, count: int, run: int) -> float:
    """(a) bots/s of ``create --from -`` with ``count`` lines."""
    data = jsonl(bot_lines(count, now_us() + DAY_US + run * 1000, 1000, prefix=f"cli{run}"))
    started = time.perf_counter()
    done = daemon.cli("create", "--from", "-", "-q", input=data)
    elapsed = time.perf_counter() - started
    created = done.stdout.count(b"\n")
    if created != count:
        raise RuntimeError(f"create --from printed {created} ids for {count} lines")
    return count / elapsed


def bulk_socket(daemon: BenchDaemon, count: int, run: int) -> float:
    """(a, reference) bots/s of one ``create_many`` request without the CLI."""
    items = list(bot_lines(count, now_us() + 2 * DAY_US + run * 1000, 1000, prefix=f"sock{run}"))
    started = time.perf_counter()
    ids = daemon.create_many(items)
    elapsed = time.perf_counter() - started
    assert len(ids) == count
    return count / elapsed


def sequential_cli(daemon: BenchDaemon, count: int) -> dict[str, float]:
    """(b) ``count`` one-at-a-time ``create -q`` processes, as a shell loop would run them."""
    started = time.perf_counter()
    latencies = [daemon.time_cli("create", "-q", MEETING_URL, "--join-at", "+1h") for _ in range(count)]
    elapsed = time.perf_counter() - started
    latencies.sort()
    return {"seq_rate": count / elapsed, "seq_median_ms": latencies[len(latencies) // 2] * 1000}


def _rate(seconds: float, step: Callable[[], int]) -> float:
    """Requests per second doing ``step`` (which returns how many requests it made)."""
    done = 0
    started = time.perf_counter()
    deadline = started + seconds
    while time.perf_counter() < deadline:
        done += step()
    return done / (time.perf_counter() - started)


def one_connection(daemon: BenchDaemon, seconds: float) -> dict[str, float]:
    """(c) requests/s over a single connection: mixed create+show, create alone, show alone."""
    fields: dict[str, Any] = {"meeting_url": MEETING_URL, "join_at": "+1d"}
    with daemon.connect() as conn:
        last: list[str] = [conn.call("create", **fields)[0]["id"]]

        def mixed() -> int:
            bot = conn.call("create", **fields)[0]
            conn.call("show", id=bot["id"])
            return 2

        def create() -> int:
            conn.call("create", **fields)
            return 1

        def show() -> int:
            conn.call("show", id=last[0])
            return 1

        return {"conn_mixed": _rate(seconds, mixed), "conn_create": _rate(seconds, create),
                "conn_show": _rate(seconds, show)}


def many_connections(daemon: BenchDaemon, connections: int, seconds: float) -> dict[str, float]:
    """(d) durable creates/s over ``connections`` sockets in up to 4 client processes."""
    import subprocess

    workers = min(4, connections)
    procs = []
    for w in range(workers):
        share = connections // workers + (1 if w < connections % workers else 0)
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--create-worker", str(daemon.paths.socket), str(share), str(seconds)],
            stdout=subprocess.PIPE, env=daemon.env))
    total = sum(int((p.communicate(timeout=seconds + 60)[0] or b"0").split()[-1]) for p in procs)
    return {"conns_create": total / seconds}


TOMORROW = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86_400))


def create_worker(socket_path: str, connections: int, seconds: float) -> int:
    """``--create-worker``: ``connections`` sockets sending create flat out; prints the count."""
    import asyncio
    import json

    line = json.dumps({"v": 1, "op": "create", "args": {"meeting_url": MEETING_URL,
                                                        "join_at": TOMORROW}}).encode() + b"\n"

    async def one() -> int:
        reader, writer = await asyncio.open_unix_connection(socket_path, limit=1 << 24)
        done = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            writer.write(line)
            reply = await reader.readline()
            if b'"ok":true' not in reply.replace(b" ", b""):
                raise RuntimeError(reply[:200])
            done += 1
        writer.close()
        return done

    async def main() -> int:
        return sum(await asyncio.gather(*(one() for _ in range(connections))))

    print(asyncio.run(main()))
    return 0


METRICS = [
    Metric("bulk_cli", "(a) create --from - (100k lines)", "bots/s", at_least=20_000, digits=0),
    Metric("bulk_socket", "(a) same as one create_many, no CLI", "bots/s", digits=0),
    Metric("seq_rate", "(b) sequential create -q processes", "creates/s", at_least=15),
    Metric("seq_median_ms", "(b) one create -q, median wall", "ms"),
    Metric("conn_mixed", "(c) one connection: create+show", "req/s", at_least=2000, digits=0),
    Metric("conn_create", "(c) one connection: create only", "req/s", digits=0),
    Metric("conn_show", "(c) one connection: show only", "req/s", digits=0),
    Metric("conns_create", "(d) 64 connections: durable creates", "req/s", at_least=4000, digits=0),
]


def main() -> int:
    parser = bench_args(__doc__.split("\n")[0], runs=1)
    parser.add_argument("--bulk", type=int, default=100_000, help="lines per bulk create (default 100,000)")
    parser.add_argument("--sequential", type=int, default=1000, help="create -q processes in (b) (default 1,000)")
    parser.add_argument("--seconds", type=float, default=3.0, help="length of each (c) loop (default 3 s)")
    parser.add_argument("--connections", type=int, default=64, help="connections in (d) (default 64)")
    parser.add_argument("--only", choices=["connections"], help="run only (c) and (d), not the bulk rows")
    args = parser.parse_args()
    METRICS[0] = Metric("bulk_cli", f"(a) create --from - ({args.bulk:,} lines)", "bots/s",
                        at_least=20_000, digits=0)
    with BenchDaemon() as daemon:
        runs: list[dict[str, float | None]] = []
        for run in range(1, args.runs + 1):
            log(f"run {run}/{args.runs}: bulk create of {args.bulk:,}, then one connection for "
                f"3 × {args.seconds:g}s")
            bulk = {} if args.only else {
                "bulk_cli": bulk_cli(daemon, args.bulk, run),
                "bulk_socket": bulk_socket(daemon, args.bulk, run),
            }
            runs.append({**bulk, **one_connection(daemon, args.seconds),
                         **many_connections(daemon, args.connections, args.seconds)})
        values = median_of_runs(runs)
        if not args.only:
            log(f"{args.sequential} sequential create -q processes (one pass)")
            values.update(sequential_cli(daemon, args.sequential))
        store = sum(daemon.counts().values())
    report("botsched throughput", METRICS, values, as_json=args.json, runs=args.runs,
           extra={"bots_in_store_at_end": store},
           note=f"(b) is one pass of {args.sequential:,} processes; the store held {store:,} bots at the end. "
                "Load average at the end: " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + ".")
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--create-worker":
        sys.exit(create_worker(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
    main_guard(main)
