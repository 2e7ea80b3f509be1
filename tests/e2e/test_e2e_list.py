"""``botsched list``: order, --state, --limit, human output, JSON array (SPEC §5)."""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

from tests.support.home import ID_RE
from tests.support.times import UTC, iso_ms


def test_order_state_filter_and_limit(home):
    assert home.json("list") == [], "a new home has no bots"
    assert "Traceback" not in home.ok("list").stderr
    s1 = home.create("https://zoom.us/j/1", "--join-at", "2028-03-01T00:00:00Z")
    s2 = home.create("https://zoom.us/j/2", "--join-at", "2028-01-01T00:00:00Z")
    a1 = home.create("https://zoom.us/j/3")  # ad-hoc: sorted by created_at (now)
    s3 = home.create("https://zoom.us/j/4", "--join-at", iso_ms(datetime.now(UTC) + timedelta(hours=1)))
    s4 = home.create("https://zoom.us/j/5", "--join-at", "2029-01-01T00:00:00.5+00:00")
    a2 = home.create("https://zoom.us/j/6")
    home.ok("wait", a1, "--timeout", "15")
    home.ok("wait", a2, "--timeout", "15")

    every = home.json("list")
    assert isinstance(every, list)
    assert [bot["id"] for bot in every] == [a1, a2, s3, s2, s1, s4]
    for bot in every:
        assert ID_RE.match(bot["id"]) and {"id", "state", "join_at", "meeting_url"} <= set(bot)

    scheduled = home.json("list", "--state", "scheduled")
    assert [bot["id"] for bot in scheduled] == [s3, s2, s1, s4]
    ended = home.json("list", "--state", "ended")
    assert [bot["id"] for bot in ended] == [a1, a2]
    both = home.json("list", "--state", "ended", "--state", "scheduled")
    assert [bot["id"] for bot in both] == [a1, a2, s3, s2, s1, s4]
    assert home.json("list", "--state", "staged") == []

    assert [bot["id"] for bot in home.json("list", "--limit", "2")] == [a1, a2]
    assert [bot["id"] for bot in home.json("list", "--limit", "0")] == [a1, a2, s3, s2, s1, s4]
    assert [bot["id"] for bot in home.json("list", "--state", "scheduled", "--limit", "1")] == [s3]

    human = home.ok("list").stdout
    for bot_id in (a1, s1):
        assert bot_id in human, f"{bot_id} missing from the human table:\n{human}"
    assert not re.search(r"\bmore\b", human, re.I), "no 'more' note when everything is shown"


def test_limit_defaults_to_100_and_says_more_exist(home):
    lines = "".join(
        json.dumps({"meeting_url": f"https://zoom.us/j/{n}", "join_at": f"2028-01-01T00:{n // 60:02d}:{n % 60:02d}Z"})
        + "\n"
        for n in range(105)
    )
    ids = home.ok("create", "--from", "-", input=lines).stdout.split()
    assert len(ids) == 105

    page = home.json("list")
    assert len(page) == 100, "--limit defaults to 100"
    assert [bot["id"] for bot in page] == ids[:100], "ordered by join_at"
    assert len(home.json("list", "--limit", "0")) == 105
    assert len(home.json("list", "--limit", "105")) == 105

    human = home.ok("list").stdout
    assert re.search(r"\bmore\b", human, re.I), f"human output must say more bots exist:\n{human[-500:]}"
    assert ids[99] in human and ids[100] not in human
    all_human = home.ok("list", "--limit", "0").stdout
    assert not re.search(r"\bmore\b", all_human, re.I)
    assert ids[104] in all_human
