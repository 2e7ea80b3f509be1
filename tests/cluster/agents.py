"""Helpers of the failure tests in tests/cluster: real agents (daemons) on one database with
``agent_recorder.sh`` runners, and what those runners recorded."""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from pathlib import Path
from typing import Any

import psycopg

from tests.support.home import Home, Homes

RECORDER = Path(__file__).with_name("agent_recorder.sh")


def start_agent(make_home: Homes, url: str, name: str, rec_dir: Path, lease_s: float, hold_s: float | str = 2,
                slots: int = 25, **cluster: Any) -> Home:
    """An agent (its own home and daemon) named ``name``, staging 20 s ahead; its runners stay
    ``hold_s`` in each meeting and record every line they read in ``rec_dir``."""
    home = make_home(
        {
            "store": {"url": url},
            "cluster": {"agent_name": name, "lease_seconds": lease_s, **cluster},
            "scheduler": {"stage_lead_seconds": 20},
            "runner": {"kind": "command", "command": ["/bin/sh", str(RECORDER)], "max_concurrent": slots,
                       "env": {"REC_DIR": str(rec_dir), "AGENT_TAG": name, "HOLD_S": str(hold_s)}},
        }
    )
    home.start()
    return home


def create_bots(home: Home, join_ats: list[str], tag: str) -> list[str]:
    """One bot per join time (one batch through ``home``); their ids, in that order."""
    lines = "".join(json.dumps({"meeting_url": f"https://meet.google.com/{tag}-{i:04d}-xyz", "join_at": at}) + "\n"
                    for i, at in enumerate(join_ats))
    return [bot["id"] for bot in json.loads(home.ok("create", "--from", "-", "--json", input=lines).stdout)]


def records(rec_dir: Path, bot_id: str) -> list[list[str]]:
    """What the runners of ``bot_id`` recorded: ``start PID AGENT`` and ``line PID AGENT TEXT``."""
    path = rec_dir / f"{bot_id}.log"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def joins_read(rec_dir: Path, bot_id: str) -> list[list[str]]:
    """Every ``join`` a runner of ``bot_id`` read (exactly one is the promise)."""
    return [line for line in records(rec_dir, bot_id) if line[0] == "line" and line[3:] == ["join"]]


def rows(url: str) -> dict[str, tuple[str, str | None]]:
    """Each bot's (state, agent), straight from the database."""
    with psycopg.connect(url) as connection:
        return {str(bot_id): (str(state), agent) for bot_id, state, agent in
                connection.execute("SELECT id, state, agent FROM bots").fetchall()}


def events(url: str) -> dict[str, list[tuple[int, str, int, str | None, str | None]]]:
    """Each bot's events (seq, state, at_us, detail, agent) in seq order, from the database."""
    found: dict[str, list[tuple[int, str, int, str | None, str | None]]] = {}
    with psycopg.connect(url) as connection:
        for bot_id, seq, state, at_us, detail, agent in connection.execute(
            "SELECT bot_id, seq, state, at_us, detail, agent FROM events ORDER BY seq"
        ).fetchall():
            found.setdefault(str(bot_id), []).append((int(seq), str(state), int(at_us), detail, agent))
    return found


class CuttableLink:
    """A TCP relay between one agent and the database, which the test can cut: ``cut()``
    resets every connection through it and from then on accepts new ones but never answers
    (what a dropped network looks like: silence, not a refusal); ``mend()`` relays again."""

    def __init__(self, target_port: int) -> None:
        self.target = ("127.0.0.1", target_port)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.lock = threading.Lock()
        self.open: list[socket.socket] = []
        self.silent = False
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True, name="cuttable-link").start()

    def url(self, url: str) -> str:
        """``url`` (of the database at ``target_port``) going through this link."""
        return url.replace(f":{self.target[1]}/", f":{self.port}/")

    def _accept(self) -> None:
        while not self.stopping:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            with self.lock:
                self.open.append(client)
                if self.silent:
                    continue  # held open, never answered
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.open.append(upstream)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        with self.lock:
            self.silent = True
            doomed, self.open = self.open, []
        for sock in doomed:  # a reset, as a middlebox that forgot the connection sends
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()

    def mend(self) -> None:
        with self.lock:
            self.silent = False
            held, self.open = self.open, []
        for sock in held:
            sock.close()

    def close(self) -> None:
        self.stopping = True
        self.cut()
        self.listener.close()
