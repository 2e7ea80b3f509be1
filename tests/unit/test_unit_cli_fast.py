"""Unit tests of the fast path's option reader (botsched.cli.fast) and of the one
declaration of create/show/list that it and the Typer app share."""

from __future__ import annotations

from typing import Any

import pytest

from botsched.cli.commands.bots import CREATE, FAST, LIST, LIST_LIMIT, SHOW
from botsched.cli.fast import Spec, parse_fast


def _fast(*args: str) -> tuple[Spec, dict[str, Any]] | None:
    return parse_fast(FAST, list(args))


def test_create_quiet_reads_every_option_form() -> None:
    found = _fast("create", "https://zoom.us/j/1", "--join-at", "+10m", "--bot-name=Notes", "--metadata", "a=1",
                  "--metadata=b=2", "--dedup-key", "k", "-q")
    assert found is not None
    spec, parsed = found
    assert spec is CREATE
    assert parsed == {"url_arg": "https://zoom.us/j/1", "meeting_url": None, "bot_name": "Notes", "join_at": "+10m",
                      "metadata": ["a=1", "b=2"], "dedup_key": "k", "as_json": False, "quiet": True}


def test_values_that_look_like_options_are_taken_as_values() -> None:
    found = _fast("create", "--meeting-url", "https://x.test/a", "--bot-name", "-q", "--json")
    assert found is not None and found[1]["bot_name"] == "-q" and found[1]["as_json"] and not found[1]["quiet"]


@pytest.mark.parametrize("args", [
    ["create", "https://zoom.us/j/1"],  # human output: Typer and rich
    ["create", "https://zoom.us/j/1", "-q", "--help"],
    ["create", "https://zoom.us/j/1", "-q", "--from", "f.jsonl"],  # bulk: not a fast command
    ["create", "https://zoom.us/j/1", "-q", "--bot-name"],  # a missing value: Typer's message
    ["create", "https://zoom.us/j/1", "https://zoom.us/j/2", "-q"],  # an extra argument
    ["create", "-q", "--bot-name", "a", "--bot-name", "b"],  # a value given twice
    ["create", "-q", "--json=yes"],  # a flag with a value
    ["show", "--json"],  # the bot id is missing
    ["list", "--json", "--limit", "ten"],
    ["list", "--json", "--limit=-1"],
    ["list", "--json", "--unknown"],
    ["reschedule", "bot_A", "--join-at", "+1m", "--json"],  # not served fast at all
    [],
])
def test_anything_unusual_goes_to_typer(args: list[str]) -> None:
    assert _fast(*args) is None


def test_show_and_list_defaults() -> None:
    show = _fast("show", "bot_AAAAAAAAAAAAAAAA", "--json")
    assert show is not None and show[0] is SHOW and show[1] == {"bot_id": "bot_AAAAAAAAAAAAAAAA", "as_json": True}
    listing = _fast("list", "--json", "--state", "scheduled", "--state=staged")
    assert listing is not None and listing[1] == {"states": ["scheduled", "staged"], "limit": LIST_LIMIT,
                                                  "as_json": True}
    assert LIST_LIMIT == 100
    assert _fast("list", "--json", "--limit", "0") == (LIST, {"states": [], "limit": 0, "as_json": True})


def _typer_params(name: str) -> dict[str, Any]:
    import typer

    from botsched.cli.app import app

    command = typer.main.get_command(app).commands[name]  # type: ignore[attr-defined]
    return {param.name: param for param in command.params}


@pytest.mark.parametrize("name", ["create", "show", "list"])
def test_typer_declares_what_the_fast_reader_reads(name: str) -> None:
    """Both read one declaration: the same flags, help and defaults, so they cannot drift."""
    spec = FAST[name]
    params = {param.name: param for param in _typer_params(name).values()}
    for opt in spec.options:
        typer_name = {"states": "state"}.get(opt.dest, opt.dest)
        param = params[typer_name]
        assert sorted(param.opts) == sorted(opt.flags), opt.dest
        assert param.help == opt.help
        if opt.default is not None:
            assert param.default == opt.default
    for arg in spec.arguments:
        assert params[arg.dest].help == arg.help  # type: ignore[attr-defined]
