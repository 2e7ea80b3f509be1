"""Bad bytes on the socket (issue 5): thousands of malformed, truncated, oversized, deeply
nested, non-UTF-8 and type-confused requests, random bytes, and clients that disconnect
mid-request or connect and say nothing -- while a normal client keeps working.

Afterwards the daemon is the same process, its memory did not balloon, it never answered
with an "internal" error (that code means a bug: exit 1 at the CLI), and it never holds more
than ``MAX_CONNECTIONS`` connections: extra ones get an error line and are closed.
"""

from __future__ import annotations

import json
import os
import random
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from botsched.core import protocol
from botsched.daemon import main as daemon_mod
from tests.support.home import Client, Lost, assert_clean_error, pid_alive

from .relhelpers import SOAK, fd_count, record_figures, rss_kib

CASES = int(os.environ.get("BOTSCHED_FUZZ_CASES", "100000" if SOAK else "10000"))
THREADS = 6
FAR = "2028-05-01T12:00:00Z"
KNOWN_CODES = {"invalid", "not_found", "conflict", "unavailable", "timeout"}
OPS = {
    "create": ["meeting_url", "bot_name", "join_at", "metadata", "deduplication_key"],
    "reschedule": ["id", "join_at"],
    "cancel": ["id"],
    "leave": ["id"],
    "show": ["id"],
    "list": ["states", "limit", "dedup_prefix"],
    "ids": ["states", "prefix"],
    "status": [],
    "ping": [],
    "events": ["id"],
    "wait": ["id", "state", "timeout"],
}
ODD_OPS = ["", "nope", "CREATE", "__init__", "handlers", "create_many ", "stop\n", "reload\x00"]


# -- generating cases ------------------------------------------------------------------------


def rand_text(rng: random.Random) -> str:
    pick = rng.random()
    if pick < 0.2:
        return "".join(chr(rng.choice([rng.randrange(0, 32), rng.randrange(0x7F, 0xA0), rng.randrange(0xD800, 0xE000),
                                        rng.randrange(0x20, 0x7F), rng.randrange(0x100, 0x10FFFF)]))
                       for _ in range(rng.randrange(1, 40)))
    if pick < 0.35:
        return rng.choice(["https://zoom.us/j/1", "http://", "https://x" + "y" * 3000, "bot_" + "A" * 16,
                           "bot_AAAAAAAAAAAAAAA\u0130", "+10m", "+99999999999d", "2028-01-01T00:00:00Z",
                           "1970-01-01T00:00:00Z", "scheduled", "\ud800", "\udfff\ud800", "", " ", "\x00"])
    return "".join(chr(rng.randrange(0x20, 0x7F)) for _ in range(rng.randrange(0, 30)))


def rand_value(rng: random.Random, depth: int = 0) -> Any:
    pick = rng.random()
    if depth > 3 or pick < 0.12:
        return rng.choice([None, True, False, 0, -1, 1.5, -0.0, 2**31, 2**63, 2**64, -(2**70), 10**30,
                           float("nan"), float("inf"), float("-inf"), 1e308])
    if pick < 0.55:
        return rand_text(rng)
    if pick < 0.75:
        return [rand_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))]
    return {rand_text(rng): rand_value(rng, depth + 1) for _ in range(rng.randrange(0, 4))}


def type_fuzz(rng: random.Random) -> bytes:
    """A well-formed JSON line whose fields have the wrong types or odd values."""
    op = rng.choice(list(OPS)) if rng.random() < 0.9 else rng.choice(ODD_OPS)
    if rng.random() < 0.85:
        args: Any = {key: rand_value(rng) for key in OPS.get(op, []) if rng.random() < 0.8}
        if rng.random() < 0.2:
            args[rand_text(rng)] = rand_value(rng)
        if op == "events":
            args["follow"] = False  # a following stream never ends: not a fuzz case
        if op == "wait":
            args["timeout"] = rng.choice([0, 0.01, float("nan"), -1, "1", None]) if rng.random() < 0.5 else 0.01
            if args["timeout"] is None:
                args["timeout"] = 0
    else:
        args = rand_value(rng)
    message: dict[str, Any] = {"v": 1 if rng.random() < 0.9 else rand_value(rng), "op": op, "args": args}
    if rng.random() < 0.05:
        del message["v"]
    if rng.random() < 0.05:
        message.pop("args", None)
    return json.dumps(message, allow_nan=True).encode() + b"\n"


def valid_line(rng: random.Random) -> bytes:
    return rng.choice([
        b'{"v":1,"op":"list","args":{"states":[],"limit":5}}',
        b'{"v":1,"op":"create","args":{"meeting_url":"https://zoom.us/j/77","join_at":"' + FAR.encode() + b'"}}',
        b'{"v":1,"op":"show","args":{"id":"bot_AAAAAAAAAAAAAAAA"}}',
        b'{"v":1,"op":"status","args":{}}',
    ])


@dataclass
class Case:
    kind: str
    payload: bytes
    mode: str = "line"  # line: on a kept connection | fresh: own connection, then EOF | abort | silent


def make_cases(rng: random.Random, count: int) -> list[Case]:
    cases: list[Case] = []
    while len(cases) < count:
        pick = rng.random()
        if pick < 0.30:
            cases.append(Case("type-confused", type_fuzz(rng)))
        elif pick < 0.45:
            body = os.urandom(rng.randrange(1, 3000)).replace(b"\n", b" ")
            cases.append(Case("random-bytes", (body if body.strip() else b"x") + b"\n"))
        elif pick < 0.55:
            line = bytearray(valid_line(rng))
            for _ in range(rng.randrange(1, 4)):
                line.insert(rng.randrange(len(line)), rng.choice([0xFF, 0xFE, 0xC0, 0x80, 0xED, 0xF8]))
            cases.append(Case("non-utf8", bytes(line).replace(b"\n", b" ") + b"\n"))
        elif pick < 0.65:
            line = valid_line(rng)
            cases.append(Case("truncated", line[: rng.randrange(1, len(line))] + b"\n"))
        elif pick < 0.70:
            depth = rng.choice([1_000, 10_000, 100_000, 300_000])
            opener, closer = rng.choice([(b"[", b"]"), (b'{"a":', b"}")])
            body = opener * depth + (closer * depth if rng.random() < 0.5 else b"")
            if len(body) >= protocol.MAX_LINE:
                body = body[: protocol.MAX_LINE - 10]
            cases.append(Case("deeply-nested", body + b"\n"))
        elif pick < 0.73:
            nested: Any = "x"
            for _ in range(rng.choice([50, 500, 900])):
                nested = {"k": nested}
            cases.append(Case("nested-args", json.dumps({"v": 1, "op": "create", "args": {
                "meeting_url": "https://zoom.us/j/5", "metadata": nested}}).encode() + b"\n"))
        elif pick < 0.77:
            token = rng.choice([b"1" * 5000, b"1e999999", b"-1e999999", b"NaN", b"Infinity", b"0." + b"0" * 5000 + b"1",
                                b"9" * 4300, b"9223372036854775808", b"18446744073709551616",
                                b'"\\ud800"', b'"\\udfff"', b'"\\u0000"'])
            key = rng.choice([b"limit", b"timeout", b"id", b"join_at", b"meeting_url"])
            op = rng.choice([b"list", b"wait", b"show", b"create", b"reschedule"])
            cases.append(Case("odd-number-or-string",
                              b'{"v":1,"op":"' + op + b'","args":{"' + key + b'":' + token + b', "timeout":0}}\n'))
        elif pick < 0.80:
            cases.append(Case("not-an-object", rng.choice([b"[]", b"null", b"1", b'"x"', b"true", b"{}", b'{"v":1}',
                                                           b'{"v":1,"op":null}', b'{"v":"1","op":"list"}']) + b"\n"))
        elif pick < 0.86:
            line = valid_line(rng)
            cases.append(Case("truncated-at-eof", line[: rng.randrange(1, len(line))], mode="fresh"))
        elif pick < 0.91:
            line = valid_line(rng)
            cases.append(Case("disconnect-mid-request", line[: rng.randrange(1, len(line))], mode="abort"))
        elif pick < 0.94:
            cases.append(Case("silent-client", b"", mode="silent"))
        elif pick < 0.97:
            junk = [b'{"items":' + json.dumps([rand_value(rng) for _ in range(3)]).encode() + b"}",
                    b"[]", os.urandom(50).replace(b"\n", b" "), b'{"end":true,"commit":"yes"}',
                    b'{"items":[{"meeting_url":"https://zoom.us/j/9","join_at":"' + FAR.encode() + b'"}]}']
            lines = [b'{"v":1,"op":"create_many","args":' + rng.choice([b"{}", b'{"bots":true}', b"[]"]) + b"}"]
            lines += rng.sample(junk, rng.randrange(0, len(junk) + 1))
            cases.append(Case("bulk-garbage", b"\n".join(lines) + b"\n", mode="fresh"))
        elif len([c for c in cases if c.kind == "oversized"]) < 8:
            size = rng.choice([protocol.MAX_LINE + 1, protocol.MAX_LINE + 100, 2 * protocol.MAX_LINE])
            body = rng.choice([b"x" * size, b'{"v":1,"op":"create","args":{"metadata":{"k":"' + b"v" * size + b'"}}}'])
            cases.append(Case("oversized", body + rng.choice([b"\n", b""]), mode="fresh"))
    rng.shuffle(cases)
    return cases


# -- running them ----------------------------------------------------------------------------


@dataclass
class FuzzResult:
    cases: int = 0
    by_kind: Counter = field(default_factory=Counter)
    outcomes: Counter = field(default_factory=Counter)
    internal: list[str] = field(default_factory=list)
    malformed: list[str] = field(default_factory=list)
    normal_ops: int = 0
    normal_failures: list[str] = field(default_factory=list)
    normal_max_latency_ms: float = 0.0
    pid_before: int = 0
    pid_after: int | None = None
    alive: bool = False
    rss_before_kib: int = 0
    rss_after_kib: int = 0
    seconds: float = 0.0
    log_tracebacks: int = 0


def _judge(case: Case, reply: bytes, result: FuzzResult, lock: threading.Lock) -> None:
    try:
        message = json.loads(reply)
        assert isinstance(message, dict) and message.get("v") == 1 and isinstance(message.get("ok"), bool)
    except (ValueError, AssertionError):
        with lock:
            result.malformed.append(f"{case.kind}: reply {reply[:200]!r} to {case.payload[:120]!r}")
        return
    with lock:
        if message["ok"]:
            result.outcomes["answered ok"] += 1
            return
        code = (message.get("error") or {}).get("code")
        result.outcomes[f"error {code}"] += 1
        if code not in KNOWN_CODES:
            result.internal.append(f"{case.kind}: {case.payload[:160]!r} -> {message['error']}")


def _fresh(path: str, case: Case, result: FuzzResult, lock: threading.Lock) -> None:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(path)
        if case.mode == "silent":
            if case.payload == b"" and random.random() < 0.5:
                time.sleep(0.05)
            with lock:
                result.outcomes["silent, closed by us"] += 1
            return
        try:
            sock.sendall(case.payload)
            if case.mode == "abort":
                with lock:
                    result.outcomes["aborted by us"] += 1
                return
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the daemon may answer and close before we finish sending an oversized line
        data = b""
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        except ConnectionResetError:
            pass
        except TimeoutError:
            with lock:
                result.malformed.append(f"{case.kind}: no answer and no close within 15 s")
            return
    lines = [line for line in data.split(b"\n") if line]
    if not lines:
        with lock:
            result.outcomes["closed without a reply"] += 1
    for line in lines:
        _judge(case, line + b"\n", result, lock)


def _fuzzer(path: str, cases: list[Case], result: FuzzResult, lock: threading.Lock) -> None:
    conn: Client | None = None
    for case in cases:
        if case.mode != "line":
            _fresh(path, case, result, lock)
            continue
        if conn is None:
            conn = Client(path, timeout=15)
        try:
            conn.send(case.payload)
            reply = conn.read_line()
            while b'"event"' in reply[:20]:  # an ``events`` request (args defaulted): its stream
                reply = conn.read_line()
        except Lost as exc:
            conn.close()
            conn = None
            with lock:
                result.outcomes["closed without a reply"] += 1
                if "timed out" in str(exc):
                    result.malformed.append(f"{case.kind}: no reply within 15 s to {case.payload[:120]!r}")
            continue
        _judge(case, reply, result, lock)
    if conn is not None:
        conn.close()


def _normal_client(path: str, bot_id: str, stop: threading.Event, result: FuzzResult) -> None:
    n = 0
    while not stop.is_set():
        try:
            with Client(path, timeout=15) as conn:
                while not stop.is_set():
                    n += 1
                    started = time.monotonic()
                    op = n % 5
                    if op == 0:
                        conn.ok("ping")
                    elif op == 1:
                        assert conn.ok("show", id=bot_id)["id"] == bot_id
                    elif op == 2:
                        assert isinstance(conn.ok("list", states=[], limit=5)["bots"], list)
                    elif op == 3:
                        conn.ok("create", meeting_url=f"https://zoom.us/j/normal{n}", join_at=FAR, bot_name="normal")
                    else:
                        assert conn.ok("status")["running"] is True
                    result.normal_ops += 1
                    result.normal_max_latency_ms = max(result.normal_max_latency_ms,
                                                       (time.monotonic() - started) * 1000)
                    time.sleep(0.01)
        except (Lost, AssertionError, OSError) as exc:
            result.normal_failures.append(f"{type(exc).__name__}: {exc}")
            time.sleep(0.05)


@pytest.fixture(scope="module")
def fuzz_home(module_make_home):
    home = module_make_home()
    home.launch()
    with home.client() as conn:
        bot_id = conn.ok("create", meeting_url="https://zoom.us/j/keep", join_at=FAR)["id"]
    return home, bot_id


@pytest.fixture(scope="module")
def fuzz_result(fuzz_home) -> FuzzResult:
    home, bot_id = fuzz_home
    seed = int(os.environ.get("BOTSCHED_FUZZ_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    cases = make_cases(rng, CASES)
    result = FuzzResult(cases=len(cases), by_kind=Counter(case.kind for case in cases))
    result.pid_before = home.proc.pid
    result.rss_before_kib = rss_kib(result.pid_before)
    lock = threading.Lock()
    stop = threading.Event()
    normal = threading.Thread(target=_normal_client, args=(str(home.socket), bot_id, stop, result), daemon=True)
    normal.start()
    started = time.monotonic()
    threads = [threading.Thread(target=_fuzzer, args=(str(home.socket), cases[i::THREADS], result, lock), daemon=True)
               for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(600)
        assert not thread.is_alive(), "a fuzz thread hung"
    result.seconds = time.monotonic() - started
    stop.set()
    normal.join(30)
    with home.client() as conn:
        result.pid_after = conn.ok("ping")["pid"]
    result.alive = pid_alive(result.pid_before)
    result.rss_after_kib = rss_kib(result.pid_before)
    log_text = "".join(p.read_text(errors="replace") for p in home.path.glob("botsched.log*"))
    result.log_tracebacks = log_text.count("Traceback")
    record_figures(
        "fuzz",
        seed=seed,
        cases_sent=result.cases,
        seconds=round(result.seconds, 1),
        kinds=dict(result.by_kind),
        outcomes=dict(result.outcomes),
        internal_error_replies=len(result.internal),
        normal_client_ops=result.normal_ops,
        normal_client_failures=len(result.normal_failures),
        normal_client_max_latency_ms=round(result.normal_max_latency_ms, 1),
        rss_before_mib=round(result.rss_before_kib / 1024, 1),
        rss_after_mib=round(result.rss_after_kib / 1024, 1),
    )
    return result


def test_fuzz_the_daemon_survives_and_answers_every_line(fuzz_result: FuzzResult) -> None:
    r = fuzz_result
    assert r.alive and r.pid_after == r.pid_before, "the daemon died or was replaced during the fuzz"
    assert not r.malformed, f"{len(r.malformed)} malformed or missing replies:\n" + "\n".join(r.malformed[:20])
    assert r.cases >= min(CASES, 5000)
    assert r.by_kind["oversized"] >= 1 and r.by_kind["deeply-nested"] >= 10 and r.by_kind["non-utf8"] >= 100


def test_fuzz_a_normal_client_kept_working_throughout(fuzz_result: FuzzResult) -> None:
    r = fuzz_result
    assert not r.normal_failures, "the normal client failed:\n" + "\n".join(r.normal_failures[:10])
    assert r.normal_ops >= 50, f"the normal client got only {r.normal_ops} requests through"


def test_fuzz_memory_did_not_balloon(fuzz_result: FuzzResult) -> None:
    growth_mib = (fuzz_result.rss_after_kib - fuzz_result.rss_before_kib) / 1024
    assert growth_mib < 64, f"RSS grew by {growth_mib:.1f} MiB during the fuzz"


def test_fuzz_never_gets_an_internal_error(fuzz_result: FuzzResult) -> None:
    """An "internal" reply is what the daemon sends when a handler raised something
    unexpected (the CLI turns it into exit 1, "a bug"). Bad input must be "invalid"."""
    r = fuzz_result
    distinct: dict[str, str] = {}
    for line in r.internal:
        message = line.rsplit("->", 1)[-1]
        distinct.setdefault(message[:120], line)
    assert not r.internal, (
        f"{len(r.internal)} requests got an internal error ({len(distinct)} distinct):\n" + "\n".join(distinct.values())
    )
    assert r.log_tracebacks == 0, f"the daemon log has {r.log_tracebacks} tracebacks"


# -- the connection cap ------------------------------------------------------------------------


def _open_silent(path: str, count: int) -> list[socket.socket]:
    socks = []
    deadline = time.monotonic() + 30
    while len(socks) < count:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.setblocking(False)
        try:
            sock.connect(path)
        except BlockingIOError:  # the listen backlog is full: the daemon has not accepted yet
            sock.close()
            assert time.monotonic() < deadline, f"could only connect {len(socks)} clients"
            time.sleep(0.01)
            continue
        socks.append(sock)
    return socks


def _refused(socks: list[socket.socket]) -> tuple[int, list[bytes]]:
    """How many sockets got an answer or EOF (a held connection gets neither), once that
    number stopped changing for a second."""
    answered: dict[int, bytes] = {}
    deadline = time.monotonic() + 10
    last_change = time.monotonic()
    while time.monotonic() < deadline and time.monotonic() - last_change < 1.0:
        for index, sock in enumerate(socks):
            if index in answered:
                continue
            try:
                answered[index] = sock.recv(65536)
                last_change = time.monotonic()
            except BlockingIOError:
                pass
            except OSError:
                answered[index] = b""
                last_change = time.monotonic()
        time.sleep(0.05)
    return len(answered), list(answered.values())


def test_more_silent_clients_than_the_cap_hold_a_bounded_number_of_fds(fuzz_home) -> None:
    home, bot_id = fuzz_home
    pid = home.proc.pid
    base = fd_count(pid)
    extra = 40
    socks = _open_silent(str(home.socket), daemon_mod.MAX_CONNECTIONS + extra)
    try:
        refused, answers = _refused(socks)
        held = fd_count(pid)
        assert held <= base + daemon_mod.MAX_CONNECTIONS + 8, (
            f"the daemon holds {held} fds with {len(socks)} silent clients (base {base}, cap "
            f"{daemon_mod.MAX_CONNECTIONS})")
        assert refused >= extra, f"only {refused} of the {extra} connections over the cap were answered or closed"
        for data in answers:
            if data:
                message = json.loads(data.split(b"\n")[0])
                assert message["ok"] is False and "connections" in message["error"]["message"], message
        record_figures("connection cap", max_connections=daemon_mod.MAX_CONNECTIONS,
                       silent_clients=len(socks), daemon_fds_base=base, daemon_fds_held=held, refused=refused)
    finally:
        for sock in socks:
            sock.close()
    deadline = time.monotonic() + 10
    while fd_count(pid) > base + 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fd_count(pid) <= base + 4, "the daemon did not release the connections the clients closed"
    with home.client() as conn:
        assert conn.ok("show", id=bot_id)["id"] == bot_id


def test_a_client_over_the_cap_gets_exit_5_not_an_internal_error(fuzz_home) -> None:
    """While idle clients hold every slot, ``botsched list`` is refused ("too many
    connections; try again"). That is the daemon not answering (exit 5), not a bug (exit 1)."""
    home, _ = fuzz_home
    socks = _open_silent(str(home.socket), daemon_mod.MAX_CONNECTIONS)
    try:
        time.sleep(0.3)
        result = home.run("list", "--json", env={"BOTSCHED_NO_AUTOSTART": "1"})
    finally:
        for sock in socks:
            sock.close()
    assert "connections" in result.stderr, result.stderr
    assert_clean_error(result, 5)


# -- the same socket, spoken as HTTP (SPEC §9) -----------------------------------------------

HTTP_CASES = int(os.environ.get("BOTSCHED_HTTP_FUZZ_CASES", "20000" if SOAK else "2000"))
HTTP_PATHS = ["/bots", "/api/v1/bots", "/bots/bot_AAAAAAAAAAAAAAAA", "/bots/bulk", "/bots/x/leave",
              "/bots/bot_AAAAAAAAAAAAAAAA/wait?timeout=0", "/events?follow=false", "/openapi.json", "/",
              "/bots?limit=-1", "/bots?limit=x&state=nope", "/%00", "/bots/" + "a" * 5000, "/api/v2/bots"]
HTTP_METHODS = ["GET", "POST", "PATCH", "DELETE", "PUT", "HEAD", "OPTIONS"]
MIB = 1 << 20


def _http_request(method: str, path: str, body: bytes = b"", headers: list[bytes] | None = None) -> bytes:
    head = [f"{method} {path} HTTP/1.1".encode(), b"Host: botsched", b"Connection: close",
            b"Content-Length: " + str(len(body)).encode(), *(headers or [])]
    return b"\r\n".join(head) + b"\r\n\r\n" + body


def make_http_cases(rng: random.Random, count: int) -> list[Case]:
    """Bad HTTP: random bytes after a method, cut-off requests, huge headers, bodies over
    1 MiB (declared and chunked), random JSON to every route, and silent or slow clients."""
    cases: list[Case] = []
    while len(cases) < count:
        pick = rng.random()
        method, path = rng.choice(HTTP_METHODS), rng.choice(HTTP_PATHS)
        if pick < 0.30:
            body = json.dumps(rand_value(rng), allow_nan=True).encode()
            cases.append(Case("http-random-json", _http_request(method, path, body), mode="fresh"))
        elif pick < 0.45:
            junk = os.urandom(rng.randrange(1, 3000))
            cases.append(Case("http-random-bytes", f"{method} ".encode() + junk, mode="fresh"))
        elif pick < 0.60:
            whole = _http_request(method, path, b'{"meeting_url": "https://zoom.us/j/1", "join_at": "' + FAR.encode()
                                  + b'"}')
            cases.append(Case("http-truncated", whole[: rng.randrange(4, len(whole))], mode="fresh"))
        elif pick < 0.67:
            whole = _http_request(method, path, b"{}")
            cases.append(Case("http-disconnect-mid-request", whole[: rng.randrange(4, len(whole))], mode="abort"))
        elif pick < 0.74:
            size = rng.choice([9000, 70_000, 1_000_000])
            headers = ([b"X-Big: " + b"a" * size] if rng.random() < 0.5
                       else [f"X-H{i}: {i}".encode() for i in range(size // 100)])
            cases.append(Case("http-huge-headers", _http_request(method, path, b"", headers), mode="fresh"))
        elif pick < 0.78:
            body = b'{"metadata": {"k": "' + b"v" * (MIB + rng.randrange(1, 1000)) + b'"}}'
            if rng.random() < 0.5:
                cases.append(Case("http-body-over-1mib", _http_request("POST", rng.choice(["/bots", "/bots/bulk"]),
                                                                       body), mode="fresh"))
            else:
                chunked = b"".join(b"%x\r\n%s\r\n" % (len(body[i:i + 65536]), body[i:i + 65536])
                                   for i in range(0, len(body), 65536)) + b"0\r\n\r\n"
                cases.append(Case("http-chunked-over-1mib", b"POST /bots HTTP/1.1\r\nHost: b\r\nConnection: close\r\n"
                                  b"Transfer-Encoding: chunked\r\n\r\n" + chunked, mode="fresh"))
        elif pick < 0.84:
            lying = rng.choice([b"Content-Length: 99999999999999999999", b"Content-Length: -1",
                                b"Content-Length: 5\r\nContent-Length: 6", b"Transfer-Encoding: gzip, chunked",
                                b"Transfer-Encoding: chunked\r\nContent-Length: 3", b"Expect: 100-continue",
                                b"Host: \x00\xff", b"Authorization: Bearer " + b"x" * 4000, b"Idempotency-Key: \x01"])
            cases.append(Case("http-odd-headers", f"{method} {path} HTTP/1.1\r\n".encode() + lying + b"\r\n\r\n{}",
                              mode="fresh"))
        elif pick < 0.90:
            line = rng.choice([f"{method} {path} HTTP/9.9", f"{method}  {path} HTTP/1.1", f"{method} {path}",
                               f"{method} http://evil/{path} HTTP/1.1", f"{method} * HTTP/1.1", f"{method} / HTTP/1.0"])
            cases.append(Case("http-odd-request-line", line.encode() + b"\r\nHost: b\r\nConnection: close\r\n\r\n",
                              mode="fresh"))
        elif pick < 0.95:
            lines = b"".join(json.dumps({"meeting_url": rand_value(rng), "join_at": rand_value(rng)},
                                        allow_nan=True).encode() + b"\n" for _ in range(rng.randrange(1, 5)))
            cases.append(Case("http-bulk-garbage", _http_request("POST", "/bots/bulk", lines + os.urandom(20)),
                              mode="fresh"))
        else:
            cases.append(Case("http-silent-after-method", f"{method} ".encode(), mode="abort"))
    rng.shuffle(cases)
    return cases


def _http_exchange(path: str, case: Case) -> bytes | None:
    """Send a case on its own connection; what came back (``None``: aborted by us)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(15)
        sock.connect(path)
        try:
            sock.sendall(case.payload)
            if case.mode == "abort":
                return None
            sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass  # the daemon may answer (413) and close before we finish sending
        data = b""
        try:
            while chunk := sock.recv(65536):
                data += chunk
        except ConnectionResetError:
            pass
        return data


def _http_fuzzer(path: str, cases: list[Case], outcomes: Counter, bad: list[str], lock: threading.Lock) -> None:
    for case in cases:
        try:
            data = _http_exchange(path, case)
        except TimeoutError:
            with lock:
                bad.append(f"{case.kind}: no answer and no close within 15 s: {case.payload[:100]!r}")
            continue
        if data is None:
            continue
        with lock:
            if not data:
                outcomes[f"closed without a reply: {case.kind}"] += 1
                if case.kind in ("http-random-json", "http-body-over-1mib", "http-chunked-over-1mib"):
                    bad.append(f"{case.kind}: a whole request got no answer: {case.payload[:160]!r}")
                continue
            status_line = data.split(b"\r\n", 1)[0]
            parts = status_line.split(b" ")
            if not status_line.startswith(b"HTTP/") or len(parts) < 2 or not parts[1].isdigit():  # (0.9: no version)
                if data.startswith(b'{"v":1'):  # did not sniff as HTTP (e.g. "GET" + "\n"): a JSON-lines answer
                    outcomes["json-lines reply"] += 1
                else:
                    bad.append(f"{case.kind}: not an HTTP reply {data[:120]!r} to {case.payload[:100]!r}")
                continue
            status = int(parts[1])
            outcomes[f"HTTP {status}"] += 1
            if status >= 500:
                bad.append(f"{case.kind}: {status} {data[:300]!r} to {case.payload[:160]!r}")
            elif status >= 400 and case.kind != "http-odd-request-line" and b"HEAD " not in case.payload[:5]:
                body = data.split(b"\r\n\r\n", 1)[-1]
                if body and b'"error"' not in body[:400] and b"Transfer-Encoding: chunked" not in data[:2000]:
                    bad.append(f"{case.kind}: a {status} without a JSON error: {data[:300]!r}")


def _slowloris(path: str, count: int) -> list[socket.socket]:
    """Clients that start a request and then dribble one header byte at a time (or go silent)."""
    socks = []
    for index in range(count):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.sendall(b"POST /bots HTTP/1.1\r\nHost: b\r\nX-Slow: " if index % 2 else b"GET ")
        socks.append(sock)
    return socks


def test_http_fuzz_on_the_socket_the_daemon_survives_and_answers(fuzz_home) -> None:
    home, bot_id = fuzz_home
    path = str(home.socket)
    pid = home.proc.pid
    base_fds = fd_count(pid)
    seed = int(os.environ.get("BOTSCHED_FUZZ_SEED", str(random.randrange(1 << 30))))
    cases = make_http_cases(random.Random(seed), HTTP_CASES)
    outcomes: Counter = Counter()
    bad: list[str] = []
    lock = threading.Lock()
    result = FuzzResult()
    stop = threading.Event()
    slow = _slowloris(path, 40)
    normal = threading.Thread(target=_normal_client, args=(path, bot_id, stop, result), daemon=True)
    normal.start()
    started = time.monotonic()
    try:
        threads = [threading.Thread(target=_http_fuzzer, args=(path, cases[i::4], outcomes, bad, lock), daemon=True)
                   for i in range(4)]
        for thread in threads:
            thread.start()
        for sock in slow[1::2]:  # a byte now and then, mid-header
            sock.sendall(b"x")
        for thread in threads:
            thread.join(600)
            assert not thread.is_alive(), "an HTTP fuzz thread hung"
        # the slow clients still hang on; a well-formed HTTP request still gets its answer
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(10)
            sock.connect(path)
            sock.sendall(_http_request("GET", f"/bots/{bot_id}"))
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
        assert reply.startswith(b"HTTP/1.1 200") and bot_id.encode() in reply, reply[:300]
    finally:
        seconds = time.monotonic() - started
        stop.set()
        normal.join(30)
        for sock in slow:
            sock.close()
    record_figures("http fuzz", seed=seed, cases_sent=len(cases), seconds=round(seconds, 1),
                   kinds=dict(Counter(case.kind for case in cases)), outcomes=dict(outcomes),
                   slow_clients=len(slow), normal_client_ops=result.normal_ops,
                   normal_client_max_latency_ms=round(result.normal_max_latency_ms, 1))
    assert not bad, f"{len(bad)} bad answers (seed {seed}):\n" + "\n".join(bad[:20])
    assert not result.normal_failures, "the JSON-lines client failed:\n" + "\n".join(result.normal_failures[:10])
    assert result.normal_ops >= 20
    assert sum(n for k, n in outcomes.items() if k.startswith("HTTP 4")) >= len(cases) // 4, outcomes
    assert outcomes["HTTP 413"] >= 1, outcomes
    with home.client() as conn:
        assert conn.ok("ping")["pid"] == pid, "the daemon died or was replaced"
    log_text = "".join(p.read_text(errors="replace") for p in home.path.glob("botsched.log*"))
    assert log_text.count("Traceback") == 0, "the daemon logged a traceback"
    deadline = time.monotonic() + 10
    while fd_count(pid) > base_fds + 4 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fd_count(pid) <= base_fds + 4, "the daemon did not release the HTTP connections"
