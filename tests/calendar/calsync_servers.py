"""The servers the calendar tests start for real: an iCalendar feed over HTTP on
loopback (``http.server`` in a thread, content changed by the test, every request
recorded) and a Radicale CalDAV server (a subprocess, temp storage, htpasswd auth).
Shared by the source tests and the daemon's follow tests."""

from __future__ import annotations

import gzip
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass
class Feed:
    """What the server serves now; every request is recorded."""

    body: bytes = b""
    etag: str = '"v1"'
    last_modified: str = "Mon, 17 Mar 2030 10:00:00 GMT"
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    gzip: bool = False
    stall_s: float = 0.0
    redirects: dict[str, str] = field(default_factory=dict)  # path -> Location
    requests: list[dict[str, str]] = field(default_factory=list)


class Server:
    def __init__(self) -> None:
        self.feed = Feed()
        feed_of = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                feed = feed_of.feed
                feed.requests.append({k.lower(): v for k, v in self.headers.items()} | {"path": self.path})
                if self.path in feed.redirects:
                    self.send_response(302)
                    self.send_header("Location", feed.redirects[self.path])
                    self.end_headers()
                    return
                if feed.status != 200:
                    self.send_response(feed.status)
                    for name, value in feed.headers.items():
                        self.send_header(name, value)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("If-None-Match") == feed.etag or (
                        "If-None-Match" not in self.headers
                        and self.headers.get("If-Modified-Since") == feed.last_modified):
                    self.send_response(304)
                    self.send_header("ETag", feed.etag)
                    self.end_headers()
                    return
                body = gzip.compress(feed.body) if feed.gzip else feed.body
                self.send_response(200)
                self.send_header("Content-Type", "text/calendar; charset=utf-8")
                self.send_header("ETag", feed.etag)
                self.send_header("Last-Modified", feed.last_modified)
                if feed.gzip:
                    self.send_header("Content-Encoding", "gzip")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                if feed.stall_s:
                    self.wfile.write(body[:10])
                    self.wfile.flush()
                    time.sleep(feed.stall_s)
                self.wfile.write(body)

            def log_message(self, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def url(self, path: str = "/cal/private-abc123/basic.ics", host: str = "127.0.0.1") -> str:
        return f"http://{host}:{self.port}{path}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


USER, PASSWORD = "alice", "s3cret-Pa55"


def ics(uid: str, start: str, summary: str, link: str = "https://meet.google.com/abc-defg-hij") -> str:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTAMP:20300301T000000Z\r\nDTSTART:{start}\r\nDURATION:PT30M\r\n"
            f"SUMMARY:{summary}\r\nLOCATION:{link}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Radicale:
    def __init__(self, root: Path) -> None:
        (root / "users").write_text(f"{USER}:{PASSWORD}\n")
        self.password_file = root / "password"
        self.password_file.write_text(PASSWORD + "\n")
        self.port = free_port()
        self.log = open(root / "radicale.log", "wb")  # noqa: SIM115  # closed in stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "radicale", "--config", "", "--server-hosts", f"127.0.0.1:{self.port}",
             "--storage-filesystem-folder", str(root / "storage"), "--auth-type", "htpasswd",
             "--auth-htpasswd-filename", str(root / "users"), "--auth-htpasswd-encryption", "plain",
             "--auth-delay", "0", "--logging-level", "warning"],
            stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, "HOME": str(root)},
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                break
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"radicale did not start: {(root / 'radicale.log').read_text()}") from None
                time.sleep(0.05)
        self.base = f"http://127.0.0.1:{self.port}/{USER}/"

    def client(self) -> Any:
        from caldav import davclient

        return davclient.DAVClient(url=self.base, username=USER, password=PASSWORD, timeout=10)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.log.close()
