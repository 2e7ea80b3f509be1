"""``botsched daemon run``: one asyncio process that owns the store, scheduler and runners.

Start-up order matters for safety: private directories (umask 077), the pid-file lock
(one daemon per home), logging, the store, recovery of in-flight bots, and only then the
socket, created inside the already-private directory with a 0177 umask so it is never
reachable by others. ``server.py`` serves the socket; ``service.py`` holds the rules.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import gc
import logging
import logging.handlers
import os
import signal
import socket
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botsched.core import config as config_module
from botsched.core.errors import BotschedError, Conflict, InvalidInput
from botsched.core.model import Event
from botsched.core.paths import (
    Paths,
    check_socket_path,
    ensure_private_dir,
    refuse_foreign_file,
    resolve_paths,
)
from botsched.core.protocol import MAX_LINE
from botsched.daemon.agents import agent_name
from botsched.daemon.calendars import Calendars
from botsched.daemon.feed import EventFeed
from botsched.daemon.http.app import build_app
from botsched.daemon.http.listen import HttpFront, TokenSource, token_path
from botsched.daemon.http.streams import ServiceStreams
from botsched.daemon.hub import EventHub
from botsched.daemon.logship import LogShipper
from botsched.daemon.runners import make_runner
from botsched.daemon.runners.base import raise_nofile_limit
from botsched.daemon.scheduler import Clock, Scheduler, SystemClock
from botsched.daemon.server import MAX_CONNECTIONS, Server, listen
from botsched.daemon.service import BotService
from botsched.daemon.store import SqliteStore
from botsched.daemon.store.base import Store
from botsched.daemon.webhooks.service import Webhooks
from botsched.daemon.webhooks.worker import StoreDb

__all__ = ["FILES_CHECK_S", "MAX_CONNECTIONS", "Daemon", "PidLock", "open_store", "run"]

log = logging.getLogger("botsched.daemon.main")

#: How often the database file and its WAL are checked to still be there (each commit checks too).
FILES_CHECK_S = 2.0


class PidLock:
    """An exclusive ``flock`` on the pid file: the kernel releases it when we die."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o600)
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            other = os.read(self.fd, 32).decode(errors="replace").strip() or "?"
            os.close(self.fd)
            raise Conflict(f"a daemon is already running for this home (pid {other})") from None
        os.ftruncate(self.fd, 0)
        os.write(self.fd, f"{os.getpid()}\n".encode())

    def release(self) -> None:
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)


def open_store(
    config: config_module.Config,
    paths: Paths,
    on_events: Callable[[list[Event]], None],
    on_deleted: Callable[[str], None],
) -> Store:
    """The store the URL names (``BOTSCHED_STORE_URL``, else ``store.url``): a ``postgresql://``
    URL is the shared PostgreSQL database (cluster mode, SPEC §10); empty is the home's SQLite
    file, the embedded default. The PostgreSQL store is imported only here, only then."""
    url = config_module.store_url(config)
    if not url:
        return SqliteStore(paths.database, on_events=on_events, on_deleted=on_deleted)
    if not url.startswith(config_module.POSTGRES_SCHEMES):
        shown = config_module.redact_url(url)
        raise InvalidInput(f"{config_module.STORE_URL_ENV} must be a postgresql:// URL (or empty), not {shown!r}")
    try:
        from botsched.daemon.store.postgres import PostgresStore
    except ImportError:
        raise BotschedError(
            "a postgresql:// store needs the PostgreSQL driver: pip install 'botsched[postgres]'"
        ) from None
    store = PostgresStore(url, on_events=on_events, on_deleted=on_deleted, agent=agent_name(config))
    log.info("store: %s", store.describe())
    return store


def _setup_logging(path: Path, foreground: bool) -> None:
    handler = logging.handlers.RotatingFileHandler(path, maxBytes=5 * 1024 * 1024, backupCount=3)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("botsched")
    root.handlers[:] = [handler]
    if foreground:
        console = logging.StreamHandler(sys.stderr)
        console.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        root.addHandler(console)
    root.setLevel(logging.INFO)
    root.propagate = False
    with contextlib.suppress(OSError):
        os.chmod(path, 0o600)


class Daemon:
    """Wires the parts together; holds the one ``Config`` they all read."""

    def __init__(self, paths: Paths, clock: Clock | None = None) -> None:
        self.paths = paths
        self.clock = clock or SystemClock()
        self.hub = EventHub()
        self.config = config_module.load(paths.config)
        self.store = open_store(self.config, paths, on_events=self._published, on_deleted=self.hub.gone)
        self.runner = make_runner(self.config, self._report, paths.runner_logs)
        self.scheduler = Scheduler(self.store, self.runner, self.config, self.clock)
        if not isinstance(self.store, SqliteStore):  # cluster mode: staging through claims (daemon/cluster.py)
            from botsched.daemon.cluster import ClusterScheduler, supports_claims

            if supports_claims(self.store):
                self.scheduler = ClusterScheduler(self.store, self.runner, self.config, self.clock)  # type: ignore[arg-type]
        self.service = BotService(self.store, self.scheduler, self.runner, self.hub, self.config, self.clock, paths)
        #: cluster mode: the hub hears every agent's events (from the shared events table)
        self.feed: EventFeed | None = None
        #: cluster mode: the runners' output also goes to the shared database (``logs`` anywhere)
        self.log_shipper: LogShipper | None = None
        # the webhook outbox lives in the store's database: the local file, or the shared one
        # (every agent serves the webhook ops; each delivery is claimed by exactly one agent)
        outbox_db: str | StoreDb = str(paths.database)
        if not isinstance(self.store, SqliteStore):
            from botsched.daemon.cluster import agent_name
            from botsched.daemon.store.postgres import PostgresStore

            if isinstance(self.store, PostgresStore):
                outbox_db = StoreDb(functools.partial(self.store.outbox_call, agent=agent_name(self.config)))
                self.feed = EventFeed(self._read_events, self.hub, self.store.last_seq())
                if hasattr(self.scheduler, "on_events"):
                    self.scheduler.on_events = self.feed.notice
                if hasattr(self.runner, "log_sink"):
                    self.log_shipper = LogShipper(self.store.append_logs)
                    self.runner.log_sink = self.log_shipper.add
        self.webhooks: Webhooks | None = Webhooks(outbox_db, self.config, next_join_us=self.scheduler.next_join_us)
        self.calendars = Calendars(self.store, self.service, self.config, self.clock)
        self._stopped = asyncio.Event()
        #: the loop (and its thread) that announcements are handed to (see _published)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = threading.get_ident()
        self.server = Server(self.service, paths.socket, stop=self._stopped.set, reload=self._reload_op,
                             webhooks=self.webhooks, calendars=self.calendars)
        # the socket's HTTP side (SPEC §9), and TCP with [http] listen: the same service, the same rules
        self.http = HttpFront(build_app(self.service, ServiceStreams(self.service), TokenSource(token_path(paths))))
        self.server.http = self.http

    def _report(self, bot_id: str, state: str, detail: str | None) -> None:
        self.scheduler.report(bot_id, state, detail)

    def _read_events(self, after_seq: int, limit: int) -> list[Event]:
        return self.store.events(None, after_seq, limit)

    def _published(self, events: list[Event]) -> None:
        """This daemon's commits. Fan out first (waiters are waiting; in cluster mode through
        the feed, which reads every agent's events in order), then hooks and webhooks (hooks
        run here, on the agent that recorded the change), then log: one line per change, or
        one per kind of change for a batch (a burst of 1,000 joins must not write 1,000 lines)."""
        loop = self._loop
        if loop is not None and threading.get_ident() != self._loop_thread:
            # a store without group commit (PostgreSQL) announces on the writer thread: hop over
            with contextlib.suppress(RuntimeError):  # (the loop closed meanwhile)
                loop.call_soon_threadsafe(self._published, events)
            return
        if self.feed is not None:
            self.feed.wake()
        else:
            self.hub.publish(events)
        if self.webhooks is not None:
            written = int(getattr(self.store, "deliveries_written", 0))
            self.webhooks.published(events, written)  # pokes the worker, starts hooks
        if loop is not None:
            # the log waits two turns of the loop: the requests these events answer (resumed in
            # the next turn) reply first; logging a change costs ~20-60 µs of the loop
            loop.call_soon(loop.call_soon, self._log_changes, events)
        else:
            self._log_changes(events)

    @staticmethod
    def _log_changes(events: list[Event]) -> None:
        if len(events) <= 3:
            for event in events:
                log.info("%s -> %s%s", event.bot_id, event.state, f" ({event.detail})" if event.detail else "")
            return
        kinds: dict[tuple[str, str | None], list[str]] = {}
        for event in events:
            kinds.setdefault((event.state, event.detail), []).append(event.bot_id)
        for (state, detail), bot_ids in kinds.items():
            log.info("%d bot(s) -> %s%s: %s%s", len(bot_ids), state, f" ({detail})" if detail else "",
                     ", ".join(bot_ids[:3]), ", ..." if len(bot_ids) > 3 else "")

    def reload(self) -> None:
        """Re-read config.toml into the one Config everyone reads; a bad file keeps the old
        config (and says why)."""
        fresh = config_module.load(self.paths.config)
        if fresh["runner.kind"] != self.config["runner.kind"]:
            raise InvalidInput("runner.kind changed: restart the daemon to switch runners")
        self.config.replace(fresh)
        if self.webhooks is not None:
            self.webhooks.reconfigure()
        self.scheduler.poke()
        log.info("configuration reloaded")

    def _reload_op(self) -> dict[str, Any]:
        self.reload()
        return self.config.as_dict()

    # -- life cycle ---------------------------------------------------------------

    async def serve(self, sock: socket.socket, on_ready: Callable[[], None] | None = None) -> None:
        loop = asyncio.get_running_loop()
        self._loop, self._loop_thread = loop, threading.get_ident()
        # Start-up objects never die: keep them out of the collector's way, and collect
        # young garbage less often, so a GC pause does not land on a join.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopped.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_from_signal)
        self.runner.start()  # the join process, before recovery arms anything
        self.scheduler.recover()
        await self._start_http()
        server = await asyncio.start_unix_server(self.server.handle, sock=sock, limit=MAX_LINE)
        scheduler_task = asyncio.create_task(self.scheduler.run())
        files_task = asyncio.create_task(self._watch_files())
        if self.webhooks is not None:
            await self.webhooks.start()
        feed_task = asyncio.create_task(self.feed.run()) if self.feed is not None else None
        self.calendars.load()
        calendars_task = asyncio.create_task(self.calendars.run())
        log.info("daemon %s listening on %s (runner: %s)", os.getpid(), self.paths.socket, self.runner.describe())
        if on_ready is not None:
            on_ready()
        await self._stopped.wait()
        log.info("stopping")
        server.close()
        self.scheduler.stop()
        files_task.cancel()
        await self.calendars.stop()
        calendars_task.cancel()
        if feed_task is not None:
            feed_task.cancel()
        self.hub.close()
        await self.http.close()
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler_task
        await self.runner.close()
        if self.log_shipper is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.log_shipper.close)
        if self.webhooks is not None:
            await self.webhooks.close()
        self.service.writer.stop()  # its last group is committed first
        self.store.close()
        log.info("stopped")

    async def _start_http(self) -> None:
        """The HTTP front, and its TCP listener when ``[http] listen`` is set. A listener that
        cannot start (off loopback without TLS, a port in use) stops the start with its reason."""
        await self.http.start()
        listen = self.config["http.listen"]
        if not listen:
            return
        try:
            await self.http.start_tcp(listen, self.config["http.tls_cert"] or None, self.config["http.tls_key"] or None)
        except BotschedError:
            await self.http.close()
            self.store.close()
            raise

    async def _watch_files(self) -> None:
        """Notice a deleted or replaced database (or WAL) even while nobody writes: the
        store logs it loudly and refuses changes from then on (it also checks each commit)."""
        while True:
            await asyncio.sleep(FILES_CHECK_S)
            try:
                if self.store.check_files() is not None:
                    return
            except Exception:  # never let the watch die silently
                log.exception("checking the database files failed")

    def _reload_from_signal(self) -> None:
        try:
            self.reload()
        except BotschedError as exc:
            log.error("reload failed, keeping the old configuration: %s", exc.message)


def run(foreground: bool = True) -> None:
    """Entry point of ``botsched daemon run``. Raises ``BotschedError`` for clear failures.

    When started in the background by ``daemon start``, stdout/stderr are a pipe the
    starter reads: errors appear there, and closing them signals "ready".
    """
    os.umask(0o077)  # the database, WAL, log and runner logs are the user's alone
    raise_nofile_limit()  # soft RLIMIT_NOFILE up to the hard one: each runner costs descriptors
    paths = resolve_paths()
    for directory in {paths.socket.parent, paths.database.parent, paths.log.parent, paths.pid.parent,
                      paths.runner_logs}:
        ensure_private_dir(directory)
    check_socket_path(paths.socket)
    for path in (paths.pid, paths.log, paths.database, Path(f"{paths.database}-wal"), Path(f"{paths.database}-shm")):
        refuse_foreign_file(path)
    lock = PidLock(paths.pid)
    try:
        _setup_logging(paths.log, foreground)
        daemon = Daemon(paths)
        sock = listen(paths.socket)
        try:
            asyncio.run(daemon.serve(sock, on_ready=None if foreground else _detach_stdio))
        finally:
            with contextlib.suppress(OSError):  # still ours: we hold the pid lock
                os.unlink(paths.socket)
            sock.close()
    finally:
        lock.release()


def _detach_stdio() -> None:
    """Tell ``daemon start`` we are up: close the pipe it is reading."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
