"""The Typer declarations of every command: names, arguments, help. Nothing else.

The bodies live in ``botsched.cli.commands``; ``create``/``show``/``list`` take their
flags, help and defaults from the ``Spec`` tables the fast path reads
(``botsched.cli.commands.bots``), so the two cannot drift. Errors and exit codes are
``botsched.cli.main``'s (one policy for both paths).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from botsched import __version__
from botsched.cli.commands import bots, calendar, config, daemon, http
from botsched.cli.fast import Opt, Spec
from botsched.core import states
from botsched.core.errors import InvalidInput


def _flag_type(self: typer.core.TyperOption, ctx: Any) -> str | None:
    """No ``<bool>`` beside a flag in help: a flag takes no value, so it has no type to show
    (typer prints one for every option; values keep theirs, like ``<int>``)."""
    return None if self.is_flag else _value_type(self, ctx)


_value_type = typer.core.TyperOption.display_type_rich
typer.core.TyperOption.display_type_rich = _flag_type  # type: ignore[method-assign]

_SETTINGS = {"help_option_names": ["-h", "--help"]}
BOTS, CALENDAR, SETUP = "Bot commands", "Calendar", "Daemon and configuration"

app = typer.Typer(
    name="botsched",
    help="Schedule meeting bots that join at exactly the right moment.",
    epilog="Examples:\n\n  $ botsched create https://zoom.us/j/123 --join-at 3pm\n\n"
    "  $ botsched list --state scheduled\n\n"
    "  $ botsched calendar sync work.ics --dry-run\n\n"
    "Run 'botsched COMMAND --help' for more on a command.",
    no_args_is_help=True,
    context_settings=_SETTINGS,
    options_metavar="[OPTIONS]",
)
daemon_app = typer.Typer(help="Run, start, stop and inspect the local daemon.",
                         epilog="Example: botsched daemon status", no_args_is_help=True)
config_app = typer.Typer(help="Read and write config.toml.",
                         epilog="Example: botsched config set scheduler.stage_lead_seconds 60", no_args_is_help=True)
calendar_app = typer.Typer(help="One bot per meeting of a calendar: once (sync FILE) or followed by the daemon (add).",
                           epilog="Example: botsched calendar sync work.ics --dry-run", no_args_is_help=True)
app.add_typer(calendar_app, name="calendar", rich_help_panel=CALENDAR)
app.add_typer(daemon_app, name="daemon", rich_help_panel=SETUP)
app.add_typer(config_app, name="config", rich_help_panel=SETUP)
webhook_app = typer.Typer(help="Send state changes to HTTP endpoints (signed, retried, in order per bot).",
                          epilog="Example: botsched webhook add https://example.com/hooks/botsched --state fatal_error",
                          no_args_is_help=True)
app.add_typer(webhook_app, name="webhook", rich_help_panel=SETUP)
http_app = typer.Typer(help="The HTTP API's access token (for config http.listen).",
                       epilog="Example: curl -H \"Authorization: Bearer $(botsched http token)\" "
                       "http://127.0.0.1:8787/bots", no_args_is_help=True)
app.add_typer(http_app, name="http", rich_help_panel=SETUP)


def _option(spec: Spec, dest: str, **extra: Any) -> Any:
    """The Typer option (or argument) for ``dest`` of a fast-path ``Spec``: one declaration."""
    opt: Opt = spec.opt(dest)
    if not opt.flags:
        return typer.Argument(metavar=opt.metavar, help=opt.help, **extra)
    return typer.Option(*opt.flags, help=opt.help, metavar=opt.metavar, **extra)


def _exit(code: int) -> None:
    if code:
        raise typer.Exit(code)


JsonOpt = Annotated[bool, typer.Option("--json", help="Machine-readable JSON on stdout.")]


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
    """Schedule meeting bots that join at exactly the right moment."""


# -- bots -------------------------------------------------------------------------


C, L, S = bots.CREATE, bots.LIST, bots.SHOW


@app.command(rich_help_panel=BOTS, epilog="Example: botsched create https://meet.google.com/abc-defg-hij "
             "--join-at 'tomorrow 09:30' --bot-name Notes")
def create(
    url_arg: Annotated[str | None, _option(C, "url_arg")] = None,
    meeting_url: Annotated[str | None, _option(C, "meeting_url")] = None,
    bot_name: Annotated[str | None, _option(C, "bot_name")] = None,
    join_at: Annotated[str | None, _option(C, "join_at")] = None,
    metadata: Annotated[list[str] | None, _option(C, "metadata")] = None,
    dedup_key: Annotated[str | None, _option(C, "dedup_key")] = None,
    from_file: Annotated[
        str | None, typer.Option("--from", metavar="FILE", help="Bulk create from a JSON-lines file ('-' for stdin).")
    ] = None,
    as_json: Annotated[bool, _option(C, "as_json")] = False,
    quiet: Annotated[bool, _option(C, "quiet")] = False,
) -> None:
    """Create a bot: scheduled with --join-at, else an ad-hoc bot that joins now."""
    if from_file is None:
        bots.create(url_arg, meeting_url, bot_name, join_at, metadata or [], dedup_key, as_json, quiet)
        return
    if any(v is not None for v in (url_arg, meeting_url, bot_name, join_at, dedup_key)) or metadata:
        raise InvalidInput("--from cannot be combined with a URL, --bot-name, --join-at, --metadata or --dedup-key")
    from botsched.cli.commands.bulk import create_from_file

    create_from_file(from_file, as_json=as_json, quiet=quiet)


@app.command(rich_help_panel=BOTS, epilog="Example: botsched show bot_HiXYgjyeWmTVOaII --json | jq .state")
def show(
    bot_id: Annotated[str, _option(S, "bot_id", autocompletion=bots.complete_ids())],
    as_json: Annotated[bool, _option(S, "as_json")] = False,
) -> None:
    """One bot with its state history."""
    bots.show(bot_id, as_json)


@app.command("list", rich_help_panel=BOTS, epilog="Example: botsched list --state scheduled --state staged")
def list_bots(
    state: Annotated[list[str] | None, _option(L, "states")] = None,
    limit: Annotated[int, _option(L, "limit")] = bots.LIST_LIMIT,
    as_json: Annotated[bool, _option(L, "as_json")] = False,
) -> None:
    """Bots ordered by join time."""
    bots.list_bots(state or [], limit, as_json)


@app.command(rich_help_panel=BOTS,
             epilog="Example: botsched reschedule bot_HiXYgjyeWmTVOaII --join-at 2026-12-01T15:30:00Z")
def reschedule(
    bot_id: Annotated[str, typer.Argument(help="The bot to move.",
                                          autocompletion=bots.complete_ids(states.SCHEDULED))],
    join_at: Annotated[str, typer.Option("--join-at", metavar="TIME", help="The new join time (as for create).")],
    as_json: JsonOpt = False,
) -> None:
    """Change join_at of a scheduled bot."""
    bots.reschedule(bot_id, join_at, as_json)


@app.command(rich_help_panel=BOTS, epilog="Example: botsched cancel bot_HiXYgjyeWmTVOaII bot_Q2wErTyUiOpAsDfG")
def cancel(
    bot_ids: Annotated[list[str], typer.Argument(metavar="BOT_ID...", help="Scheduled bots to delete.",
                                                 autocompletion=bots.complete_ids(states.SCHEDULED))],
) -> None:
    """Delete scheduled bots for good."""
    _exit(bots.cancel(bot_ids))


@app.command(rich_help_panel=BOTS, epilog="Example: botsched leave bot_HiXYgjyeWmTVOaII")
def leave(
    bot_id: Annotated[
        str, typer.Argument(help="A bot in a meeting.", autocompletion=bots.complete_ids(*bots.IN_MEETING))
    ],
) -> None:
    """Ask a bot that is in a meeting to leave."""
    bots.leave(bot_id)


@app.command(rich_help_panel=BOTS,
             epilog="Example: botsched wait bot_HiXYgjyeWmTVOaII --state joined_recording --timeout 300")
def wait(
    bot_id: Annotated[str, typer.Argument(help="The bot to wait for.", autocompletion=bots.complete_ids())],
    state: Annotated[
        str | None, typer.Option("--state", help="Wait for this state (default: any terminal state).")
    ] = None,
    timeout: Annotated[float | None, typer.Option("--timeout", metavar="SECONDS",
                                                     help="Give up after SECONDS (exit 124).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Block until the bot reaches a state."""
    bots.wait(bot_id, state, timeout, as_json)


@app.command(rich_help_panel=BOTS,
             epilog="Example: botsched events --follow --json | jq -c 'select(.state == \"fatal_error\")'")
def events(
    bot_id: Annotated[
        str | None, typer.Argument(help="Only this bot's events.", autocompletion=bots.complete_ids())
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep streaming new events.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """State changes, oldest first; --follow streams them live."""
    bots.events(bot_id, follow, as_json)


@app.command(rich_help_panel=BOTS, epilog="Example: botsched logs bot_HiXYgjyeWmTVOaII | tail -20")
def logs(bot_id: Annotated[str, typer.Argument(help="The bot.", autocompletion=bots.complete_ids())]) -> None:
    """Print the runner's output for a bot (command runner)."""
    bots.logs(bot_id)


# -- calendar ---------------------------------------------------------------------


@calendar_app.command("sync", epilog="Example: botsched calendar sync ~/Downloads/work.ics --join-offset -1m --dry-run"
                      "   |   botsched calendar sync work   (a followed calendar, now)")
def calendar_sync(
    source: Annotated[
        str | None,
        typer.Argument(metavar="[SOURCE|NAME]", help="An iCalendar (.ics) file, '-' for stdin, or the name of a "
                       "followed calendar; none: every followed calendar."),
    ] = None,
    days: Annotated[
        int | None,
        typer.Option("--days", metavar="N", help=f"Look this many days ahead from now ({calendar.DEFAULT_DAYS})."),
    ] = None,
    join_offset: Annotated[
        str | None,
        typer.Option("--join-offset", metavar="DURATION", help="Join relative to the start: -1m is a minute early."),
    ] = None,
    bot_name: Annotated[str | None, typer.Option("--bot-name", help="Name of the bots (default: config).")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Create, reschedule and cancel bots so every meeting in the calendar has one.

    One bot per occurrence with a Zoom, Meet, Teams or Webex link; a re-run changes only what the calendar changed.

    Skipped: cancelled, declined (config calendar.email), all-day and past events.

    Bots already staged or in a meeting are never touched.
    """
    _exit(calendar.sync(source, days, join_offset, bot_name, dry_run, as_json))


@calendar_app.command("add", epilog="Example: botsched calendar add 'https://calendar.google.com/calendar/ical/"
                      "me%40gmail.com/private-abc/basic.ics' --name work")
def calendar_add(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="An .ics file, an https:// (or webcal://) feed, "
                                          "or a CalDAV collection (caldav+https://...).")],
    name: Annotated[
        str | None, typer.Option("--name", help="Its name (keys ical/NAME:...); default from SOURCE.")
    ] = None,
    every: Annotated[str, typer.Option("--every", metavar="DURATION", help="Poll this often.")] = "10m",
    days: Annotated[
        int, typer.Option("--days", metavar="N", help="Look this many days ahead.")
    ] = calendar.DEFAULT_DAYS,
    join_offset: Annotated[
        str | None,
        typer.Option("--join-offset", metavar="DURATION", help="Join relative to the start: -1m is a minute early."),
    ] = None,
    bot_name: Annotated[str | None, typer.Option("--bot-name", help="Name of the bots (default: config).")] = None,
    user: Annotated[str | None, typer.Option("--caldav-user", "--user", metavar="USER",
                                             help="User name for CalDAV (or an https feed's Basic auth).")] = None,
    password_file: Annotated[str | None, typer.Option("--password-file", metavar="FILE",
                                                      help="Read the password from this file (at each poll).")] = None,
    password_env: Annotated[str | None, typer.Option("--password-env", metavar="VAR",
                                                     help="Read the password from this variable of the daemon's "
                                                     "environment.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Follow a calendar: the daemon syncs it now and then every --every, its bots kept apart."""
    _exit(calendar.add(source, name, every, days, join_offset, bot_name, user, password_file, password_env, as_json))


@calendar_app.command("list", epilog="Example: botsched calendar list")
def calendar_list(as_json: JsonOpt = False) -> None:
    """The followed calendars: when each last synced, and why it last failed."""
    calendar.list_calendars(as_json)


@calendar_app.command("remove", epilog="Example: botsched calendar remove work")
def calendar_remove(
    name: Annotated[str, typer.Argument(metavar="NAME", help="The followed calendar.")],
    as_json: JsonOpt = False,
) -> None:
    """Stop following a calendar; its scheduled bots are cancelled (bots under way are left alone)."""
    calendar.remove(name, as_json)


# -- daemon -----------------------------------------------------------------------


@app.command(rich_help_panel=SETUP, epilog="Example: botsched agents --json | jq '.[] | select(.alive | not)'")
def agents(as_json: JsonOpt = False) -> None:
    """List the daemons (agents) sharing this store: one machine, or a cluster (store.url)."""
    from botsched.cli.commands.agents import agents as show

    show(as_json)


@daemon_app.command("run", epilog="Example: BOTSCHED_HOME=/tmp/bs botsched daemon run")
def daemon_run(background: Annotated[bool, typer.Option("--background", hidden=True)] = False) -> None:
    """Run the daemon in the foreground (for systemd or a terminal)."""
    daemon.run(background)


@daemon_app.command("start", epilog="Example: botsched daemon start")
def daemon_start() -> None:
    """Start the daemon in the background; returns once it answers."""
    daemon.start()


@daemon_app.command("stop", epilog="Example: botsched daemon stop")
def daemon_stop() -> None:
    """Stop the daemon gracefully (scheduled bots stay queued)."""
    daemon.stop()


@daemon_app.command("status", epilog="Example: botsched daemon status --json | jq .counts")
def daemon_status(as_json: JsonOpt = False) -> None:
    """Health, effective config and bot counts per state (never starts a daemon)."""
    _exit(daemon.status(as_json))


@daemon_app.command("install", epilog="Example: botsched daemon install --print")
def daemon_install(
    print_only: Annotated[bool, typer.Option("--print", help="Only print the unit; change nothing.")] = False,
) -> None:
    """Install a systemd user unit so the daemon starts at login and restarts on failure."""
    daemon.install(print_only)


@daemon_app.command("uninstall", epilog="Example: botsched daemon uninstall")
def daemon_uninstall() -> None:
    """Disable and remove the systemd user unit."""
    daemon.uninstall()


@daemon_app.command("reload", epilog="Example: botsched config set scheduler.stage_lead_seconds 60 && "
                    "botsched daemon reload")
def daemon_reload() -> None:
    """Re-read config.toml in the running daemon (same as SIGHUP)."""
    daemon.reload()


# -- config -----------------------------------------------------------------------

_KEY_HELP = "A key such as scheduler.stage_lead_seconds."


@config_app.command("path", epilog='Example: $EDITOR "$(botsched config path)"')
def config_path() -> None:
    """Print where config.toml lives."""
    config.path()


@config_app.command("show", epilog="Example: botsched config show --json")
def config_show(as_json: JsonOpt = False) -> None:
    """The effective configuration (defaults plus config.toml)."""
    config.show(as_json)


@config_app.command("get", epilog="Example: botsched config get scheduler.stage_lead_seconds")
def config_get(key: Annotated[str, typer.Argument(help=_KEY_HELP)]) -> None:
    """Print one configuration value."""
    config.get(key)


@config_app.command("set", context_settings={"ignore_unknown_options": True},
                    epilog="Example: botsched config set runner.command '[\"/usr/local/bin/mybot\", \"--headless\"]'")
def config_set(
    key: Annotated[str, typer.Argument(help=_KEY_HELP)],
    value: Annotated[str, typer.Argument(help="A TOML value: 90, true, \"text\", [\"argv\", \"list\"].")],
) -> None:
    """Set one configuration value (validated) and reload a running daemon.

    runner.env.NAME sets one variable of the runner's environment (shown as ***).
    """
    config.set_value(key, value)


# -- webhooks (SPEC section 8) ------------------------------------------------------


@webhook_app.command("add", epilog="Example: botsched webhook add https://example.com/hook --state ended "
                     "--state fatal_error")
def webhook_add(
    url: Annotated[str, typer.Argument(metavar="URL", help="https://..., or http:// to a loopback host.")],
    state: Annotated[list[str] | None, typer.Option("--state", metavar="STATE",
                                                    help="Only changes into this state (repeatable).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Register an endpoint; prints its id and its signing secret (shown only once)."""
    from botsched.cli.commands import webhook

    webhook.add(url, state or [], as_json)


@webhook_app.command("list", epilog="Example: botsched webhook list --json")
def webhook_list(as_json: JsonOpt = False) -> None:
    """The endpoints: active or disabled (by 410 Gone), delivery counts, secrets masked."""
    from botsched.cli.commands import webhook

    webhook.list_endpoints(as_json)


@webhook_app.command("remove", epilog="Example: botsched webhook remove wh_Ab12Cd34Ef56Gh78")
def webhook_remove(endpoint: Annotated[str, typer.Argument(metavar="ID", help="The endpoint's wh_ id.")]) -> None:
    """Delete an endpoint and its deliveries (pending ones are not sent)."""
    from botsched.cli.commands import webhook

    webhook.remove(endpoint)


@webhook_app.command("test", epilog="Example: botsched webhook test wh_Ab12Cd34Ef56Gh78")
def webhook_test(
    endpoint: Annotated[str, typer.Argument(metavar="ID", help="The endpoint's wh_ id.")],
    as_json: JsonOpt = False,
) -> None:
    """Send a webhook.test event now and show the answer."""
    from botsched.cli.commands import webhook

    webhook.test(endpoint, as_json)


@webhook_app.command("deliveries", epilog="Example: botsched webhook deliveries --failed --bot bot_HiXYgjyeWmTVOaII")
def webhook_deliveries(
    bot: Annotated[str | None, typer.Option("--bot", metavar="BOT_ID", help="Only this bot's deliveries.")] = None,
    failed: Annotated[bool, typer.Option("--failed", help="Only deliveries that were given up.")] = False,
    limit: Annotated[int, typer.Option("--limit", metavar="N", help="At most N, newest first (0 = all).")] = 100,
    as_json: JsonOpt = False,
) -> None:
    """What was sent, when, with which answer, and the next attempt."""
    from botsched.cli.commands import webhook

    webhook.deliveries(bot, failed, limit, as_json)


@webhook_app.command("replay", epilog="Example: botsched webhook replay dlv_Ab12Cd34Ef56Gh78Ij90")
def webhook_replay(
    delivery: Annotated[str, typer.Argument(metavar="DELIVERY_ID", help="The delivery's dlv_ id.")],
    as_json: JsonOpt = False,
) -> None:
    """Queue a delivery again (same webhook-id and body, so receivers can deduplicate)."""
    from botsched.cli.commands import webhook

    webhook.replay(delivery, as_json)
# -- http -------------------------------------------------------------------------


@http_app.command("token", epilog="Example: botsched http token --rotate")
def http_token(
    rotate: Annotated[bool, typer.Option("--rotate", help="Make a new token; the old one stops working.")] = False,
) -> None:
    """Print the bearer token for TCP requests to the HTTP API (made on first use)."""
    http.token(rotate)
