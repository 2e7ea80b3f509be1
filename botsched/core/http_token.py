"""The bearer token of the HTTP API's TCP listener (SPEC §9): a file beside the database,
0600 in the daemon's private directory, written by ``botsched http token`` and read by the
daemon (``daemon/http/listen.py``). Stdlib only. The token itself is never logged.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from botsched.core.errors import InvalidInput
from botsched.core.paths import Paths, ensure_private_dir, refuse_foreign_file

TOKEN_FILE = "http.token"


def token_path(paths: Paths) -> Path:
    """Beside the database: the daemon's private (0700) directory."""
    return paths.database.parent / TOKEN_FILE


def read_token(path: Path) -> str | None:
    refuse_foreign_file(path)
    try:
        text = path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidInput(f"cannot read the HTTP token {path}: {exc}") from None
    return text or None


def ensure_token(path: Path) -> str:
    """The token, made (``secrets.token_urlsafe(32)``) if there is none yet."""
    return read_token(path) or rotate_token(path)


def rotate_token(path: Path) -> str:
    """A new token, written 0600 and swapped in atomically: the old one stops working."""
    refuse_foreign_file(path)
    token = secrets.token_urlsafe(32)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.write(fd, f"{token}\n".encode())
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(temporary, path)
    return token


def token_command(paths: Paths, rotate: bool) -> str:
    """``botsched http token [--rotate]``: what it prints (the directory is made private
    if the daemon never ran yet)."""
    path = token_path(paths)
    ensure_private_dir(path.parent)
    return rotate_token(path) if rotate else ensure_token(path)
