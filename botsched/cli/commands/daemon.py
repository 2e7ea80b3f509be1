"""``botsched daemon ...``: run, start, stop, status, install, uninstall, reload.

``run`` is the CLI's only way into ``botsched.daemon`` (imported when it runs, never by
any other command): the client side talks to the daemon through its socket.
"""

from __future__ import annotations

import sys
from typing import Any

from botsched.cli.output import emit, emit_json, warn
from botsched.core.errors import DaemonUnavailable, ExitStatus
from botsched.core.protocol import Op


def run(background: bool) -> None:
    from botsched.daemon import (
        main as daemon,  # the CLI's one import of the daemon side
    )

    daemon.run(foreground=not background)


def start() -> None:
    from botsched.client.connection import ensure_started
    from botsched.core.paths import check_socket_path, resolve_paths

    paths = resolve_paths()
    check_socket_path(paths.socket)
    pid, started = ensure_started(paths)  # the pid the daemon itself reports
    sys.stdout.write(f"botsched daemon {'started' if started else 'is already running'} (pid {pid})\n")


def stop() -> None:
    from botsched.client.connection import stop_daemon
    from botsched.core.paths import resolve_paths

    stopped = stop_daemon(resolve_paths())
    sys.stdout.write("botsched daemon stopped\n" if stopped else "botsched daemon was not running\n")


def status(as_json: bool) -> int:
    """Exit 5 (with ``{"running": false}`` for ``--json``) when no daemon answers."""
    from botsched.client.connection import connect

    try:
        with connect(autostart=False) as conn:
            info, warnings = conn.call(Op.STATUS)
    except DaemonUnavailable:
        if as_json:
            emit_json({"running": False})
        else:
            sys.stdout.write("botsched daemon is not running\n")
        return ExitStatus.UNAVAILABLE
    warn(warnings)  # e.g. the database file was deleted: changes are refused
    emit(info, as_json, _status_screen)
    return ExitStatus.SUCCESS


def _status_screen(info: dict[str, Any]) -> None:
    from botsched.cli.render.bots import status as screen

    screen(info)


def install(print_only: bool) -> None:
    from botsched.client import systemd

    if print_only:
        sys.stdout.write(f"# {systemd.unit_path()}\n{systemd.unit_text()}")
        return
    for line in systemd.install():
        sys.stdout.write(line + "\n")


def uninstall() -> None:
    from botsched.client import systemd

    for line in systemd.uninstall():
        sys.stdout.write(line + "\n")


def reload() -> None:
    from botsched.client.connection import connect

    with connect(autostart=False) as conn:
        conn.call(Op.RELOAD)
    sys.stdout.write("configuration reloaded\n")
