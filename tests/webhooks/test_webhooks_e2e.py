"""Webhooks through the real daemon: the CLI adds an endpoint, bots change state, and a REAL
HTTP receiver on loopback (started here, ``http.server`` in a thread) gets them.

The receiver checks nothing itself: the tests read what it received and verify every
signature with the ``standardwebhooks`` package, the way a user's receiver would.
"""

from __future__ import annotations

import itertools
import json
import subprocess
import time
from collections.abc import Callable
from typing import Any

import pytest
import tomli_w
from standardwebhooks import Webhook
from webhook_helpers import Answer, Received, ThreadReceiver, free_port

from tests.support.home import Home, Homes, assert_clean_error, merge_config, wait_until

#: Retries a few tenths of a second apart: the schedule's shape, at test speed.
FAST_RETRY = [0.2, 0.2, 0.2, 0.2, 0.2]
URL = "https://meet.google.com/abc-defg-hij"


def make(make_home: Homes, retry: list[float] | None = None, **top: Any) -> Home:
    cfg: dict[str, Any] = merge_config({"webhooks": {"retry_seconds": FAST_RETRY if retry is None else retry}})
    cfg.update(top)
    return make_home(tomli_w.dumps(cfg))


@pytest.fixture(params=["sqlite", "postgres"])
def make_agent(request: pytest.FixtureRequest, make_home: Homes) -> Callable[..., Home]:
    """``make`` on each store: the home's SQLite file, then a PostgreSQL database (cluster
    mode: the outbox lives in the shared database)."""
    shared: dict[str, Any] = {}
    if request.param == "postgres":
        shared = {"store": {"url": request.getfixturevalue("postgres_url")}, "cluster": {"agent_name": "agent-a"}}

    def agent(retry: list[float] | None = None, **top: Any) -> Home:
        return make(make_home, retry, **shared, **top)

    return agent


@pytest.fixture
def receivers() -> Any:
    made: list[ThreadReceiver] = []

    def start(policy: Any = None, port: int = 0) -> ThreadReceiver:
        receiver = ThreadReceiver(policy, port)
        made.append(receiver)
        return receiver

    yield start
    for receiver in made:
        receiver.close()


def add_endpoint(home: Home, url: str, *states: str) -> dict[str, Any]:
    args = ["webhook", "add", url]
    for state in states:
        args += ["--state", state]
    endpoint: dict[str, Any] = home.json(*args)
    assert endpoint["id"].startswith("wh_") and len(endpoint["id"]) == 19
    assert endpoint["secret"].startswith("whsec_")
    return endpoint


def verified(received: Received, secret: str) -> dict[str, Any]:
    """The body, after ``standardwebhooks`` accepted its signature (it raises otherwise)."""
    body: dict[str, Any] = Webhook(secret).verify(received.body, received.headers)
    assert received.headers["content-type"] == "application/json"
    assert received.headers["webhook-id"] == body["id"]
    return body


def ended(home: Home, bot_id: str) -> bool:
    return home.show(bot_id)["state"] in ("ended", "fatal_error")


def first_receipts(receiver: ThreadReceiver) -> dict[str, list[Received]]:
    """Each webhook-id's requests, in arrival order."""
    by_id: dict[str, list[Received]] = {}
    for item in receiver.snapshot():
        by_id.setdefault(item.headers.get("webhook-id", ""), []).append(item)
    return by_id


def states_received(receiver: ThreadReceiver, bot_id: str) -> list[str]:
    """The bot's new_state sequence, one per distinct webhook-id, in first-arrival order."""
    seen: set[str] = set()
    result = []
    for item in receiver.snapshot():
        body = json.loads(item.body)
        if body["type"] != "bot.state_change" or body["data"]["bot_id"] != bot_id or body["id"] in seen:
            continue
        seen.add(body["id"])
        result.append(body["data"]["new_state"])
    return result


def deliveries(home: Home, *args: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = home.json("webhook", "deliveries", "--limit", "0", *args)
    return found


# -- every event, in order, signed ----------------------------------------------------------


def test_every_event_of_every_bot_arrives_in_order_signed(make_agent: Callable[..., Home], receivers: Any) -> None:
    receiver = receivers()
    home = make_agent()
    endpoint = add_endpoint(home, receiver.url())
    bots = [home.create(URL) for _ in range(4)]
    for bot_id in bots:
        wait_until(lambda b=bot_id: ended(home, b), 20, what=f"{bot_id} to end")
    shown = {bot_id: home.show(bot_id) for bot_id in bots}
    for bot_id in bots:
        expected = [e["state"] for e in shown[bot_id]["events"]]
        count = len(expected)
        wait_until(lambda b=bot_id, n=count: len(states_received(receiver, b)) >= n, 20,
                   what=f"all deliveries of {bot_id}")
        assert states_received(receiver, bot_id) == expected, "not every event arrived, or not in order"
    bodies = [verified(item, endpoint["secret"]) for item in receiver.snapshot()]
    for bot_id in bots:
        mine = [b for b in bodies if b["data"]["bot_id"] == bot_id]
        events = shown[bot_id]["events"]
        assert [b["created_at"] for b in mine] == [e["at"] for e in events]
        assert [b["data"]["old_state"] for b in mine] == [None] + [e["state"] for e in events[:-1]]
        assert all(b["type"] == "bot.state_change" for b in mine)
        bot = mine[-1]["data"]["bot"]
        assert bot["id"] == bot_id and bot["meeting_url"] == URL and bot["state"] == mine[-1]["data"]["new_state"]
        assert set(bot) == {"id", "meeting_url", "bot_name", "state", "join_at", "metadata", "deduplication_key"}
    assert len({b["id"] for b in bodies}) == len(bodies), "one webhook-id per event"
    listed = deliveries(home)
    assert listed and all(d["state"] == "delivered" and d["attempts"] == 1 and d["last_status"] == 200
                          for d in listed)
    [row] = home.json("webhook", "list")
    assert row["deliveries"] == {"pending": 0, "delivered": len(bodies), "failed": 0}


def test_state_filter_sends_only_those_changes(make_home: Homes, receivers: Any) -> None:
    receiver = receivers()
    home = make(make_home)
    add_endpoint(home, receiver.url(), "ended")
    bot_id = home.create(URL)
    wait_until(lambda: ended(home, bot_id), 20, what="the bot to end")
    wait_until(lambda: receiver.snapshot(), 10, what="the ended delivery")
    time.sleep(0.5)
    assert [b["data"]["new_state"] for b in receiver.bodies()] == ["ended"]
    assert receiver.bodies()[0]["data"]["old_state"] == "joined_recording"


# -- retries -------------------------------------------------------------------------------


def test_500_twice_then_200_same_webhook_id_and_order_kept(make_agent: Callable[..., Home], receivers: Any) -> None:
    receiver = receivers(lambda path, headers, body, seen: Answer(500 if seen < 2 else 200))
    home = make_agent()
    endpoint = add_endpoint(home, receiver.url())
    bot_id = home.create(URL)
    wait_until(lambda: ended(home, bot_id), 20, what="the bot to end")
    expected = [e["state"] for e in home.show(bot_id)["events"]]
    wait_until(lambda: len([d for d in deliveries(home) if d["state"] == "delivered"]) == len(expected), 30,
               what="every delivery to succeed")
    by_id = first_receipts(receiver)
    assert len(by_id) == len(expected)
    for attempts in by_id.values():
        assert len(attempts) == 3, "500, 500, then 200"
        assert len({a.body for a in attempts}) == 1, "every retry sends the same bytes"
        for attempt in attempts:
            verified(attempt, endpoint["secret"])  # signed anew for each attempt's timestamp
        assert attempts[1].at - attempts[0].at >= 0.15  # 0.2 s -20 %
    # in order: an event is not sent before the previous one was delivered
    ordered = sorted(by_id.values(), key=lambda a: a[0].at)
    for before, after in itertools.pairwise(ordered):
        assert after[0].at >= before[-1].at
    assert states_received(receiver, bot_id) == expected
    for row in deliveries(home, "--bot", bot_id):
        assert (row["state"], row["attempts"], row["last_status"]) == ("delivered", 3, 200)


def test_429_waits_for_retry_after(make_agent: Callable[..., Home], receivers: Any) -> None:
    receiver = receivers(lambda path, headers, body, seen: Answer(429, {"Retry-After": "2"}) if seen == 0
                         else Answer(204))
    home = make_agent(retry=[0.1, 0.1])
    endpoint = add_endpoint(home, receiver.url())
    result = home.run("webhook", "test", endpoint["id"], "--json")
    assert result.returncode == 0, result.stderr
    first = json.loads(result.stdout)
    assert first["type"] == "webhook.test" and first["state"] == "pending" and first["last_status"] == 429
    assert result.stderr.startswith("warning:") and "429" in result.stderr
    wait_until(lambda: deliveries(home)[0]["state"] == "delivered", 10, what="the retry after Retry-After")
    attempts = receiver.snapshot()
    assert len(attempts) == 2
    assert attempts[1].at - attempts[0].at >= 1.9, "Retry-After (2 s) beats the 0.1 s schedule"
    body = verified(attempts[1], endpoint["secret"])
    assert body["type"] == "webhook.test" and body["data"]["endpoint_id"] == endpoint["id"]
    assert deliveries(home)[0]["last_status"] == 204


def test_a_hanging_endpoint_times_out_and_slows_nothing_else(make_home: Homes, receivers: Any) -> None:
    """The first request hangs past the 10 s timeout: that attempt is an error and is retried;
    meanwhile another endpoint gets a new bot's every change at once, and the bot keeps time."""
    hanging = receivers(lambda path, headers, body, seen: Answer(200, sleep=13)
                        if seen == 0 and b'"webhook.test"' in body else Answer(200))
    fast = receivers()
    home = make(make_home)
    slow_endpoint = add_endpoint(home, hanging.url())
    test = home.popen("webhook", "test", slow_endpoint["id"], "--json", stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE)
    wait_until(lambda: hanging.snapshot(), 10, what="the hanging request")
    add_endpoint(home, fast.url())
    started = time.monotonic()
    bot_id = home.create(URL)
    wait_until(lambda: ended(home, bot_id), 5, what="the bot to end while an endpoint hangs")
    expected = [e["state"] for e in home.show(bot_id)["events"]]
    wait_until(lambda: states_received(fast, bot_id) == expected, 5, what="the fast endpoint's deliveries")
    assert time.monotonic() - started < 8, "the other endpoint waited for the hanging one"
    wait_until(lambda: states_received(hanging, bot_id) == expected, 5,
               what="the bot's deliveries to the endpoint that hangs on another request")
    out, err = test.communicate(timeout=30)
    first = json.loads(out)
    assert first["state"] == "pending" and first["attempts"] == 1
    assert first["last_error"].startswith("timeout"), first
    assert b"warning:" in err
    wait_until(lambda: any(d["id"] == first["id"] and d["state"] == "delivered" for d in deliveries(home)), 10,
               what="the retry after the timeout")
    retried = [r for r in hanging.snapshot() if r.headers["webhook-id"] == first["event_id"]]
    assert len(retried) == 2 and retried[1].at - retried[0].at >= 9.5


def test_410_disables_the_endpoint(make_agent: Callable[..., Home], receivers: Any) -> None:
    receiver = receivers(lambda path, headers, body, seen: Answer(410))
    home = make_agent()
    endpoint = add_endpoint(home, receiver.url())
    bot_id = home.create(URL)
    wait_until(lambda: ended(home, bot_id), 20, what="the bot to end")
    wait_until(lambda: home.json("webhook", "list")[0]["state"] == "disabled", 10, what="the endpoint disabled")
    [row] = home.json("webhook", "list")
    assert "410" in row["disabled_reason"] and row["deliveries"]["pending"] == 0
    assert "disabled" in home.ok("webhook", "list").stdout
    time.sleep(0.5)
    assert len(receiver.snapshot()) == 1, "one 410 and nothing more"
    other = home.create(URL)
    wait_until(lambda: ended(home, other), 20, what="another bot to end")
    time.sleep(0.5)
    assert len(receiver.snapshot()) == 1, "a disabled endpoint gets no further deliveries"
    failed = deliveries(home, "--failed")
    assert failed and all(d["state"] == "failed" for d in failed)
    assert failed[-1]["last_status"] == 410
    assert_clean_error(home.run("webhook", "test", endpoint["id"]), 4)
    assert_clean_error(home.run("webhook", "replay", failed[0]["id"]), 4)


def test_redirects_are_not_followed(make_home: Homes, receivers: Any) -> None:
    receiver = receivers(lambda path, headers, body, seen: Answer(302, {"Location": "/elsewhere"})
                         if path == "/hook" else Answer(200))
    home = make(make_home, retry=[])
    endpoint = add_endpoint(home, receiver.url())
    result = home.run("webhook", "test", endpoint["id"], "--json")
    delivery = json.loads(result.stdout)
    assert delivery["state"] == "failed" and delivery["attempts"] == 1 and delivery["last_status"] == 302
    assert "redirect" in delivery["last_error"]
    assert [r.path for r in receiver.snapshot()] == ["/hook"], "the redirect was followed"


# -- durability ------------------------------------------------------------------------------


def test_sigkill_with_deliveries_pending_then_all_arrive_after_restart(
    make_agent: Callable[..., Home], receivers: Any
) -> None:
    port = free_port()  # the receiver is down: nothing listens here yet
    home = make_agent(retry=[0.3] * 30)
    home.launch()
    endpoint = add_endpoint(home, f"http://127.0.0.1:{port}/hook")
    bots = [home.create(URL) for _ in range(3)]
    wait_until(lambda: all(ended(home, b) for b in bots), 20, what="the bots to end")
    wait_until(lambda: any(d["attempts"] >= 1 for d in deliveries(home)), 10, what="a failed attempt")
    pending = deliveries(home)
    assert pending and all(d["state"] == "pending" for d in pending)
    expected = {b: [e["state"] for e in home.show(b)["events"]] for b in bots}
    home.sigkill()
    receiver = receivers(port=port)
    home.launch()
    for bot_id in bots:
        wait_until(lambda b=bot_id: states_received(receiver, b) == expected[b], 20,
                   what=f"{bot_id}'s deliveries after the restart")
    wanted_ids = {d["event_id"] for d in pending}
    by_id = first_receipts(receiver)
    assert wanted_ids <= set(by_id), "a delivery was lost in the crash"
    for item in receiver.snapshot():
        verified(item, endpoint["secret"])
    wait_until(lambda: all(d["state"] == "delivered" for d in deliveries(home)), 10, what="all delivered")
    home.terminate()


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_add_list_remove_replay_and_bad_input(make_agent: Callable[..., Home], receivers: Any) -> None:
    receiver = receivers()
    home = make_agent()
    human = home.ok("webhook", "add", receiver.url(), "--state", "ended")
    secret = next(line.split()[1] for line in human.stdout.splitlines() if line.startswith("secret:"))
    endpoint_id = next(line.split()[1] for line in human.stdout.splitlines() if line.startswith("id:"))
    assert secret.startswith("whsec_") and len(secret) >= 6 + 32
    listed = home.ok("webhook", "list")
    assert endpoint_id in listed.stdout and secret not in listed.stdout
    [row] = home.json("webhook", "list")
    assert row["secret"] != secret and secret.startswith(row["secret"].rstrip("…"))
    assert row["states"] == ["ended"] and row["state"] == "active"

    test = home.json("webhook", "test", endpoint_id)
    assert test["state"] == "delivered" and test["last_status"] == 200
    body = verified(receiver.snapshot()[0], secret)
    assert body["type"] == "webhook.test"
    again = home.json("webhook", "replay", test["id"])
    assert again["id"] != test["id"] and again["replay_of"] == test["id"] and again["event_id"] == test["event_id"]
    wait_until(lambda: len(receiver.snapshot()) == 2, 10, what="the replay")
    assert receiver.snapshot()[1].headers["webhook-id"] == body["id"], "a replay keeps the webhook-id"
    assert "queued" in home.ok("webhook", "replay", test["id"]).stdout

    bot_id = home.create(URL)
    wait_until(lambda: ended(home, bot_id), 20, what="the bot to end")
    wait_until(lambda: deliveries(home, "--bot", bot_id), 10, what="the bot's delivery")
    [mine] = deliveries(home, "--bot", bot_id)
    assert mine["new_state"] == "ended" and mine["bot_id"] == bot_id
    assert deliveries(home, "--failed") == []
    assert len(home.json("webhook", "deliveries", "--limit", "1")) == 1
    table = home.ok("webhook", "deliveries").stdout
    assert "ATTEMPTS" in table and bot_id in table

    for args, code in [
        (["webhook", "add", "ftp://example.com/hook"], 2),
        (["webhook", "add", "http://example.com/hook"], 2),  # http only to loopback
        (["webhook", "add", receiver.url(), "--state", "nonsense"], 2),
        (["webhook", "add"], 2),
        (["webhook", "deliveries", "--limit", "-1"], 2),
        (["webhook", "deliveries", "--limit", "many"], 2),
        (["webhook", "deliveries", "--nonsense"], 2),
        (["webhook", "deliveries", "--bot", "bot_nope"], 3),
        (["webhook", "remove", "wh_AAAAAAAAAAAAAAAA"], 3),
        (["webhook", "remove", "nonsense"], 3),
        (["webhook", "test", "wh_AAAAAAAAAAAAAAAA"], 3),
        (["webhook", "replay", "dlv_AAAAAAAAAAAAAAAAAAAA"], 3),
    ]:
        assert_clean_error(home.run(*args), code)

    assert f"removed {endpoint_id}" in home.ok("webhook", "remove", endpoint_id).stdout
    assert home.json("webhook", "list") == []
    assert "no webhook endpoints" in home.ok("webhook", "list").stdout
    assert_clean_error(home.run("webhook", "remove", endpoint_id), 3)
    home.stop()
    assert secret not in home.log.read_text(), "the secret reached the log"


def test_the_readme_receiver_verifies_a_real_delivery(make_home: Homes) -> None:
    """The README's ten-line receiver, run as it is written, accepts our signature (and a
    wrong secret gets a 400, so the delivery is retried, then failed)."""
    import os
    import re
    import sys
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    section = readme.split("\n## Webhooks\n", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S)
    assert code is not None, "README's Webhooks section has no receiver example"
    assert len(code.group(1).strip().splitlines()) <= 12
    home = make(make_home, retry=[0.2])
    port = free_port()
    right = add_endpoint(home, f"http://127.0.0.1:{port}/")
    script = home.path / "receiver.py"
    script.write_text(code.group(1))
    env = {**os.environ, "WEBHOOK_SECRET": right["secret"], "PORT": str(port)}
    receiver = subprocess.Popen([sys.executable, str(script)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, text=True)
    try:
        wait_until(lambda: subprocess.run([sys.executable, "-c", f"import socket; socket.create_connection("
                                           f"('127.0.0.1', {port}), 1)"], capture_output=True).returncode == 0,
                   10, what="the README receiver to listen")
        delivered = home.json("webhook", "test", right["id"])
        assert delivered["state"] == "delivered" and delivered["last_status"] == 204
        assert receiver.stdout is not None
        assert receiver.stdout.readline().startswith("webhook.test ")
        home.ok("webhook", "remove", right["id"])
        wrong = add_endpoint(home, f"http://127.0.0.1:{port}/")  # a new secret the receiver does not know
        refused = home.run("webhook", "test", wrong["id"], "--json")
        assert json.loads(refused.stdout)["last_status"] == 400
        wait_until(lambda: deliveries(home)[0]["state"] == "failed", 10, what="the refused delivery to fail")
    finally:
        receiver.kill()
        receiver.wait()
