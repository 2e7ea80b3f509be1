"""The socket side of the daemon: who may connect, the line framing, and ONE table from
``Op`` to handler for every request, streams included.

The service decides what a request means; this module only reads lines, hands them to
the handler for their op, and writes the replies (``core/protocol.py`` has the wire format).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import inspect
import logging
import os
import select
import socket
import stat
import struct
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from pathlib import Path
from typing import TYPE_CHECKING, Any

from botsched.core import protocol
from botsched.core.errors import BotschedError, DaemonUnavailable, InvalidInput
from botsched.core.protocol import Op
from botsched.daemon.service import BotService, Handler

if TYPE_CHECKING:
    from botsched.daemon.calendars import Calendars
    from botsched.daemon.http.listen import HttpFront
    from botsched.daemon.webhooks.service import Webhooks

log = logging.getLogger("botsched.daemon.main")

MAX_CONNECTIONS = 256
#: A client that sends nothing for this long (mid-request or between requests) is dropped.
IDLE_TIMEOUT_S = 60.0
#: A bulk create is checked in slices this big, yielding to the scheduler between them.
BULK_SLICE = 200
#: A bulk this big gives its memory back to the OS once answered.
BULK_TRIM = 10_000
#: A stream client that shut down only its sending side is checked for a full close this often.
HALF_CLOSED_POLL_S = 1.0
#: A refused client gets its error line, then this long to send its request and close.
REFUSE_LINGER_S = 0.5
#: Past events are flushed to a slow reader once this much is buffered.
STREAM_BUFFER = 1 << 20

#: How an HTTP request line starts (SPEC §9: the socket also answers HTTP/1.1); a JSON-lines
#: request starts with ``{``, so one byte tells them apart, eight at most.
HTTP_METHODS = (b"GET ", b"POST ", b"PATCH ", b"DELETE ", b"PUT ", b"HEAD ", b"OPTIONS ")

#: Answers one request; returns whether the connection may carry another.
OpHandler = Callable[[dict[str, Any], asyncio.StreamReader, asyncio.StreamWriter], Awaitable[bool]]


class OversizedLine(Exception):
    """A request line over ``protocol.MAX_LINE``: answered, then the connection is closed
    (there is no way to find the next request inside an oversized line)."""


class ClientDeparted(Exception):
    """The client closed its end while a stream (``events --follow``, ``wait``) was open."""


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


async def _unless_departed(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, work: Coroutine[Any, Any, None]
) -> None:
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


async def sniff_http(reader: asyncio.StreamReader, timeout: float) -> bytes | None:
    """The first bytes of a connection if they start an HTTP request line (consumed: the
    HTTP front is fed them); else ``None``, with what was read put back for the JSON-lines
    loop. Reads byte by byte only while the bytes are a method's prefix. ``TimeoutError``
    when the client sends nothing in time."""
    head = b""
    async with asyncio.timeout(timeout):
        while not head.startswith(HTTP_METHODS) and any(m.startswith(head) for m in HTTP_METHODS):
            byte = await reader.read(1)
            if not byte:
                break
            head += byte
    if head.startswith(HTTP_METHODS):
        return head
    getattr(reader, "_buffer")[:0] = head  # noqa: B009 (StreamReader has no public unread)
    return None


def listen(path: Path) -> socket.socket:
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
    uid: int = struct.unpack("3i", creds)[1]
    return uid


async def _read_line(reader: asyncio.StreamReader, timeout: float = IDLE_TIMEOUT_S) -> bytes | None:
    """One request line; ``None`` at EOF or after the idle timeout. Oversized lines raise."""
    try:
        return await asyncio.wait_for(reader.readuntil(b"\n"), timeout)
    except asyncio.IncompleteReadError:
        return None  # EOF (a partial line at EOF is dropped)
    except TimeoutError:
        return None
    except asyncio.LimitOverrunError:
        raise OversizedLine() from None


def give_back_memory() -> None:
    """After a big bulk create: return the freed heap to the OS, so the daemon's resident
    size goes back down instead of keeping the peak (glibc only; harmless elsewhere)."""
    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


class Server:
    """Serves connections for the service; ``stop`` and ``reload`` are the daemon's to do."""

    def __init__(
        self,
        service: BotService,
        socket_path: Path,
        stop: Callable[[], None],
        reload: Callable[[], dict[str, Any]],
        webhooks: Webhooks | None = None,
        calendars: Calendars | None = None,
    ) -> None:
        self.service = service
        self.socket_path = socket_path
        self._stop = stop
        self._reload = reload
        self._connections = 0
        #: Serves the connections that speak HTTP (``daemon.main`` sets it); ``None``: JSON lines only.
        self.http: HttpFront | None = None
        self.ops: dict[Op, OpHandler] = {op: self._request(handler) for op, handler in
                                         {**service.handlers(), **service.durable_handlers()}.items()}
        self.ops.update({
            Op.EVENTS: self._events,
            Op.LIST: self._list,
            Op.WAIT: self._wait,
            Op.LOGS: self._logs,
            Op.CREATE_MANY: self._create_many,
            Op.PING: self._ping,
            Op.STOP: self._stop_op,
            Op.RELOAD: self._reload_op,
        })
        # SPEC section 8 (the rules: botsched/daemon/webhooks/service.py)
        self.ops.update({
            Op.WEBHOOK_ADD: self._webhook_op(webhooks, "add"),
            Op.WEBHOOK_LIST: self._webhook_op(webhooks, "list"),
            Op.WEBHOOK_REMOVE: self._webhook_op(webhooks, "remove"),
            Op.WEBHOOK_TEST: self._webhook_op(webhooks, "test"),
            Op.WEBHOOK_DELIVERIES: self._webhook_op(webhooks, "deliveries"),
            Op.WEBHOOK_REPLAY: self._webhook_op(webhooks, "replay"),
        })
        if calendars is not None:  # the followed calendars (issue 16)
            self.ops.update({op: self._request(handler) for op, handler in calendars.handlers().items()})
            self.ops.update({op: self._request(handler) for op, handler in calendars.async_handlers().items()})
        self._list_whole = self._request(service.list_bots)
        missing = set(Op) - set(self.ops)
        assert not missing, f"ops without a handler: {missing}"

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        handed_over = False
        try:
            if self._connections > MAX_CONNECTIONS:
                await _refuse(reader, writer, protocol.Refused(
                    f"the daemon (pid {os.getpid()}) has too many connections ({MAX_CONNECTIONS}); try again"))
                return
            uid = peer_uid(writer)
            own = uid == os.getuid()
            if self.http is not None and (head := await self._sniff(reader, own)):
                if not own:
                    log.warning("refused a connection from another uid (%s)", uid)
                # the same cap and the same uid rule: the front answers a foreign peer 403, nothing else
                self.http.accept_stream(reader, writer, head, refused=not own, on_close=self._http_closed)
                handed_over = True
                return
            if not own:
                log.warning("refused a connection from another uid (%s)", uid)
                await _refuse(reader, writer, protocol.Refused(
                    f"the daemon at {self.socket_path} belongs to another user (uid {os.getuid()}; you are uid "
                    f"{uid}): it serves only its own user"))
                return
            while True:
                line = await _read_line(reader)
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
        except (ConnectionError, asyncio.IncompleteReadError, ClientDeparted, TimeoutError):
            pass
        except Exception:  # never let one connection take the daemon down
            log.exception("connection handler failed")
        finally:
            if not handed_over:  # (a handed-over connection is the HTTP front's: it ends in _http_closed)
                self._connections -= 1
                with contextlib.suppress(Exception):
                    await writer.drain()
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    @staticmethod
    async def _sniff(reader: asyncio.StreamReader, own: bool) -> bytes | None:
        """``sniff_http``; a silent peer of ours is dropped like an idle one (``TimeoutError``),
        a silent foreign one still gets its refusal line."""
        try:
            return await sniff_http(reader, IDLE_TIMEOUT_S if own else REFUSE_LINGER_S)
        except TimeoutError:
            if own:
                raise
            return None

    def _http_closed(self) -> None:
        self._connections -= 1

    async def _serve(self, line: bytes, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Answer one request; returns whether the connection may carry another."""
        try:
            name, args = protocol.parse_request(protocol.decode(line))
            try:
                op = Op(name)
            except ValueError:
                raise InvalidInput(f"unknown op {name!r}") from None
            return await self.ops[op](args, reader, writer)
        except BotschedError as exc:
            writer.write(protocol.error_reply(exc))
        except (OversizedLine, ClientDeparted):
            raise
        except Exception as exc:
            log.exception("request failed")
            writer.write(protocol.error_reply(BotschedError(f"internal error: {type(exc).__name__}: {exc}")))
        return True

    # -- the handlers -------------------------------------------------------------

    @staticmethod
    def _request(handler: Handler) -> OpHandler:
        """A request-reply op (the service's, a calendar's, a webhook's; sync or awaited): one reply line."""

        async def serve(args: dict[str, Any], _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
            answer = handler(args)
            result, warnings = await answer if inspect.isawaitable(answer) else answer
            writer.write(protocol.reply(result, warnings))
            return True

        return serve

    @classmethod
    def _webhook_op(cls, webhooks: Webhooks | None, name: str) -> OpHandler:
        """A webhook op (SPEC section 8); a daemon without an outbox says so (exit 5)."""

        async def unavailable(_args: dict[str, Any]) -> tuple[Any, list[str]]:
            raise DaemonUnavailable("this daemon runs without webhooks")

        return cls._request(webhooks.handlers()[name] if webhooks is not None else unavailable)

    async def _events(self, args: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Event lines, then a final reply; a followed stream lasts until the client leaves."""

        async def stream() -> None:
            events: AsyncIterator[Any] = self.service.events(args)
            async for event in events:
                writer.write(protocol.event_line(event))
                if writer.transport.get_write_buffer_size() > STREAM_BUFFER:
                    await writer.drain()
            writer.write(protocol.reply(None))

        if args.get("follow"):  # may last for ever: end it when the client leaves
            await _unless_departed(reader, writer, stream())
        else:
            await stream()
        return True

    async def _list(self, args: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """``list``: one reply; with ``stream``, event lines ``{"bots": [...]}`` of a page
        each (written as produced, drained when the client reads slowly), then the reply
        ``{"more": BOOL}`` (issue 12: bounded memory, the loop free between pages)."""
        if not args.get("stream"):
            return await self._list_whole(args, reader, writer)
        outcome = {"more": False}
        async for page in self.service.list_pages(args, outcome):
            writer.write(protocol.event_line({"bots": page}))
            if writer.transport.get_write_buffer_size() > STREAM_BUFFER:
                await writer.drain()
        writer.write(protocol.reply(outcome))
        return True

    async def _wait(self, args: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        async def answer() -> None:
            result, warnings = await self.service.wait(args)
            writer.write(protocol.reply(result, warnings))

        await _unless_departed(reader, writer, answer())
        return True

    async def _logs(self, args: dict[str, Any], _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """``logs``: the stored runner output as event lines ``{"data": BASE64}``, then a reply
        saying whether it was stored (cluster mode) or is in the local files (one machine)."""
        bot_id, chunks = self.service.logs(args)
        if chunks is not None:
            async for data in chunks:
                writer.write(protocol.event_line({"data": base64.b64encode(data).decode("ascii")}))
                if writer.transport.get_write_buffer_size() > STREAM_BUFFER:
                    await writer.drain()
        writer.write(protocol.reply({"id": bot_id, "stored": chunks is not None}))
        return True

    async def _create_many(
        self, args: dict[str, Any], reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        """Chunk lines ``{"items": [...]}`` follow the request, checked as they arrive, up to
        ``{"end": true, "commit": BOOL}``; then all bots are created in one transaction."""
        gc.disable()  # 100,000 new acyclic objects would trigger full collections: pauses
        bulk = self.service.bulk()
        try:
            while True:
                line = await _read_line(reader)
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
            result, warnings = await self.service.finish_bulk(bulk, bool(args.get("bots")), commit)
            writer.write(protocol.reply(result, warnings))
            return True
        finally:
            gc.enable()
            if bulk.count >= BULK_TRIM:
                del bulk
                give_back_memory()

    async def _ping(self, _args: dict[str, Any], _reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        writer.write(protocol.reply({"pid": os.getpid(), "version": protocol.VERSION}))
        return True

    async def _stop_op(
        self, _args: dict[str, Any], _reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(protocol.reply({"stopping": True}))
        asyncio.get_running_loop().call_soon(self._stop)
        return False

    async def _reload_op(
        self, _args: dict[str, Any], _reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        writer.write(protocol.reply(self._reload()))
        return True
