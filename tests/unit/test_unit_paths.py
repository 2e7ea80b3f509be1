"""Unit tests of botsched.core.paths: where things live (SPEC §2)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from botsched.core.errors import InvalidInput
from botsched.core.paths import check_socket_path, ensure_private_dir, resolve_paths


def test_botsched_home_holds_everything(tmp_path: Path) -> None:
    paths = resolve_paths({"BOTSCHED_HOME": str(tmp_path)})
    assert paths.database == tmp_path / "botsched.db"
    assert paths.socket == tmp_path / "botsched.sock"
    assert paths.config == tmp_path / "config.toml"
    assert paths.log == tmp_path / "botsched.log"
    assert paths.pid == tmp_path / "daemon.pid"


def test_relative_botsched_home_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    paths = resolve_paths({"BOTSCHED_HOME": "rel"})
    assert paths.database == tmp_path / "rel" / "botsched.db"
    assert paths.socket.is_absolute()


def test_without_home_uses_platform_dirs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for key, sub in [("XDG_DATA_HOME", "data"), ("XDG_CONFIG_HOME", "config"), ("XDG_STATE_HOME", "state"),
                     ("XDG_RUNTIME_DIR", "run")]:
        monkeypatch.setenv(key, str(tmp_path / sub))
    paths = resolve_paths({})
    assert paths.database.name == "botsched.db"
    assert paths.config.name == "config.toml"
    assert str(paths.database).startswith(str(tmp_path / "data"))
    assert str(paths.config).startswith(str(tmp_path / "config"))
    assert str(paths.socket).startswith(str(tmp_path / "run"))
    assert paths.socket.parent == paths.pid.parent
    assert len({paths.database, paths.socket, paths.config, paths.log, paths.pid}) == 5


def test_ensure_private_dir_creates_private_and_never_chmods_what_exists(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b"
    old_umask = os.umask(0)
    try:
        ensure_private_dir(target)
    finally:
        os.umask(old_umask)
    assert target.is_dir()
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o700
    assert stat.S_IMODE(os.stat(target.parent).st_mode) == 0o700  # a parent it created, too
    os.chmod(target, 0o755)  # readable by others, writable by no one else: used as it is
    ensure_private_dir(target)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o755
    for mode in (0o1777, 0o777, 0o770):  # writable by others: refused, and left as it was
        os.chmod(target, mode)
        with pytest.raises(InvalidInput, match="writable by"):
            ensure_private_dir(target)
        assert stat.S_IMODE(os.stat(target).st_mode) == mode


def test_ensure_private_dir_refuses_symlink_and_file(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    link = tmp_path / "link"
    link.symlink_to(real)
    with pytest.raises(InvalidInput):
        ensure_private_dir(link)
    afile = tmp_path / "file"
    afile.write_text("x")
    with pytest.raises((InvalidInput, FileExistsError)):
        ensure_private_dir(afile)


def test_socket_path_length(tmp_path: Path) -> None:
    check_socket_path(Path("/tmp/botsched.sock"))
    check_socket_path(Path("/" + "a" * 106))  # 107 bytes: fits
    with pytest.raises(InvalidInput, match="BOTSCHED_HOME"):
        check_socket_path(Path("/" + "a" * 107))
    with pytest.raises(InvalidInput):
        check_socket_path(Path("/" + "é" * 60))  # counted in bytes, not characters
