"""The ``botsched`` command: parse arguments, ask the daemon, print the answer.

Thin on purpose: every rule lives in the daemon's service layer. Human output comes
from ``botsched.cli.render`` (rich, pendulum), imported only when a person is reading.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from botsched import __version__
from botsched.core.errors import BotschedError, InvalidInput, WaitTimeout
from botsched.cli.main import call as _call
from botsched.cli.main import changed as _changed
from botsched.cli.main import create_bot, print_errors, printable, run, say
from botsched.cli.main import list_bots as _list_bots
from botsched.cli.main import show_bot as _show_bot
from botsched.cli.main import emit_json as _emit_json
from botsched.cli.main import json_text as _json_text
from botsched.cli.main import local_zone as _local_zone
from botsched.cli.main import resolve_join_at as _resolve_join_at
from botsched.cli.main import warn as _warn

try:  # typer >= 0.24 vendors click
    from typer._click.exceptions import ClickException
except ImportError:  # pragma: no cover - older typer with click as a dependency
    from click.exceptions import ClickException  # type: ignore[no-redef]

app = typer.Typer(
    name="botsched",
    help="Schedule meeting bots that join at exactly the right moment.\n\n"
    "Example: botsched create https://zoom.us/j/123 --join-at +10m",
    no_args_is_help=True,
    context_settings={"help_option_names": ["-h", "--help"]},
)
daemon_app = typer.Typer(
    help="Run, start, stop and inspect the local daemon.\n\nExample: botsched daemon status", no_args_is_help=True
)
config_app = typer.Typer(
    help="Read and write config.toml.\n\nExample: botsched config set scheduler.stage_lead_seconds 60",
    no_args_is_help=True,
)
app.add_typer(daemon_app, name="daemon")
app.add_typer(config_app, name="config")
from botsched.cli.calendar import calendar_app
app.add_typer(calendar_app, name="calendar")

JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


# -- helpers ----------------------------------------------------------------------


def _connect(autostart: bool = True) -> Any:
    from botsched.client.connection import connect

    return connect(autostart=autostart)


def _ids_in(*states: str) -> Any:
    """Shell completion of bot ids from a running daemon (never starts one, never fails)."""

    def complete(incomplete: str) -> list[str]:
        try:
            with _connect(autostart=False) as conn:
                ids, _ = conn.call("ids", states=list(states), prefix=incomplete)
        except Exception:  # completion must stay quiet whatever happens
            return []
        return list(ids)

    return complete


# -- the root ---------------------------------------------------------------------


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"botsched {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Schedule meeting bots that join at exactly the right moment.

    Example: botsched create https://zoom.us/j/123 --join-at +10m
    """


# -- bots -------------------------------------------------------------------------


@app.command()
def create(
    meeting_url_arg: Annotated[Optional[str], typer.Argument(metavar="MEETING_URL", help="The meeting to join.")] = None,
    meeting_url: Annotated[Optional[str], typer.Option("--meeting-url", help="The meeting to join.")] = None,
    bot_name: Annotated[Optional[str], typer.Option("--bot-name", help="Name shown in the meeting.")] = None,
    join_at: Annotated[
        Optional[str], typer.Option("--join-at", help="When to join: 2026-12-01T15:00:00Z, local 2026-12-01T16:00, +10m.")
    ] = None,
    metadata: Annotated[Optional[list[str]], typer.Option("--metadata", help="KEY=VALUE, repeatable.")] = None,
    dedup_key: Annotated[Optional[str], typer.Option("--dedup-key", help="Refuse a second live bot with this key.")] = None,
    from_file: Annotated[
        Optional[str], typer.Option("--from", help="Bulk create from a JSON-lines file ('-' for stdin).")
    ] = None,
    as_json: JsonOpt = False,
    quiet: Annotated[bool, typer.Option("-q", "--quiet", help="Print only the id.")] = False,
) -> None:
    """Create a bot: scheduled with --join-at, else an ad-hoc bot that joins now.

    Example: botsched create https://meet.google.com/abc-defg-hij --join-at +10m --bot-name Notes
    """
    if from_file is not None:
        if any(v is not None for v in (meeting_url_arg, meeting_url, bot_name, join_at, dedup_key)) or metadata:
            raise InvalidInput("--from cannot be combined with a URL, --bot-name, --join-at, --metadata or --dedup-key")
        import errno

        from botsched.cli.bulk import create_from_file

        try:
            create_from_file(from_file, _local_zone, as_json=as_json, quiet=quiet)
        except OSError as exc:  # only its output, after the commit, writes to stdout
            if exc.errno in (errno.EPIPE, errno.EBADF):
                _changed("created the bots")
            raise
        return
    create_bot(meeting_url_arg, meeting_url, bot_name, join_at, metadata or [], dedup_key, as_json, quiet)


@app.command()
def reschedule(
    bot_id: Annotated[str, typer.Argument(help="The bot to move.", autocompletion=_ids_in("scheduled"))],
    join_at: Annotated[str, typer.Option("--join-at", help="The new join time.")],
    as_json: JsonOpt = False,
) -> None:
    """Change join_at of a scheduled bot.

    Example: botsched reschedule bot_HiXYgjyeWmTVOaII --join-at 2026-12-01T15:30:00Z
    """
    bot = _call("reschedule", id=bot_id, join_at=_resolve_join_at(join_at))
    _changed(f"rescheduled {bot['id']} to {bot['join_at']}")
    if as_json:
        _emit_json(bot)
    else:
        from botsched.cli import render

        render.rescheduled(bot)


@app.command()
def cancel(
    bot_ids: Annotated[
        list[str],
        typer.Argument(metavar="BOT_ID...", help="Scheduled bots to delete.", autocompletion=_ids_in("scheduled")),
    ],
) -> None:
    """Delete scheduled bots for good.

    Example: botsched cancel bot_HiXYgjyeWmTVOaII bot_Q2wErTyUiOpAsDfG
    """
    failure: BotschedError | None = None
    lost: OSError | None = None  # stdout went away: still cancel the rest, report it after
    with _connect() as conn:
        for bot_id in bot_ids:
            try:
                conn.call("cancel", id=bot_id)
            except BotschedError as exc:
                if exc.exit_code in (1, 5):
                    raise
                print_errors(exc.message)
                failure = failure or exc
                continue
            _changed(f"cancelled {bot_id}")
            if lost is None:
                try:
                    say(f"cancelled {bot_id}")
                    sys.stdout.flush()
                except OSError as exc:
                    lost = exc
    if lost is not None and failure is None:
        raise lost
    if failure is not None:
        raise typer.Exit(failure.exit_code)


@app.command()
def show(bot_id: Annotated[str, typer.Argument(help="The bot.", autocompletion=_ids_in())], as_json: JsonOpt = False) -> None:
    """One bot with its state history.

    Example: botsched show bot_HiXYgjyeWmTVOaII --json | jq .state
    """
    _show_bot(bot_id, as_json)


@app.command("list")
def list_bots(
    state: Annotated[Optional[list[str]], typer.Option("--state", help="Only bots in this state (repeatable).")] = None,
    limit: Annotated[int, typer.Option("--limit", help="At most N bots (0 = all).")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """Bots ordered by join time.

    Example: botsched list --state scheduled --state staged
    """
    _list_bots(state or [], limit, as_json)


@app.command()
def leave(
    bot_id: Annotated[
        str,
        typer.Argument(help="A bot in a meeting.",
                       autocompletion=_ids_in("joining", "waiting_room", "joined_not_recording", "joined_recording")),
    ],
) -> None:
    """Ask a bot that is in a meeting to leave.

    Example: botsched leave bot_HiXYgjyeWmTVOaII
    """
    bot = _call("leave", id=bot_id)
    _changed(f"asked {bot['id']} to leave")
    say(f"asked {bot['id']} to leave")


@app.command()
def wait(
    bot_id: Annotated[str, typer.Argument(help="The bot to wait for.", autocompletion=_ids_in())],
    state: Annotated[Optional[str], typer.Option("--state", help="Wait for this state (default: any terminal state).")] = None,
    timeout: Annotated[Optional[float], typer.Option("--timeout", help="Give up after SECONDS (exit 124).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Block until the bot reaches a state.

    Example: botsched wait bot_HiXYgjyeWmTVOaII --state joined_recording --timeout 300
    """
    if timeout is not None and not 0 <= timeout < 10**9:  # also refuses nan and inf
        raise InvalidInput("--timeout must be 0 or more seconds")
    with _connect() as conn:
        final: dict[str, Any] | None = None
        for message in conn.stream("wait", id=bot_id, state=state, timeout=timeout):
            final = message.get("result")
    if final is None:  # pragma: no cover - the daemon always answers a wait
        raise WaitTimeout("no answer")
    if as_json:
        _emit_json(final)
    else:
        say(f"{final['id']} {final['state']}")


@app.command()
def events(
    bot_id: Annotated[Optional[str], typer.Argument(help="Only this bot's events.", autocompletion=_ids_in())] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming new events.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """State changes, oldest first; --follow streams them live.

    Example: botsched events --follow --json | jq -c 'select(.state == "fatal_error")'
    """
    printer = None
    if not as_json:
        from botsched.cli import render

        printer = render.print_event
    with _connect() as conn:
        for event in conn.stream("events", id=bot_id, follow=follow):
            if "result" in event:
                continue
            if printer is None:
                sys.stdout.write(_json_text(event, indent=None) + "\n")
                sys.stdout.flush()
            else:
                printer(event)


@app.command()
def logs(bot_id: Annotated[str, typer.Argument(help="The bot.", autocompletion=_ids_in())]) -> None:
    """Print the runner's output for a bot (command runner).

    Example: botsched logs bot_HiXYgjyeWmTVOaII | tail -20
    """
    from botsched.core.paths import resolve_paths

    bot = _call("show", id=bot_id)
    path = resolve_paths().runner_logs / f"{bot['id']}.log"
    terminal = sys.stdout.isatty()  # a person reads it: escape what the terminal would obey
    if terminal:
        import codecs

        decoder = codecs.getincrementaldecoder("utf-8")("replace")
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(65536):
                if terminal:
                    sys.stdout.write(printable(decoder.decode(chunk), keep="\n\t"))
                else:
                    sys.stdout.buffer.write(chunk)  # into a pipe or file: the bytes as they are
            if terminal:
                sys.stdout.write(printable(decoder.decode(b"", final=True), keep="\n\t"))
    except FileNotFoundError:
        sys.stderr.write(f"no runner output for {bot['id']} (simulated runs and bots not yet staged have none)\n")


# -- daemon -----------------------------------------------------------------------


@daemon_app.command("run")
def daemon_run(
    background: Annotated[bool, typer.Option("--background", hidden=True)] = False,
) -> None:
    """Run the daemon in the foreground (for systemd or a terminal).

    Example: BOTSCHED_HOME=/tmp/bs botsched daemon run
    """
    from botsched.daemon import main as daemon

    daemon.run(foreground=not background)


@daemon_app.command("start")
def daemon_start() -> None:
    """Start the daemon in the background; returns once it answers.

    Example: botsched daemon start
    """
    from botsched.client.connection import ensure_started
    from botsched.core.paths import check_socket_path, resolve_paths

    paths = resolve_paths()
    check_socket_path(paths.socket)
    pid, started = ensure_started(paths)  # the pid the daemon itself reports
    sys.stdout.write(f"botsched daemon {'started' if started else 'is already running'} (pid {pid})\n")


@daemon_app.command("stop")
def daemon_stop() -> None:
    """Stop the daemon gracefully (scheduled bots stay queued).

    Example: botsched daemon stop
    """
    from botsched.client.connection import stop_daemon
    from botsched.core.paths import resolve_paths

    if stop_daemon(resolve_paths()):
        sys.stdout.write("botsched daemon stopped\n")
    else:
        sys.stdout.write("botsched daemon was not running\n")


@daemon_app.command("status")
def daemon_status(as_json: JsonOpt = False) -> None:
    """Health, effective config and bot counts per state (never starts a daemon).

    Example: botsched daemon status --json | jq .counts
    """
    from botsched.core.errors import DaemonUnavailable

    try:
        with _connect(autostart=False) as conn:
            info, warnings = conn.call("status")
    except DaemonUnavailable:
        if as_json:
            _emit_json({"running": False})
        else:
            sys.stdout.write("botsched daemon is not running\n")
        raise typer.Exit(5) from None
    _warn(warnings)  # e.g. the database file was deleted: changes are refused
    if as_json:
        _emit_json(info)
    else:
        from botsched.cli import render

        render.status(info)


@daemon_app.command("install")
def daemon_install(
    print_only: Annotated[bool, typer.Option("--print", help="Only print the unit; change nothing.")] = False,
) -> None:
    """Install a systemd user unit so the daemon starts at login and restarts on failure.

    Example: botsched daemon install --print
    """
    from botsched.client import systemd

    if print_only:
        sys.stdout.write(f"# {systemd.unit_path()}\n{systemd.unit_text()}")
        return
    for line in systemd.install():
        sys.stdout.write(line + "\n")


@daemon_app.command("uninstall")
def daemon_uninstall() -> None:
    """Disable and remove the systemd user unit.

    Example: botsched daemon uninstall
    """
    from botsched.client import systemd

    for line in systemd.uninstall():
        sys.stdout.write(line + "\n")


@daemon_app.command("reload")
def daemon_reload() -> None:
    """Re-read config.toml in the running daemon (same as SIGHUP).

    Example: botsched config set scheduler.stage_lead_seconds 60 && botsched daemon reload
    """
    with _connect(autostart=False) as conn:
        conn.call("reload")
    sys.stdout.write("configuration reloaded\n")


# -- config -----------------------------------------------------------------------


def _config_path() -> Path:
    from botsched.core.paths import resolve_paths

    return resolve_paths().config


@config_app.command("path")
def config_path() -> None:
    """Print where config.toml lives.

    Example: $EDITOR "$(botsched config path)"
    """
    say(str(_config_path()))


@config_app.command("show")
def config_show(as_json: JsonOpt = False) -> None:
    """The effective configuration (defaults plus config.toml).

    Example: botsched config show --json
    """
    from botsched.core import config

    values = config.load(_config_path()).as_dict()
    if as_json:
        _emit_json(values)
        return
    for key, value in values.items():
        say(f"{key} = {json.dumps(value)}")


@config_app.command("get")
def config_get(key: Annotated[str, typer.Argument(help="A key such as scheduler.stage_lead_seconds.")]) -> None:
    """Print one configuration value.

    Example: botsched config get scheduler.stage_lead_seconds
    """
    from botsched.core import config

    value = config.masked(key, config.load(_config_path()).get(key))  # secrets as ***, like config show
    say(value if isinstance(value, str) else json.dumps(value))


@config_app.command("set", context_settings={"ignore_unknown_options": True})
def config_set(
    key: Annotated[str, typer.Argument(help="A key such as scheduler.stage_lead_seconds.")],
    value: Annotated[str, typer.Argument(help="A TOML value: 90, true, \"text\", [\"argv\", \"list\"].")],
) -> None:
    """Set one configuration value (validated) and reload a running daemon.

    runner.env.NAME sets one variable of the runner's environment (shown as ***).

    Example: botsched config set runner.command '["/usr/local/bin/mybot", "--headless"]'
    """
    from botsched.core import config
    from botsched.client.connection import is_running
    from botsched.core.paths import resolve_paths

    parsed = config.parse_cli_value(key, value)
    path = _config_path()
    config.write_value(path, key, parsed)
    _changed(f"set {key}")
    say(f"{key} = {json.dumps(config.masked(key, parsed))}")
    if is_running(resolve_paths()):
        try:
            with _connect(autostart=False) as conn:
                conn.call("reload")
        except BotschedError as exc:
            _warn([f"saved, but the running daemon did not reload: {exc.message}"])


# -- entry point ------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    """Run the CLI; every failure becomes ``error:`` lines and SPEC §5's exit code
    (``fastcli.run`` decides, for this path and the fast one alike)."""
    command = typer.main.get_command(app)

    def body() -> Any:
        try:
            return command.main(args=argv, prog_name="botsched", standalone_mode=False)
        except ClickException as exc:
            usage = BotschedError(exc.format_message())
            usage.exit_code = 2 if exc.exit_code == 2 else exc.exit_code
            raise usage from None
        except typer.Abort:
            raise KeyboardInterrupt from None

    run(body)
