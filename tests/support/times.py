"""Time helpers: wire instants (``...T16:55:00.123Z``) written and read the way tests need."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

S = 1_000_000  # microseconds in a second, the store's unit

__all__ = ["UTC", "S", "in_s", "iso_ms", "parse_z", "z_seconds"]


def iso_ms(moment: datetime) -> str:
    """UTC ISO 8601 with milliseconds and Z: 2025-06-16T16:55:00.123Z."""
    moment = moment.astimezone(UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def in_s(seconds: float) -> str:
    """An absolute join time ``seconds`` from now, with milliseconds, in Z."""
    return iso_ms(datetime.now(UTC) + timedelta(seconds=seconds))


def parse_z(text: str) -> datetime:
    """A wire instant (it must end in Z) as an aware datetime."""
    assert text.endswith("Z"), text
    return datetime.fromisoformat(text[:-1] + "+00:00")


def z_seconds(text: str) -> float:
    """A wire instant as POSIX seconds (for lateness arithmetic)."""
    return parse_z(text).timestamp()
