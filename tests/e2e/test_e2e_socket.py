"""Many clients at once, and a socket that survives garbage (SPEC §1, §2)."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.support.home import ID_RE, pid_alive

URL = "https://zoom.us/j/99"
FAR = "2028-05-01T12:00:00Z"
CLIENTS = 20


def _create_all(home, tag: str, clients: int = CLIENTS) -> list[str]:
    barrier = threading.Barrier(clients)

    def one(n: int) -> str:
        barrier.wait()
        return home.create(f"{URL}?{tag}={n}", "--join-at", FAR, "--bot-name", f"{tag} {n}")

    with ThreadPoolExecutor(max_workers=clients) as pool:
        return list(pool.map(one, range(clients)))


def test_20_concurrent_cli_clients(module_home):
    home = module_home
    ids = _create_all(home, "warm")
    assert len(set(ids)) == CLIENTS
    listed = {bot["id"]: bot for bot in home.list_all()}
    assert set(ids) <= set(listed)
    assert sorted(listed[i]["bot_name"] for i in ids) == sorted(f"warm {n}" for n in range(CLIENTS))


def test_concurrent_cli_clients_racing_to_autostart(home):
    ids = _create_all(home, "cold", clients=10)  # no daemon yet: they all try to start one
    assert len(set(ids)) == 10
    assert {bot["id"] for bot in home.list_all()} == set(ids)
    status = home.json("daemon", "status")
    assert status["counts"]["scheduled"] == 10
    assert pid_alive(status["pid"])


def test_20_concurrent_raw_socket_clients(module_home):
    home = module_home
    replies: list[dict] = []
    barrier = threading.Barrier(CLIENTS)

    def one(n: int) -> dict:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(20)
            sock.connect(str(home.socket))
            barrier.wait()
            request = {"v": 1, "op": "create", "args": {"meeting_url": f"{URL}?raw={n}", "join_at": FAR}}
            sock.sendall(json.dumps(request).encode() + b"\n")
            return json.loads(_read_line(sock))

    with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
        replies = list(pool.map(one, range(CLIENTS)))
    assert all(reply.get("ok") for reply in replies), replies
    ids = {reply["result"]["id"] for reply in replies}
    assert len(ids) == CLIENTS and all(ID_RE.match(i) for i in ids)
    assert ids <= {bot["id"] for bot in home.list_all()}


# -- garbage on the socket --------------------------------------------------------------


def _read_line(sock: socket.socket, limit: int = 1 << 22) -> bytes:
    """One reply line, or b"" if the daemon closed the connection."""
    data = b""
    while not data.endswith(b"\n") and len(data) < limit:
        try:
            chunk = sock.recv(65536)
        except ConnectionResetError:
            break
        if not chunk:
            break
        data += chunk
    return data


def _exchange(path: str, payload: bytes, shut_write: bool = False, timeout: float = 10.0) -> bytes:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(path)
        sent = threading.Thread(target=_send_quietly, args=(sock, payload, shut_write), daemon=True)
        sent.start()
        try:
            reply = _read_line(sock)
        except TimeoutError:
            pytest.fail(f"the daemon neither answered nor closed within {timeout}s for {payload[:40]!r}")
        sent.join(timeout)
        return reply


def _send_quietly(sock: socket.socket, payload: bytes, shut_write: bool) -> None:
    try:
        sock.sendall(payload)
        if shut_write:
            sock.shutdown(socket.SHUT_WR)
    except OSError:
        pass  # the daemon may close on us mid-send (oversized line): that is allowed


def _assert_error_or_closed(reply: bytes, what: str) -> None:
    if not reply:
        return  # closed without answering: allowed
    assert reply.endswith(b"\n"), f"{what}: partial reply {reply[:200]!r}"
    message = json.loads(reply)
    assert message.get("ok") is False, f"{what}: expected an error reply, got {message}"
    assert message.get("error"), message


GARBAGE = [
    pytest.param(b"\x00\x01\x02garbage\xff\xfe\n", False, id="binary-garbage"),
    pytest.param(b"hello daemon\n", False, id="plain-text"),
    pytest.param(b'{"v":1,"op":"\xff\xfe","args":{}}\n', False, id="invalid-utf8"),
    pytest.param(b'{"v":1,"op":"list","ar\n', False, id="truncated-json-newline"),
    pytest.param(b'{"v":1,"op":"list","ar', True, id="truncated-json-eof"),
    pytest.param(b'{"v":1,"op":"nope"}\n', False, id="unknown-op"),
    pytest.param(b'{"v":99,"op":"list","args":{}}\n', False, id="unknown-version"),
    pytest.param(b'{"v":1,"op":"show","args":{"id":["x"]}}\n', False, id="wrong-arg-type"),
    pytest.param(b'{"v":1,"op":"create","args":{"meeting_url":1}}\n', False, id="create-bad-type"),
    pytest.param(b"[" * 200_000 + b"\n", False, id="deep-nesting"),
    pytest.param(b"[1,2,3]\n", False, id="json-array"),
    pytest.param(b"x" * (2 * 1024 * 1024), False, id="2MiB-no-newline"),
    pytest.param(b"x" * (2 * 1024 * 1024) + b"\n", False, id="2MiB-line"),
]


@pytest.fixture(scope="module")
def robust_home(module_make_home):
    home = module_make_home()
    home.start()
    bot_id = home.create(URL, "--join-at", FAR)
    return home, bot_id


@pytest.mark.parametrize(("payload", "shut_write"), GARBAGE)
def test_garbage_gets_an_error_or_a_close(robust_home, payload, shut_write):
    home, bot_id = robust_home
    pid = home.daemon_pid()
    reply = _exchange(str(home.socket), payload, shut_write)
    _assert_error_or_closed(reply, repr(payload[:40]))
    assert home.daemon_pid() == pid and pid_alive(pid)
    # still serving: a well-formed request on a fresh connection is answered
    answer = json.loads(_exchange(str(home.socket), b'{"v":1,"op":"show","args":{"id":"%s"}}\n' % bot_id.encode()))
    assert answer.get("ok") is True and answer["result"]["id"] == bot_id, answer


def test_botsched_list_works_after_all_the_garbage(robust_home):
    home, bot_id = robust_home
    assert [bot["id"] for bot in home.list_all()] == [bot_id]


def test_unknown_op_is_answered_with_an_error(robust_home):
    home, _ = robust_home
    message = json.loads(_exchange(str(home.socket), b'{"v":1,"op":"nope"}\n'))
    assert message["ok"] is False
    assert "nope" in json.dumps(message["error"])


def test_a_silent_or_slow_client_blocks_nobody(robust_home):
    home, bot_id = robust_home
    silent = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    half = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        silent.connect(str(home.socket))
        half.connect(str(home.socket))
        half.sendall(b'{"v":1,"op":"li')  # half a request, never finished
        started = time.monotonic()
        assert [bot["id"] for bot in home.list_all()] == [bot_id]
        home.create(URL, "--join-at", FAR, "--bot-name", "while others idle")
        assert time.monotonic() - started < 5
    finally:
        silent.close()
        half.close()


def test_garbage_storm_then_normal_use(robust_home):
    home, bot_id = robust_home
    pid = home.daemon_pid()
    payloads = [b"\xff" * 100 + b"\n", b"{\n", b'{"v":1}\n', b"null\n", os.urandom(4096) + b"\n"] * 10
    with ThreadPoolExecutor(max_workers=10) as pool:
        list(pool.map(lambda p: _exchange(str(home.socket), p), payloads))
    assert home.daemon_pid() == pid
    assert bot_id in {bot["id"] for bot in home.list_all()}
    assert home.json("daemon", "status")["pid"] == pid
