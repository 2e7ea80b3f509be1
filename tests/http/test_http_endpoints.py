"""Every endpoint's success and error statuses, over the Unix socket, and the /api/v1 aliases."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest
from http_helpers import LiveApi, Reply

URL = "https://meet.google.com/gvy-zzra-ktd"


def create(api: LiveApi, prefix: str = "", **fields: Any) -> dict[str, Any]:
    reply = api.request("POST", f"{prefix}/bots", {"meeting_url": URL, "join_at": "+2h", **fields})
    assert reply.status == 201, reply
    bot: dict[str, Any] = reply.json()
    return bot


def adhoc_in_meeting(api: LiveApi) -> dict[str, Any]:
    bot = create(api, join_at=None)
    reply = api.request("GET", f"/bots/{bot['id']}/wait?state=joined_recording&timeout=10")
    assert reply.status == 200 and reply.json()["state"] == "joined_recording", reply
    return bot


def expect_error(reply: Reply, status: int, code: str) -> None:
    assert reply.status == status, reply
    assert reply.headers["content-type"].startswith("application/json")
    assert reply.error_code() == code


# -- create -----------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_create_scheduled_and_adhoc(api: LiveApi, prefix: str) -> None:
    bot = create(api, prefix, bot_name="Notes", metadata={"team": "sales"}, deduplication_key="k1")
    assert bot["state"] == "scheduled" and bot["metadata"] == {"team": "sales"} and bot["deduplication_key"] == "k1"
    assert set(bot) >= {"id", "meeting_url", "bot_name", "state", "join_at", "created_at", "updated_at",
                        "metadata", "deduplication_key", "events"}
    adhoc = create(api, prefix, join_at=None)
    assert adhoc["join_at"] is None and adhoc["state"] == "ready"


def test_create_warnings_go_in_headers(api: LiveApi) -> None:
    reply = api.request("POST", "/bots", {"meeting_url": "https://example.com/room", "join_at": "+30s"})
    assert reply.status == 201, reply
    warnings = reply.all("Botsched-Warning")
    assert any("custom platform" in w for w in warnings) and any("stage" in w or "spin" in w for w in warnings)


@pytest.mark.parametrize(("body", "status", "code", "word"), [
    ({"meeting_url": "ftp://x"}, 400, "invalid", "http"),
    ({"meeting_url": URL, "join_at": "2020-01-01T00:00:00Z"}, 400, "invalid", "past"),
    ({"meeting_url": URL, "join_at": 5}, 400, "invalid", "join_at"),
    ({"meeting_url": URL, "colour": "red"}, 400, "invalid", "colour"),
    ({"meeting_url": URL, "line": 3}, 400, "invalid", "line"),
    ({}, 400, "invalid", "meeting"),
])
def test_create_refused(api: LiveApi, body: dict[str, Any], status: int, code: str, word: str) -> None:
    reply = api.request("POST", "/bots", body)
    expect_error(reply, status, code)
    assert word in reply.json()["error"]["message"].lower()


def test_create_duplicate_dedup_key_is_409(api: LiveApi) -> None:
    first = create(api, deduplication_key="same")
    reply = api.request("POST", "/bots", {"meeting_url": URL, "join_at": "+3h", "deduplication_key": "same"})
    expect_error(reply, 409, "conflict")
    assert first["id"] in reply.json()["error"]["message"]


# -- read -------------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_show(api: LiveApi, prefix: str) -> None:
    bot = create(api)
    reply = api.request("GET", f"{prefix}/bots/{bot['id']}")
    assert reply.status == 200 and reply.json() == bot
    expect_error(api.request("GET", f"{prefix}/bots/bot_AAAAAAAAAAAAAAAA"), 404, "not_found")
    expect_error(api.request("GET", f"{prefix}/bots/not-an-id"), 404, "not_found")


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_list(api: LiveApi, prefix: str) -> None:
    late = create(api, join_at="+5h")
    early = create(api, join_at="+1h")
    adhoc = create(api, join_at=None)
    reply = api.request("GET", f"{prefix}/bots?state=scheduled")
    assert reply.status == 200 and [b["id"] for b in reply.json()] == [early["id"], late["id"]]
    assert reply.headers["botsched-more"] == "false"
    reply = api.request("GET", f"{prefix}/bots?state=scheduled&limit=1")
    assert [b["id"] for b in reply.json()] == [early["id"]] and reply.headers["botsched-more"] == "true"
    both = api.request("GET", f"{prefix}/bots?state=scheduled,ready&limit=0").json()
    assert {early["id"], late["id"]} <= {b["id"] for b in both} and {b["state"] for b in both} <= {"scheduled", "ready"}
    assert any(b["id"] == adhoc["id"] for b in api.request("GET", f"{prefix}/bots?limit=0").json())
    expect_error(api.request("GET", f"{prefix}/bots?state=sleeping"), 400, "invalid")
    expect_error(api.request("GET", f"{prefix}/bots?limit=many"), 400, "invalid")
    expect_error(api.request("GET", f"{prefix}/bots?limit=-1"), 400, "invalid")


# -- reschedule, cancel, leave ------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_reschedule(api: LiveApi, prefix: str) -> None:
    bot = create(api)
    year = time.gmtime().tm_year + 1
    reply = api.request("PATCH", f"{prefix}/bots/{bot['id']}", {"join_at": f"{year}-01-01T10:00:00.5+01:00"})
    assert reply.status == 200 and reply.json()["join_at"] == f"{year}-01-01T09:00:00.5Z", reply
    expect_error(api.request("PATCH", f"{prefix}/bots/{bot['id']}", {"join_at": "2001-01-01T00:00:00Z"}),
                 400, "invalid")
    expect_error(api.request("PATCH", f"{prefix}/bots/{bot['id']}", {"bot_name": "x"}), 400, "invalid")
    expect_error(api.request("PATCH", f"{prefix}/bots/{bot['id']}", {}), 400, "invalid")
    expect_error(api.request("PATCH", f"{prefix}/bots/bot_AAAAAAAAAAAAAAAA", {"join_at": "+1h"}), 404, "not_found")


def test_reschedule_and_cancel_of_a_staged_bot_are_409(api: LiveApi) -> None:
    bot = create(api, join_at="+30s")  # sooner than the stage lead: staged at once
    assert api.request("GET", f"/bots/{bot['id']}/wait?state=staged&timeout=10").status == 200
    expect_error(api.request("PATCH", f"/bots/{bot['id']}", {"join_at": "+1h"}), 409, "conflict")
    expect_error(api.request("DELETE", f"/bots/{bot['id']}"), 409, "conflict")


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_cancel(api: LiveApi, prefix: str) -> None:
    bot = create(api)
    reply = api.request("DELETE", f"{prefix}/bots/{bot['id']}")
    assert reply.status == 200 and reply.json() == bot
    expect_error(api.request("GET", f"{prefix}/bots/{bot['id']}"), 404, "not_found")
    expect_error(api.request("DELETE", f"{prefix}/bots/{bot['id']}"), 404, "not_found")


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_leave(api: LiveApi, prefix: str) -> None:
    expect_error(api.request("POST", f"{prefix}/bots/{create(api)['id']}/leave"), 409, "conflict")
    expect_error(api.request("POST", f"{prefix}/bots/bot_AAAAAAAAAAAAAAAA/leave"), 404, "not_found")
    bot = adhoc_in_meeting(api)
    reply = api.request("POST", f"{prefix}/bots/{bot['id']}/leave")
    assert reply.status == 200 and reply.json()["id"] == bot["id"], reply
    ended = api.request("GET", f"{prefix}/bots/{bot['id']}/wait?timeout=10")
    assert ended.status == 200 and ended.json()["state"] == "ended", ended


# -- wait -------------------------------------------------------------------------------


def test_wait(api: LiveApi) -> None:
    bot = create(api, join_at=None)
    started = time.monotonic()
    reply = api.request("GET", f"/api/v1/bots/{bot['id']}/wait?state=joined_recording&timeout=10")
    assert reply.status == 200 and reply.json()["state"] == "joined_recording"
    assert time.monotonic() - started < 5
    expect_error(api.request("GET", f"/bots/{bot['id']}/wait?state=ended&timeout=0.2"), 408, "timeout")
    expect_error(api.request("GET", f"/bots/{bot['id']}/wait?state=napping"), 400, "invalid")
    expect_error(api.request("GET", f"/bots/{bot['id']}/wait?timeout=soon"), 400, "invalid")
    expect_error(api.request("GET", f"/bots/{bot['id']}/wait?timeout=-1"), 400, "invalid")
    expect_error(api.request("GET", f"/bots/{bot['id']}/wait?timeout=nan"), 400, "invalid")
    expect_error(api.request("GET", "/bots/bot_AAAAAAAAAAAAAAAA/wait"), 404, "not_found")
    api.request("POST", f"/bots/{bot['id']}/leave")
    assert api.request("GET", f"/bots/{bot['id']}/wait?timeout=10").json()["state"] == "ended"
    # ended without ever being in the lobby: the awaited state will never come
    expect_error(api.request("GET", f"/bots/{bot['id']}/wait?state=waiting_room"), 409, "conflict")


def test_wait_ends_when_the_bot_is_cancelled(api: LiveApi) -> None:
    bot = create(api)
    conn = api.connection()
    conn.request("GET", f"/bots/{bot['id']}/wait?timeout=20")
    time.sleep(0.2)
    assert api.request("DELETE", f"/bots/{bot['id']}").status == 200
    response = conn.getresponse()
    assert response.status == 404 and json.loads(response.read())["error"]["code"] == "not_found"
    conn.close()


def test_a_departed_long_poll_is_released(api: LiveApi) -> None:
    bot = create(api)
    before = api.subscribers()
    conn = api.connection()
    conn.request("GET", f"/bots/{bot['id']}/wait")
    _until(lambda: api.subscribers() == before + 1)
    conn.close()
    _until(lambda: api.subscribers() == before)


# -- events -----------------------------------------------------------------------------


def test_events_without_follow_is_an_array(api: LiveApi) -> None:
    bot = adhoc_in_meeting(api)
    reply = api.request("GET", f"/events?bot_id={bot['id']}")
    assert reply.status == 200
    events = reply.json()
    assert [e["state"] for e in events] == ["ready", "joining", "joined_recording"]
    assert all(e["bot_id"] == bot["id"] and e["at"].endswith("Z") for e in events)
    everything = api.request("GET", "/api/v1/events?follow=false").json()
    assert len(everything) >= 3
    expect_error(api.request("GET", "/events?bot_id=bot_AAAAAAAAAAAAAAAA"), 404, "not_found")
    expect_error(api.request("GET", "/events?follow=perhaps"), 400, "invalid")


def test_events_follow_streams_each_event_as_it_happens(api: LiveApi) -> None:
    bot = create(api, join_at=None)
    conn = api.connection()
    conn.request("GET", f"/events?bot_id={bot['id']}&follow=true")
    response = conn.getresponse()
    assert response.status == 200 and response.getheader("content-type", "").startswith("application/x-ndjson")
    seen: list[str] = []
    while len(seen) < 3:  # each line arrives while the stream is still open: flushed per event
        line = response.readline()
        assert line.endswith(b"\n"), line
        seen.append(json.loads(line)["state"])
    assert seen == ["ready", "joining", "joined_recording"]
    assert api.request("POST", f"/bots/{bot['id']}/leave").status == 200
    assert json.loads(response.readline())["state"] in ("leaving", "ended")
    conn.close()


def test_events_follow_ends_when_the_bot_is_cancelled(api: LiveApi) -> None:
    bot = create(api)
    conn = api.connection()
    conn.request("GET", f"/api/v1/events?bot_id={bot['id']}&follow=true")
    response = conn.getresponse()
    assert json.loads(response.readline())["state"] == "scheduled"
    assert api.request("DELETE", f"/bots/{bot['id']}").status == 200
    assert response.read() == b""  # the stream ends (chunked encoding's last chunk)
    conn.close()


def test_a_departed_follower_is_released(api: LiveApi) -> None:
    before = api.subscribers()
    conn = api.connection()
    conn.request("GET", "/events?follow=true")
    _until(lambda: api.subscribers() == before + 1)
    conn.close()
    _until(lambda: api.subscribers() == before)


# -- bulk -------------------------------------------------------------------------------


def ndjson(*items: Any) -> bytes:
    return b"".join((item if isinstance(item, bytes) else json.dumps(item).encode()) + b"\n" for item in items)


@pytest.mark.parametrize("prefix", ["", "/api/v1"])
def test_bulk(api: LiveApi, prefix: str) -> None:
    body = ndjson(*({"meeting_url": URL, "join_at": f"+{h}h", "bot_name": f"b{h}"} for h in range(1, 301)))
    reply = api.request("POST", f"{prefix}/bots/bulk", raw=body, headers={"content-type": "application/x-ndjson"})
    assert reply.status == 201, reply
    bots = reply.json()
    assert len(bots) == 300 and bots[0]["bot_name"] == "b1" and bots[-1]["state"] == "scheduled"
    body = ndjson({"meeting_url": URL}, b"", {"meeting_url": URL})
    ids = api.request("POST", f"{prefix}/bots/bulk?return=ids", raw=body)
    assert ids.status == 201 and all(i.startswith("bot_") for i in ids.json()) and len(ids.json()) == 2


def test_bulk_is_all_or_nothing_and_names_every_bad_line(api: LiveApi) -> None:
    before = len(api.request("GET", "/bots?limit=0").json())
    body = ndjson({"meeting_url": URL}, b"{not json", {"meeting_url": "ftp://x"}, [1, 2], {"meeting_url": URL})
    reply = api.request("POST", "/bots/bulk", raw=body)
    expect_error(reply, 400, "invalid")
    message = reply.json()["error"]["message"]
    assert [line.split(":")[0] for line in message.splitlines()[:-1]] == ["line 2", "line 3", "line 4"]
    assert "3 invalid line(s); nothing was created" in message
    assert len(api.request("GET", "/bots?limit=0").json()) == before
    expect_error(api.request("POST", "/bots/bulk", raw=b"\n\n"), 400, "invalid")
    expect_error(api.request("POST", "/bots/bulk?return=everything", raw=ndjson({"meeting_url": URL})), 400, "invalid")


def test_bulk_line_over_1_mib_is_413(api: LiveApi) -> None:
    huge = b'{"meeting_url": "' + b"x" * (1 << 20) + b'"}'
    expect_error(api.request("POST", "/bots/bulk", raw=ndjson({"meeting_url": URL}, huge)), 413, "too_large")
    assert api.request("GET", "/bots").json() == []


# -- the document, and what is not there ----------------------------------------------------


def test_openapi_document(api: LiveApi) -> None:
    for path in ("/openapi.json", "/api/v1/openapi.json"):
        reply = api.request("GET", path)
        assert reply.status == 200
        document = reply.json()
        assert document["openapi"] == "3.1.0"
        for route in ("/bots", "/bots/{id}", "/bots/{id}/leave", "/bots/{id}/wait", "/bots/bulk", "/events"):
            assert route in document["paths"] and f"/api/v1{route}" in document["paths"]
        assert set(document["paths"]["/bots"]["post"]["responses"]) >= {"201", "400", "401", "409", "413", "422"}


def test_unknown_path_and_wrong_method(api: LiveApi) -> None:
    expect_error(api.request("GET", "/nothing/here"), 404, "not_found")
    expect_error(api.request("GET", "/api/v2/bots"), 404, "not_found")
    reply = api.request("PUT", "/bots")
    expect_error(reply, 405, "method_not_allowed")
    assert "POST" in reply.headers["allow"] and "GET" in reply.headers["allow"]
    expect_error(api.request("DELETE", "/api/v1/openapi.json"), 405, "method_not_allowed")


def test_bodies_are_json_whatever_the_content_type(api: LiveApi) -> None:
    form = {"content-type": "application/x-www-form-urlencoded"}
    reply = api.request("POST", "/bots", raw=json.dumps({"meeting_url": URL}).encode(), headers=form)
    assert reply.status == 201, reply
    expect_error(api.request("POST", "/bots", raw=b"meeting_url=https://zoom.us/j/1", headers=form), 400, "invalid")
    expect_error(api.request("POST", "/bots", raw=b'{"meeting_url": '), 400, "invalid")
    expect_error(api.request("POST", "/bots", raw=b'["https://zoom.us/j/1"]'), 400, "invalid")
    expect_error(api.request("POST", "/bots", raw=b'{"meeting_url": "\\ud800"}'), 400, "invalid")
    expect_error(api.request("POST", "/bots", raw=b'{"meeting_url": "\xff"}'), 400, "invalid")
    expect_error(api.request("POST", "/bots", raw=b'{"a": 1,, }'), 400, "invalid")
    expect_error(api.request("POST", "/bots", raw=b"[" * 100_000), 400, "invalid")


def test_body_over_1_mib_is_413(api: LiveApi) -> None:
    body = json.dumps({"meeting_url": URL, "bot_name": "x" * (1 << 20)}).encode()
    expect_error(api.request("POST", "/bots", raw=body), 413, "too_large")
    expect_error(api.request("PATCH", "/bots/bot_AAAAAAAAAAAAAAAA", raw=body), 413, "too_large")
    assert api.request("GET", "/bots").json() == []


def _until(condition: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)
