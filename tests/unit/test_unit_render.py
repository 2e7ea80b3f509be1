"""Unit tests of the human screens (botsched.cli.render): relative times rounded to the
nearest unit, the one display zone and its label on every screen, escaping, NO_COLOR."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from botsched.cli.render import time as clock

NOW = datetime(2026, 12, 1, 12, 0, 0, tzinfo=UTC).timestamp()


def _at(seconds: float) -> str:
    return datetime.fromtimestamp(NOW + seconds, UTC).isoformat().replace("+00:00", "Z")


@pytest.mark.parametrize(("offset", "shown"), [
    (179.9, "in 3 minutes"),  # --join-at +3m read a moment later: not the floored "2 minutes"
    (150, "in 3 minutes"),
    (149, "in 2 minutes"),
    (60, "in 1 minute"),
    (3, "in a few seconds"),
    (45, "in 45 seconds"),
    (-45, "45 seconds ago"),
    (-3 * 3600 - 1700, "3 hours ago"),
    (2 * 3600 - 1, "in 2 hours"),
    (86400 - 30, "in 1 day"),
    (9 * 86400, "in 1 week"),
    (400 * 86400, "in 1 year"),
])
def test_relative_rounds_to_the_nearest_unit(offset: float, shown: str) -> None:
    assert clock.relative(_at(offset), now=NOW) == shown


def test_zone_label_names_the_zone_as_it_is_at_that_moment() -> None:
    assert clock.zone_label(ZoneInfo("Asia/Tokyo"), NOW) == "JST"
    berlin = ZoneInfo("Europe/Berlin")
    assert clock.zone_label(berlin, NOW) == "CET"
    assert clock.zone_label(berlin, datetime(2026, 7, 1, tzinfo=UTC).timestamp()) == "CEST"


def test_local_and_event_times_in_a_zone() -> None:
    tokyo = ZoneInfo("Asia/Tokyo")
    assert clock.local("2026-12-01T08:15:00Z", tokyo, "%H:%M %Z") == "17:15 JST"
    assert clock.event_time("2026-12-01T08:15:00.250Z", tokyo) == "2026-12-01 17:15:00.250 JST"
    assert clock.local("9999-12-31T23:00:00Z", tokyo).endswith("UTC")  # off the calendar: kept in UTC


@pytest.fixture
def tokyo_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``defaults.timezone = "Asia/Tokyo"`` while the system says UTC: the user zone is Tokyo."""
    monkeypatch.setenv("BOTSCHED_HOME", str(tmp_path))
    monkeypatch.setenv("TZ", "UTC")
    monkeypatch.setenv("NO_COLOR", "1")
    monkeypatch.delenv("COLUMNS", raising=False)
    from botsched.core.paths import resolve_paths

    config = resolve_paths().config
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text('[defaults]\ntimezone = "Asia/Tokyo"\n')
    return tmp_path


def _bot(**fields: object) -> dict[str, object]:
    return {"id": "bot_AAAAAAAAAAAAAAAA", "state": "scheduled", "meeting_url": "https://zoom.us/j/1",
            "bot_name": "Notes", "join_at": "2030-12-01T08:15:00Z", "created_at": "2026-12-01T00:00:00Z",
            "metadata": {}, "events": [], **fields}


def test_list_and_calendar_sync_show_the_same_zone(tokyo_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The issue-11 bug: calendar sync said "08:15 (local)" while list said "17:15 (JST)"."""
    from botsched.calsync import Action
    from botsched.cli.render.bots import bot_table
    from botsched.cli.render.calendar import sync_table

    bot_table([_bot()], more=False)
    listing = capsys.readouterr().out
    assert "JOIN AT (JST)" in listing and "2030-12-01 17:15" in listing
    action = Action(action="create", key="ics:x", summary="Standup", start="2030-12-01T08:15:00Z",
                    join_at="2030-12-01T08:15:00Z", meeting_url="https://zoom.us/j/1", metadata={})
    sync_table([action], dry_run=True, days=14)
    synced = capsys.readouterr().out
    assert "WHEN (JST)" in synced and "17:15" in synced and "08:15" not in synced, synced


def test_screens_escape_what_a_terminal_would_obey(tokyo_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from botsched.cli.render.bots import bot_card, bot_table

    hostile = _bot(bot_name="pwn\x1b]0;title\x07", metadata={"k": "v\x9b2J"})
    bot_table([hostile], more=True)
    bot_card(hostile)
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "pwn\\x1b]0;title\\x07" in out and "v\\x9b2J" in out
    assert "more exist" in out and "--limit 0" in out


def test_the_card_offers_the_next_steps_for_its_state(tokyo_home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from botsched.cli.render.bots import bot_card

    bot_card(_bot())
    assert "botsched cancel bot_AAAAAAAAAAAAAAAA" in capsys.readouterr().out
    bot_card(_bot(state="joined_recording"))
    assert "botsched leave bot_AAAAAAAAAAAAAAAA" in capsys.readouterr().out
    bot_card(_bot(state="ended"))
    assert "botsched" not in capsys.readouterr().out.replace("bot_AAAA", "")


def test_a_broken_zone_setting_falls_back_to_utc_with_one_warning(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from botsched.cli import output

    monkeypatch.setenv("BOTSCHED_HOME", str(tmp_path))
    monkeypatch.setenv("TZ", "Not/AZone")
    monkeypatch.setattr(output, "_zone_warned", [])
    assert output.display_zone() is UTC
    assert output.display_zone() is UTC
    assert capsys.readouterr().err.count("warning:") == 1
