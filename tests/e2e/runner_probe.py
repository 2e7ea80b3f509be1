"""A probe bot program for the command-runner end-to-end tests (SPEC §6).

Used as ``runner.command = [sys.executable, ".../runner_probe.py", ...]``. It records what
it sees and does what it is told, so the tests can check the runner protocol from the
runner's side.

Recording (``PROBE_DIR``, from ``[runner.env]``): every record is one JSON line appended to
``$PROBE_DIR/$BOTSCHED_BOT_ID.jsonl`` (O_APPEND, one write per record, so concurrent
runners for one bot, which must never happen, would still both show up):

- ``{"ev": "start", "pid", "pgid", "sid", "ppid", "t", "argv", "env"}`` (the whole environment)
- ``{"ev": "stdin", "line", "t"}`` for every line read on stdin (``t`` = time.time() right
  after the read returned), ``{"ev": "eof", "t"}`` at EOF
- ``{"ev": "child", "pid"}`` for a helper child spawned into the process group
- ``{"ev": "exit", "code", "t"}`` just before exiting on purpose

Behaviour: action lists run at start, on ``join``, on ``leave`` and at EOF. They come from
the environment (``PROBE_ON_START``, ``PROBE_ON_JOIN``, ``PROBE_ON_LEAVE``, ``PROBE_ON_EOF``)
and may be overridden per bot by the bot's metadata (keys ``probe_on_start``, ...).
Actions are separated by ``;``:

- ``out:TEXT`` / ``err:TEXT`` — write the line TEXT to stdout / stderr
- ``sleep:SECONDS``
- ``exit:CODE``
- ``ignore_term`` — ignore SIGTERM from now on
- ``child`` — start a child (in our process group) that ignores SIGTERM and sleeps
- ``hang`` — stop reading stdin and sleep forever

Defaults: nothing at start or on join; ``exit:0`` on leave and at EOF.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

DEFAULTS = {"start": "", "join": "", "leave": "exit:0", "eof": "exit:0"}


def _options() -> dict[str, str]:
    options = {name: os.environ.get(f"PROBE_ON_{name.upper()}", default) for name, default in DEFAULTS.items()}
    try:
        metadata = json.loads(os.environ.get("BOTSCHED_METADATA") or "{}")
    except ValueError:
        metadata = {}
    for name in DEFAULTS:
        value = metadata.get(f"probe_on_{name}")
        if isinstance(value, str):
            options[name] = value
    return options


class Probe:
    def __init__(self) -> None:
        self.bot_id = os.environ.get("BOTSCHED_BOT_ID", "unknown")
        directory = os.environ.get("PROBE_DIR")
        self.record_fd = (
            os.open(os.path.join(directory, f"{self.bot_id}.jsonl"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
            if directory
            else -1
        )
        self.options = _options()

    def record(self, **fields: object) -> None:
        if self.record_fd >= 0:
            os.write(self.record_fd, (json.dumps(fields) + "\n").encode())

    def run_actions(self, spec: str) -> None:
        for action in filter(None, (part.strip() for part in spec.split(";"))):
            name, _, arg = action.partition(":")
            if name == "out":
                os.write(1, arg.encode() + b"\n")
            elif name == "err":
                os.write(2, arg.encode() + b"\n")
            elif name == "sleep":
                time.sleep(float(arg))
            elif name == "exit":
                code = int(arg)
                self.record(ev="exit", code=code, t=time.time())
                os._exit(code)
            elif name == "ignore_term":
                signal.signal(signal.SIGTERM, signal.SIG_IGN)
            elif name == "child":
                child = subprocess.Popen(
                    [sys.executable, "-c",
                     "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(600)"],
                    stdin=subprocess.DEVNULL,
                )
                self.record(ev="child", pid=child.pid)
            elif name == "hang":
                while True:
                    time.sleep(3600)
            else:
                os.write(2, f"runner_probe: unknown action {action!r}\n".encode())

    def main(self) -> None:
        self.record(
            ev="start",
            pid=os.getpid(),
            pgid=os.getpgid(0),
            sid=os.getsid(0),
            ppid=os.getppid(),
            t=time.time(),
            argv=sys.argv,
            env=dict(os.environ),
        )
        self.run_actions(self.options["start"])
        pending = b""
        while True:
            data = os.read(0, 4096)
            now = time.time()
            if not data:
                self.record(ev="eof", t=now)
                self.run_actions(self.options["eof"])
                return
            *lines, pending = (pending + data).split(b"\n")
            for raw in lines:
                line = raw.decode(errors="replace")
                self.record(ev="stdin", line=line, t=now)
                if line in ("join", "leave"):
                    self.run_actions(self.options[line])


if __name__ == "__main__":
    Probe().main()
