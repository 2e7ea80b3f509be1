"""``botsched config ...``: where config.toml is, what it says, and changing one key."""

from __future__ import annotations

import json
from pathlib import Path

from botsched.cli.output import changed, emit_json, say, warn
from botsched.core.errors import BotschedError
from botsched.core.protocol import Op


def _config_path() -> Path:
    from botsched.core.paths import resolve_paths

    return resolve_paths().config


def path() -> None:
    say(str(_config_path()))


def show(as_json: bool) -> None:
    from botsched.core import config

    values = config.load(_config_path()).as_dict()
    if as_json:
        emit_json(values)
        return
    for key, value in values.items():
        say(f"{key} = {json.dumps(value)}")


def get(key: str) -> None:
    from botsched.core import config

    value = config.masked(key, config.load(_config_path()).get(key))  # secrets as ***, like config show
    say(value if isinstance(value, str) else json.dumps(value))


def set_value(key: str, value: str) -> None:
    """Validate and write one key, then reload a running daemon (a failed reload is a
    warning: the file was saved)."""
    from botsched.client.connection import connect, is_running
    from botsched.core import config
    from botsched.core.paths import resolve_paths

    parsed = config.parse_cli_value(key, value)
    config.write_value(_config_path(), key, parsed)
    changed(f"set {key}")
    say(f"{key} = {json.dumps(config.masked(key, parsed))}")
    if is_running(resolve_paths()):
        try:
            with connect(autostart=False) as conn:
                conn.call(Op.RELOAD)
        except BotschedError as exc:
            warn([f"saved, but the running daemon did not reload: {exc.message}"])
