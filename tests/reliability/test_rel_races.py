"""Races (issue 5): exactly one winner, observed over many bots from many concurrent clients.

- cancel vs staging and reschedule vs staging: each bot's request is fired at its stage
  moment (``join_at - stage_lead``) give or take 150 ms, so some arrive before the scheduler
  stages the bot and some after. Either the request wins (ok; the bot never shows a
  ``staged`` event -- a follower connection records every event live) or staging wins (the
  request gets ``conflict`` / exit 4; the bot was staged with its *old* join_at);
- two reschedules of one bot: both succeed in some order, and the bot ends up with exactly
  the value of the later one -- never a mix;
- reschedule vs cancel: the cancel always wins in the end; the reschedule either came first
  (ok) or finds no bot (``not_found`` / exit 3);
- cancel twice: one ``ok``, one ``not_found``;
- the same through the CLI: exit codes 0 / 4 and 0 / 3.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta
from typing import Any

import pytest

from tests.support.home import Client, Lost
from tests.support.times import UTC, iso_ms, z_seconds

from .relhelpers import record_figures

LEAD_S = 2.0
SPREAD_S = 0.15
STAGE_RACERS = 100  # bots per staging race (cancel, reschedule)
PAIR_RACERS = 60  # bots per two-client race
THREADS = 16
FAR = "2028-05-01T12:00:00Z"


class Follower(threading.Thread):
    """``events --follow`` over the socket: every event the daemon publishes, as it happens."""

    def __init__(self, path: str) -> None:
        super().__init__(daemon=True)
        self.conn = Client(path, timeout=300)
        self.conn.send(json.dumps({"v": 1, "op": "events", "args": {"follow": True}}).encode() + b"\n")
        self.seen: list[tuple[str, str]] = []

    def run(self) -> None:
        try:
            while True:
                message = json.loads(self.conn.read_line())
                if "event" in message:
                    self.seen.append((message["event"]["bot_id"], message["event"]["state"]))
        except (Lost, ValueError):
            return

    def stop(self) -> set[tuple[str, str]]:
        import socket

        try:
            self.conn.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.join(10)
        return set(self.seen)


def _bulk(home, joins: list[str]) -> list[str]:
    lines = "".join(json.dumps({"meeting_url": f"https://zoom.us/j/race{n}", "join_at": join,
                                "bot_name": f"racer {n}"}) + "\n" for n, join in enumerate(joins))
    ids = home.ok("create", "--from", "-", "-q", input=lines).stdout.split()
    assert len(ids) == len(joins)
    return ids


def _fire_all(path: str, plan: list[tuple[float, str, dict[str, Any]]]) -> list[tuple[dict[str, Any], float]]:
    """Send each (monotonic time, op, args) at its time from THREADS connections; returns
    (reply, lateness of the send) in plan order."""
    order = sorted(range(len(plan)), key=lambda i: plan[i][0])
    lock = threading.Lock()
    results: list[Any] = [None] * len(plan)

    def worker() -> None:
        conn = Client(path, timeout=60)
        try:
            while True:
                with lock:
                    if not order:
                        return
                    index = order.pop(0)
                when, op, args = plan[index]
                delay = when - time.monotonic()
                if delay > 0:
                    time.sleep(delay)
                late = time.monotonic() - when
                results[index] = (conn.request(op, **args), late)
        finally:
            conn.close()

    with ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(worker) for _ in range(THREADS)]:
            future.result()
    return results


@pytest.fixture
def race_home(make_home):
    home = make_home({"scheduler": {"stage_lead_seconds": LEAD_S},
                      "runner": {"simulate_join_seconds": 0.2, "simulate_duration_seconds": 0.3}})
    home.ok("daemon", "start")
    return home


def test_cancel_and_reschedule_racing_staging_have_exactly_one_winner(race_home):
    home = race_home
    rng = random.Random()
    n = STAGE_RACERS
    base = datetime.now(UTC) + timedelta(seconds=3.5)
    # bot i is staged at base + i * 12 ms; cancels and reschedules interleave
    joins = [iso_ms(base + timedelta(seconds=LEAD_S + i * 0.012)) for i in range(2 * n)]
    ids = _bulk(home, joins)
    follower = Follower(str(home.socket))
    follower.start()
    offset = time.monotonic() - time.time()  # wall -> monotonic
    plan = []
    new_join = {}
    for i, bot_id in enumerate(ids):
        fire = z_seconds(joins[i]) - LEAD_S + offset + rng.uniform(-SPREAD_S, SPREAD_S)
        if i % 2 == 0:
            plan.append((fire, "cancel", {"id": bot_id}))
        else:
            new_join[bot_id] = iso_ms(datetime.now(UTC) + timedelta(days=30, seconds=i))
            plan.append((fire, "reschedule", {"id": bot_id, "join_at": new_join[bot_id]}))
    assert time.monotonic() < plan[0][0] - SPREAD_S, "creating the bots took too long"
    results = _fire_all(str(home.socket), plan)
    time.sleep(LEAD_S + 1.0)  # every staged racer has joined (and ended) by now
    seen = follower.stop()
    with home.client() as conn:
        final = {bot_id: conn.request("show", id=bot_id) for bot_id in ids}

    outcomes: Counter = Counter()
    problems = []
    for i, bot_id in enumerate(ids):
        (reply, _), op = results[i], plan[i][1]
        staged = (bot_id, "staged") in seen
        shown = final[bot_id]
        code = "ok" if reply["ok"] else reply["error"]["code"]
        outcomes[f"{op} {code}"] += 1
        if op == "cancel":
            if code == "ok":
                if staged:
                    problems.append(f"{bot_id}: cancel succeeded but the bot was also staged")
                if shown["ok"] or shown["error"]["code"] != "not_found":
                    problems.append(f"{bot_id}: cancel succeeded but show says {shown}")
            elif code == "conflict":
                if not staged:
                    problems.append(f"{bot_id}: cancel lost ({reply['error']['message']}) but no staged event")
                if not shown["ok"] or shown["result"]["state"] == "scheduled":
                    problems.append(f"{bot_id}: cancel lost yet the bot is {shown}")
            else:
                problems.append(f"{bot_id}: cancel answered {reply}")
        else:
            if code == "ok":
                if staged:
                    problems.append(f"{bot_id}: reschedule succeeded but the bot was also staged")
                bot = shown.get("result") or {}
                if bot.get("state") != "scheduled" or bot.get("join_at") != new_join[bot_id]:
                    problems.append(f"{bot_id}: rescheduled (ok) but now {bot.get('state')} at {bot.get('join_at')}")
            elif code == "conflict":
                bot = shown.get("result") or {}
                if not staged:
                    problems.append(f"{bot_id}: reschedule lost but no staged event")
                if bot.get("join_at") != joins[i]:
                    problems.append(f"{bot_id}: reschedule lost, yet join_at is {bot.get('join_at')}, not {joins[i]}")
                if not any(e["state"] == "joining" for e in bot.get("events", [])):
                    problems.append(f"{bot_id}: staged but never joined: {bot.get('events')}")
            else:
                problems.append(f"{bot_id}: reschedule answered {reply}")
    lateness = sorted(late for _, late in results)
    record_figures("races vs staging", bots=len(ids), outcomes=dict(outcomes),
                   send_lateness_p50_ms=round(lateness[len(lateness) // 2] * 1000, 1))
    assert not problems, "\n".join(problems[:30])
    for op in ("cancel", "reschedule"):
        assert outcomes[f"{op} ok"] and outcomes[f"{op} conflict"], (
            f"the {op} race was not observed both ways (outcomes {dict(outcomes)}); the clients may be too late")


def _pairs(path: str, ids: list[str], first, second) -> list[tuple[dict, dict]]:
    """For each bot, ``first(bot)`` and ``second(bot)`` (op, args) sent at the same moment
    from two connections; returns both replies."""
    results: list[tuple[dict, dict]] = []
    pairs = max(1, THREADS // 2)
    chunks = [ids[i::pairs] for i in range(pairs)]

    def run_pair(chunk: list[str]) -> list[tuple[str, dict, dict]]:
        barrier = threading.Barrier(2)
        out: dict[str, list] = {bot_id: [None, None] for bot_id in chunk}

        def side(index: int, make) -> None:
            with Client(path, timeout=60) as conn:
                for bot_id in chunk:
                    op, args = make(bot_id)
                    barrier.wait(30)
                    out[bot_id][index] = conn.request(op, **args)

        threads = [threading.Thread(target=side, args=(0, first)), threading.Thread(target=side, args=(1, second))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        return [(bot_id, *out[bot_id]) for bot_id in chunk]

    with ThreadPoolExecutor(pairs) as pool:
        for chunk_result in pool.map(run_pair, chunks):
            results.extend(chunk_result)
    return results


def _far_bots(home, count: int) -> list[str]:
    return _bulk(home, [FAR] * count)


def test_two_reschedules_of_one_bot_the_later_one_wins_whole(race_home):
    home = race_home
    ids = _far_bots(home, PAIR_RACERS)
    value = {bot_id: (f"2029-01-{1 + n % 28:02d}T10:00:00.111Z", f"2029-02-{1 + n % 28:02d}T11:00:00.222Z")
             for n, bot_id in enumerate(ids)}
    results = _pairs(str(home.socket), ids,
                     lambda b: ("reschedule", {"id": b, "join_at": value[b][0]}),
                     lambda b: ("reschedule", {"id": b, "join_at": value[b][1]}))
    problems = []
    winners: Counter = Counter()
    with home.client() as conn:
        for bot_id, one, two in results:
            if not (one and one["ok"] and two and two["ok"]):
                problems.append(f"{bot_id}: a legal reschedule failed: {one} / {two}")
                continue
            later = max((one, two), key=lambda r: r["result"]["updated_at"])
            final = conn.ok("show", id=bot_id)
            winners["first client" if later is one else "second client"] += 1
            if final["join_at"] != later["result"]["join_at"] or final["join_at"] not in value[bot_id]:
                problems.append(f"{bot_id}: final join_at {final['join_at']}, the later reschedule said "
                                f"{later['result']['join_at']}")
            if final["state"] != "scheduled":
                problems.append(f"{bot_id}: {final['state']} after two reschedules")
    record_figures("races two reschedules", bots=len(ids), last_writer=dict(winners))
    assert not problems, "\n".join(problems[:30])


def test_reschedule_vs_cancel_the_cancel_wins_and_the_reschedule_is_consistent(race_home):
    home = race_home
    ids = _far_bots(home, PAIR_RACERS)
    results = _pairs(str(home.socket), ids,
                     lambda b: ("reschedule", {"id": b, "join_at": "2029-03-03T03:03:03Z"}),
                     lambda b: ("cancel", {"id": b}))
    problems = []
    outcomes: Counter = Counter()
    with home.client() as conn:
        for bot_id, resched, cancel in results:
            r = "ok" if resched["ok"] else resched["error"]["code"]
            c = "ok" if cancel["ok"] else cancel["error"]["code"]
            outcomes[f"reschedule {r} / cancel {c}"] += 1
            if c != "ok" or r not in ("ok", "not_found"):
                problems.append(f"{bot_id}: reschedule {resched} / cancel {cancel}")
            shown = conn.request("show", id=bot_id)
            if shown["ok"]:
                problems.append(f"{bot_id}: still exists after an acknowledged cancel: {shown['result']['state']}")
    record_figures("races reschedule vs cancel", bots=len(ids), outcomes=dict(outcomes))
    assert not problems, "\n".join(problems[:30])


def test_cancel_twice_exactly_one_succeeds(race_home):
    home = race_home
    ids = _far_bots(home, PAIR_RACERS)
    results = _pairs(str(home.socket), ids, lambda b: ("cancel", {"id": b}), lambda b: ("cancel", {"id": b}))
    problems = []
    for bot_id, one, two in results:
        codes = sorted("ok" if r["ok"] else r["error"]["code"] for r in (one, two))
        if codes != ["not_found", "ok"]:
            problems.append(f"{bot_id}: two cancels answered {codes}: {one} / {two}")
    assert not problems, "\n".join(problems[:30])
    assert not set(ids) & {bot["id"] for bot in home.list_all()}


def test_the_cli_reports_the_loser_with_exit_3_or_4(race_home):
    home = race_home
    far = _far_bots(home, 4)
    base = datetime.now(UTC) + timedelta(seconds=4)
    joins = [iso_ms(base + timedelta(seconds=LEAD_S + i * 0.15)) for i in range(6)]
    near = _bulk(home, joins)
    offset = time.monotonic() - time.time()

    def cancel_at(bot_id: str, when: float) -> Any:
        delay = when - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        return home.run("cancel", bot_id)

    with ThreadPoolExecutor(16) as pool:
        twice = [(bot_id, pool.submit(home.run, "cancel", bot_id), pool.submit(home.run, "cancel", bot_id))
                 for bot_id in far]
        # a CLI process takes a few hundred ms to start: aim the cancels around the stage moment
        staging = [(bot_id, pool.submit(cancel_at, bot_id, z_seconds(join) - LEAD_S + offset - 0.35 + (i % 3) * 0.2))
                   for i, (bot_id, join) in enumerate(zip(near, joins))]
        problems = []
        for bot_id, one, two in twice:
            a, b = one.result(), two.result()
            if sorted((a.returncode, b.returncode)) != [0, 3]:
                problems.append(f"{bot_id}: two CLI cancels exited {a.returncode} ({a.stderr.strip()}) and "
                                f"{b.returncode} ({b.stderr.strip()})")
            loser = a if a.returncode else b
            if loser.returncode and (len(loser.stderr.splitlines()) != 1 or not loser.stderr.startswith("error:")):
                problems.append(f"{bot_id}: the loser printed {loser.stderr!r}")
        codes = Counter()
        for bot_id, future in staging:
            result = future.result()
            codes[result.returncode] += 1
            shown = home.run("show", bot_id, "--json")
            if result.returncode == 0 and shown.returncode != 3:
                problems.append(f"{bot_id}: cancelled (exit 0) but show exits {shown.returncode}")
            elif result.returncode == 4:
                if not result.stderr.startswith("error:") or ("staged" not in result.stderr and "joining" not in \
                        result.stderr and "ended" not in result.stderr and "joined" not in result.stderr):
                    problems.append(f"{bot_id}: exit 4 with {result.stderr!r}")
                if shown.returncode != 0:
                    problems.append(f"{bot_id}: cancel lost (exit 4) but show exits {shown.returncode}")
            elif result.returncode not in (0, 4):
                problems.append(f"{bot_id}: cancel racing staging exited {result.returncode}: {result.stderr}")
    record_figures("races cli", cancel_vs_staging_exit_codes=dict(codes))
    assert not problems, "\n".join(problems)
