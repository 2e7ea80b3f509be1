"""``plan``: from wanted occurrences and existing bots to create/reschedule/cancel/unchanged/skipped."""

from __future__ import annotations

import itertools
from typing import Any

import pytest
from calsync_helpers import NOW_US, expand, fixture_bytes, us

from botsched import calsync
from botsched.calsync import Action, Skipped, Wanted, plan

URL = "https://zoom.us/j/1"
_ids = itertools.count(1)


def wanted(key: str = "ical:a", join: int | None = None, url: str = URL, summary: str = "A") -> Wanted:
    join = us(2030, 3, 18, 10) if join is None else join
    return Wanted(key, key.removeprefix("ical:"), summary, url, join, join)


def bot(key: str | None = "ical:a", state: str = "scheduled", join: int | None = None, url: str = URL,
        summary: str = "A") -> dict[str, Any]:
    join = us(2030, 3, 18, 10) if join is None else join
    return {"id": f"bot_{next(_ids):016d}", "state": state, "join_at": calsync.instant_text(join),
            "meeting_url": url, "deduplication_key": key, "metadata": {"calendar_summary": summary}}


def only(actions: list[Action]) -> Action:
    assert len(actions) == 1, actions
    return actions[0]


def test_create_when_no_bot() -> None:
    action = only(plan([wanted()], [], NOW_US))
    assert (action.action, action.key, action.bot_id) == ("create", "ical:a", None)
    assert action.join_at == "2030-03-18T10:00:00Z"
    assert action.meeting_url == URL and action.metadata == {"calendar_uid": "a", "calendar_summary": "A"}


def test_unchanged_when_the_bot_matches() -> None:
    existing = bot()
    action = only(plan([wanted()], [existing], NOW_US))
    assert (action.action, action.bot_id) == ("unchanged", existing["id"])


def test_reschedule_when_the_time_differs() -> None:
    existing = bot(join=us(2030, 3, 18, 9))
    action = only(plan([wanted()], [existing], NOW_US))
    assert (action.action, action.bot_id) == ("reschedule", existing["id"])
    assert (action.previous_join_at, action.join_at) == ("2030-03-18T09:00:00Z", "2030-03-18T10:00:00Z")


def test_same_instant_written_differently_is_unchanged() -> None:
    existing = bot()
    existing["join_at"] = "2030-03-18T10:00:00.000Z"
    assert only(plan([wanted()], [existing], NOW_US)).action == "unchanged"


def test_cancel_when_the_event_is_gone() -> None:
    existing = bot("ical:gone")
    action = only(plan([], [existing], NOW_US, horizon_us=us(2030, 4, 1)))
    assert (action.action, action.bot_id, action.summary) == ("cancel", existing["id"], "A")
    assert "removed" in (action.reason or "")


def test_a_bot_beyond_the_window_is_left_for_a_later_sync() -> None:
    existing = bot("ical:later", join=us(2030, 5, 1))
    action = only(plan([], [existing], NOW_US, horizon_us=us(2030, 4, 1)))
    assert (action.action, action.reason) == ("unchanged", "beyond the sync window")


def test_an_overdue_scheduled_bot_is_not_cancelled() -> None:
    existing = bot("ical:now", join=NOW_US - 1_000_000)
    assert only(plan([], [existing], NOW_US)).action == "unchanged"


@pytest.mark.parametrize("state", ["staged", "joining", "joined_recording", "waiting_room", "post_processing"])
def test_a_bot_past_scheduled_is_never_touched(state: str) -> None:
    moved = bot(state=state, join=us(2030, 3, 18, 9))
    action = only(plan([wanted()], [moved], NOW_US))
    assert action.action == "skipped" and "left alone" in (action.reason or "") and state in (action.reason or "")
    removed = bot("ical:gone", state=state)
    action = only(plan([], [removed], NOW_US))
    assert action.action == "skipped" and "left alone" in (action.reason or "")
    same = bot(state=state)
    action = only(plan([wanted()], [same], NOW_US))
    assert (action.action, action.reason) == ("unchanged", f"bot is {state}")


@pytest.mark.parametrize("state", ["ended", "fatal_error"])
def test_a_key_whose_bot_already_ran_is_not_recreated(state: str) -> None:
    done = bot(state=state)
    action = only(plan([wanted()], [done], NOW_US))
    assert (action.action, action.bot_id) == ("unchanged", done["id"])
    assert state in (action.reason or "")


def test_finished_bots_of_removed_events_are_history() -> None:
    assert plan([], [bot("ical:old", state="ended"), bot("ical:old2", state="fatal_error")], NOW_US) == []


def test_a_finished_bot_beside_a_live_one_with_the_same_key() -> None:
    live = bot(join=us(2030, 3, 18, 9))
    actions = plan([wanted()], [bot(state="ended"), live], NOW_US)
    assert [(a.action, a.bot_id) for a in actions] == [("reschedule", live["id"])]


def test_bots_not_made_by_calendar_sync_are_ignored() -> None:
    others = [bot(None), bot("manual-key"), bot("ICAL:upper"), bot("calendar:x")]
    assert plan([], others, NOW_US) == []
    assert only(plan([wanted()], others, NOW_US)).action == "create"


def test_changed_meeting_link_replaces_the_bot() -> None:
    existing = bot(url="https://zoom.us/j/old")
    actions = plan([wanted(url="https://zoom.us/j/new")], [existing], NOW_US)
    assert [(a.action, a.bot_id, a.meeting_url) for a in actions] == [
        ("cancel", existing["id"], "https://zoom.us/j/old"),
        ("create", None, "https://zoom.us/j/new"),
    ]


@pytest.mark.parametrize("reason", [calsync.CANCELLED, "declined by me@example.com", calsync.NO_URL, calsync.ALL_DAY])
def test_skipped_occurrence_cancels_its_scheduled_bot(reason: str) -> None:
    existing = bot("ical:s")
    action = only(plan([], [existing], NOW_US, skipped=[Skipped("ical:s", "s", "S", us(2030, 3, 18, 10), reason)]))
    assert (action.action, action.reason, action.bot_id) == ("cancel", reason, existing["id"])


def test_skipped_occurrence_under_way_leaves_its_bot() -> None:
    existing = bot("ical:s", join=us(2030, 3, 17, 12, 30))
    skip = Skipped("ical:s", "s", "S", NOW_US - 60_000_000, calsync.STARTED)
    assert only(plan([], [existing], NOW_US, skipped=[skip])).action == "unchanged"


def test_skipped_occurrence_with_a_staged_bot_is_left_alone() -> None:
    existing = bot("ical:s", state="staged")
    action = only(plan([], [existing], NOW_US, skipped=[Skipped("ical:s", "s", "S", 0, calsync.CANCELLED)]))
    assert action.action == "skipped" and "left alone" in (action.reason or "")


def test_skipped_without_bot_is_reported() -> None:
    action = only(plan([], [], NOW_US, skipped=[Skipped("ical:s", "s", "S", us(2030, 3, 18), calsync.NO_URL)]))
    assert (action.action, action.reason, action.start) == ("skipped", calsync.NO_URL, "2030-03-18T00:00:00Z")


def test_actions_are_in_time_order_and_counted() -> None:
    actions = plan([wanted("ical:b", us(2030, 3, 19)), wanted("ical:a", us(2030, 3, 18))], [bot("ical:c")], NOW_US)
    assert [a.key for a in actions] == ["ical:a", "ical:c", "ical:b"]
    assert calsync.counts(actions) == {"create": 2, "reschedule": 0, "cancel": 1, "unchanged": 0, "skipped": 0,
                                       "failed": 0}


def test_json_shape() -> None:
    data = only(plan([wanted()], [], NOW_US)).as_json()
    assert {"action", "key", "bot_id", "summary", "join_at", "reason"} <= set(data)


# -- whole runs against a fake daemon --------------------------------------------------


class FakeDaemon:
    """Applies actions like the daemon would (create / reschedule / cancel)."""

    def __init__(self) -> None:
        self.bots: dict[str, dict[str, Any]] = {}

    def apply(self, actions: list[Action]) -> None:
        for action in actions:
            if action.action == "create":
                assert all(b["deduplication_key"] != action.key for b in self.bots.values()), "duplicate key"
                new = bot(action.key, join=calsync.parse_instant(action.join_at or ""), url=action.meeting_url or "",
                          summary=action.summary)
                self.bots[new["id"]] = new
            elif action.action == "reschedule":
                self.bots[action.bot_id or ""]["join_at"] = action.join_at
            elif action.action == "cancel":
                del self.bots[action.bot_id or ""]

    def sync(self, data: bytes, **options: Any) -> list[Action]:
        result = expand(data, days=60, **options)
        actions = plan(result.wanted, list(self.bots.values()), NOW_US, skipped=result.skipped,
                       horizon_us=result.window_end_us + options.get("join_offset_us", 0))
        self.apply(actions)
        return actions


def kinds(actions: list[Action]) -> dict[str, int]:
    return {k: v for k, v in calsync.counts(actions).items() if v}


@pytest.mark.parametrize("name", ["google.ics", "outlook.ics", "apple.ics", "recurring.ics", "dst.ics"])
def test_second_sync_is_all_unchanged(name: str) -> None:
    daemon = FakeDaemon()
    first = daemon.sync(fixture_bytes(name))
    assert kinds(first).get("create")
    second = daemon.sync(fixture_bytes(name))
    assert set(kinds(second)) <= {"unchanged", "skipped"}
    assert kinds(second).get("unchanged") == kinds(first)["create"]


def test_move_one_occurrence_then_remove_it() -> None:
    daemon = FakeDaemon()
    text = fixture_bytes("recurring.ics").decode()
    daemon.sync(text.encode())
    ids = {b["deduplication_key"]: b["id"] for b in daemon.bots.values()}
    moved = text.replace("DTSTART;TZID=Europe/Berlin:20300326T140000", "DTSTART;TZID=Europe/Berlin:20300326T150000")
    moved = moved.replace("DTEND;TZID=Europe/Berlin:20300326T143000", "DTEND;TZID=Europe/Berlin:20300326T153000")
    actions = daemon.sync(moved.encode())
    assert kinds(actions) == {"reschedule": 1, "unchanged": 4, "skipped": 1}
    [action] = [a for a in actions if a.action == "reschedule"]
    assert action.bot_id == ids[action.key] and action.join_at == "2030-03-26T14:00:00Z"
    # cancel that occurrence in the calendar: its bot goes
    cancelled = moved.replace("SEQUENCE:1\nEND:VEVENT", "SEQUENCE:2\nSTATUS:CANCELLED\nEND:VEVENT", 1)
    actions = daemon.sync(cancelled.encode())
    assert kinds(actions) == {"cancel": 1, "unchanged": 4, "skipped": 1}
    assert [a.reason for a in actions if a.action == "cancel"] == [calsync.CANCELLED]
    # drop the whole series: every bot goes
    actions = daemon.sync(b"BEGIN:VCALENDAR\nVERSION:2.0\nPRODID:x\nEND:VCALENDAR\n")
    assert kinds(actions) == {"cancel": 4}
    assert daemon.bots == {}


def test_join_offset_change_reschedules_everything_once() -> None:
    daemon = FakeDaemon()
    daemon.sync(fixture_bytes("google.ics"))
    actions = daemon.sync(fixture_bytes("google.ics"), join_offset_us=-60_000_000)
    assert kinds(actions)["reschedule"] == 4
    assert set(kinds(daemon.sync(fixture_bytes("google.ics"), join_offset_us=-60_000_000))) <= {"unchanged", "skipped"}
