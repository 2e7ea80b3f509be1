"""Test doubles shared by the unit tests."""

from __future__ import annotations


class FakeClock:
    """The injectable clock: tests set ``t`` (microseconds since the epoch) by hand."""

    def __init__(self, now_us: int) -> None:
        self.t = now_us

    def now_us(self) -> int:
        return self.t
