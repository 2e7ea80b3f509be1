"""The daemon's request rules: validation and business rules over the store.

No socket in sight, so it is tested directly. Every request-reply op is a public method
``method(args) -> (result, warnings)`` (``handlers()`` maps each ``Op`` to one); the
streaming ops are async: ``events`` yields events, ``wait`` returns when the bot gets
there, and a bulk create is ``bulk()`` + ``add`` per chunk + ``finish_bulk``. The server
(``server.py``) only frames them on the wire.

What it needs is handed in explicitly: the store, the scheduler (to re-plan and to know
when the next join is due), the runner (leave, describe), the hub (live events), and the
one ``Config`` object that ``reload`` updates in place.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from datetime import tzinfo
from typing import Any, NamedTuple

from botsched import __version__
from botsched.core import states
from botsched.core.config import Config
from botsched.core.errors import (
    Conflict,
    DaemonUnavailable,
    InvalidInput,
    NotFound,
    WaitTimeout,
)
from botsched.core.model import Bot, NewBot, StreamEvent
from botsched.core.paths import Paths
from botsched.core.platforms import detect_platform
from botsched.core.protocol import Op
from botsched.core.timeparse import (
    ZoneSource,
    check_join_time,
    parse_join_at,
    resolve_zone,
)
from botsched.core.validation import (
    validate_bot_id,
    validate_bot_name,
    validate_dedup_key,
    validate_meeting_url,
    validate_metadata,
)
from botsched.daemon.agents import agent_name, local_row
from botsched.daemon.hub import EventHub, Gone
from botsched.daemon.runners import Runner, RunnerError
from botsched.daemon.scheduler import Clock, Scheduler
from botsched.daemon.store.base import DuplicateKeys, KeyClash, NotScheduled, Store
from botsched.daemon.store.writer import GroupWriter

Result = tuple[Any, list[str]]
#: A request-reply op: its result, or (a durable write) an awaitable of it.
Handler = Callable[[dict[str, Any]], "Result | Awaitable[Result]"]
_FIELDS = frozenset({"meeting_url", "bot_name", "join_at", "metadata", "deduplication_key", "line"})

#: At most this many bots in one ``create_many`` (a 1M-line file still goes through).
MAX_BULK = 1_000_000
MAX_LIST_LIMIT = 1_000_000_000
#: A bulk insert takes about this long per bot; it waits for a moment with no join due...
BULK_INSERT_US_PER_BOT = 40
#: ...but not longer than this.
BULK_MAX_WAIT_S = 30.0


def _refuse(error: InvalidInput) -> Callable[[], tzinfo]:
    def zone() -> tzinfo:
        raise error

    return zone


# -- the words for what the store refuses (the store speaks in data) -----------------------


def not_scheduled_error(exc: NotScheduled, verb: str) -> NotFound | Conflict:
    if exc.state is None:
        return NotFound(f"no such bot: {exc.bot_id}")
    return Conflict(f"cannot {verb} {exc.bot_id}: it is {exc.state} ({verb} is accepted only while scheduled)")


def dedup_conflict(clashes: Sequence[KeyClash], labels: Sequence[str] | None = None) -> Conflict:
    """Name every item whose key a live bot (or an earlier item) holds; with ``labels``
    (e.g. "line 7") the items are named as the user's file numbers them."""
    problems: list[str] = []
    for clash in clashes:
        where = f"{labels[clash.item]}: " if labels else ""
        if clash.holder_id is not None:
            problems.append(f"{where}dedup key {clash.key!r} is taken by {clash.holder_id} ({clash.holder_state})")
        else:
            other = labels[clash.earlier_index] if labels and clash.earlier_index is not None else (
                "another bot in this batch")
            problems.append(f"{where}dedup key {clash.key!r} is also used by {other}")
    if len(problems) > 1:
        problems.append(f"{len(problems)} dedup conflicts; nothing was created")
    return Conflict("\n".join(problems) or "duplicate dedup key")


#: A streamed ``list`` sends this many bots per line.
LIST_PAGE = 500


class _Write(NamedTuple):
    """A checked durable write: the store call to commit, and what to answer after it."""

    verb: str  # for the "cannot VERB: it is STATE" error
    commit: Callable[[], Any]
    finish: Callable[[Any], Result]


def _list_args(args: dict[str, Any]) -> tuple[list[str], int, str | None]:
    """``list``'s arguments, checked: the states, the limit (0 = all) and a dedup-key prefix."""
    wanted = args.get("states") or []
    if not isinstance(wanted, list) or any(s not in states.ALL_STATES for s in wanted):
        raise InvalidInput(f"unknown state in {wanted!r}; states are: {', '.join(states.ALL_STATES)}")
    limit = args.get("limit", 100)
    if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_LIST_LIMIT:
        raise InvalidInput(f"--limit must be a whole number from 0 (no limit) to {MAX_LIST_LIMIT}")
    prefix = args.get("dedup_prefix")
    if prefix is not None and not isinstance(prefix, str):
        raise InvalidInput("dedup_prefix must be a string")
    return wanted, limit, prefix


class BotService:
    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        runner: Runner,
        hub: EventHub,
        config: Config,
        clock: Clock,
        paths: Paths,
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self.runner = runner
        self.hub = hub
        self.config = config  # the daemon's one Config: reload updates it in place
        self.clock = clock
        self.paths = paths
        self.started = time.monotonic()
        self._zone_for: tuple[Any, ZoneSource] | None = None
        #: Durable writes of requests run on its thread, group-committed (issue 12).
        self.writer = GroupWriter(store, getattr(store, "announce", None))

    @property
    def zone(self) -> ZoneSource:
        """Zone of join times without an offset; resolved once per configured value, not
        per bot. A ``TZ`` that is no zone refuses those times (exit 2), not the daemon's start."""
        name = self.config["defaults.timezone"]
        if self._zone_for is None or self._zone_for[0] != name:
            zone: ZoneSource
            try:
                zone = resolve_zone(name)
            except InvalidInput as exc:
                zone = _refuse(exc)
            self._zone_for = (name, zone)
        return self._zone_for[1]

    def _get(self, bot_id: str) -> Bot:
        bot = self.store.get(bot_id)
        if bot is None:
            raise NotFound(f"no such bot: {bot_id}")
        return bot

    # -- creating -----------------------------------------------------------------

    def _new_bot(self, fields: dict[str, Any], now_us: int, warnings: list[str], zone: ZoneSource) -> NewBot:
        """Validate one create request (CLI option values or a bulk line)."""
        if not fields.keys() <= _FIELDS:
            raise InvalidInput(f"unknown field(s): {', '.join(sorted(set(fields) - _FIELDS))}")
        url = validate_meeting_url(fields.get("meeting_url"))
        if detect_platform(url) is None:
            warnings.append(f"{url} is not a Zoom, Google Meet, Teams or Webex link; accepted as a custom platform")
        name = fields.get("bot_name")
        name = validate_bot_name(self.config["defaults.bot_name"] if name is None else name)
        metadata = validate_metadata(fields.get("metadata"))
        dedup = validate_dedup_key(fields.get("deduplication_key"))
        join_text = fields.get("join_at")
        if join_text is None:
            return NewBot(url, name, None, None, metadata, dedup)
        if not isinstance(join_text, str):
            raise InvalidInput("join_at must be a string time")
        join = parse_join_at(join_text, now_us, zone)
        warnings.extend(join.warnings)
        warnings.extend(check_join_time(join, now_us, self.config.stage_lead_us))
        return NewBot(url, name, join.text, join.us, metadata, dedup)

    def _insert(self, bots: Sequence[NewBot], now_us: int, labels: Sequence[str] | None = None) -> list[str]:
        try:
            return self.store.insert(bots, now_us)
        except DuplicateKeys as exc:
            raise dedup_conflict(exc.clashes, labels) from None

    # Each durable write is checked on the loop, then committed -- here (``create`` etc.: the
    # calendar poller, tests) or on the writer thread with group commit (``create_async`` etc.:
    # the socket and HTTP, the loop free meanwhile) -- then finished: one rule set, two ways.

    def _commit_now(self, write: _Write) -> Result:
        try:
            done = write.commit()
        except NotScheduled as exc:
            raise not_scheduled_error(exc, write.verb) from None
        return write.finish(done)

    async def _commit_on_writer(self, write: _Write) -> Result:
        try:
            done = await self.writer.call(write.commit)
        except NotScheduled as exc:
            raise not_scheduled_error(exc, write.verb) from None
        return write.finish(done)

    def _creating(self, args: dict[str, Any]) -> _Write:
        now = self.clock.now_us()
        warnings: list[str] = []
        bot = self._new_bot(args, now, warnings, self.zone)

        def finish(created: Bot) -> Result:
            self.scheduler.poke(self._due_us(bot))
            return created, warnings

        # read back where it was written: on the writer's connection, inside its transaction
        # (its pages are in that connection's cache), not on the loop after the commit
        return _Write("create", lambda: self._get(self._insert([bot], now)[0]), finish)

    def _rescheduling(self, args: dict[str, Any]) -> _Write:
        bot_id = validate_bot_id(args.get("id"))
        text = args.get("join_at")
        if not isinstance(text, str):
            raise InvalidInput("reschedule needs --join-at")
        now = self.clock.now_us()
        join = parse_join_at(text, now, self.zone)
        warnings = join.warnings + check_join_time(join, now, self.config.stage_lead_us)

        def commit() -> Bot:
            self.store.reschedule(bot_id, join.text, join.us, now)
            return self._get(bot_id)

        def finish(moved: Bot) -> Result:
            self.scheduler.poke(join.us - self.config.stage_lead_us)
            return moved, warnings

        return _Write("reschedule", commit, finish)

    def _cancelling(self, args: dict[str, Any]) -> _Write:
        bot_id = validate_bot_id(args.get("id"))
        return _Write("cancel", lambda: self.store.delete_scheduled(bot_id),
                      lambda _: ({"id": bot_id, "cancelled": True}, []))

    def create(self, args: dict[str, Any]) -> Result:
        return self._commit_now(self._creating(args))

    def reschedule(self, args: dict[str, Any]) -> Result:
        return self._commit_now(self._rescheduling(args))

    def cancel(self, args: dict[str, Any]) -> Result:
        return self._commit_now(self._cancelling(args))

    async def create_async(self, args: dict[str, Any]) -> Result:
        return await self._commit_on_writer(self._creating(args))

    async def reschedule_async(self, args: dict[str, Any]) -> Result:
        return await self._commit_on_writer(self._rescheduling(args))

    async def cancel_async(self, args: dict[str, Any]) -> Result:
        return await self._commit_on_writer(self._cancelling(args))

    def create_many(self, items: list[dict[str, Any]], want_bots: bool, dry_run: bool = False) -> Result:
        """All or nothing: every invalid item is named by its line; then one transaction.
        ``dry_run`` only validates."""
        bulk = self.bulk()
        bulk.add(items)
        return bulk.finish(want_bots, commit=not dry_run)

    def bulk(self) -> BulkCreate:
        return BulkCreate(self)

    async def finish_bulk(self, bulk: BulkCreate, want_bots: bool, commit: bool) -> Result:
        """End a streamed bulk create: the insert waits for a window with no join due, so
        a long insert cannot hold a join back."""
        if commit and not bulk.problems:
            await self._quiet_window(bulk.count * BULK_INSERT_US_PER_BOT)
        return bulk.finish(want_bots, commit=commit)

    async def _quiet_window(self, need_us: int) -> None:
        """Wait (the loop serves everything else) until no join is due for ``need_us`` + a
        margin; give up waiting after ``BULK_MAX_WAIT_S``."""
        deadline = time.monotonic() + BULK_MAX_WAIT_S
        while time.monotonic() < deadline:
            now = self.clock.now_us()
            due = self.scheduler.next_join_us()
            if due is None or due - now > need_us + 50_000:
                return
            await asyncio.sleep(max((due - now) / 1e6, 0) + 0.01)

    def _due_us(self, bot: NewBot) -> int | None:
        if bot.join_at_us is None:
            return self.clock.now_us()
        return bot.join_at_us - self.config.stage_lead_us

    # -- changing -----------------------------------------------------------------

    def leave(self, args: dict[str, Any]) -> Result:
        bot_id = validate_bot_id(args.get("id"))
        bot = self._get(bot_id)
        # a bot already leaving may be asked too: told to leave if it was not, stopped if it was
        if bot["state"] not in states.IN_MEETING | {states.LEAVING, states.POST_PROCESSING}:
            raise Conflict(f"cannot leave {bot_id}: it is {bot['state']} (leave needs a bot in a meeting or leaving)")
        elsewhere = getattr(self.scheduler, "leave_elsewhere", None)  # cluster mode: another agent runs it
        note = elsewhere(bot_id) if elsewhere is not None else None
        if note is None:
            try:
                note = self.runner.leave(bot_id)
            except RunnerError as exc:
                raise Conflict(f"cannot leave {bot_id}: {exc}") from None
        return self._get(bot_id), [note] if note else []

    # -- reading ------------------------------------------------------------------

    def show(self, args: dict[str, Any]) -> Result:
        return self._get(validate_bot_id(args.get("id"))), []

    def list_bots(self, args: dict[str, Any]) -> Result:
        """The ``list`` op (named so as not to shadow the builtin)."""
        wanted, limit, prefix = _list_args(args)
        bots, more = self.store.list_bots(wanted, limit, prefix)
        return {"bots": bots, "more": more}, []

    async def list_pages(self, args: dict[str, Any], outcome: dict[str, bool]) -> AsyncIterator[list[Bot]]:
        """``list`` with ``stream``: the same bots in the same order, a page at a time, the
        loop free between pages (a list of 100,000 bots never holds a join back, nor the
        daemon's memory). At the end ``outcome["more"]`` says whether the limit left some out."""
        wanted, limit, prefix = _list_args(args)
        after = None
        sent = 0
        while True:
            size = LIST_PAGE if limit == 0 else min(LIST_PAGE, limit - sent)
            if size <= 0:
                page, _ = self.store.list_page(wanted, prefix, after, 1)
                outcome["more"] = bool(page)
                return
            page, after = self.store.list_page(wanted, prefix, after, size)
            if not page:
                outcome["more"] = False
                return
            sent += len(page)
            yield page
            await asyncio.sleep(0)

    def ids(self, args: dict[str, Any]) -> Result:
        requested = args.get("states") or []
        if not isinstance(requested, list):
            raise InvalidInput("states must be a list of state names")
        wanted = [s for s in requested if s in states.ALL_STATES]
        prefix = args.get("prefix") or ""
        return self.store.ids(wanted, prefix if isinstance(prefix, str) else ""), []

    def status(self, args: dict[str, Any]) -> Result:
        lost = self.store.check_files()
        shared = getattr(self.store, "shown_url", None)  # cluster mode: the URL, its password masked
        return {
            "running": True,
            "pid": os.getpid(),
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "socket": str(self.paths.socket),
            "store": "sqlite" if shared is None else "postgresql",
            "database": str(self.paths.database) if shared is None else str(shared),
            # the name the agent registered with (a reload does not rename a running agent)
            "agent": getattr(self.scheduler, "agent", None) or agent_name(self.config),
            "config_file": str(self.paths.config),
            "log": str(self.paths.log),
            "runner": self.config["runner.kind"],
            "runner_detail": self.runner.describe(),
            "counts": self.store.counts(),
            "config": self.config.as_dict(),
        }, [] if lost is None else [f"changes are refused until the daemon restarts: {lost}"]

    def agents(self, args: dict[str, Any]) -> Result:
        """``botsched agents``: the shared registry in cluster mode; alone on SQLite, this
        daemon is the one agent of its store (SPEC §5: one row)."""
        shared = getattr(self.scheduler, "agents", None)
        if shared is not None:
            rows, warnings = shared()
            return {"store": "postgresql", "agents": rows}, warnings
        return {"store": "sqlite", "agents": [local_row(self.config, self.runner, self.store.counts(),
                                                        self.clock.now_us())]}, []

    def handlers(self) -> dict[Op, Handler]:
        """The request-reply ops (the server adds the streams and its own ping/stop/reload)."""
        return {
            Op.CREATE: self.create,
            Op.RESCHEDULE: self.reschedule,
            Op.CANCEL: self.cancel,
            Op.LEAVE: self.leave,
            Op.SHOW: self.show,
            Op.LIST: self.list_bots,
            Op.IDS: self.ids,
            Op.STATUS: self.status,
            Op.AGENTS: self.agents,
        }

    def durable_handlers(self) -> dict[Op, Handler]:
        """What the socket serves instead for the durable writes: the same rules, with the
        commit on the writer thread (group commit) and the loop free meanwhile."""
        return {Op.CREATE: self.create_async, Op.RESCHEDULE: self.reschedule_async, Op.CANCEL: self.cancel_async}

    # -- streams ------------------------------------------------------------------

    async def events(self, args: dict[str, Any]) -> AsyncIterator[StreamEvent]:
        """Past events (of one bot or all), then, with ``follow``, live ones for ever (the
        server ends it when the client leaves); a cancelled bot's stream just ends."""
        bot_id = args.get("id")
        if bot_id is not None:
            self._get(validate_bot_id(bot_id))
        with self.hub.subscribe(bot_id) as subscription:  # before the past: nothing falls between
            last = 0
            for event in self.store.events(bot_id):
                yield event.to_stream_json()
                last = event.seq
            if not args.get("follow"):
                return
            while True:
                live = await subscription.get()
                if live is None:
                    raise DaemonUnavailable("event stream ended: the daemon is stopping or the client fell behind")
                if isinstance(live, Gone):  # the bot was cancelled: its history is over
                    return
                if live.seq > last:
                    yield live.to_stream_json()

    def logs(self, args: dict[str, Any]) -> tuple[str, AsyncIterator[bytes] | None]:
        """``logs BOT_ID``: the bot's id and, when the store keeps the runners' output (cluster
        mode: any agent's bots), that output chunk by chunk; ``None``: it is in the local
        runner log files, which the client reads itself (one machine)."""
        bot_id = str(self._get(validate_bot_id(args.get("id")))["id"])
        read: Callable[[str, int], list[tuple[int, bytes]]] | None = getattr(self.store, "read_logs", None)
        if read is None:
            return bot_id, None

        async def chunks() -> AsyncIterator[bytes]:
            after = 0
            while page := await asyncio.to_thread(read, bot_id, after):
                for seq, data in page:
                    yield data
                    after = seq

        return bot_id, chunks()

    async def wait(self, args: dict[str, Any]) -> Result:
        """Block until the bot reaches the state (default: any terminal one); the bot then."""
        bot_id = validate_bot_id(args.get("id"))
        target = args.get("state")
        if target is not None and target not in states.ALL_STATES:
            raise InvalidInput(f"unknown state {target!r}; states are: {', '.join(states.ALL_STATES)}")
        timeout = args.get("timeout")
        if timeout is not None and (
            not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not 0 <= timeout < 10**9
        ):
            raise InvalidInput("--timeout must be a number of seconds >= 0")
        with self.hub.subscribe(bot_id) as subscription:
            reached = [e["state"] for e in self._get(bot_id)["events"]]

            async def until_reached() -> str:
                while True:
                    if target is not None and target in reached:
                        return str(target)
                    if reached and states.is_terminal(reached[-1]):
                        return reached[-1]
                    event = await subscription.get()
                    if event is None:
                        raise DaemonUnavailable("the daemon is stopping")
                    if isinstance(event, Gone):
                        raise NotFound(f"{bot_id} was cancelled (deleted) while waiting")
                    reached.append(event.state)

            try:
                final = await asyncio.wait_for(until_reached(), timeout)
            except TimeoutError:
                raise WaitTimeout(f"timed out after {timeout}s waiting for {bot_id} (it is {reached[-1]})") from None
        bot = self._get(bot_id)
        if target is not None and final != target:
            raise Conflict(f"{bot_id} finished as {final} without reaching {target}")
        return bot, []


class BulkCreate:
    """One ``create_many`` in progress. Items are checked chunk by chunk as they arrive
    (while the client is still reading its file: two cores, two halves of the work), then
    inserted all together in one transaction, or not at all."""

    def __init__(self, service: BotService) -> None:
        self.service = service
        self.now = service.clock.now_us()
        self.zone = service.zone
        self.bots: list[NewBot] = []
        self.labels: list[str] = []
        self.problems: list[str] = []
        self.count = 0
        self.warned = 0  # one summary warning, not 100,000 lines of them

    def add(self, items: list[Any]) -> None:
        if self.count + len(items) > MAX_BULK:
            raise InvalidInput(f"too many bots in one request (more than {MAX_BULK})")
        for item in items:
            self.count += 1  # an item's line number, unless the client sent the file's
            label = f"line {item.get('line', self.count) if isinstance(item, dict) else self.count}"
            try:
                if not isinstance(item, dict):
                    raise InvalidInput("expected a JSON object")
                item_warnings: list[str] = []
                self.bots.append(self.service._new_bot(item, self.now, item_warnings, self.zone))
                self.warned += bool(item_warnings)
                self.labels.append(label)
            except InvalidInput as exc:
                self.problems.append(f"{label}: {exc.message}")

    def finish(self, want_bots: bool, commit: bool = True) -> Result:
        if self.problems:
            summary = f"{len(self.problems)} invalid line(s); nothing was created"
            raise InvalidInput("\n".join([*self.problems, summary]))
        if not commit:
            return None, []
        service = self.service
        ids = service._insert(self.bots, self.now, self.labels)
        due = [d for d in (service._due_us(bot) for bot in self.bots) if d is not None]
        if due:
            service.scheduler.poke(min(due))
        warnings = [(f"{self.warned} bot(s) join sooner than the stage lead or use a meeting URL that is not "
                     "Zoom, Google Meet, Teams or Webex")] if self.warned else []
        return (service.store.get_many(ids) if want_bots else ids), warnings
