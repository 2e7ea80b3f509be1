"""The body of SPEC section 8, built once when the delivery is recorded.

The body is frozen into the outbox row: every retry sends the same bytes (so the same
signature input), and a bot deleted later still has its history delivered.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

STATE_CHANGE = "bot.state_change"
TEST = "webhook.test"

#: The bot fields a receiver gets (SPEC section 8: no events, no timestamps).
BOT_FIELDS = (
    "id",
    "meeting_url",
    "bot_name",
    "state",
    "join_at",
    "metadata",
    "deduplication_key",
)

_encode = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def state_change(
    event_id: str,
    bot: Mapping[str, Any],
    new_state: str,
    old_state: str | None,
    at: str,
    detail: str | None,
) -> dict[str, Any]:
    """One event of a bot. ``bot.state`` is the event's state (the bot as it was then),
    not whatever the bot has moved on to by the time the body is built."""
    snapshot = {field: bot.get(field) for field in BOT_FIELDS}
    snapshot["state"] = new_state
    if snapshot["metadata"] is None:
        snapshot["metadata"] = {}
    return {
        "id": event_id,
        "type": STATE_CHANGE,
        "created_at": at,
        "data": {
            "bot_id": bot["id"],
            "old_state": old_state,
            "new_state": new_state,
            "detail": detail,
            "bot": snapshot,
        },
    }


def from_bot(bot: Mapping[str, Any], index: int, event_id: str) -> dict[str, Any]:
    """The body for ``bot["events"][index]`` (section 3 shape); the first has ``old_state: null``."""
    events = bot["events"]
    event = events[index]
    old = events[index - 1]["state"] if index > 0 else None
    return state_change(
        event_id, bot, event["state"], old, event["at"], event.get("detail")
    )


def test_event(event_id: str, endpoint_id: str, at: str) -> dict[str, Any]:
    """``webhook test ID``: proves the URL, the secret and the receiver's verification."""
    return {
        "id": event_id,
        "type": TEST,
        "created_at": at,
        "data": {"endpoint_id": endpoint_id, "message": "test delivery from botsched"},
    }


def encode(body: Mapping[str, Any]) -> str:
    """Compact JSON, UTF-8 as is: the exact text that is signed and sent."""
    return _encode(body)
