"""What the daemon calls to serve HTTP: on a Unix connection it already accepted (and
whose first bytes it read to tell HTTP from JSON lines), on an opt-in TCP site, and the
bearer token that TCP requests need.

The Unix connection is handed to aiohttp's own protocol (``web.Server``'s
``RequestHandler``) with the sniffed bytes fed to it first: aiohttp parses all of HTTP,
nothing here does.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import select
import socket
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from botsched.core.errors import InvalidInput
from botsched.core.http_token import (  # re-exported: the daemon's side of the token
    TOKEN_FILE,
    ensure_token,
    read_token,
    rotate_token,
    token_command,
    token_path,
)
from botsched.daemon.http.app import STATUS_OF_CODE_INVERSE, error_body

__all__ = ["TOKEN_FILE", "HttpFront", "TokenSource", "ensure_token", "is_loopback", "parse_listen", "read_token",
           "rotate_token", "tls_context", "token_command", "token_path"]

log = logging.getLogger("botsched.daemon.http")

#: A connection that sends no request for this long is closed (an idle keep-alive too).
KEEPALIVE_S = 60.0


class _Handover(asyncio.Protocol):
    """Stands between a handed-over transport and aiohttp's protocol, keeping the daemon's
    ``StreamWriter`` alive until the connection ends: collecting it earlier would close
    the transport (``StreamWriter.__del__`` does)."""

    def __init__(self, inner: asyncio.Protocol, transport: asyncio.Transport, keep: object,
                 on_close: Callable[[], None] | None = None) -> None:
        self.inner = inner
        self.transport = transport
        self.keep: object | None = keep
        self.on_close = on_close

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool:
        """The client sent all it will send but may still read (``shutdown(SHUT_WR)``):
        answer the requests that arrived whole, then close. (aiohttp alone closes at once,
        answering nothing.) A request cut short by the EOF can never complete: close now."""
        self.inner.eof_received()
        if not isinstance(self.inner, web.RequestHandler) or _hung_up(self.transport):
            return False  # closed for good (not just its sending side): nobody will read an answer
        parser = getattr(self.inner, "_parser", None)  # tells whether a body was cut short
        try:
            if parser is not None and parser.feed_eof() is not None:
                return False  # the EOF came inside the headers
        except Exception:  # noqa: BLE001 (ContentLengthError, TransferEncodingError, ...: inside the body)
            return False
        self.inner.close()
        return True

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    def connection_lost(self, exc: Exception | None) -> None:
        self.keep = None
        on_close, self.on_close = self.on_close, None
        if on_close is not None:  # once
            on_close()
        self.inner.connection_lost(exc)


def _hung_up(transport: asyncio.Transport) -> bool:
    """Whether the peer closed both directions (POLLHUP), not only its sending side."""
    sock = transport.get_extra_info("socket")
    if sock is None:
        return True
    poller = select.poll()
    poller.register(sock.fileno(), 0)  # POLLHUP / POLLERR are always reported
    return any(flags & (select.POLLHUP | select.POLLERR | select.POLLNVAL) for _, flags in poller.poll(0))


class HttpFront:
    """One aiohttp runner for the application, shared by the Unix socket and TCP."""

    def __init__(self, app: web.Application) -> None:
        # handler_cancellation: a client that leaves a follow or a long poll frees it at once
        self.runner = web.AppRunner(app, handler_cancellation=True, access_log=None, keepalive_timeout=KEEPALIVE_S)
        self.tcp: list[asyncio.Server] = []
        self._refusal: web.Server | None = None

    async def start(self) -> None:
        await self.runner.setup()
        # a peer of another uid gets this server: a 403 to every request, never the API
        self._refusal = web.Server(_forbidden, access_log=None, keepalive_timeout=KEEPALIVE_S)

    def accept(self, transport: asyncio.Transport, initial: bytes, *, eof: bool = False, keep: object = None,
               refused: bool = False, on_close: Callable[[], None] | None = None) -> None:
        """Serve HTTP on ``transport`` from now on; ``initial`` is what was read from it
        already. ``keep`` (e.g. the ``StreamWriter``) lives as long as the connection;
        ``on_close`` is called when it ends. ``refused``: answer 403 only."""
        if transport.is_closing():  # gone while its first bytes were read: no connection_lost will come
            if on_close is not None:
                on_close()
            return
        inner = self._protocol(self._refusal if refused else self.runner.server)
        handover = _Handover(inner, transport, keep, on_close)
        transport.set_protocol(handover)
        inner.connection_made(transport)
        if initial:
            inner.data_received(initial)
        if eof:
            handover.eof_received()
        transport.resume_reading()  # the sniffer's reader may have paused it

    def accept_stream(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, initial: bytes, *,
                      refused: bool = False, on_close: Callable[[], None] | None = None) -> None:
        """``accept`` for a connection of ``asyncio.start_unix_server``: what the reader has
        buffered beyond ``initial`` goes along. The caller must then return without closing
        ``writer``: the connection is aiohttp's."""
        buffered: Any = getattr(reader, "_buffer", b"")  # the StreamReader keeps unread bytes here
        pending = bytes(buffered)
        if pending:
            buffered.clear()
        self.accept(writer.transport, initial + pending,  # type: ignore[arg-type]
                    eof=bool(getattr(reader, "_eof", False)), keep=writer, refused=refused, on_close=on_close)

    async def start_tcp(self, listen: str, tls_cert: str | None = None, tls_key: str | None = None) -> tuple[str, int]:
        """Serve on ``[http] listen`` = ``HOST:PORT``; returns the address really bound
        (port 0 picks a free one). A host that is not loopback needs TLS."""
        host, port = parse_listen(listen)
        context = tls_context(tls_cert, tls_key)
        if context is None and not is_loopback(host):
            raise InvalidInput(f"http.listen = {listen!r} is not a loopback address: set http.tls_cert and "
                               "http.tls_key to serve the API off this machine (the token would travel in clear)")
        server = self.runner.server
        try:
            listener = await asyncio.get_running_loop().create_server(
                lambda: self._protocol(server), host, port, ssl=context, reuse_address=True)
        except OSError as exc:
            raise InvalidInput(f"cannot listen on {listen}: {exc.strerror or exc}") from None
        self.tcp.append(listener)
        bound = listener.sockets[0].getsockname()  # (port 0: the one picked)
        log.info("HTTP API listening on %s:%s%s", bound[0], bound[1], " (TLS)" if context else "")
        return str(bound[0]), int(bound[1])

    @staticmethod
    def _protocol(server: web.Server | None) -> web.RequestHandler:
        """aiohttp's protocol for one connection of ``server``, answering its own errors in JSON."""
        if server is None:
            raise RuntimeError("HttpFront.start() was not awaited")
        return _JsonErrors(server, loop=asyncio.get_running_loop(), **getattr(server, "_kwargs", {}))

    async def close(self) -> None:
        for listener in self.tcp:
            listener.close()
        if self._refusal is not None:
            await self._refusal.shutdown(0.1)
        await self.runner.cleanup()


class _JsonErrors(web.RequestHandler):
    """aiohttp's protocol, whose answers to what it cannot parse (a bad request line, headers
    over 8 KiB, a lying Content-Length) are JSON errors like every other answer, and are not
    logged with a traceback (nor with the request's bytes: they may hold a token)."""

    __slots__ = ()

    def handle_error(self, request: web.BaseRequest, status: int = 500, exc: BaseException | None = None,
                     message: str | None = None) -> web.StreamResponse:
        if request.writer.output_size > 0:  # an answer is on its way already: the connection is broken
            raise ConnectionError("the response was partly sent already")
        log.info("HTTP request not served: %s (%s)", status, type(exc).__name__ if exc else "no exception")
        if status >= 500:
            code, text = "internal", "internal error"
        else:
            code = STATUS_OF_CODE_INVERSE.get(status, "invalid")
            text = "bad HTTP request: " + (message or "").splitlines()[0][:200] if message else "bad HTTP request"
        response = web.Response(status=status, body=error_body(code, text), content_type="application/json")
        response.force_close()
        return response


async def _forbidden(request: web.BaseRequest) -> web.Response:
    """The answer to a Unix-socket peer whose uid is not the daemon's (SO_PEERCRED)."""
    return web.Response(status=403, content_type="application/json", headers={"Connection": "close"},
                        body=error_body("forbidden", f"the daemon belongs to another user (uid {os.getuid()}): "
                                        "it serves only its own user"))


def parse_listen(listen: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``."""
    host, sep, port_text = listen.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise InvalidInput(f"http.listen must be HOST:PORT (e.g. 127.0.0.1:8787), not {listen!r}")
    return host, int(port_text)


def is_loopback(host: str) -> bool:
    """Whether every address the host names is a loopback one."""
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def tls_context(cert: str | None, key: str | None) -> ssl.SSLContext | None:
    if not cert and not key:
        return None
    if not cert or not key:
        raise InvalidInput("set both http.tls_cert and http.tls_key (or neither)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:
        raise InvalidInput(f"cannot use http.tls_cert {cert} / http.tls_key {key}: {exc}") from None
    return context


class TokenSource:
    """The token for the auth middleware, re-read when the file changes (``--rotate`` from
    the CLI takes effect at the next request, without a restart): one ``stat`` per request."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int, int] | None = None
        self._token: str | None = None

    def __call__(self) -> str | None:
        try:
            info = os.stat(self.path)
        except OSError:
            return None  # no file: no TCP request gets in
        identity = (info.st_ino, info.st_mtime_ns, info.st_size)
        if identity != self._seen:
            try:
                self._token = read_token(self.path)
            except InvalidInput as exc:
                log.error("%s", exc.message)
                self._token = None
            self._seen = identity
        return self._token
