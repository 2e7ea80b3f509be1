"""Identifiers, secrets and the Standard Webhooks signature.

Signing goes through the maintained ``standardwebhooks`` package (the same code receivers
verify with), so our headers cannot drift from the specification.
"""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime

from standardwebhooks import Webhook

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 24
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
#: byte -> letter/digit for bytes < 248 (= 4 x 62); bytes >= 248 are dropped: no modulo bias.
_TABLE = bytes(_ALPHABET[b % 62] for b in range(248)) + bytes(8)
_REJECT = bytes(range(248, 256))


def _random_id(prefix: str, length: int = 16) -> str:
    """``prefix`` + ``length`` uniformly random letters and digits. One ``token_bytes`` call
    and a ``translate`` (rejection sampling): a burst of 1,000 joins makes thousands of these
    inside the join's transaction, and ``secrets.choice`` per character costs ~1 us each."""
    while True:
        raw = secrets.token_bytes(length + length // 2 + 4).translate(None, _REJECT)
        if len(raw) >= length:
            return prefix + raw[:length].translate(_TABLE).decode()


def new_endpoint_id() -> str:
    return _random_id("wh_")


def new_delivery_id() -> str:
    return _random_id("dlv_", 20)


def new_event_id() -> str:
    return _random_id("evt_", 20)


def new_secret() -> str:
    """``whsec_`` + base64 of 24 random bytes, as Standard Webhooks expects."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode(
        "ascii"
    )


def mask_secret(secret: str) -> str:
    """What ``webhook list`` shows: enough to tell two secrets apart, too little to sign."""
    body = secret.removeprefix(SECRET_PREFIX)
    return f"{SECRET_PREFIX}{body[:4]}…" if len(body) > 8 else f"{SECRET_PREFIX}…"


def sign_headers(secret: str, msg_id: str, timestamp: int, body: str) -> dict[str, str]:
    """The three Standard Webhooks headers for one attempt (``timestamp``: whole seconds)."""
    moment = datetime.fromtimestamp(timestamp, tz=UTC)
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": Webhook(secret).sign(msg_id, moment, body),
    }
