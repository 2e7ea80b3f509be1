"""A bot's whole life on the simulate runner, and the exact JSON shape of SPEC §3."""

from __future__ import annotations

import re
from datetime import UTC, datetime

from tests.support.home import BOT_KEYS, ID_RE, MICRO_Z_RE, assert_clean_error
from tests.support.times import in_s, parse_z

MS_Z_RE = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$")


def assert_bot_shape(bot: dict) -> None:
    """SPEC §3, key by key."""
    assert set(bot) == BOT_KEYS, f"keys differ: extra {set(bot) - BOT_KEYS}, missing {BOT_KEYS - set(bot)}"
    assert ID_RE.match(bot["id"]), bot["id"]
    assert isinstance(bot["meeting_url"], str)
    assert isinstance(bot["bot_name"], str) and bot["bot_name"]
    assert isinstance(bot["state"], str)
    assert bot["join_at"] is None or (isinstance(bot["join_at"], str) and bot["join_at"].endswith("Z"))
    assert MICRO_Z_RE.match(bot["created_at"]), bot["created_at"]
    assert MICRO_Z_RE.match(bot["updated_at"]), bot["updated_at"]
    assert isinstance(bot["metadata"], dict)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in bot["metadata"].items())
    assert bot["deduplication_key"] is None or isinstance(bot["deduplication_key"], str)
    events = bot["events"]
    assert isinstance(events, list) and events
    for event in events:
        assert set(event) == {"state", "at", "detail"}, event
        assert MICRO_Z_RE.match(event["at"]), event
        assert event["detail"] is None or isinstance(event["detail"], str)
    times = [parse_z(e["at"]) for e in events]
    assert times == sorted(times), f"events not oldest first: {events}"
    assert bot["state"] == events[-1]["state"], "the state is the last event's state"
    assert parse_z(bot["created_at"]) == times[0], "the first event is the creation"
    assert parse_z(bot["updated_at"]) >= times[-1], "updated_at is not before the last change"


def test_scheduled_bot_lifecycle_and_join_precision(home):
    home.start()  # so that create is quick and the bot is queued well before its stage time
    join_at = in_s(2.5)
    created = home.json("create", "https://meet.google.com/gvy-zzra-ktd", "--join-at", join_at,
                        "--bot-name", "My scheduled bot", "--metadata", "team=sales")
    assert_bot_shape(created)
    assert created["state"] == "scheduled"
    assert created["join_at"] == join_at, "join_at keeps the precision it was given (milliseconds)"
    assert MS_Z_RE.match(created["join_at"])
    assert created["meeting_url"] == "https://meet.google.com/gvy-zzra-ktd"
    assert created["bot_name"] == "My scheduled bot"
    assert created["metadata"] == {"team": "sales"}
    assert created["deduplication_key"] is None
    assert [e["state"] for e in created["events"]] == ["scheduled"]
    assert created["events"][0]["detail"] is None
    bot_id = created["id"]

    # staged: about stage_lead (1 s) before join_at; wait answers as it happens
    staged = home.json("wait", bot_id, "--state", "staged", "--timeout", "10")
    assert_bot_shape(staged)
    assert staged["id"] == bot_id
    assert staged["state"] == "staged", "wait --state staged answers with the bot while it is staged"

    home.ok("wait", bot_id, "--timeout", "15")
    final = home.show(bot_id)
    assert_bot_shape(final)
    states = [e["state"] for e in final["events"]]
    assert states == ["scheduled", "staged", "joining", "joined_recording", "ended"], states
    assert final["state"] == "ended"
    assert final["join_at"] == join_at
    at = {e["state"]: parse_z(e["at"]) for e in final["events"]}
    join = parse_z(join_at)

    stage_offset = (join - at["staged"]).total_seconds()
    assert 0.7 <= stage_offset <= 1.5, f"staged {stage_offset:.3f}s before join_at, stage_lead is 1s"
    join_error_ms = (at["joining"] - join).total_seconds() * 1000
    print(f"\njoining happened {join_error_ms:+.3f} ms after join_at")
    assert -1.0 <= join_error_ms <= 50.0, f"joining {join_error_ms:+.3f} ms off join_at"
    in_meeting = (at["joined_recording"] - at["joining"]).total_seconds()
    assert 0.15 <= in_meeting <= 2.0, f"joined_recording {in_meeting:.3f}s after joining (simulate_join 0.2)"
    duration = (at["ended"] - at["joined_recording"]).total_seconds()
    assert 0.45 <= duration <= 2.5, f"ended {duration:.3f}s after joined_recording (simulate_duration 0.5)"


def test_ad_hoc_bot_lifecycle(home):
    created = home.json("create", "https://zoom.us/j/123456789")
    assert_bot_shape(created)
    assert created["join_at"] is None
    assert created["state"] in ("ready", "joining"), created["state"]
    assert created["events"][0]["state"] == "ready"
    assert created["bot_name"] == "Meeting Bot", "the default bot name"

    home.ok("wait", created["id"], "--timeout", "15")
    final = home.show(created["id"])
    assert_bot_shape(final)
    assert final["join_at"] is None
    assert [e["state"] for e in final["events"]] == ["ready", "joining", "joined_recording", "ended"]
    at = [parse_z(e["at"]) for e in final["events"]]
    assert (at[1] - at[0]).total_seconds() < 1.0, "an ad-hoc bot starts joining at once"


def test_show_human_output_and_unknown_bot(module_home):
    home = module_home
    bot_id = home.create("https://meet.google.com/abc-defg-hij", "--join-at", "2028-01-01T00:00:00Z")
    out = home.ok("show", bot_id).stdout
    assert bot_id in out and "scheduled" in out
    result = home.run("show", "bot_AAAAAAAAAAAAAAAA")
    assert_clean_error(result, 3)
    result = home.run("show", "bot_AAAAAAAAAAAAAAAA", "--json")
    assert_clean_error(result, 3)
    assert result.stdout == ""


def test_created_at_is_now(module_home):
    home = module_home
    before = datetime.now(UTC)
    bot = home.json("create", "https://x.example.com/m", "--join-at", "2028-01-01T00:00:00Z")
    after = datetime.now(UTC)
    created = parse_z(bot["created_at"])
    assert before.replace(microsecond=0) <= created <= after, (before, created, after)
