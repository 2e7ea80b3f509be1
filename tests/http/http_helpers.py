"""A real HTTP API to test: the real BotService over a real SQLite store, the real scheduler
with the simulate runner, served by aiohttp on a real Unix socket (through the same
hand-over the daemon uses after sniffing the first bytes) and on a loopback TCP port.

The server runs its own event loop in a thread; tests are plain HTTP clients (curl
subprocesses, ``http.client``), as a backend in another language would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import socket
import threading
from pathlib import Path
from typing import Any, Self

from botsched.core import config as config_mod
from botsched.core.config import Config
from botsched.core.paths import resolve_paths
from botsched.daemon.http.app import build_app
from botsched.daemon.http.listen import HttpFront, TokenSource, ensure_token, token_path
from botsched.daemon.http.streams import ServiceStreams
from botsched.daemon.hub import EventHub
from botsched.daemon.runners import make_runner
from botsched.daemon.scheduler import Scheduler, SystemClock
from botsched.daemon.service import BotService
from botsched.daemon.store import Store

#: Bytes the harness reads before handing the connection to aiohttp (the daemon sniffs so).
SNIFF_BYTES = 4


class LiveApi:
    def __init__(self, home: Path, tcp: bool = True, **config: Any) -> None:
        self.home = home
        self.paths = resolve_paths({"BOTSCHED_HOME": str(home)})
        self.socket = str(home / "botsched.sock")
        self.config = Config({**config_mod.defaults(), "runner.simulate_join_seconds": 0.2,
                              "runner.simulate_duration_seconds": 30, **config})
        self.tcp = tcp
        self.port = 0
        self.token_file = token_path(self.paths)
        self.token = ensure_token(self.token_file)
        self.hub = EventHub()
        self._ready = threading.Event()
        self._failure: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, name="http-api", daemon=True)

    def __enter__(self) -> Self:
        self._thread.start()
        self._ready.wait(10)
        if self._failure is not None:
            raise self._failure
        return self

    def __exit__(self, *exc: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        try:
            asyncio.run(self._serve())
        except BaseException as exc:  # noqa: BLE001 (reported to the test thread)
            self._failure = exc
            self._ready.set()

    async def _serve(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        store = Store(self.paths.database, on_events=self.hub.publish, on_deleted=self.hub.gone)
        clock = SystemClock()
        scheduler: Scheduler | None = None

        def report(bot_id: str, state: str, detail: str | None) -> None:
            assert scheduler is not None
            scheduler.report(bot_id, state, detail)

        runner = make_runner(self.config, report, self.paths.runner_logs)
        scheduler = Scheduler(store, runner, self.config, clock)
        service = BotService(store, scheduler, runner, self.hub, self.config, clock, self.paths)
        self.service = service
        streams = ServiceStreams(service)
        front = HttpFront(build_app(service, streams, TokenSource(self.token_file)))
        await front.start()

        async def sniff(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            first = await reader.read(SNIFF_BYTES)
            if not first:
                writer.close()
                return
            front.accept_stream(reader, writer, first)

        unix = await asyncio.start_unix_server(sniff, path=self.socket)
        if self.tcp:
            _, self.port = await front.start_tcp("127.0.0.1:0")
        scheduler_task = asyncio.create_task(scheduler.run())
        self._ready.set()
        await self._stop.wait()
        unix.close()
        scheduler.stop()
        await front.close()
        self.hub.close()
        with contextlib.suppress(asyncio.CancelledError):
            await scheduler_task
        await runner.close()
        store.close()

    def subscribers(self) -> int:
        return len(self.hub._subscribers)

    # -- clients --------------------------------------------------------------------------

    def connection(self, via: str = "unix", timeout: float = 10) -> http.client.HTTPConnection:
        if via == "unix":
            return UnixHTTPConnection(self.socket, timeout)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(self, method: str, path: str, body: Any = None, *, raw: bytes | None = None, via: str = "unix",
                headers: dict[str, str] | None = None, token: str | None = None) -> Reply:
        """One request on a fresh connection. ``body`` is sent as JSON, ``raw`` as is; over
        TCP the right token is sent unless ``token`` says otherwise ("" for none)."""
        conn = self.connection(via)
        sent = dict(headers or {})
        if via == "tcp":
            chosen = self.token if token is None else token
            if chosen:
                sent["Authorization"] = f"Bearer {chosen}"
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        try:
            conn.request(method, path, body=data, headers=sent)
            response = conn.getresponse()
            return Reply(response.status, response.getheaders(), response.read())
        finally:
            conn.close()


class Reply:
    def __init__(self, status: int, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = status
        self.header_list = headers
        self.headers = {name.lower(): value for name, value in headers}
        self.body = body

    def json(self) -> Any:
        return json.loads(self.body)

    def all(self, name: str) -> list[str]:
        return [value for key, value in self.header_list if key.lower() == name.lower()]

    def error_code(self) -> str:
        error = self.json()["error"]
        assert set(error) == {"code", "message"} and error["message"], error
        return str(error["code"])

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.body[:300]!r}>"


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("botsched", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.path)
