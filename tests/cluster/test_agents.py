"""``botsched agents`` and the agents registry (SPEC §10), real daemons on a real PostgreSQL:

- every agent's heartbeat writes its row (name, version, runner, slots, heartbeat, clock
  offset to the database server); ``agents`` shows them all from any agent, ``alive`` from
  the lease; a graceful stop shows the agent not alive at once;
- a second live daemon with a name already in use exits 4 with one ``error:`` line, while an
  agent whose heartbeat lapsed (or a dead daemon of this host) may be replaced;
- an agent whose clock is more than 50 ms off is warned about;
- bots and events say which agent staged and recorded them; ``daemon status`` names the
  store (password masked) and the agent;
- on the SQLite store nothing of this shows, and ``agents`` is the one local daemon.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import time
from typing import Any

import psycopg

from tests.support.home import Home, Homes, assert_clean_error, pid_alive, wait_until
from tests.support.postgres import PostgresServer
from tests.support.times import in_s

PASSWORD = "pw-of-the-agents"
KEYS = ["name", "version", "runner", "slots_used", "slots_total", "last_heartbeat", "clock_offset_ms", "alive"]
LEASE_S = 3


def _agent(make_home: Homes, url: str, name: str, start: bool = True) -> Home:
    home = make_home({"store": {"url": url}, "cluster": {"agent_name": name, "lease_seconds": LEASE_S}})
    if start:
        home.start()
    return home


def _registry_row(url: str, name: str, host: str, lease_s: float, offset_ms: float = 0.0) -> None:
    """A registry row as another machine's agent would have written it."""
    with psycopg.connect(url) as connection:
        now = "(extract(epoch FROM clock_timestamp()) * 1000000)::bigint"
        connection.execute(
            "INSERT INTO agents (name, instance, host, pid, version, runner, slots_used, slots_total, "
            f"clock_offset_ms, started_us, heartbeat_us, lease_until_us) VALUES (%s, 'elsewhere-1', %s, 1, '0.1', "
            f"'command', 2, 10, %s, {now}, {now}, {now} + %s)",
            (name, host, offset_ms, int(lease_s * 1e6)),
        )


def _by_name(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["name"]: row for row in rows}


def test_agents_lists_every_agent_refuses_a_live_name_twice_and_says_who_staged_what(
    make_home: Homes, postgres_server: PostgresServer
) -> None:
    schema = postgres_server.fresh_schema()
    url = postgres_server.url(password=PASSWORD, schema=schema)
    plain = postgres_server.url(schema=schema)
    alpha = _agent(make_home, url, "alpha")
    beta = _agent(make_home, url, "beta")

    # every agent is listed from every agent, with SPEC's keys exactly
    for home in (alpha, beta):
        rows = home.json("agents")
        assert [row["name"] for row in rows] == ["alpha", "beta"], rows
        for row in rows:
            assert list(row) == KEYS, row
            assert row["alive"] is True and row["runner"] == "simulate" and row["slots_total"] is None
            assert isinstance(row["clock_offset_ms"], float) and abs(row["clock_offset_ms"]) < 1000, row
    human = alpha.ok("agents").stdout
    assert "alpha" in human and "beta" in human and "single machine" not in human, human

    # daemon status: which store (no password) and which agent
    status = alpha.json("daemon", "status")
    assert status["store"] == "postgresql" and status["agent"] == "alpha", status
    assert PASSWORD not in json.dumps(status) and "botsched:***@" in status["database"], status["database"]
    human_status = alpha.ok("daemon", "status").stdout
    assert "agent" in human_status and "alpha" in human_status and PASSWORD not in human_status

    # a bot says which agent staged it, each event which agent recorded it
    bot_id = beta.create("https://meet.google.com/aaa-bbbb-ccc", "--join-at", in_s(1.5))
    assert alpha.show(bot_id)["agent"] is None  # not staged yet
    # (polled: ``wait`` across agents is another part of §10)
    wait_until(lambda: alpha.show(bot_id)["state"] == "ended", timeout=30, interval=0.1, what="the bot ended")
    shown = alpha.show(bot_id)
    assert list(shown)[-2:] == ["agent", "events"], list(shown)
    assert shown["agent"] in ("alpha", "beta"), shown
    recorded = [(event["state"], event["agent"]) for event in shown["events"]]
    assert recorded[0] == ("scheduled", "beta"), recorded  # created through beta
    assert recorded[1] == ("staged", shown["agent"]), recorded  # staged (and then run) by its agent
    assert all(agent == shown["agent"] for _, agent in recorded[1:]), recorded
    human_show = alpha.ok("show", bot_id).stdout
    assert f"agent      {shown['agent']}" in human_show or f"[{shown['agent']}]" in human_show, human_show
    streamed = [json.loads(line) for line in alpha.ok("events", bot_id, "--json").stdout.splitlines()]
    assert [event["agent"] for event in streamed] == [agent for _, agent in recorded], streamed

    # a second live daemon named alpha: exit 4, one error line (foreground and background)
    twin = _agent(make_home, url, "alpha", start=False)
    foreground = twin.run("daemon", "run", timeout=60)  # its log lines go to stderr too
    errors = [line for line in foreground.stderr.splitlines() if line.startswith("error:")]
    assert foreground.returncode == 4 and len(errors) == 1, foreground.stderr
    assert "agent name 'alpha' is taken by a live agent" in errors[0], errors
    assert_clean_error(twin.run("daemon", "start", timeout=60), 4)
    assert PASSWORD not in twin.log.read_text()

    # alpha dies: a daemon of this host may take its name at once (its pid is dead)
    pid = alpha.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not pid_alive(pid), 10, what="alpha to die")
    twin.start()
    assert _by_name(beta.json("agents"))["alpha"]["alive"] is True

    # a graceful stop: not alive at once
    beta.stop()
    rows = _by_name(twin.json("agents"))
    assert rows["beta"]["alive"] is False and rows["alpha"]["alive"] is True, rows

    # another machine's agent: replaced once its heartbeat lapsed, refused while it is live
    _registry_row(plain, "gamma", "elsewhere", lease_s=-1)
    _registry_row(plain, "delta", "elsewhere", lease_s=3600)
    assert _by_name(twin.json("agents"))["gamma"]["alive"] is False
    _agent(make_home, url, "gamma")
    delta = _agent(make_home, url, "delta", start=False)
    said = assert_clean_error(delta.run("daemon", "start", timeout=60), 4)
    assert "'delta' is taken" in said and "elsewhere" in said, said

    # a clock further than 50 ms from the database's is warned about (stdout stays JSON)
    _registry_row(plain, "skewed", "elsewhere", lease_s=3600, offset_ms=-80.0)
    result = twin.ok("agents", "--json")
    assert _by_name(json.loads(result.stdout))["skewed"]["clock_offset_ms"] == -80.0
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and "skewed" in warnings[0] and "-80.0 ms" in warnings[0], result.stderr


def test_a_frozen_agents_name_is_taken_once_its_heartbeat_lapsed_and_it_thaws_without_it(
    make_home: Homes, postgres_server: PostgresServer
) -> None:
    """The registry's lease is the database's clock: a frozen agent (SIGSTOP; its process
    still exists) stops counting as alive once ``lease_seconds`` pass without a heartbeat,
    and another daemon may then take its name. Thawed, the old one finds its name taken:
    it says so and claims nothing (two live daemons never hold claims under one name)."""
    url = postgres_server.url(schema=postgres_server.fresh_schema())
    old = _agent(make_home, url, "frozen")
    pid = old.daemon_pid()
    assert pid is not None
    os.kill(pid, signal.SIGSTOP)
    try:
        other = _agent(make_home, url, "watcher")
        assert _by_name(other.json("agents"))["frozen"]["alive"] is True
        successor = _agent(make_home, url, "frozen", start=False)
        assert_clean_error(successor.run("daemon", "start", timeout=60), 4)  # still within its lease
        started = time.monotonic()
        wait_until(lambda: not _by_name(other.json("agents"))["frozen"]["alive"], timeout=5 * LEASE_S + 10,
                   interval=0.2, what="the frozen agent shown not alive")
        assert time.monotonic() - started <= LEASE_S + 10
        successor.start()
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_until(lambda: "was taken by another live agent" in old.log.read_text(), timeout=5 * LEASE_S + 10,
               interval=0.2, what="the thawed agent to notice its name is taken")
    bot_id = other.create("https://meet.google.com/aaa-bbbb-ccc", "--join-at", in_s(1.5))
    wait_until(lambda: other.show(bot_id)["state"] == "ended", timeout=30, interval=0.1, what="the bot ended")
    assert bot_id not in old.log.read_text(), "the thawed agent without its name ran a bot"
    rows = _by_name(other.json("agents"))
    assert rows["frozen"]["alive"] is True and rows["watcher"]["alive"] is True, rows


def test_on_sqlite_agents_is_this_daemon_alone_and_bots_have_no_agent(make_home: Homes) -> None:
    home = make_home()
    home.start()
    rows = home.json("agents")
    assert len(rows) == 1 and list(rows[0]) == KEYS, rows
    row = rows[0]
    assert row["name"] == socket.gethostname() and row["runner"] == "simulate" and row["alive"] is True, row
    assert row["clock_offset_ms"] == 0.0 and row["slots_total"] is None, row
    assert "single machine" in home.ok("agents").stdout
    status = home.json("daemon", "status")
    assert status["store"] == "sqlite" and status["database"] == str(home.db), status
    bot_id = home.create("https://meet.google.com/aaa-bbbb-ccc", "--join-at", in_s(3600))
    shown = home.show(bot_id)
    assert "agent" not in shown and all("agent" not in event for event in shown["events"]), shown
