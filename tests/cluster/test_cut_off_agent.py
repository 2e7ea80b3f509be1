"""An agent cut off from the database while the others still reach it (SPEC §10): its link
to the server is reset and then silent (``CuttableLink``), for several leases, then mended.

The cut-off agent cannot tell this from a database outage, except that the server does not
answer at all (no refusal): so it sends joins only while its leases surely hold. The other
agent re-stages its staged bots once their lease lapsed and joins them; its bots in a meeting
become ``fatal_error`` ("agent NAME lost"). When the link is mended, the agent that came
back stops the runners it no longer holds, and nothing it writes for them is accepted.
Runner-side: never two runners reading ``join`` for one bot.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from tests.cluster.agents import CuttableLink, create_bots, events, joins_read, records, rows, start_agent
from tests.support.home import Homes, pid_alive, wait_until
from tests.support.postgres import PostgresServer
from tests.support.times import in_s

LEASE_S = 4  # longer than the 2 s a first call may wait on a broken pool: the cut begins within the lease
CUT_S = 14
JOINED, STAGED = 3, 5


def test_an_agent_cut_off_loses_its_bots_to_the_other_and_stops_their_runners_when_back(
    make_home: Homes, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.url(schema=postgres_server.fresh_schema())
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    link = CuttableLink(postgres_server.port)
    try:
        # a long outage grace: only telling silence from a refusal keeps the cut-off agent from joining
        a = start_agent(make_home, link.url(url), "agent-a", rec_dir, LEASE_S, "until-leave",
                        outage_grace_seconds=60)
        joined = create_bots(a, [in_s(2)] * JOINED, "joi")
        staged = create_bots(a, [in_s(16)] * STAGED, "sta")  # joins some 8 s into the cut
        wait_until(lambda: all(rows(url)[bot_id] == ("joined_recording", "agent-a") for bot_id in joined),
                   timeout=20, what="agent-a's first bots in their meetings")
        assert all(rows(url)[bot_id] == ("staged", "agent-a") for bot_id in staged)
        b = start_agent(make_home, url, "agent-b", rec_dir, LEASE_S, 1)
        time.sleep(LEASE_S + 0.5)  # agent-b has been connected a whole lease: it may take over
        link.cut()
        cut_at = time.monotonic()

        def taken_over() -> bool:
            now = rows(url)
            return (all(now[bot_id][1] == "agent-b" for bot_id in staged)
                    and all(now[bot_id][0] == "fatal_error" for bot_id in joined))

        wait_until(taken_over, timeout=3 * LEASE_S + 5, what="agent-a's bots taken over or failed by agent-b")
        taken_s = time.monotonic() - cut_at
        wait_until(lambda: all(rows(url)[bot_id][0] == "ended" for bot_id in staged), timeout=20,
                   what="the re-staged bots joined and ended by agent-b")
        time.sleep(max(0.0, cut_at + CUT_S - time.monotonic()))
        link.mend()

        # back: agent-a renews, learns it holds none of them, and stops their runners
        stale = [int(line[1]) for bot_id in joined + staged for line in records(rec_dir, bot_id)
                 if line[0] == "start" and line[2] == "agent-a"]
        assert len(stale) == JOINED + STAGED, stale
        wait_until(lambda: not any(pid_alive(pid) for pid in stale), timeout=20,
                   what="agent-a's runners of bots it no longer holds stopped")
        wait_until(lambda: "no longer holds the bot" in a.log.read_text(), timeout=10, what="agent-a's log says so")
        time.sleep(1.0)  # whatever agent-a would still write for them has been tried by now
    finally:
        link.close()

    history = events(url)
    for bot_id in joined:
        _, state, _, detail, _ = history[bot_id][-1]
        assert (state, detail) == ("fatal_error", "agent agent-a lost"), history[bot_id]
        assert [line[2] for line in joins_read(rec_dir, bot_id)] == ["agent-a"], records(rec_dir, bot_id)
    for bot_id in staged:
        assert [line[2] for line in joins_read(rec_dir, bot_id)] == ["agent-b"], records(rec_dir, bot_id)
        restaged = next(seq for seq, state, _, detail, _ in history[bot_id]
                        if state == "staged" and (detail or "").startswith("re-staged"))
        late = [event for event in history[bot_id] if event[0] > restaged and event[4] == "agent-a"]
        assert late == [], f"agent-a wrote for {bot_id} after losing it: {late}"
        assert [state for _, state, _, _, _ in history[bot_id]][-1] == "ended"
    assert b.show(staged[0])["state"] == "ended"
    print(f"\nagent cut off: {STAGED} staged bots re-staged and {JOINED} joined ones failed {taken_s:.2f} s after "
          f"the cut (lease {LEASE_S} s), each joined once; its runners stopped when back "
          f"(load {os.getloadavg()[0]:.2f})")
