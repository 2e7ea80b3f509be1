"""The worker and the aiohttp sender against a REAL receiver on loopback (no mock client), on
each store's outbox (``backend``: SQLite, PostgreSQL)."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from standardwebhooks import Webhook
from webhook_helpers import Backend, Bots, Receiver

from botsched.daemon.webhooks import outbox
from botsched.daemon.webhooks.sender import Sender
from botsched.daemon.webhooks.worker import DeliveryWorker


async def _until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out waiting"
        await asyncio.sleep(0.02)


def _run(
    backend: Backend,
    receiver: Receiver,
    body: Callable[[DeliveryWorker, sqlite3.Connection], Awaitable[None]],
    *,
    timeout: float = 2.0,
    retry: tuple[float, ...] = (0.05, 0.05, 0.05),
    concurrency: int = 16,
) -> None:
    """Start receiver, worker (on a ThreadDb) and run ``body``; everything torn down after."""

    async def main() -> None:
        db = backend.db()
        conn = backend.connect()
        try:
            async with receiver, Sender(timeout=timeout) as sender:
                worker = DeliveryWorker(
                    db,
                    sender,
                    retry_seconds=retry,
                    concurrency=concurrency,
                    rng=random.Random(0),
                )
                task = asyncio.create_task(worker.run())
                try:
                    await body(worker, conn)
                finally:
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
        finally:
            conn.close()
            db.close()

    asyncio.run(main())


def _states(conn: sqlite3.Connection) -> list[tuple[str, int, Any, Any]]:
    return conn.execute(
        "SELECT state, attempts, last_status, last_error FROM webhook_deliveries ORDER BY seq"
    ).fetchall()


def test_every_event_arrives_in_order_per_bot_signed(backend: Backend) -> None:
    first_tries: set[str] = set()

    def behave(request: web.Request, n: int) -> web.Response:
        """Every delivery fails once (500), then succeeds: retries must keep the order."""
        msg_id = request.headers["webhook-id"]
        if msg_id in first_tries:
            return web.Response()
        first_tries.add(msg_id)
        return web.Response(status=500)

    receiver = Receiver(behave=behave)

    async def body(worker: DeliveryWorker, conn: sqlite3.Connection) -> None:
        secret = outbox.add_endpoint(conn, receiver.url(), (), int(time.time() * 1e6))[
            "secret"
        ]
        bots = Bots(conn)
        path = ["scheduled", "staged", "joining", "joined_recording", "ended"]
        for state in path:
            bots.change([(f"bot_{i:02d}", state) for i in range(20)])
            worker.poke()
        done = "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'"
        await _until(lambda: conn.execute(done).fetchone()[0] == 100)
        seen: set[str] = set()
        delivered: dict[str, list[str]] = {}
        for got in receiver.received:
            data = Webhook(secret).verify(
                got.body, got.headers
            )  # raises on a bad signature
            assert got.headers["content-type"] == "application/json"
            assert got.headers["webhook-id"] == data["id"]
            if data["id"] in seen:  # the successful second try
                delivered.setdefault(data["data"]["bot_id"], []).append(
                    data["data"]["new_state"]
                )
            seen.add(data["id"])
        assert len(receiver.received) == 200 and len(seen) == 100
        assert len(delivered) == 20 and all(
            states == path for states in delivered.values()
        )

    _run(backend, receiver, body)


def test_500_twice_then_200_same_webhook_id(backend: Backend) -> None:
    receiver = Receiver(
        behave=lambda request, n: web.Response(status=500 if n < 2 else 200)
    )

    async def body(worker: DeliveryWorker, conn: sqlite3.Connection) -> None:
        secret = outbox.add_endpoint(conn, receiver.url(), (), int(time.time() * 1e6))[
            "secret"
        ]
        Bots(conn).change([("bot_a", "scheduled")])
        worker.poke()
        await _until(lambda: _states(conn)[0][0] == "delivered")
        assert len(receiver.received) == 3
        assert len({r.headers["webhook-id"] for r in receiver.received}) == 1
        assert len({r.body for r in receiver.received}) == 1
        for got in receiver.received:
            Webhook(secret).verify(got.body, got.headers)
        assert _states(conn) == [("delivered", 3, 200, None)]

    _run(backend, receiver, body)


def test_retries_run_out_then_failed(backend: Backend) -> None:
    receiver = Receiver(behave=lambda request, n: web.Response(status=503))

    async def body(worker: DeliveryWorker, conn: sqlite3.Connection) -> None:
        outbox.add_endpoint(conn, receiver.url(), (), int(time.time() * 1e6))
        Bots(conn).change([("bot_a", "scheduled")])
        worker.poke()
        await _until(lambda: _states(conn)[0][0] == "failed")
        assert (
            _states(conn) == [("failed", 3, 503, None)] and len(receiver.received) == 3
        )

    _run(backend, receiver, body, retry=(0.05, 0.05))


def test_429_retry_after_is_honoured(backend: Backend) -> None:
    receiver = Receiver(
        behave=lambda request, n: (
            web.Response(status=429, headers={"Retry-After": "1"})
            if n == 0
            else web.Response()
        )
    )

    async def body(worker: DeliveryWorker, conn: sqlite3.Connection) -> None:
        outbox.add_endpoint(conn, receiver.url(), (), int(time.time() * 1e6))
        Bots(conn).change([("bot_a", "scheduled")])
        worker.poke()
        await _until(lambda: _states(conn)[0][0] == "delivered")
        first, second = receiver.received
        assert second.at - first.at >= 0.95  # the schedule alone says 0.05 s

    _run(backend, receiver, body)


def test_a_hanging_receiver_times_out_and_slows_no_other_endpoint(
    backend: Backend,
) -> None:
    async def behave(request: web.Request, n: int) -> web.Response:
        if request.path == "/hang" and n < 50:
            await asyncio.sleep(5)
        return web.Response()

    receiver = Receiver(behave=behave)

    async def body(worker: DeliveryWorker, conn: sqlite3.Connection) -> None:
        now = int(time.time() * 1e6)
        outbox.add_endpoint(conn, receiver.url("/hang"), (), now)
        outbox.add_endpoint(conn, receiver.url("/fast"), (), now)
        started = time.monotonic()
        Bots(conn).change([(f"bot_{i}", "scheduled") for i in range(20)])
        worker.poke()
        fast = ("SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id"
                " WHERE e.url LIKE '%fast' AND d.state = 'delivered'")
        await _until(lambda: conn.execute(fast).fetchone()[0] == 20)
        # the fast endpoint never waited out a hanging send (0.6 s each)
        assert time.monotonic() - started < 0.5
        timeouts = (
            "SELECT count(*) FROM webhook_deliveries WHERE last_error LIKE 'timeout%'"
        )
        await _until(lambda: conn.execute(timeouts).fetchone()[0] > 0)
        await _until(
            lambda: (
                conn.execute(
                    "SELECT count(*) FROM webhook_deliveries WHERE state = 'delivered'"
                ).fetchone()[0]
                == 40
            ),
            20,
        )

    _run(backend, receiver, body, timeout=0.6, concurrency=8)


def test_410_disables_the_endpoint(backend: Backend) -> None:
    receiver = Receiver(behave=lambda request, n: web.Response(status=410))

    async def body(worker: DeliveryWorker, conn: sqlite3.Connection) -> None:
        outbox.add_endpoint(conn, receiver.url(), (), int(time.time() * 1e6))
        bots = Bots(conn)
        bots.change([("bot_a", "scheduled"), ("bot_a", "staged")])
        worker.poke()
        await _until(lambda: outbox.list_endpoints(conn)[0]["state"] == "disabled")
        bots.change([("bot_a", "joining")])
        worker.poke()
        await asyncio.sleep(0.3)
        assert len(receiver.received) == 1
        assert [s for s, *_ in _states(conn)] == ["failed", "failed"]

    _run(backend, receiver, body)


def test_a_redirect_is_not_followed(backend: Backend) -> None:
    receiver = Receiver(
        behave=lambda request, n: (
            web.Response(status=302, headers={"Location": "/elsewhere"})
            if request.path == "/hook"
            else web.Response()
        )
    )

    async def body(worker: DeliveryWorker, conn: sqlite3.Connection) -> None:
        outbox.add_endpoint(conn, receiver.url(), (), int(time.time() * 1e6))
        Bots(conn).change([("bot_a", "scheduled")])
        worker.poke()
        await _until(lambda: _states(conn)[0][0] == "failed")
        assert {r.path for r in receiver.received} == {"/hook"}
        assert _states(conn) == [("failed", 2, 302, "redirect (302) not followed")]

    _run(backend, receiver, body, retry=(0.05,))


def test_a_dead_endpoint_is_a_connection_error(backend: Backend) -> None:
    receiver = Receiver()

    async def body(worker: DeliveryWorker, conn: sqlite3.Connection) -> None:
        outbox.add_endpoint(
            conn, "http://127.0.0.1:9/nothing-listens", (), int(time.time() * 1e6)
        )
        Bots(conn).change([("bot_a", "scheduled")])
        worker.poke()
        await _until(lambda: _states(conn)[0][0] == "failed")
        _state, attempts, status, error = _states(conn)[0]
        assert attempts == 2 and status is None and error.startswith("connection error")

    _run(backend, receiver, body, retry=(0.05,))
