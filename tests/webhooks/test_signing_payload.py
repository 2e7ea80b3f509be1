"""Ids, secrets, masking, signatures (verified with standardwebhooks) and the body shape."""

from __future__ import annotations

import base64
import json
import re
import time

import pytest
from standardwebhooks import Webhook
from standardwebhooks.webhooks import WebhookVerificationError

from botsched.daemon.webhooks import payload, signing


def test_ids_and_secret_shapes() -> None:
    assert re.fullmatch(r"wh_[A-Za-z0-9]{16}", signing.new_endpoint_id())
    assert re.fullmatch(r"dlv_[A-Za-z0-9]{20}", signing.new_delivery_id())
    assert re.fullmatch(r"evt_[A-Za-z0-9]{20}", signing.new_event_id())
    secret = signing.new_secret()
    assert secret.startswith("whsec_") and len(base64.b64decode(secret[6:])) >= 24
    assert signing.new_secret() != secret
    masked = signing.mask_secret(secret)
    assert masked.startswith("whsec_") and secret[6:] not in masked and len(masked) < 12


def test_signature_verifies_with_standardwebhooks_and_fails_when_tampered() -> None:
    secret = signing.new_secret()
    body = '{"id":"evt_x","type":"bot.state_change"}'
    headers = signing.sign_headers(secret, "evt_x", int(time.time()), body)
    assert headers["webhook-id"] == "evt_x" and headers["webhook-signature"].startswith(
        "v1,"
    )
    assert Webhook(secret).verify(body, headers) == json.loads(body)
    with pytest.raises(WebhookVerificationError):
        Webhook(secret).verify(body.replace("x", "y"), headers)
    with pytest.raises(WebhookVerificationError):
        Webhook(signing.new_secret()).verify(body, headers)


def test_body_from_a_bot_first_event_has_null_old_state() -> None:
    bot = {
        "id": "bot_HiXYgjyeWmTVOaII",
        "meeting_url": "https://meet.google.com/gvy-zzra-ktd",
        "bot_name": "B",
        "state": "joining",
        "join_at": "2026-12-01T15:00:00Z",
        "created_at": "x",
        "metadata": {"team": "sales"},
        "deduplication_key": None,
        "events": [
            {"state": "scheduled", "at": "2026-12-01T14:00:00.000001Z", "detail": None},
            {"state": "staged", "at": "2026-12-01T14:58:00.000001Z", "detail": None},
        ],
    }
    first = payload.from_bot(bot, 0, "evt_1")
    assert first["type"] == "bot.state_change" and first["id"] == "evt_1"
    assert first["created_at"] == "2026-12-01T14:00:00.000001Z"
    assert (
        first["data"]["old_state"] is None and first["data"]["new_state"] == "scheduled"
    )
    second = payload.from_bot(bot, 1, "evt_2")["data"]
    assert (second["old_state"], second["new_state"]) == ("scheduled", "staged")
    assert second["bot"] == {
        "id": "bot_HiXYgjyeWmTVOaII",
        "meeting_url": "https://meet.google.com/gvy-zzra-ktd",
        "bot_name": "B",
        "state": "staged",  # the bot as it was at that event
        "join_at": "2026-12-01T15:00:00Z",
        "metadata": {"team": "sales"},
        "deduplication_key": None,
    }
    assert (
        payload.test_event("evt_3", "wh_a", "2026-12-01T14:00:00Z")["type"]
        == "webhook.test"
    )
