"""The fast path stays fast: ``create -q``, ``show --json`` and ``list --json`` import none
of typer, click, rich, pendulum or the daemon side (checked in ``sys.modules`` at exit of
the real entry point, run in a subprocess against a real tiny daemon stand-in); and the
package has no import cycle, counting imports inside functions."""

from __future__ import annotations

import ast
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import botsched
from botsched.core import protocol

HEAVY = ("typer", "click", "rich", "pendulum", "botsched.daemon")
BOT = {"id": "bot_AAAAAAAAAAAAAAAA", "state": "scheduled", "meeting_url": "https://zoom.us/j/1", "bot_name": "B",
       "join_at": "2030-01-01T00:00:00Z", "created_at": "2026-01-01T00:00:00Z", "metadata": {}, "events": []}
#: Runs the installed entry point and prints the modules it imported, at exit.
SCRIPT = ("import atexit, sys, json; "
          "atexit.register(lambda: sys.__stderr__.write('MODULES ' + json.dumps(sorted(sys.modules)) + '\\n')); "
          "from botsched.cli.main import main; main(sys.argv[1:])")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    """A BOTSCHED_HOME whose socket answers every request with one bot (or a page of it)."""
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(_socket_of(tmp_path)))
    server.listen()

    def serve() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            with conn, conn.makefile("rb") as lines:
                for line in lines:
                    op = protocol.decode(line)["op"]
                    conn.sendall(protocol.reply({"bots": [BOT], "more": False} if op == "list" else BOT))

    threading.Thread(target=serve, daemon=True).start()
    yield tmp_path
    server.close()


def _socket_of(home: Path) -> Path:
    env = {**os.environ, "BOTSCHED_HOME": str(home)}
    out = subprocess.run([sys.executable, "-c", "from botsched.core.paths import socket_path; print(socket_path())"],
                         env=env, capture_output=True, text=True, check=True).stdout
    path = Path(out.strip())
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    return path


@pytest.mark.parametrize("args", [
    ["create", "-q", "https://zoom.us/j/1", "--join-at", "+1h"],
    ["show", "bot_AAAAAAAAAAAAAAAA", "--json"],
    ["list", "--json"],
])
def test_the_fast_path_imports_nothing_heavy(home: Path, args: list[str]) -> None:
    env = {**os.environ, "BOTSCHED_HOME": str(home), "BOTSCHED_NO_AUTOSTART": "1"}
    done = subprocess.run([sys.executable, "-c", SCRIPT, *args], env=env, capture_output=True, text=True, timeout=60,
                          check=False)
    assert done.returncode == 0, done.stderr
    assert "bot_AAAAAAAAAAAAAAAA" in done.stdout
    modules = json.loads(done.stderr.rsplit("MODULES ", 1)[1])
    heavy = [name for name in modules if any(name == h or name.startswith(h + ".") for h in HEAVY)]
    assert heavy == [], f"botsched {' '.join(args)} imported {heavy}"
    assert "botsched.cli.commands.bots" in modules  # (it did run the fast path)


def _imports(path: Path) -> set[str]:
    """Every botsched module ``path`` imports, at the top or inside functions (TYPE_CHECKING
    blocks excluded: they never run)."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    checking: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and isinstance(node.test, ast.Name) and node.test.id == "TYPE_CHECKING":
            checking.update(id(inner) for child in node.body for inner in ast.walk(child))
    for node in ast.walk(tree):
        if id(node) in checking:
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("botsched")}


def _graph() -> dict[str, set[str]]:
    root = Path(botsched.__file__).parent
    modules = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        modules[name] = path
    return {name: {dep for dep in _imports(path) if dep in modules and dep != name}
            for name, path in modules.items()}


def test_no_import_cycle_among_the_cli_and_client_modules() -> None:
    graph = _graph()
    mine = [name for name in graph if name.startswith(("botsched.cli", "botsched.client"))]
    for start in mine:
        stack, seen = [(start, [start])], set()
        while stack:
            node, path = stack.pop()
            for dep in graph.get(node, ()):
                if dep == start:
                    pytest.fail(f"import cycle: {' -> '.join([*path, dep])}")
                if dep not in seen and dep.startswith(("botsched.cli", "botsched.client")):
                    seen.add(dep)
                    stack.append((dep, [*path, dep]))


def test_the_cli_side_imports_the_daemon_only_to_run_it() -> None:
    graph = _graph()
    daemon_users = {name: sorted(dep for dep in deps if dep.startswith("botsched.daemon"))
                    for name, deps in graph.items() if name.startswith(("botsched.cli", "botsched.client"))}
    assert {name: deps for name, deps in daemon_users.items() if deps} == {
        "botsched.cli.commands.daemon": ["botsched.daemon", "botsched.daemon.main"]}
