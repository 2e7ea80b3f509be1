"""Unit tests of botsched.core.config: defaults, config.toml loading and validation, config set."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from botsched.core import config
from botsched.core.config import Config, defaults, load, parse_cli_value, read_file, validate_value, write_value
from botsched.core.errors import InvalidInput

DOCUMENTED_DEFAULTS = {
    "daemon.autostart": True,
    "defaults.bot_name": "Meeting Bot",
    "scheduler.stage_lead_seconds": 120,
    "scheduler.misfire_grace_seconds": 300,
    "runner.kind": "simulate",
    "runner.simulate_join_seconds": 1,
    "runner.simulate_duration_seconds": 60,
}


def test_documented_defaults() -> None:
    values = defaults()
    for key, value in DOCUMENTED_DEFAULTS.items():
        assert values[key] == value, key
    assert values["runner.command"] == []
    assert values["runner.env"] == {}
    assert values["defaults.timezone"] == ""
    assert set(values) == set(config.SCHEMA)
    # every default passes its own check
    for key, value in values.items():
        assert validate_value(key, value) == value


def test_defaults_are_fresh_copies() -> None:
    first = defaults()
    first["runner.command"].append("evil")
    first["runner.env"]["X"] = "y"
    assert defaults()["runner.command"] == []
    assert defaults()["runner.env"] == {}


def test_config_properties_and_as_dict_copy() -> None:
    cfg = Config({**defaults(), "scheduler.stage_lead_seconds": 0.5, "scheduler.misfire_grace_seconds": 2})
    assert cfg.stage_lead_us == 500_000
    assert cfg.misfire_grace_us == 2_000_000
    assert cfg["defaults.bot_name"] == "Meeting Bot"
    snapshot = cfg.as_dict()
    snapshot["runner.command"].append("x")
    assert cfg["runner.command"] == []


def test_load_missing_file_gives_defaults(tmp_path: Path) -> None:
    assert load(tmp_path / "nope.toml").values == defaults()
    assert read_file(tmp_path / "nope.toml") == {}


def test_load_toml_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(
        """
[daemon]
autostart = false

[defaults]
bot_name = "Recorder"
timezone = "Europe/Berlin"

[scheduler]
stage_lead_seconds = 30
misfire_grace_seconds = 12.5

[runner]
kind = "command"
command = ["/usr/bin/bot", "--flag"]
max_concurrent = 3

[runner.env]
API_KEY = "secret"
"WITH.DOT" = "ok"
""",
        encoding="utf-8",
    )
    cfg = load(path)
    assert cfg["daemon.autostart"] is False
    assert cfg["defaults.bot_name"] == "Recorder"
    assert cfg["defaults.timezone"] == "Europe/Berlin"
    assert cfg.stage_lead_us == 30_000_000
    assert cfg.misfire_grace_us == 12_500_000
    assert cfg["runner.kind"] == "command"
    assert cfg["runner.command"] == ["/usr/bin/bot", "--flag"]
    assert cfg["runner.max_concurrent"] == 3
    assert cfg["runner.env"] == {"API_KEY": "secret", "WITH.DOT": "ok"}
    # untouched keys keep their defaults
    assert cfg["runner.simulate_duration_seconds"] == 60


@pytest.mark.parametrize(
    "body, needle",
    [
        ("[scheduler]\nstage_lead_secs = 5\n", "unknown config key"),
        ("[nope]\nx = 1\n", "unknown config key"),
        ("bot_name = 'top level'\n", "unknown config key"),
        ("runner = 5\n", "unknown config key"),
        ("[scheduler]\nstage_lead_seconds = 'soon'\n", "scheduler.stage_lead_seconds"),
        ("[scheduler]\nstage_lead_seconds = -1\n", "scheduler.stage_lead_seconds"),
        ("[scheduler]\nstage_lead_seconds = true\n", "scheduler.stage_lead_seconds"),
        ("[scheduler]\nmisfire_grace_seconds = nan\n", "scheduler.misfire_grace_seconds"),
        ("[daemon]\nautostart = 'yes'\n", "daemon.autostart"),
        ("[daemon]\nautostart = 1\n", "daemon.autostart"),
        ("[runner]\nkind = 'docker'\n", "runner.kind"),
        ("[runner]\ncommand = '/usr/bin/bot --flag'\n", "runner.command"),
        ("[runner]\ncommand = ['/usr/bin/bot', 1]\n", "runner.command"),
        ("[runner.env]\nN = 1\n", "runner.env"),
        ("[runner]\nmax_concurrent = 0\n", "runner.max_concurrent"),
        ("[runner]\nmax_concurrent = 2.5\n", "runner.max_concurrent"),
        ("[defaults]\nbot_name = ''\n", "defaults.bot_name"),
        ('[defaults]\nbot_name = "tab\\there"\n', "defaults.bot_name"),  # TOML \t escape
        ("[defaults.bot_name]\nx = 'y'\n", "defaults.bot_name"),
        ("this is not toml", "not valid TOML"),
    ],
)
def test_bad_config_files_are_invalid_input_naming_the_problem(tmp_path: Path, body: str, needle: str) -> None:
    path = tmp_path / "config.toml"
    path.write_text(body, encoding="utf-8")
    with pytest.raises(InvalidInput) as info:
        load(path)
    assert needle in info.value.message
    assert str(path) in info.value.message
    assert info.value.exit_code == 2


@pytest.mark.parametrize("key", ["scheduler.stage_lead_seconds", "scheduler.misfire_grace_seconds"])
def test_infinite_durations_are_refused(tmp_path: Path, key: str) -> None:
    # TOML has `inf`; an infinite lead or grace cannot be turned into microseconds
    # (Config.stage_lead_us raises OverflowError), so it must be refused up front.
    section, leaf = key.split(".")
    path = tmp_path / "config.toml"
    path.write_text(f"[{section}]\n{leaf} = inf\n", encoding="utf-8")
    with pytest.raises(InvalidInput):
        load(path)
    with pytest.raises(InvalidInput):
        parse_cli_value(key, "inf")


def test_unknown_time_zone_is_refused_by_config() -> None:
    # SPEC §5: defaults.timezone is "an IANA name". An unknown one is accepted by
    # `config set` today and only fails later, on every create with --join-at.
    with pytest.raises(InvalidInput):
        parse_cli_value("defaults.timezone", "Mars/Olympus_Mons")


def test_unreadable_config_is_invalid_input(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.mkdir()  # a directory where the file should be
    with pytest.raises(InvalidInput):
        load(path)


@pytest.mark.parametrize(
    "key, text, expected",
    [
        ("daemon.autostart", "false", False),
        ("daemon.autostart", "true", True),
        ("scheduler.stage_lead_seconds", "90", 90),
        ("scheduler.stage_lead_seconds", "1.5", 1.5),
        ("scheduler.stage_lead_seconds", "0", 0),
        ("runner.kind", "command", "command"),
        ("runner.kind", '"simulate"', "simulate"),
        ("runner.command", '["/usr/bin/bot", "--x"]', ["/usr/bin/bot", "--x"]),
        ("runner.env", '{A = "b"}', {"A": "b"}),
        ("runner.max_concurrent", "7", 7),
        # string keys keep the text even when it looks like another TOML value
        ("defaults.bot_name", "true", "true"),
        ("defaults.bot_name", "42", "42"),
        ("defaults.bot_name", "Note Taker", "Note Taker"),
        ("defaults.timezone", "Europe/Berlin", "Europe/Berlin"),
        ("calendar.email", "me@example.com", "me@example.com"),
    ],
)
def test_parse_cli_value(key: str, text: str, expected: object) -> None:
    value = parse_cli_value(key, text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    "key, text",
    [
        ("no.such_key", "1"),
        ("scheduler", "1"),
        ("daemon.autostart", "maybe"),
        ("daemon.autostart", "1"),
        ("scheduler.stage_lead_seconds", "-5"),
        ("scheduler.stage_lead_seconds", "soon"),
        ("runner.kind", "docker"),
        ("runner.command", "/usr/bin/bot"),
        ("runner.max_concurrent", "0"),
        ("runner.max_concurrent", "2.5"),
        ("defaults.bot_name", "x" * 101),
    ],
)
def test_parse_cli_value_refuses(key: str, text: str) -> None:
    with pytest.raises(InvalidInput):
        parse_cli_value(key, text)


def test_write_value_round_trip_private_and_keeps_other_keys(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "config.toml"
    write_value(path, "scheduler.stage_lead_seconds", 45)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(path.parent).st_mode) == 0o700
    write_value(path, "defaults.bot_name", "Recorder")
    write_value(path, "runner.command", ["/bin/bot", "--a"])
    write_value(path, "runner.env", {"TOKEN": "t", "X.Y": "z"})
    write_value(path, "scheduler.stage_lead_seconds", 50)  # overwrite keeps the others
    cfg = load(path)
    assert cfg["scheduler.stage_lead_seconds"] == 50
    assert cfg["defaults.bot_name"] == "Recorder"
    assert cfg["runner.command"] == ["/bin/bot", "--a"]
    assert cfg["runner.env"] == {"TOKEN": "t", "X.Y": "z"}
    # it is real, nested TOML
    raw = tomllib.loads(path.read_text(encoding="utf-8"))
    assert raw["scheduler"]["stage_lead_seconds"] == 50
    assert raw["runner"]["env"] == {"TOKEN": "t", "X.Y": "z"}
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert not path.with_suffix(".toml.tmp").exists()


def test_write_value_makes_a_world_readable_file_private(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[defaults]\nbot_name = 'Old'\n", encoding="utf-8")
    os.chmod(path, 0o644)
    write_value(path, "daemon.autostart", False)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    cfg = load(path)
    assert cfg["defaults.bot_name"] == "Old"
    assert cfg["daemon.autostart"] is False


def test_autostart_honours_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    on = Config(defaults())
    off = Config({**defaults(), "daemon.autostart": False})
    monkeypatch.delenv("BOTSCHED_NO_AUTOSTART", raising=False)
    assert on.autostart is True
    assert off.autostart is False
    for value, expected in [("1", False), ("yes", False), ("true", False), ("0", True), ("", True)]:
        monkeypatch.setenv("BOTSCHED_NO_AUTOSTART", value)
        assert on.autostart is expected, value
        assert off.autostart is False


def test_write_value_refuses_to_clobber_a_broken_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("[scheduler\nstage_lead_seconds = 5\n", encoding="utf-8")
    before = path.read_bytes()
    with pytest.raises(InvalidInput):
        write_value(path, "daemon.autostart", False)
    assert path.read_bytes() == before
