"""Webhook delivery throughput: deliveries per second to a fast loopback receiver.

A receiver (aiohttp, its own process so it does not share our core) answers 200 at once
(or after ``--sleep`` seconds). Two modes:

- default (the worker alone): ``--bots`` bots x ``--events`` state changes are written to
  a bare outbox file (``outbox.migrate`` plus the two bot tables it reads, ``enqueue``
  inside the writing transaction) and the real worker (``ThreadDb``, aiohttp ``Sender``,
  signed bodies, per-bot order) sends them. Reported: deliveries per second from the first
  poke to the last ``delivered`` row, and the receiver's count as a cross-check.
- ``--daemon`` (issue 14's figure): a real daemon (``bench/_common.BenchDaemon``) gets the
  endpoint with ``botsched webhook add`` and ``--bots`` bots in one ``create_many``, far in
  the future: each creation is one event, so one delivery, all written in the create's
  transaction by the store. Reported: deliveries per second from the create's reply to the
  last request the receiver got, and the receiver-side rate (first to last request).

    python bench/webhooks.py [--bots 500] [--events 4] [--concurrency 16]
    python bench/webhooks.py --daemon [--bots 5000]

The daemon's worker sends at most 16 at a time, 12 per endpoint (``worker.py``), so
``--concurrency`` applies to the first mode only.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import socket
import sqlite3
import tempfile
import time
from pathlib import Path
from typing import Any

from botsched.daemon.webhooks import outbox
from botsched.daemon.webhooks.sender import Sender
from botsched.daemon.webhooks.worker import DeliveryWorker, ThreadDb

BOT_TABLES = """
CREATE TABLE bots (id TEXT PRIMARY KEY, meeting_url TEXT NOT NULL, bot_name TEXT NOT NULL, state TEXT NOT NULL,
                   join_at TEXT, metadata TEXT NOT NULL DEFAULT '{}', dedup_key TEXT);
CREATE TABLE events (seq INTEGER PRIMARY KEY, bot_id TEXT NOT NULL, state TEXT NOT NULL, at_us INTEGER NOT NULL,
                     detail TEXT)
"""
STATES = [
    "scheduled",
    "staged",
    "joining",
    "joined_recording",
    "leaving",
    "post_processing",
    "ended",
]


class _Event:
    __slots__ = ("at_us", "bot_id", "detail", "seq", "state")

    def __init__(self, seq: int, bot_id: str, state: str, at_us: int) -> None:
        self.seq, self.bot_id, self.state, self.at_us, self.detail = (
            seq,
            bot_id,
            state,
            at_us,
            None,
        )


def _serve(sock: socket.socket, counter: Any, first: Any, last: Any, sleep_s: float) -> None:
    from aiohttp import web

    async def handle(request: web.Request) -> web.Response:
        await request.read()
        if sleep_s:
            await asyncio.sleep(sleep_s)
        now = time.time()
        with counter.get_lock():
            counter.value += 1
            if not first.value:
                first.value = now
            last.value = now
        return web.Response()

    app = web.Application()
    app.router.add_post("/hook", handle)
    web.run_app(app, sock=sock, access_log=None, print=None, handle_signals=True)


class Receiver:
    """The loopback receiver in a process of its own (also used by ``punctuality.py
    --webhook``): answers 200 after ``sleep_s``; counts requests and notes the wall time
    of the first and the last answer."""

    def __init__(self, sleep_s: float = 0.0) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        address = sock.getsockname()
        self.url = f"http://127.0.0.1:{address[1]}/hook"
        self._counter = multiprocessing.Value("i", 0)
        self._first = multiprocessing.Value("d", 0.0, lock=False)
        self._last = multiprocessing.Value("d", 0.0, lock=False)
        self._proc = multiprocessing.Process(
            target=_serve, args=(sock, self._counter, self._first, self._last, sleep_s), daemon=True
        )
        self._proc.start()
        sock.close()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:  # up once it accepts a connection
            try:
                socket.create_connection(address, timeout=1).close()
                break
            except OSError:
                time.sleep(0.05)

    @property
    def count(self) -> int:
        return int(self._counter.value)

    @property
    def first(self) -> float:
        return float(self._first.value)

    @property
    def last(self) -> float:
        return float(self._last.value)

    def close(self) -> None:
        self._proc.terminate()
        self._proc.join(5)

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _prepare(path: Path, bots: int, events: int, url: str) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("BEGIN IMMEDIATE")
    for statement in BOT_TABLES.split(";"):
        conn.execute(statement)
    outbox.migrate(conn)
    conn.execute("COMMIT")
    outbox.add_endpoint(conn, url, (), int(time.time() * 1e6))
    seq = 0
    for state in STATES[:events]:
        conn.execute("BEGIN IMMEDIATE")
        batch = []
        for i in range(bots):
            bot_id = f"bot_{i:016d}"
            if state == STATES[0]:
                conn.execute(
                    "INSERT INTO bots (id, meeting_url, bot_name, state) VALUES (?, ?, ?, ?)",
                    (bot_id, "https://meet.google.com/abc-defg-hij", "Bench", state),
                )
            seq += 1
            at_us = int(time.time() * 1e6)
            conn.execute(
                "INSERT INTO events VALUES (?, ?, ?, ?, NULL)",
                (seq, bot_id, state, at_us),
            )
            batch.append(_Event(seq, bot_id, state, at_us))
        outbox.enqueue(conn, batch)
        conn.execute("COMMIT")
    return conn


async def _measure(
    path: Path, conn: sqlite3.Connection, total: int, concurrency: int
) -> float:
    db = ThreadDb(str(path))
    async with Sender() as sender:
        worker = DeliveryWorker(db, sender, concurrency=concurrency)
        started = time.perf_counter()
        task = asyncio.create_task(worker.run())
        while (
            conn.execute(
                "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'"
            ).fetchone()[0]
            < total
        ):
            await asyncio.sleep(0.02)
        took = time.perf_counter() - started
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    db.close()
    return took


def through_daemon(bots: int, sleep_s: float) -> None:
    """``--daemon``: one endpoint, ``bots`` creations (one delivery each) through a real daemon."""
    import json
    import sys

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from _common import BenchDaemon, bot_lines, now_us

    with Receiver(sleep_s) as receiver, BenchDaemon({"runner.kind": "simulate"}) as daemon:
        endpoint = json.loads(daemon.cli("webhook", "add", receiver.url, "--json").stdout)
        far_us = now_us() + 30 * 86_400 * 1_000_000
        items = list(bot_lines(bots, far_us, 1_000_000, prefix="wh"))
        started = time.time()
        daemon.create_many(items)
        created = time.time()
        deadline = time.monotonic() + 600
        while receiver.count < bots and time.monotonic() < deadline:
            time.sleep(0.02)
        count, first, last = receiver.count, receiver.first, receiver.last
        rows = json.loads(daemon.cli("webhook", "list", "--json").stdout)
        counts = next(r["deliveries"] for r in rows if r["id"] == endpoint["id"])
    load = " ".join(f"{x:.2f}" for x in os.getloadavg())
    print(
        f"through the daemon: {bots} deliveries ({bots} bots created in one create_many, "
        f"{(created - started) * 1000:.0f} ms): {count / max(last - started, 1e-9):,.0f} deliveries/s "
        f"from the create request to the last answer ({last - started:.2f} s); receiver-side "
        f"{(count - 1) / max(last - first, 1e-9):,.0f}/s (first to last request, {last - first:.2f} s); "
        f"receiver counted {count}; outbox says {counts}; load average {load}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bots", type=int, help="default 500 (worker alone), 5000 (--daemon)")
    parser.add_argument(
        "--events", type=int, default=4, choices=range(1, len(STATES) + 1)
    )
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--daemon", action="store_true", help="through a real daemon (see above)")
    parser.add_argument("--sleep", type=float, default=0.0, help="the receiver answers after this many seconds")
    args = parser.parse_args()
    args.bots = args.bots or (5000 if args.daemon else 500)
    if args.daemon:
        through_daemon(args.bots or 5000, args.sleep)
        return

    with Receiver(args.sleep) as receiver:
        with tempfile.TemporaryDirectory(prefix="botsched-bench-webhooks-") as tmp:
            path = Path(tmp) / "botsched.db"
            total = args.bots * args.events
            t0 = time.perf_counter()
            conn = _prepare(path, args.bots, args.events, receiver.url)
            enqueue_s = time.perf_counter() - t0
            took = asyncio.run(_measure(path, conn, total, args.concurrency))
            conn.close()
        print(
            f"the worker alone: {total} deliveries ({args.bots} bots x {args.events} events, concurrency "
            f"{args.concurrency}): {took:.2f} s = {total / took:,.0f} deliveries/s; receiver counted "
            f"{receiver.count}; enqueue + commit of all state changes {enqueue_s * 1000:.0f} ms; "
            f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        )


if __name__ == "__main__":
    main()
