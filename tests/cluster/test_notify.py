"""LISTEN/NOTIFY: a change made through one agent reaches the agent that can act on it at
once. Agent A's only runner slot is taken (a bot in a meeting); a bot rescheduled through A
to be due now must be staged by agent B, which is idle: without a notification B would only
notice at its next re-plan (up to ``PLAN_HORIZON_US``, 1 s, later), with one it stages the
bot within a few tens of milliseconds. Four rounds at random phases of B's re-plan cycle:
all four fast by luck alone would be rarer than 1 in 100."""

from __future__ import annotations

import os
import random
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg

from tests.support.home import Home, Homes, wait_until
from tests.support.postgres import PostgresServer
from tests.support.times import in_s, parse_z

RECORDER = Path(__file__).with_name("agent_recorder.sh")
ROUNDS = 4
#: B stages a notified bot within this long of the reschedule (its re-plan cycle is 1 s).
FAST_S = 0.3


def _agent(make_home: Homes, url: str, name: str, rec_dir: Path, slots: int, hold_s: float | str) -> Home:
    home = make_home(
        {
            "store": {"url": url},
            "cluster": {"agent_name": name},
            "scheduler": {"stage_lead_seconds": 5},
            "runner": {"kind": "command", "command": ["/bin/sh", str(RECORDER)], "max_concurrent": slots,
                       "env": {"REC_DIR": str(rec_dir), "AGENT_TAG": name, "HOLD_S": str(hold_s)}},
        }
    )
    home.start()
    return home


def test_a_reschedule_through_one_agent_reaches_the_agent_with_a_free_slot_at_once(
    make_home: Homes, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.url(schema=postgres_server.fresh_schema())
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    a = _agent(make_home, url, "agent-a", rec_dir, slots=1, hold_s=120)
    occupier = a.create("https://meet.google.com/aaa-bbbb-ccc")  # ad hoc: joins now, stays
    wait_until(lambda: a.show(occupier)["state"] == "joined_recording", timeout=20, what="A's slot taken")
    b = _agent(make_home, url, "agent-b", rec_dir, slots=5, hold_s=0.2)

    delays: list[float] = []
    moved: list[str] = []
    for i in range(ROUNDS):
        bot_id = a.create(f"https://meet.google.com/ddd-eee{'abcd'[i]}-fff", "--join-at", in_s(3600))
        time.sleep(random.uniform(0.5, 1.5))  # a random phase of B's re-plan cycle
        a.json("reschedule", bot_id, "--join-at", in_s(3))  # due for staging now (lead 5 s)
        asked = datetime.now(UTC)
        def staged_bot(bot_id: str = bot_id) -> dict[str, Any] | None:
            shown = b.show(bot_id)
            return shown if shown["state"] != "scheduled" else None

        shown = wait_until(staged_bot, timeout=10, what="the rescheduled bot staged")
        moved.append(bot_id)
        staged = next(event for event in shown["events"] if event["state"] == "staged")
        delays.append((parse_z(staged["at"]) - asked).total_seconds())
    print(f"\nstaged by agent-b {[f'{d * 1000:.0f} ms' for d in delays]} after the reschedule through agent-a "
          f"(load {os.getloadavg()[0]:.2f})")
    assert all(delay <= FAST_S for delay in delays), delays
    with psycopg.connect(url) as connection:
        agents = connection.execute("SELECT DISTINCT agent FROM bots WHERE id = ANY(%s)", (moved,)).fetchall()
    assert agents == [("agent-b",)], "agent-a has no free slot: agent-b must have staged them"


def test_leave_through_another_agent_reaches_the_agent_running_the_bot(
    make_home: Homes, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.url(schema=postgres_server.fresh_schema())
    rec_dir = tmp_path / "rec"
    rec_dir.mkdir()
    a = _agent(make_home, url, "agent-a", rec_dir, slots=1, hold_s="until-leave")
    bot_id = a.create("https://meet.google.com/aaa-bbbb-ccc")  # ad hoc: agent-a joins it now
    wait_until(lambda: a.show(bot_id)["state"] == "joined_recording", timeout=20, what="joined by agent-a")
    b = _agent(make_home, url, "agent-b", rec_dir, slots=1, hold_s="until-leave")

    asked = time.monotonic()
    said = b.ok("leave", bot_id)
    assert "asked agent agent-a" in said.stdout + said.stderr, said
    wait_until(lambda: b.show(bot_id)["state"] == "ended", timeout=10, what="the bot ended")
    print(f"\nleave through agent-b: the bot ended {time.monotonic() - asked:.2f} s later")
    records = [line.split() for line in (rec_dir / f"{bot_id}.log").read_text().splitlines()]
    assert [line[2:] for line in records if line[0] == "line"] == [["agent-a", "join"], ["agent-a", "leave"]], records
