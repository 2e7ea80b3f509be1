"""The retry schedule, Retry-After and outcome classification (pure, RNG and clock injected)."""

from __future__ import annotations

import random
from datetime import UTC, datetime
from email.utils import format_datetime

import pytest

from botsched.daemon.webhooks import schedule
from botsched.daemon.webhooks.schedule import (
    Outcome,
    classify,
    parse_retry_after,
    retry_delay,
)

NOW = 1_800_000_000.0


def test_schedule_is_the_spec_one_with_jitter_inside_20_percent() -> None:
    assert schedule.DEFAULT_RETRY_SECONDS == (5, 300, 1800, 7200, 18000, 36000, 36000)
    rng = random.Random(7)
    for attempt, base in enumerate(schedule.DEFAULT_RETRY_SECONDS, 1):
        delays = [
            retry_delay(attempt, schedule.DEFAULT_RETRY_SECONDS, rng)
            for _ in range(200)
        ]
        assert all(d is not None and base * 0.8 <= d <= base * 1.2 for d in delays)
        assert len({round(d or 0, 6) for d in delays}) > 100  # jittered, not constant
    assert retry_delay(8, schedule.DEFAULT_RETRY_SECONDS, rng) is None


def test_a_configured_schedule_replaces_the_default() -> None:
    rng = random.Random(1)
    assert 0.8 <= (retry_delay(1, [1], rng) or 0) <= 1.2
    assert retry_delay(2, [1], rng) is None
    assert retry_delay(1, [], rng) is None


def test_retry_after_seconds_and_http_date() -> None:
    assert parse_retry_after("120", NOW, cap=1e9) == 120
    date = format_datetime(datetime.fromtimestamp(NOW + 90, tz=UTC), usegmt=True)
    assert parse_retry_after(date, NOW, cap=1e9) == pytest.approx(90)
    assert (
        parse_retry_after(
            format_datetime(datetime.fromtimestamp(NOW - 90, tz=UTC), usegmt=True),
            NOW,
            1e9,
        )
        == 0
    )
    assert parse_retry_after("soon", NOW, cap=1e9) is None
    assert parse_retry_after(None, NOW, cap=1e9) is None
    assert parse_retry_after("999999999", NOW, cap=3600) == 3600


def test_classify() -> None:
    rng = random.Random(3)
    assert classify(Outcome(status=204), 1, NOW, rng).kind == schedule.DELIVERED
    gone = classify(Outcome(status=410), 1, NOW, rng)
    assert gone.kind == schedule.DISABLED and gone.next_at is None
    for outcome in (
        Outcome(status=500),
        Outcome(status=302),
        Outcome(error="timeout"),
        Outcome(status=404),
    ):
        verdict = classify(outcome, 1, NOW, rng)
        assert verdict.kind == schedule.RETRY
        assert verdict.next_at is not None and NOW + 4 <= verdict.next_at <= NOW + 6
    assert (
        classify(Outcome(status=302), 1, NOW, rng).note == "redirect (302) not followed"
    )
    assert classify(Outcome(status=500), 8, NOW, rng).kind == schedule.FAILED
    assert (
        classify(Outcome(status=500), 2, NOW, rng, schedule=[1, 2]).kind
        == schedule.RETRY
    )
    assert (
        classify(Outcome(status=500), 3, NOW, rng, schedule=[1, 2]).kind
        == schedule.FAILED
    )


def test_retry_after_wins_only_when_later() -> None:
    rng = random.Random(5)
    later = classify(Outcome(status=429, retry_after="60"), 1, NOW, rng)
    assert later.next_at == NOW + 60
    earlier = classify(
        Outcome(status=429, retry_after="1"), 2, NOW, rng
    )  # schedule says ~300 s
    assert earlier.next_at is not None and earlier.next_at - NOW >= 240
