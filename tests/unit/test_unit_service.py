"""Unit tests of botsched.daemon.service.BotService: the daemon's request handlers, without a socket."""

from __future__ import annotations

import asyncio
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from botsched.core import config as config_mod
from botsched.core import states
from botsched.core.config import Config
from botsched.core.errors import BotschedError, Conflict, InvalidInput, NotFound
from botsched.core.paths import resolve_paths
from botsched.core.timeparse import format_instant, parse_instant, to_us
from botsched.daemon.hub import EventHub
from botsched.daemon.scheduler import Scheduler
from botsched.daemon.service import BotService
from botsched.daemon.store import Store
from tests.support.fakes import FakeClock, RecordingRunner

S = 1_000_000
T0 = to_us(datetime(2026, 5, 4, 9, 30, 15, 250000, tzinfo=UTC))
URL = "https://meet.google.com/gvy-zzra-ktd"
FUTURE = "2026-05-04T12:00:00Z"


def build(tmp_path: Path, **overrides: Any) -> BotService:
    cfg = Config({**config_mod.defaults(), **overrides})
    clock = FakeClock(T0)
    tmp_path.mkdir(parents=True, exist_ok=True)
    store = Store(tmp_path / "botsched.db")
    runner = RecordingRunner(cfg)
    scheduler = Scheduler(store, runner, cfg, clock)
    return BotService(store, scheduler, runner, EventHub(), cfg, clock, resolve_paths({"BOTSCHED_HOME": str(tmp_path)}))


@pytest.fixture
def svc(tmp_path: Path) -> BotService:
    service = build(tmp_path)
    yield service
    service.store.close()


def create(svc: BotService, **fields: Any) -> dict[str, Any]:
    bot, _ = svc.create({"meeting_url": URL, **fields})
    return bot


# -- create -----------------------------------------------------------------------------


def test_create_scheduled_bot(svc: BotService) -> None:
    bot, warnings = svc.create(
        {"meeting_url": URL, "bot_name": "Notes", "join_at": FUTURE, "metadata": {"team": "sales"},
         "deduplication_key": "k"}
    )
    assert warnings == []
    assert re.fullmatch(r"bot_[A-Za-z0-9]{16}", bot["id"])
    assert bot["state"] == "scheduled"
    assert bot["join_at"] == FUTURE
    assert bot["bot_name"] == "Notes"
    assert bot["metadata"] == {"team": "sales"}
    assert bot["deduplication_key"] == "k"
    assert bot["created_at"] == format_instant(T0)
    assert bot["events"] == [{"state": "scheduled", "at": format_instant(T0), "detail": None}]
    assert svc.show({"id": bot["id"]})[0] == bot


def test_create_ad_hoc_bot(svc: BotService) -> None:
    bot, warnings = svc.create({"meeting_url": URL})
    assert bot["state"] == "ready"
    assert bot["join_at"] is None
    assert warnings == []


def test_default_bot_name_comes_from_config(tmp_path: Path) -> None:
    plain = build(tmp_path / "a")
    assert create(plain, join_at=FUTURE)["bot_name"] == "Meeting Bot"
    named = build(tmp_path / "b", **{"defaults.bot_name": "Recorder"})
    assert create(named, join_at=FUTURE)["bot_name"] == "Recorder"
    assert create(named, join_at=FUTURE, bot_name="Explicit")["bot_name"] == "Explicit"


def test_create_relative_time(svc: BotService) -> None:
    bot = create(svc, join_at="+1h30m")
    expected = T0 + 5400 * S
    assert parse_instant(bot["join_at"]) == expected - expected % 1000
    assert bot["join_at"].endswith(".250Z")


def test_create_naive_time_uses_configured_zone(tmp_path: Path) -> None:
    svc = build(tmp_path, **{"defaults.timezone": "Europe/Berlin"})
    assert create(svc, join_at="2026-05-04T14:00:00")["join_at"] == "2026-05-04T12:00:00Z"


def test_create_inside_stage_lead_warns(svc: BotService) -> None:
    bot, warnings = svc.create({"meeting_url": URL, "join_at": "+30s"})
    assert bot["state"] == "scheduled"
    assert len(warnings) == 1 and "spin up" in warnings[0]


def test_create_ambiguous_local_time_warns(tmp_path: Path) -> None:
    svc = build(tmp_path, **{"defaults.timezone": "Europe/Berlin"})
    svc.clock.t = to_us(datetime(2026, 10, 1, tzinfo=UTC))
    bot, warnings = svc.create({"meeting_url": URL, "join_at": "2026-10-25T02:30:00"})
    assert bot["join_at"] == "2026-10-25T00:30:00Z"
    assert any("twice" in w for w in warnings)


@pytest.mark.parametrize("join_at", ["2026-05-04T09:00:00Z", "2020-01-01T00:00:00Z", "-5m", "+0s"])
def test_create_in_the_past_is_refused(svc: BotService, join_at: str) -> None:
    with pytest.raises(InvalidInput) as info:
        svc.create({"meeting_url": URL, "join_at": join_at})
    assert "past" in info.value.message
    assert info.value.exit_code == 2
    assert sum(svc.store.counts().values()) == 0


def test_create_past_message_shows_current_time(svc: BotService) -> None:
    with pytest.raises(InvalidInput) as info:
        svc.create({"meeting_url": URL, "join_at": "2026-05-04T09:00:00Z"})
    assert "2026-05-04T09:30:15" in info.value.message


@pytest.mark.parametrize(
    "fields",
    [
        {},
        {"meeting_url": "ftp://x"},
        {"meeting_url": URL, "bot_name": ""},
        {"meeting_url": URL, "bot_name": "x" * 101},
        {"meeting_url": URL, "join_at": 1767225600},
        {"meeting_url": URL, "join_at": "soon"},
        {"meeting_url": URL, "metadata": {"n": 1}},
        {"meeting_url": URL, "metadata": "team=sales"},
        {"meeting_url": URL, "deduplication_key": ""},
        {"meeting_url": URL, "colour": "blue"},
    ],
)
def test_create_refuses_bad_input(svc: BotService, fields: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        svc.create(fields)
    assert sum(svc.store.counts().values()) == 0


@pytest.mark.parametrize(
    "fields",
    [
        {"meeting_url": URL, "metadata": {"k": "\ud800"}},
        {"meeting_url": URL, "metadata": {"\udfff": "v"}},
        {"meeting_url": URL + "/\ud800"},
    ],
)
def test_lone_surrogates_are_invalid_input(svc: BotService, fields: dict[str, Any]) -> None:
    # Undecodable argv bytes reach Python as lone surrogates (surrogateescape), e.g.
    # `botsched create URL --metadata $'k=\xff'`; they cannot be stored or sent as UTF-8,
    # so they must be refused as bad input (exit 2), not crash as an internal error (exit 1).
    with pytest.raises(InvalidInput):
        svc.create(fields)
    assert sum(svc.store.counts().values()) == 0


def test_create_duplicate_dedup_key_conflicts_naming_the_holder(svc: BotService) -> None:
    first = create(svc, join_at=FUTURE, deduplication_key="standup")
    with pytest.raises(Conflict) as info:
        create(svc, join_at=FUTURE, deduplication_key="standup")
    assert first["id"] in info.value.message
    assert info.value.exit_code == 4


# -- create_many ------------------------------------------------------------------------


def test_create_many_returns_ids_or_bots_in_order(svc: BotService) -> None:
    items = [{"meeting_url": URL, "join_at": f"2026-05-04T1{i}:00:00Z", "bot_name": f"b{i}"} for i in range(3)]
    ids, warnings = svc.create_many(items, want_bots=False)
    assert warnings == []
    assert len(ids) == 3 and all(isinstance(i, str) for i in ids)
    assert [svc.show({"id": i})[0]["bot_name"] for i in ids] == ["b0", "b1", "b2"]
    bots, _ = svc.create_many(items, want_bots=True)
    assert [b["bot_name"] for b in bots] == ["b0", "b1", "b2"]
    assert all(b["events"] for b in bots)


def test_create_many_is_all_or_nothing_and_names_every_bad_line(svc: BotService) -> None:
    items: list[Any] = [
        {"meeting_url": URL, "join_at": FUTURE},
        {"meeting_url": "not a url", "join_at": FUTURE},
        {"meeting_url": URL, "join_at": FUTURE},
        {"meeting_url": URL, "join_at": "2000-01-01T00:00:00Z"},
        "just a string",
        {"meeting_url": URL, "join_at": FUTURE, "surprise": 1},
    ]
    with pytest.raises(InvalidInput) as info:
        svc.create_many(items, want_bots=False)
    message = info.value.message
    for bad in (2, 4, 5, 6):
        assert re.search(rf"^line {bad}:", message, re.M), message
    for good in (1, 3):
        assert not re.search(rf"^line {good}:", message, re.M), message
    assert "past" in message
    assert sum(svc.store.counts().values()) == 0


def test_create_many_uses_the_given_line_numbers(svc: BotService) -> None:
    items = [
        {"line": 10, "meeting_url": URL, "join_at": FUTURE},
        {"line": 12, "meeting_url": URL, "join_at": "bogus"},
    ]
    with pytest.raises(InvalidInput) as info:
        svc.create_many(items, want_bots=False)
    assert "line 12:" in info.value.message
    assert "line 2:" not in info.value.message


def test_create_many_dedup_conflicts_create_nothing(svc: BotService) -> None:
    holder = create(svc, join_at=FUTURE, deduplication_key="taken")
    items = [
        {"meeting_url": URL, "join_at": FUTURE, "deduplication_key": "fresh"},
        {"meeting_url": URL, "join_at": FUTURE, "deduplication_key": "taken"},
    ]
    with pytest.raises(Conflict) as info:
        svc.create_many(items, want_bots=False)
    assert "line 2" in info.value.message and holder["id"] in info.value.message
    assert sum(svc.store.counts().values()) == 1
    # the "fresh" key was not taken by a half-done batch
    create(svc, join_at=FUTURE, deduplication_key="fresh")


def test_create_many_summarises_stage_lead_warnings(svc: BotService) -> None:
    items = [
        {"meeting_url": URL, "join_at": "+10s"},
        {"meeting_url": URL, "join_at": "+20s"},
        {"meeting_url": URL, "join_at": FUTURE},
    ]
    _, warnings = svc.create_many(items, want_bots=False)
    assert len(warnings) == 1
    assert warnings[0].startswith("2 ")


def test_create_many_empty(svc: BotService) -> None:
    assert svc.create_many([], want_bots=False) == ([], [])


# -- reschedule, cancel, leave ----------------------------------------------------------


def test_reschedule(svc: BotService) -> None:
    bot = create(svc, join_at=FUTURE)
    svc.clock.t += S
    moved, warnings = svc.reschedule({"id": bot["id"], "join_at": "2026-05-05T08:00:00.5Z"})
    assert warnings == []
    assert moved["join_at"] == "2026-05-05T08:00:00.5Z"
    assert moved["state"] == "scheduled"
    assert moved["updated_at"] == format_instant(T0 + S)
    assert svc.scheduler.next_due_us() == parse_instant("2026-05-05T08:00:00.5Z") - svc.config.stage_lead_us


def test_reschedule_inside_lead_warns(svc: BotService) -> None:
    bot = create(svc, join_at=FUTURE)
    _, warnings = svc.reschedule({"id": bot["id"], "join_at": "+60s"})
    assert len(warnings) == 1


def test_reschedule_of_staged_bot_conflicts_naming_the_state(svc: BotService) -> None:
    bot = create(svc, join_at="+60s")
    svc.scheduler.tick()  # inside the lead: staged now
    assert svc.show({"id": bot["id"]})[0]["state"] == "staged"
    with pytest.raises(Conflict) as info:
        svc.reschedule({"id": bot["id"], "join_at": FUTURE})
    assert "staged" in info.value.message
    assert info.value.exit_code == 4
    with pytest.raises(Conflict, match="staged"):
        svc.cancel({"id": bot["id"]})


def test_reschedule_into_the_past_is_refused(svc: BotService) -> None:
    bot = create(svc, join_at=FUTURE)
    with pytest.raises(InvalidInput, match="past"):
        svc.reschedule({"id": bot["id"], "join_at": "2026-05-04T09:00:00Z"})
    assert svc.show({"id": bot["id"]})[0]["join_at"] == FUTURE


def test_reschedule_needs_a_time(svc: BotService) -> None:
    bot = create(svc, join_at=FUTURE)
    with pytest.raises(InvalidInput):
        svc.reschedule({"id": bot["id"]})


@pytest.mark.parametrize("op", ["reschedule", "cancel", "leave", "show"])
@pytest.mark.parametrize("bot_id", ["bot_AAAAAAAAAAAAAAAA", "nope", None, 17])
def test_unknown_or_malformed_ids_are_not_found(svc: BotService, op: str, bot_id: Any) -> None:
    with pytest.raises(NotFound) as info:
        svc.handlers()[op]({"id": bot_id, "join_at": FUTURE})
    assert info.value.exit_code == 3


def test_cancel_deletes_for_good(svc: BotService) -> None:
    keep = create(svc, join_at=FUTURE)
    bot = create(svc, join_at=FUTURE)
    result, warnings = svc.cancel({"id": bot["id"]})
    assert result == {"id": bot["id"], "cancelled": True}
    assert warnings == []
    with pytest.raises(NotFound):
        svc.show({"id": bot["id"]})
    with pytest.raises(NotFound):
        svc.cancel({"id": bot["id"]})
    assert [b["id"] for b in svc.list_bots({})[0]["bots"]] == [keep["id"]]


def test_cancel_of_ad_hoc_bot_conflicts(svc: BotService) -> None:
    bot = create(svc)
    with pytest.raises(Conflict, match="ready"):
        svc.cancel({"id": bot["id"]})


def test_leave_needs_a_bot_in_a_meeting(svc: BotService) -> None:
    bot = create(svc, join_at=FUTURE)
    with pytest.raises(Conflict) as info:
        svc.leave({"id": bot["id"]})
    assert "scheduled" in info.value.message
    assert svc.scheduler.runner.calls == []


def test_leave_asks_the_runner(svc: BotService) -> None:
    bot = create(svc)  # ad-hoc: joins at the next tick
    svc.scheduler.tick()
    assert svc.show({"id": bot["id"]})[0]["state"] == "joining"
    result, _ = svc.leave({"id": bot["id"]})
    assert result["id"] == bot["id"]
    assert ("leave", bot["id"]) in svc.scheduler.runner.calls


def test_leave_failing_in_the_runner_is_a_clear_error_not_internal(svc: BotService) -> None:
    # e.g. the command runner raises RunnerError("its runner is not running") when the
    # process just died; RunnerError is not a BotschedError, so it would surface as an
    # "internal error" (exit 1, "a bug") instead of a one-line error with a proper code.
    bot = create(svc)
    svc.scheduler.tick()
    svc.scheduler.runner.fail["leave"] = "its runner is not running"
    with pytest.raises(BotschedError) as info:
        svc.leave({"id": bot["id"]})
    assert info.value.exit_code != 1
    assert "its runner is not running" in info.value.message


def test_leave_of_ended_bot_conflicts(svc: BotService) -> None:
    bot = create(svc)
    svc.scheduler.tick()
    svc.scheduler.report(bot["id"], "ended", None)
    with pytest.raises(Conflict, match="ended"):
        svc.leave({"id": bot["id"]})


# -- list, ids, status ------------------------------------------------------------------


def test_list_validation(svc: BotService) -> None:
    for args in (
        {"states": ["bogus"]},
        {"states": "scheduled"},
        {"limit": -1},
        {"limit": "5"},
        {"limit": True},
        {"limit": 1.5},
        {"dedup_prefix": 5},
    ):
        with pytest.raises(InvalidInput):
            svc.list_bots(args)


def test_list_filters_limit_and_more(svc: BotService) -> None:
    ids = [create(svc, join_at=f"2026-05-04T1{i}:00:00Z", deduplication_key=f"cal:{i}")["id"] for i in range(5)]
    adhoc = create(svc)["id"]
    result, _ = svc.list_bots({"limit": 3})
    assert [b["id"] for b in result["bots"]] == [adhoc, *ids[:2]]  # ad-hoc now, before the scheduled ones
    assert result["more"] is True
    result, _ = svc.list_bots({"limit": 0})
    assert len(result["bots"]) == 6 and result["more"] is False
    result, _ = svc.list_bots({"states": ["ready"]})
    assert [b["id"] for b in result["bots"]] == [adhoc]
    result, _ = svc.list_bots({"dedup_prefix": "cal:"})
    assert [b["id"] for b in result["bots"]] == ids
    result, _ = svc.list_bots({})
    assert result["more"] is False and len(result["bots"]) == 6


def test_ids(svc: BotService) -> None:
    a = create(svc, join_at=FUTURE)["id"]
    b = create(svc)["id"]
    assert sorted(svc.ids({})[0]) == sorted([a, b])
    assert svc.ids({"states": ["ready"]})[0] == [b]
    assert svc.ids({"prefix": a[:10]})[0] == [a]


def test_status(svc: BotService, tmp_path: Path) -> None:
    create(svc, join_at=FUTURE)
    create(svc)
    status, warnings = svc.status({})
    assert warnings == []
    assert status["running"] is True
    assert isinstance(status["pid"], int)
    assert isinstance(status["version"], str) and status["version"]
    assert status["uptime_seconds"] >= 0
    assert status["socket"] == str(tmp_path / "botsched.sock")
    assert status["database"] == str(tmp_path / "botsched.db")
    assert status["runner"] == "simulate"
    assert set(status["counts"]) == set(states.ALL_STATES)
    assert status["counts"]["scheduled"] == 1 and status["counts"]["ready"] == 1
    assert sum(status["counts"].values()) == 2
    assert status["config"] == svc.config.as_dict()
    assert set(status["config"]) == set(config_mod.SCHEMA)


def test_handlers_cover_the_request_ops(svc: BotService) -> None:
    assert {"create", "reschedule", "cancel", "leave", "show", "list", "status"} <= set(svc.handlers())


# -- words for what the store refuses ----------------------------------------------------


def test_bulk_dedup_conflict_names_its_lines_and_no_rolled_back_bot(svc: BotService) -> None:
    holder = create(svc, join_at=FUTURE, deduplication_key="taken")["id"]
    items = [{"meeting_url": URL, "join_at": FUTURE, "deduplication_key": key, "line": n}
             for n, key in ((4, "a"), (7, "taken"), (9, "a"))]
    with pytest.raises(Conflict) as info:
        svc.create_many(items, want_bots=False)
    message = info.value.message
    assert f"line 7: dedup key 'taken' is taken by {holder} (scheduled)" in message, message
    assert "line 9: dedup key 'a' is also used by line 4" in message, message
    assert message.endswith("2 dedup conflicts; nothing was created"), message
    assert re.findall(r"bot_[A-Za-z0-9]{16}", message) == [holder], "only a bot that exists is named"
    assert sum(svc.store.counts().values()) == 1


# -- streams ------------------------------------------------------------------------------


def build_live(tmp_path: Path) -> BotService:
    """A service whose store announces to its hub, as in the daemon."""
    cfg = Config(config_mod.defaults())
    clock = FakeClock(T0)
    hub = EventHub()
    store = Store(tmp_path / "botsched.db", on_events=hub.publish, on_deleted=hub.gone)
    runner = RecordingRunner(cfg)
    return BotService(store, Scheduler(store, runner, cfg, clock), runner, hub, cfg, clock,
                      resolve_paths({"BOTSCHED_HOME": str(tmp_path)}))


def test_events_past_then_live_until_the_bot_is_cancelled(tmp_path: Path) -> None:
    svc = build_live(tmp_path)
    first = create(svc, join_at=FUTURE)["id"]
    bot_id = create(svc, join_at=FUTURE)["id"]

    async def scenario() -> list[tuple[str, str]]:
        seen: list[tuple[str, str]] = []
        async for event in svc.events({"id": bot_id, "follow": True}):
            seen.append((event["bot_id"], event["state"]))
            if len(seen) == 1:
                svc.store.transition(first, "scheduled", "staged", T0)  # another bot: not in this stream
                svc.reschedule({"id": bot_id, "join_at": "2026-05-04T13:00:00Z"})  # no event
                svc.store.note(bot_id, T0, "a live one")
            elif len(seen) == 2:
                svc.cancel({"id": bot_id})
        return seen

    assert asyncio.run(scenario()) == [(bot_id, "scheduled"), (bot_id, "scheduled")]
    svc.store.close()


def test_events_without_follow_end_after_the_past(tmp_path: Path) -> None:
    svc = build_live(tmp_path)
    ids = [create(svc, join_at=FUTURE)["id"] for _ in range(2)]

    async def scenario() -> list[str]:
        return [event["bot_id"] async for event in svc.events({})]

    assert asyncio.run(scenario()) == ids
    with pytest.raises(NotFound):
        asyncio.run(scenario_first(svc.events({"id": "bot_AAAAAAAAAAAAAAAA"})))
    svc.store.close()


async def scenario_first(stream: Any) -> Any:
    async for event in stream:
        return event
    return None


def test_wait_returns_the_bot_once_it_reaches_the_state(tmp_path: Path) -> None:
    svc = build_live(tmp_path)
    bot_id = create(svc, join_at=FUTURE)["id"]

    async def scenario() -> Any:
        waiting = asyncio.ensure_future(svc.wait({"id": bot_id, "state": "staged"}))
        await asyncio.sleep(0.01)
        assert not waiting.done()
        svc.store.transition(bot_id, "scheduled", "staged", T0 + S)
        return await asyncio.wait_for(waiting, 5)

    bot, warnings = asyncio.run(scenario())
    assert bot["state"] == "staged" and warnings == []
    with pytest.raises(BotschedError) as info:
        asyncio.run(svc.wait({"id": bot_id, "state": "ended", "timeout": 0.05}))
    assert info.value.exit_code == 124 and "staged" in info.value.message
    svc.store.close()


def test_wait_for_a_cancelled_bot_is_not_found(tmp_path: Path) -> None:
    svc = build_live(tmp_path)
    bot_id = create(svc, join_at=FUTURE)["id"]

    async def scenario() -> Any:
        waiting = asyncio.ensure_future(svc.wait({"id": bot_id}))
        await asyncio.sleep(0.01)
        svc.cancel({"id": bot_id})
        return await waiting

    with pytest.raises(NotFound, match="cancelled"):
        asyncio.run(scenario())
    svc.store.close()
