"""``botsched create``: output modes, URL forms, metadata, dedup keys, time input (SPEC §5)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

import pytest

from tests.support.home import ID_RE, assert_clean_error
from tests.support.times import UTC, in_s, parse_z

FAR = "2028-05-01T12:00:00Z"


def test_quiet_prints_only_the_id(module_home):
    home = module_home
    result = home.ok("create", "-q", "https://meet.google.com/abc-defg-hij", "--join-at", FAR)
    assert ID_RE.match(result.stdout.rstrip("\n")), repr(result.stdout)
    assert result.stdout.count("\n") == 1 and result.stdout.endswith("\n")
    assert result.stderr == ""
    long_form = home.ok("create", "--quiet", "https://meet.google.com/abc-defg-hij", "--join-at", FAR)
    assert ID_RE.match(long_form.stdout.rstrip("\n")), repr(long_form.stdout)


def test_json_prints_only_json(module_home):
    home = module_home
    result = home.ok("create", "--json", "https://meet.google.com/abc-defg-hij", "--join-at", FAR)
    bot = json.loads(result.stdout)  # nothing else on stdout, or this fails
    assert ID_RE.match(bot["id"])
    assert bot["join_at"] == FAR
    human = home.ok("create", "https://meet.google.com/abc-defg-hij", "--join-at", FAR).stdout
    with pytest.raises(ValueError):
        json.loads(human)
    assert "bot_" in human


def test_positional_and_option_url(module_home):
    home = module_home
    by_arg = home.show(home.create("https://zoom.us/j/111", "--join-at", FAR))
    by_opt = home.show(home.create("--meeting-url", "https://zoom.us/j/222", "--join-at", FAR))
    assert by_arg["meeting_url"] == "https://zoom.us/j/111"
    assert by_opt["meeting_url"] == "https://zoom.us/j/222"


def test_metadata_repeated_and_bot_name(module_home):
    home = module_home
    bot = home.json(
        "create", "https://teams.microsoft.com/l/meetup-join/x", "--join-at", FAR,
        "--metadata", "team=sales", "--metadata", "owner=ana", "--metadata", "query=a=b",
        "--bot-name", "Notes – Ünïcode",
    )
    assert bot["metadata"] == {"team": "sales", "owner": "ana", "query": "a=b"}
    assert bot["bot_name"] == "Notes – Ünïcode"
    assert home.show(bot["id"]) == bot


def test_dedup_key_conflict_then_free_after_end(module_home):
    home = module_home
    first = home.json("create", "https://zoom.us/j/1", "--join-at", in_s(3.0), "--dedup-key", "cal:evt-1")
    assert first["deduplication_key"] == "cal:evt-1"
    dup = home.run("create", "https://zoom.us/j/1", "--join-at", FAR, "--dedup-key", "cal:evt-1")
    err = assert_clean_error(dup, 4)
    assert first["id"] in err, f"the conflict must name the first bot: {err}"
    # an unrelated key is fine meanwhile
    home.create("https://zoom.us/j/1", "--join-at", FAR, "--dedup-key", "cal:evt-2")
    home.ok("wait", first["id"], "--timeout", "15")
    assert home.show(first["id"])["state"] == "ended"
    again = home.json("create", "https://zoom.us/j/1", "--join-at", FAR, "--dedup-key", "cal:evt-1")
    assert again["id"] != first["id"]
    assert again["deduplication_key"] == "cal:evt-1"


def test_dedup_key_free_after_cancel(module_home):
    home = module_home
    first = home.create("https://zoom.us/j/1", "--join-at", FAR, "--dedup-key", "k")
    assert_clean_error(home.run("create", "https://zoom.us/j/1", "--join-at", FAR, "--dedup-key", "k"), 4)
    home.ok("cancel", first)
    home.create("https://zoom.us/j/1", "--join-at", FAR, "--dedup-key", "k")


# -- time input ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("2028-01-15T10:30:00Z", "2028-01-15T10:30:00Z"),
        ("2028-06-16T16:24:00+0000", "2028-06-16T16:24:00Z"),
        ("2028-06-16T18:24:00.250+02:00", "2028-06-16T16:24:00.250Z"),
        ("2028-06-16T16:24:00.123456Z", "2028-06-16T16:24:00.123456Z"),
    ],
)
def test_iso_forms(module_home, given, stored):
    assert module_home.json("create", "https://zoom.us/j/1", "--join-at", given)["join_at"] == stored


def test_naive_local_time_uses_tz(module_home):
    home = module_home
    berlin = {"TZ": "Europe/Berlin"}
    summer = home.json("create", "https://zoom.us/j/1", "--join-at", "2028-07-01T12:00:00", env=berlin)
    assert summer["join_at"] == "2028-07-01T10:00:00Z", "CEST is UTC+2"
    winter = home.json("create", "https://zoom.us/j/1", "--join-at", "2028-01-10T12:00:00.500", env=berlin)
    assert winter["join_at"] == "2028-01-10T11:00:00.500Z", "CET is UTC+1"
    tokyo = home.json("create", "https://zoom.us/j/1", "--join-at", "2028-01-10T12:00:00", env={"TZ": "Asia/Tokyo"})
    assert tokyo["join_at"] == "2028-01-10T03:00:00Z"


@pytest.mark.parametrize(("given", "seconds"), [("+1h30m", 5400), ("+90s", 90), ("+10m", 600), ("+2h", 7200),
                                                 ("+1d", 86400)])
def test_relative_times(module_home, given, seconds):
    home = module_home
    before = datetime.now(UTC)
    bot = home.json("create", "https://zoom.us/j/1", "--join-at", given)
    after = datetime.now(UTC)
    join = parse_z(bot["join_at"])
    low = before + timedelta(seconds=seconds) - timedelta(milliseconds=1)
    high = after + timedelta(seconds=seconds)
    assert low <= join <= high, (low, join, high)
    assert bot["state"] == "scheduled"


def test_join_sooner_than_stage_lead_warns_but_succeeds(make_home):
    home = make_home({"scheduler": {"stage_lead_seconds": 60}})
    result = home.run("create", "-q", "https://zoom.us/j/1", "--join-at", "+20s")
    assert result.returncode == 0, result.stderr
    assert ID_RE.match(result.stdout.strip()), result.stdout
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert warnings, f"expected a warning: line on stderr, got {result.stderr!r}"
    assert "error:" not in result.stderr
    assert "Traceback" not in result.stderr
    # with --json the warning still goes to stderr, and stdout stays pure JSON
    result = home.run("create", "--json", "https://zoom.us/j/1", "--join-at", in_s(30))
    assert result.returncode == 0, result.stderr
    json.loads(result.stdout)
    assert any(line.startswith("warning:") for line in result.stderr.splitlines())


def test_limits_are_inclusive(module_home):
    """The largest valid inputs of SPEC §5 are accepted: 2,048-char URL, 100-char name, 50 pairs."""
    home = module_home
    url = "https://zoom.us/j/" + "7" * (2048 - len("https://zoom.us/j/"))
    pairs = [f"--metadata=k{i}=v{i}" for i in range(50)]
    bot = home.json("create", url, "--bot-name", "n" * 100, *pairs, "--join-at", FAR)
    assert bot["meeting_url"] == url and len(url) == 2048
    assert bot["bot_name"] == "n" * 100
    assert bot["metadata"] == {f"k{i}": f"v{i}" for i in range(50)}
    single = home.json("create", "http://a", "--bot-name", "x", "--join-at", FAR)
    assert single["meeting_url"] == "http://a" and single["bot_name"] == "x"


def test_naive_time_prefers_the_configured_zone(make_home):
    home = make_home({"defaults": {"timezone": "America/New_York"}})
    bot = home.json("create", "https://zoom.us/j/1", "--join-at", "2028-07-01T12:00:00", env={"TZ": "Europe/Berlin"})
    assert bot["join_at"] == "2028-07-01T16:00:00Z", "defaults.timezone wins over TZ (EDT is UTC-4)"
