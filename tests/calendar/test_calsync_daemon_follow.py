"""End to end: calendars the daemon follows (``calendar add|list|remove|sync NAME``).

The real daemon (``Home``) polls a real HTTP server on loopback whose feed the test
changes, and a real Radicale CalDAV server; the test only waits for the bots to follow.
The homes allow ``--every 1s`` (``calendar.min_every_seconds = 1`` in conftest).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from calsync_helpers import Home, calendar
from calsync_servers import PASSWORD, USER, Radicale, Server

from botsched.core.timeparse import format_instant
from tests.support.home import assert_clean_error, wait_until

ZOOM = "https://zoom.us/j/555"
HOUR = 3600


def at(hours_from_now: int) -> tuple[str, str]:
    """(iCalendar UTC start, the bot's join_at) a whole number of hours ahead (on the hour)."""
    base = (int(time.time()) // HOUR + hours_from_now) * HOUR
    text = format_instant(base * 1_000_000, 0)
    return text.replace("-", "").replace(":", ""), text


def event(uid: str, start: str, summary: str | None = None, link: str = ZOOM) -> str:
    return f"UID:{uid}\nSUMMARY:{summary or uid}\nDTSTART:{start}\nDURATION:PT30M\nLOCATION:{link}"


def bots_of(home: Home, name: str) -> dict[str, dict[str, Any]]:
    prefix = f"ical/{name}:"
    return {key[len(prefix):]: bot for key, bot in home.by_key().items() if key and key.startswith(prefix)}


def listed(home: Home, name: str) -> dict[str, Any]:
    found: dict[str, Any] = {c["name"]: c for c in home.json("calendar", "list")}[name]
    return found


@pytest.fixture
def server() -> Iterator[Server]:
    one = Server()
    yield one
    one.close()


def test_a_followed_feed_creates_moves_and_cancels_bots_by_itself(home: Home, server: Server) -> None:
    (a_ics, a_join), (b_ics, b_join), (c_ics, c_join), (moved_ics, moved_join) = at(30), at(40), at(50), at(60)
    server.feed.body = calendar(event("a", a_ics), event("b", b_ics)).encode()
    added = home.json("calendar", "add", server.url(), "--name", "work", "--every", "1s", "--bot-name", "Feed Bot")
    assert added["calendar"]["name"] == "work" and added["sync"]["counts"]["create"] == 2
    bots = bots_of(home, "work")
    assert {k: (b["join_at"], b["bot_name"], b["meeting_url"]) for k, b in bots.items()} == {
        "a": (a_join, "Feed Bot", ZOOM), "b": (b_join, "Feed Bot", ZOOM)}
    assert bots["a"]["metadata"]["calendar"] == "work"
    assert "if-none-match" not in server.feed.requests[0]

    # the next polls send the ETag and get 304s: nothing changes
    wait_until(lambda: sum(r.get("if-none-match") == '"v1"' for r in server.feed.requests) >= 2, 10,
               what="polls with If-None-Match")
    assert {k: (b["id"], b["join_at"]) for k, b in bots_of(home, "work").items()} == {
        k: (b["id"], b["join_at"]) for k, b in bots.items()}

    # a moved, b removed, c added: the daemon follows within a poll or two
    server.feed.body = calendar(event("a", moved_ics), event("c", c_ics)).encode()
    server.feed.etag = '"v2"'

    def followed() -> dict[str, dict[str, Any]] | None:
        now = bots_of(home, "work")
        return now if set(now) == {"a", "c"} and now["a"]["join_at"] == moved_join else None

    after = wait_until(followed, 15, what="the bots to follow the feed")
    assert after["a"]["id"] == bots["a"]["id"], "a moved meeting is a reschedule, not a new bot"
    assert after["c"]["join_at"] == c_join and after["c"]["bot_name"] == "Feed Bot"
    assert "no such bot" in assert_clean_error(home.run("show", bots["b"]["id"]), 3)
    row = listed(home, "work")
    assert row["status"] == "ok" and row["bots"] == 2 and row["last_success"] and row["last_error"] is None
    assert row["source"] == f"http://127.0.0.1:{server.port}/…/basic.ics"  # the secret address shortened

    # the calendar and its state survive a restart; polling goes on
    home.stop()
    assert listed(home, "work")["added"] == row["added"]
    server.feed.body = calendar(event("c", c_ics)).encode()
    server.feed.etag = '"v3"'
    wait_until(lambda: set(bots_of(home, "work")) == {"c"}, 15, what="a poll after the restart")


def test_failures_keep_the_bots_and_show_in_list_in_one_line(home: Home, server: Server, tmp_path: Path) -> None:
    (a_ics, _) = at(30)
    server.feed.body = calendar(event("a", a_ics)).encode()
    home.ok("calendar", "add", server.url(), "--name", "feed", "--every", "1m")
    before = bots_of(home, "feed")
    assert list(before) == ["a"]

    cases = [
        (dict(status=500), "the server answered 500"),
        (dict(status=404), "the server answered 404"),
        (dict(status=200, body=b"<html>login</html>", etag='"html"'), "the server sent no calendar"),
    ]
    for failures, (change, words) in enumerate(cases, 1):
        for name, value in change.items():
            setattr(server.feed, name, value)
        result = home.run("calendar", "sync", "feed")
        assert words in assert_clean_error(result, 2)
        row = listed(home, "feed")
        assert row["status"] == "failing" and words in row["last_error"] and "\n" not in row["last_error"]
        assert row["failures"] == failures and row["last_success"] is not None
        assert bots_of(home, "feed") == before, "a failed poll must not touch the bots"
    human = home.ok("calendar", "list").stdout
    assert "failing (3x" in human and "the server sent no calendar" in human
    row = listed(home, "feed")
    waited = (datetime.fromisoformat(row["next_poll"]) - datetime.fromisoformat(row["last_error_at"])).total_seconds()
    assert 235 <= waited <= 245, f"the 3rd failure in a row waits 4 periods, not {waited}s"

    server.close()  # unreachable
    assert "Connection refused" in assert_clean_error(home.run("calendar", "sync", "feed"), 2)
    assert bots_of(home, "feed") == before

    # a file that is not a calendar: followed anyway, the error shown; a file sync's bots untouched
    junk = tmp_path / "junk.ics"
    junk.write_text("this is not a calendar\n")
    added = home.run("calendar", "add", str(junk), "--json")
    assert added.returncode == 0 and "warning: the first sync failed" in added.stderr
    assert "not an iCalendar file" in listed(home, "junk")["last_error"]
    assert bots_of(home, "feed") == before


def test_remove_cancels_only_that_calendars_scheduled_bots_and_says_how_many(
        home: Home, server: Server, tmp_path: Path) -> None:
    (a_ics, _), (b_ics, _), (c_ics, _) = at(30), at(31), at(32)
    server.feed.body = calendar(event("a", a_ics), event("b", b_ics)).encode()
    mine = tmp_path / "team.ics"
    mine.write_text(calendar(event("t1", c_ics)))
    home.ok("calendar", "add", server.url(), "--name", "work")
    home.ok("calendar", "add", str(mine))  # named "team" after the file
    home.sync(calendar(event("f1", c_ics)))  # a file sync's own bot (key ical:f1)
    assert set(bots_of(home, "work")) == {"a", "b"} and set(bots_of(home, "team")) == {"t1"}

    out = home.ok("calendar", "remove", "work").stdout
    assert "Removed work: cancelled 2 scheduled bot(s)." in out
    assert bots_of(home, "work") == {} and set(bots_of(home, "team")) == {"t1"} and "ical:f1" in home.by_key()
    assert [c["name"] for c in home.json("calendar", "list")] == ["team"]
    assert [r["name"] for r in home.json("calendar", "sync")] == ["team"]  # no NAME: every followed calendar
    assert_clean_error(home.run("calendar", "remove", "work"), 3)
    # the feed is no longer polled
    polled = len(server.feed.requests)
    time.sleep(1.5)
    assert len(server.feed.requests) == polled


@pytest.mark.parametrize(("args", "code", "words"), [
    (["calendar", "add"], 2, "SOURCE"),
    (["calendar", "add", "ftp://example.com/x.ics"], 2, "unsupported calendar source"),
    (["calendar", "add", "http://example.com/x.ics"], 2, "plain http:// is only for this machine"),
    (["calendar", "add", "https://me:pw@example.com/x.ics"], 2, "a password in the URL"),
    (["calendar", "add", "/no/such/file.ics"], 2, "no such file"),
    (["calendar", "add", "https://example.com/x.ics", "--name", "Work Cal"], 2, "bad calendar name"),
    (["calendar", "add", "https://example.com/x.ics", "--every", "soon"], 2, "duration"),
    (["calendar", "add", "https://example.com/x.ics", "--every", "8d"], 2, "--every must be between"),
    (["calendar", "add", "https://example.com/x.ics", "--days", "0"], 2, "--days"),
    (["calendar", "add", "caldav+https://dav.example.com/cal/", "--password-env", "PW"], 2, "needs a user"),
    (["calendar", "add", "https://example.com/x.ics", "--password-file", "/no/such"], 2, "--password-file"),
    (["calendar", "remove", "nosuch"], 3, "no followed calendar named 'nosuch'"),
    (["calendar", "sync", "nosuch"], 3, "no followed calendar named 'nosuch'"),
    (["calendar", "sync", "nosuch", "--days", "3"], 2, "--days is a setting of the followed calendar"),
])
def test_bad_input_is_one_error_line_with_the_documented_code(home: Home, args: list[str], code: int,
                                                              words: str) -> None:
    assert words in assert_clean_error(home.run(*args), code)


def test_following_twice_is_refused(home: Home, tmp_path: Path) -> None:
    (a_ics, _) = at(30)
    path = tmp_path / "work.ics"
    path.write_text(calendar(event("a", a_ics)))
    home.ok("calendar", "add", str(path))
    assert "already followed" in assert_clean_error(home.run("calendar", "add", str(path)), 4)
    assert "already followed as 'work'" in assert_clean_error(
        home.run("calendar", "add", str(path), "--name", "other"), 4)
    assert len(bots_of(home, "work")) == 1 and bots_of(home, "other") == {}


# -- CalDAV (a real Radicale) -----------------------------------------------------------


@pytest.fixture(scope="module")
def radicale(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Radicale]:
    pytest.importorskip("radicale")
    pytest.importorskip("caldav")
    one = Radicale(tmp_path_factory.mktemp("radicale"))
    yield one
    one.stop()


def ics(uid: str, start: str, summary: str) -> str:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//tests//EN\r\nBEGIN:VEVENT\r\n"
            f"UID:{uid}\r\nDTSTAMP:20300301T000000Z\r\nDTSTART:{start}\r\nDURATION:PT30M\r\n"
            f"SUMMARY:{summary}\r\nLOCATION:https://meet.google.com/abc-defg-hij\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")


def test_a_caldav_calendar_followed_through_radicale(home: Home, radicale: Radicale) -> None:
    (s_ics, s_join), (r_ics, _), (moved_ics, moved_join), (n_ics, n_join) = at(30), at(40), at(45), at(50)
    with radicale.client() as client:
        collection = client.principal().make_calendar(name="team", cal_id="team-follow")
        standup = collection.save_event(ics("standup-1", s_ics, "Standup"))
        collection.save_event(ics("review-2", r_ics, "Review"))
        url = "caldav+" + str(collection.url)
        added = home.json("calendar", "add", url, "--name", "team", "--every", "1s", "--caldav-user", USER,
                          "--password-env", "TEAM_DAV_PW", env={"TEAM_DAV_PW": PASSWORD})  # (starts the daemon)
        assert added["sync"]["counts"]["create"] == 2, added
        assert bots_of(home, "team")["standup-1"]["join_at"] == s_join

        standup.data = ics("standup-1", moved_ics, "Standup (later)")
        standup.save()
        collection.event_by_uid("review-2").delete()
        collection.save_event(ics("retro-3", n_ics, "Retro"))

        def followed() -> dict[str, Any] | None:
            now = bots_of(home, "team")
            return now if set(now) == {"standup-1", "retro-3"} and now["standup-1"]["join_at"] == moved_join else None

        after = wait_until(followed, 15, what="the bots to follow the CalDAV collection")
        assert after["retro-3"]["join_at"] == n_join
    row = listed(home, "team")
    assert row["status"] == "ok" and row["user"] == USER and row["password"] == "env TEAM_DAV_PW"
    everything = home.ok("calendar", "list", "--json").stdout + home.log.read_text()
    assert PASSWORD not in everything
    assert json.loads(home.ok("calendar", "list", "--json").stdout)[0]["source"].startswith("caldav+http://")


def test_a_slow_feed_never_holds_a_join_back(home: Home, server: Server) -> None:
    """The fetch runs in a worker thread: a feed that stalls for 3 s while a bot is due
    to join leaves the join on time."""
    (a_ics, _) = at(30)
    server.feed.body = calendar(event("a", a_ics)).encode()
    server.feed.stall_s = 3.0
    home.start()
    bot_id = home.create("https://zoom.us/j/999", "--join-at", "+2s")
    adding = home.popen("calendar", "add", server.url(), "--name", "slow", stdout=subprocess.DEVNULL,
                        stderr=subprocess.DEVNULL)
    def joined() -> dict[str, Any] | None:
        shown = home.show(bot_id)
        return shown if any(e["state"] == "joining" for e in shown["events"]) else None

    try:
        bot = wait_until(joined, 10, what="the join")
    finally:
        assert adding.wait(30) == 0
    joining = next(e for e in bot["events"] if e["state"] == "joining")
    late = (datetime.fromisoformat(joining["at"]) - datetime.fromisoformat(bot["join_at"])).total_seconds()
    assert 0 <= late < 0.25, f"joined {late:.3f}s late while a feed was being fetched"
    # (the stalling test server repeats its first bytes: the text is not a calendar, which is beside the point)
    assert len(server.feed.requests) == 1 and listed(home, "slow")["status"] != "new"


def test_sync_name_now_and_dry_run_on_a_followed_file(home: Home, tmp_path: Path) -> None:
    (a_ics, a_join), (moved_ics, moved_join) = at(30), at(35)
    path = tmp_path / "team.ics"
    path.write_text(calendar(event("a", a_ics)))
    home.ok("calendar", "add", str(path), "--every", "1h")
    bot = bots_of(home, "team")["a"]
    assert bot["join_at"] == a_join
    path.write_text(calendar(event("a", moved_ics)))
    planned = home.json("calendar", "sync", "team", "--dry-run")
    assert planned["name"] == "team" and planned["dry_run"] is True
    assert [(a["action"], a["join_at"], a["previous_join_at"]) for a in planned["actions"]] == [
        ("reschedule", moved_join, a_join)]
    assert bots_of(home, "team")["a"]["join_at"] == a_join, "a dry run changes nothing"
    out = home.ok("calendar", "sync", "team").stdout
    assert "rescheduled" in out and "1 rescheduled" in out
    assert bots_of(home, "team")["a"] == {**bot, "join_at": moved_join, "updated_at": bots_of(home, "team")["a"][
        "updated_at"]}
