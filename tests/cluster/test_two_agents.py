"""Two real agents (two daemons, two BOTSCHED_HOMEs, each its own socket) on one PostgreSQL
database, command runners that record every line they read (``agent_recorder.sh``):

- 40 due bots are staged through claims: each bot is joined by exactly one runner, of one
  agent, and neither agent ever holds (or starts) more bots than its ``runner.max_concurrent``;
- SIGKILL of the agent that staged the first bots, after their joins: its bots in a meeting
  become ``fatal_error`` ("agent NAME lost") once its lease lapses, and its staged bots that
  had not joined yet are re-staged by the other agent (an event says why), which joins them;
- its runners outlive it (as on one machine), but once restarted under its name it stops
  those of the bots it lost: no bot keeps a second runner.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections import Counter
from pathlib import Path
from typing import Any

from tests.cluster import recording
from tests.cluster.recording import HELD, meeting, recording_agent
from tests.support.home import Home, Homes, pid_alive, wait_until
from tests.support.postgres import PostgresServer
from tests.support.times import in_s

SLOTS = 25
LEASE_S = 2
FIRST, SECOND = 20, 20  # joins at +3 s (joined before the kill), at +14 s (staged, not joined)


def _agent(make_home: Homes, url: str, name: str, rec_dir: Path) -> Home:
    return recording_agent(make_home, url, name, rec_dir, slots=SLOTS, hold_s=2, lease_s=LEASE_S, stage_lead_s=20)


def test_two_agents_share_40_bots_and_a_killed_agents_bots_are_taken_over_or_failed(
    make_home: Homes, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.url(schema=postgres_server.fresh_schema())
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    a = _agent(make_home, url, "agent-a", rec_dir)
    b = _agent(make_home, url, "agent-b", rec_dir)

    items: list[dict[str, Any]] = [
        {"meeting_url": meeting(i), "join_at": in_s(3 if i < FIRST else 14)} for i in range(FIRST + SECOND)
    ]
    lines = "".join(json.dumps(item) + "\n" for item in items)
    created = json.loads(a.ok("create", "--from", "-", "--json", input=lines).stdout)
    first = {bot["id"] for bot in created[:FIRST]}
    second = {bot["id"] for bot in created[FIRST:]}

    # staging: every bot claimed by one agent, neither over its slots (sampled until the kill)
    peak: Counter[str] = Counter()

    def staged_all() -> bool:
        rows = recording.rows(url)
        held = Counter(agent for _, state, agent in rows if state in HELD and agent is not None)
        for agent, count in held.items():
            peak[agent] = max(peak[agent], count)
        return sum(1 for _, state, _ in rows if state != "scheduled") == len(items)

    wait_until(staged_all, timeout=20, interval=0.05, what="all 40 bots staged")
    both = {agent for _, _, agent in recording.rows(url)}
    assert both == {"agent-a", "agent-b"}, f"the 40 bots were not spread over both agents: {both}"

    # the first bots join (by +3 s); then SIGKILL the agent that holds most of them
    def first_joined() -> bool:
        rows = {bot_id: state for bot_id, state, _ in recording.rows(url)}
        staged_all()
        return all(rows[bot_id] == "joined_recording" for bot_id in first)

    wait_until(first_joined, timeout=20, interval=0.05, what="the first 20 bots joined")
    holders = {bot_id: agent for bot_id, _, agent in recording.rows(url)}
    by_agent = Counter(holders[bot_id] for bot_id in first)
    victim_name = str(by_agent.most_common(1)[0][0])
    victim, survivor = (a, b) if victim_name == "agent-a" else (b, a)
    survivor_name = "agent-b" if victim is a else "agent-a"
    lost_joined = {bot_id for bot_id in first if holders[bot_id] == victim_name}
    lost_staged = {bot_id for bot_id in second if holders[bot_id] == victim_name}
    assert lost_joined and lost_staged, f"the victim must hold joined and unjoined bots: {holders}"
    pid = victim.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    killed_at = time.monotonic()

    # its unjoined staged bots are re-staged by the survivor after the lease lapses
    def taken_over() -> bool:
        rows = {bot_id: agent for bot_id, _, agent in recording.rows(url)}
        return all(rows[bot_id] == survivor_name for bot_id in lost_staged)

    wait_until(taken_over, timeout=3 * LEASE_S + 5, interval=0.05, what="the victim's staged bots re-staged")
    print(f"\n{len(lost_staged)} staged bot(s) re-staged {time.monotonic() - killed_at:.2f} s after the SIGKILL "
          f"(lease {LEASE_S} s, load {os.getloadavg()[0]:.2f})")

    # every bot reaches its end: the victim's joined ones fatal_error with the reason
    def all_final() -> bool:
        return all(state in ("ended", "fatal_error") for _, state, _ in recording.rows(url))

    wait_until(all_final, timeout=30, interval=0.1, what="every bot final")
    for bot_id in lost_joined:
        shown = survivor.show(bot_id)
        assert shown["state"] == "fatal_error", shown
        assert shown["events"][-1]["detail"] == f"agent {victim_name} lost", shown["events"][-1]
    for bot_id in (first | second) - lost_joined:
        shown = survivor.show(bot_id)
        assert shown["state"] == "ended", shown
    for bot_id in lost_staged:
        details = [event.get("detail") or "" for event in survivor.show(bot_id)["events"]]
        assert f"re-staged: agent {victim_name} lost its lease" in details, details

    # runner-side: exactly one join per bot, by the agent that held it last
    for bot_id in first | second:
        records = recording.records(rec_dir, bot_id)
        joins = [line for line in records if line[0] == "line" and line[3:] == ["join"]]
        assert len(joins) == 1, f"{bot_id}: {records}"
        expected = survivor_name if bot_id in lost_staged else holders[bot_id]
        assert joins[0][2] == expected, f"{bot_id} joined by {joins[0][2]}, held by {expected}: {records}"
    starts = Counter(line[2] for bot_id in first | second
                     for line in recording.records(rec_dir, bot_id) if line[0] == "start")
    print(f"runner starts per agent: {dict(starts)}; peak bots held: {dict(peak)}")
    assert max(peak.values()) <= SLOTS, f"an agent held more than its {SLOTS} slots: {dict(peak)}"
    assert starts[victim_name] <= SLOTS, starts  # the victim started no runner after its kill
    assert starts[survivor_name] <= len(items) - len(lost_joined), starts

    # the victim's runners of the bots it lost still wait (they outlive a daemon); restarted,
    # it stops them (SIGTERM to their groups) instead of leaving a second runner per bot
    strays = {int(line[1]) for bot_id in lost_staged for line in recording.records(rec_dir, bot_id)
              if line[0] == "start" and line[2] == victim_name}
    assert strays and any(pid_alive(stray) for stray in strays), strays
    victim.start()
    wait_until(lambda: not any(pid_alive(stray) for stray in strays), timeout=15, interval=0.1,
               what="the restarted agent stopping the runners of the bots it lost")
    assert victim.ok("list").returncode == 0
