"""TCP needs the bearer token (missing, wrong, rotated), the Unix socket does not;
Idempotency-Key retries; the TCP listener's address rules; the token file."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
import subprocess
from pathlib import Path

import pytest
from http_helpers import LiveApi

from botsched.core.errors import InvalidInput
from botsched.daemon.http.app import parse_json
from botsched.daemon.http.idempotency import (
    Answer,
    IdempotencyCache,
    KeyMismatch,
    fingerprint,
)
from botsched.daemon.http.listen import (
    HttpFront,
    is_loopback,
    parse_listen,
    read_token,
    rotate_token,
    tls_context,
)

URL = "https://zoom.us/j/123456789"


def test_tcp_needs_the_token(api: LiveApi, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="botsched.daemon.http")
    assert api.request("GET", "/bots", via="tcp").status == 200
    for token in ("", "wrong", api.token + "x", api.token[:-1]):
        reply = api.request("GET", "/bots", via="tcp", token=token)
        assert reply.status == 401 and reply.error_code() == "unauthorized", reply
        assert reply.headers["www-authenticate"].startswith("Bearer")
    assert api.request("POST", "/bots", {"meeting_url": URL}, via="tcp", token="nope").status == 401
    assert api.request("GET", "/nothing", via="tcp", token="").status == 401  # no route map for strangers
    assert api.request("GET", "/bots", via="tcp", headers={"Authorization": f"Basic {api.token}"},
                       token="").status == 401
    assert api.request("GET", "/bots").status == 200  # the Unix socket: no token
    assert "wrong token" in caplog.text and "no bearer token" in caplog.text
    assert api.token not in caplog.text and api.token[:-1] not in caplog.text


def test_rotated_token(api: LiveApi) -> None:
    old = api.token
    new = rotate_token(api.token_file)
    assert new != old
    assert api.request("GET", "/bots", via="tcp", token=old).status == 401
    assert api.request("GET", "/bots", via="tcp", token=new).status == 200


def test_token_file(tmp_path: Path) -> None:
    path = tmp_path / "http.token"
    assert read_token(path) is None
    token = rotate_token(path)
    assert len(token) >= 43 and read_token(path) == token
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    (tmp_path / "elsewhere").write_text("planted")
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(InvalidInput):
        read_token(path)
    with pytest.raises(InvalidInput):
        rotate_token(path)
    assert (tmp_path / "elsewhere").read_text() == "planted"


# -- idempotency --------------------------------------------------------------------------


def test_idempotent_retry_returns_the_first_answer(api: LiveApi) -> None:
    body = {"meeting_url": URL, "join_at": "+1h"}
    key = {"Idempotency-Key": "order-42"}
    first = api.request("POST", "/bots", body, headers=key)
    assert first.status == 201
    again = api.request("POST", "/api/v1/bots", {"join_at": "+1h", "meeting_url": URL}, headers=key, via="tcp")
    assert again.status == 201 and again.body == first.body and again.headers["idempotent-replayed"] == "true"
    assert len(api.request("GET", "/bots").json()) == 1
    other = api.request("POST", "/bots", {**body, "bot_name": "Other"}, headers=key)
    assert other.status == 422 and other.error_code() == "unprocessable"
    assert api.request("POST", "/bots", body, headers={"Idempotency-Key": "order-43"}).status == 201
    assert len(api.request("GET", "/bots").json()) == 2
    assert api.request("POST", "/bots", body).status == 201  # no key: a new bot each time
    assert api.request("POST", "/bots", body, headers={"Idempotency-Key": "k" * 256}).status == 400


def test_an_error_answer_is_replayed_too(api: LiveApi) -> None:
    key = {"Idempotency-Key": "dup"}
    assert api.request("POST", "/bots", {"meeting_url": URL, "deduplication_key": "d"}).status == 201
    first = api.request("POST", "/bots", {"meeting_url": URL, "deduplication_key": "d"}, headers=key)
    assert first.status == 409
    again = api.request("POST", "/bots", {"meeting_url": URL, "deduplication_key": "d"}, headers=key)
    assert (again.status, again.body) == (409, first.body)


def test_idempotency_cache_bound_and_ttl() -> None:
    now = [0.0]
    cache = IdempotencyCache(max_keys=2, ttl_s=10, clock=lambda: now[0])
    answer = Answer(201, b"{}", ())
    print_a = fingerprint({"a": 1, "b": 2})
    assert print_a == fingerprint({"b": 2, "a": 1})
    cache.remember("a", print_a, answer)
    cache.remember("b", print_a, answer)
    assert cache.lookup("a", print_a) == answer  # now "b" is the least recently used
    cache.remember("c", print_a, answer)
    assert len(cache) == 2 and cache.lookup("b", print_a) is None and cache.lookup("a", print_a) == answer
    with pytest.raises(KeyMismatch):
        cache.lookup("a", fingerprint({"a": 2}))
    cache.remember("e", print_a, Answer(503, b"{}", ()))
    assert cache.lookup("e", print_a) is None  # a 5xx is tried again, not replayed
    now[0] = 10.5
    assert cache.lookup("a", print_a) is None


# -- bodies -------------------------------------------------------------------------------


def test_only_a_trailing_comma_is_forgiven() -> None:
    assert parse_json(b'{"a": [1, 2,],\n}') == {"a": [1, 2]}
    assert parse_json(b'{"a": "x,}"}') == {"a": "x,}"}
    for bad in (b"{,}", b"[,]", b'{"a": 1,,}', b"{'a': 1}", b'{"a": 1} x', b"[1,,]"):
        with pytest.raises(InvalidInput):
            parse_json(bad)


# -- the TCP listener ----------------------------------------------------------------------


def test_listen_addresses() -> None:
    assert parse_listen("127.0.0.1:8787") == ("127.0.0.1", 8787)
    assert parse_listen("[::1]:80") == ("::1", 80)
    for bad in ("8787", "host:", ":80", "h:99999", "h:x"):
        with pytest.raises(InvalidInput):
            parse_listen(bad)
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("127.8.9.1")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.0.2.1") and not is_loopback("no-such-host.invalid")


def _aiohttp_front() -> HttpFront:
    from aiohttp import web

    return HttpFront(web.Application())


def test_non_loopback_needs_tls(tmp_path: Path) -> None:
    async def attempt() -> None:
        front = _aiohttp_front()
        await front.start()
        try:
            with pytest.raises(InvalidInput, match="tls_cert"):
                await front.start_tcp("0.0.0.0:0")
            with pytest.raises(InvalidInput, match="both"):
                await front.start_tcp("0.0.0.0:0", tls_cert=str(tmp_path / "c.pem"))
        finally:
            await front.close()

    asyncio.run(attempt())


def test_tls_listener_off_loopback(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost"], check=True, capture_output=True, timeout=60)
    with pytest.raises(InvalidInput):
        tls_context(str(cert), str(tmp_path / "missing.pem"))

    async def serve() -> str:
        from aiohttp import web

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="over tls")

        app = web.Application()
        app.router.add_get("/", hello)
        front = HttpFront(app)
        await front.start()
        try:
            _, port = await front.start_tcp("0.0.0.0:0", str(cert), str(key))
            done = await asyncio.create_subprocess_exec(
                "curl", "-sk", f"https://127.0.0.1:{port}/", stdout=asyncio.subprocess.PIPE)
            out, _ = await done.communicate()
            plain = await asyncio.create_subprocess_exec(
                "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", f"http://127.0.0.1:{port}/",
                stdout=asyncio.subprocess.PIPE)
            plain_out, _ = await plain.communicate()
            assert plain_out.decode() != "200"  # no clear-text HTTP on a TLS port
            return out.decode()
        finally:
            await front.close()

    assert asyncio.run(serve()) == "over tls"


def test_garbage_on_the_socket_leaves_the_api_serving(api: LiveApi) -> None:
    for junk in (b"GET / HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n",
                 b"POST /bots HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                 b"GE\x00T /\xff HTTP/9\r\n\r\n", os.urandom(4096), b"GET " + b"a" * 100_000 + b" HTTP/1.1\r\n\r\n"):
        with socket.socket(socket.AF_UNIX) as sock:
            sock.settimeout(5)
            sock.connect(api.socket)
            sock.sendall(junk)
            sock.shutdown(socket.SHUT_WR)
            answer = sock.recv(65536)
            assert answer == b"" or answer.split(b" ", 2)[1].startswith(b"4"), answer[:100]  # aiohttp's own 4xx
    assert api.request("GET", "/bots").status == 200
