"""``config.toml``: the known keys with their types and defaults, loading and validation.

Reading uses stdlib ``tomllib``; ``tomli_w`` is imported only when writing.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botsched.core.errors import InvalidInput

Check = Callable[[Any], bool]


class Key:
    """One known configuration key. (Plain classes here: ``dataclasses`` is slow to import
    and this module is on the CLI's start-up path.)"""

    __slots__ = ("check", "default", "help", "kind")

    def __init__(self, default: Any, kind: str, check: Check, help: str) -> None:
        self.default = default
        self.kind = kind  # completes "must be ...": "a boolean", "one of simulate, command", ...
        self.check = check
        self.help = help


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 <= value < 10**9


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _string(value: Any) -> bool:
    return isinstance(value, str)


def _bool(value: Any) -> bool:
    return isinstance(value, bool)


def _argv(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


def _env_table(value: Any) -> bool:
    return isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())


def _zone_name(value: Any) -> bool:
    if not isinstance(value, str):
        return False
    if not value:
        return True
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return False
    return True


def _bot_name(value: Any) -> bool:
    return isinstance(value, str) and 0 < len(value) <= 100 and value.isprintable()


def _store_url(value: Any) -> bool:
    return isinstance(value, str) and (value == "" or value.startswith(POSTGRES_SCHEMES))


#: URL schemes that select the PostgreSQL store (cluster mode, SPEC §10).
POSTGRES_SCHEMES = ("postgresql://", "postgres://")
#: Set, it overrides ``store.url`` (the daemon reads it at start-up).
STORE_URL_ENV = "BOTSCHED_STORE_URL"


def redact_url(url: str) -> str:
    """``url`` with its password (if any, also a ``?password=`` parameter) shown as ``***``:
    a URL may be shown, a password never."""
    from urllib.parse import urlsplit

    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return MASK  # not parseable: show nothing of it
    netloc = parts.netloc
    if password:
        netloc = f"{parts.username or ''}:{MASK}@{netloc.rpartition('@')[2]}"
    query = re.sub(r"(^|&)password=[^&]*", rf"\1password={MASK}", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing secret in it
    return (
        f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
        + (f"#{parts.fragment}" if parts.fragment else "")
    )


def store_url(config: Config) -> str:
    """Which store the daemon opens: ``BOTSCHED_STORE_URL``, else ``store.url``; empty is SQLite."""
    return os.environ.get(STORE_URL_ENV) or str(config["store.url"])


def _seconds_list(value: Any) -> bool:
    return isinstance(value, list) and len(value) <= 100 and all(_number(item) for item in value)


def _hook_tables(value: Any) -> bool:
    """``[[hooks]]``: tables with ``command`` (a non-empty argv) and optional ``states``."""
    from botsched.core.states import ALL_STATES

    return isinstance(value, list) and all(
        isinstance(table, dict)
        and set(table) <= {"command", "states"}
        and isinstance(table.get("command"), list)
        and bool(table["command"])
        and all(isinstance(arg, str) and arg for arg in table["command"])
        and isinstance(table.get("states", []), list)
        and all(state in ALL_STATES for state in table.get("states", []))
        for table in value
    )
def _listen(value: Any) -> bool:
    """``HOST:PORT`` or ``[V6]:PORT``, or empty (no TCP listener)."""
    if not isinstance(value, str):
        return False
    host, _, port = value.rpartition(":")
    return not value or (bool(host.strip("[]")) and port.isdigit() and int(port) <= 65535)


RUNNER_KINDS = ("simulate", "command")
#: Keys whose values never appear in output, errors or logs (API tokens live here).
SECRET_KEYS = frozenset({"runner.env"})
#: ``runner.env.NAME``: one variable of ``[runner.env]`` (``config set runner.env.BOT_API_TOKEN ...``).
ENV_PREFIX = "runner.env."
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
MASK = "***"

SCHEMA: dict[str, Key] = {
    "daemon.autostart": Key(True, "a boolean (true or false)", _bool, "start the daemon when a command needs it"),
    "defaults.bot_name": Key("Meeting Bot", "a bot name (1-100 printable characters)", _bot_name, "name of new bots"),
    "defaults.timezone": Key(
        "", "an IANA time zone name (like Europe/Berlin) or empty", _zone_name, "zone of --join-at without offset"
    ),
    "scheduler.stage_lead_seconds": Key(120, "a number of seconds >= 0", _number, "stage this long before join_at"),
    "scheduler.misfire_grace_seconds": Key(300, "a number of seconds >= 0", _number, "join late at most this much"),
    "runner.kind": Key("simulate", "one of simulate, command", lambda v: v in RUNNER_KINDS, "what joins"),
    "runner.command": Key([], "a list of strings (an argv)", _argv, "runner argv for kind = command"),
    "runner.env": Key({}, "a table of string values", _env_table, "extra environment for the runner"),
    "runner.simulate_join_seconds": Key(1, "a number of seconds >= 0", _number, "simulated time to get in"),
    "runner.simulate_duration_seconds": Key(60, "a number of seconds >= 0", _number, "simulated meeting length"),
    "runner.max_in_meeting_seconds": Key(
        4 * 3600, "a number of seconds >= 0", _number, "then the bot is told to leave"
    ),
    "runner.leave_grace_seconds": Key(30, "a number of seconds >= 0", _number, "then a leaving runner is killed"),
    "runner.max_concurrent": Key(50, "a whole number > 0", _positive_int, "at most this many runners at once"),
    "calendar.email": Key("", "a string", _string, "your address, to skip declined events"),
    "store.url": Key(
        "", "empty (the local SQLite file) or a postgresql:// URL", _store_url,
        "a shared PostgreSQL database: cluster mode (BOTSCHED_STORE_URL overrides)",
    ),
    "cluster.agent_name": Key("", "a string (empty: the host name)", _string, "this agent's name in cluster mode"),
    "cluster.lease_seconds": Key(
        15, "a number of seconds > 0", lambda v: _number(v) and v > 0, "an agent silent this long loses its bots"
    ),
    "cluster.outage_grace_seconds": Key(
        60, "a number of seconds >= 0", _number,
        "while the database is down this long, staged bots still join from the agent's clock",
    ),
    # SPEC section 8: webhook retries (seconds after each failed attempt, +-20 %) and [[hooks]]
    "webhooks.retry_seconds": Key(
        [5, 300, 1800, 7200, 18000, 36000, 36000], "a list of numbers of seconds >= 0", _seconds_list,
        "retry a failed webhook delivery after these delays, then give up",
    ),
    "hooks": Key(
        [], "a list of [[hooks]] tables with command = [argv...] and optional states = [...]", _hook_tables,
        "local commands run on matching state changes",
    ),
    "hooks_timeout_seconds": Key(30, "a number of seconds >= 0", _number, "then a hook is killed"),
    "calendar.min_every_seconds": Key(
        60, "a number of seconds > 0", lambda v: _number(v) and v > 0, "calendar add --every at least this"
    ),
    "http.listen": Key("", "HOST:PORT (like 127.0.0.1:8787) or empty", _listen,
                       "also serve the HTTP API on TCP (restart the daemon to apply)"),
    "http.tls_cert": Key("", "a file path or empty", _string, "TLS certificate for http.listen"),
    "http.tls_key": Key("", "a file path or empty", _string, "TLS private key for http.listen"),
}


def defaults() -> dict[str, Any]:
    return {key: copy.deepcopy(spec.default) for key, spec in SCHEMA.items()}


def _flatten(table: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in table.items():
        key = f"{prefix}{name}"
        if isinstance(value, dict) and key not in SCHEMA:
            flat.update(_flatten(value, key + "."))
        else:
            flat[key] = value
    return flat


def env_name(key: str) -> str | None:
    """``runner.env.NAME`` -> ``NAME`` (checked: letters, digits, ``_``); other keys -> None."""
    if not key.startswith(ENV_PREFIX):
        return None
    name = key[len(ENV_PREFIX):]
    if not _ENV_NAME.fullmatch(name):
        raise InvalidInput(
            f"bad config key {key!r}: after runner.env. comes an environment variable name "
            "(letters, digits and _, not starting with a digit), e.g. runner.env.BOT_API_TOKEN"
        )
    return name


def masked(key: str, value: Any) -> Any:
    """What output may show of ``key``'s value: secrets (``[runner.env]``) as ``***``."""
    if key in SECRET_KEYS and isinstance(value, dict):
        return {name: MASK for name in value}
    if key.startswith(ENV_PREFIX):
        return MASK
    if key == "store.url" and isinstance(value, str):
        return redact_url(value)
    return value


def validate_value(key: str, value: Any) -> Any:
    spec = SCHEMA.get(key)
    if spec is None:
        raise InvalidInput(f"unknown config key {key!r} (known: {', '.join(SCHEMA)}, runner.env.NAME)")
    if not spec.check(value):
        shown = "what was given (its values are not shown: they may be secrets)" if key in SECRET_KEYS else repr(value)
        if key == "store.url" and isinstance(value, str):
            shown = repr(redact_url(value))  # a URL's password is never shown
        raise InvalidInput(f"config {key} must be {spec.kind}, not {shown}")
    return value


class Config:
    """The effective configuration: defaults overlaid with ``config.toml`` and environment."""

    __slots__ = ("values",)

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values

    def __getitem__(self, key: str) -> Any:
        return self.values[key]

    def replace(self, fresh: Config) -> None:
        """``reload``: take ``fresh``'s values in place. The daemon's service, scheduler and
        runner all hold this one object, so this single assignment updates every reader."""
        self.values = fresh.values

    def get(self, key: str) -> Any:
        """``config get KEY``: a known key's value, or one ``runner.env.NAME`` variable."""
        name = env_name(key)
        if name is None:
            validate_value(key, SCHEMA[key].default) if key in SCHEMA else validate_value(key, None)
            return self.values[key]
        env = self.values["runner.env"]
        if name not in env:
            raise InvalidInput(f"{key} is not set (set it with: botsched config set {key} VALUE)")
        return env[name]

    @property
    def stage_lead_us(self) -> int:
        return int(self.values["scheduler.stage_lead_seconds"] * 1_000_000)

    @property
    def misfire_grace_us(self) -> int:
        return int(self.values["scheduler.misfire_grace_seconds"] * 1_000_000)

    @property
    def autostart(self) -> bool:
        return bool(self.values["daemon.autostart"]) and os.environ.get("BOTSCHED_NO_AUTOSTART", "") in ("", "0")

    def as_dict(self, mask_secrets: bool = True) -> dict[str, Any]:
        """All keys with their values; ``[runner.env]`` values (API tokens) masked as ``***``."""
        values = copy.deepcopy(self.values)
        if mask_secrets:
            values["runner.env"] = {name: "***" for name in values["runner.env"]}
            values["store.url"] = redact_url(values["store.url"])
        return values


def read_file(path: Path) -> dict[str, Any]:
    """The file's own settings, flattened (empty when it does not exist)."""
    try:
        with open(path, "rb") as handle:
            raw = tomllib.load(handle)
    except FileNotFoundError:
        return {}
    except tomllib.TOMLDecodeError as exc:
        raise InvalidInput(f"{path}: not valid TOML: {exc}") from None
    except OSError as exc:
        raise InvalidInput(f"{path}: cannot read: {exc.strerror}") from None
    return _flatten(raw)


def load(path: Path) -> Config:
    values = defaults()
    for key, value in read_file(path).items():
        try:
            values[key] = validate_value(key, value)
        except InvalidInput as exc:
            raise InvalidInput(f"{path}: {exc.message}") from None
    return Config(values)


def parse_cli_value(key: str, text: str) -> Any:
    """``config set KEY VALUE``: VALUE as a TOML value (``true``, ``90``, ``["a", "b"]``), else a
    string. A ``runner.env.NAME`` variable is always a string (``123`` stays ``"123"``)."""
    name = env_name(key)
    spec = SCHEMA.get(key)
    if spec is None and name is None:
        validate_value(key, text)
    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        value = text
    if name is not None:
        return value if isinstance(value, str) else text
    if spec is not None and isinstance(spec.default, str) and not isinstance(value, str):
        value = text
    return validate_value(key, value)


def write_value(path: Path, key: str, value: Any) -> None:
    """Set one key in the file, keeping the others; written atomically, private (0600)."""
    import tomli_w

    flat = read_file(path)
    name = env_name(key)
    if name is not None:  # one variable: the others of [runner.env] stay
        env = flat.get("runner.env", {})
        key, value = "runner.env", {**(env if isinstance(env, dict) else {}), name: value}
        validate_value(key, value)
    flat[key] = value
    nested: dict[str, Any] = {}
    for name, item in flat.items():
        section, _, leaf = name.rpartition(".")
        table = nested
        for part in section.split(".") if section else []:
            table = table.setdefault(part, {})
        table[leaf] = item
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_suffix(".toml.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        tomli_w.dump(nested, handle)
    os.replace(tmp, path)
