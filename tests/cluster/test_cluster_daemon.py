"""The real daemon on the PostgreSQL store: ``BOTSCHED_STORE_URL`` points it at the session's
private server; a bot is created, rescheduled, cancelled and joined (simulate runner)
through the installed CLI, and everything lands in PostgreSQL, not in a SQLite file."""

from __future__ import annotations

import json

import psycopg

from tests.support.home import Homes, assert_clean_error
from tests.support.postgres import PostgresServer
from tests.support.times import in_s, parse_z

PASSWORD = "s3cret-in-the-url"


def test_daemon_on_postgres_creates_reschedules_cancels_and_joins(
    make_home: Homes, postgres_server: PostgresServer
) -> None:
    schema = postgres_server.fresh_schema()
    url = postgres_server.url(password=PASSWORD, schema=schema)
    home = make_home(env={"BOTSCHED_STORE_URL": url})
    home.start()

    far = home.create("https://meet.google.com/aaa-bbbb-ccc", "--join-at", in_s(3600))
    gone = home.create("https://meet.google.com/ddd-eeee-fff", "--join-at", in_s(3600))
    join_at = in_s(2.5)
    moved = home.json("reschedule", far, "--join-at", join_at)
    assert moved["join_at"] == join_at and moved["state"] == "scheduled"
    home.ok("cancel", gone)
    assert home.run("show", gone).returncode == 3  # cancelled is gone for good

    home.ok("wait", far, "--timeout", "20")
    final = home.show(far)
    states = [event["state"] for event in final["events"]]
    assert states == ["scheduled", "staged", "joining", "joined_recording", "ended"], states
    joining = next(event for event in final["events"] if event["state"] == "joining")
    late_ms = (parse_z(joining["at"]) - parse_z(join_at)).total_seconds() * 1000
    print(f"\njoining happened {late_ms:+.3f} ms after join_at (PostgreSQL store)")
    assert -1.0 <= late_ms <= 200.0, f"joined {late_ms:+.1f} ms off join_at"

    # it is all in PostgreSQL (another agent would see it), and no SQLite file was made
    with psycopg.connect(postgres_server.url(schema=schema)) as connection:
        rows = dict(connection.execute("SELECT id, state FROM bots").fetchall())
        history = connection.execute("SELECT state FROM events WHERE bot_id = %s ORDER BY seq", (far,))
        stored = [row[0] for row in history]
    assert rows == {far: "ended"}
    assert stored == states
    assert not home.db.exists(), "cluster mode must not create the SQLite database"

    # a restarted daemon finds the bots where it left them
    home.stop()
    home.start()
    assert [bot["id"] for bot in home.list_all()] == [far]

    # the password is never shown: status, config, the log
    status = home.run("daemon", "status", "--json")
    shown = status.stdout + status.stderr
    shown += home.ok("config", "show").stdout + home.ok("config", "show", "--json").stdout
    log = home.log.read_text()
    assert PASSWORD not in shown
    assert PASSWORD not in log
    assert "botsched:***@127.0.0.1" in log, "the log says which store (without the password)"
    json.loads(status.stdout)


def test_store_url_in_config_selects_postgres_and_its_password_is_masked(
    make_home: Homes, postgres_server: PostgresServer
) -> None:
    schema = postgres_server.fresh_schema()
    home = make_home({"store": {"url": postgres_server.url(password=PASSWORD, schema=schema)}})
    bot_id = home.create("https://meet.google.com/aaa-bbbb-ccc", "--join-at", in_s(3600))
    with psycopg.connect(postgres_server.url(schema=schema)) as connection:
        assert connection.execute("SELECT id FROM bots").fetchall() == [(bot_id,)]
    shown = home.json("config", "show")
    assert shown["store.url"] == postgres_server.url(password="***", schema=schema).replace("%2A%2A%2A", "***")
    assert PASSWORD not in home.ok("config", "get", "store.url").stdout
    assert PASSWORD not in home.ok("config", "show").stdout


def test_a_bad_store_url_is_one_error_line(make_home: Homes) -> None:
    home = make_home(env={"BOTSCHED_STORE_URL": "mysql://root:hunter2@db/x"})
    result = home.run("daemon", "start")
    said = assert_clean_error(result, 5)
    assert "hunter2" not in result.stdout + result.stderr
    assert "must be a postgresql:// URL" in said and "root:***@db" in said
