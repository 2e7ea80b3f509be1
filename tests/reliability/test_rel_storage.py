"""Storage faults (issue 5): a corrupt database, a read-only one, a full disk, an old and a
too-new schema. Each gives a clear ``error:`` line, damages nothing that was stored, and
never overwrites the user's file.

How the faults are made, as root in this sandbox (where ``chmod 0400`` stops nothing):

- read-only: a read-only bind mount of the database file (``mount --bind F F; mount -o
  remount,bind,ro F``: the kernel answers EROFS to every write), and ``chattr +i`` (EPERM);
- full disk: BOTSCHED_HOME is a 4 MiB tmpfs, filled up with a filler file;
- corrupt: random bytes for the whole file, or over every page after the schema.

Tests that need root or mounting are skipped where they are not possible.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from botsched.core.errors import BotschedError
from botsched.daemon.store import NewBot, Store
from botsched.daemon.store import schema as store_mod  # the schema version and migrations
from tests.support.home import assert_clean_error, pid_alive
from tests.support.times import z_seconds
from tests.support.tmpfs import fill_disk, mount_small_tmpfs

from .relhelpers import can_chattr, can_mount, integrity, is_root, sha256

URL = "https://zoom.us/j/42"
FAR = "2028-05-01T12:00:00Z"
NO_AUTOSTART = {"BOTSCHED_NO_AUTOSTART": "1"}
MOUNTABLE = can_mount()


def _no_daemon(home) -> None:
    pid = home.daemon_pid()
    assert pid is None or not pid_alive(pid), "a daemon is running on a database it refused"


def _stored(home, count: int = 3) -> list[dict]:
    home.ok("daemon", "start")
    for n in range(count):
        home.create(f"{URL}{n}", "--join-at", FAR, "--metadata", f"n={n}", "--bot-name", f"stored {n}")
    bots = home.list_all()
    home.ok("daemon", "stop")
    return bots


# -- corrupt -----------------------------------------------------------------------------------


def test_a_garbage_database_file_is_a_clear_error_and_is_not_overwritten(home):
    home.path.mkdir(mode=0o700, exist_ok=True)
    home.db.write_bytes(os.urandom(64 * 1024))
    before = sha256(home.db)
    for args in (["daemon", "start"], ["list"], ["create", URL, "--join-at", FAR], ["show", "bot_AAAAAAAAAAAAAAAA"]):
        result = home.run(*args)
        stderr = assert_clean_error(result, 5)
        assert "not a database" in stderr and str(home.db) in stderr, stderr
    result = home.run("daemon", "run", timeout=30)
    stderr = assert_clean_error(result)
    assert "not a database" in stderr, stderr
    assert sha256(home.db) == before, "the corrupt file was modified"
    assert not Path(f"{home.db}-wal").exists() or Path(f"{home.db}-wal").stat().st_size == 0
    _no_daemon(home)


def test_a_database_with_garbage_pages_is_a_clear_error_and_is_not_overwritten(home):
    bots = _stored(home, 30)
    assert len(bots) == 30
    size = home.db.stat().st_size
    with open(home.db, "r+b") as handle:  # keep page 1 (header, schema); trash the rest
        for page in range(2, size // 4096):
            handle.seek(page * 4096)
            handle.write(os.urandom(4096))
    before = sha256(home.db)
    result = home.run("daemon", "start")
    if result.returncode == 0:  # it may start; then reading must fail clearly, not crash
        listed = home.run("list", "--limit", "0")
        assert_clean_error(listed)
        assert "malformed" in listed.stderr or "corrupt" in listed.stderr, listed.stderr
        home.ok("daemon", "stop")
    else:
        stderr = assert_clean_error(result, 5)
        assert "malformed" in stderr or "corrupt" in stderr or "not a database" in stderr, stderr
    assert sha256(home.db) == before, "the damaged file was modified"


@pytest.mark.parametrize("fault", ["garbage", "newer-schema"])
def test_daemon_run_refusing_a_database_is_not_exit_1(home, fault):
    """SPEC §5: exit 1 means "unexpected internal error (a bug)". A database botsched
    cannot use is a refusal (``daemon start`` says exit 5), not a bug."""
    home.path.mkdir(mode=0o700, exist_ok=True)
    if fault == "garbage":
        home.db.write_bytes(os.urandom(8192))
    else:
        db = sqlite3.connect(home.db)
        db.execute("PRAGMA user_version = 99")
        db.close()
    result = home.run("daemon", "run", timeout=30)
    assert_clean_error(result)
    assert result.returncode != 1, f"daemon run exited 1 (internal error) for a {fault} database: {result.stderr}"


# -- read-only ---------------------------------------------------------------------------------


def _make_read_only(make_home, home, method: str) -> None:
    db = str(home.db)
    if method == "bind-mount-ro":
        if not MOUNTABLE:
            pytest.skip("cannot mount in this sandbox")
        subprocess.run(["mount", "--bind", db, db], check=True, timeout=10)
        make_home.mounts.append(home.db)
        subprocess.run(["mount", "-o", "remount,bind,ro", db], check=True, timeout=10)
    else:
        if not can_chattr(home.path):
            pytest.skip("chattr +i is not available here")
        subprocess.run(["chattr", "+i", db], check=True, timeout=10)
        make_home.immutable.append(home.db)
    with pytest.raises(OSError), open(db, "r+b"):
        pass


def _undo_read_only(make_home, home, method: str) -> None:
    if method == "bind-mount-ro":
        subprocess.run(["umount", str(home.db)], check=True, timeout=10)
        make_home.mounts.remove(home.db)
    else:
        subprocess.run(["chattr", "-i", str(home.db)], check=True, timeout=10)
        make_home.immutable.remove(home.db)


@pytest.mark.skipif(not is_root(), reason="as non-root chmod would do; these tests use root-only tools")
@pytest.mark.parametrize("method", ["bind-mount-ro", "chattr-immutable"])
def test_a_read_only_database_refuses_writes_clearly_and_keeps_what_was_stored(make_home, home, method):
    bots = _stored(home)
    before = sha256(home.db)
    _make_read_only(make_home, home, method)
    start = home.run("daemon", "start")
    if start.returncode != 0:  # refusing to start is fine, if it says why
        stderr = assert_clean_error(start, 5)
        assert "read" in stderr.lower() or "permission" in stderr.lower(), stderr
    else:
        assert home.list_all() == bots
        for args in (["create", URL, "--join-at", "+2h"], ["reschedule", bots[0]["id"], "--join-at", "+3h"],
                     ["cancel", bots[1]["id"]]):
            result = home.run(*args)
            stderr = assert_clean_error(result, 1)
            assert "readonly" in stderr or "read-only" in stderr, stderr
            assert "nothing was changed" in stderr, stderr
        assert home.list_all() == bots
        pid = home.daemon_pid()
        assert home.json("daemon", "status")["pid"] == pid, "the daemon stopped serving"
        home.ok("daemon", "stop")
    assert sha256(home.db) == before
    _undo_read_only(make_home, home, method)
    home.ok("daemon", "start")
    assert home.list_all() == bots
    home.create(URL, "--join-at", "+2h")
    assert len(home.list_all()) == len(bots) + 1
    home.ok("daemon", "stop")
    assert integrity(home.db) == "ok"


@pytest.mark.skipif(not MOUNTABLE, reason="cannot mount in this sandbox")
def test_a_read_only_database_does_not_leave_due_bots_silently_stuck(make_home, home):
    """SPEC §7: no bot is left silently stuck. On a database it cannot write the daemon
    cannot stage, join or fail a due bot; it must refuse to start (with a clear error)
    rather than serve while its due bots stay ``scheduled`` past their join time."""
    home.write_config({"scheduler": {"stage_lead_seconds": 1}})
    home.ok("daemon", "start")
    due = home.create(URL, "--join-at", "+3s")
    home.ok("daemon", "stop")
    _make_read_only(make_home, home, "bind-mount-ro")
    start = home.run("daemon", "start")
    if start.returncode != 0:
        assert_clean_error(start, 5)
        return
    time.sleep(max(0.0, z_seconds(home.show(due)["join_at"]) + 2.0 - time.time()))  # join time + 2 s
    bot = home.show(due)
    log = home.log.read_text(errors="replace")
    assert bot["state"] != "scheduled", (
        f"the daemon started on a read-only database and {due} is still 'scheduled' 2 s after its join_at "
        f"(the scheduler fails every second, visible only in the log: "
        f"{log.count('scheduler tick failed')} 'scheduler tick failed' lines)")


# -- full disk ---------------------------------------------------------------------------------


@pytest.mark.skipif(not MOUNTABLE, reason="cannot mount a tmpfs in this sandbox")
def test_a_full_disk_fails_creates_clearly_and_keeps_serving(make_home):
    home = make_home(write_config=False, subdir="home")
    home.path.mkdir(mode=0o700)
    mount_small_tmpfs(home.path)
    make_home.mounts.append(home.path)
    home.write_config({"scheduler": {"stage_lead_seconds": 1}})
    home.ok("daemon", "start")
    pid = home.daemon_pid()
    stored = [home.create(f"{URL}{n}", "--join-at", FAR, "--bot-name", f"before {n}") for n in range(5)]
    baseline = home.list_all()
    filler = fill_disk(home.path)
    big = "v" * 15_000
    failure = None
    for n in range(200):  # the WAL may still have room for a few; then creates must fail
        result = home.run("create", URL, "--join-at", FAR, "--bot-name", f"while full {n}", "--metadata", f"k={big}",
                          "-q")
        if result.returncode != 0:
            failure = result
            break
    assert failure is not None, "200 creates of 15 KB each succeeded on a full 4 MiB disk"
    stderr = assert_clean_error(failure, 1)
    assert "full" in stderr and "nothing was changed" in stderr, stderr
    failed_name = f"while full {n}"
    # the daemon is alive, serves, and everything acknowledged before is intact
    assert home.json("daemon", "status")["pid"] == pid
    after = home.list_all()
    assert [b for b in after if b["bot_name"].startswith("before")] == baseline
    assert failed_name not in {b["bot_name"] for b in after}, "the failed create left a bot behind"
    for args in (["reschedule", stored[0], "--join-at", "2029-01-01T00:00:00Z"], ["cancel", stored[1]]):
        result = home.run(*args)
        if result.returncode != 0:
            assert "nothing was changed" in assert_clean_error(result, 1)
    # space again: everything works, nothing was damaged
    filler.unlink()
    home.create(URL, "--join-at", FAR, "--bot-name", "after")
    final = {b["id"]: b for b in home.list_all()}
    assert set(stored[2:]) <= set(final)
    assert home.json("daemon", "status")["pid"] == pid
    home.ok("daemon", "stop")
    assert integrity(home.db) == "ok"


# -- schema versions ---------------------------------------------------------------------------


def test_a_version_0_database_is_migrated_on_open(home):
    """An empty file and an empty database (user_version 0, no tables) are schema 0: the
    daemon creates the schema and works."""
    home.path.mkdir(mode=0o700, exist_ok=True)
    home.db.write_bytes(b"")
    home.ok("daemon", "start")
    bot_id = home.create(URL, "--join-at", FAR)
    assert home.show(bot_id)["state"] == "scheduled"
    home.ok("daemon", "stop")
    db = sqlite3.connect(home.db)
    assert db.execute("PRAGMA user_version").fetchone()[0] == store_mod.SCHEMA_VERSION
    db.close()


def test_a_newer_schema_is_refused_and_left_alone(home):
    home.path.mkdir(mode=0o700, exist_ok=True)
    db = sqlite3.connect(home.db)
    db.execute("CREATE TABLE bots (id TEXT PRIMARY KEY, future_column BLOB)")
    db.execute("INSERT INTO bots VALUES ('bot_FUTUREFUTUREFUTU', x'00')")
    db.execute("PRAGMA user_version = 99")
    db.commit()
    db.close()
    before = sha256(home.db)
    for args in (["daemon", "start"], ["list"]):
        stderr = assert_clean_error(home.run(*args), 5)
        assert "99" in stderr and "newer" in stderr, stderr
    assert sha256(home.db) == before
    _no_daemon(home)


#: A made-up migration goes one past the real schema (whatever its version is now).
NEXT_VERSION = store_mod.SCHEMA_VERSION + 1


@pytest.fixture
def v1_store(tmp_path: Path):
    path = tmp_path / "v1.db"
    store = Store(path)
    ids = store.insert([NewBot(f"{URL}{n}", f"bot {n}", FAR, 1_935_662_400_000_000, {"n": str(n)}, None)
                        for n in range(5)], 1_800_000_000_000_000)
    store.close()
    return path, ids


def test_a_future_migration_runs_once_in_one_transaction_and_keeps_the_bots(v1_store, monkeypatch):
    """The migration machinery (``_MIGRATIONS``, ``user_version``) with a made-up next version."""
    path, ids = v1_store
    current = store_mod.SCHEMA_VERSION
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(store_mod.MIGRATIONS, current + 1, """
        ALTER TABLE bots ADD COLUMN note TEXT;
        CREATE INDEX bots_by_note ON bots (note);
        UPDATE bots SET note = 'migrated'
    """)
    store = Store(path)
    try:
        assert [store.get(bot_id)["bot_name"] for bot_id in ids] == [f"bot {n}" for n in range(5)]
        assert store.integrity_check() == "ok"
    finally:
        store.close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == current + 1
    assert {row[0] for row in db.execute("SELECT note FROM bots")} == {"migrated"}
    db.close()
    Store(path).close()  # opening again migrates nothing twice (the index would already exist)


def test_a_failing_migration_changes_nothing(v1_store, monkeypatch):
    path, ids = v1_store
    before = sha256(path)
    current = store_mod.SCHEMA_VERSION
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", current + 1)
    monkeypatch.setitem(store_mod.MIGRATIONS, current + 1, """
        ALTER TABLE bots ADD COLUMN note TEXT;
        UPDATE bots SET note = 'half';
        THIS IS NOT SQL
    """)
    with pytest.raises(BotschedError) as raised:
        Store(path)
    assert "nothing was changed" in raised.value.message or "syntax error" in raised.value.message, raised.value
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", current)
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone()[0] == current
    columns = [row[1] for row in db.execute("PRAGMA table_info(bots)")]
    db.close()
    assert "note" not in columns, "half a migration was committed"
    store = Store(path)
    try:
        assert [store.get(bot_id)["bot_name"] for bot_id in ids] == [f"bot {n}" for n in range(5)]
    finally:
        store.close()
    del before  # the WAL may have been checkpointed; the content check above is what counts
