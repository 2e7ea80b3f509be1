"""The HTTP API of the real daemon (``botsched daemon start`` in a temp home): the socket
sniffs HTTP request lines and hands them to aiohttp while JSON lines (the CLI) keep working
on the same socket; ``[http] listen`` opens a loopback TCP port with the bearer token.

Clients are real: ``curl`` subprocesses (``--unix-socket`` and TCP), ``runuser -u nobody``
for another uid, the ``st`` (schemathesis) command against ``/openapi.json``.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.support.home import Home, Homes, assert_clean_error

# The seed document's create body, byte for byte (its trailing comma included); then its
# PATCH body. Only the dates are moved into the future.
SEED_CREATE = """{
  "meeting_url": "https://zoom.us/j/123456789",
  "bot_name": "My scheduled bot",
  "join_at": "%s",
}"""
SEED_PATCH = """{
  "join_at": "%s"
}"""
SHAPE = {"id", "meeting_url", "state", "join_at"}  # the seed's response keys (§3 has them all)


def _future(hours: int, fmt: str) -> str:
    return (datetime.now(UTC) + timedelta(days=30, hours=hours)).replace(microsecond=0).strftime(fmt)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def curl(*args: str, user: str | None = None) -> tuple[int, str]:
    """``curl -sS ARGS``: the status and the body."""
    argv = ["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", *args]
    if user is not None:
        argv = ["runuser", "-u", user, "--", *argv]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, (argv, done.stderr)
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


def unix(home: Home, *args: str) -> tuple[int, str]:
    return curl("--unix-socket", str(home.socket), *args)


@pytest.fixture
def tcp_home(make_home: Homes) -> tuple[Home, str]:
    port = _free_port()
    home = make_home({"http": {"listen": f"127.0.0.1:{port}"}})
    home.start()
    return home, f"http://127.0.0.1:{port}"


# -- the Unix socket -------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_the_seed_requests_verbatim_on_the_daemons_socket(home: Home, prefix: str) -> None:
    home.start()
    base = f"http://botsched{prefix}"
    join_at = _future(0, "%Y-%m-%dT%H:%M:%S+0000")
    status, body = unix(home, "-X", "POST", f"{base}/bots", "-H", "content-type: application/json",
                        "--data-binary", SEED_CREATE % join_at)
    assert status == 201, body
    bot = json.loads(body)
    assert bot["state"] == "scheduled" and bot["join_at"] == join_at.replace("+0000", "Z") and set(bot) >= SHAPE
    assert bot["meeting_url"] == "https://zoom.us/j/123456789" and bot["bot_name"] == "My scheduled bot"
    assert home.show(bot["id"])["join_at"] == bot["join_at"], "the CLI (JSON lines) sees another store"

    later = _future(1, "%Y-%m-%dT%H:%M:%SZ")
    status, body = unix(home, "-X", "PATCH", f"{base}/bots/{bot['id']}", "--data-binary", SEED_PATCH % later)
    assert status == 200, body
    moved = json.loads(body)
    assert {k: moved[k] for k in SHAPE} == {"id": bot["id"], "meeting_url": bot["meeting_url"],
                                            "state": "scheduled", "join_at": later}
    assert home.show(bot["id"])["join_at"] == later

    status, body = unix(home, "-X", "DELETE", f"{base}/bots/{bot['id']}")
    assert status == 200 and json.loads(body)["id"] == bot["id"], body
    assert_clean_error(home.run("show", bot["id"]), 3)
    status, body = unix(home, f"{base}/bots/{bot['id']}")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found", body


def test_the_spec_curl_lines_and_errors_on_the_socket(home: Home) -> None:
    """SPEC §9's three lines (curl -d: a form content type, read as JSON all the same)."""
    home.start()
    join_at = _future(0, "%Y-%m-%dT%H:%M:%S+0000")
    status, body = unix(home, "-X", "POST", "http://botsched/bots", "-H", "content-type: application/json", "-d",
                        '{"meeting_url": "https://zoom.us/j/123456789", "bot_name": "My scheduled bot", '
                        f'"join_at": "{join_at}"}}')
    assert status == 201, body
    bot_id = json.loads(body)["id"]
    status, body = unix(home, "-X", "PATCH", f"http://botsched/bots/{bot_id}", "-d",
                        '{"join_at": "2020-01-01T00:00:00Z"}')
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid" and "past" in body, body
    status, body = unix(home, "-X", "POST", "http://botsched/bots", "-d", "{not json")
    assert status == 400 and json.loads(body)["error"]["code"] == "invalid", body
    status, body = unix(home, "http://botsched/nowhere")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found", body
    status, body = unix(home, "-X", "PUT", f"http://botsched/bots/{bot_id}")
    assert status == 405, body
    status, body = unix(home, "-X", "DELETE", f"http://botsched/bots/{bot_id}")
    assert status == 200, body
    status, body = unix(home, "-X", "DELETE", f"http://botsched/bots/{bot_id}")
    assert status == 404, body


def test_openapi_document_on_the_socket(home: Home) -> None:
    home.start()
    for path in ("/openapi.json", "/api/v1/openapi.json"):
        status, body = unix(home, f"http://botsched{path}")
        assert status == 200, body
        document = json.loads(body)
        assert document["openapi"].startswith("3.1") and "/bots/{id}" in document["paths"]
        assert "/api/v1/bots" in document["paths"]


def test_json_lines_and_http_share_the_socket_and_the_store(home: Home) -> None:
    """A bot made by the CLI is served over HTTP and the other way round; the daemon is one."""
    home.start()
    cli_bot = home.create("https://zoom.us/j/1", "--join-at", "+2h")
    status, body = unix(home, f"http://botsched/bots/{cli_bot}")
    assert status == 200 and json.loads(body)["id"] == cli_bot
    join_at = _future(0, "%Y-%m-%dT%H:%M:%SZ")
    status, body = unix(home, "-X", "POST", "http://botsched/bots", "-d",
                        f'{{"meeting_url": "https://zoom.us/j/2", "join_at": "{join_at}"}}')
    assert status == 201, body
    assert {b["id"] for b in home.list_all()} == {cli_bot, json.loads(body)["id"]}
    with home.client() as conn:
        assert conn.ok("ping")["pid"] == home.daemon_pid()


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None, reason="needs root to run as nobody")
def test_another_uid_over_http_on_the_socket_is_refused(home: Home) -> None:
    home.start()
    bot_id = home.create("https://zoom.us/j/1", "--join-at", "+2h")
    os.chmod(home.path, 0o755)  # as if someone opened it up: SO_PEERCRED must still hold
    os.chmod(home.socket, 0o666)
    sock = str(home.socket)
    for args in (["http://botsched/bots"], [f"http://botsched/bots/{bot_id}"],
                 ["-X", "DELETE", f"http://botsched/bots/{bot_id}"],
                 ["-X", "POST", "http://botsched/bots", "-d", '{"meeting_url": "https://zoom.us/j/9"}']):
        status, body = curl("--unix-socket", sock, *args, user="nobody")
        assert status == 403, (args, status, body)
        assert json.loads(body)["error"]["code"] == "forbidden" and bot_id not in body, body
    assert [b["id"] for b in home.list_all()] == [bot_id], "the other uid changed the store"
    assert "refused a connection from another uid" in home.log.read_text()
    status, _ = unix(home, f"http://botsched/bots/{bot_id}")  # its own user still gets in
    assert status == 200


# -- TCP ------------------------------------------------------------------------------------


def test_tcp_needs_the_token_and_rotation_replaces_it(tcp_home: tuple[Home, str]) -> None:
    home, base = tcp_home
    token = home.ok("http", "token").stdout.strip()
    assert len(token) >= 40 and home.ok("http", "token").stdout.strip() == token
    status, body = curl(f"{base}/bots")
    assert status == 401 and json.loads(body)["error"]["code"] == "unauthorized", body
    status, body = curl("-H", "Authorization: Bearer wrong-token", f"{base}/api/v1/bots")
    assert status == 401, body
    status, body = curl("-H", f"Authorization: Basic {token}", f"{base}/bots")
    assert status == 401, body

    join_at = _future(0, "%Y-%m-%dT%H:%M:%S+0000")
    auth = ["-H", f"Authorization: Bearer {token}"]
    # the seed document's bodies as written, over TCP with the token
    status, body = curl(*auth, "-X", "POST", f"{base}/bots", "-H", "content-type: application/json",
                        "--data-binary", SEED_CREATE % join_at)
    assert status == 201, body
    bot_id = json.loads(body)["id"]
    assert json.loads(body)["join_at"] == join_at.replace("+0000", "Z") and set(json.loads(body)) >= SHAPE
    later = _future(1, "%Y-%m-%dT%H:%M:%SZ")
    status, body = curl(*auth, "-X", "PATCH", f"{base}/api/v1/bots/{bot_id}", "--data-binary", SEED_PATCH % later)
    assert status == 200 and json.loads(body)["join_at"] == later, body

    rotated = home.ok("http", "token", "--rotate").stdout.strip()
    assert rotated != token
    status, _ = curl(*auth, f"{base}/bots/{bot_id}")
    assert status == 401, "the old token still works after --rotate"
    status, body = curl("-H", f"Authorization: Bearer {rotated}", "-X", "DELETE", f"{base}/bots/{bot_id}")
    assert status == 200 and json.loads(body)["id"] == bot_id, body

    log = home.log.read_text()
    assert "refused an HTTP request" in log
    assert token not in log and rotated not in log, "a token reached the log"
    assert home.json("daemon", "status")["config"]["http.listen"] == base.removeprefix("http://")


def test_an_address_off_loopback_needs_tls(make_home: Homes, tmp_path: Path) -> None:
    port = _free_port()
    home = make_home({"http": {"listen": f"0.0.0.0:{port}"}})
    message = assert_clean_error(home.run("daemon", "start"), 5)
    assert "tls_cert" in message and "loopback" in message, message
    assert home.daemon_pid() is None or not home.socket.exists()
    if shutil.which("openssl") is None:
        pytest.skip("no openssl to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], capture_output=True, check=True, timeout=60)
    home.write_config({"http": {"listen": f"0.0.0.0:{port}", "tls_cert": str(cert), "tls_key": str(key)}})
    home.start()
    token = home.ok("http", "token").stdout.strip()
    status, body = curl("--cacert", str(cert), "--resolve", f"localhost:{port}:127.0.0.1",
                        "-H", f"Authorization: Bearer {token}", f"https://localhost:{port}/bots")
    assert status == 200 and json.loads(body) == [], body
    status, _ = curl("--cacert", str(cert), "--resolve", f"localhost:{port}:127.0.0.1", f"https://localhost:{port}/bots")
    assert status == 401


def test_a_bad_listen_value_is_refused_by_config_set(home: Home) -> None:
    assert_clean_error(home.run("config", "set", "http.listen", '"not-an-address"'), 2)
    home.ok("config", "set", "http.listen", '"127.0.0.1:8787"')


# -- schemathesis ---------------------------------------------------------------------------


@pytest.mark.skipif(shutil.which("st") is None, reason="schemathesis (the test extra) is not installed")
def test_schemathesis_finds_no_server_error_and_no_schema_mismatch(tcp_home: tuple[Home, str], tmp_path: Path) -> None:
    """Property-based requests from /openapi.json over TCP with the token, bounded: no 5xx,
    every status and body as the document says. ``GET /events`` is left out: with
    ``follow=true`` it is a stream that never ends (its tests are in test_http_endpoints)."""
    home, base = tcp_home
    token = home.ok("http", "token").stdout.strip()
    st = shutil.which("st")
    assert st is not None
    done = subprocess.run(
        [st, "run", f"{base}/openapi.json", "-H", f"Authorization: Bearer {token}",
         "--checks", "not_a_server_error,status_code_conformance,content_type_conformance,"
         "response_schema_conformance",
         "--max-examples", os.environ.get("BOTSCHED_SCHEMATHESIS_EXAMPLES", "15"), "--seed", "15",
         "--exclude-path-regex", "/events$", "--request-timeout", "10", "--workers", "1", "--no-color"],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,  # (it keeps a .schemathesis/ cache there)
        env={**os.environ, "SCHEMATHESIS_HOOKS": "st_hooks", "PYTHONPATH": str(Path(__file__).parent)})
    assert done.returncode == 0, done.stdout[-6000:] + done.stderr[-2000:]
    tested = re.search(r"Tested: (\d+)", done.stdout)
    assert tested is not None and int(tested.group(1)) >= 15, done.stdout[-3000:]
    cases = re.search(r"(\d+) generated, (\d+) passed", done.stdout)
    assert cases is not None and cases.group(1) == cases.group(2) and int(cases.group(1)) >= 200, done.stdout[-3000:]
    assert "Traceback" not in home.log.read_text()
    with home.client() as conn:
        assert conn.ok("ping")["pid"] == home.daemon_pid()


# -- the sniff and the connection cap -----------------------------------------------------------


def test_bytes_that_only_start_like_a_method_stay_json_lines(home: Home) -> None:
    """What was read to tell HTTP apart goes back to the JSON-lines reader, byte for byte."""
    home.start()
    for payload in (b"GE\n", b"GET\n", b"POS" + b"T" * 3 + b"\n", b"DELETE/x\n", b"\n\n{\"v\":1,\"op\":\"ping\"}\n"):
        with home.client(timeout=10) as conn:
            conn.send(payload)
            reply = json.loads(conn.read_line())
            assert reply["v"] == 1, (payload, reply)
            if payload.endswith(b'"ping"}\n'):
                assert reply["ok"] is True and reply["result"]["pid"] == home.daemon_pid()
            else:
                assert reply["ok"] is False and reply["error"]["code"] == "invalid", (payload, reply)


def test_http_connections_count_toward_the_cap_and_free_it(home: Home) -> None:
    from botsched.daemon.server import MAX_CONNECTIONS

    home.start()
    held = []
    try:
        for _ in range(MAX_CONNECTIONS):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.connect(str(home.socket))
            sock.sendall(b"GET /bots HTTP/1.1\r\nHost: b\r\n")  # headers never finished
            held.append(sock)
        result = home.run("list", "--json", env={"BOTSCHED_NO_AUTOSTART": "1"})
        assert result.returncode == 5 and "connections" in result.stderr, result.stderr
    finally:
        for sock in held:
            sock.close()
    status, body = unix(home, "http://botsched/bots")  # the slots came back
    assert status == 200, body
    home.ok("list", "--json")
