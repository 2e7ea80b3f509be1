"""Load (issue 5): 50 concurrent clients send mixed requests for 10 s (30 s with
``BOTSCHED_SOAK=1``) while 1,000 bots come due in that window -- 700 spread out and three
bursts of 100 at one instant. No request may fail, every due bot joins exactly once, and
the lateness of the ``joining`` events (their timestamp minus join_at) is reported as
p50 / p99 / max. Only a loose bound is asserted: the machine is shared.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from datetime import datetime, timedelta

import pytest

from tests.support.home import Client, Lost
from tests.support.times import UTC, iso_ms, z_seconds

from .relhelpers import SOAK, percentile, record_figures

CLIENTS = 50
WINDOW_S = float(os.environ.get("BOTSCHED_LOAD_SECONDS", "30" if SOAK else "10"))
DUE = 1000
BURSTS = 3
BURST_SIZE = 100
LEAD_S = 2.0
#: Loose bounds (the machine is shared with other test suites).
P99_BOUND_MS = 500.0
#: When the follower (a thread of this test process, sharing its GIL with the 50 client
#: threads) reads a burst's ``joining`` events: a figure of event delivery under load, not of
#: the join (CI measured a p99 of 2.07 s on a loaded 2-core machine while joins were 0.5 ms).
OBSERVED_P99_BOUND_MS = 5000.0
STATES = ["scheduled", "staged", "joining", "joined_recording", "ended", "fatal_error"]


class Follower(threading.Thread):
    """Receives every event live; remembers when each ``joining`` arrived."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.conn = Client(path, timeout=600)
        self.conn.send(json.dumps({"v": 1, "op": "events", "args": {"follow": True}}).encode() + b"\n")
        self.joining: dict[str, float] = {}

    def run(self) -> None:
        try:
            while True:
                message = json.loads(self.conn.read_line())
                event = message.get("event")
                if event and event["state"] == "joining":
                    self.joining.setdefault(event["bot_id"], time.time())
        except (Lost, ValueError):
            return

    def stop(self) -> None:
        import socket

        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.join(10)


class LoadClient(threading.Thread):
    def __init__(self, number: int, path: str, due_ids: list[str], until: float) -> None:
        super().__init__(daemon=True)
        self.number = number
        self.path = path
        self.due_ids = due_ids
        self.until = until
        self.rng = random.Random(number)
        self.mine: list[str] = []
        self.latencies: list[float] = []
        self.failures: list[str] = []
        self.ops: Counter = Counter()

    def run(self) -> None:
        try:
            conn = Client(self.path, timeout=60)
        except Lost as exc:
            self.failures.append(f"connect: {exc}")
            return
        with conn:
            serial = 0
            while time.monotonic() < self.until:
                serial += 1
                op, args = self.pick(serial)
                started = time.monotonic()
                try:
                    if op == "events":
                        conn.events(args["id"])
                        reply = {"ok": True}
                    else:
                        reply = conn.request(op, **args)
                except (Lost, AssertionError, ValueError) as exc:
                    self.failures.append(f"{op} {args}: {type(exc).__name__}: {exc}")
                    return
                self.latencies.append(time.monotonic() - started)
                self.ops[op] += 1
                if not reply.get("ok"):
                    self.failures.append(f"{op} {args}: {reply}")
                    continue
                if op == "create":
                    self.mine.append(reply["result"]["id"])
                elif op == "cancel":
                    self.mine.remove(args["id"])

    def pick(self, serial: int) -> tuple[str, dict]:
        roll = self.rng.random()
        if roll < 0.30 or (roll < 0.50 and not self.mine):
            join = iso_ms(datetime.now(UTC) + timedelta(days=self.rng.uniform(1, 60)))
            return "create", {"meeting_url": f"https://meet.google.com/ld-{self.number}-{serial}", "join_at": join,
                              "bot_name": f"load {self.number}", "metadata": {"client": str(self.number)}}
        if roll < 0.40:
            return "reschedule", {"id": self.rng.choice(self.mine),
                                  "join_at": iso_ms(datetime.now(UTC) + timedelta(days=self.rng.uniform(1, 60)))}
        if roll < 0.50:
            return "cancel", {"id": self.rng.choice(self.mine)}
        if roll < 0.70:
            return "show", {"id": self.rng.choice(self.due_ids)}
        if roll < 0.85:
            return "list", {"states": self.rng.sample(STATES, self.rng.randrange(0, 3)), "limit": 20}
        if roll < 0.90:
            return "status", {}
        if roll < 0.95:
            return "events", {"id": self.rng.choice(self.due_ids)}
        return "ping", {}


@pytest.mark.soak
def test_50_clients_while_1000_bots_come_due(make_home):
    home = make_home({"scheduler": {"stage_lead_seconds": LEAD_S},
                      "runner": {"simulate_join_seconds": 0.3, "simulate_duration_seconds": 1.0}})
    home.ok("daemon", "start")
    start = datetime.now(UTC) + timedelta(seconds=LEAD_S + 2)
    rng = random.Random(5)
    joins = [iso_ms(start + timedelta(seconds=rng.uniform(0, WINDOW_S))) for _ in range(DUE - BURSTS * BURST_SIZE)]
    for burst in range(BURSTS):
        joins += [iso_ms(start + timedelta(seconds=WINDOW_S * (burst + 1) / (BURSTS + 1)))] * BURST_SIZE
    lines = "".join(json.dumps({"meeting_url": f"https://zoom.us/j/{n}", "join_at": join, "bot_name": f"due {n}"})
                    + "\n" for n, join in enumerate(joins))
    due_ids = home.ok("create", "--from", "-", "-q", input=lines, timeout=120).stdout.split()
    assert len(due_ids) == DUE
    join_at = dict(zip(due_ids, joins))
    first_join = min(z_seconds(j) for j in joins)
    assert time.time() < first_join - 0.5, "creating the due bots took too long; nothing would be measured"

    follower = Follower(str(home.socket))
    follower.start()
    until = time.monotonic() + (z_seconds(max(joins)) - time.time()) + 0.5
    clients = [LoadClient(n, str(home.socket), due_ids, until) for n in range(CLIENTS)]
    started = time.monotonic()
    for client in clients:
        client.start()
    for client in clients:
        client.join(WINDOW_S + 120)
        assert not client.is_alive(), "a load client hung"
    elapsed = time.monotonic() - started

    # every due bot joined exactly once; fetch the history once
    deadline = time.monotonic() + 30
    while len(follower.joining) < DUE and time.monotonic() < deadline:
        time.sleep(0.1)
    follower.stop()
    with home.client(timeout=120) as conn:
        events = conn.events()
    joining = Counter(e["bot_id"] for e in events if e["state"] == "joining")
    fatal = {e["bot_id"]: e["detail"] for e in events if e["state"] == "fatal_error" and e["bot_id"] in join_at}
    lateness_ms = [(z_seconds(e["at"]) - z_seconds(join_at[e["bot_id"]])) * 1000
                   for e in events if e["state"] == "joining" and e["bot_id"] in join_at]
    observed_ms = [(t - z_seconds(join_at[b])) * 1000 for b, t in follower.joining.items() if b in join_at]
    late_details = [e["detail"] for e in events if e["state"] == "joining" and e["bot_id"] in join_at and e["detail"]]

    failures = [f for client in clients for f in client.failures]
    latencies = sorted(lat * 1000 for client in clients for lat in client.latencies)
    ops = sum((client.ops for client in clients), Counter())
    total = sum(ops.values())
    record_figures(
        "load",
        clients=CLIENTS,
        window_s=WINDOW_S,
        due_bots=DUE,
        requests=total,
        requests_per_s=round(total / elapsed),
        request_failures=len(failures),
        request_ms_p50=round(percentile(latencies, 50), 1),
        request_ms_p99=round(percentile(latencies, 99), 1),
        request_ms_max=round(max(latencies), 1),
        joined=len(joining),
        join_lateness_ms_p50=round(percentile(lateness_ms, 50), 2),
        join_lateness_ms_p99=round(percentile(lateness_ms, 99), 2),
        join_lateness_ms_max=round(max(lateness_ms), 2),
        observed_by_follower_ms_p50=round(percentile(observed_ms, 50), 1),
        observed_by_follower_ms_p99=round(percentile(observed_ms, 99), 1),
        joins_marked_late=len(late_details),
        ops=dict(ops),
    )
    assert not failures, f"{len(failures)} requests failed:\n" + "\n".join(failures[:20])
    assert not fatal, f"{len(fatal)} due bots failed: {list(fatal.items())[:5]}"
    missing = [b for b in due_ids if joining[b] != 1]
    assert not missing, f"{len(missing)} due bots did not join exactly once, e.g. {missing[:5]}"
    assert min(lateness_ms) >= 0, f"a bot joined {-min(lateness_ms):.3f} ms early"
    assert percentile(lateness_ms, 99) < P99_BOUND_MS, f"p99 join lateness {percentile(lateness_ms, 99):.1f} ms"
    assert percentile(observed_ms, 99) < OBSERVED_P99_BOUND_MS
