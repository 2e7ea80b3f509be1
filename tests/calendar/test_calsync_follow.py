"""The polling policy of followed calendars (injected clock) and calendar-scoped keys."""

from __future__ import annotations

import pytest
from calsync_helpers import NOW_US, calendar, expand

from botsched import calsync
from botsched.calsync import follow, keys
from botsched.calsync.sources import Validators
from botsched.core.errors import InvalidInput

MIN = 60_000_000
EVERY = 10 * MIN


def test_a_new_calendar_is_due_at_once_then_every_period() -> None:
    state = follow.first_state(NOW_US)
    assert follow.is_due(state, NOW_US, EVERY) and follow.wait_us(state, NOW_US, EVERY) == 0
    state = follow.succeeded(state, NOW_US, EVERY, Validators('"v1"'), changed=True)
    assert state.next_poll_us == NOW_US + EVERY and state.validators.etag == '"v1"'
    assert not follow.is_due(state, NOW_US + EVERY - 1, EVERY)
    assert follow.wait_us(state, NOW_US + MIN, EVERY) == 9 * MIN
    assert follow.is_due(state, NOW_US + EVERY, EVERY)
    later = follow.succeeded(state, NOW_US + EVERY, EVERY, state.validators, changed=False)  # a 304
    assert later.last_change_us == NOW_US and later.last_success_us == NOW_US + EVERY


def test_failures_back_off_to_a_cap_and_a_success_resets() -> None:
    state = follow.first_state(NOW_US)
    now, waits = NOW_US, []
    for _ in range(6):
        state = follow.failed(state, now, EVERY, "feed: the server answered 500")
        waits.append((state.next_poll_us - now) // MIN)
        now = state.next_poll_us
    assert waits == [10, 20, 40, 60, 60, 60]  # first retry on the usual schedule, cap one hour
    assert state.failures == 6 and follow.failing(state)
    assert (state.last_error, state.last_error_us, state.last_attempt_us) == (
        "feed: the server answered 500", now - 60 * MIN, now - 60 * MIN)
    state = follow.succeeded(state, now, EVERY, Validators(), changed=True)
    assert state.failures == 0 and state.next_poll_us == now + EVERY and not follow.failing(state)
    assert state.last_error == "feed: the server answered 500"  # kept for `calendar list`


def test_a_long_period_is_its_own_cap_and_retry_after_is_honoured() -> None:
    day = 1440 * MIN
    assert follow.backoff_us(day, 1) == day and follow.backoff_us(day, 5) == day
    assert follow.backoff_us(EVERY, 1, retry_after_us=3 * 3600 * 1_000_000) == 3 * 3600 * 1_000_000
    assert follow.backoff_us(EVERY, 1, retry_after_us=30 * day) == day  # at most a day
    assert follow.backoff_us(EVERY, 10_000) == 60 * MIN  # no overflow, no huge shift


def test_errors_are_kept_as_one_short_line() -> None:
    state = follow.failed(follow.first_state(NOW_US), NOW_US, EVERY, "a\nb\t c " + "x" * 1000)
    assert state.last_error is not None and "\n" not in state.last_error
    assert state.last_error.startswith("a b c x") and len(state.last_error) == follow.MAX_ERROR


def test_a_clock_stepped_back_does_not_stall_polling() -> None:
    state = follow.succeeded(follow.first_state(NOW_US), NOW_US, EVERY, Validators(), changed=True)
    stepped_back = NOW_US - 30 * 86_400 * 1_000_000  # a month back: the next poll looks a month away
    assert follow.is_due(state, stepped_back, EVERY)
    assert not follow.is_due(state, NOW_US - 5 * MIN, EVERY)  # a small step: wait as planned


def test_poll_now_keeps_the_record() -> None:
    state = follow.failed(follow.first_state(NOW_US), NOW_US, EVERY, "boom")
    now = follow.poll_now(state, NOW_US + MIN)
    assert follow.is_due(now, NOW_US + MIN, EVERY) and now.failures == 1 and now.last_error == "boom"


@pytest.mark.parametrize(("text", "us"), [("10m", EVERY), ("1m", MIN), ("7d", 7 * 1440 * MIN), ("1h30m", 90 * MIN)])
def test_every(text: str, us: int) -> None:
    assert follow.parse_every(text) == us


@pytest.mark.parametrize("text", ["30s", "8d", "-10m", "often"])
def test_bad_every(text: str) -> None:
    with pytest.raises(InvalidInput):
        follow.parse_every(text)


# -- keys ---------------------------------------------------------------------------

TEXT = calendar("UID:one@x\nSUMMARY:One\nDTSTART:20300318T100000Z\nURL:https://zoom.us/j/1",
                "UID:series@x\nSUMMARY:S\nDTSTART:20300318T120000Z\nRRULE:FREQ=DAILY;COUNT=2\n"
                "URL:https://zoom.us/j/2").encode()


def test_a_file_sync_keeps_its_keys() -> None:
    assert [w.key for w in expand(TEXT).wanted] == [
        "ical:one@x", "ical:series@x@2030-03-18T12:00:00Z", "ical:series@x@2030-03-19T12:00:00Z"]


def test_a_followed_calendar_carries_its_name() -> None:
    assert [w.key for w in expand(TEXT, calendar="work").wanted] == [
        "ical/work:one@x", "ical/work:series@x@2030-03-18T12:00:00Z", "ical/work:series@x@2030-03-19T12:00:00Z"]
    assert {keys.calendar_of(w.key) for w in expand(TEXT, calendar="work").wanted} == {"work"}
    assert keys.calendar_of("ical:one@x") is None and keys.calendar_of("ical/Bad Name:x") is None


def bots_for(result: calsync.Expansion) -> list[dict[str, str]]:
    return [{"id": f"bot_{i}_{w.key}", "deduplication_key": w.key, "state": "scheduled", "join_at": w.join_at,
             "meeting_url": w.meeting_url} for i, w in enumerate(result.wanted)]


def test_calendars_stay_apart() -> None:
    """Two calendars and a file sync in one home: each plans only its own bots, so an
    empty 'personal' cancels nothing of 'work' nor of the file sync's."""
    bots = bots_for(expand(TEXT, calendar="work")) + bots_for(expand(TEXT))
    empty = expand(calendar().encode(), calendar="personal")
    assert calsync.plan(empty.wanted, bots, NOW_US, calendar="personal") == []
    work = expand(TEXT, calendar="work")
    assert {a.action for a in calsync.plan(work.wanted, bots, NOW_US, calendar="work")} == {"unchanged"}
    file_sync = expand(calendar().encode())
    cancelled = {a.key for a in calsync.plan(file_sync.wanted, bots, NOW_US) if a.action == "cancel"}
    assert cancelled == {"ical:one@x", "ical:series@x@2030-03-18T12:00:00Z", "ical:series@x@2030-03-19T12:00:00Z"}
    # a name that is a prefix of another does not reach into it
    assert calsync.plan([], bots_for(expand(TEXT, calendar="work2")), NOW_US, calendar="work") == []


def test_scoped_keys_stay_within_the_dedup_key_limit() -> None:
    from botsched.core.validation import validate_dedup_key

    name = "n" * keys.MAX_NAME
    for uid in ("u" * 199, "u" * 200, "u" * 500):
        key = keys.event_key(uid, "2030-03-18T12:00:00.123456Z", name)
        assert validate_dedup_key(key) == key and len(key) <= 256
    assert keys.event_key("u" * 200, None) == "ical:" + "u" * 200  # a file sync's UIDs kept as before


@pytest.mark.parametrize("name", ["", "Work", "my cal", "a:b", "a/b", "-x", "x" * 33])
def test_bad_calendar_names(name: str) -> None:
    with pytest.raises(InvalidInput, match="bad calendar name"):
        keys.validate_calendar_name(name)


def test_the_poll_state_round_trips_through_json_and_bad_fields_fall_back() -> None:
    state = follow.failed(follow.succeeded(follow.first_state(NOW_US), NOW_US, EVERY, Validators('"e"', "Mon"),
                                           changed=True), NOW_US + EVERY, EVERY, "boom", None)
    assert follow.state_from_json(follow.state_as_json(state)) == state
    odd = follow.state_from_json({"next_poll_us": "soon", "failures": True, "last_error": 5, "validators": None})
    assert odd == follow.PollState(next_poll_us=0)


@pytest.mark.parametrize(("kind", "location", "name"), [
    ("http", "https://calendar.google.com/calendar/ical/me%40gmail.com/private-abc/basic.ics", "google"),
    ("http", "https://outlook.office365.com/owa/calendar/x@example.com/y/calendar.ics", "outlook"),
    ("http", "https://p42-caldav.icloud.com/published/2/MTIz", "icloud"),
    ("caldav", "https://cloud.example.com/remote.php/dav/calendars/me/Personal%20Work/", "personal-20work"),
    ("http", "https://www.meetup.com/some/events.ics", "meetup"),
    ("file", "/home/me/Team Calendar.ics", "team-calendar"),
    ("file", "/home/me/___.ics", "calendar"),
])
def test_a_default_name_from_the_source_is_a_valid_name(kind: str, location: str, name: str) -> None:
    assert follow.default_name(kind, location) == name
    keys.validate_calendar_name(name)


def test_every_is_bounded_by_the_configured_minimum() -> None:
    assert follow.parse_every("10m") == EVERY
    assert follow.parse_every("2s", minimum_us=1_000_000) == 2_000_000
    with pytest.raises(InvalidInput, match="between 1m and 7d"):
        follow.parse_every("30s")
    with pytest.raises(InvalidInput, match="between 1s and 7d"):
        follow.check_every(8 * 86_400_000_000, 1_000_000)
