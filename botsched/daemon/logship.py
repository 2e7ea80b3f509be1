"""Cluster mode: the runners' output goes to the shared database too, so ``logs BOT_ID``
works from every agent, not only from the one that runs the bot.

The command runner hands each buffered flush of a bot's log (already one write per
256 KiB or 0.2 s, see runners/command.py) to ``add``, on the event loop: it only appends
to memory. A thread of its own, woken by the first byte, waits ``SHIP_S`` more (so one
transaction carries everything every runner said meanwhile) and writes it all in one
``append_logs``. Nothing of this is on the join path, and nothing crosses the network per
line. Memory is bounded: while the database is away, each bot keeps only its last
``MAX_PENDING_BYTES`` (its local log file keeps everything, as on one machine).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence

from botsched.daemon.store.base import StorageError

__all__ = ["LogShipper"]

log = logging.getLogger("botsched.daemon.logs")

#: Output is shipped at most this long after it was written (one transaction per batch).
SHIP_S = 1.0
#: What one bot's output may hold in memory while it cannot be shipped.
MAX_PENDING_BYTES = 16 << 20
#: After a failed write, the next one is tried this much later.
RETRY_S = 2.0


class LogShipper:
    """Batches runner output and writes it with ``write([(bot_id, bytes), ...])``."""

    def __init__(self, write: Callable[[Sequence[tuple[str, bytes]]], None]) -> None:
        self._write = write
        self._lock = threading.Lock()
        self._pending: dict[str, bytearray] = {}
        self._ready = threading.Event()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._run, name="botsched-logs", daemon=True)
        self._thread.start()

    def add(self, bot_id: str, data: bytes) -> None:
        """A bot's output, in order (from the event loop: only memory is touched)."""
        if not data:
            return
        with self._lock:
            buffer = self._pending.setdefault(bot_id, bytearray())
            buffer += data
            if len(buffer) > MAX_PENDING_BYTES:
                del buffer[: len(buffer) - MAX_PENDING_BYTES]
        self._ready.set()

    def _take(self) -> list[tuple[str, bytes]]:
        with self._lock:
            taken, self._pending = self._pending, {}
            self._ready.clear()
        return [(bot_id, bytes(data)) for bot_id, data in taken.items()]

    def _give_back(self, chunks: list[tuple[str, bytes]]) -> None:
        """A write failed: its chunks go back in front of what came meanwhile."""
        with self._lock:
            for bot_id, data in chunks:
                buffer = bytearray(data) + self._pending.get(bot_id, bytearray())
                self._pending[bot_id] = buffer[-MAX_PENDING_BYTES:]
            self._ready.set()

    def _ship(self) -> bool:
        chunks = self._take()
        try:
            self._write(chunks)
        except StorageError as exc:
            log.warning("cannot store runner output (%d bot(s)): %s; retrying", len(chunks), exc.message)
            self._give_back(chunks)
            return False
        return True

    def _run(self) -> None:
        while not self._stopping.is_set():
            self._ready.wait()
            if self._stopping.wait(SHIP_S):
                break
            if not self._ship():
                self._stopping.wait(RETRY_S)

    def close(self) -> None:
        """Ship what is left (one last try), then stop."""
        self._stopping.set()
        self._ready.set()
        self._thread.join(timeout=10)
        if any(self._pending.values()):
            self._ship()
