"""``[[hooks]]`` with real subprocesses: stdin and environment, the kill, failures harmless."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from botsched.core.errors import InvalidInput
from botsched.daemon.webhooks import hooks, payload

BOT: dict[str, Any] = {
    "id": "bot_HiXYgjyeWmTVOaII",
    "meeting_url": "https://meet.google.com/gvy-zzra-ktd",
    "bot_name": "B",
    "join_at": None,
    "metadata": {},
    "deduplication_key": None,
}


def _body(
    new: str = "fatal_error",
    old: str | None = "joining",
    detail: str | None = "exit 3: boom",
) -> dict[str, Any]:
    return payload.state_change(
        "evt_1", BOT, new, old, "2026-12-01T15:00:00.000001Z", detail
    )


def test_parse_hooks() -> None:
    parsed = hooks.parse_hooks(
        [{"command": ["notify-send", "x"], "states": ["ended"]}, {"command": ["a"]}]
    )
    assert (
        parsed[0].matches("ended")
        and not parsed[0].matches("staged")
        and parsed[1].matches("staged")
    )
    bad: Any
    for bad in ("x", [{"command": "notify-send x"}], [{"command": []}], [{"command": ["a"], "states": ["nope"]}],
                [{"command": ["a"], "shell": True}]):  # fmt: skip
        with pytest.raises(InvalidInput):
            hooks.parse_hooks(bad)
    assert hooks.parse_hooks(None) == []


def test_payload_on_stdin_and_env(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    script = (
        "import json, os, sys\n"
        f"open({str(out)!r}, 'w').write(json.dumps({{'stdin': sys.stdin.read(), "
        "'env': {k: v for k, v in os.environ.items() if k.startswith('BOTSCHED_')}}))\n"
    )
    hook = hooks.Hook((sys.executable, "-c", script), frozenset({"fatal_error"}))
    body = _body()

    async def main() -> list[hooks.HookResult]:
        runner = hooks.HookRunner(
            [hook, hooks.Hook(("false",), frozenset({"ended"}))],
            base_env={"PATH": "/usr/bin:/bin"},
        )
        tasks = runner.dispatch(body)
        assert len(tasks) == 1  # the second hook wants only "ended"
        return list(await asyncio.gather(*tasks))

    [result] = asyncio.run(main())
    assert result.ok
    got = json.loads(out.read_text())
    assert json.loads(got["stdin"]) == body
    assert got["env"] == {
        "BOTSCHED_BOT_ID": "bot_HiXYgjyeWmTVOaII",
        "BOTSCHED_STATE": "fatal_error",
        "BOTSCHED_OLD_STATE": "joining",
        "BOTSCHED_DETAIL": "exit 3: boom",
    }


def test_first_event_has_empty_old_state(tmp_path: Path) -> None:
    env = hooks.hook_env(_body("scheduled", None, None), base={})
    assert env == {
        "BOTSCHED_BOT_ID": BOT["id"],
        "BOTSCHED_STATE": "scheduled",
        "BOTSCHED_OLD_STATE": "",
        "BOTSCHED_DETAIL": "",
    }


def test_a_hanging_hook_and_its_children_are_killed(tmp_path: Path) -> None:
    marker = tmp_path / "child-lived"
    # the hook starts a grandchild that would write the marker after 2 s, then hangs itself
    script = (f"import subprocess, sys, time\nsubprocess.Popen(['sh', '-c', 'sleep 2; touch {marker}'])\n"
              "time.sleep(60)\n")

    async def main() -> tuple[hooks.HookResult, float, int]:
        ticks = 0

        async def ticker() -> None:  # the loop keeps turning while the hook hangs
            nonlocal ticks
            while True:
                await asyncio.sleep(0.01)
                ticks += 1

        tick = asyncio.create_task(ticker())
        started = time.monotonic()
        result = await hooks.run_hook(
            [sys.executable, "-c", script],
            b"{}",
            {"PATH": "/usr/bin:/bin"},
            timeout=0.5,
        )
        tick.cancel()
        return result, time.monotonic() - started, ticks

    result, took, ticks = asyncio.run(main())
    assert result.timed_out and not result.ok and took < 3
    # a hook waited for on the loop would leave one tick or two in the 0.5 s; a turning loop
    # ticks up to 50 times (a loaded machine still gives many more than 5)
    assert ticks >= 5, f"the loop turned only {ticks} times while the hook hung"
    time.sleep(2.5)
    assert not marker.exists()


def test_a_failing_hook_is_logged_and_harms_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    ok_marker = tmp_path / "ok"
    failing = hooks.Hook(
        (
            sys.executable,
            "-c",
            "import sys; sys.stderr.write('it broke\\n'); sys.exit(3)",
        ),
        frozenset(),
    )
    missing = hooks.Hook((str(tmp_path / "no-such-hook"),), frozenset())
    fine = hooks.Hook(("touch", str(ok_marker)), frozenset())

    async def main() -> list[hooks.HookResult]:
        runner = hooks.HookRunner(
            [failing, missing, fine], base_env={"PATH": "/usr/bin:/bin"}
        )
        return list(await asyncio.gather(*runner.dispatch(_body())))

    with caplog.at_level(logging.WARNING, logger="botsched.daemon.hooks"):
        bad, gone, good = asyncio.run(main())
    assert (bad.returncode, bad.stderr) == (3, "it broke")
    assert gone.error is not None and gone.returncode is None
    assert good.ok and ok_marker.exists()
    assert "exit 3: it broke" in caplog.text and "cannot start" in caplog.text


def test_a_hook_that_ignores_stdin_is_fine() -> None:
    big = b"x" * (1 << 20)  # more than a pipe holds: the write must not hang or raise
    result = asyncio.run(
        hooks.run_hook(["true"], big, {"PATH": "/usr/bin:/bin"}, timeout=5)
    )
    assert result.ok
