"""The seed document's three requests, as written, through curl: on the Unix socket
(no token) and on loopback TCP (with the token). Only the dates are moved to the future."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from http_helpers import LiveApi

# The seed's create body, byte for byte (its trailing comma included).
SEED_CREATE = """{
  "meeting_url": "https://zoom.us/j/123456789",
  "bot_name": "My scheduled bot",
  "join_at": "%s",
}"""
SEED_PATCH = """{
  "join_at": "%s"
}"""


def _future(hours: int, fmt: str) -> str:
    return (datetime.now(UTC) + timedelta(days=30, hours=hours)).replace(microsecond=0).strftime(fmt)


def curl(api: LiveApi, via: str, *args: str) -> tuple[int, str]:
    where = ["--unix-socket", api.socket] if via == "unix" else ["-H", f"Authorization: Bearer {api.token}"]
    base = "http://botsched" if via == "unix" else f"http://127.0.0.1:{api.port}"
    argv = ["curl", "-sS", "-w", "\n%{http_code}", *where, *[a.replace("BASE", base) for a in args]]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True)
    body, _, status = done.stdout.rpartition("\n")
    return int(status), body


@pytest.mark.parametrize("via", ["unix", "tcp"])
def test_spec_curl_lines(api: LiveApi, via: str) -> None:
    """SPEC §9's three curl lines, with a future join_at."""
    join_at = _future(0, "%Y-%m-%dT%H:%M:%S+0000")
    status, body = curl(api, via, "-X", "POST", "BASE/bots", "-H", "content-type: application/json", "-d",
                        f'{{"meeting_url": "https://zoom.us/j/123456789", "bot_name": "My scheduled bot", '
                        f'"join_at": "{join_at}"}}')
    assert status == 201, body
    bot = json.loads(body)
    assert bot["state"] == "scheduled" and bot["bot_name"] == "My scheduled bot"
    assert bot["join_at"] == join_at.replace("+0000", "Z")
    assert bot["meeting_url"] == "https://zoom.us/j/123456789" and bot["id"].startswith("bot_")
    assert [e["state"] for e in bot["events"]] == ["scheduled"]

    later = _future(1, "%Y-%m-%dT%H:%M:%SZ")
    status, body = curl(api, via, "-X", "PATCH", f"BASE/bots/{bot['id']}", "-d", f'{{"join_at": "{later}"}}')
    assert status == 200, body
    moved = json.loads(body)
    assert {k: moved[k] for k in ("id", "meeting_url", "state", "join_at")} == {
        "id": bot["id"], "meeting_url": bot["meeting_url"], "state": "scheduled", "join_at": later}

    status, body = curl(api, via, "-X", "DELETE", f"BASE/bots/{bot['id']}")
    assert status == 200, body
    assert json.loads(body)["id"] == bot["id"]
    status, body = curl(api, via, f"BASE/bots/{bot['id']}")
    assert status == 404 and json.loads(body)["error"]["code"] == "not_found"


def test_seed_document_bodies_as_written(api: LiveApi, tmp_path: object) -> None:
    """The seed document's JSON bodies, whitespace and trailing comma as shown, sent as
    they would be from a file with ``--data-binary``."""
    join_at = _future(0, "%Y-%m-%dT%H:%M:%S+0000")
    status, body = curl(api, "unix", "-X", "POST", "BASE/bots", "-H", "content-type: application/json",
                        "--data-binary", SEED_CREATE % join_at)
    assert status == 201, body
    bot = json.loads(body)
    assert bot["state"] == "scheduled" and bot["join_at"] == join_at.replace("+0000", "Z")
    later = _future(1, "%Y-%m-%dT%H:%M:%SZ")
    status, body = curl(api, "unix", "-X", "PATCH", f"BASE/bots/{bot['id']}", "--data-binary", SEED_PATCH % later)
    assert status == 200 and json.loads(body)["join_at"] == later, body
    status, body = curl(api, "unix", "-X", "DELETE", f"BASE/bots/{bot['id']}")
    assert status == 200 and json.loads(body)["state"] == "scheduled", body
