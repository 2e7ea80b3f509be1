"""Every command on any agent (SPEC §10, §8): two real agents on one PostgreSQL database, six
bots (three slots each, so both agents run some), command runners that talk, two webhook
endpoints served by REAL receivers on loopback, ``[[hooks]]`` on both agents.

- ``events --follow`` and ``wait`` on each agent see the changes recorded by both, live and
  in order; ``logs`` on the agent that did not run a bot prints that bot's runner output;
- every event reaches each endpoint exactly once (one request per ``webhook-id``: the two
  agents never both send one), in order per bot, signature verified with ``standardwebhooks``;
  ``webhook deliveries`` on either agent lists them all;
- each hook runs once per change, on the agent that recorded it.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from pathlib import Path
from typing import Any

import psycopg
import tomli_w
from standardwebhooks import Webhook

from tests.support.home import Home, Homes, merge_config, wait_until
from tests.support.postgres import PostgresServer
from tests.support.times import in_s
from tests.webhooks.webhook_helpers import ThreadReceiver

RUNNER = Path(__file__).with_name("chatty_runner.sh")
BOTS = 6
SLOTS = 3
URL = "https://meet.google.com/abc-defg-hij"


def _agent(make_home: Homes, url: str, name: str, hook_dir: Path) -> Home:
    hook_dir.mkdir()
    config: dict[str, Any] = merge_config(
        {
            "store": {"url": url},
            "cluster": {"agent_name": name, "lease_seconds": 5},
            "scheduler": {"stage_lead_seconds": 30},
            "runner": {"kind": "command", "command": ["/bin/sh", str(RUNNER)], "max_concurrent": SLOTS,
                       "env": {"AGENT_TAG": name, "HOLD_S": "1"}},
            "webhooks": {"retry_seconds": [0.2, 0.2, 0.2]},
        }
    )
    # the body (stdin) into a file named after the change, in this agent's directory
    config["hooks"] = [{"command": ["/bin/sh", "-c", 'cat > "$0/$BOTSCHED_BOT_ID.$BOTSCHED_STATE.$$"', str(hook_dir)]}]
    home = make_home(tomli_w.dumps(config))
    home.start()
    return home


def _follow(home: Home, out: Path) -> subprocess.Popen[bytes]:
    with open(out, "wb") as sink:
        return home.popen("events", "--follow", "--json", stdout=sink, stderr=subprocess.DEVNULL)


def _states(lines: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in lines.splitlines():
        event = json.loads(line)
        found.setdefault(event["bot_id"], []).append(event["state"])
    return found


def test_events_wait_logs_webhooks_and_hooks_work_on_any_agent(
    make_home: Homes, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    url = postgres_server.url(schema=postgres_server.fresh_schema())
    names = ("agent-a", "agent-b")
    agents = {name: _agent(make_home, url, name, tmp_path / f"hooks-{name}") for name in names}
    a, b = agents["agent-a"], agents["agent-b"]
    receivers = [ThreadReceiver(), ThreadReceiver()]
    follows: dict[str, subprocess.Popen[bytes]] = {}
    try:
        endpoints = [a.json("webhook", "add", receivers[0].url()), b.json("webhook", "add", receivers[1].url())]
        for name, home in agents.items():
            follows[name] = _follow(home, tmp_path / f"follow-{name}.jsonl")
        time.sleep(0.5)  # the streams are open (a missed start would only hide past events)
        bots = [(a if i % 2 else b).create(URL, "--join-at", in_s(4)) for i in range(BOTS)]

        def holders() -> dict[str, str | None]:
            with psycopg.connect(url) as connection:
                return {str(bot_id): agent for bot_id, agent in connection.execute("SELECT id, agent FROM bots")}

        wait_until(lambda: all(holders().values()), 20, what="every bot staged")
        held = holders()
        assert Counter(held.values()) == {"agent-a": SLOTS, "agent-b": SLOTS}, held
        other = {bot_id: agents["agent-b" if agent == "agent-a" else "agent-a"] for bot_id, agent in held.items()}

        # wait, on the agent that does not run the bot, sees it end (live: it started before)
        waits = {bot_id: other[bot_id].popen("wait", bot_id, "--timeout", "60", stdout=subprocess.PIPE,
                                             stderr=subprocess.PIPE) for bot_id in bots}
        for bot_id, waiting in waits.items():
            out, err = waiting.communicate(timeout=90)
            assert waiting.returncode == 0, (bot_id, err)
            assert out.decode().split() == [bot_id, "ended"]

        shown = {bot_id: a.show(bot_id) for bot_id in bots}
        expected = {bot_id: [e["state"] for e in bot["events"]] for bot_id, bot in shown.items()}
        assert all(states[-1] == "ended" and "joining" in states for states in expected.values()), expected

        # logs, on the agent that did not run the bot: the runner's output, shipped in batches
        for bot_id, agent in held.items():
            def logged(bot_id: str = bot_id) -> str:
                result = other[bot_id].run("logs", bot_id)
                assert result.returncode == 0, result.stderr
                return result.stdout

            text = wait_until(lambda: "bye from" in logged() and logged(), 15, what=f"{bot_id}'s log elsewhere")
            for line in (f"hello from {agent} for {bot_id}", f"warming up on {agent}", f"in the meeting on {agent}",
                         f"bye from {agent}"):
                assert line in text, (line, text)
            local = (agents[str(agent)].path / "runner-logs" / f"{bot_id}.log").read_text()
            assert text == local, "the stored output is not the runner's log as its agent wrote it"

        # webhooks: every event once per endpoint (whichever agent sent it), in order, signed
        total = sum(len(states) for states in expected.values())

        def received(receiver: ThreadReceiver) -> int:
            return len(receiver.snapshot())

        for receiver in receivers:
            wait_until(lambda r=receiver: received(r) >= total, 20, what="every delivery")
        time.sleep(1.0)  # a second sender, if there were one, would show up now
        for receiver, endpoint in zip(receivers, endpoints, strict=True):
            got = receiver.snapshot()
            ids = Counter(item.headers["webhook-id"] for item in got)
            assert len(got) == total and set(ids.values()) == {1}, "an event was sent twice, or not at all"
            per_bot: dict[str, list[str]] = {}
            for item in got:
                body = Webhook(endpoint["secret"]).verify(item.body, item.headers)
                per_bot.setdefault(body["data"]["bot_id"], []).append(body["data"]["new_state"])
            assert per_bot == expected, "not in order for some bot"
        for home in agents.values():
            listed = home.json("webhook", "deliveries", "--limit", "0")
            assert len(listed) == 2 * total and {d["state"] for d in listed} == {"delivered"}
            assert {e["id"] for e in home.json("webhook", "list")} == {e["id"] for e in endpoints}

        # hooks: once per change, on the agent that recorded it
        with psycopg.connect(url) as connection:
            recorded = [(str(bot_id), str(state), agent) for bot_id, state, agent in
                        connection.execute("SELECT bot_id, state, agent FROM events ORDER BY seq")]
        wait_until(lambda: sum(1 for _ in (tmp_path / "hooks-agent-a").iterdir())
                   + sum(1 for _ in (tmp_path / "hooks-agent-b").iterdir()) >= len(recorded), 10, what="every hook")
        time.sleep(0.5)  # a hook run twice would show up now
        ran: dict[tuple[str, str], list[str]] = {}
        for name in names:
            for path in (tmp_path / f"hooks-{name}").iterdir():
                bot_id, state, _pid = path.name.split(".")
                ran.setdefault((bot_id, state), []).append(name)
        for bot_id, state, agent in recorded:
            assert len(ran[(bot_id, state)]) == 1, (bot_id, state, ran[(bot_id, state)])
            if agent is not None:  # (a create names no agent: it ran where the create was asked)
                assert ran[(bot_id, state)] == [agent], (bot_id, state)
        assert set(held.values()) <= {agent for _, _, agent in recorded}
    finally:
        for follow in follows.values():
            follow.terminate()
            follow.wait(10)
        for receiver in receivers:
            receiver.close()

    # events --follow on each agent: every bot's every change (both agents'), in order
    for name in names:
        streamed = _states((tmp_path / f"follow-{name}.jsonl").read_text())
        assert {bot_id: streamed.get(bot_id) for bot_id in bots} == expected, name


def test_a_follow_misses_nothing_while_its_agent_is_not_listening(
    make_home: Homes, postgres_server: PostgresServer, tmp_path: Path
) -> None:
    """The listening connections are cut (as by a network blip or a server restart) and bots
    change meanwhile: notifications are lost for good, yet ``events --follow`` on the other
    agent gets every event: it catches up from its last seq when it listens again."""
    url = postgres_server.url(schema=postgres_server.fresh_schema())
    a, b = (make_home({"store": {"url": url}, "cluster": {"agent_name": name}}) for name in ("agent-a", "agent-b"))
    a.start()
    b.start()
    follow = _follow(b, tmp_path / "follow.jsonl")
    try:
        time.sleep(0.5)
        first = a.create(URL, "--join-at", in_s(60))
        wait_until(lambda: first in _states((tmp_path / "follow.jsonl").read_text()), 10, what="a live event")
        with psycopg.connect(url, autocommit=True) as connection:
            cut = connection.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'botsched-listen'"
            ).fetchall()
            assert len(cut) == 2, cut  # one listener per agent
            later = [a.create(URL, "--join-at", in_s(60)) for _ in range(3)]  # while nobody listens
        wait_until(lambda: set(later) <= set(_states((tmp_path / "follow.jsonl").read_text())), 15,
                   what="the events committed while the listener was away")
        shown = {bot_id: [e["state"] for e in b.show(bot_id)["events"]] for bot_id in [first, *later]}
        streamed = _states((tmp_path / "follow.jsonl").read_text())
        assert {bot_id: streamed[bot_id] for bot_id in shown} == shown
    finally:
        follow.terminate()
        follow.wait(10)
