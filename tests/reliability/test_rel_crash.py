"""Crash consistency (issue 5): SIGKILL the daemon at random moments under a mixed load.

Several client threads run create / reschedule / cancel (and reads) over raw protocol
connections while the test SIGKILLs the daemon at a random moment and restarts it, again
and again (50 cycles by default, 300 with ``BOTSCHED_SOAK=1``, or ``BOTSCHED_CRASH_KILLS``).
Every operation whose reply arrived is *acknowledged*; one whose connection died is
*unknown* (it may or may not have happened, but never half).

After every restart, with the clients paused, the database (opened read-only beside the
running daemon) must show: every acknowledged create with its fields, every acknowledged
reschedule (or a later unknown one), no acknowledged cancel, nothing that nobody asked
for, at most one row per unknown create, ``PRAGMA integrity_check`` = ok, and no bot with
two ``joining`` events.

Some bots join within seconds, with ``runner.kind = "command"`` (``recorder.sh`` records
every start and stdin line), so kills land while runners are staged, joining and exiting.
At the end: every such bot ended, no runner was started twice for one bot, and ``join``
never arrived twice.

The whole harness runs twice: on the SQLite file, and on the PostgreSQL store (cluster mode,
SPEC §10: the daemon is then an agent of the session's private server, restarted under the
same agent name). Beside SQLite's ``integrity_check``, both stores must be *sound*: every bot
has its history, and its last event is its state.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support.home import Client, Home, Lost
from tests.support.postgres import PostgresServer
from tests.support.times import UTC, iso_ms, z_seconds

from .relhelpers import SOAK, integrity, open_ro, record_figures

KILLS = int(os.environ.get("BOTSCHED_CRASH_KILLS", "300" if SOAK else "50"))
WORKERS = 4
#: How long the load runs between a restart and the next kill (uniformly random).
RUN_S = (0.0, 0.35)
RECORDER = Path(__file__).with_name("recorder.sh")
TERMINAL = {"ended", "fatal_error"}


@dataclass
class Tracked:
    """One bot as the clients know it."""

    tag: str
    url: str
    name: str
    metadata: dict[str, str]
    dedup: str | None
    near: bool
    #: join_at instants (ms) the row may show: the acknowledged one, then unknown later ones
    joins: list[int]
    bot_id: str | None = None
    status: str = "live"  # live | cancelled | maybe_cancelled


@dataclass
class Ledger:
    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[str, Tracked] = field(default_factory=dict)  # tag -> bot (create acknowledged)
    unknown: dict[str, Tracked] = field(default_factory=dict)  # tag -> create without reply
    counts: Counter = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)


class Gate:
    """Workers pass it before each operation; the conductor pauses them and waits until
    every operation in flight has finished (or failed) before it checks the database."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.paused = True
        self.busy = 0
        self.stopping = False

    def enter(self) -> bool:
        with self.cond:
            while self.paused and not self.stopping:
                self.cond.wait(0.5)
            if self.stopping:
                return False
            self.busy += 1
            return True

    def leave(self) -> None:
        with self.cond:
            self.busy -= 1
            self.cond.notify_all()

    def pause(self) -> None:
        with self.cond:
            self.paused = True

    def resume(self) -> None:
        with self.cond:
            self.paused = False
            self.cond.notify_all()

    def wait_idle(self, timeout: float) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: self.busy == 0, timeout), "clients did not go idle"

    def stop(self) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()


def _ms(text: str) -> int:
    return round(z_seconds(text) * 1000)


class Worker(threading.Thread):
    def __init__(self, number: int, home: Home, ledger: Ledger, gate: Gate, seed: int) -> None:
        super().__init__(daemon=True, name=f"crash-worker-{number}")
        self.number = number
        self.home = home
        self.ledger = ledger
        self.gate = gate
        self.rng = random.Random(seed)
        self.conn: Client | None = None
        self.mine: list[Tracked] = []  # acked, live, far: may be rescheduled or cancelled
        self.serial = 0
        self.last_near = 0.0

    def run(self) -> None:
        while self.gate.enter():
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - a harness bug must fail the test, not hang it
                with self.ledger.lock:
                    self.ledger.errors.append(f"worker {self.number} crashed: {type(exc).__name__}: {exc}")
            finally:
                self.gate.leave()
        if self.conn is not None:
            self.conn.close()

    def connection(self) -> Client | None:
        if self.conn is None:
            try:
                self.conn = Client(self.home.socket, timeout=15)
            except Lost:
                time.sleep(0.01)
                return None
        return self.conn

    def lost(self) -> None:
        if self.conn is not None:
            self.conn.close()
        self.conn = None

    def call(self, op: str, **args: Any) -> dict[str, Any] | None:
        """The reply, or None if none arrived (the operation's outcome is unknown)."""
        conn = self.connection()
        if conn is None:
            raise Lost("no daemon")
        try:
            return conn.request(op, **args)
        except Lost:
            self.lost()
            return None

    def step(self) -> None:
        if self.connection() is None:
            return
        roll = self.rng.random()
        if roll < 0.45 or not self.mine:
            self.create()
        elif roll < 0.70:
            self.reschedule()
        elif roll < 0.85:
            self.cancel()
        else:
            self.show()

    def create(self) -> None:
        self.serial += 1
        tag = f"w{self.number}-{self.serial}"
        now = time.monotonic()
        near = now - self.last_near > 0.5 and self.rng.random() < 0.15
        if near:
            self.last_near = now
            join = datetime.now(UTC) + timedelta(seconds=self.rng.uniform(1.3, 3.5))
        else:
            join = datetime.now(UTC) + timedelta(hours=self.rng.uniform(1, 24 * 30))
        join_at = iso_ms(join)
        bot = Tracked(
            tag=tag,
            url=f"https://meet.google.com/crs-{self.number}-{self.serial}",
            name=f"crash {tag}",
            metadata={"tag": tag, "kind": "near" if near else "far"},
            dedup=f"dk-{tag}" if self.rng.random() < 0.3 else None,
            near=near,
            joins=[_ms(join_at)],
        )
        args: dict[str, Any] = {"meeting_url": bot.url, "bot_name": bot.name, "join_at": join_at,
                                "metadata": bot.metadata}
        if bot.dedup:
            args["deduplication_key"] = bot.dedup
        try:
            reply = self.call("create", **args)
        except Lost:
            return
        with self.ledger.lock:
            self.ledger.counts["create sent"] += 1
            if reply is None:
                self.ledger.unknown[tag] = bot
                self.ledger.counts["unknown"] += 1
                return
            if not reply.get("ok"):
                self.ledger.errors.append(f"create {tag}: {reply}")
                return
            self.ledger.counts["create acked"] += 1
            self.ledger.counts["acked"] += 1
            result = reply["result"]
            bot.bot_id = result["id"]
            bot.joins = [_ms(result["join_at"])]
            self.ledger.acked[tag] = bot
        if not near:
            self.mine.append(bot)

    def reschedule(self) -> None:
        bot = self.rng.choice(self.mine)
        join_at = iso_ms(datetime.now(UTC) + timedelta(hours=self.rng.uniform(1, 24 * 30)))
        try:
            reply = self.call("reschedule", id=bot.bot_id, join_at=join_at)
        except Lost:
            return
        with self.ledger.lock:
            self.ledger.counts["reschedule sent"] += 1
            if reply is None:
                bot.joins.append(_ms(join_at))  # may or may not have happened
                self.ledger.counts["unknown"] += 1
            elif reply.get("ok"):
                bot.joins = [_ms(reply["result"]["join_at"])]
                self.ledger.counts["reschedule acked"] += 1
                self.ledger.counts["acked"] += 1
            else:
                self.ledger.errors.append(f"reschedule {bot.tag} {bot.bot_id}: {reply}")

    def cancel(self) -> None:
        bot = self.rng.choice(self.mine)
        try:
            reply = self.call("cancel", id=bot.bot_id)
        except Lost:
            return
        with self.ledger.lock:
            self.ledger.counts["cancel sent"] += 1
            if reply is None:
                bot.status = "maybe_cancelled"
                self.ledger.counts["unknown"] += 1
            elif reply.get("ok"):
                bot.status = "cancelled"
                self.ledger.counts["cancel acked"] += 1
                self.ledger.counts["acked"] += 1
            else:
                self.ledger.errors.append(f"cancel {bot.tag} {bot.bot_id}: {reply}")
        self.mine.remove(bot)  # never touched again: its fate is checked against the ledger

    def show(self) -> None:
        bot = self.rng.choice(self.mine)
        try:
            reply = self.call("show", id=bot.bot_id)
        except Lost:
            return
        if reply is None:
            return
        with self.ledger.lock:
            self.ledger.counts["show"] += 1
            if not reply.get("ok"):
                self.ledger.errors.append(f"show of a live bot {bot.tag} {bot.bot_id}: {reply}")
            elif _ms(reply["result"]["join_at"]) not in bot.joins:
                self.ledger.errors.append(f"show {bot.tag}: join_at {reply['result']['join_at']} not in {bot.joins}")


# -- checking --------------------------------------------------------------------------------


#: A store whose rows disagree with their history is corrupt whatever its file format says: a
#: bot without events, or whose last event is not its state (the same SQL on both stores).
UNSOUND = (
    ("bot(s) without a history",
     "SELECT b.id FROM bots b WHERE NOT EXISTS (SELECT 1 FROM events e WHERE e.bot_id = b.id)"),
    ("bot(s) whose state is not their last event's",
     "SELECT b.id FROM bots b JOIN events e ON e.bot_id = b.id "
     "WHERE e.seq = (SELECT max(l.seq) FROM events l WHERE l.bot_id = b.id) AND e.state <> b.state"),
)


class StoreView:
    """The daemon's store, read beside it: its SQLite file read-only, or its PostgreSQL schema."""

    def __init__(self, home: Home, url: str | None) -> None:
        self.home = home
        self.url = url

    def _query(self, sql: str) -> list[tuple[Any, ...]]:
        if self.url is not None:
            import psycopg

            with psycopg.connect(self.url) as connection:
                return list(connection.execute(sql).fetchall())  # type: ignore[arg-type]
        conn = open_ro(self.home.db)
        try:
            return list(conn.execute(sql).fetchall())
        finally:
            conn.close()

    def rows(self) -> tuple[list[dict[str, Any]], list[str]]:
        rows = [
            {"id": r[0], "meeting_url": r[1], "bot_name": r[2], "state": r[3], "join_at": r[4],
             "metadata": json.loads(r[5]), "deduplication_key": r[6]}
            for r in self._query("SELECT id, meeting_url, bot_name, state, join_at, metadata, dedup_key FROM bots")
        ]
        doubled = [r[0] for r in self._query(
            "SELECT bot_id FROM events WHERE state = 'joining' GROUP BY bot_id HAVING count(*) > 1")]
        return rows, doubled

    def soundness(self) -> str:
        """"ok", else what is wrong (SQLite's integrity_check first)."""
        if self.url is None:
            result = integrity(self.home.db)
            if result != "ok":
                return f"integrity_check says {result}"
        for what, sql in UNSOUND:
            found = [row[0] for row in self._query(sql)]
            if found:
                return f"{len(found)} {what}: {found[:5]}"
        return "ok"


def check(rows: list[dict[str, Any]], doubled: list[str], ledger: Ledger, when: str) -> tuple[list[str], int]:
    """Compare the bots the daemon has with what the clients were told; returns the
    problems and how many acknowledged bots are missing (lost)."""
    problems: list[str] = [f"{when}: {bot_id} has two joining events" for bot_id in doubled]
    by_tag: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        by_tag.setdefault(row["metadata"].get("tag", "?"), []).append(row)
    lost = 0
    with ledger.lock:
        acked = dict(ledger.acked)
        unknown = dict(ledger.unknown)
    for tag, found in by_tag.items():
        if tag not in acked and tag not in unknown:
            problems.append(f"{when}: bot(s) nobody created: {[r['id'] for r in found]} tag {tag!r}")
        if len(found) > 1:
            problems.append(f"{when}: tag {tag} stored {len(found)} times: {[r['id'] for r in found]}")
    for tag, bot in list(acked.items()) + list(unknown.items()):
        found = by_tag.get(tag, [])
        if not found:
            if tag in acked and bot.status == "live":
                lost += 1
                problems.append(f"{when}: acknowledged bot {bot.bot_id} ({tag}) is missing")
            continue
        row = found[0]
        if tag in acked and row["id"] != bot.bot_id:
            problems.append(f"{when}: {tag} has id {row['id']}, the client was told {bot.bot_id}")
        if tag in acked and bot.status == "cancelled":
            problems.append(f"{when}: {bot.bot_id} ({tag}) was cancelled (acknowledged) but is {row['state']}")
            continue
        expected = {"meeting_url": bot.url, "bot_name": bot.name, "metadata": bot.metadata,
                    "deduplication_key": bot.dedup}
        for key, value in expected.items():
            if row[key] != value:
                problems.append(f"{when}: {row['id']} ({tag}) {key} = {row[key]!r}, expected {value!r}")
        if row["join_at"] is None or _ms(row["join_at"]) not in bot.joins:
            problems.append(f"{when}: {row['id']} ({tag}) join_at {row['join_at']} is none of the acknowledged "
                            f"or later unknown values {bot.joins}")
    return problems, lost


def _runner_records(rec_dir: Path) -> dict[str, list[str]]:
    return {path.stem: path.read_text().splitlines() for path in rec_dir.glob("bot_*.log")}


@dataclass
class CrashRun:
    store: str
    seed: int
    kills: int
    store_problems: list[str]
    runner_problems: list[str]
    near_problems: list[str]
    harness_errors: list[str]
    lost: int


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def crash_run(request, module_make_home, tmp_path_factory) -> CrashRun:
    """The harness, run once for the module per store; the tests below each assert one property."""
    rec_dir = tmp_path_factory.mktemp("records")
    config: dict[str, dict[str, Any]] = {
        "scheduler": {"stage_lead_seconds": 1, "misfire_grace_seconds": 300},
        "runner": {"kind": "command", "command": ["/bin/sh", str(RECORDER)], "env": {"REC_DIR": str(rec_dir)},
                   "max_concurrent": 200, "leave_grace_seconds": 5},
    }
    url = None
    if request.param == "postgres":
        server: PostgresServer = request.getfixturevalue("postgres_server")
        url = server.url(schema=server.fresh_schema())
        config["store"] = {"url": url}
        config["cluster"] = {"agent_name": "crash-agent"}
    home = module_make_home(config)
    view = StoreView(home, url)
    seed = int(os.environ.get("BOTSCHED_CRASH_SEED", str(random.randrange(1 << 30))))
    rng = random.Random(seed)
    ledger = Ledger()
    gate = Gate()
    workers = [Worker(n, home, ledger, gate, rng.randrange(1 << 30)) for n in range(WORKERS)]
    store_problems: list[str] = []
    lost_total = 0
    kills = 0
    started = time.monotonic()
    home.launch()
    for worker in workers:
        worker.start()
    try:
        for _cycle in range(KILLS):
            gate.resume()
            time.sleep(rng.uniform(*RUN_S))
            home.sigkill()  # whatever is in flight now gets no reply
            kills += 1
            gate.pause()
            gate.wait_idle(60)
            home.launch()
            result = view.soundness()
            if result != "ok":
                store_problems.append(f"after kill {kills}: {result}")
            rows, doubled = view.rows()
            found, lost = check(rows, doubled, ledger, f"after kill {kills}")
            store_problems += found
            lost_total += lost
            if len(store_problems) > 30:
                break
        # the end: no more load; let the near bots run to their end, then look through the API
        gate.stop()
        for worker in workers:
            worker.join(30)
        near = [b for b in list(ledger.acked.values()) + list(ledger.unknown.values()) if b.near]

        def near_states() -> dict[str, str]:
            rows, _ = view.rows()
            tags = {b.tag for b in near}
            return {r["id"]: r["state"] for r in rows if r["metadata"].get("tag") in tags}

        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(s not in TERMINAL for s in near_states().values()):
            time.sleep(0.2)
        with home.client() as conn:
            listed = conn.ok("list", states=[], limit=0)["bots"]
            events = conn.events()
        joinings = Counter(e["bot_id"] for e in events if e["state"] == "joining")
        doubled = sorted(bot_id for bot_id, n in joinings.items() if n > 1)
        found, lost = check(listed, doubled, ledger, "final (through the daemon)")
        store_problems += found
        lost_total = max(lost_total, lost)
        final_states = near_states()
    finally:
        gate.stop()
        for worker in workers:
            worker.join(5)
        home.terminate()
    elapsed = time.monotonic() - started
    result = view.soundness()
    if result != "ok":
        store_problems.append(f"after the graceful stop: {result}")

    records = _runner_records(rec_dir)
    log_text = "".join(path.read_text(errors="replace") for path in sorted(home.path.glob("botsched.log*")))

    def log_of(bot_id: str) -> str:
        lines = [line[11:] for line in log_text.splitlines() if bot_id in line]
        return "\n      log: " + "\n      log: ".join(lines[:12]) if lines else ""

    runner_problems: list[str] = []
    for bot_id, lines in sorted(records.items()):
        starts = [line for line in lines if line.startswith("start ")]
        joins = [line for line in lines if line.startswith("line ") and line.endswith(" join")]
        if len(starts) != 1:
            runner_problems.append(f"{bot_id}: its runner was started {len(starts)} times: {lines}{log_of(bot_id)}")
        if len(joins) > 1:
            runner_problems.append(f"{bot_id}: join arrived {len(joins)} times: {lines}{log_of(bot_id)}")
    by_id = {bot["id"]: bot for bot in listed}
    near_problems: list[str] = []
    for bot_id, state in sorted(final_states.items()):
        if state == "ended" and bot_id not in records:
            near_problems.append(f"{bot_id}: ended without its runner ever starting")
        if state != "ended":
            detail = by_id.get(bot_id, {}).get("events", [{}])[-1].get("detail")
            near_problems.append(f"{bot_id}: a bot whose runner joined and exited 0 finished as {state} ({detail}); "
                                 f"runner records: {records.get(bot_id)}{log_of(bot_id)}")

    counts = ledger.counts
    record_figures(
        f"crash consistency ({request.param})",
        seed=seed,
        kills=kills,
        seconds=round(elapsed, 1),
        ops_sent=counts["create sent"] + counts["reschedule sent"] + counts["cancel sent"],
        ops_acknowledged=counts["acked"],
        creates_acknowledged=counts["create acked"],
        reschedules_acknowledged=counts["reschedule acked"],
        cancels_acknowledged=counts["cancel acked"],
        ops_without_reply=counts["unknown"],
        bots_in_store=len(listed),
        near_bots_run=len(final_states),
        near_bots_ended=sum(1 for state in final_states.values() if state == "ended"),
        runner_starts=sum(1 for lines in records.values() for line in lines if line.startswith("start ")),
        bots_lost=lost_total,
    )
    return CrashRun(request.param, seed, kills, store_problems, runner_problems, near_problems, list(ledger.errors),
                    lost_total)


def _report(run: CrashRun, problems: list[str]) -> str:
    return f"{len(problems)} problem(s) ({run.store}, seed {run.seed}, {run.kills} kills):\n" + "\n".join(problems[:25])


@pytest.mark.soak
def test_crash_harness_ran_every_kill_cycle_without_errors(crash_run):
    assert not crash_run.harness_errors, _report(crash_run, crash_run.harness_errors)
    assert crash_run.kills >= KILLS or crash_run.store_problems, f"only {crash_run.kills} of {KILLS} kill cycles ran"


@pytest.mark.soak
def test_sigkill_loses_no_acknowledged_operation_and_keeps_the_database_sound(crash_run):
    """Acknowledged creates exist with their fields, reschedules are reflected, cancels are
    gone, nothing appears twice or from nowhere, integrity_check is ok, one joining event
    per bot -- after every one of the restarts."""
    assert not crash_run.store_problems, _report(crash_run, crash_run.store_problems)
    assert crash_run.lost == 0


@pytest.mark.soak
def test_sigkill_never_starts_a_runner_twice_nor_sends_join_twice(crash_run):
    assert not crash_run.runner_problems, _report(crash_run, crash_run.runner_problems)


@pytest.mark.soak
def test_sigkill_leaves_every_joined_bot_ending_normally(crash_run):
    """Runners that joined and exited 0 end their bots as ``ended`` even when a restart
    lands at the moment they exit (no bot silently turned into a failure)."""
    assert not crash_run.near_problems, _report(crash_run, crash_run.near_problems)
