"""An agent frozen past its lease (SIGSTOP half a second before its bots' join_at, when their
joins are already armed in its join process, which is not frozen with it; SIGCONT once the
other agent has re-staged and joined them, late): the join process sends nothing while its
daemon is stopped, and the thawed agent's joins are overdue and must not be sent; the agent
stops the runners it no longer holds (SIGTERM, as a leave does: no runner of its survives for
those bots), and nothing it writes for them is accepted.
Runner-side: exactly one join per bot."""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path

import psycopg

from tests.cluster.agents import joins_read, records
from tests.support.home import Home, Homes, pid_alive, wait_until
from tests.support.postgres import PostgresServer
from tests.support.times import in_s, parse_z

RECORDER = Path(__file__).with_name("agent_recorder.sh")
LEASE_S = 2
BOTS = 10
JOIN_IN_S = 4


def _agent(make_home: Homes, url: str, name: str, rec_dir: Path) -> Home:
    home = make_home(
        {
            "store": {"url": url},
            "cluster": {"agent_name": name, "lease_seconds": LEASE_S},
            "scheduler": {"stage_lead_seconds": 20},
            "runner": {"kind": "command", "command": ["/bin/sh", str(RECORDER)], "max_concurrent": 25,
                       "env": {"REC_DIR": str(rec_dir), "AGENT_TAG": name, "HOLD_S": "0.5"}},
        }
    )
    home.start()
    return home


def test_a_thawed_agent_sends_no_join_for_bots_taken_over_while_it_was_frozen(
    make_home: Homes, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.url(schema=postgres_server.fresh_schema())
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    a = _agent(make_home, url, "agent-a", rec_dir)
    b = _agent(make_home, url, "agent-b", rec_dir)
    join_at = in_s(JOIN_IN_S)
    items = [{"meeting_url": f"https://meet.google.com/abc-de{'abcdefghij'[i]}f-ghi", "join_at": join_at}
             for i in range(BOTS)]
    created = json.loads(a.ok("create", "--from", "-", "--json",
                              input="".join(json.dumps(item) + "\n" for item in items)).stdout)
    ids = [bot["id"] for bot in created]

    def rows() -> dict[str, tuple[str, str | None]]:
        with psycopg.connect(url) as connection:
            return {bot_id: (state, agent) for bot_id, state, agent in
                    connection.execute("SELECT id, state, agent FROM bots").fetchall()}

    wait_until(lambda: all(state == "staged" for state, _ in rows().values()), timeout=10, what="all bots staged")
    held = {bot_id: agent for bot_id, (_, agent) in rows().items()}
    frozen_name = str(Counter(held.values()).most_common(1)[0][0])
    frozen, other = (a, b) if frozen_name == "agent-a" else (b, a)
    other_name = "agent-b" if frozen is a else "agent-a"
    taken = {bot_id for bot_id, agent in held.items() if agent == frozen_name}
    pid = frozen.daemon_pid()
    assert pid is not None
    time.sleep(max(0.0, (parse_z(join_at).timestamp() - 0.5) - time.time()))  # its joins are armed
    os.kill(pid, signal.SIGSTOP)
    try:
        def joined_by_other() -> bool:
            now = rows()
            return all(now[bot_id][1] == other_name and now[bot_id][0] != "staged" for bot_id in taken)

        wait_until(joined_by_other, timeout=5 * LEASE_S + 5, what="the frozen agent's bots joined by the other")
    finally:
        os.kill(pid, signal.SIGCONT)  # its joins are overdue by now

    def all_ended() -> bool:
        return all(other.show(bot_id)["state"] in ("ended", "fatal_error") for bot_id in ids)

    wait_until(all_ended, timeout=20, interval=0.1, what="every bot final")
    time.sleep(1.0)  # anything the thawed agent would still send or write has been sent by now
    # the runners the thawed agent started for the bots taken from it are stopped, not left running
    stale = [int(line[1]) for bot_id in taken for line in records(rec_dir, bot_id)
             if line[0] == "start" and line[2] == frozen_name]
    assert stale, "the frozen agent had started runners for its bots"
    wait_until(lambda: not any(pid_alive(pid) for pid in stale), timeout=15,
               what="the thawed agent's runners of bots it no longer holds stopped")
    for bot_id in ids:
        assert other.show(bot_id)["state"] == "ended", other.show(bot_id)
        seen = records(rec_dir, bot_id)
        joins = joins_read(rec_dir, bot_id)
        assert len(joins) == 1, f"{bot_id}: {seen}"
        assert bot_id not in taken or joins[0][2] == other_name, f"{bot_id}: {seen}"
    with psycopg.connect(url) as connection:
        late = connection.execute(
            "SELECT e.bot_id, e.state, e.detail FROM events e WHERE e.agent = %s AND e.bot_id = ANY(%s) "
            "AND e.seq > (SELECT min(r.seq) FROM events r WHERE r.bot_id = e.bot_id AND r.detail LIKE 're-staged%%')",
            (frozen_name, list(taken)),
        ).fetchall()
    assert late == [], f"the thawed agent wrote for bots it no longer held: {late}"
    assert "no longer holds the bot" in frozen.log.read_text()
    print(f"\n{len(taken)} bot(s) taken over from the frozen agent, each joined once (load {os.getloadavg()[0]:.2f})")
