"""When to poll a followed calendar next: the pure policy, no clock and no I/O.

The daemon keeps one ``PollState`` per calendar and passes ``now`` (wall-clock
microseconds) in, as huey's scheduler does, so tests never patch time:

- a success (changed or ``304``) schedules the next poll ``every`` later and clears
  the failures;
- a failure retries after ``every`` first (one blip costs nothing extra and never
  polls a struggling server more often than usual), then doubles the wait per failure
  up to ``max(every, BACKOFF_CAP)``; a server's ``Retry-After`` is honoured up to a day;
- ``last_success`` and ``last_error`` stay for ``calendar list``; a later success
  keeps the last error (with its time), so a list can say "failed 2h ago: ...".

A wall clock stepped backwards would leave a poll scheduled far ahead: ``is_due``
also answers yes when the next poll is further away than the longest wait the policy
can have asked for.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from botsched.calsync.keys import MAX_NAME
from botsched.calsync.sources import Validators
from botsched.core.errors import InvalidInput
from botsched.core.timeparse import parse_duration

US_PER_S = 1_000_000
DEFAULT_EVERY_US = 10 * 60 * US_PER_S
#: Polling a feed more often than once a minute helps nobody (Google refreshes its
#: secret address every few hours); less than once a week is not following it.
MIN_EVERY_US = 60 * US_PER_S
MAX_EVERY_US = 7 * 86_400 * US_PER_S
#: Failures back off to at most this (or ``every``, when that is longer).
BACKOFF_CAP_US = 3600 * US_PER_S
#: A ``Retry-After`` longer than this is read as this.
RETRY_AFTER_CAP_US = 86_400 * US_PER_S
#: An error text kept for ``calendar list`` is one line of at most this many characters.
MAX_ERROR = 300


def parse_every(text: str, minimum_us: int = MIN_EVERY_US) -> int:
    """``--every 10m`` as microseconds, between a minute (config
    ``calendar.min_every_seconds``) and a week."""
    every = parse_duration(text)
    check_every(every, minimum_us, text.strip())
    return every


def check_every(every_us: int, minimum_us: int = MIN_EVERY_US, shown: str | None = None) -> None:
    if not minimum_us <= every_us <= MAX_EVERY_US:
        low = f"{minimum_us // US_PER_S}s" if minimum_us % (60 * US_PER_S) else f"{minimum_us // (60 * US_PER_S)}m"
        raise InvalidInput(f"--every must be between {low} and 7d, not {shown or f'{every_us // US_PER_S}s'}")


@dataclass(frozen=True)
class PollState:
    """What the daemon remembers of one followed calendar between polls."""

    next_poll_us: int
    failures: int = 0  # consecutive
    last_attempt_us: int | None = None
    last_success_us: int | None = None
    last_change_us: int | None = None  # last success that brought new text (not a 304)
    last_error: str | None = None
    last_error_us: int | None = None
    validators: Validators = field(default_factory=Validators)


def first_state(now_us: int) -> PollState:
    """A calendar just added: due at once."""
    return PollState(next_poll_us=now_us)


def backoff_us(every_us: int, failures: int, retry_after_us: int | None = None) -> int:
    """How long to wait after the ``failures``-th failure in a row (1 = the first)."""
    cap = max(every_us, BACKOFF_CAP_US)
    wait = every_us << min(max(failures - 1, 0), 20)  # shifting far enough is the cap anyway
    wait = min(wait, cap)
    if retry_after_us is not None:
        wait = max(wait, min(retry_after_us, RETRY_AFTER_CAP_US))
    return wait


def longest_wait_us(every_us: int) -> int:
    """The furthest ahead a poll can be scheduled (``is_due`` treats more as a clock step)."""
    return max(every_us, BACKOFF_CAP_US, RETRY_AFTER_CAP_US)


def is_due(state: PollState, now_us: int, every_us: int) -> bool:
    return now_us >= state.next_poll_us or state.next_poll_us - now_us > longest_wait_us(every_us)


def wait_us(state: PollState, now_us: int, every_us: int) -> int:
    """Microseconds until the next poll (0 when due)."""
    return 0 if is_due(state, now_us, every_us) else state.next_poll_us - now_us


def succeeded(state: PollState, now_us: int, every_us: int, validators: Validators, changed: bool) -> PollState:
    """After a fetch that worked (``changed`` False: the server said ``304``)."""
    return replace(
        state, next_poll_us=now_us + every_us, failures=0, last_attempt_us=now_us, last_success_us=now_us,
        last_change_us=now_us if changed else state.last_change_us, validators=validators,
    )


def failed(state: PollState, now_us: int, every_us: int, error: str, retry_after_us: int | None = None) -> PollState:
    """After a fetch (or a sync) that failed; the validators stay (the old text is still
    what the bots follow, so a ``304`` later still means "as you have it")."""
    failures = state.failures + 1
    line = " ".join(error.split())
    line = line if len(line) <= MAX_ERROR else line[: MAX_ERROR - 1] + "…"
    return replace(
        state, next_poll_us=now_us + backoff_us(every_us, failures, retry_after_us), failures=failures,
        last_attempt_us=now_us, last_error=line or "unknown error", last_error_us=now_us,
    )


def replace_error(state: PollState, now_us: int, error: str) -> PollState:
    """A poll that read the calendar but whose changes were partly refused: the
    success stands (no backoff), the reason is kept for ``calendar list``."""
    line = " ".join(error.split())
    line = line if len(line) <= MAX_ERROR else line[: MAX_ERROR - 1] + "…"
    return replace(state, last_error=line, last_error_us=now_us)


def poll_now(state: PollState, now_us: int) -> PollState:
    """``calendar sync NAME``: due at once, the rest kept."""
    return replace(state, next_poll_us=now_us)


def failing(state: PollState) -> bool:
    """Whether the last attempt failed (as opposed to an old error kept for the record)."""
    return state.failures > 0


def state_as_json(state: PollState) -> dict[str, Any]:
    """The poll state as the store keeps it (and ``calendar list --json`` shows it)."""
    return {"next_poll_us": state.next_poll_us, "failures": state.failures, "last_attempt_us": state.last_attempt_us,
            "last_success_us": state.last_success_us, "last_change_us": state.last_change_us,
            "last_error": state.last_error, "last_error_us": state.last_error_us,
            "validators": state.validators.as_json()}


def state_from_json(data: Mapping[str, Any]) -> PollState:
    def number(key: str) -> int | None:
        value = data.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) else None

    error = data.get("last_error")
    return PollState(next_poll_us=number("next_poll_us") or 0, failures=number("failures") or 0,
                     last_attempt_us=number("last_attempt_us"), last_success_us=number("last_success_us"),
                     last_change_us=number("last_change_us"), last_error=error if isinstance(error, str) else None,
                     last_error_us=number("last_error_us"), validators=Validators.from_json(data.get("validators")))


#: Hosts whose calendars get a name of their own when ``calendar add`` is given no ``--name``.
_KNOWN_HOSTS = (("google.com", "google"), ("googleusercontent.com", "google"), ("outlook.office365.com", "outlook"),
                ("outlook.live.com", "outlook"), ("office.com", "outlook"), ("icloud.com", "icloud"))


def default_name(kind: str, location: str) -> str:
    """A name for ``calendar add SOURCE`` without ``--name``: the file's stem, a known
    provider (``google``, ``outlook``, ``icloud``), a CalDAV collection's last path
    segment, or the host's main label; made to fit ``keys.validate_calendar_name``."""
    from urllib.parse import urlsplit

    if kind == "file":
        raw = os.path.splitext(os.path.basename(location))[0]
    else:
        parts = urlsplit(location)
        host = (parts.hostname or "").lower()
        raw = next((name for suffix, name in _KNOWN_HOSTS if host == suffix or host.endswith("." + suffix)), "")
        segments = [s for s in parts.path.split("/") if s]
        if not raw and kind == "caldav" and segments:
            raw = segments[-1]
        if not raw:
            labels = [label for label in host.split(".") if label and label not in ("www", "calendar", "cal", "dav")]
            raw = labels[-2] if len(labels) >= 2 else (labels[0] if labels else "calendar")
    name = re.sub(r"[^a-z0-9_-]+", "-", raw.lower()).strip("-_")[:MAX_NAME].strip("-_")
    return name or "calendar"
