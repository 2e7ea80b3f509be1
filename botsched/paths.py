"""Where things live (SPEC §2): one directory under ``BOTSCHED_HOME``, else platformdirs.

Also creates the private directories: 0700, owned by us, not a symlink.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from botsched.errors import InvalidInput

APP = "botsched"
#: Linux ``sun_path`` is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


@dataclass(frozen=True)
class Paths:
    database: Path
    socket: Path
    config: Path
    log: Path
    pid: Path

    @property
    def runner_logs(self) -> Path:
        """Per-bot runner output lives beside the log file."""
        return self.log.parent / "runner-logs"


def resolve_paths(environ: dict[str, str] | None = None) -> Paths:
    env = os.environ if environ is None else environ
    home = env.get("BOTSCHED_HOME")
    if home:
        root = Path(home).expanduser().absolute()
        return Paths(
            database=root / "botsched.db",
            socket=root / "botsched.sock",
            config=root / "config.toml",
            log=root / "botsched.log",
            pid=root / "daemon.pid",
        )
    import warnings

    import platformdirs

    with warnings.catch_warnings():  # platformdirs warns when XDG_RUNTIME_DIR is unset
        warnings.simplefilter("ignore")
        runtime = Path(platformdirs.user_runtime_dir(APP))
    return Paths(
        database=Path(platformdirs.user_data_dir(APP)) / "botsched.db",
        socket=runtime / "botsched.sock",
        config=Path(platformdirs.user_config_dir(APP)) / "config.toml",
        log=Path(platformdirs.user_log_dir(APP)) / "botsched.log",
        pid=runtime / "daemon.pid",
    )


def ensure_private_dir(path: Path) -> None:
    """Create ``path`` (and parents) and make sure it is ours, a real directory, and 0700."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise InvalidInput(f"{path} is not a directory (a symlink or a file is in the way)")
    if info.st_uid != os.getuid():
        raise InvalidInput(f"{path} belongs to uid {info.st_uid}, not to you: refusing to use it")
    if stat.S_IMODE(info.st_mode) & 0o077:
        os.chmod(path, 0o700)


def check_socket_path(path: Path) -> None:
    size = len(os.fsencode(str(path)))
    if size > MAX_SOCKET_PATH:
        raise InvalidInput(
            f"socket path {path} is {size} bytes, longer than AF_UNIX allows ({MAX_SOCKET_PATH}): "
            "set BOTSCHED_HOME to a shorter directory"
        )
