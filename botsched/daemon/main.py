"""``botsched daemon run``: one asyncio process that owns the store, scheduler and runners.

Start-up order matters for safety: private directories, the pid-file lock (one daemon per
home), the store, recovery of in-flight bots, and only then the socket, created inside the
already-private directory with a 0177 umask so it is never reachable by others.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import gc
import logging
import logging.handlers
import os
import select
import signal
import socket
import stat
import struct
import sys
import time
from pathlib import Path
from typing import Any

from botsched.core import config as config_module
from botsched.core import protocol
from botsched.core import states
from botsched.core.errors import BotschedError, Conflict, DaemonUnavailable, InvalidInput, NotFound, WaitTimeout
from botsched.daemon.hub import EventHub, Gone
from botsched.core.paths import Paths, check_socket_path, ensure_private_dir, refuse_foreign_file, resolve_paths
from botsched.daemon.runners import make_runner
from botsched.daemon.runners.base import raise_nofile_limit
from botsched.daemon.scheduler import Clock, Scheduler, SystemClock
from botsched.daemon.service import BotService
from botsched.core.model import Event
from botsched.daemon.store import Store
from botsched.core.validation import validate_bot_id

log = logging.getLogger("botsched.daemon.main")

MAX_CONNECTIONS = 256
#: A client that sends nothing for this long (mid-request or between requests) is dropped.
IDLE_TIMEOUT_S = 60.0
#: How often the database file and its WAL are checked to still be there (each commit checks too).
FILES_CHECK_S = 2.0
#: A bulk create is checked in slices this big, yielding to the scheduler between them...
BULK_SLICE = 200
#: ...and its insert (about this long per bot) waits for a moment with no join due,
BULK_INSERT_US_PER_BOT = 40
#: but not longer than this.
BULK_MAX_WAIT_S = 30.0


class OversizedLine(Exception):
    """A request line over ``protocol.MAX_LINE``: answered, then the connection is closed
    (there is no way to find the next request inside an oversized line)."""


class ClientDeparted(Exception):
    """The client closed its end while a stream (``events --follow``, ``wait``) was open."""


#: A stream client that shut down only its sending side is checked for a full close this often.
HALF_CLOSED_POLL_S = 1.0
#: A refused client gets its error line, then this long to send its request and close.
REFUSE_LINGER_S = 0.5


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, exc: BotschedError) -> None:
    """Answer a connection we will not serve with one error line, then half-close and read
    (and drop) what the client sends until it closes, briefly: closing with its request
    unread would make the client's send fail ("Broken pipe") before it reads the reason."""
    writer.write(protocol.error_reply(exc))
    try:
        await writer.drain()
        if writer.can_write_eof():
            writer.write_eof()
        async with asyncio.timeout(REFUSE_LINGER_S):
            received = 0
            while received < protocol.MAX_LINE and (chunk := await reader.read(65536)):
                received += len(chunk)
    except (TimeoutError, ConnectionError, OSError):
        pass


async def _peer_departed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Return once the client has closed its connection; what it sends before that is read
    and dropped (a stream's connection carries nothing else).

    EOF alone is not enough: a client may shut down only its sending side and go on
    reading the stream. The kernel says "closed for good" with POLLHUP (both directions
    shut); after EOF without it, look again every ``HALF_CLOSED_POLL_S``."""
    try:
        while await reader.read(65536):
            pass
    except (ConnectionError, OSError, asyncio.LimitOverrunError):
        return
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    poller = select.poll()
    poller.register(sock.fileno(), 0)  # POLLHUP / POLLERR are always reported
    while not any(flags & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, flags in poller.poll(0)):
        await asyncio.sleep(HALF_CLOSED_POLL_S)


async def _unless_departed(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, work: Any) -> None:
    """Run a stream (``work``, a coroutine that answers the client) until it ends, or until
    the client closes its end, whichever comes first: a departed client is noticed at once,
    not at the next event (which, for an ended bot, never comes), and its descriptor freed.
    Raises ``ClientDeparted`` in the second case; the stream's own errors propagate."""
    task = asyncio.ensure_future(work)
    watcher = asyncio.ensure_future(_peer_departed(reader, writer))
    try:
        await asyncio.wait((task, watcher), return_when=asyncio.FIRST_COMPLETED)
    finally:
        task.cancel()  # (no-op on the one that is done)
        watcher.cancel()
        await asyncio.wait((task, watcher))  # let the cancelled one finish its clean-up
    if task.cancelled():
        raise ClientDeparted()
    task.result()  # the stream ended by itself: its reply is written, or its error raises


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


def _listen(path: Path) -> socket.socket:
    """Bind the Unix socket safely: never follow or replace what is not ours."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(info.st_mode) or info.st_uid != os.getuid():
            raise BotschedError(f"{path} exists and is not our socket (a symlink or a foreign file): refusing it")
        os.unlink(path)  # stale: the pid lock proved no daemon owns it
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old_umask = os.umask(0o177)
    try:
        sock.bind(str(path))
    finally:
        os.umask(old_umask)
    os.chmod(path, 0o600)
    sock.listen(128)
    sock.setblocking(False)
    return sock


def peer_uid(writer: asyncio.StreamWriter) -> int | None:
    sock = writer.get_extra_info("socket")
    if sock is None:
        return None
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return struct.unpack("3i", creds)[1]


class Daemon:
    def __init__(self, paths: Paths, clock: Clock | None = None) -> None:
        self.paths = paths
        self.clock = clock or SystemClock()
        self.hub = EventHub()
        self.config = config_module.load(paths.config)
        self.store = Store(paths.database, on_events=self._published, on_deleted=self.hub.gone)
        runner = make_runner(self.config, self._report, paths.runner_logs)
        self.scheduler = Scheduler(self.store, runner, self.config, self.clock)
        self.service = BotService(self.store, self.scheduler, self.config, self.clock, paths)
        self._handlers = self.service.handlers()
        self._connections = 0
        self._stopped = asyncio.Event()

    def _report(self, bot_id: str, state: str, detail: str | None) -> None:
        self.scheduler.report(bot_id, state, detail)

    def _published(self, events: list[Event]) -> None:
        """Fan out first (waiters are waiting), then log: one line per change, or one per
        kind of change for a batch (a burst of 1,000 joins must not write 1,000 lines)."""
        self.hub.publish(events)
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
        """Re-read config.toml; a bad file keeps the old config (and says why)."""
        fresh = config_module.load(self.paths.config)
        if fresh["runner.kind"] != self.config["runner.kind"]:
            raise InvalidInput("runner.kind changed: restart the daemon to switch runners")
        self.config = fresh
        self.scheduler.config = fresh
        self.scheduler.runner.reload(fresh)
        self.service.reconfigure(fresh)
        self.scheduler.poke()
        log.info("configuration reloaded")

    # -- connections --------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        try:
            if self._connections > MAX_CONNECTIONS:
                await _refuse(reader, writer, protocol.Refused(
                    f"the daemon (pid {os.getpid()}) has too many connections ({MAX_CONNECTIONS}); try again"))
                return
            uid = peer_uid(writer)
            if uid != os.getuid():
                log.warning("refused a connection from another uid (%s)", uid)
                await _refuse(reader, writer, protocol.Refused(
                    f"the daemon at {self.paths.socket} belongs to another user (uid {os.getuid()}; you are uid "
                    f"{uid}): it serves only its own user"))
                return
            while True:
                line = await self._read_line(reader)
                if line is None:
                    return
                if not line.strip():
                    continue
                keep_open = await self._serve(line, reader, writer)
                await writer.drain()
                if not keep_open:
                    return
        except OversizedLine:
            writer.write(protocol.error_reply(InvalidInput(f"request line over {protocol.MAX_LINE} bytes")))
        except (ConnectionError, asyncio.IncompleteReadError, ClientDeparted):
            pass
        except Exception:  # never let one connection take the daemon down
            log.exception("connection handler failed")
        finally:
            self._connections -= 1
            with contextlib.suppress(Exception):
                await writer.drain()
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_line(self, reader: asyncio.StreamReader, timeout: float = IDLE_TIMEOUT_S) -> bytes | None:
        """One request line; ``None`` at EOF or after the idle timeout. Oversized lines raise."""
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
        except asyncio.IncompleteReadError:
            return None  # EOF (a partial line at EOF is dropped)
        except TimeoutError:
            return None
        except asyncio.LimitOverrunError:
            raise OversizedLine() from None
        return line

    async def _serve(self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; returns whether the connection may carry another."""
        try:
            op, args = protocol.parse_request(protocol.decode(line))
            if op == "events":
                if args.get("follow"):  # may last for ever: end it when the client leaves
                    await _unless_departed(reader, writer, self._events(args, writer))
                else:
                    await self._events(args, writer)
                return True
            if op == "wait":
                await _unless_departed(reader, writer, self._wait(args, writer))
                return True
            if op == "create_many":
                writer.write(await self._create_many(args, reader))
                return True
            if op == "ping":
                writer.write(protocol.reply({"pid": os.getpid(), "version": protocol.VERSION}))
                return True
            if op == "stop":
                writer.write(protocol.reply({"stopping": True}))
                asyncio.get_running_loop().call_soon(self._stopped.set)
                return False
            if op == "reload":
                self.reload()
                writer.write(protocol.reply(self.service.status({})[0]["config"]))
                return True
            handler = self._handlers.get(op)
            if handler is None:
                raise InvalidInput(f"unknown op {op!r}")
            result, warnings = handler(args)
            if op == "status" and self.store.check_files() is not None:
                warnings = [*warnings, f"changes are refused until the daemon restarts: {self.store.files_lost}"]
            writer.write(protocol.reply(result, warnings))
        except BotschedError as exc:
            writer.write(protocol.error_reply(exc))
        except (OversizedLine, ClientDeparted):
            raise
        except Exception as exc:
            log.exception("request failed")
            writer.write(protocol.error_reply(BotschedError(f"internal error: {type(exc).__name__}: {exc}")))
        return True

    async def _create_many(self, args: dict[str, Any], reader: asyncio.StreamReader) -> bytes:
        """Chunk lines ``{"items": [...]}`` follow the request, checked as they arrive, up to
        ``{"end": true, "commit": BOOL}``; then all bots are created in one transaction."""
        gc.disable()  # 100,000 new acyclic objects would trigger full collections: pauses
        try:
            return await self._create_many_unpaused(args, reader)
        finally:
            gc.enable()

    async def _create_many_unpaused(self, args: dict[str, Any], reader: asyncio.StreamReader) -> bytes:
        bulk = self.service.bulk()
        while True:
            line = await self._read_line(reader)
            if line is None:
                raise InvalidInput("bulk create ended before its end line arrived; nothing was created")
            chunk = protocol.decode(line)
            if chunk.get("end") is True:
                break
            items = chunk.get("items")
            if not isinstance(items, list):
                raise InvalidInput("a bulk chunk needs an 'items' array (or 'end': true)")
            for start in range(0, len(items), BULK_SLICE):
                bulk.add(items[start : start + BULK_SLICE])
                await asyncio.sleep(0)  # let a due join through between slices
        commit = chunk.get("commit") is not False
        if commit and not bulk.problems:
            await self._quiet_window(bulk.count * BULK_INSERT_US_PER_BOT)
        try:
            result, warnings = bulk.finish(bool(args.get("bots")), commit=commit)
            if bulk.count >= 10_000:
                self.store.checkpoint()  # fold the big WAL back now, while the window is quiet
            return protocol.reply(result, warnings)
        finally:
            if bulk.count >= 10_000:
                del bulk
                _give_back_memory()

    async def _quiet_window(self, need_us: int) -> None:
        """Wait (serving everything else) until no join is due for ``need_us`` + a margin,
        so a long insert cannot hold a join back; give up waiting after ``BULK_MAX_WAIT_S``."""
        deadline = time.monotonic() + BULK_MAX_WAIT_S
        while time.monotonic() < deadline:
            now = self.clock.now_us()
            due = self.scheduler.next_join_us()
            if due is None or due - now > need_us + 50_000:
                return
            await asyncio.sleep(max((due - now) / 1e6, 0) + 0.01)

    async def _events(self, args: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        """Past events (of one bot or all), then, with ``follow``, live ones until the client leaves."""
        bot_id = args.get("id")
        if bot_id is not None:
            self.store.get(validate_bot_id(bot_id))
        with self.hub.subscribe(bot_id) as subscription:
            last = 0
            for event in self.store.events(bot_id):
                writer.write(protocol.event_line(event.to_stream_json()))
                last = event.seq
                if writer.transport.get_write_buffer_size() > 1 << 20:
                    await writer.drain()
            if not args.get("follow"):
                writer.write(protocol.reply(None))
                return
            await writer.drain()
            while True:
                event = await subscription.get()
                if event is None:
                    raise DaemonUnavailable("event stream ended: the daemon is stopping or the client fell behind")
                if isinstance(event, Gone):  # the bot was cancelled: its history is over
                    writer.write(protocol.reply(None))
                    return
                if event.seq <= last:
                    continue
                writer.write(protocol.event_line(event.to_stream_json()))
                await writer.drain()

    async def _wait(self, args: dict[str, Any], writer: asyncio.StreamWriter) -> None:
        """Block until the bot reaches the state (default: any terminal one)."""
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
            bot = self.store.get(bot_id)
            reached = [e["state"] for e in bot["events"]]

            async def until_reached() -> str:
                nonlocal reached
                while True:
                    if target is not None and target in reached:
                        return target
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
        bot = self.store.get(bot_id)
        if target is not None and final != target:
            raise Conflict(f"{bot_id} finished as {final} without reaching {target}")
        writer.write(protocol.reply(bot))

    # -- life cycle ---------------------------------------------------------------

    async def serve(self, sock: socket.socket, on_ready: Any = None) -> None:
        loop = asyncio.get_running_loop()
        # Start-up objects never die: keep them out of the collector's way, and collect
        # young garbage less often, so a GC pause does not land on a join.
        gc.collect()
        gc.freeze()
        gc.set_threshold(50_000, 50, 100)
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._stopped.set)
        loop.add_signal_handler(signal.SIGHUP, self._reload_from_signal)
        self.scheduler.recover()
        server = await asyncio.start_unix_server(self.handle, sock=sock, limit=protocol.MAX_LINE)
        scheduler_task = asyncio.create_task(self.scheduler.run())
        files_task = asyncio.create_task(self._watch_files())
        log.info("daemon %s listening on %s (runner: %s)", os.getpid(), self.paths.socket,
                 self.scheduler.runner.describe())
        if on_ready is not None:
            on_ready()
        await self._stopped.wait()
        log.info("stopping")
        server.close()
        self.scheduler.stop()
        files_task.cancel()
        self.hub.close()
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler_task
        await self.scheduler.runner.close()
        self.store.close()
        log.info("stopped")

    async def _watch_files(self) -> None:
        """Notice a deleted or replaced database (or WAL) even while nobody writes: the
        store logs it loudly and refuses changes from then on (it also checks each commit)."""
        while self.store.files_lost is None:
            await asyncio.sleep(FILES_CHECK_S)
            try:
                self.store.check_files()
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
        sock = _listen(paths.socket)
        try:
            asyncio.run(daemon.serve(sock, on_ready=None if foreground else _detach_stdio))
        finally:
            with contextlib.suppress(OSError):  # still ours: we hold the pid lock
                os.unlink(paths.socket)
            sock.close()
    finally:
        lock.release()


def _give_back_memory() -> None:
    """After a big bulk create: return the freed heap to the OS, so the daemon's resident
    size goes back down instead of keeping the peak (glibc only; harmless elsewhere)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _detach_stdio() -> None:
    """Tell ``daemon start`` we are up: close the pipe it is reading."""
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    os.close(devnull)
