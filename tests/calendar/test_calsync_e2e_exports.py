"""End to end with the real CLI: a file with unreadable events still syncs the rest."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from calsync_helpers import Home, actions_by, calendar, shifted


def test_unreadable_events_are_skipped_and_the_rest_is_synced(home: Home) -> None:
    report = home.sync(shifted("thunderbird_one_bad_property.ics"))
    assert report["counts"]["create"] == 6 and report["counts"]["failed"] == 0
    skipped = {a["summary"]: a["reason"] for a in actions_by(report, "skipped")}
    assert set(skipped) == {"Partner sync", "Customer call (Pune)", "Retro"}
    assert len(home.bots()) == 6
    human = home.run("calendar", "sync", "-", "--days", "60", input=shifted("thunderbird_one_bad_property.ics"))
    assert human.returncode == 0
    assert "warning: " in human.stderr and "3 events could not be read" in human.stderr
    assert "6 unchanged" in human.stdout and "Retro" in human.stdout


def test_nothing_readable_is_exit_2_and_changes_nothing(home: Home) -> None:
    home.sync(shifted("thunderbird_one_bad_property.ics"))
    before = home.by_key()
    day = (datetime.now(UTC) + timedelta(days=3)).strftime("%Y%m%d")
    broken = calendar(f"UID:a\nSUMMARY:A\nDTSTART:{day}T100000Z\nDTSTART:{day}T110000Z\nURL:https://zoom.us/j/1",
                      f"UID:b\nSUMMARY:B\nDTSTART;TZID=:{day}T120000\nURL:https://zoom.us/j/2")
    result = home.run("calendar", "sync", "-", input=broken)
    assert result.returncode == 2 and result.stdout == ""
    [line] = result.stderr.splitlines()
    assert line.startswith("error: stdin: no event could be read") and "line 8" in line
    assert home.by_key() == before
