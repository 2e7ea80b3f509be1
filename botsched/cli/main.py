"""The ``botsched`` entry point: the fast path when it can serve, else Typer; and the one
place where errors, lost output and bugs become exit codes (SPEC §5), for both paths.

``botsched create -q`` / ``--json``, ``show --json`` and ``list --json`` are what scripts
run in loops, so they start fast: read with the stdlib option reader
(``botsched.cli.fast``) and run by ``botsched.cli.commands.bots`` without Typer, rich,
pendulum or daemon code. Anything else — other commands, ``--help``, human output, a
malformed option — goes to the Typer app (``botsched.cli.app``), which owns every usage
message.
"""

from __future__ import annotations

import os
import sys

from botsched.cli.output import changes_text, fail, warn
from botsched.core.errors import BotschedError, ExitStatus

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import Any, NoReturn


class _ClosedStdout:
    """``sys.stdout`` when fd 1 was closed at start (``>&-``): every write fails as
    write(2) would, with EBADF, and the one place that handles output errors decides."""

    encoding = "utf-8"
    errors = "strict"

    def write(self, data: Any) -> int:
        import errno

        raise OSError(errno.EBADF, "Bad file descriptor (stdout is closed)")

    def flush(self) -> None:
        pass

    def isatty(self) -> bool:
        return False

    def writable(self) -> bool:
        return True

    def fileno(self) -> int:
        import errno

        raise OSError(errno.EBADF, "Bad file descriptor (stdout is closed)")

    @property
    def buffer(self) -> _ClosedStdout:
        return self


def guard_std_fds() -> None:
    """A closed stdin, stdout or stderr becomes /dev/null for the process, so that no
    socket or database opened later gets fd 0-2 (our output must never go into the
    daemon's socket); a closed stdout also makes every write fail with EBADF."""
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
            continue
        except OSError:
            pass
        null = os.open(os.devnull, os.O_RDWR)
        if null != fd:
            os.dup2(null, fd)
            os.close(null)
        if fd == 0:
            sys.stdin = open(fd, closefd=False)  # noqa: SIM115 - reads as empty, for the whole run
        elif fd == 1:
            sys.stdout = _ClosedStdout()
        else:
            sys.stderr = open(fd, "w", closefd=False)  # noqa: SIM115 - warnings vanish, for the whole run


def _is_output_error(exc: BaseException | None) -> bool:
    import errno

    return isinstance(exc, OSError) and exc.errno in (errno.EPIPE, errno.EBADF)


def _output_lost(exc: OSError) -> NoReturn:
    """stdout went away: a broken pipe exits 141 (as if killed by SIGPIPE, like other
    tools), a closed stdout exits 1 -- unless this command already changed something:
    then it says so on stderr and exits 0 for a closed stdout (the change was made; a
    retry would make it twice)."""
    import errno

    try:  # the interpreter's last flush must not fail again
        null = os.open(os.devnull, os.O_WRONLY)
        os.dup2(null, 1)
        os.close(null)
    except OSError:
        pass
    done = changes_text()
    if exc.errno == errno.EPIPE:
        if done:
            warn([f"{done}, but the rest of the output went to a closed pipe"])
        sys.exit(ExitStatus.BROKEN_PIPE)
    if done:
        warn([f"{done}, but stdout is closed: the output was not written"])
        sys.exit(ExitStatus.SUCCESS)
    fail(1, "cannot write the output: stdout is closed (Bad file descriptor)")


def run(body: Callable[[], Any]) -> NoReturn:
    """Run a command and exit with SPEC §5's code: the one place where errors, output
    failures (closed stdout, broken pipe) and bugs become exit codes and ``error:`` lines,
    for the fast path and the Typer CLI alike."""
    try:
        code = body()
        sys.stdout.flush()  # buffered output fails here, where it is handled, not at exit
    except BotschedError as exc:
        fail(exc.exit_code, exc.message)
    except KeyboardInterrupt:
        sys.exit(ExitStatus.INTERRUPTED)
    except SystemExit as exc:  # click turns EPIPE into exit(1): undo that
        if _is_output_error(exc.__context__):
            _output_lost(exc.__context__)  # type: ignore[arg-type]
        raise
    except Exception as exc:  # noqa: BLE001 - the one place a bug becomes "internal error", exit 1
        if _is_output_error(exc):
            _output_lost(exc)  # type: ignore[arg-type]
        if changes_text():  # the change was made: showing it failed, that is all
            warn([f"{changes_text()}, but showing the result failed: {type(exc).__name__}: {exc}"])
            sys.exit(ExitStatus.SUCCESS)
        fail(1, f"internal error: {type(exc).__name__}: {exc} (please report this)")
    sys.exit(code if isinstance(code, int) else 0)


def _typer(args: list[str]) -> Any:
    """Run the Typer app; its usage errors become ``BotschedError`` (exit 2), Ctrl-C on a
    prompt a ``KeyboardInterrupt``, so that ``run`` decides for them too."""
    import typer

    try:  # typer >= 0.24 vendors click
        from typer._click.exceptions import ClickException
    except ImportError:  # pragma: no cover - older typer with click as a dependency
        from click.exceptions import ClickException  # type: ignore[assignment]

    from botsched.cli.app import app

    command = typer.main.get_command(app)
    try:
        return command.main(args=args, prog_name="botsched", standalone_mode=False)
    except ClickException as exc:
        usage = BotschedError(exc.format_message())
        usage.exit_code = exc.exit_code
        raise usage from None
    except typer.Abort:
        raise KeyboardInterrupt from None


def main(argv: list[str] | None = None) -> None:
    """``botsched``: bare, it is help (exit 0, like git and docker)."""
    guard_std_fds()
    args = (sys.argv[1:] if argv is None else argv) or ["--help"]
    from botsched.cli.commands.bots import FAST
    from botsched.cli.fast import parse_fast

    fast = parse_fast(FAST, args)
    if fast is not None:
        spec, parsed = fast
        run(lambda: spec.run(**parsed))
    run(lambda: _typer(args))
