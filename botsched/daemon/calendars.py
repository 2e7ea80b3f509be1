"""The calendars the daemon follows (``calendar add``): poll each on its own schedule and
keep its bots in step with it, under the rules of ``calendar sync``.

Off the join path: fetching, parsing and planning run in worker threads (at most
``MAX_POLLS`` at once), never on the event loop; only the store writes (each a short
transaction, the service's create/reschedule/cancel) happen on the loop, with a yield
between them so a due join is never held back by a big sync.

- Each calendar's bots carry keys ``ical/<NAME>:...`` (``calsync.keys``): calendars never
  touch each other's bots, nor a file sync's.
- A poll that fails (unreachable, 404, a file that is not a calendar) changes no bot: the
  error is kept for ``calendar list`` and the next try backs off (``calsync.follow``).
- A ``304`` re-plans from the last text this daemon read (meetings of a series enter the
  window as days pass although the feed is unchanged); after a restart the first poll
  asks for the whole feed again.
- Passwords are read from their file or variable at each poll and never logged; the
  sources' messages never contain them.
- ``remove`` waits for a poll in flight, deletes the calendar, then cancels its
  ``scheduled`` bots (bots already staged or in a meeting are left alone and named).

``botsched.calsync`` (icalendar: ~0.1 s to import) is imported only once a calendar is
followed, so a daemon without calendars starts as fast as before.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from botsched.core import states
from botsched.core.config import Config
from botsched.core.errors import BotschedError, Conflict, InvalidInput, NotFound
from botsched.core.protocol import Op
from botsched.core.timeparse import format_instant, resolve_zone
from botsched.core.validation import validate_bot_name
from botsched.daemon.scheduler import Clock
from botsched.daemon.service import BotService, Handler, Result
from botsched.daemon.store.base import Store
from botsched.daemon.waiting import wait_event

if TYPE_CHECKING:  # pragma: no cover
    from botsched.calsync import Action, Expansion
    from botsched.calsync.follow import PollState
    from botsched.calsync.sources import Fetched, Source, Validators

log = logging.getLogger("botsched.daemon.calendars")

#: Polls fetching or parsing at once (two cores, shared with the joins).
MAX_POLLS = 2
#: The loop looks again at least this often (a wall clock stepped, a file changed).
MAX_SLEEP_S = 60.0
#: From this many creates on, one transaction (``create_many``), as ``calendar sync`` does.
BULK_CREATES = 20
#: ``--days`` at most a year, as for ``calendar sync``.
MAX_DAYS = 366
DEFAULT_DAYS = 14
#: A fetch gives up after this long (a daemon stop waits for one in flight at most this).
FETCH_TIMEOUT_S = 20.0

AsyncHandler = Callable[[dict[str, Any]], Awaitable[Result]]


@dataclass
class Followed:
    """One followed calendar as the daemon holds it."""

    name: str
    source: Source
    every_us: int
    days: int
    join_offset_us: int
    bot_name: str | None
    poll: PollState
    created_us: int
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    #: The last text read (for re-planning on a 304); not kept across restarts.
    text: bytes | None = None
    busy: bool = False
    removed: bool = False
    last_counts: dict[str, int] | None = None

    def source_json(self) -> dict[str, Any]:
        s = self.source
        return {"kind": s.kind, "location": s.location, "user": s.user, "password_file": s.password_file,
                "password_env": s.password_env}

    def options_json(self) -> dict[str, Any]:
        return {"every_us": self.every_us, "days": self.days, "join_offset_us": self.join_offset_us,
                "bot_name": self.bot_name}


def _iso(us: int | None) -> str | None:
    return None if us is None else format_instant(us, 0)


def source_of(data: Any) -> Source:
    """A source as a client sends it (``calendar add``), checked again here: the daemon
    decides what it fetches."""
    from botsched.calsync import sources
    if not isinstance(data, dict):
        raise InvalidInput("source must be an object")
    kind, location = data.get("kind"), data.get("location")
    if kind not in ("file", "http", "caldav") or not isinstance(location, str) or not location:
        raise InvalidInput("source needs a kind (file, http or caldav) and a location")
    extra = {key: data.get(key) for key in ("user", "password_file", "password_env")}
    for key, value in extra.items():
        if value is not None and (not isinstance(value, str) or not value or not value.isprintable()):
            raise InvalidInput(f"source {key} must be a non-empty string")
    if kind == "file":
        if not location.startswith("/"):
            raise InvalidInput("a calendar file is given by its absolute path")
        return sources.parse_source(location, **extra)
    text = ("caldav+" + location) if kind == "caldav" else location
    return sources.parse_source(text, **extra)


class Calendars:
    """The followed calendars: their ops, and the task that polls them."""

    def __init__(self, store: Store, service: BotService, config: Config, clock: Clock) -> None:
        self.store = store
        self.service = service
        self.config = config
        self.clock = clock
        self.followed: dict[str, Followed] = {}
        self._wake = asyncio.Event()
        self._slots = asyncio.Semaphore(MAX_POLLS)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._pool = ThreadPoolExecutor(max_workers=MAX_POLLS, thread_name_prefix="calendar")
        self._stopping = False

    # -- life cycle -----------------------------------------------------------------

    def load(self) -> None:
        """The calendars of the store; one that can no longer be read is logged and left out."""
        records = self.store.calendars()
        if not records:
            return
        from botsched.calsync import follow

        for record in records:
            name = record["name"]
            try:
                options = record["options"]
                self.followed[name] = Followed(
                    name, source_of(record["source"]), int(options["every_us"]), int(options["days"]),
                    int(options.get("join_offset_us") or 0), options.get("bot_name"),
                    follow.state_from_json(record["poll"]), int(record["created_us"]))
            except (BotschedError, KeyError, TypeError, ValueError) as exc:
                log.error("calendar %s cannot be read from the database, not polled: %s", name,
                          exc.message if isinstance(exc, BotschedError) else type(exc).__name__)

    async def run(self) -> None:
        """Start each due calendar's poll; sleep until the next is due (or something changes)."""
        while not self._stopping:
            now = self.clock.now_us()
            wait_s = MAX_SLEEP_S
            for cal in list(self.followed.values()):
                if cal.busy:
                    continue
                from botsched.calsync import follow  # (only once a calendar is followed)

                wait_us = follow.wait_us(cal.poll, now, cal.every_us)
                if wait_us == 0:
                    self._start_poll(cal)
                else:
                    wait_s = min(wait_s, wait_us / 1e6)
            self._wake.clear()
            await wait_event(self._wake, max(wait_s, 0.01))

    async def stop(self) -> None:
        self._stopping = True
        self._wake.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        self._pool.shutdown(wait=False, cancel_futures=True)

    def _start_poll(self, cal: Followed) -> None:
        cal.busy = True

        async def poll() -> None:
            try:
                await self._poll(cal, force=False, dry_run=False)
            except asyncio.CancelledError:
                raise
            except BotschedError:
                pass  # recorded in the poll state and logged by _poll
            except Exception:  # never let one calendar stop the others
                log.exception("calendar %s: poll failed", cal.name)
            finally:
                cal.busy = False
                self._wake.set()

        task = asyncio.create_task(poll())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # -- one poll -------------------------------------------------------------------

    def _fetch_and_expand(self, cal: Followed, validators: Validators, now_us: int,
                          email: str, zone_name: str) -> tuple[Fetched, Expansion | None, bytes | None]:
        """In a worker thread: fetch, and read the text (the new one, or the last one on a 304)."""
        from botsched import calsync
        from botsched.calsync import sources
        fetched = sources.fetch(cal.source, validators, timeout_s=FETCH_TIMEOUT_S)
        text = fetched.data if fetched.data is not None else cal.text
        if text is None:
            return fetched, None, None
        expansion = calsync.expand(text, now_us, days=cal.days, join_offset_us=cal.join_offset_us, email=email,
                                   zone=resolve_zone(zone_name), source=cal.source.display, calendar=cal.name)
        return fetched, expansion, text

    async def _in_thread(self, work: Callable[..., Any], *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._pool, work, *args)

    async def _poll(self, cal: Followed, force: bool, dry_run: bool) -> dict[str, Any]:
        """Fetch, plan and (unless ``dry_run``) apply; the report ``calendar sync`` prints.
        A failure is recorded (and backs off) and raised as the ``BotschedError`` it was."""
        from botsched import calsync
        from botsched.calsync import follow
        from botsched.calsync.sources import SourceError, Validators
        async with cal.lock:
            if cal.removed:
                raise NotFound(f"no followed calendar named {cal.name!r}")
            now = self.clock.now_us()
            # A forced poll (``calendar sync NAME``), or one with no text to re-plan from,
            # asks for the whole feed: a 304 would leave nothing to plan with.
            validators = Validators() if force or cal.text is None else cal.poll.validators
            report: dict[str, Any] = {"name": cal.name, "dry_run": dry_run, "unchanged": False, "days": cal.days}
            try:
                async with self._slots:
                    fetched, expansion, text = await self._in_thread(
                        self._fetch_and_expand, cal, validators, now, self.config["calendar.email"],
                        self.config["defaults.timezone"])
                if expansion is None:  # a 304 with nothing read before (cannot happen: no validators sent)
                    raise SourceError(f"{cal.source.display}: the server said unchanged, but nothing was read yet")
                bots, _ = self.store.list_bots((), 0, calsync.key_prefix(cal.name))
                existing = cast(list[dict[str, Any]], bots)
                actions = await self._in_thread(
                    lambda: calsync.plan(expansion.wanted, existing, now, skipped=expansion.skipped,
                                         horizon_us=expansion.window_end_us + cal.join_offset_us,
                                         calendar=cal.name))
                if cal.removed:
                    raise NotFound(f"no followed calendar named {cal.name!r}")
                failures = [] if dry_run else await self._apply(cal, actions)
            except BotschedError as exc:
                retry = exc.retry_after_us if isinstance(exc, SourceError) else None
                if not dry_run:
                    cal.poll = follow.failed(cal.poll, now, cal.every_us, exc.message, retry)
                    self._save(cal)
                log.warning("calendar %s: %s (next try %s)", cal.name, exc.message.splitlines()[0],
                            _iso(cal.poll.next_poll_us))
                raise
            if dry_run:
                pass
            else:
                cal.text = text
                cal.poll = follow.succeeded(cal.poll, now, cal.every_us, fetched.validators, not fetched.unchanged)
                if failures:  # the calendar was read; some changes were refused (say why, keep the success)
                    cal.poll = follow.replace_error(cal.poll, now, failures[0])
                cal.last_counts = calsync.counts(actions)
                self._save(cal)
                done = {k: v for k, v in cal.last_counts.items() if v and k in ("create", "reschedule", "cancel")}
                if done or failures:
                    log.info("calendar %s: %s%s", cal.name, ", ".join(f"{k} {v}" for k, v in done.items()) or
                             "nothing changed", f"; {len(failures)} failed: {failures[0]}" if failures else "")
            report.update({
                "unchanged": fetched.unchanged,
                "window": {"start": calsync.instant_text(expansion.window_start_us),
                           "end": calsync.instant_text(expansion.window_end_us)},
                "actions": [item.as_json() for item in actions],
                "counts": calsync.counts(actions),
                "warnings": expansion.warnings[:20],
            })
            return report

    def _save(self, cal: Followed) -> None:
        from botsched.calsync import follow
        if not cal.removed:
            self.store.save_calendar_poll(cal.name, follow.state_as_json(cal.poll))

    async def _apply(self, cal: Followed, actions: list[Action]) -> list[str]:
        """``calendar sync``'s order: cancels (a replaced bot frees its key), reschedules,
        creates (many in one transaction). One refused change is marked ``failed`` and
        the rest go on; the messages of the failures are returned."""
        failures: list[str] = []
        not_cancelled: set[str] = set()
        service = self.service

        def failed(item: Action, verb: str, exc: BotschedError) -> None:
            if exc.exit_code not in (2, 3, 4):
                raise exc
            item.action, item.reason = "failed", f"{verb} failed: {exc.message}"
            failures.append(f"{item.summary}: {verb} failed: {exc.message}")

        for item in actions:
            if item.action == "cancel":
                try:
                    service.cancel({"id": item.bot_id})
                except BotschedError as exc:
                    not_cancelled.add(item.key)
                    failed(item, "cancel", exc)
                await asyncio.sleep(0)
        for item in actions:
            if item.action == "reschedule":
                try:
                    service.reschedule({"id": item.bot_id, "join_at": item.join_at})
                except BotschedError as exc:
                    failed(item, "reschedule", exc)
                await asyncio.sleep(0)
        creates = [item for item in actions if item.action == "create"]
        for item in creates:
            if item.key in not_cancelled:
                item.action, item.reason = "failed", "create skipped: the bot it replaces could not be cancelled"
        creates = [item for item in creates if item.action == "create"]
        fields = [{"meeting_url": item.meeting_url, "join_at": item.join_at, "deduplication_key": item.key,
                   "metadata": {**item.metadata, "calendar": cal.name},
                   **({"bot_name": cal.bot_name} if cal.bot_name is not None else {})} for item in creates]
        if len(creates) >= BULK_CREATES:
            bulk = service.bulk()
            bulk.add(fields)
            try:
                ids, _ = await service.finish_bulk(bulk, want_bots=False, commit=True)
            except BotschedError as exc:
                if exc.exit_code not in (2, 4):
                    raise
            else:
                for item, bot_id in zip(creates, ids, strict=True):
                    item.bot_id, item.state = bot_id, states.SCHEDULED
                return failures
        for item, one in zip(creates, fields, strict=True):  # few, or the bulk was refused: name each failure
            try:
                bot, _ = service.create(one)
                item.bot_id, item.state = bot["id"], bot["state"]
            except BotschedError as exc:
                failed(item, "create", exc)
            await asyncio.sleep(0)
        return failures

    # -- the ops --------------------------------------------------------------------

    def _get(self, name: Any) -> Followed:
        if not isinstance(name, str) or not name:
            raise InvalidInput("which calendar? give its name (see: botsched calendar list)")
        cal = self.followed.get(name)
        if cal is None:
            raise NotFound(f"no followed calendar named {name!r} (see: botsched calendar list)")
        return cal

    async def add(self, args: dict[str, Any]) -> Result:
        """A new followed calendar, polled at once: the result has the first sync's report
        (or, when it failed, the calendar is kept and the error is a warning)."""
        from botsched import calsync
        from botsched.calsync import follow
        source = source_of(args.get("source"))
        name = args.get("name")
        if name is None:
            name = follow.default_name(source.kind, source.location)
        if not isinstance(name, str):
            raise InvalidInput("--name must be a string")
        calsync.validate_calendar_name(name)
        every = args.get("every_us", follow.DEFAULT_EVERY_US)
        if not isinstance(every, int) or isinstance(every, bool):
            raise InvalidInput("--every must be a duration like 10m")
        follow.check_every(every, int(self.config["calendar.min_every_seconds"] * 1_000_000))
        days = args.get("days", DEFAULT_DAYS)
        if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
            raise InvalidInput(f"--days must be between 1 and {MAX_DAYS}, not {days}")
        offset = args.get("join_offset_us", 0)
        if not isinstance(offset, int) or isinstance(offset, bool) or abs(offset) > 86_400_000_000:
            raise InvalidInput("--join-offset must be a duration of at most a day, like -1m")
        bot_name = args.get("bot_name")
        if bot_name is not None:
            bot_name = validate_bot_name(bot_name)
        if name in self.followed:
            raise Conflict(f"a calendar named {name!r} is already followed (another --name, or remove it first)")
        for other in self.followed.values():
            if (other.source.kind, other.source.location) == (source.kind, source.location):
                raise Conflict(f"{source.display} is already followed as {other.name!r}: following it twice "
                               "would put two bots in each meeting")
        now = self.clock.now_us()
        cal = Followed(name, source, every, days, offset, bot_name, follow.first_state(now), now, busy=True)
        if not self.store.add_calendar(name, cal.source_json(), cal.options_json(), follow.state_as_json(cal.poll),
                                       now):
            raise Conflict(f"a calendar named {name!r} is already followed")
        self.followed[name] = cal
        log.info("calendar %s added: %s every %ss", name, source.display, every // 1_000_000)
        warnings: list[str] = []
        try:
            report: dict[str, Any] | None = await self._poll(cal, force=True, dry_run=False)
        except BotschedError as exc:
            report = None
            warnings.append(f"the first sync failed: {exc.message.splitlines()[0]}; it is tried again "
                            f"at {_iso(cal.poll.next_poll_us)} (see: botsched calendar list)")
        finally:
            cal.busy = False
            self._wake.set()
        return {"calendar": self.describe(cal), "sync": report}, warnings

    async def remove(self, args: dict[str, Any]) -> Result:
        from botsched import calsync
        cal = self._get(args.get("name"))
        async with cal.lock:  # a poll in flight finishes first
            if not self.store.remove_calendar(cal.name):
                raise NotFound(f"no followed calendar named {cal.name!r}")
            cal.removed = True
            self.followed.pop(cal.name, None)
        bots, _ = self.store.list_bots((), 0, calsync.key_prefix(cal.name))
        cancelled: list[str] = []
        left: list[dict[str, Any]] = []
        for bot in bots:
            if bot["state"] in calsync.TERMINAL:
                continue
            if bot["state"] == states.SCHEDULED:
                try:
                    self.service.cancel({"id": bot["id"]})
                    cancelled.append(bot["id"])
                    await asyncio.sleep(0)
                    continue
                except BotschedError as exc:
                    if exc.exit_code not in (3, 4):
                        raise
                    if exc.exit_code == 3:
                        continue
                    bot = self.store.get(bot["id"]) or bot
            left.append({"id": bot["id"], "state": bot["state"]})
        log.info("calendar %s removed: %d scheduled bot(s) cancelled, %d left alone", cal.name, len(cancelled),
                 len(left))
        return {"name": cal.name, "cancelled": cancelled, "left_alone": left}, []

    async def sync(self, args: dict[str, Any]) -> Result:
        """``calendar sync [NAME]``: poll now (the whole feed), one calendar or all; reports."""
        name = args.get("name")
        dry_run = bool(args.get("dry_run"))
        chosen = [self._get(name)] if name is not None else sorted(self.followed.values(), key=lambda c: c.name)
        reports: list[dict[str, Any]] = []
        warnings: list[str] = []
        first_error: BotschedError | None = None
        for cal in chosen:
            cal.busy = True
            try:
                reports.append(await self._poll(cal, force=True, dry_run=dry_run))
            except BotschedError as exc:
                if name is not None:
                    raise
                first_error = first_error or exc
                reports.append({"name": cal.name, "error": exc.message.splitlines()[0]})
            finally:
                cal.busy = False
                self._wake.set()
        for report in reports:
            warnings.extend(f"{report['name']}: {w}" for w in report.pop("warnings", []))
        if first_error is not None and len(chosen) == 1:
            raise first_error
        return reports, warnings

    def list_calendars(self, args: dict[str, Any]) -> Result:
        return [self.describe(cal) for cal in sorted(self.followed.values(), key=lambda c: c.name)], []

    def describe(self, cal: Followed) -> dict[str, Any]:
        """A followed calendar as ``calendar list --json`` shows it: where the password
        comes from, never a password."""
        from botsched import calsync
        from botsched.calsync import follow
        poll = cal.poll
        live = [b for b in self.store.list_bots((), 0, calsync.key_prefix(cal.name))[0]
                if b["state"] not in calsync.TERMINAL]
        password = (f"file {cal.source.password_file}" if cal.source.password_file else
                    f"env {cal.source.password_env}" if cal.source.password_env else None)
        if poll.last_attempt_us is None:
            status = "new"
        else:
            status = "failing" if follow.failing(poll) else "ok"
        return {
            "name": cal.name,
            "source": cal.source.display,
            "kind": cal.source.kind,
            "user": cal.source.user,
            "password": password,
            "every_seconds": cal.every_us // 1_000_000,
            "days": cal.days,
            "join_offset_seconds": cal.join_offset_us / 1_000_000,
            "bot_name": cal.bot_name,
            "status": status,
            "bots": len(live),
            "scheduled": sum(1 for b in live if b["state"] == states.SCHEDULED),
            "last_success": _iso(poll.last_success_us),
            "last_change": _iso(poll.last_change_us),
            "last_error": poll.last_error,
            "last_error_at": _iso(poll.last_error_us),
            "failures": poll.failures,
            "next_poll": _iso(poll.next_poll_us),
            "polling": cal.busy,
            "last_counts": cal.last_counts,
            "added": _iso(cal.created_us),
        }

    def handlers(self) -> dict[Op, Handler]:
        """The request-reply ops (``add``, ``remove`` and ``sync`` are ``async_handlers``)."""
        return {Op.CALENDAR_LIST: self.list_calendars}

    def async_handlers(self) -> dict[Op, AsyncHandler]:
        return {Op.CALENDAR_ADD: self.add, Op.CALENDAR_REMOVE: self.remove, Op.CALENDAR_SYNC: self.sync}

