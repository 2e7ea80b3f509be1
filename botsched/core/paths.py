"""Where things live (SPEC §2): one directory under ``BOTSCHED_HOME``, else platformdirs.

Also creates the private directories: 0700, owned by us, not a symlink. A directory that
already exists is never chmod'ed: one that others can write to is refused instead.
"""

from __future__ import annotations

import os
import stat

from botsched.core.errors import InvalidInput

#: ``pathlib`` costs ~5 ms of start-up, and ``botsched create -q`` only needs the socket.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Mapping
    from pathlib import Path

APP = "botsched"
#: Linux ``sun_path`` is 108 bytes including the terminating NUL.
MAX_SOCKET_PATH = 107


class Paths:
    """Where each file lives. (A plain class: ``dataclasses`` is slow to import.)"""

    __slots__ = ("config", "database", "log", "pid", "socket")

    def __init__(self, database: Path, socket: Path, config: Path, log: Path, pid: Path) -> None:
        self.database = database
        self.socket = socket
        self.config = config
        self.log = log
        self.pid = pid

    @property
    def runner_logs(self) -> Path:
        """Per-bot runner output lives beside the log file."""
        return self.log.parent / "runner-logs"


def socket_path(environ: Mapping[str, str] | None = None) -> str:
    """Just the socket's path: all a client needs while the daemon is running."""
    env = os.environ if environ is None else environ
    home = env.get("BOTSCHED_HOME")
    if home:
        return os.path.join(os.path.abspath(os.path.expanduser(home)), "botsched.sock")
    return str(resolve_paths(env).socket)


def resolve_paths(environ: Mapping[str, str] | None = None) -> Paths:
    from pathlib import Path

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
    """Make sure ``path`` is a directory that only we can change, creating it if needed.

    What botsched creates (``path`` and any missing parents) is made 0700, whatever the
    umask. What already exists is never chmod'ed (it may be shared: ``/tmp``, a 1777
    directory, another program's): it is used as it is if it is ours, a real directory and
    writable by no one else (group or others may read it: every file inside is 0600 and
    the socket checks its peer's uid); otherwise it is refused with a clear error.
    """
    missing = []
    probe = path
    while not os.path.lexists(probe) and probe.parent != probe:
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, 0o700)
        except FileExistsError:  # another botsched made it meanwhile: check it like any other
            continue
        os.chmod(directory, 0o700)  # ours: the umask may have taken bits away (or, for parents, not)
    info = os.lstat(path)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise InvalidInput(f"{path} is not a directory (a symlink or a file is in the way)")
    if info.st_uid != os.getuid():
        raise InvalidInput(f"{path} belongs to uid {info.st_uid}, not to you: refusing to use it")
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise InvalidInput(
            f"{path} is writable by {'other users' if mode & 0o002 else 'its group'} (mode {mode:04o}): botsched "
            "needs a directory no one else can change; use one of your own (a missing one is created 0700) "
            f"or remove the write bits (chmod go-w {path})"
        )


def refuse_foreign_file(path: Path) -> None:
    """A file the daemon creates or writes must not be a planted symlink, or someone else's:
    it would truncate, append to or chmod the target."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid():
        raise InvalidInput(f"{path} is a symlink, not a regular file, or not yours: refusing to use it")


def check_socket_path(path: Path | str) -> None:
    size = len(os.fsencode(str(path)))
    if size > MAX_SOCKET_PATH:
        raise InvalidInput(
            f"socket path {path} is {size} bytes, longer than AF_UNIX allows ({MAX_SOCKET_PATH}): "
            "set BOTSCHED_HOME to a shorter directory"
        )
