"""Durable writes off the event loop, with group commit.

The ``Store`` interface stays synchronous (a PostgreSQL store implements the same one).
This adapter runs the durable writes of requests (create, reschedule, cancel) on one
writer thread: it takes every call queued since its last commit, runs them inside one
``store.group()`` (each its own savepoint: one request's refusal never undoes another's),
commits once — one fsync for the lot — and only then answers them all on the loop, after
announcing their events there. An acknowledged request is on disk, as before; the loop
waits for no fsync (the ``sqlite3`` module releases the GIL while SQLite works).

A store without ``group()`` gets each call alone on the thread (still off the loop).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from botsched.core.model import Event

log = logging.getLogger("botsched.daemon.store")

T = TypeVar("T")
#: At most this many requests share one commit (bounds the latency of the first of them).
MAX_GROUP = 512

_Job = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


class GroupWriter:
    def __init__(self, store: Any, announce: Callable[[list[Event]], None] | None = None) -> None:
        self.store = store
        self._announce = announce
        self._cond = threading.Condition(threading.Lock())
        self._queue: list[_Job] = []
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        #: commits and requests so far (for tests and ``daemon status``-style figures)
        self.commits = 0
        self.requests = 0

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run ``fn(*args)`` (a store write) on the writer thread; return once committed."""
        loop = asyncio.get_running_loop()
        if self._thread is None:
            self._loop = loop
            self._thread = threading.Thread(target=self._run, name="botsched-writer", daemon=True)
            self._thread.start()
        future: asyncio.Future[T] = loop.create_future()
        with self._cond:
            if self._stopping:
                raise RuntimeError("the store writer is stopped")
            self._queue.append((fn, args, future))
            self._cond.notify()
        return await future

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def _group(self) -> AbstractContextManager[list[Event]]:
        group = getattr(self.store, "group", None)
        if group is None:
            return _no_group()
        ctx: AbstractContextManager[list[Event]] = group()
        return ctx

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stopping:
                    self._cond.wait()
                if not self._queue and self._stopping:
                    return
                jobs, self._queue = self._queue[:MAX_GROUP], self._queue[MAX_GROUP:]
            results: list[tuple[bool, Any]] = []
            events: list[Event] = []
            try:
                with self._group() as events:
                    for fn, args, _ in jobs:
                        try:
                            results.append((True, fn(*args)))
                        except Exception as exc:  # noqa: BLE001 -- handed to its request: its savepoint is undone
                            results.append((False, exc))
            except Exception as exc:  # noqa: BLE001 -- the commit failed: handed to every request of it
                results = [(False, exc)] * len(jobs)
                events = []
            self.commits += 1
            self.requests += len(jobs)
            loop = self._loop
            if loop is not None and not loop.is_closed():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._answer, jobs, results, events)

    def _answer(self, jobs: list[_Job], results: list[tuple[bool, Any]], events: list[Event]) -> None:
        """On the loop: announce what was committed, then answer every request of the group."""
        if events and self._announce is not None:
            try:
                self._announce(events)
            except Exception:
                log.exception("announcing committed events failed")
        for (_, _, future), (ok, value) in zip(jobs, results, strict=True):
            if future.done():
                continue
            if ok:
                future.set_result(value)
            else:
                future.set_exception(value)


@contextlib.contextmanager
def _no_group() -> Iterator[list[Event]]:
    yield []
