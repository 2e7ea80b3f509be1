"""``[[hooks]]``: local commands run on matching state changes (SPEC section 8).

An argv list, never a shell; the webhook body on stdin; ``BOTSCHED_*`` in the
environment; killed (its whole process group) after ``hooks_timeout_seconds``.
Best-effort: a failure is logged, never retried, and nothing here blocks the event loop
(asyncio subprocesses, each hook a task of its own, bounded in number).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from botsched.core import states as bot_states
from botsched.core.errors import InvalidInput
from botsched.daemon.webhooks import payload

log = logging.getLogger("botsched.daemon.hooks")

DEFAULT_TIMEOUT_SECONDS = 30.0
#: stderr kept for the log line of a failing hook.
_STDERR_TAIL = 2048
#: Hooks waiting for a slot beyond this are dropped (logged): a burst of 100,000 changes
#: must not queue 100,000 processes.
MAX_QUEUED = 10_000


@dataclass(frozen=True)
class Hook:
    command: tuple[str, ...]
    states: frozenset[str]  # empty: every change

    def matches(self, new_state: str) -> bool:
        return not self.states or new_state in self.states


@dataclass(frozen=True)
class HookResult:
    """How one run ended, for the log and the tests."""

    returncode: int | None
    timed_out: bool = False
    error: str | None = None
    stderr: str = ""

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out and self.error is None


def parse_hooks(value: Any) -> list[Hook]:
    """The ``hooks`` config value (a list of tables) as hooks; ``InvalidInput`` says what is wrong."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise InvalidInput("hooks must be a list of [[hooks]] tables")
    hooks = []
    for number, table in enumerate(value, 1):
        if not isinstance(table, dict):
            raise InvalidInput(f"hooks #{number}: must be a table with command = [...]")
        command = table.get("command")
        if (
            not isinstance(command, list)
            or not command
            or not all(isinstance(a, str) and a for a in command)
        ):
            raise InvalidInput(
                f"hooks #{number}: command must be a non-empty list of strings (an argv, no shell)"
            )
        chosen = table.get("states", [])
        if not isinstance(chosen, list) or not all(isinstance(s, str) for s in chosen):
            raise InvalidInput(f"hooks #{number}: states must be a list of state names")
        unknown = [s for s in chosen if s not in bot_states.ALL_STATES]
        if unknown:
            raise InvalidInput(f"hooks #{number}: unknown state {unknown[0]!r}")
        extra = set(table) - {"command", "states"}
        if extra:
            raise InvalidInput(f"hooks #{number}: unknown key {min(extra)!r}")
        hooks.append(Hook(tuple(command), frozenset(chosen)))
    return hooks


def hook_env(
    body: Mapping[str, Any], base: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The daemon's environment plus the four ``BOTSCHED_*`` variables of this change."""
    data = body["data"]
    env = dict(os.environ if base is None else base)
    env["BOTSCHED_BOT_ID"] = data["bot_id"]
    env["BOTSCHED_STATE"] = data["new_state"]
    env["BOTSCHED_OLD_STATE"] = data["old_state"] or ""
    env["BOTSCHED_DETAIL"] = data["detail"] or ""
    return env


async def run_hook(
    command: Iterable[str],
    stdin: bytes,
    env: Mapping[str, str],
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> HookResult:
    """Run one command to its end or to ``timeout``; never raises for the command's sake."""
    argv = list(command)
    try:
        process = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
            env=dict(env),
            start_new_session=True,  # its own process group: the kill reaches its children too
        )
    except OSError as exc:  # not found, not executable
        return HookResult(
            None, error=f"cannot start {argv[0]!r}: {exc.strerror or exc}"
        )
    tail = bytearray()

    async def feed_and_drain() -> None:
        assert process.stdin is not None and process.stderr is not None
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            process.stdin.write(stdin)
            await process.stdin.drain()
        process.stdin.close()
        while chunk := await process.stderr.read(65536):
            tail.extend(chunk)
            del tail[:-_STDERR_TAIL]
        await process.wait()

    timed_out = False
    try:
        await asyncio.wait_for(feed_and_drain(), timeout)
    except TimeoutError:
        timed_out = True
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        await process.wait()
    except asyncio.CancelledError:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        raise
    return HookResult(
        process.returncode,
        timed_out=timed_out,
        stderr=tail.decode(errors="replace").strip(),
    )


class HookRunner:
    """Fires matching hooks for committed events; ``dispatch`` returns at once."""

    def __init__(
        self,
        hooks: Iterable[Hook],
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        concurrency: int = 8,
        base_env: Mapping[str, str] | None = None,
    ) -> None:
        self.hooks = list(hooks)
        self.timeout = timeout
        self._slots = asyncio.Semaphore(concurrency)
        self._base_env = base_env
        self._tasks: set[asyncio.Task[HookResult]] = set()

    def dispatch(self, body: Mapping[str, Any]) -> list[asyncio.Task[HookResult]]:
        """Start every hook matching this state-change body (section 8 shape) in the background."""
        if body.get("type") != payload.STATE_CHANGE:
            return []
        matching = [
            hook for hook in self.hooks if hook.matches(body["data"]["new_state"])
        ]
        if not matching:
            return []
        if len(self._tasks) + len(matching) > MAX_QUEUED:
            log.warning(
                "hooks: %d runs waiting, dropping hooks for bot %s",
                len(self._tasks),
                body["data"]["bot_id"],
            )
            return []
        stdin = payload.encode(body).encode()
        env = hook_env(body, self._base_env)
        started = []
        for hook in matching:
            task = asyncio.create_task(
                self._run(hook, stdin, env, body["data"]["bot_id"])
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
            started.append(task)
        return started

    async def _run(
        self, hook: Hook, stdin: bytes, env: Mapping[str, str], bot_id: str
    ) -> HookResult:
        async with self._slots:
            result = await run_hook(hook.command, stdin, env, self.timeout)
        if result.timed_out:
            log.warning(
                "hook %s for %s: killed after %g s",
                hook.command[0],
                bot_id,
                self.timeout,
            )
        elif result.error is not None:
            log.warning("hook %s for %s: %s", hook.command[0], bot_id, result.error)
        elif result.returncode != 0:
            last = result.stderr.splitlines()[-1] if result.stderr else ""
            log.warning(
                "hook %s for %s: exit %s%s",
                hook.command[0],
                bot_id,
                result.returncode,
                f": {last}" if last else "",
            )
        return result

    async def close(self, timeout: float = 5.0) -> None:
        """At shutdown: let running hooks finish briefly, then kill the rest."""
        tasks = list(self._tasks)
        if not tasks:
            return
        _done, pending = await asyncio.wait(tasks, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
