"""``Idempotency-Key`` on ``POST /bots``: a retry with the same key and body gets the first
answer, so a client that lost the reply to a create cannot make a second bot.

Bounded (least recently used entries go first) and with a time to live, as hosted APIs
keep keys for about a day. A key reused with a *different* body is a client bug: it gets
``422`` (what the IETF idempotency-key draft prescribes), never the other body's answer.
Answers of ``5xx`` are not remembered: the retry must really be tried again.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, NamedTuple

#: How many keys are remembered (a stored answer is one bot: about 1 KiB).
MAX_KEYS = 10_000
#: How long a key is remembered.
TTL_S = 24 * 3600.0
#: Longer keys are refused (400): a key is an id, not a payload.
MAX_KEY_LEN = 255


class Answer(NamedTuple):
    status: int
    body: bytes
    warnings: tuple[str, ...]


class _Entry(NamedTuple):
    fingerprint: str
    answer: Answer
    expires: float


def fingerprint(body: Any) -> str:
    """The body's identity: its parsed JSON, so whitespace or key order make no difference."""
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()


class KeyMismatch(Exception):
    """The key was first used with another body."""


class IdempotencyCache:
    def __init__(self, max_keys: int = MAX_KEYS, ttl_s: float = TTL_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.max_keys = max_keys
        self.ttl_s = ttl_s
        self.clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def lookup(self, key: str, body_fingerprint: str) -> Answer | None:
        """The first answer for this key, ``None`` when the key is new (or expired);
        ``KeyMismatch`` when it came with another body."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires <= self.clock():
            del self._entries[key]
            return None
        if entry.fingerprint != body_fingerprint:
            raise KeyMismatch(key)
        self._entries.move_to_end(key)
        return entry.answer

    def remember(self, key: str, body_fingerprint: str, answer: Answer) -> None:
        if answer.status >= 500:
            return
        self._entries[key] = _Entry(body_fingerprint, answer, self.clock() + self.ttl_s)
        self._entries.move_to_end(key)
        now = self.clock()
        while self._entries:  # expired ones first (oldest are at the front), then over the bound
            oldest_key, oldest = next(iter(self._entries.items()))
            if len(self._entries) <= self.max_keys and oldest.expires > now:
                break
            del self._entries[oldest_key]
