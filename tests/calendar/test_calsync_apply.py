"""Applying a plan: call order, per-action failures, what is fatal."""

from __future__ import annotations

from typing import Any

import pytest
from calsync_helpers import NOW_US, us

from botsched import calsync
from botsched.cli.commands.calendar import _apply
from botsched.core.errors import Conflict, DaemonUnavailable, NotFound


class FakeConnection:
    def __init__(self, fail: dict[tuple[str, str], Exception] | None = None) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.fail = fail or {}

    def call(self, op: str, **args: Any) -> tuple[Any, list[str]]:
        self.calls.append((op, args))
        error = self.fail.get((op, args.get("id") or args.get("deduplication_key") or ""))
        if error is not None:
            raise error
        if op == "create":
            return {"id": "bot_NEWNEWNEWNEWNEW1", "state": "scheduled"}, ["join time is only 50s away"]
        return {}, []


def actions() -> list[calsync.Action]:
    wanted = [calsync.Wanted("ical:new", "new", "New", "https://zoom.us/j/1", us(2030, 3, 18, 10), us(2030, 3, 18, 10)),
              calsync.Wanted("ical:moved", "moved", "Moved", "https://zoom.us/j/2", us(2030, 3, 19), us(2030, 3, 19))]
    bots = [
        {"id": "bot_MOVEDMOVEDMOVED", "state": "scheduled", "join_at": "2030-03-18T09:00:00Z",
         "meeting_url": "https://zoom.us/j/2", "deduplication_key": "ical:moved", "metadata": {}},
        {"id": "bot_GONEGONEGONEGONE", "state": "scheduled", "join_at": "2030-03-20T09:00:00Z",
         "meeting_url": "https://zoom.us/j/3", "deduplication_key": "ical:gone", "metadata": {}},
    ]
    return calsync.plan(wanted, bots, NOW_US)


def test_cancels_then_reschedules_then_creates() -> None:
    conn = FakeConnection()
    plan = actions()
    warnings: list[str] = []
    assert _apply(conn, plan, "Notes", warnings) is None
    assert [op for op, _ in conn.calls] == ["cancel", "reschedule", "create"]
    create = conn.calls[2][1]
    assert create == {"meeting_url": "https://zoom.us/j/1", "bot_name": "Notes", "join_at": "2030-03-18T10:00:00Z",
                      "metadata": {"calendar_uid": "new", "calendar_summary": "New"},
                      "deduplication_key": "ical:new"}
    assert conn.calls[1][1] == {"id": "bot_MOVEDMOVEDMOVED", "join_at": "2030-03-19T00:00:00Z"}
    assert [a.bot_id for a in plan if a.action == "create"] == ["bot_NEWNEWNEWNEWNEW1"]
    assert warnings == ["New: join time is only 50s away"]


def test_a_failed_action_is_reported_and_the_rest_goes_on(capsys: pytest.CaptureFixture[str]) -> None:
    conn = FakeConnection({("reschedule", "bot_MOVEDMOVEDMOVED"): Conflict("bot_MOVEDMOVEDMOVED is staged"),
                           ("cancel", "bot_GONEGONEGONEGONE"): NotFound("no such bot")})
    plan = actions()
    error = _apply(conn, plan, None, [])
    assert isinstance(error, NotFound)  # the first failure decides the exit code
    assert [op for op, _ in conn.calls] == ["cancel", "reschedule", "create"]
    assert calsync.counts(plan) == {"create": 1, "reschedule": 0, "cancel": 0, "unchanged": 0, "skipped": 0,
                                    "failed": 2}
    failed = {a.key: a.reason for a in plan if a.action == "failed"}
    assert failed == {"ical:moved": "reschedule failed: bot_MOVEDMOVEDMOVED is staged",
                      "ical:gone": "cancel failed: no such bot"}
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: cancel ical:gone: no such bot",
                   "error: reschedule ical:moved: bot_MOVEDMOVEDMOVED is staged"]


def test_a_lost_daemon_stops_the_sync() -> None:
    conn = FakeConnection({("cancel", "bot_GONEGONEGONEGONE"): DaemonUnavailable("gone")})
    with pytest.raises(DaemonUnavailable):
        _apply(conn, actions(), None, [])
    assert len(conn.calls) == 1


def test_a_replacement_is_not_created_when_the_old_bot_could_not_be_cancelled() -> None:
    old = {"id": "bot_OLDOLDOLDOLDOLD1", "state": "scheduled", "join_at": "2030-03-18T10:00:00Z",
           "meeting_url": "https://zoom.us/j/old", "deduplication_key": "ical:new", "metadata": {}}
    want = calsync.Wanted("ical:new", "new", "New", "https://zoom.us/j/1", us(2030, 3, 18, 10), us(2030, 3, 18, 10))
    plan = calsync.plan([want], [old], NOW_US)
    assert [a.action for a in plan] == ["cancel", "create"]
    conn = FakeConnection({("cancel", "bot_OLDOLDOLDOLDOLD1"): Conflict("bot_OLDOLDOLDOLDOLD1 is staged")})
    assert isinstance(_apply(conn, plan, None, []), Conflict)
    assert [op for op, _ in conn.calls] == ["cancel"]
    assert [a.action for a in plan] == ["failed", "failed"]


class BulkConnection(FakeConnection):
    """Also takes ``create_many``: records the items, or refuses them all."""

    def __init__(self, refuse: Exception | None = None) -> None:
        super().__init__()
        self.refuse = refuse
        self.bulk: list[dict[str, Any]] = []

    def call_bulk(self, op: str, chunks: list[bytes], **args: Any) -> tuple[Any, list[str]]:
        import json

        assert op == "create_many" and args == {"bots": False}
        if self.refuse is not None:
            raise self.refuse
        for chunk in chunks:
            self.bulk.extend(json.loads(chunk)["items"])
        return [f"bot_BULK{n:012d}" for n in range(len(self.bulk))], ["3 bot(s) join sooner than the stage lead"]


def many(count: int) -> list[calsync.Action]:
    wanted = [calsync.Wanted(f"ical:e{n}", f"e{n}", f"E{n}", f"https://zoom.us/j/{n}", us(2030, 3, 18, 10) + n,
                             us(2030, 3, 18, 10) + n) for n in range(count)]
    return calsync.plan(wanted, [], NOW_US)


def test_many_creates_go_as_one_create_many() -> None:
    conn = BulkConnection()
    plan = many(250)
    warnings: list[str] = []
    assert _apply(conn, plan, "Notes", warnings) is None
    assert conn.calls == []  # no create one by one
    assert len(conn.bulk) == 250 and conn.bulk[0] == {
        "line": 1, "meeting_url": "https://zoom.us/j/0", "join_at": "2030-03-18T10:00:00Z", "bot_name": "Notes",
        "metadata": {"calendar_uid": "e0", "calendar_summary": "E0"}, "deduplication_key": "ical:e0"}
    assert [a.bot_id for a in plan][:2] == ["bot_BULK000000000000", "bot_BULK000000000001"]
    assert {a.state for a in plan} == {"scheduled"} and calsync.counts(plan)["create"] == 250
    assert warnings == ["3 bot(s) join sooner than the stage lead"]


def test_a_refused_create_many_falls_back_to_one_by_one() -> None:
    conn = BulkConnection(refuse=Conflict("line 7: deduplication key ical:e6 is taken"))
    plan = many(30)
    assert _apply(conn, plan, None, []) is None
    assert [op for op, _ in conn.calls] == ["create"] * 30 and not conn.bulk


def test_a_lost_daemon_during_create_many_stops_the_sync() -> None:
    conn = BulkConnection(refuse=DaemonUnavailable("gone"))
    with pytest.raises(DaemonUnavailable):
        _apply(conn, many(30), None, [])
