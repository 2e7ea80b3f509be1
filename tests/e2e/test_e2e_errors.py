"""Bad input (SPEC §5): exit codes, one ``error:`` line, no traceback, store unchanged;
reschedule and cancel inside and outside ``scheduled``; unknown ids."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime

import pytest

from tests.support.home import assert_clean_error
from tests.support.times import UTC, parse_z

URL = "https://meet.google.com/abc-defg-hij"
FAR = "2028-05-01T12:00:00Z"
UNKNOWN = "bot_AAAAAAAAAAAAAAAA"

BAD_INPUTS = [
    pytest.param(["create"], 2, "", id="missing-url"),
    pytest.param(["create", "--join-at", FAR], 2, "", id="missing-url-with-time"),
    pytest.param(["create", "ftp://files.example.com/meeting"], 2, "", id="ftp-url"),
    pytest.param(["create", "https://zoom.us/j/1 2"], 2, "", id="url-with-space"),
    pytest.param(["create", "https://zoom.us/j/1\t2"], 2, "", id="url-with-tab"),
    pytest.param(["create", "https://zoom.us/j/" + "1" * 2040], 2, "", id="url-over-2048"),
    pytest.param(["create", "https://"], 2, "", id="url-without-host"),
    pytest.param(["create", "zoom.us/j/1"], 2, "", id="url-without-scheme"),
    pytest.param(["create", URL, "--bot-name", ""], 2, "", id="empty-bot-name"),
    pytest.param(["create", URL, "--bot-name", "b" * 101], 2, "", id="bot-name-101"),
    pytest.param(["create", URL, "--bot-name", "a\x07b"], 2, "", id="bot-name-control-char"),
    pytest.param(["create", URL, "--metadata", "noequals"], 2, "", id="metadata-noequals"),
    pytest.param(["create", URL, "--metadata", "=value"], 2, "", id="metadata-empty-key"),
    pytest.param(["create", URL, *[f"--metadata=k{i}=v" for i in range(51)]], 2, "", id="metadata-51-pairs"),
    pytest.param(["create", URL, "--metadata", "big=" + "x" * 17000], 2, "", id="metadata-over-16k"),
    pytest.param(["create", URL, "--join-at", "tomorrow"], 2, "", id="bad-time-word"),
    pytest.param(["create", URL, "--join-at", "2028-13-45T10:00:00Z"], 2, "", id="bad-time-month"),
    pytest.param(["create", URL, "--join-at", "+5x"], 2, "", id="bad-relative"),
    pytest.param(["create", URL, "--join-at", ""], 2, "", id="empty-time"),
    pytest.param(["create", URL, "--bogus"], 2, "", id="unknown-option"),
    pytest.param(["create", URL, "--join-at"], 2, "", id="option-missing-value"),
    pytest.param(["show"], 2, "", id="show-missing-argument"),
    pytest.param(["reschedule", UNKNOWN], 2, "", id="reschedule-missing-join-at"),
    pytest.param(["cancel"], 2, "", id="cancel-missing-argument"),
    pytest.param(["wait"], 2, "", id="wait-missing-argument"),
    pytest.param(["list", "--limit", "-1"], 2, "", id="limit-negative"),
    pytest.param(["list", "--limit", "ten"], 2, "", id="limit-not-a-number"),
    pytest.param(["list", "--state", "sleeping"], 2, "", id="unknown-state"),
    pytest.param(["list", "--state", "scheduled", "--state", "nope"], 2, "", id="unknown-second-state"),
    pytest.param(["frobnicate"], 2, "", id="unknown-command"),
    pytest.param(["daemon", "frobnicate"], 2, "", id="unknown-daemon-command"),
    pytest.param(["show", UNKNOWN], 3, UNKNOWN, id="show-unknown-id"),
    pytest.param(["show", "not-an-id"], 3, "", id="show-malformed-id"),
    pytest.param(["reschedule", UNKNOWN, "--join-at", FAR], 3, UNKNOWN, id="reschedule-unknown-id"),
    pytest.param(["cancel", UNKNOWN], 3, UNKNOWN, id="cancel-unknown-id"),
    pytest.param(["wait", UNKNOWN, "--timeout", "1"], 3, UNKNOWN, id="wait-unknown-id"),
    pytest.param(["events", UNKNOWN], 3, UNKNOWN, id="events-unknown-id"),
    pytest.param(["leave", UNKNOWN], 3, UNKNOWN, id="leave-unknown-id"),
]


@pytest.fixture(scope="module")
def populated(module_home):
    """A home with a few far-future bots and its ``list --json`` baseline."""
    for n in range(3):
        module_home.create(f"https://zoom.us/j/{n}", "--join-at", f"2028-0{n + 1}-01T12:00:00Z",
                           "--metadata", f"n={n}", "--dedup-key", f"base-{n}")
    return module_home, module_home.list_all()


@pytest.fixture(scope="module")
def bad_results(populated):
    """Every bad input of the table, run once (4 at a time, to keep the suite quick)."""
    home, _ = populated
    with ThreadPoolExecutor(max_workers=4) as pool:
        futures = {param.id: pool.submit(home.run, *param.values[0]) for param in BAD_INPUTS}
    return {name: future.result() for name, future in futures.items()}


@pytest.mark.parametrize(("args", "code", "mentions"), BAD_INPUTS)
def test_bad_input(request, bad_results, args, code, mentions):
    result = bad_results[request.node.callspec.id]
    stderr = assert_clean_error(result, code)
    assert mentions in stderr
    assert result.stdout == "", f"stdout on error: {result.stdout!r}"


def test_bad_inputs_left_the_store_unchanged(populated, bad_results):
    home, baseline = populated
    after = home.list_all()
    added = [(bot["meeting_url"][:60], bot["bot_name"][:30]) for bot in after if bot not in baseline]
    assert after == baseline, f"refused commands changed the store; new or changed bots: {added}"


def test_past_time_says_in_the_past_and_shows_now(populated):
    home, baseline = populated
    for past in ("2020-01-01T00:00:00Z", "-5m", "2020-01-01T00:00:00.500+02:00"):
        result = home.run("create", URL, "--join-at", past)
        stderr = assert_clean_error(result, 2)
        assert "in the past" in stderr, stderr
        if past.startswith("2020"):
            now = datetime.now(UTC)
            shown = [parse_z(t + "Z") for t in re.findall(r"(\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?)Z", stderr)]
            assert any(abs((t - now).total_seconds()) < 60 for t in shown), f"the current time is not shown: {stderr}"
    assert home.list_all() == baseline


def test_reschedule_of_a_bot_in_the_past_is_refused(populated):
    home, baseline = populated
    bot_id = baseline[0]["id"]
    result = home.run("reschedule", bot_id, "--join-at", "2020-01-01T00:00:00Z")
    assert "in the past" in assert_clean_error(result, 2)
    assert home.list_all() == baseline


def test_usage_errors_have_no_box_even_on_a_terminal_width(populated):
    home, _ = populated
    result = home.run("create", URL, "--no-such-flag", env={"COLUMNS": "80", "TERM": "xterm-256color"})
    assert_clean_error(result, 2)
    assert "--no-such-flag" in result.stderr


# -- reschedule and cancel ------------------------------------------------------------


@pytest.fixture(scope="module")
def work_home(module_make_home):
    """A second shared home for the tests below (the table's home must stay unchanged)."""
    home = module_make_home()
    home.start()
    return home


def test_reschedule_and_cancel_while_scheduled(work_home):
    home = work_home
    a = home.create(URL, "--join-at", FAR)
    b = home.create(URL, "--join-at", FAR)
    c = home.create(URL, "--join-at", FAR)
    moved = home.json("reschedule", a, "--join-at", "2029-02-02T08:30:00.125Z")
    assert moved["id"] == a and moved["join_at"] == "2029-02-02T08:30:00.125Z"
    assert moved["state"] == "scheduled"
    assert home.show(a)["join_at"] == "2029-02-02T08:30:00.125Z"
    out = home.ok("reschedule", a, "--join-at", "2029-02-02T09:00:00Z").stdout
    assert a in out
    assert home.show(a)["join_at"] == "2029-02-02T09:00:00Z"

    result = home.ok("cancel", a, b)
    assert a in result.stdout and b in result.stdout
    gone_show, gone_cancel = home.run_many([["show", a], ["cancel", b]])
    assert_clean_error(gone_show, 3)
    assert_clean_error(gone_cancel, 3)
    listed = {bot["id"] for bot in home.list_all()}
    assert c in listed and a not in listed and b not in listed


def test_cancel_mixed_ids_cancels_the_good_ones(work_home):
    home = work_home
    good = home.create(URL, "--join-at", FAR)
    result = home.run("cancel", UNKNOWN, good)
    assert result.returncode == 3, (result.returncode, result.stderr)
    assert "Traceback" not in result.stderr
    assert UNKNOWN in result.stderr
    assert_clean_error(home.run("show", good), 3)


def test_reschedule_and_cancel_refused_when_staged(make_home):
    home = make_home({"scheduler": {"stage_lead_seconds": 30}})
    bot_id = home.create(URL, "--join-at", "+20s")  # inside the stage lead: staged at once
    home.ok("wait", bot_id, "--state", "staged", "--timeout", "10")
    before = home.show(bot_id)
    for args in (["reschedule", bot_id, "--join-at", FAR], ["cancel", bot_id]):
        stderr = assert_clean_error(home.run(*args), 4)
        assert "staged" in stderr, stderr
    after = home.show(bot_id)
    assert after == before
    # rescheduling a far bot to inside the stage lead warns, and it is staged at once
    far = home.create(URL, "--join-at", FAR)
    moved = home.run("reschedule", far, "--join-at", "+25s")
    assert moved.returncode == 0, moved.stderr
    assert any(line.startswith("warning:") for line in moved.stderr.splitlines()), moved.stderr
    assert home.json("wait", far, "--state", "staged", "--timeout", "10")["state"] == "staged"


def test_reschedule_and_cancel_refused_when_ended(work_home):
    home = work_home
    bot_id = home.create(URL)
    home.ok("wait", bot_id, "--timeout", "15")
    for args in (["reschedule", bot_id, "--join-at", FAR], ["cancel", bot_id]):
        stderr = assert_clean_error(home.run(*args), 4)
        assert "ended" in stderr, stderr
    assert home.show(bot_id)["state"] == "ended"


def test_leave_refused_when_not_in_a_meeting(work_home):
    home = work_home
    bot_id = home.create(URL, "--join-at", FAR)
    stderr = assert_clean_error(home.run("leave", bot_id), 4)
    assert "scheduled" in stderr
