"""The daemon's request handlers: validation and business rules over the store.

Plain synchronous Python with no socket in sight, so it is tested directly. Each handler
takes the request's ``args`` and returns ``(result, warnings)``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from botsched import __version__

from botsched.core import states
from botsched.core.config import Config
from botsched.core.errors import Conflict, InvalidInput
from botsched.core.paths import Paths
from botsched.core.platforms import detect_platform
from botsched.daemon.runners import RunnerError
from botsched.daemon.scheduler import Clock, Scheduler
from botsched.core.model import NewBot
from botsched.daemon.store import Store
from botsched.core.timeparse import ZoneSource, check_join_time, parse_join_at, resolve_zone
from botsched.core.validation import (
    validate_bot_id,
    validate_bot_name,
    validate_dedup_key,
    validate_meeting_url,
    validate_metadata,
)

Result = tuple[Any, list[str]]
_FIELDS = frozenset({"meeting_url", "bot_name", "join_at", "metadata", "deduplication_key", "line"})

#: At most this many bots in one ``create_many`` (a 1M-line file still goes through).
MAX_BULK = 1_000_000
MAX_LIST_LIMIT = 1_000_000_000


def _refuse(error: InvalidInput) -> Callable[[], Any]:
    def zone() -> Any:
        raise error

    return zone


class BotService:
    def __init__(self, store: Store, scheduler: Scheduler, config: Config, clock: Clock, paths: Paths) -> None:
        self.store = store
        self.scheduler = scheduler
        self.clock = clock
        self.paths = paths
        self.started = time.monotonic()
        self.reconfigure(config)

    def reconfigure(self, config: Config) -> None:
        self.config = config
        #: Zone of join times without an offset; resolved once, not per bot. A ``TZ`` that
        #: is no zone refuses those times (exit 2), not the daemon's start.
        try:
            self.zone: ZoneSource = resolve_zone(config["defaults.timezone"])
        except InvalidInput as exc:
            self.zone = _refuse(exc)

    # -- creating -----------------------------------------------------------------

    def _new_bot(self, fields: dict[str, Any], now_us: int, warnings: list[str]) -> NewBot:
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
        join = parse_join_at(join_text, now_us, self.zone)
        warnings.extend(join.warnings)
        warnings.extend(check_join_time(join, now_us, self.config.stage_lead_us))
        return NewBot(url, name, join.text, join.us, metadata, dedup)

    def create(self, args: dict[str, Any]) -> Result:
        now = self.clock.now_us()
        warnings: list[str] = []
        bot = self._new_bot(args, now, warnings)
        [bot_id] = self.store.insert([bot], now)
        self.scheduler.poke(self._due_us(bot))
        return self.store.get(bot_id), warnings

    def create_many(self, items: list[dict[str, Any]], want_bots: bool, dry_run: bool = False) -> Result:
        """All or nothing: every invalid item is named by its line; then one transaction.
        ``dry_run`` only validates."""
        bulk = self.bulk()
        bulk.add(items)
        return bulk.finish(want_bots, commit=not dry_run)

    def bulk(self) -> BulkCreate:
        return BulkCreate(self)

    def _due_us(self, bot: NewBot) -> int | None:
        if bot.join_at_us is None:
            return self.clock.now_us()
        return bot.join_at_us - self.config.stage_lead_us

    # -- changing -----------------------------------------------------------------

    def reschedule(self, args: dict[str, Any]) -> Result:
        bot_id = validate_bot_id(args.get("id"))
        text = args.get("join_at")
        if not isinstance(text, str):
            raise InvalidInput("reschedule needs --join-at")
        now = self.clock.now_us()
        join = parse_join_at(text, now, self.zone)
        warnings = join.warnings + check_join_time(join, now, self.config.stage_lead_us)
        self.store.reschedule(bot_id, join.text, join.us, now)
        self.scheduler.poke(join.us - self.config.stage_lead_us)
        return self.store.get(bot_id), warnings

    def cancel(self, args: dict[str, Any]) -> Result:
        bot_id = validate_bot_id(args.get("id"))
        self.store.delete_scheduled(bot_id)
        return {"id": bot_id, "cancelled": True}, []

    def leave(self, args: dict[str, Any]) -> Result:
        bot_id = validate_bot_id(args.get("id"))
        bot = self.store.get(bot_id)
        # a bot already leaving may be asked too: told to leave if it was not, stopped if it was
        if bot["state"] not in states.IN_MEETING | {states.LEAVING, states.POST_PROCESSING}:
            raise Conflict(f"cannot leave {bot_id}: it is {bot['state']} (leave needs a bot in a meeting or leaving)")
        try:
            note = self.scheduler.runner.leave(bot_id)
        except RunnerError as exc:
            raise Conflict(f"cannot leave {bot_id}: {exc}") from None
        return self.store.get(bot_id), [note] if note else []

    # -- reading ------------------------------------------------------------------

    def show(self, args: dict[str, Any]) -> Result:
        return self.store.get(validate_bot_id(args.get("id"))), []

    def list(self, args: dict[str, Any]) -> Result:
        wanted = args.get("states") or []
        if not isinstance(wanted, list) or any(s not in states.ALL_STATES for s in wanted):
            raise InvalidInput(f"unknown state in {wanted!r}; states are: {', '.join(states.ALL_STATES)}")
        limit = args.get("limit", 100)
        if not isinstance(limit, int) or isinstance(limit, bool) or not 0 <= limit <= MAX_LIST_LIMIT:
            raise InvalidInput(f"--limit must be a whole number from 0 (no limit) to {MAX_LIST_LIMIT}")
        prefix = args.get("dedup_prefix")
        if prefix is not None and not isinstance(prefix, str):
            raise InvalidInput("dedup_prefix must be a string")
        bots, more = self.store.list(wanted, limit, prefix)
        return {"bots": bots, "more": more}, []

    def ids(self, args: dict[str, Any]) -> Result:
        requested = args.get("states") or []
        if not isinstance(requested, list):
            raise InvalidInput("states must be a list of state names")
        wanted = [s for s in requested if s in states.ALL_STATES]
        prefix = args.get("prefix") or ""
        return self.store.ids(wanted, prefix if isinstance(prefix, str) else ""), []

    def status(self, args: dict[str, Any]) -> Result:
        return {
            "running": True,
            "pid": os.getpid(),
            "version": __version__,
            "uptime_seconds": round(time.monotonic() - self.started, 3),
            "socket": str(self.paths.socket),
            "database": str(self.paths.database),
            "config_file": str(self.paths.config),
            "log": str(self.paths.log),
            "runner": self.config["runner.kind"],
            "runner_detail": self.scheduler.runner.describe(),
            "counts": self.store.counts(),
            "config": self.config.as_dict(),
        }, []

    def handlers(self) -> dict[str, Callable[[dict[str, Any]], Result]]:
        """The request-reply ops, by name (streams and bulk are the daemon's)."""
        return {
            "create": self.create,
            "reschedule": self.reschedule,
            "cancel": self.cancel,
            "leave": self.leave,
            "show": self.show,
            "list": self.list,
            "ids": self.ids,
            "status": self.status,
        }


class BulkCreate:
    """One ``create_many`` in progress. Items are checked chunk by chunk as they arrive
    (while the client is still reading its file: two cores, two halves of the work), then
    inserted all together in one transaction, or not at all."""

    def __init__(self, service: BotService) -> None:
        self.service = service
        self.now = service.clock.now_us()
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
                self.bots.append(self.service._new_bot(item, self.now, item_warnings))
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
        ids = service.store.insert(self.bots, self.now, self.labels)
        due = [d for d in (service._due_us(bot) for bot in self.bots) if d is not None]
        if due:
            service.scheduler.poke(min(due))
        warnings = [f"{self.warned} bot(s) join sooner than the stage lead or use a meeting URL that is not "
                    "Zoom, Google Meet, Teams or Webex"] if self.warned else []
        return (service.store.get_many(ids) if want_bots else ids), warnings
