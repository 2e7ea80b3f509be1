"""A minimal ``runner.kind = "command"`` bot for ``punctuality.py --runner command``.

SPEC §6: started at stage time, told ``join`` on stdin at join_at, reports with
``state NAME`` lines on stdout, exit 0 ends the bot. The probe notes ``time.time_ns()``
the moment it reads ``join`` (before anything else, so the figure is the daemon's
lateness, not ours) into ``$BENCH_OUT/$BOTSCHED_BOT_ID`` together with
``BOTSCHED_JOIN_AT``; the benchmark computes the lateness afterwards.

Stdlib only and reads fd 0 unbuffered: nothing may sit between the pipe and the clock.
"""

from __future__ import annotations

import os
import sys
import time

LINGER_S = 0.05  # stay "in the meeting" briefly, then end (exit 0)


def main() -> int:
    out_dir = os.environ["BENCH_OUT"]
    bot_id = os.environ["BOTSCHED_BOT_ID"]
    join_at = os.environ["BOTSCHED_JOIN_AT"]
    pending = b""
    while True:
        data = os.read(0, 4096)
        if not data:
            return 0  # the daemon closed our stdin: nothing more to do
        pending += data
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            command = line.strip()
            if command == b"join":
                read_ns = time.time_ns()
                sys.stdout.write("state joined_recording\n")
                sys.stdout.flush()
                tmp = os.path.join(out_dir, f".{bot_id}.tmp")
                with open(tmp, "w") as handle:
                    handle.write(f"{read_ns}\n{join_at}\n")
                os.replace(tmp, os.path.join(out_dir, bot_id))
                time.sleep(LINGER_S)
                return 0
            if command == b"leave":
                return 0


if __name__ == "__main__":
    sys.exit(main())
