"""Cluster mode, every command on any agent: how soon agent B's ``events --follow`` sees a
change committed through agent A, and webhook deliveries per second from the shared outbox.

Two real agents (daemons, simulated runs) on a private PostgreSQL server (the tests' fixture
code, ``tests/support/postgres.py``):

- ``--creates`` bots are created one by one through A (each far in the future: one event);
  a follower on B and one on A record when each event arrives. Reported: the time from A's
  reply to the event line on B (via NOTIFY + a read of the events table), and on A itself.
- ``--deliveries`` bots in one ``create_many`` through A, with one endpoint (a threaded
  loopback receiver answering 200 at once): deliveries per second from the reply to the
  receiver's last request, and how many each agent claimed (``claimed_by``).

    flock /work/notes/bench.lock python bench/cluster_any_agent.py [--creates 200] [--deliveries 2000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the tests' PostgreSQL server code

from _common import BenchDaemon, percentile

from tests.support.postgres import _start, find_bindir
from tests.webhooks.webhook_helpers import ThreadReceiver

URL = "https://meet.google.com/abc-defg-hij"
FAR = "2028-01-01T00:00:00Z"


def _agent(url: str, name: str) -> BenchDaemon:
    return BenchDaemon({"store.url": url, "cluster.agent_name": name, "runner.kind": "simulate"})


def _follower(agent: BenchDaemon, seen: dict[str, float], ready: threading.Event) -> threading.Thread:
    def follow() -> None:
        from botsched.core.errors import BotschedError
        from botsched.core.protocol import Op

        with agent.connect() as conn, contextlib.suppress(BotschedError):  # (the stream ends at the stop)
            stream = conn.stream(Op.EVENTS, follow=True)
            ready.set()
            for event in stream:
                if "bot_id" in event:
                    seen.setdefault(event["bot_id"], time.perf_counter())

    thread = threading.Thread(target=follow, daemon=True)
    thread.start()
    return thread


def _creates(a: BenchDaemon, b: BenchDaemon, count: int) -> dict[str, Any]:
    from botsched.core.protocol import Op

    on_a: dict[str, float] = {}
    on_b: dict[str, float] = {}
    ready_a, ready_b = threading.Event(), threading.Event()
    _follower(a, on_a, ready_a)
    _follower(b, on_b, ready_b)
    ready_a.wait(10)
    ready_b.wait(10)
    time.sleep(0.3)
    acked: dict[str, float] = {}
    with a.connect() as conn:
        for _ in range(count):
            bot, _warnings = conn.call(Op.CREATE, meeting_url=URL, join_at=FAR)
            acked[bot["id"]] = time.perf_counter()
            time.sleep(0.01)
    deadline = time.monotonic() + 20
    while (len(on_b) < count or len(on_a) < count) and time.monotonic() < deadline:
        time.sleep(0.05)
    remote = [(on_b[i] - t) * 1000 for i, t in acked.items() if i in on_b]
    local = [(on_a[i] - t) * 1000 for i, t in acked.items() if i in on_a]
    return {
        "creates": count,
        "seen_on_b": len(remote),
        "b_p50_ms": round(percentile(remote, 50), 2),
        "b_p99_ms": round(percentile(remote, 99), 2),
        "b_max_ms": round(max(remote), 2),
        "a_p50_ms": round(percentile(local, 50), 2),
        "a_p99_ms": round(percentile(local, 99), 2),
    }


def _deliveries(a: BenchDaemon, url: str, count: int) -> dict[str, Any]:
    import psycopg

    receiver = ThreadReceiver()
    try:
        a.cli("webhook", "add", receiver.url())
        lines = "".join(json.dumps({"meeting_url": URL, "join_at": FAR}) + "\n" for _ in range(count))
        a.cli("create", "--from", "-", "-q", input=lines.encode())
        started = time.time()  # the receiver stamps requests with time.time()
        deadline = time.monotonic() + 120
        while len(receiver.snapshot()) < count and time.monotonic() < deadline:
            time.sleep(0.02)
        got = receiver.snapshot()
        elapsed = got[-1].at - started if got else float("nan")
        with psycopg.connect(url) as connection:
            by_agent = dict(connection.execute(
                "SELECT coalesce(claimed_by, '?'), count(*) FROM webhook_deliveries GROUP BY 1").fetchall())
    finally:
        receiver.close()
    return {"deliveries": len(got), "per_s": round(len(got) / elapsed, 1), "claimed_by": by_agent}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--creates", type=int, default=200)
    parser.add_argument("--deliveries", type=int, default=2000)
    args = parser.parse_args()
    bindir = find_bindir()
    if bindir is None:
        sys.exit("PostgreSQL is not installed")
    server, root = _start(bindir)
    try:
        url = server.url(schema=server.fresh_schema())
        with _agent(url, "agent-a") as a, _agent(url, "agent-b") as b:
            result = {"load_1m": round(os.getloadavg()[0], 2), **_creates(a, b, args.creates)}
            result.update(_deliveries(a, url, args.deliveries))
            result["load_1m_after"] = round(os.getloadavg()[0], 2)
        print(json.dumps(result, indent=2))
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
