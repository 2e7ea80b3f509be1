"""The database restarting in the middle of a run (SPEC §10, docs/cluster-failures.md): two
real agents on a PostgreSQL server of the module's own, which is stopped (``pg_ctl -m fast``
or ``-m immediate``: a crash) for longer than three leases and started again on the same port:

- bots staged before the outage join on time during it, from their agent's clock (nothing
  waits on the database at the join); their changes (joining, the runner's report, the end)
  appear once it is back, in order, each with its true time; none is re-staged, failed as
  "agent lost" or joined twice (runner-side) although every lease lapsed meanwhile;
- bots already in a meeting when it went down end normally;
- requests meanwhile fail with exit 5 and one ``error:`` line, quickly, on either agent;
- bots created after it is back are staged and joined.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from tests.cluster.agents import create_bots, events, joins_read, rows, start_agent
from tests.support.home import Home, Homes, assert_clean_error, wait_until
from tests.support.postgres import PostgresServer
from tests.support.times import in_s, parse_z

LEASE_S = 2
OUTAGE_S = 8  # over three leases: every lease lapses while the server is down
HOLD_S = 3
SLOTS = 8  # fewer than the 14 bots before the outage: both agents hold some
EARLY, DURING, AFTER = 4, 10, 4
FLOW = ["scheduled", "staged", "joining", "joined_recording", "ended"]
#: Loose (the machine is shared): a join sent from the agent's clock is a few ms late at most.
LATE_BOUND_S = 1.0
#: A request during the outage must fail quickly, not hang on the database.
REQUEST_BOUND_S = 10.0


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_a_database_restart_mid_run_loses_nothing_and_staged_bots_join_on_time(
    mode: str, make_home: Homes, private_postgres: PostgresServer, tmp_path: Path
) -> None:
    url = private_postgres.url(schema=private_postgres.fresh_schema())
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    a = start_agent(make_home, url, "agent-a", rec_dir, LEASE_S, HOLD_S, SLOTS, outage_grace_seconds=30)
    b = start_agent(make_home, url, "agent-b", rec_dir, LEASE_S, HOLD_S, SLOTS, outage_grace_seconds=30)

    early = create_bots(a, [in_s(2)] * EARLY, "ear")
    wait_until(lambda: all(rows(url)[bot_id][0] == "joined_recording" for bot_id in early), timeout=20,
               what="the early bots in their meetings")
    during = create_bots(b, [in_s(2.5 + 0.4 * i) for i in range(DURING)], "dur")
    wait_until(lambda: all(rows(url)[bot_id][0] == "staged" for bot_id in during), timeout=10,
               what="the outage's bots staged")
    before = rows(url)
    assert {agent for _, agent in before.values()} == {"agent-a", "agent-b"}, before

    requests: list[float] = []
    with private_postgres.outage(mode):
        down_us = time.time_ns() // 1000
        for home, args in ((a, ["show", during[0]]), (b, ["list"]),
                           (a, ["create", "https://meet.google.com/abc-defg-hij", "--join-at", in_s(60)])):
            started = time.monotonic()
            result = home.run(*args, timeout=REQUEST_BOUND_S + 5)
            requests.append(time.monotonic() - started)
            said = assert_clean_error(result, 5)
            assert "cannot be reached" in said, said
        time.sleep(max(0.0, down_us / 1e6 + OUTAGE_S - time.time()))
        up_us = time.time_ns() // 1000

    # the agents reconnect by themselves (a probe every 0.5 s), then requests succeed again
    for home in (a, b):
        wait_until(lambda home=home: home.run("list").returncode == 0, timeout=10, interval=0.1,
                   what="requests served again")
    back_s = time.time() - up_us / 1e6
    after = create_bots(a, [in_s(3)] * AFTER, "aft")
    everyone = early + during + after
    wait_until(lambda: all(rows(url).get(bot_id, ("", None))[0] == "ended" for bot_id in everyone), timeout=40,
               interval=0.2, what="every bot ended")
    time.sleep(0.5)  # anything a second runner or a late write would do has happened by now

    history = events(url)
    late_ms: list[float] = []
    for bot_id in everyone:
        got = history[bot_id]
        assert [state for _, state, _, _, _ in got] == FLOW, f"{bot_id}: {got}"
        times = [at_us for _, _, at_us, _, _ in got]
        assert times == sorted(times), f"{bot_id}: written out of order: {got}"
        assert len(joins_read(rec_dir, bot_id)) == 1, f"{bot_id}: joins read {joins_read(rec_dir, bot_id)}"
    final = rows(url)
    assert all(final[bot_id][1] == before[bot_id][1] for bot_id in early + during), "a bot changed agent"
    for bot_id in during:
        joining = next(at_us for _, state, at_us, _, _ in history[bot_id] if state == "joining")
        assert down_us < joining < up_us, f"{bot_id} did not join during the outage: {history[bot_id]}"
        staged_at = next(at_us for _, state, at_us, _, _ in history[bot_id] if state == "staged")
        assert staged_at < down_us
    planned = {bot_id: _join_at_us(a, bot_id) for bot_id in during}
    for bot_id in during:
        joining = next(at_us for _, state, at_us, _, _ in history[bot_id] if state == "joining")
        late_ms.append((joining - planned[bot_id]) / 1000)
    assert all(-1.0 <= late <= LATE_BOUND_S * 1000 for late in late_ms), late_ms
    assert max(requests) < REQUEST_BOUND_S, requests
    log = a.log.read_text() + b.log.read_text()
    assert "is reachable again" in log
    assert "lost" not in " ".join(detail or "" for got in history.values() for _, _, _, detail, _ in got)
    late_ms.sort()
    print(f"\n[{mode}] outage {(up_us - down_us) / 1e6:.1f} s: {DURING} staged bots joined during it, lateness "
          f"p50 {late_ms[len(late_ms) // 2]:.2f} ms, max {late_ms[-1]:.2f} ms; requests meanwhile exit 5 in "
          f"{min(requests):.2f}-{max(requests):.2f} s, served again {back_s:.2f} s after the restart began "
          f"(load {os.getloadavg()[0]:.2f})")


def _join_at_us(home: Home, bot_id: str) -> int:
    return int(parse_z(home.show(bot_id)["join_at"]).timestamp() * 1_000_000)
