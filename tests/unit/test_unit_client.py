"""Unit tests of botsched.client.connection against a real tiny socket server (a thread
on a Unix socket that speaks the wire protocol), not a mock."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from botsched.client.connection import Connection, connect
from botsched.core import protocol
from botsched.core.errors import Conflict, DaemonUnavailable, NotFound

#: What the fake daemon answers: the decoded request in, the raw bytes to send back out.
Handler = Callable[[dict[str, object]], bytes]


class TinyServer:
    """One Unix socket; each connection reads requests line by line and answers with
    ``handler``; it records every request it was sent."""

    def __init__(self, path: Path, handler: Handler) -> None:
        self.path, self.handler = path, handler
        self.requests: list[dict[str, object]] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                for line in lines:
                    request = protocol.decode(line)
                    self.requests.append(request)
                    answer = self.handler(request)
                    if not answer:
                        break  # close without answering
                    conn.sendall(answer)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[[Handler], TinyServer]]:
    servers: list[TinyServer] = []

    def start(handler: Handler) -> TinyServer:
        server = TinyServer(tmp_path / "s.sock", handler)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.close()


def _dial(server: TinyServer) -> Connection:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(server.path))
    return Connection(sock)


def test_a_call_sends_one_versioned_request_and_returns_result_and_warnings(
    serve: Callable[[Handler], TinyServer],
) -> None:
    server = serve(lambda request: protocol.reply({"echo": request["args"]}, ["mind the gap"]))
    with _dial(server) as conn:
        result, warnings = conn.call("list", states=["scheduled"], limit=3)
        again, _ = conn.call("status")  # the same connection serves a second request
    assert result == {"echo": {"states": ["scheduled"], "limit": 3}} and warnings == ["mind the gap"]
    assert again == {"echo": {}}
    assert [(r["v"], r["op"]) for r in server.requests] == [(protocol.VERSION, "list"), (protocol.VERSION, "status")]


@pytest.mark.parametrize(("error", "raised"), [(NotFound("no bot"), NotFound), (Conflict("staged"), Conflict)])
def test_an_error_reply_raises_the_same_error_class(serve: Callable[[Handler], TinyServer], error: Exception,
                                                   raised: type[Exception]) -> None:
    server = serve(lambda request: protocol.error_reply(error))  # type: ignore[arg-type]
    with _dial(server) as conn, pytest.raises(raised, match=str(error)):
        conn.call("cancel", id="bot_AAAAAAAAAAAAAAAA")


def test_a_malformed_bot_id_is_refused_before_any_io(serve: Callable[[Handler], TinyServer]) -> None:
    server = serve(lambda request: protocol.reply(None))
    with _dial(server) as conn, pytest.raises(NotFound):
        conn.call("show", id="not-a-bot-id")
    assert server.requests == []


def test_a_stream_yields_events_then_the_result(serve: Callable[[Handler], TinyServer]) -> None:
    events = [{"bot_id": "bot_A", "state": "staged"}, {"bot_id": "bot_A", "state": "joining"}]
    server = serve(lambda request: b"".join(protocol.event_line(e) for e in events) + protocol.reply({"done": 1}))
    with _dial(server) as conn:
        got = list(conn.stream("events", follow=False))
    assert got == [*events, {"result": {"done": 1}}]


def test_a_daemon_that_hangs_up_is_unavailable(serve: Callable[[Handler], TinyServer]) -> None:
    server = serve(lambda request: b"")
    with _dial(server) as conn, pytest.raises(DaemonUnavailable, match="closed the connection"):
        conn.call("status")


def test_a_reply_split_across_writes_is_read_whole(serve: Callable[[Handler], TinyServer]) -> None:
    big = {"text": "x" * 3_000_000}  # over the client's 1 MiB recv size
    server = serve(lambda request: protocol.reply(big))
    with _dial(server) as conn:
        assert conn.call("show", id="bot_AAAAAAAAAAAAAAAA")[0] == big


def test_connect_without_a_daemon_and_without_autostart_is_exit_5(tmp_path: Path,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BOTSCHED_HOME", str(tmp_path))
    monkeypatch.setenv("BOTSCHED_NO_AUTOSTART", "1")
    with pytest.raises(DaemonUnavailable, match="not running") as info:
        connect()
    assert info.value.exit_code == 5
