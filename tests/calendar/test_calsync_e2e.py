"""End to end: the installed ``botsched calendar sync`` against a real daemon.

The fixtures' dates are in March 2030; ``shifted`` moves them by whole weeks so that
their first Monday is a few days from the real now (weekdays and series stay intact).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from calsync_helpers import ANCHOR, Home, actions_by, calendar, shift_days, shifted

from botsched.core.timeparse import format_instant, to_us

UTC = UTC
BERLIN = ZoneInfo("Europe/Berlin")
GOOGLE_BOTS = {"Sprint planning", "Customer call: ACME pricing", "Team standup"}


def fixture_day(day_of_anchor: int) -> date:
    """The real date of the fixture's ANCHOR + ``day_of_anchor`` once shifted."""
    return ANCHOR + timedelta(days=shift_days() + day_of_anchor)


def utc_text(day: date, hour: int, minute: int, zone: ZoneInfo) -> str:
    local = datetime(day.year, day.month, day.day, hour, minute, tzinfo=zone)
    return format_instant(to_us(local), 0)


def test_creates_a_bot_per_meeting_and_skips_the_rest(home: Home) -> None:
    report = home.sync(shifted("google.ics"))
    assert report["dry_run"] is False
    assert report["counts"] == {"create": 4, "reschedule": 0, "cancel": 0, "unchanged": 0, "skipped": 5,
                                "failed": 0}
    skipped = {(a["summary"], a["reason"]) for a in actions_by(report, "skipped")}
    assert skipped == {("Lunch with Sam", "no meeting URL"), ("Team standup", "event is cancelled"),
                       ("Budget review", "declined by me@example.com"), ("Design crit", "event is cancelled"),
                       ("Company offsite", "all-day event")}
    bots = home.by_key()
    assert len(bots) == 4 and {b["metadata"]["calendar_summary"] for b in bots.values()} == GOOGLE_BOTS
    created = {a["key"]: a for a in actions_by(report, "create")}
    for key, bot in bots.items():
        assert bot["state"] == "scheduled" and bot["bot_name"] == "Meeting Bot"
        assert bot["id"] == created[key]["bot_id"] and bot["join_at"] == created[key]["join_at"]
    planning = bots["ical:5k2j3h4g5f6d7s8a9q0w1e2r3t@google.com"]
    assert planning["join_at"] == utc_text(fixture_day(0), 10, 0, BERLIN)
    assert planning["meeting_url"] == "https://meet.google.com/abc-defg-hij"
    assert planning["metadata"] == {"calendar_uid": "5k2j3h4g5f6d7s8a9q0w1e2r3t@google.com",
                                    "calendar_summary": "Sprint planning"}
    call = bots["ical:1q2w3e4r5t6y7u8i9o0p@google.com"]
    assert call["meeting_url"] == "https://us02web.zoom.us/j/87654321098?pwd=QWxhZGRpbjpvcGVu"
    standup = utc_text(fixture_day(0), 9, 15, BERLIN)
    assert bots[f"ical:st4ndup5eries6@google.com@{standup}"]["join_at"] == standup


def test_second_sync_changes_nothing(home: Home) -> None:
    text = shifted("google.ics")
    home.sync(text)
    before = home.by_key()
    report = home.sync(text)
    assert report["counts"] == {"create": 0, "reschedule": 0, "cancel": 0, "unchanged": 4, "skipped": 5,
                                "failed": 0}
    assert {a["bot_id"] for a in actions_by(report, "unchanged")} == {b["id"] for b in before.values()}
    assert home.by_key() == before
    human = home.run("calendar", "sync", "-", "--days", "60", input=text)
    assert human.returncode == 0 and human.stderr == ""
    assert "4 unchanged, 5 skipped (1 without a meeting URL)." in human.stdout


def test_moved_event_reschedules_its_bot(home: Home) -> None:
    text = shifted("google.ics")
    home.sync(text)
    key = "ical:1q2w3e4r5t6y7u8i9o0p@google.com"
    before = home.by_key()[key]
    day = fixture_day(1).strftime("%Y%m%d")
    moved = text.replace(f"DTSTART:{day}T150000Z", f"DTSTART:{day}T163000Z")
    moved = moved.replace(f"DTEND:{day}T154500Z", f"DTEND:{day}T171500Z")
    report = home.sync(moved)
    assert report["counts"]["reschedule"] == 1 and report["counts"]["unchanged"] == 3
    [action] = actions_by(report, "reschedule")
    new_join = f"{fixture_day(1).isoformat()}T16:30:00Z"
    assert (action["key"], action["bot_id"], action["join_at"]) == (key, before["id"], new_join)
    assert action["previous_join_at"] == before["join_at"]
    after = home.by_key()[key]
    assert (after["id"], after["join_at"], after["state"]) == (before["id"], new_join, "scheduled")


def test_removed_and_cancelled_events_cancel_their_bots(home: Home) -> None:
    text = shifted("google.ics")
    home.sync(text)
    bots = home.by_key()
    planning = bots["ical:5k2j3h4g5f6d7s8a9q0w1e2r3t@google.com"]
    call = bots["ical:1q2w3e4r5t6y7u8i9o0p@google.com"]
    events = text.split("BEGIN:VEVENT")
    [planning_event] = [e for e in events if "SUMMARY:Sprint planning" in e]
    edited = text.replace("BEGIN:VEVENT" + planning_event, "")  # deleted from the calendar
    edited = edited.replace("SEQUENCE:1\nSTATUS:CONFIRMED\nSUMMARY:Customer call", "SEQUENCE:2\nSTATUS:CANCELLED\n"
                            "SUMMARY:Customer call")
    report = home.sync(edited)
    cancels = {a["bot_id"]: a["reason"] for a in actions_by(report, "cancel")}
    assert cancels == {planning["id"]: "event removed from the calendar",
                       call["id"]: "event is cancelled"}
    assert set(home.by_key()) == set(bots) - {planning["deduplication_key"], call["deduplication_key"]}
    gone = home.run("show", planning["id"])
    assert gone.returncode == 3
    assert home.sync(edited)["counts"]["cancel"] == 0


def test_dry_run_changes_nothing(home: Home) -> None:
    text = shifted("google.ics")
    report = home.sync(text, "--dry-run")
    assert report["dry_run"] is True and report["counts"]["create"] == 4
    assert all(a["bot_id"] is None for a in actions_by(report, "create"))
    assert home.bots() == []
    home.sync(text)
    before = home.by_key()
    day = fixture_day(1).strftime("%Y%m%d")
    edited = text.replace(f"DTSTART:{day}T150000Z", f"DTSTART:{day}T160000Z").replace(
        f"DTEND:{day}T154500Z", f"DTEND:{day}T164500Z")
    edited = edited.replace("X-GOOGLE-CONFERENCE:https://meet.google.com/sta-ndup-now\n", "")  # standup: no link
    report = home.sync(edited, "--dry-run")
    counts = report["counts"]
    assert (counts["reschedule"], counts["cancel"], counts["create"]) == (1, 2, 0)
    assert home.by_key() == before
    human = home.run("calendar", "sync", "-", "--days", "60", "--dry-run", input=edited)
    assert human.returncode == 0
    assert "Dry run: 1 to reschedule, 2 to cancel, 1 unchanged, 5 skipped" in human.stdout
    assert "reschedule" in human.stdout and "Customer call: ACME pricing" in human.stdout
    assert home.by_key() == before


def test_outlook_export_from_a_file_with_windows_zones(home: Home) -> None:
    path = home.path / "outlook export.ics"
    path.write_text(shifted("outlook.ics"), newline="")
    result = home.run("calendar", "sync", str(path), "--json", "--days", "30", "--bot-name", "Notetaker",
                      "--join-offset", "-1m")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["counts"]["create"] == 3
    bots = {b["metadata"]["calendar_summary"]: b for b in home.bots()}
    minute = timedelta(minutes=1)

    def joins(day: int, hour: int, minute_: int, zone: str) -> str:
        local = datetime.combine(fixture_day(day), datetime.min.time()).replace(hour=hour, minute=minute_,
                                                                                tzinfo=ZoneInfo(zone))
        return format_instant(to_us(local - minute), 0)

    assert bots["Quarterly review"]["join_at"] == joins(2, 14, 0, "Europe/Berlin")
    assert bots["Partner sync (Fabrikam)"]["join_at"] == joins(3, 9, 0, "America/Los_Angeles")
    assert bots["Vendor demo"]["join_at"] == joins(4, 8, 30, "Europe/Berlin")
    assert bots["Quarterly review"]["meeting_url"].startswith("https://teams.microsoft.com/l/meetup-join/")
    assert {b["bot_name"] for b in bots.values()} == {"Notetaker"}
    assert all(re.fullmatch(r"ical:040000008200E00074C5B7101A82E008[0-9A-F]+", b["deduplication_key"])
               for b in bots.values())


def test_recurring_series_then_another_calendar(home: Home) -> None:
    report = home.sync(shifted("recurring.ics"))
    assert report["counts"]["create"] == 5 and report["counts"]["skipped"] == 1
    bots = home.by_key()
    assert all(k.startswith("ical:weekly-sync-7f3a@example.com@") for k in bots)
    moved_key = f"ical:weekly-sync-7f3a@example.com@{utc_text(fixture_day(7), 9, 30, BERLIN)}"
    assert bots[moved_key]["join_at"] == utc_text(fixture_day(8), 14, 0, BERLIN)
    # One calendar per home (docs/calendar.md): the file synced is the whole truth, so
    # syncing a different calendar replaces the first one's scheduled bots.
    apple = home.sync(shifted("apple.ics"))
    assert (apple["counts"]["create"], apple["counts"]["cancel"]) == (3, 5)
    assert {b["metadata"]["calendar_summary"] for b in home.bots()} == {"Design review", "Call with Jordan",
                                                                         "Webex AMA"}


def test_bots_already_staged_are_left_alone(make_home: Callable[[str], Home]) -> None:
    home = make_home("\n[scheduler]\nstage_lead_seconds = 5184000\n")  # 60 days: staged at once
    text = shifted("google.ics")
    home.sync(text)
    deadline = time.monotonic() + 10
    while {b["state"] for b in home.bots()} != {"staged"} and time.monotonic() < deadline:
        time.sleep(0.05)
    before = home.by_key()
    assert {b["state"] for b in before.values()} == {"staged"}
    day = fixture_day(1).strftime("%Y%m%d")
    [planning] = [e for e in text.split("BEGIN:VEVENT") if "SUMMARY:Sprint planning" in e]
    edited = text.replace("BEGIN:VEVENT" + planning, "").replace(
        f"DTSTART:{day}T150000Z", f"DTSTART:{day}T160000Z").replace(f"DTEND:{day}T154500Z", f"DTEND:{day}T164500Z")
    report = home.sync(edited)
    counts = report["counts"]
    assert (counts["create"], counts["reschedule"], counts["cancel"], counts["failed"]) == (0, 0, 0, 0)
    left = {a["summary"]: a["reason"] for a in actions_by(report, "skipped") if "left alone" in (a["reason"] or "")}
    assert left == {"Sprint planning": "event removed from the calendar, but the bot is staged: left alone",
                    "Customer call: ACME pricing": "event moved, but the bot is staged: left alone"}
    assert home.by_key() == before


def test_a_bot_that_already_ran_is_not_recreated(make_home: Callable[[str], Home]) -> None:
    home = make_home("\n[scheduler]\nstage_lead_seconds = 1\n[runner]\nsimulate_join_seconds = 0.1\n"
                     "simulate_duration_seconds = 0.2\n")
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1, seconds=6)
    stamp = start.strftime("%Y%m%dT%H%M%SZ")
    end = (start + timedelta(hours=1)).strftime("%Y%m%dT%H%M%SZ")
    text = calendar(f"UID:soon@example.com\nSUMMARY:Soon\nDTSTART:{stamp}\nDTEND:{end}\nURL:https://zoom.us/j/42")
    first = home.sync(text, "--join-offset", "-1h")  # joins in ~6 s
    [created] = actions_by(first, "create")
    waited = home.run("wait", created["bot_id"], "--timeout", "30")
    assert waited.returncode == 0, waited.stderr
    report = home.sync(text)  # the same occurrence now wants a bot at its start, an hour from now
    [action] = report["actions"]
    assert (action["action"], action["bot_id"], action["reason"]) == ("unchanged", created["bot_id"],
                                                                      "bot already ran (ended)")
    assert [b["state"] for b in home.bots()] == ["ended"]


def test_bad_input_is_one_error_line_and_exit_2(home: Home) -> None:
    cases = [
        (["calendar", "sync", str(home.path / "missing.ics")], None, "cannot read"),
        (["calendar", "sync", str(home.path)], None, "cannot read"),
        (["calendar", "sync", "-"], "just some text\n", "not an iCalendar file"),
        (["calendar", "sync", "-"], "BEGIN:VCALENDAR\nbroken line\nEND:VCALENDAR\n", "not a valid iCalendar file"),
        (["calendar", "sync", "-", "--join-offset", "soon"], calendar(), "bad duration"),
        (["calendar", "sync", "-", "--days", "0"], calendar(), "--days"),
        (["calendar", "sync", "-", "--days", "many"], calendar(), ""),
        (["calendar", "sync", "-", "--nope"], calendar(), ""),
    ]
    for args, stdin, message in cases:
        result = home.run(*args, input=stdin)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stdout == ""
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], (args, lines)
    assert home.run("daemon", "status").returncode == 5  # bad input never started a daemon


def test_help_has_an_example(home: Home) -> None:
    result = home.run("calendar", "sync", "--help")
    assert result.returncode == 0 and "Example: botsched calendar sync" in result.stdout
    assert "--join-offset" in result.stdout and "--dry-run" in result.stdout
