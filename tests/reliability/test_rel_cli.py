"""Bad input at the CLI (issue 5, SPEC §5): a table of bad times, URLs, names, metadata,
dedup keys, ids, option combinations and ``--from`` files. Each must exit with its
documented code and print exactly its ``error:`` line(s) -- one, or for a bulk file one per
bad line plus a summary -- never a traceback, nothing on stdout; and the store must be
unchanged afterwards (``list --json --limit 0`` identical).

Arguments containing ``\\udcff`` reach the command as the raw byte 0xFF (not UTF-8), the way
a shell passes a Latin-1 file name or a mangled paste.
"""

from __future__ import annotations

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from .relhelpers import record_figures

URL = "https://zoom.us/j/123456"
FAR = "2028-05-01T12:00:00Z"
UNKNOWN = "bot_AAAAAAAAAAAAAAAA"
OTHER = "bot_BBBBBBBBBBBBBBBB"
BAD_BYTE = "\udcff"  # os.fsencode -> b"\xff"


def line(**fields: Any) -> str:
    return json.dumps(fields)


GOOD = line(meeting_url=URL, join_at=FAR)

#: name -> file content for ``--from``
FILES: dict[str, bytes] = {
    "empty": b"",
    "blank-lines": b"\n   \n\t\n",
    "garbage": bytes(range(256)) * 4,
    "not-json": (GOOD + "\n{oops\n").encode(),
    "array-line": (GOOD + "\n[1, 2]\n").encode(),
    "past-time": line(meeting_url=URL, join_at="2020-01-01T00:00:00Z").encode() + b"\n",
    "bad-relative": line(meeting_url=URL, join_at="+5 minutes").encode() + b"\n",
    "unknown-field": line(meeting_url=URL, join_at=FAR, colour="red").encode() + b"\n",
    "join-at-number": line(meeting_url=URL, join_at=1893456000).encode() + b"\n",
    "join-at-nan": b'{"meeting_url": "' + URL.encode() + b'", "join_at": NaN}\n',
    "metadata-not-strings": line(meeting_url=URL, metadata={"n": 1}).encode() + b"\n",
    "bad-url": line(meeting_url="ftp://x.example.com").encode() + b"\n",
    "long-line": line(meeting_url=URL, bot_name="x" * 200_000).encode() + b"\n",
    "surrogate-name": b'{"meeting_url": "' + URL.encode() + b'", "bot_name": "\\ud800"}\n',
    "surrogate-url": b'{"meeting_url": "https://zoom.us/j/\\udfff"}\n',
    "three-bad-of-five": "\n".join([
        line(meeting_url="nope"), GOOD, line(meeting_url=URL, join_at="yesterday"), GOOD, "{",
    ]).encode() + b"\n",
    "dedup-twice": "\n".join([line(meeting_url=URL, deduplication_key="same"),
                              line(meeting_url=URL, deduplication_key="same")]).encode() + b"\n",
    "dedup-taken": line(meeting_url=URL, deduplication_key="taken-key").encode() + b"\n",
}


def P(args: list[str], code: int | tuple[int, ...], lines: int | None = 1, id: str = "", mentions: str = ""):
    return pytest.param(args, code, lines, mentions, id=id)


BAD = [
    # -- times (exit 2)
    P(["create", URL, "--join-at", "2028-02-30T10:00:00Z"], 2, id="time-feb-30"),
    P(["create", URL, "--join-at", "2028-01-01T25:00:00Z"], 2, id="time-hour-25"),
    P(["create", URL, "--join-at", "2028-01-01T10:00:00+25:00"], 2, id="time-offset-25h"),
    P(["create", URL, "--join-at", "10000-01-01T00:00:00Z"], 2, id="time-year-10000"),
    P(["create", URL, "--join-at", "+99999999d"], 2, id="time-relative-overflow"),
    P(["create", URL, "--join-at", "now"], 2, id="time-word"),
    P(["create", URL, "--join-at", "2028-01-01"], 2, id="time-date-only"),
    P(["create", URL, "--join-at", "+1.5h"], 2, id="time-fractional-relative"),
    P(["create", URL, "--join-at", "+1h-5m"], 2, id="time-mixed-signs"),
    P(["create", URL, "--join-at", "-0s"], 2, id="time-minus-zero", mentions="past"),
    P(["create", URL, "--join-at", "1999-12-31T23:59:59Z"], 2, id="time-past", mentions="past"),
    P(["create", URL, "--join-at", "２０３１-01-01T10:00:00Z"], 2, id="time-fullwidth-digits"),
    P(["create", URL, "--join-at", "٢٠٣١-٠١-٠١T10:00:00Z", "-q"], 2, id="time-arabic-indic-digits"),
    P(["create", URL, "--join-at", "+1h" + BAD_BYTE], 2, id="time-non-utf8"),
    P(["reschedule", "{SCHED}", "--join-at", "2020-01-01T00:00:00Z"], 2, id="reschedule-past", mentions="past"),
    # -- meeting URLs (exit 2)
    P(["create", "javascript:alert(1)"], 2, id="url-javascript"),
    P(["create", "https://host.example:99999/x"], 2, id="url-port-too-big"),
    P(["create", "https://host.example:abc/x"], 2, id="url-port-letters"),
    P(["create", "http://:80/x"], 2, id="url-no-host"),
    P(["create", "https://example.com/a\u0085b"], 2, id="url-c1-control"),
    P(["create", "https://exa mple.com/"], 2, id="url-space"),
    P(["create", "https://example.com/" + "a" * 2029], 2, id="url-2049-chars"),
    P(["create", ""], 2, id="url-empty"),
    P(["create", URL, "--meeting-url", "https://zoom.us/j/other"], 2, id="url-twice-different"),
    P(["create", "https://zoom.us/j/" + BAD_BYTE, "-q"], 2, id="url-non-utf8-quiet"),
    P(["create", "https://zoom.us/j/" + BAD_BYTE], 2, id="url-non-utf8"),
    # -- bot names (exit 2)
    P(["create", URL, "--bot-name", "\u200b"], 2, id="name-zero-width"),
    P(["create", URL, "--bot-name", "é" * 101], 2, id="name-101-unicode"),
    P(["create", URL, "--bot-name", "line\nbreak"], 2, id="name-newline"),
    P(["create", URL, "--bot-name", "Bot " + BAD_BYTE, "-q"], 2, id="name-non-utf8-quiet"),
    P(["create", URL, "--bot-name", "Bot " + BAD_BYTE], 2, id="name-non-utf8"),
    # -- metadata (exit 2)
    P(["create", URL, "--metadata", "=v"], 2, id="metadata-empty-key"),
    P(["create", URL, "--metadata", "k=" + "v" * 16_400], 2, id="metadata-over-16k"),
    P(["create", URL, *[f"--metadata=k{i}=v" for i in range(51)]], 2, id="metadata-51-pairs"),
    P(["create", URL, "--metadata", "k=" + BAD_BYTE], 2, id="metadata-non-utf8"),
    # -- dedup keys (exit 2; taken: 4)
    P(["create", URL, "--dedup-key", ""], 2, id="dedup-empty"),
    P(["create", URL, "--dedup-key", "k" * 257], 2, id="dedup-257"),
    P(["create", URL, "--dedup-key", "k" + BAD_BYTE, "-q"], 2, id="dedup-non-utf8-quiet"),
    P(["create", URL, "--dedup-key", "taken-key"], 4, id="dedup-taken", mentions="taken-key"),
    # -- ids (exit 3)
    P(["show", "BOT_AAAAAAAAAAAAAAAA"], 3, id="id-uppercase-prefix"),
    P(["show", "bot_AAAAAAAAAAAAAAA!"], 3, id="id-punctuation"),
    P(["show", "bot_AAAAAAAAAAAAAAA\u0130"], 3, id="id-non-ascii"),
    P(["show", UNKNOWN], 3, id="id-unknown", mentions=UNKNOWN),
    P(["cancel", UNKNOWN, OTHER], 3, lines=2, id="cancel-two-unknown"),
    P(["reschedule", UNKNOWN, "--join-at", FAR], 3, id="reschedule-unknown"),
    P(["wait", UNKNOWN, "--timeout", "1"], 3, id="wait-unknown"),
    P(["leave", "nonsense"], 3, id="leave-malformed-id"),
    P(["show", "bot_" + BAD_BYTE], (2, 3), id="id-non-utf8"),
    P(["events", BAD_BYTE], (2, 3), id="events-id-non-utf8"),
    # -- conflicts (exit 4)
    P(["leave", "{SCHED}"], 4, id="leave-scheduled", mentions="scheduled"),
    P(["reschedule", "{ENDED}", "--join-at", FAR], 4, id="reschedule-ended", mentions="ended"),
    P(["cancel", "{ENDED}"], 4, id="cancel-ended", mentions="ended"),
    # -- options (exit 2)
    P(["list", "--limit", "99999999999999999999"], 2, id="limit-huge"),
    P(["list", "--limit", "9223372036854775807"], 2, id="limit-int64-max"),
    P(["list", "--limit", "1.5"], 2, id="limit-fraction"),
    P(["list", "--state", "Scheduled"], 2, id="state-wrong-case"),
    P(["list", "--state", BAD_BYTE], 2, id="state-non-utf8"),
    P(["wait", "{SCHED}", "--timeout", "-1"], 2, id="wait-negative-timeout"),
    P(["wait", "{SCHED}", "--timeout", "nan"], 2, id="wait-nan-timeout"),
    P(["wait", "{SCHED}", "--state", "sleeping", "--timeout", "1"], 2, id="wait-unknown-state"),
    P(["create", URL, "--from", "{FILE:not-json}"], 2, id="from-with-url"),
    P(["create", "--from", "{FILE:not-json}", "--join-at", FAR], 2, id="from-with-join-at"),
    P(["create", URL, "extra-positional"], 2, id="create-two-positionals"),
    P(["config", "set", "scheduler.stage_lead_seconds", "soon"], 2, id="config-bad-value"),
    P(["config", "set", "no.such.key", "1"], 2, id="config-unknown-key"),
    # -- files for --from
    P(["create", "--from", "/nonexistent/bots.jsonl"], 2, id="from-missing-file"),
    P(["create", "--from", "{DIR}"], 2, id="from-directory"),
    P(["create", "--from", "{FILE:empty}"], 2, id="from-empty"),
    P(["create", "--from", "{FILE:blank-lines}"], 2, id="from-blank-lines"),
    P(["create", "--from", "{FILE:garbage}"], 2, lines=None, id="from-binary-garbage"),
    P(["create", "--from", "{FILE:not-json}"], 2, lines=2, id="from-not-json", mentions="line 2"),
    P(["create", "--from", "{FILE:array-line}"], 2, lines=2, id="from-array-line", mentions="line 2"),
    P(["create", "--from", "{FILE:past-time}"], 2, lines=2, id="from-past-time", mentions="past"),
    P(["create", "--from", "{FILE:bad-relative}"], 2, lines=2, id="from-bad-relative"),
    P(["create", "--from", "{FILE:unknown-field}"], 2, lines=2, id="from-unknown-field", mentions="colour"),
    P(["create", "--from", "{FILE:join-at-nan}"], 2, lines=2, id="from-join-at-nan"),
    P(["create", "--from", "{FILE:join-at-number}"], 2, lines=2, id="from-join-at-number", mentions="join_at"),
    P(["create", "--from", "{FILE:bad-url}"], 2, lines=2, id="from-bad-url", mentions="ftp://x.example.com"),
    P(["create", "--from", "{FILE:metadata-not-strings}"], 2, lines=2, id="from-metadata-not-strings"),
    P(["create", "--from", "{FILE:long-line}"], 2, lines=2, id="from-line-over-128k"),
    P(["create", "--from", "{FILE:surrogate-name}"], 2, lines=2, id="from-lone-surrogate-name"),
    P(["create", "--from", "{FILE:surrogate-url}"], 2, lines=2, id="from-lone-surrogate-url"),
    P(["create", "--from", "{FILE:three-bad-of-five}"], 2, lines=4, id="from-three-bad-lines", mentions="line 5"),
    P(["create", "--from", "{FILE:dedup-twice}"], 4, lines=None, id="from-dedup-twice", mentions="same"),
    P(["create", "--from", "{FILE:dedup-taken}"], 4, lines=None, id="from-dedup-taken", mentions="taken-key"),
]


@pytest.fixture(scope="module")
def populated(module_make_home, tmp_path_factory):
    """A home with a far scheduled bot, a bot holding a dedup key, an ended bot, files for
    ``--from``; and its ``list --json --limit 0`` baseline."""
    home = module_make_home()
    home.ok("daemon", "start")
    sched = home.create(URL, "--join-at", FAR, "--metadata", "role=scheduled")
    home.create("https://meet.google.com/abc-defg-hij", "--join-at", "2029-01-01T00:00:00.250Z",
                "--dedup-key", "taken-key", "--bot-name", "Holder")
    ended = home.create("https://teams.microsoft.com/l/meetup-join/x")  # ad-hoc: runs and ends at once
    home.ok("wait", ended, "--timeout", "20")
    files = tmp_path_factory.mktemp("from-files")
    for name, content in FILES.items():
        (files / name).write_bytes(content)
    subst = {"{SCHED}": sched, "{ENDED}": ended, "{DIR}": str(files)}
    subst.update({f"{{FILE:{name}}}": str(files / name) for name in FILES})
    return home, subst, home.list_all()


@pytest.fixture(scope="module")
def bad_results(populated):
    home, subst, _ = populated
    calls = {param.id: [subst.get(arg, arg) for arg in param.values[0]] for param in BAD}
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {name: pool.submit(home.run, *args) for name, args in calls.items()}
    results = {name: future.result() for name, future in futures.items()}
    record_figures("cli bad input", cases=len(BAD))
    return results


def test_every_case_reaches_the_command_as_meant(populated):
    """A mistyped placeholder (``{SCHED}``, ``{FILE:name}``) would reach the command as
    literal text and be refused for the wrong reason, so that case would pass without
    testing its bad value; an unused file means a case was lost."""
    _, subst, _ = populated
    placeholder = re.compile(r"\{(?:[A-Z]+|FILE:[^}]*)\}")
    unresolved = {param.id: arg for param in BAD for arg in param.values[0]
                  if placeholder.search(subst.get(arg, arg))}
    assert not unresolved, f"placeholders with no value: {unresolved}"
    used = {arg for param in BAD for arg in param.values[0]}
    assert {f"{{FILE:{name}}}" for name in FILES} <= used, "a --from file no case reads"


@pytest.mark.parametrize(("args", "code", "lines", "mentions"), BAD)
def test_bad_input(request, bad_results, args, code, lines, mentions):
    result = bad_results[request.node.callspec.id]
    everything = result.stdout + result.stderr
    assert "Traceback" not in everything, f"a traceback:\n{everything}"
    assert "╭" not in everything, f"Typer's framed box:\n{everything}"
    codes = code if isinstance(code, tuple) else (code,)
    assert result.returncode in codes, f"exit {result.returncode}, expected {code}\n{result.stderr}"
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    others = [line for line in result.stderr.splitlines() if not line.startswith(("error:", "warning:"))]
    assert not others, f"stderr lines that are neither error: nor warning::\n{result.stderr}"
    if lines is None:
        assert errors, f"no error: line\n{result.stderr}"
    else:
        assert len(errors) == lines, f"expected {lines} error: line(s), got:\n{result.stderr}"
    assert mentions in result.stderr, f"the error does not mention {mentions!r}:\n{result.stderr}"
    assert result.stdout == "", f"stdout on error: {result.stdout!r}"


def test_the_store_is_unchanged_after_all_the_bad_input(populated, bad_results):
    home, _, baseline = populated
    after = home.list_all()
    assert after == baseline, "refused commands changed the store: " + json.dumps(
        [bot for bot in after if bot not in baseline], indent=1)[:3000]
    assert home.run("config", "get", "scheduler.stage_lead_seconds").stdout.strip() == "1"
    assert not (Path(home.path) / "config.toml.tmp").exists()
    assert os.path.exists(home.socket)


def test_human_list_and_show_still_work_after_the_bad_input(populated, bad_results):
    """A refused input must not leave anything behind that breaks reading the store."""
    home, _subst, _baseline = populated
    result = home.run("list", "--limit", "0")
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    for bot in home.list_all():
        shown = home.run("show", bot["id"])
        assert shown.returncode == 0, f"show {bot['id']} (join_at {bot['join_at']!r}): {shown.stderr}"
