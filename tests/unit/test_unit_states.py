"""Unit tests of botsched.core.states against the lifecycle documented in SPEC §4."""

from __future__ import annotations

import itertools

import pytest

from botsched.core import states
from botsched.core.states import ALL_STATES, is_legal, is_terminal
from tests.support.home import ALL_STATES as DOCUMENTED_STATES

# SPEC §4, written out independently of the implementation's table.
IN_CALL = {"waiting_room", "joined_not_recording", "joined_recording"}
EXPECTED: dict[str, set[str]] = {
    "scheduled": {"staged", "fatal_error"},
    "ready": {"joining", "fatal_error"},
    "staged": {"joining", "fatal_error"},
    "joining": IN_CALL | {"leaving", "post_processing", "ended", "fatal_error"},
    "waiting_room": {"joined_not_recording", "joined_recording", "leaving", "post_processing", "ended", "fatal_error"},
    "joined_not_recording": {"joined_recording", "leaving", "post_processing", "ended", "fatal_error"},
    "joined_recording": {"joined_not_recording", "leaving", "post_processing", "ended", "fatal_error"},
    "leaving": {"post_processing", "ended", "fatal_error"},
    "post_processing": {"ended", "fatal_error"},
    "ended": set(),
    "fatal_error": set(),
}


def test_all_states_are_the_documented_ones_in_lifecycle_order() -> None:
    assert ALL_STATES == DOCUMENTED_STATES  # SPEC.md's list, kept once in tests/support
    assert set(EXPECTED) == set(ALL_STATES)


@pytest.mark.parametrize("current, new", list(itertools.product(ALL_STATES, ALL_STATES)))
def test_transition_table(current: str, new: str) -> None:
    assert is_legal(current, new) == (new in EXPECTED[current]), f"{current} -> {new}"


@pytest.mark.parametrize(
    "current, new",
    [
        ("scheduled", "joining"),  # must be staged first
        ("scheduled", "ready"),
        ("scheduled", "ended"),
        ("staged", "ended"),
        ("staged", "scheduled"),  # no un-staging
        ("staged", "joined_recording"),
        ("ready", "staged"),
        ("ready", "scheduled"),
        ("joining", "staged"),
        ("leaving", "joined_recording"),
        ("post_processing", "leaving"),
        ("ended", "fatal_error"),
        ("fatal_error", "ended"),
        ("ended", "scheduled"),
    ],
)
def test_named_illegal_transitions(current: str, new: str) -> None:
    assert not is_legal(current, new)


@pytest.mark.parametrize("state", ALL_STATES)
def test_no_self_transitions(state: str) -> None:
    assert not is_legal(state, state)


@pytest.mark.parametrize("state", ["ended", "fatal_error"])
def test_terminal_states_have_no_exits(state: str) -> None:
    assert is_terminal(state)
    assert not any(is_legal(state, other) for other in ALL_STATES)


@pytest.mark.parametrize("state", [s for s in ALL_STATES if s not in ("ended", "fatal_error")])
def test_every_live_state_can_fail_and_is_not_terminal(state: str) -> None:
    assert not is_terminal(state)
    assert is_legal(state, "fatal_error")


def test_nothing_enters_the_initial_states() -> None:
    for state in ALL_STATES:
        assert not is_legal(state, "scheduled")
        assert not is_legal(state, "ready")


def test_staged_only_from_scheduled_and_joining_only_from_staged_or_ready() -> None:
    assert {s for s in ALL_STATES if is_legal(s, "staged")} == {"scheduled"}
    assert {s for s in ALL_STATES if is_legal(s, "joining")} == {"staged", "ready"}


def _reachable(start: str) -> set[str]:
    seen, todo = {start}, [start]
    while todo:
        here = todo.pop()
        for nxt in ALL_STATES:
            if is_legal(here, nxt) and nxt not in seen:
                seen.add(nxt)
                todo.append(nxt)
    return seen


def test_every_state_is_reachable_and_every_live_state_can_end() -> None:
    assert _reachable("scheduled") | _reachable("ready") == set(ALL_STATES)
    assert "ready" not in _reachable("scheduled")
    for state in ALL_STATES:
        if not is_terminal(state):
            assert "ended" in _reachable(state) or state in ("scheduled", "ready", "staged")
            assert {"ended", "fatal_error"} & _reachable(state)


def test_unknown_states_are_never_legal() -> None:
    assert not is_legal("bogus", "ended")
    assert not is_legal("scheduled", "bogus")
    assert not is_legal("", "")
    assert not is_terminal("bogus")


def test_state_groups() -> None:
    assert {"ended", "fatal_error"} == states.TERMINAL
    assert {"joining", "waiting_room", "joined_not_recording", "joined_recording"} == states.IN_MEETING
    # a runner may only report states after the join was signalled
    assert not states.RUNNER_REPORTABLE & {"scheduled", "ready", "staged", "joining"}
    assert set(ALL_STATES) >= states.RUNNER_REPORTABLE
    assert set(states.TRANSITIONS) == set(ALL_STATES)
