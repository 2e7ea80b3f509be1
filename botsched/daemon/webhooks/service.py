"""The daemon's webhooks: the delivery worker, the hooks, and the ``webhook ...`` ops.

Nothing here runs on the join path. The deliveries are written by the store inside its own
transactions (``outbox.enqueue``); after a commit the daemon calls ``published``, which
only pokes the worker and starts a task for the hooks. The worker, the hooks' bodies and
every op use their own connection on their own thread (``ThreadDb``), so a slow endpoint,
a hanging hook or a long ``deliveries`` listing never holds the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from botsched.core import states as bot_states
from botsched.core.config import Config
from botsched.core.errors import InvalidInput, NotFound
from botsched.core.validation import validate_bot_id
from botsched.daemon.webhooks import outbox
from botsched.daemon.webhooks.hooks import HookRunner, parse_hooks
from botsched.daemon.webhooks.outbox import EventLike
from botsched.daemon.webhooks.schedule import DELIVERED
from botsched.daemon.webhooks.sender import Sender
from botsched.daemon.webhooks.worker import DeliveryWorker, StoreDb, ThreadDb

log = logging.getLogger("botsched.daemon.webhooks")

Result = tuple[Any, list[str]]
AsyncHandler = Callable[[dict[str, Any]], Awaitable[Result]]

_ENDPOINT_ID = re.compile(r"wh_[A-Za-z0-9]{16}", re.ASCII)
_DELIVERY_ID = re.compile(r"dlv_[A-Za-z0-9]{20}", re.ASCII)
MAX_LIMIT = 1_000_000_000
#: ``webhook test`` waits this long beyond the send timeout for the first attempt's answer.
TEST_WAIT_MARGIN_S = 3.0
#: A failed worker is started again after this long.
RESTART_S = 1.0
#: The worker writes nothing when a join is due within this long...
WRITE_GUARD_S = 0.05
#: ...until this long after it (the join's record commits right at join_at).
WRITE_GUARD_AFTER_S = 0.01


def endpoint_id(value: object) -> str:
    """A malformed id names no endpoint (exit 3, as a malformed bot id does)."""
    if not isinstance(value, str) or not _ENDPOINT_ID.fullmatch(value):
        raise NotFound(f"no such webhook endpoint: {value!r} (ids look like wh_Ab12Cd34Ef56Gh78)")
    return value


def delivery_id(value: object) -> str:
    if not isinstance(value, str) or not _DELIVERY_ID.fullmatch(value):
        raise NotFound(f"no such webhook delivery: {value!r} (ids look like dlv_ and 20 letters and digits)")
    return value


class Webhooks:
    """Owns the outbox's thread, the sender, the worker task and the hooks of one daemon."""

    def __init__(
        self,
        database: str | StoreDb,
        config: Config,
        clock: Callable[[], float] = time.time,
        next_join_us: Callable[[], int | None] | None = None,
    ) -> None:
        """``database``: the SQLite file's path, or (cluster mode) a ``StoreDb`` on the shared
        database (claiming for this agent: only its own leases are voided at start-up)."""
        self.config = config
        self.clock = clock
        self._next_join_us = next_join_us
        self.db: ThreadDb | StoreDb = ThreadDb(database) if isinstance(database, str) else database
        self.sender = Sender()
        self.hooks = HookRunner(parse_hooks(config["hooks"]), float(config["hooks_timeout_seconds"]))
        self.worker = DeliveryWorker(
            self.db, self.sender, clock=clock, retry_seconds=self._retry_seconds(), hold=self._before_write,
        )
        self._task: asyncio.Task[None] | None = None
        self._hook_tasks: set[asyncio.Task[None]] = set()
        self._written = 0

    def _before_write(self) -> float:
        """How long the worker waits before a write: through the next join when it is due
        within ``WRITE_GUARD_S`` (its record must not wait for our lock), else not at all."""
        if self._next_join_us is None:
            return 0.0
        due = self._next_join_us()
        if due is None:
            return 0.0
        ahead = (due - self.clock() * 1e6) / 1e6
        return ahead + WRITE_GUARD_AFTER_S if 0 <= ahead < WRITE_GUARD_S else 0.0

    def _retry_seconds(self) -> tuple[float, ...]:
        return tuple(float(s) for s in self.config["webhooks.retry_seconds"])

    # -- life cycle ---------------------------------------------------------------

    async def start(self) -> None:
        await self.sender.__aenter__()
        self._task = asyncio.create_task(self._supervise(), name="webhook worker")

    async def _supervise(self) -> None:
        """The worker, restarted if it ever fails (say the database was briefly unreadable):
        deliveries wait in the outbox meanwhile, none is lost."""
        while True:
            try:
                await self.worker.run()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("the webhook worker failed; restarting it in %g s", RESTART_S)
                await asyncio.sleep(RESTART_S)

    async def close(self, drain_s: float = 2.0) -> None:
        """At shutdown: sends in flight get ``drain_s`` to land; what is left stays pending
        in the outbox and goes out after the next start."""
        with contextlib.suppress(Exception):
            await self.worker.drain(drain_s)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        for task in list(self._hook_tasks):
            task.cancel()
        await asyncio.gather(*self._hook_tasks, return_exceptions=True)
        await self.hooks.close()
        await self.sender.__aexit__(None, None, None)
        await asyncio.get_running_loop().run_in_executor(None, self.db.close)

    def reconfigure(self) -> None:
        """After ``daemon reload``: the config object was replaced in place; take its values."""
        self.hooks.hooks = parse_hooks(self.config["hooks"])
        self.hooks.timeout = float(self.config["hooks_timeout_seconds"])
        self.worker.retry_seconds = self._retry_seconds()

    # -- after a commit -------------------------------------------------------------

    def published(self, events: Sequence[EventLike], deliveries_written: int) -> None:
        """Called with each committed batch of events; returns at once."""
        if deliveries_written != self._written:
            self._written = deliveries_written
            self.worker.poke()
        if any(hook.matches(e.state) for e in events for hook in self.hooks.hooks):
            task = asyncio.create_task(self._run_hooks(list(events)))
            self._hook_tasks.add(task)
            task.add_done_callback(self._hook_tasks.discard)

    async def _run_hooks(self, events: list[EventLike]) -> None:
        hooks = list(self.hooks.hooks)

        def keep(event: EventLike) -> bool:
            return any(hook.matches(event.state) for hook in hooks)

        try:
            bodies = await self.db(lambda c: outbox.bodies(c, events, keep))
        except Exception as exc:  # noqa: BLE001 - hooks are best-effort: logged, never fatal
            log.warning("hooks: cannot read the changes: %s", exc)
            return
        for body in bodies:
            self.hooks.dispatch(body)

    # -- the ops ----------------------------------------------------------------------

    def handlers(self) -> dict[str, AsyncHandler]:
        return {
            "add": self.add,
            "list": self.list_endpoints,
            "remove": self.remove,
            "test": self.test,
            "deliveries": self.deliveries,
            "replay": self.replay,
        }

    async def add(self, args: dict[str, Any]) -> Result:
        url = args.get("url")
        wanted = args.get("states") or []
        if not isinstance(url, str):
            raise InvalidInput("webhook add needs a URL")
        if not isinstance(wanted, list) or not all(isinstance(s, str) for s in wanted):
            raise InvalidInput("states must be a list of state names")
        unknown = [s for s in wanted if s not in bot_states.ALL_STATES]
        if unknown:
            raise InvalidInput(f"unknown state {unknown[0]!r}; states are: {', '.join(bot_states.ALL_STATES)}")
        outbox.validate_url(url)
        now_us = int(self.clock() * 1e6)
        added = await self.db(lambda c: outbox.add_endpoint(c, url, wanted, now_us))
        log.info("webhook endpoint %s added (%s)", added["id"], outbox.safe_url(url))  # never the secret
        return added, []

    async def list_endpoints(self, args: dict[str, Any]) -> Result:
        return await self.db(outbox.list_endpoints), []

    async def remove(self, args: dict[str, Any]) -> Result:
        chosen = endpoint_id(args.get("endpoint"))
        await self.db(lambda c: outbox.remove_endpoint(c, chosen))
        log.info("webhook endpoint %s removed", chosen)
        return {"id": chosen, "removed": True}, []

    async def test(self, args: dict[str, Any]) -> Result:
        """Queue a ``webhook.test`` delivery and wait for its first attempt's answer."""
        chosen = endpoint_id(args.get("endpoint"))
        now_us = int(self.clock() * 1e6)
        queued = await self.db(lambda c: outbox.enqueue_test(c, chosen, now_us))
        self.worker.poke()
        deadline = time.monotonic() + self.sender.timeout + TEST_WAIT_MARGIN_S
        while True:
            found = await self.db(lambda c: outbox.get_delivery(c, queued))
            if found["attempts"] >= 1 or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        warnings = []
        if found["state"] != DELIVERED:
            answer = found["last_error"] or (
                f"HTTP {found['last_status']}" if found["last_status"] is not None else "no answer yet")
            warnings.append(f"test delivery {queued} was not delivered: {answer}")
        return found, warnings

    async def deliveries(self, args: dict[str, Any]) -> Result:
        bot = args.get("bot")
        if bot is not None:
            bot = validate_bot_id(bot)
        failed = args.get("failed", False)
        if not isinstance(failed, bool):
            raise InvalidInput("failed must be true or false")
        limit = args.get("limit", 100)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"--limit must be a whole number from 0 (no limit) to {MAX_LIMIT}")
        return await self.db(lambda c: outbox.list_deliveries(c, bot, failed, limit)), []

    async def replay(self, args: dict[str, Any]) -> Result:
        chosen = delivery_id(args.get("delivery"))
        now_us = int(self.clock() * 1e6)
        queued = await self.db(lambda c: outbox.replay(c, chosen, now_us))
        self.worker.poke()
        return await self.db(lambda c: outbox.get_delivery(c, queued)), []


__all__ = ["Webhooks", "delivery_id", "endpoint_id"]
