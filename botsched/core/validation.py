"""Input rules of SPEC §5 (meeting URL, bot name, metadata, dedup key, bot ids).

Pure functions raising ``InvalidInput``; the daemon applies them to every request, so a
script talking to the socket directly gets the same answers as the CLI.
"""

from __future__ import annotations

import re

from botsched.core.errors import InvalidInput, NotFound

MAX_URL_LEN = 2048
MAX_NAME_LEN = 100
MAX_METADATA_PAIRS = 50
MAX_METADATA_BYTES = 16 * 1024
MAX_DEDUP_LEN = 256

_BOT_ID = re.compile(r"^bot_[A-Za-z0-9]{16}$")
#: scheme://[userinfo@]host[:port][/path?query#fragment] -- what ``urlsplit`` accepts, at a
#: fraction of its cost (bulk creates check 100,000 URLs).
_HTTP_URL = re.compile(
    r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*):(?://(?:[^/?#@]*@)?(?P<host>\[[0-9A-Fa-f:.]+\]|[^/?#:@\[\]]*)"
    r"(?::(?P<port>[^/?#]*))?)?(?:[/?#].*)?",
    re.DOTALL,
)
_BAD_URL_CHARS = re.compile(r"[\s\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def validate_meeting_url(url: object) -> str:
    if not isinstance(url, str) or not url:
        raise InvalidInput("a meeting URL is required (positional or --meeting-url)")
    if len(url) > MAX_URL_LEN:
        raise InvalidInput(f"meeting URL is too long ({len(url)} characters, at most {MAX_URL_LEN})")
    if _BAD_URL_CHARS.search(url):
        raise InvalidInput("meeting URL must not contain whitespace or control characters")
    match = _HTTP_URL.fullmatch(url)
    if match is None or match["scheme"].lower() not in ("http", "https"):
        raise InvalidInput(f"bad meeting URL {url!r}: it must start with http:// or https://")
    if not match["host"]:
        raise InvalidInput(f"bad meeting URL {url!r}: it has no host")
    port = match["port"]
    if port and (not (port.isascii() and port.isdigit()) or int(port) > 65535):
        raise InvalidInput(f"bad meeting URL {url!r}: bad port {port!r}")
    return url


def url_host(url: str) -> str | None:
    """The host of an http(s) URL, lower-cased, or None."""
    match = _HTTP_URL.fullmatch(url)
    return match["host"].lower() if match and match["host"] else None


def validate_bot_name(name: object) -> str:
    if not isinstance(name, str) or not name:
        raise InvalidInput("bot name must be 1 to 100 printable characters")
    if len(name) > MAX_NAME_LEN:
        raise InvalidInput(f"bot name is too long ({len(name)} characters, at most {MAX_NAME_LEN})")
    if not name.isprintable():
        raise InvalidInput("bot name must contain only printable characters")
    return name


def validate_metadata(metadata: object) -> dict[str, str]:
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata must be an object of string keys and values")
    if len(metadata) > MAX_METADATA_PAIRS:
        raise InvalidInput(f"metadata has {len(metadata)} pairs, at most {MAX_METADATA_PAIRS}")
    for key, value in metadata.items():
        if not isinstance(key, str) or not key or not isinstance(value, str):
            raise InvalidInput("metadata keys and values must be strings (keys non-empty)")
    try:
        size = sum(len(key.encode()) + len(value.encode()) for key, value in metadata.items())
    except UnicodeEncodeError:
        raise InvalidInput("metadata must be valid Unicode text (no lone surrogates)") from None
    if size > MAX_METADATA_BYTES:
        raise InvalidInput(f"metadata is {size} bytes, at most {MAX_METADATA_BYTES} (16 KiB)")
    return metadata


def parse_metadata_pairs(pairs: list[str]) -> dict[str, str]:
    """``--metadata KEY=VALUE`` options -> a dict (a later key overrides an earlier one)."""
    result: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"bad --metadata {pair!r}: use KEY=VALUE")
        result[key] = value
    return validate_metadata(result)


def validate_dedup_key(key: object) -> str | None:
    if key is None:
        return None
    if not isinstance(key, str) or not key or len(key) > MAX_DEDUP_LEN or not key.isprintable():
        raise InvalidInput(f"dedup key must be 1 to {MAX_DEDUP_LEN} printable characters")
    return key


def validate_bot_id(bot_id: object) -> str:
    """Ids look like ``bot_`` + 16 letters/digits; anything else names no bot (exit 3, like docker)."""
    if not isinstance(bot_id, str) or not _BOT_ID.fullmatch(bot_id):
        raise NotFound(f"no such bot: {bot_id!r} (ids look like bot_HiXYgjyeWmTVOaII)")
    return bot_id
