"""A private PostgreSQL server per test session: real PostgreSQL, never a mock.

``initdb`` into a temporary directory, then ``pg_ctl start`` listening on loopback only, on
a free port, with its Unix socket in a private directory (``-k``): nothing of the machine's
own PostgreSQL (if any) is used or touched. As root the server runs as the ``postgres``
user (PostgreSQL refuses to run as root), through ``runuser`` (or ``su``). The server is
stopped and its directory removed at the end of the session.

Tests that need it are skipped only when no server binary can be found at all; CI
(``.ci/run``) installs PostgreSQL, so there they always run.

Each test gets its own schema (cheap: no database copy) through ``PostgresServer.fresh_url``:
the URL carries ``options=-csearch_path=...``, so the store under test creates its tables
there and sees nothing of the other tests'.

Tests that take the server down mid-run (``outage``) use a server of their own
(``private_postgres``), whose commits are durable on acknowledgement (``synchronous_commit``
on), so that even ``pg_ctl stop -m immediate`` loses nothing a client was told is committed.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest

__all__ = ["PostgresServer", "find_bindir", "postgres_server", "postgres_url", "private_postgres"]

#: The database superuser of the private server (trust authentication, loopback only).
SUPERUSER = "botsched"
START_TIMEOUT_S = 60


def find_bindir() -> Path | None:
    """Where ``initdb``, ``pg_ctl`` and ``postgres`` are: the newest /usr/lib/postgresql/N/bin,
    else the directory of ``pg_ctl`` on PATH (a Debian PATH has only wrappers, often none)."""
    def major(path: str) -> int:
        name = Path(path).parent.name
        return int(name) if name.isdigit() else 0

    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=major)
    for directory in reversed(candidates):
        if all(os.access(Path(directory) / tool, os.X_OK) for tool in ("initdb", "pg_ctl", "postgres")):
            return Path(directory)
    found = shutil.which("pg_ctl")
    if found is not None:
        directory = Path(os.path.realpath(found)).parent
        if all(os.access(directory / tool, os.X_OK) for tool in ("initdb", "postgres")):
            return directory
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PostgresServer:
    """One running private server; ``url()`` and ``fresh_url()`` are what tests use."""

    def __init__(self, bindir: Path, root: Path, durable: bool = False) -> None:
        self.bindir = bindir
        #: fsync and synchronous commits on, as a real server runs (benchmarks); tests skip them
        self.durable = durable
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "server.log"
        self.port = _free_port()
        self.os_user: str | None = "postgres" if os.geteuid() == 0 else None
        self._schemas: list[str] = []

    # -- running the server's own tools as its user --------------------------------------

    def _run(
        self, *argv: str, check: bool = True, timeout: float = START_TIMEOUT_S
    ) -> subprocess.CompletedProcess[str]:
        command = list(argv)
        if self.os_user is not None:
            runuser = shutil.which("runuser")
            if runuser is not None:
                command = [runuser, "-u", self.os_user, "--", *command]
            else:  # su takes one command line: quote each argument for its shell
                import shlex

                command = ["su", "-s", "/bin/sh", self.os_user, "-c", shlex.join(command)]
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=timeout, check=False
        )
        if check and result.returncode != 0:
            said = result.stderr.strip() or result.stdout.strip()
            raise RuntimeError(f"{argv[0]} failed ({result.returncode}): {said}")
        return result

    def start(self) -> None:
        self.sockets.mkdir(mode=0o700)
        self.data.mkdir(mode=0o700)
        if self.os_user is not None:
            entry = pwd.getpwnam(self.os_user)
            for path in (self.root, self.data, self.sockets):
                os.chown(path, entry.pw_uid, entry.pw_gid)
            self.root.chmod(0o755)
        self._run(
            str(self.bindir / "initdb"), "-D", str(self.data), "-U", SUPERUSER, "--auth=trust",
            "--encoding=UTF8", "--locale=C", "--no-sync",
        )
        self._pg_ctl_start()

    def _pg_ctl_start(self) -> None:
        # Speed over durability for tests: this server's data is thrown away at the end of the session.
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c max_connections=200"
        if not self.durable:
            options += " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-o", options,
            "-w", "-t", str(START_TIMEOUT_S), "start",
        )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"PostgreSQL did not listen on port {self.port}: see {self.log}") from None
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """``fast`` writes out what was committed (``synchronous_commit=off`` leaves the last
        commits in memory for a moment); ``immediate`` is for the end, when nothing matters."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop", check=False)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port (a database restart mid-run)."""
        if (self.data / "postmaster.pid").exists():
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")
        self._pg_ctl_start()

    def start_again(self) -> None:
        """Start a stopped server again: same data, port and socket directory."""
        self._pg_ctl_start()

    @contextlib.contextmanager
    def outage(self, mode: str = "fast") -> Iterator[float]:
        """The server down inside the block (``pg_ctl stop -m MODE``: ``fast`` ends sessions
        cleanly, ``immediate`` is a crash and recovery at the next start), up again after it.
        Yields the monotonic time at which it was down."""
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "stop")
        try:
            yield time.monotonic()
        finally:
            self.start_again()

    # -- what tests use ------------------------------------------------------------------

    def url(self, database: str = "postgres", password: str | None = None, schema: str | None = None) -> str:
        auth = SUPERUSER if password is None else f"{SUPERUSER}:{quote(password, safe='')}"
        url = f"postgresql://{auth}@127.0.0.1:{self.port}/{database}"
        if schema is not None:
            url += "?options=" + quote(f"-csearch_path={schema}", safe="")
        return url

    def execute(self, sql: str) -> None:
        """One statement as the superuser, outside a transaction (CREATE DATABASE needs that)."""
        import psycopg

        with psycopg.connect(self.url(), autocommit=True, connect_timeout=10) as connection:
            connection.execute(sql)  # type: ignore[arg-type]

    def fresh_schema(self) -> str:
        """A new, empty schema (the cheap way to give each test its own store)."""
        name = f"t_{secrets.token_hex(6)}"
        self.execute(f"CREATE SCHEMA {name}")
        self._schemas.append(name)
        return name

    def fresh_url(self, password: str | None = None) -> str:
        """A URL whose connections see only a new, empty schema."""
        return self.url(password=password, schema=self.fresh_schema())

    def fresh_database(self) -> str:
        """A new, empty database (for what a schema cannot isolate, e.g. LISTEN channels)."""
        name = f"d_{secrets.token_hex(6)}"
        self.execute(f"CREATE DATABASE {name}")
        return name

    def drop_schema(self, name: str) -> None:
        with contextlib.suppress(Exception):  # best effort: the whole server goes at session end
            self.execute(f"DROP SCHEMA IF EXISTS {name} CASCADE")


def _start(bindir: Path, durable: bool = False) -> tuple[PostgresServer, Path]:
    root = Path(tempfile.mkdtemp(prefix="botsched-pg-"))
    server = PostgresServer(bindir, root, durable)
    try:
        server.start()
    except BaseException:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise
    return server, root


def _served(durable: bool) -> Iterator[PostgresServer]:
    bindir = find_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL is not installed (no initdb/pg_ctl found); .ci/run installs it")
    server, root = _start(bindir, durable)
    try:
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's private PostgreSQL server (skipped only if PostgreSQL is not installed)."""
    yield from _served(durable=False)


@pytest.fixture(scope="module")
def private_postgres() -> Iterator[PostgresServer]:
    """A server of the module's own, with durable commits: for tests that take it down."""
    yield from _served(durable=True)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A URL of the session server that sees only a new, empty schema, dropped afterwards."""
    schema = postgres_server.fresh_schema()
    yield postgres_server.url(schema=schema)
    postgres_server.drop_schema(schema)
