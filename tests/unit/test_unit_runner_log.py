"""A runner's log (issue 12): written from a buffer (one write per ``LOG_FLUSH_BYTES`` or
``LOG_FLUSH_S``, never one per line) and rotated at ``LOG_MAX_BYTES``. A real file, the
real ``RunnerProcess`` (standing for this test process: no runner is started).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from botsched.core import config as config_mod
from botsched.core.config import Config
from botsched.daemon.runners import command
from botsched.daemon.runners.command import CommandRunner, RunnerProcess


def test_the_log_is_buffered_and_rotated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(command, "LOG_MAX_BYTES", 10_000)
    monkeypatch.setattr(command, "LOG_FLUSH_BYTES", 1_000)
    writes: list[int] = []
    real_write = os.write

    def counting_write(fd: int, data: bytes) -> int:
        writes.append(fd)
        return real_write(fd, data)

    async def main() -> RunnerProcess:
        runner = CommandRunner(Config(config_mod.defaults()), lambda *a: None, tmp_path)
        proc = RunnerProcess(runner, "bot_x", os.getpid(), None)
        monkeypatch.setattr(os, "write", counting_write)
        for n in range(1_000):  # 1,000 lines of 50 bytes: 50 kB
            proc.log(b"line %05d .......................................\n" % n)
        await asyncio.sleep(command.LOG_FLUSH_S + 0.1)  # the tail goes out on the timer
        monkeypatch.setattr(os, "write", real_write)
        assert not proc.log_buf
        proc.close_fds()
        return proc

    asyncio.run(main())
    assert 45 <= len(writes) <= 55, f"{len(writes)} writes for 50 kB in 1 kB buffers"
    log, old = tmp_path / "bot_x.log", tmp_path / "bot_x.log.1"
    assert log.stat().st_size <= 10_000 and old.stat().st_size <= 10_000
    text = old.read_bytes() + log.read_bytes()
    assert text.endswith(b"line 00999 .......................................\n")
    numbers = [int(line.split()[1]) for line in text.splitlines()]
    assert numbers == list(range(numbers[0], 1_000)), "rotation lost or reordered lines"
