"""The retry schedule and what an attempt's outcome means (pure: clock and RNG injected)."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

#: SPEC section 8: after the first attempt, retries this many seconds later (each ±20 %).
DEFAULT_RETRY_SECONDS: tuple[float, ...] = (5, 300, 1800, 7200, 18000, 36000, 36000)
JITTER = 0.2
#: An answer is only a success within this many seconds.
TIMEOUT_SECONDS = 10.0
#: The longest ``Retry-After`` obeyed (the default schedule's longest step with jitter): a
#: hostile or broken answer cannot park one bot's deliveries for years.
RETRY_AFTER_CAP_SECONDS = 12 * 3600.0

DELIVERED = "delivered"
RETRY = "retry"
FAILED = "failed"
DISABLED = "disabled"  # 410 Gone: the delivery failed and the endpoint is switched off


@dataclass(frozen=True)
class Outcome:
    """What one HTTP attempt gave: a status (any, redirects included) or an error text."""

    status: int | None = None
    error: str | None = None
    retry_after: str | None = None


@dataclass(frozen=True)
class Verdict:
    """What to record: the delivery's next state and, for a retry, when (wall seconds)."""

    kind: str
    next_at: float | None = None
    note: str | None = None  # the error/status text for ``webhook deliveries``


def retry_delay(
    failed_attempts: int, schedule: Sequence[float], rng: random.Random
) -> float | None:
    """Seconds until the next try after ``failed_attempts`` failures; ``None``: give up."""
    if failed_attempts < 1 or failed_attempts > len(schedule):
        return None
    base = float(schedule[failed_attempts - 1])
    return max(0.0, base * rng.uniform(1 - JITTER, 1 + JITTER))


def parse_retry_after(value: str | None, now: float, cap: float) -> float | None:
    """``Retry-After`` as seconds from ``now``: delta-seconds or an HTTP date; ``None`` if
    absent or unreadable. Capped at ``cap`` so a hostile answer cannot park a bot's queue
    for years."""
    if value is None:
        return None
    text = value.strip()
    if text.isdigit():
        seconds = float(text)
    else:
        try:
            moment = parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if moment.tzinfo is None:  # RFC 9110 dates are GMT
            return None
        seconds = moment.timestamp() - now
    return min(max(seconds, 0.0), cap)


def describe(outcome: Outcome) -> str | None:
    """One short line for the deliveries list: the error, or ``None`` for a plain status."""
    if outcome.error is not None:
        return outcome.error
    if outcome.status is not None and 300 <= outcome.status < 400:
        return f"redirect ({outcome.status}) not followed"
    return None


def classify(
    outcome: Outcome,
    attempts: int,
    now: float,
    rng: random.Random,
    schedule: Sequence[float] = DEFAULT_RETRY_SECONDS,
) -> Verdict:
    """Decide after attempt number ``attempts`` (1 = the first try).

    2xx: delivered. 410: disabled. Anything else (other status, redirect, timeout,
    connection error): retry at the later of the schedule and ``Retry-After``, or failed
    once the schedule is used up."""
    note = describe(outcome)
    status = outcome.status
    if outcome.error is None and status is not None and 200 <= status < 300:
        return Verdict(DELIVERED)
    if outcome.error is None and status == 410:
        return Verdict(DISABLED, note="410 Gone: endpoint disabled")
    delay = retry_delay(attempts, schedule, rng)
    if delay is None:
        return Verdict(FAILED, note=note)
    after = parse_retry_after(outcome.retry_after, now, RETRY_AFTER_CAP_SECONDS)
    if after is not None and after > delay:
        delay = after
    return Verdict(RETRY, next_at=now + delay, note=note)
