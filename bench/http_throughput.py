"""Requests per second over HTTP (SPEC §9) beside the CLI's own JSON-lines protocol, in one
daemon, one keep-alive connection each: on the Unix socket (JSON lines, then HTTP on the
same socket) and on the loopback TCP listener with the bearer token.

Each protocol runs the same three loops as ``throughput.py`` (c): ``create`` then ``show``
of that bot, ``create`` alone (a durable commit each), ``show`` alone.
"""

from __future__ import annotations

import http.client
import json
import socket
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import MEETING_URL, BenchDaemon, Metric, bench_args, log, main_guard, median_of_runs, report
from throughput import _rate, one_connection


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str) -> None:
        super().__init__("botsched", timeout=30)
        self.socket_path = path

    def connect(self) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self.socket_path)


class _JsonLines:
    """What ``throughput.one_connection`` needs of a daemon: ``connect()``. (``BenchDaemon.connect``
    imports ``botsched.client.connection.connection``, a module that no longer exists.)"""

    def __init__(self, daemon: BenchDaemon) -> None:
        self.daemon = daemon

    def connect(self) -> Any:
        from botsched.client.connection import connect

        return connect(self.daemon.paths, autostart=False)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def over_http(conn: http.client.HTTPConnection, headers: dict[str, str], seconds: float, key: str) -> dict[str, float]:
    body = json.dumps({"meeting_url": MEETING_URL, "join_at": "+1d"}).encode()

    def call(method: str, path: str, data: bytes | None = None) -> Any:
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        answer = response.read()
        if response.status >= 300:
            raise RuntimeError(f"{method} {path}: {response.status} {answer[:200]!r}")
        return json.loads(answer)

    last = call("POST", "/bots", body)["id"]

    def mixed() -> int:
        call("GET", f"/bots/{call('POST', '/bots', body)['id']}")
        return 2

    def create() -> int:
        call("POST", "/bots", body)
        return 1

    def show() -> int:
        call("GET", f"/bots/{last}")
        return 1

    return {f"{key}_mixed": _rate(seconds, mixed), f"{key}_create": _rate(seconds, create),
            f"{key}_show": _rate(seconds, show)}


METRICS = [
    Metric(f"{key}_{loop}", f"{label}: {what}", "req/s", digits=0)
    for key, label in (("conn", "JSON lines, socket"), ("unix", "HTTP, socket"), ("tcp", "HTTP, TCP + token"))
    for loop, what in (("mixed", "create+show"), ("create", "create only"), ("show", "show only"))
]


def main() -> int:
    parser = bench_args(__doc__.split("\n")[0], runs=1)
    parser.add_argument("--seconds", type=float, default=2.0, help="length of each loop (default 2 s)")
    args = parser.parse_args()
    port = _free_port()
    with BenchDaemon({"http.listen": f"127.0.0.1:{port}"}) as daemon:
        token = daemon.cli("http", "token").stdout.decode().strip()
        runs: list[dict[str, float | None]] = []
        for run in range(1, args.runs + 1):
            log(f"run {run}/{args.runs}: 3 protocols × 3 loops × {args.seconds:g}s")
            values: dict[str, float | None] = dict(one_connection(_JsonLines(daemon), args.seconds))  # type: ignore[arg-type]
            unix = _UnixHTTPConnection(str(daemon.home / "botsched.sock"))
            values.update(over_http(unix, {}, args.seconds, "unix"))
            unix.close()
            tcp = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            values.update(over_http(tcp, {"Authorization": f"Bearer {token}"}, args.seconds, "tcp"))
            tcp.close()
            runs.append(values)
    report("botsched HTTP vs JSON lines", METRICS, median_of_runs(runs), as_json=args.json, runs=args.runs,
           note="one keep-alive connection per protocol; every create is a durable commit")
    return 0


if __name__ == "__main__":
    main_guard(main)
