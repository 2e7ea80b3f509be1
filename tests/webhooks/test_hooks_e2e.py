"""``[[hooks]]`` through the real daemon: real processes get the body on stdin and the
``BOTSCHED_*`` environment; a hanging hook is killed, failing ones are logged, no shell."""

from __future__ import annotations

import json
import sys
import textwrap
from pathlib import Path
from typing import Any

import tomli_w
from webhook_helpers import ThreadReceiver

from tests.support.home import Homes, merge_config, pid_alive, wait_until

URL = "https://meet.google.com/abc-defg-hij"

RECORDER = textwrap.dedent("""
    import json, os, sys
    out = sys.argv[1]
    env = {k: v for k, v in os.environ.items() if k.startswith("BOTSCHED_")}
    record = {"stdin": sys.stdin.read(), "env": env, "argv": sys.argv[1:]}
    with open(os.path.join(out, env["BOTSCHED_BOT_ID"] + "." + env["BOTSCHED_STATE"]), "w") as f:
        json.dump(record, f)
""")


def test_hooks_get_body_and_env_hang_is_killed_failures_logged_no_shell(make_home: Homes, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    mark = tmp_path / "shell-ran"
    pid_file = tmp_path / "sleeper.pid"
    sleeper = f"import os, time; open({str(pid_file)!r}, 'w').write(str(os.getpid())); time.sleep(60)"
    cfg: dict[str, Any] = merge_config({"webhooks": {"retry_seconds": [0.2]}})
    cfg["hooks_timeout_seconds"] = 1
    cfg["hooks"] = [
        {"command": [sys.executable, str(script), str(out), f"$(touch {mark}); touch {mark}"],
         "states": ["joined_recording", "ended"]},
        {"command": [sys.executable, "-c", "import sys; sys.stderr.write('hook broke\\n'); sys.exit(3)"]},
        {"command": ["/nonexistent/hook-program"], "states": ["ended"]},
        {"command": [sys.executable, "-c", sleeper], "states": ["ended"]},
    ]
    home = make_home(tomli_w.dumps(cfg))
    receiver = ThreadReceiver()
    try:
        endpoint: dict[str, Any] = home.json("webhook", "add", receiver.url())
        bot_id = home.create(URL)
        wait_until(lambda: (out / f"{bot_id}.ended").exists(), 20, what="the ended hook")
        shown = home.show(bot_id)
        assert shown["state"] == "ended"
        record = json.loads((out / f"{bot_id}.ended").read_text())
        body = json.loads(record["stdin"])
        assert body["type"] == "bot.state_change"
        assert body["data"]["bot_id"] == bot_id and body["data"]["new_state"] == "ended"
        assert body["data"]["old_state"] == "joined_recording"
        assert body["data"]["bot"]["meeting_url"] == URL
        assert record["env"]["BOTSCHED_BOT_ID"] == bot_id
        assert record["env"]["BOTSCHED_STATE"] == "ended"
        assert record["env"]["BOTSCHED_OLD_STATE"] == "joined_recording"
        assert record["env"]["BOTSCHED_DETAIL"] == (shown["events"][-1]["detail"] or "")
        joined = json.loads((out / f"{bot_id}.joined_recording").read_text())
        joined_event = next(e for e in shown["events"] if e["state"] == "joined_recording")
        assert joined["env"]["BOTSCHED_DETAIL"] == (joined_event["detail"] or "")
        assert joined["env"]["BOTSCHED_OLD_STATE"] == "joining"
        # the argv went as a list: the shell syntax arrived as one literal argument
        assert record["argv"][-1] == f"$(touch {mark}); touch {mark}"
        assert not mark.exists(), "a hook went through a shell"
        assert not list(out.glob(f"{bot_id}.joining")), "a hook ran for a state it did not ask for"
        # the hook's body is the webhook's body: the same id on both paths
        wait_until(lambda: any(json.loads(r.body)["id"] == body["id"] for r in receiver.snapshot()), 10,
                   what="the webhook of the ended change")
        assert endpoint["id"].startswith("wh_")

        # the hanging hook is killed after hooks_timeout_seconds
        pid = int(wait_until(lambda: pid_file.exists() and pid_file.read_text(), 10, what="the sleeper to start"))
        wait_until(lambda: not pid_alive(pid), 5, what="the hanging hook to be killed")
        wait_until(lambda: "killed after 1 s" in home.log.read_text(), 5, what="the kill in the log")
        log = home.log.read_text()
        assert "exit 3: hook broke" in log, "a failing hook is logged with its stderr"
        assert "/nonexistent/hook-program" in log and "cannot start" in log

        # nothing was harmed: the daemon keeps going, the next bot runs and gets its hooks
        pid_file.unlink()
        other = home.create(URL)
        wait_until(lambda: (out / f"{other}.ended").exists(), 20, what="the second bot's hook")
        assert home.show(other)["state"] == "ended"
    finally:
        receiver.close()


def test_hooks_set_and_reloaded_while_running(make_home: Homes, tmp_path: Path) -> None:
    """``config set hooks ...`` reloads the daemon: the next change runs the new hook."""
    out = tmp_path / "out"
    out.mkdir()
    script = tmp_path / "recorder.py"
    script.write_text(RECORDER)
    home = make_home()
    first = home.create(URL)
    wait_until(lambda: home.show(first)["state"] == "ended", 20, what="the first bot to end")
    assert not list(out.iterdir())
    value = f"[{{command = {json.dumps([sys.executable, str(script), str(out)])}, states = [\"ended\"]}}]"
    home.ok("config", "set", "hooks", value)
    bad = home.run("config", "set", "hooks", '[{command = "not-a-list"}]')
    assert bad.returncode == 2 and bad.stderr.startswith("error:")
    second = home.create(URL)
    wait_until(lambda: (out / f"{second}.ended").exists(), 20, what="the reloaded hook")
    assert [p.name for p in out.iterdir()] == [f"{second}.ended"]
