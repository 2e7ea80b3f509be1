"""``botsched daemon install|uninstall``: a systemd *user* unit for the daemon.

``KillMode=process`` matters: runners live in the service's cgroup, and a restart of the
daemon must not kill bots that are in a meeting (the new daemon re-attaches to them).
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

UNIT_NAME = "botsched.daemon.service"
#: Soft and hard open-file limit of the unit: room for thousands of runners. A user
#: manager with a lower hard limit gets as close as it can (systemd does not fail the unit).
LIMIT_NOFILE = 65536


def unit_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user" / UNIT_NAME


def unit_text() -> str:
    """The unit for this interpreter and, when set, this ``BOTSCHED_HOME``."""
    exec_start = shlex.join([sys.executable, "-m", "botsched", "daemon", "run"])
    home = os.environ.get("BOTSCHED_HOME")
    environment = f'Environment="BOTSCHED_HOME={Path(home).absolute()}"\n' if home else ""
    return (
        "[Unit]\n"
        "Description=botsched daemon: schedules meeting bots\n"
        "\n"
        "[Service]\n"
        "Type=simple\n"
        f"ExecStart={exec_start}\n"
        f"{environment}"
        "ExecReload=/bin/kill -HUP $MAINPID\n"
        "Restart=on-failure\n"
        "RestartSec=2\n"
        "# Exit 4 is a conflict a restart cannot fix (another daemon has this home, or another\n"
        "# live cluster agent has this agent name): stay down and say so in the status.\n"
        "RestartPreventExitStatus=4\n"
        "# Bots in a meeting survive daemon restarts: the new daemon re-attaches to them.\n"
        "KillMode=process\n"
        "# Each runner costs the daemon 5 descriptors (it also raises its soft limit to the\n"
        "# hard one, and refuses to stage a runner it has no descriptors for).\n"
        f"LimitNOFILE={LIMIT_NOFILE}\n"
        "\n"
        "[Install]\n"
        "WantedBy=default.target\n"
    )


def _systemctl(*args: str) -> bool:
    """Run ``systemctl --user ARGS``; False when there is no user systemd to talk to."""
    if shutil.which("systemctl") is None:
        return False
    try:
        result = subprocess.run(["systemctl", "--user", *args], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def install() -> list[str]:
    """Write the unit and enable it when systemd is reachable; returns what was done."""
    path = unit_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(unit_text())
    done = [f"wrote {path}"]
    if _systemctl("daemon-reload") and _systemctl("enable", "--now", UNIT_NAME):
        done.append(f"enabled and started {UNIT_NAME} (systemctl --user status {UNIT_NAME})")
    else:
        done.append(f"systemd is not reachable here; run: systemctl --user daemon-reload && "
                    f"systemctl --user enable --now {UNIT_NAME}")
    return done


def uninstall() -> list[str]:
    path = unit_path()
    done = []
    if _systemctl("disable", "--now", UNIT_NAME):
        done.append(f"disabled and stopped {UNIT_NAME}")
    try:
        path.unlink()
        done.append(f"removed {path}")
    except FileNotFoundError:
        done.append(f"{path} was not installed")
    _systemctl("daemon-reload")
    return done
