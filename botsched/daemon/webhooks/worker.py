"""The delivery worker: an asyncio task that sends the outbox, off the join path.

It only awaits: every database call goes through ``db`` (the daemon hands in a callable
that runs the function in a thread on its own connection, see ``ThreadDb``), and every
send is a task of its own, bounded by ``concurrency`` in total and ``per_endpoint`` per
endpoint, each cut off at the sender's timeout. So a hanging endpoint holds a few slots
for 10 s at most and never the event loop or the other endpoints.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import logging
import random
import sqlite3
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeVar, cast

from botsched.daemon.waiting import wait_event
from botsched.daemon.webhooks import outbox
from botsched.daemon.webhooks.outbox import Claim, Conn
from botsched.daemon.webhooks.schedule import DEFAULT_RETRY_SECONDS, Outcome, classify

_T = TypeVar("_T")
log = logging.getLogger("botsched.daemon.webhooks")

#: The longest the worker sleeps without looking (another daemon of a cluster may enqueue,
#: the wall clock may jump).
MAX_SLEEP_SECONDS = 30.0
#: The longest the worker sleeps while due rows are held back (an endpoint at its share).
HELD_BACK_SLEEP_SECONDS = 1.0


class Db(Protocol):
    """Runs ``fn(connection)`` somewhere that is not the event loop and returns its result."""

    def __call__(self, fn: Callable[[Conn], _T]) -> Awaitable[_T]: ...


class Send(Protocol):
    async def send(self, claim: Claim, timestamp: int) -> Outcome: ...


class ThreadDb:
    """A ``Db`` on one private thread with its own connection (sqlite3 connections are
    not shared across threads). ``synchronous=NORMAL``: its commits take no fsync, so the
    write lock it holds is short (a lost attempt record only means one more attempt)."""

    def __init__(self, path: str) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="botsched-webhooks"
        )
        self._path = path
        self._conn: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = sqlite3.connect(
                self._path, isolation_level=None, check_same_thread=False
            )
            conn.execute("PRAGMA busy_timeout = 5000")
            conn.execute("PRAGMA journal_mode = WAL")
            conn.execute("PRAGMA synchronous = NORMAL")
            self._conn = conn
        return self._conn

    def __call__(self, fn: Callable[[Conn], _T]) -> Awaitable[_T]:
        return asyncio.get_running_loop().run_in_executor(
            self._pool, lambda: fn(self._open())
        )

    def close(self) -> None:
        def shut() -> None:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        self._pool.submit(shut).result()
        self._pool.shutdown(wait=True)


class StoreDb:
    """A ``Db`` on a store that lends its own connections (the PostgreSQL store's pool,
    ``outbox_call``), on one private thread: cluster mode's outbox is the shared database's."""

    def __init__(self, lend: Callable[[Callable[[Conn], Any]], Any]) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="botsched-webhooks")
        self._lend = lend

    def __call__(self, fn: Callable[[Conn], _T]) -> Awaitable[_T]:
        lend = self._lend
        return asyncio.get_running_loop().run_in_executor(self._pool, lambda: cast(_T, lend(fn)))

    def close(self) -> None:
        self._pool.shutdown(wait=True)


class DeliveryWorker:
    """Sends due deliveries; ``poke()`` after enqueueing, ``run()`` as a task, ``stop()``."""

    def __init__(
        self,
        db: Db,
        sender: Send,
        *,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
        retry_seconds: Sequence[float] = DEFAULT_RETRY_SECONDS,
        concurrency: int = 16,
        per_endpoint: int | None = None,
        lease_seconds: float = 120.0,
        release_on_start: bool = True,
        hold: Callable[[], float] | None = None,
    ) -> None:
        self._db = db
        self._sender = sender
        self._clock = clock
        self._rng = rng or random.Random()
        self.retry_seconds = tuple(retry_seconds)  # replaced on reload
        self._concurrency = max(1, concurrency)
        # Leave room for the other endpoints: one endpoint never holds every slot.
        self._per_endpoint = per_endpoint or max(1, self._concurrency * 3 // 4)
        self._lease_us = int(lease_seconds * 1e6)
        self._release_on_start = release_on_start
        #: seconds to wait before a write (a join is about to commit: keep the lock free)
        self._hold = hold
        self._held = False
        self._wake = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._busy: dict[str, int] = {}
        self.sent = 0  # attempts made (for status and the benchmark)

    async def _write(self, fn: Callable[[Conn], _T]) -> _T:
        """A database write, held back while ``hold`` says a join is about to commit: the
        join's ``BEGIN IMMEDIATE`` must not find our lock and sleep in SQLite's busy handler."""
        if self._hold is not None and not self._held:
            delay = self._hold()
            if delay > 0:
                self._held = True  # the next write goes at once: joins back to back cannot starve us
                await asyncio.sleep(delay)
                return await self._db(fn)
        self._held = False
        return await self._db(fn)

    def poke(self) -> None:
        """New deliveries were committed (or a slot freed): look now, not at the next timer."""
        self._wake.set()

    def _now_us(self) -> int:
        return int(self._clock() * 1_000_000)

    async def run(self) -> None:
        if self._release_on_start:
            await self._db(outbox.release_claims)
        try:
            while True:
                self._wake.clear()
                await self._fill()
                await self._sleep()
        finally:
            await self._cancel_in_flight()

    async def _fill(self) -> None:
        """Claim until the slots are full or nothing more is due (one round can stop short
        when one endpoint reaches its share; the next round leaves that endpoint out)."""
        while (free := self._concurrency - len(self._tasks)) > 0:
            now_us, busy = self._now_us(), dict(self._busy)
            take = functools.partial(
                outbox.claim_due, now_us=now_us, limit=free, lease_us=self._lease_us, busy=busy,
                per_endpoint=self._per_endpoint,
            )  # fmt: skip
            claims = await self._write(take)
            for claim in claims:
                self._busy[claim.endpoint_id] = self._busy.get(claim.endpoint_id, 0) + 1
                task = asyncio.create_task(
                    self._deliver(claim), name=f"webhook {claim.id}"
                )
                self._tasks.add(task)
            if not claims:
                return

    async def _sleep(self) -> None:
        if len(self._tasks) >= self._concurrency:
            timeout = MAX_SLEEP_SECONDS  # a finishing send pokes
        elif any(n >= self._per_endpoint for n in self._busy.values()):
            # An endpoint is at its share (a slow receiver): its rows are due but held back,
            # so a finish pokes; other endpoints' due rows were just claimed. Skip
            # ``next_due_us``: it scans the whole backlog, and every commit pokes us, so in
            # a burst it ran once per commit and slowed the joins (runner-side) and the sends.
            # A retry of another endpoint is then seen at the next poke, or within 1 s.
            timeout = HELD_BACK_SLEEP_SECONDS
        else:
            due_us = await self._db(outbox.next_due_us)
            if due_us is None:
                timeout = MAX_SLEEP_SECONDS
            else:
                timeout = min(MAX_SLEEP_SECONDS, (due_us - self._now_us()) / 1e6)
                if (
                    timeout <= 0
                ):  # due but held back (endpoint at its share): a finish pokes
                    timeout = HELD_BACK_SLEEP_SECONDS
        if self._wake.is_set():
            return
        await wait_event(self._wake, timeout)

    async def _deliver(self, claim: Claim) -> None:
        try:
            outcome = await self._sender.send(claim, int(self._clock()))
            self.sent += 1
            now = self._clock()
            verdict = classify(
                outcome, claim.attempts + 1, now, self._rng, self.retry_seconds
            )
            next_us = (
                None if verdict.next_at is None else int(verdict.next_at * 1_000_000)
            )
            await self._write(
                lambda c: outbox.record_attempt(
                    c,
                    claim.id,
                    int(now * 1_000_000),
                    outcome.status,
                    verdict.note,
                    verdict.kind,
                    next_us,
                )
            )
            if verdict.kind != "delivered":
                log.info(
                    "webhook %s to %s: %s (%s)",
                    claim.id, claim.endpoint_id, verdict.kind, verdict.note or outcome.status,
                )  # fmt: skip
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - a refused record: the lease ends, it is sent again
            log.warning("webhook %s: cannot record the attempt: %s", claim.id, exc)
        finally:
            left = self._busy.get(claim.endpoint_id, 1) - 1
            if left > 0:
                self._busy[claim.endpoint_id] = left
            else:
                self._busy.pop(claim.endpoint_id, None)
            task = asyncio.current_task()
            if task is not None:
                self._tasks.discard(task)
            self.poke()

    async def _cancel_in_flight(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._tasks.clear()

    async def drain(self, timeout: float) -> None:
        """Wait (at most ``timeout``) for the sends in flight: a graceful stop lets them land."""
        if self._tasks:
            await asyncio.wait(list(self._tasks), timeout=timeout)
