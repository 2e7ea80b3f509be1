"""Shared plumbing for the benchmarks: a throw-away daemon, timing helpers and output.

Every benchmark runs its own daemon in a fresh, short temp ``BOTSCHED_HOME`` (AF_UNIX
socket paths must stay under 107 bytes, so the home lives directly in /tmp) and removes
it again on every exit path, Ctrl-C and SIGTERM included: a benchmark must never leave a
stray daemon or a gigabyte of SQLite behind on a shared machine.

Also runnable: ``python bench/_common.py samples --title T --baseline NAME [--json]``
reads ``name<TAB>seconds`` lines (or ``--hyperfine FILE``) and prints medians and ratios;
``cli_latency.sh`` uses it so the shell script needs no formatting code of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
#: The ``botsched`` entry point of the interpreter running the benchmark (the venv's).
BOTSCHED = str(Path(sys.executable).with_name("botsched"))
US = 1_000_000
#: A meeting URL of a known platform (others are accepted with a warning on stderr).
MEETING_URL = "https://zoom.us/j/9000000001"


# -- output -----------------------------------------------------------------------


def log(message: str) -> None:
    """Progress goes to stderr so that ``--json`` stdout stays parseable."""
    sys.stderr.write(f"[bench] {message}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class Metric:
    """How to show one measured figure, and the target it is held to (if any)."""

    key: str
    label: str
    unit: str
    at_most: float | None = None
    at_least: float | None = None
    digits: int = 1

    @property
    def target(self) -> str:
        for sign, bound in (("≤", self.at_most), ("≥", self.at_least)):
            if bound is not None:
                shown = f"{int(bound):,}" if float(bound).is_integer() else f"{bound:g}"
                return f"{sign} {shown} {self.unit}".rstrip()
        return ""

    def verdict(self, value: float | None) -> bool | None:
        if value is None or (self.at_most is None and self.at_least is None):
            return None
        if self.at_most is not None and value > self.at_most:
            return False
        return not (self.at_least is not None and value < self.at_least)

    def show(self, value: float | None) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "n/a"
        return f"{value:,.{self.digits}f} {self.unit}".rstrip()


def machine() -> dict[str, Any]:
    """What the figures were taken on: they mean little without it."""
    model = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "cores": os.cpu_count(),
        "cpu": model or platform.processor(),
        "python": platform.python_version(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def format_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """Left-align the first column, right-align the figures."""
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        parts = [str(c).ljust(widths[0]) if i == 0 else str(c).rjust(widths[i]) for i, c in enumerate(cells)]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(header), rule, *(line(r) for r in rows)])


def verdict_mark(ok: bool | None) -> str:
    return {True: "ok", False: "MISS", None: ""}[ok]


def report(title: str, metrics: Sequence[Metric], values: dict[str, float | None], *, as_json: bool,
           runs: int, extra: dict[str, Any] | None = None, note: str = "") -> None:
    """Print one benchmark's figures: an aligned table, or one JSON object on stdout."""
    info = machine()
    if as_json:
        rows = [
            {"metric": m.key, "label": m.label, "value": values.get(m.key), "unit": m.unit,
             "target": m.target or None, "ok": m.verdict(values.get(m.key))}
            for m in metrics
        ]
        json.dump({"benchmark": title, "runs": runs, "machine": info, "results": rows, **(extra or {})},
                  sys.stdout, indent=2)
        sys.stdout.write("\n")
        return
    print(f"{title}  (median of {runs} run{'s' if runs != 1 else ''}; {info['cores']} cores, "
          f"load {info['load_average'][0]})")
    table = [(m.label, m.show(values.get(m.key)), m.target, verdict_mark(m.verdict(values.get(m.key))))
             for m in metrics]
    print(format_table(("metric", "value", "target", ""), table))
    if note:
        print(note)


def median_of_runs(results: Sequence[dict[str, float | None]]) -> dict[str, float | None]:
    """Per key, the median of the runs that measured it."""
    keys: list[str] = []
    for result in results:
        keys.extend(k for k in result if k not in keys)
    merged: dict[str, float | None] = {}
    for key in keys:
        seen = [r[key] for r in results if r.get(key) is not None]
        merged[key] = statistics.median(seen) if seen else None  # type: ignore[type-var]
    return merged


def bench_args(description: str, runs: int = 3) -> argparse.ArgumentParser:
    """Every benchmark takes ``--json`` and ``--runs``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--json", action="store_true", help="print the results as one JSON object")
    parser.add_argument("--runs", type=int, default=runs, help=f"median of this many runs (default {runs})")
    return parser


# -- statistics and time ----------------------------------------------------------


def percentile(values: Sequence[float], pct: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), so p99 of 1,000
    samples is not just the 10th-largest value."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = (len(ordered) - 1) * pct / 100
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(values_ms: Sequence[float], prefix: str) -> dict[str, float | None]:
    """p50 / p99 / max of a list of milliseconds, as ``{prefix}_p50`` ... (None when empty)."""
    if not values_ms:
        return {f"{prefix}_p50": None, f"{prefix}_p99": None, f"{prefix}_max": None}
    return {
        f"{prefix}_p50": percentile(values_ms, 50),
        f"{prefix}_p99": percentile(values_ms, 99),
        f"{prefix}_max": max(values_ms),
    }


def iso_us(us: int) -> str:
    """Microseconds since the epoch as the UTC ``...Z`` text botsched accepts."""
    moment = datetime.fromtimestamp(us // US, tz=UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{us % US:06d}Z"


def parse_iso_us(text: str) -> int:
    """botsched's ``...Z`` instants back to exact integer microseconds (no float rounding)."""
    moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * US + delta.microseconds


def now_us() -> int:
    return time.time_ns() // 1000


def timed(fn: Callable[[], Any]) -> float:
    """Wall seconds one call takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


# -- a throw-away daemon ----------------------------------------------------------


def scratch_dir() -> Path:
    """A private, short temp directory (AF_UNIX paths inside it must fit in 107 bytes)."""
    path = Path(tempfile.mkdtemp(prefix="bsb", dir="/tmp"))
    os.chmod(path, 0o700)
    return path


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def config_toml(settings: dict[str, Any]) -> str:
    """Dotted keys (``scheduler.stage_lead_seconds``) to TOML tables; dict values become
    their own sub-table (``runner.env``)."""
    tables: dict[str, dict[str, Any]] = {}
    for key, value in settings.items():
        section, _, leaf = key.rpartition(".")
        if isinstance(value, dict):
            tables.setdefault(key, {}).update(value)
        else:
            tables.setdefault(section, {})[leaf] = value
    out: list[str] = []
    for section, values in tables.items():
        out.append(f"[{section}]")
        out.extend(f"{json.dumps(k)} = {_toml_value(v)}" for k, v in values.items())
        out.append("")
    return "\n".join(out)


class BenchDaemon:
    """A botsched daemon in its own temp home; use as a context manager.

    The CLI and the daemon both see ``BOTSCHED_HOME``; autostart is off so that a
    mistake fails loudly instead of spawning a daemon nobody stops.
    """

    def __init__(self, config: dict[str, Any] | Callable[[Path], dict[str, Any]] | None = None) -> None:
        """``config``: settings by dotted key, or a function of the home that returns them
        (for settings that name a path inside it)."""
        self.home = scratch_dir()
        try:
            settings = config(self.home) if callable(config) else (config or {})
            (self.home / "config.toml").write_text(config_toml(settings))
        except BaseException:
            shutil.rmtree(self.home, ignore_errors=True)
            raise
        self.env = {**os.environ, "BOTSCHED_HOME": str(self.home), "BOTSCHED_NO_AUTOSTART": "1"}
        self.pid: int | None = None

    # life cycle

    def __enter__(self) -> BenchDaemon:
        try:
            self.start()
        except BaseException:
            self.cleanup()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.cleanup()

    def start(self) -> float:
        """``botsched daemon start`` (returns once the daemon answers); its wall seconds."""
        elapsed = timed(lambda: self.cli("daemon", "start"))
        self.pid = int((self.home / "daemon.pid").read_text().strip())
        return elapsed

    def stop(self) -> float:
        """``botsched daemon stop`` (returns once the socket is released); its wall seconds."""
        elapsed = timed(lambda: self.cli("daemon", "stop", timeout=60))
        self.pid = None
        return elapsed

    def cleanup(self) -> None:
        """Stop our daemon (by its pid if it no longer listens) and delete the home."""
        with _signals_deferred():
            if self.pid is not None:
                with contextlib.suppress(Exception):
                    self.cli("daemon", "stop", timeout=30)
                if _alive(self.pid):
                    _terminate(self.pid)
                self.pid = None
            shutil.rmtree(self.home, ignore_errors=True)

    # using it

    def cli(self, *args: str, input: bytes | None = None, timeout: float = 600) -> subprocess.CompletedProcess[bytes]:
        """Run ``botsched ARGS`` against this home; a failure raises with its stderr."""
        done = subprocess.run([BOTSCHED, *args], input=input, env=self.env, capture_output=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"botsched {' '.join(args)} exited {done.returncode}: "
                               f"{done.stderr.decode(errors='replace').strip()[-2000:]}")
        return done

    def time_cli(self, *args: str) -> float:
        """Wall seconds of one ``botsched ARGS`` as a shell would see it (output discarded)."""
        return timed(lambda: self.cli(*args))

    @property
    def paths(self) -> Any:
        from botsched.core.paths import resolve_paths

        return resolve_paths({"BOTSCHED_HOME": str(self.home)})

    def connect(self) -> Any:
        """A ``botsched.client.connection.connection.Connection`` to this daemon (no autostart)."""
        from botsched.client.connection import connect

        return connect(self.paths, autostart=False)

    def call(self, op: str, **args: Any) -> Any:
        with self.connect() as conn:
            result, _ = conn.call(op, **args)
        return result

    def counts(self) -> dict[str, int]:
        return self.call("status")["counts"]

    def rss_mb(self) -> float:
        """Resident set size of the daemon process, from /proc/PID/status (VmRSS)."""
        assert self.pid is not None
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise RuntimeError(f"no VmRSS for pid {self.pid}")

    def create_many(self, items: list[dict[str, Any]], chunk_bytes: int = 256 * 1024) -> list[str]:
        """One ``create_many`` request (one transaction) over the socket; the new ids."""
        with self.connect() as conn:
            ids, _ = conn.call_bulk("create_many", encode_chunks(items, chunk_bytes), bots=False)
        return ids

    def wait_until(self, done: Callable[[dict[str, int]], bool], timeout: float, every: float = 0.25) -> dict[str, int]:
        """Poll ``status`` counts until ``done(counts)``; raises after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            counts = self.counts()
            if done(counts):
                return counts
            if time.monotonic() > deadline:
                raise TimeoutError(f"gave up after {timeout:.0f}s; counts: "
                                   + ", ".join(f"{k}={v}" for k, v in counts.items() if v))
            time.sleep(every)


def encode_chunks(items: Iterable[dict[str, Any]], chunk_bytes: int) -> list[bytes]:
    """``create_many`` chunk lines: ``{"items": [...]}`` of about ``chunk_bytes`` each."""
    chunks: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for item in items:
        encoded = json.dumps(item, separators=(",", ":")).encode()
        if batch and size + len(encoded) > chunk_bytes:
            chunks.append(b'{"items":[' + b",".join(batch) + b"]}\n")
            batch, size = [], 0
        batch.append(encoded)
        size += len(encoded) + 1
    if batch:
        chunks.append(b'{"items":[' + b",".join(batch) + b"]}\n")
    return chunks


def jsonl(items: Iterable[dict[str, Any]]) -> bytes:
    """The ``create --from -`` input format."""
    return b"".join(json.dumps(item, separators=(",", ":")).encode() + b"\n" for item in items)


def bot_lines(count: int, first_us: int, step_us: int, prefix: str = "b") -> Iterator[dict[str, Any]]:
    """``count`` bulk-create items joining every ``step_us`` from ``first_us``."""
    for i in range(count):
        yield {"meeting_url": f"https://zoom.us/j/{9_000_000_000 + i}?pwd={prefix}", "bot_name": "Bench Bot",
               "join_at": iso_us(first_us + i * step_us)}


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def _terminate(pid: int, grace: float = 5.0) -> None:
    """SIGTERM, then SIGKILL: only ever our own daemon, by its pid."""
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and _alive(pid):
            time.sleep(0.05)
        if _alive(pid):
            os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def _signals_deferred() -> Iterator[None]:
    """A second Ctrl-C while cleaning up must not leave the daemon behind."""
    if sys.platform == "win32" or not _main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def install_sigterm() -> None:
    """Make SIGTERM unwind like Ctrl-C, so ``finally`` blocks clean up."""

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, handler)


def main_guard(body: Callable[[], int | None]) -> None:
    """Run a benchmark's body: SIGTERM as Ctrl-C, exit 130 on interrupt, 1 on failure."""
    install_sigterm()
    try:
        code = body()
    except KeyboardInterrupt:
        log("interrupted; cleaned up")
        sys.exit(130)
    except (RuntimeError, TimeoutError, OSError) as exc:
        log(f"failed: {exc}")
        sys.exit(1)
    sys.exit(code or 0)


# -- ``samples``: medians of wall-clock samples (cli_latency.sh's formatter) ---------


def _read_samples(args: argparse.Namespace) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {}
    if args.hyperfine:
        data = json.loads(Path(args.hyperfine).read_text())
        for result in data["results"]:
            samples[result["command"]] = list(result["times"])
        return samples
    for line in sys.stdin:
        if line.strip():
            name, seconds = line.rstrip("\n").rsplit("\t", 1)
            samples.setdefault(name, []).append(float(seconds))
    return samples


def samples_main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="_common.py samples")
    parser.add_argument("--title", required=True)
    parser.add_argument("--baseline", required=True, help="the command the others are compared with")
    parser.add_argument("--target", action="append", default=[], metavar="NAME=RATIO",
                        help="the median of NAME must be at most RATIO x the baseline's")
    parser.add_argument("--hyperfine", help="read hyperfine's --export-json file instead of stdin")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    samples = _read_samples(args)
    targets = {name: float(ratio) for name, ratio in (t.rsplit("=", 1) for t in args.target)}
    base = statistics.median(samples[args.baseline])
    rows: list[dict[str, Any]] = []
    for name, times in samples.items():
        med = statistics.median(times)
        bound = targets.get(name)
        rows.append({"command": name, "runs": len(times), "median_ms": med * 1000,
                     "p10_ms": percentile(times, 10) * 1000, "p90_ms": percentile(times, 90) * 1000,
                     "ratio": med / base, "target_ratio": bound,
                     "ok": None if bound is None else med / base <= bound})
    if args.json:
        json.dump({"benchmark": args.title, "machine": machine(), "results": rows}, sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    info = machine()
    print(f"{args.title}  ({info['cores']} cores, load {info['load_average'][0]})")
    print(format_table(
        ("command", "runs", "median", "p10", "p90", f"× {args.baseline}", "target", ""),
        [(r["command"], str(r["runs"]), f"{r['median_ms']:.1f} ms", f"{r['p10_ms']:.1f} ms",
          f"{r['p90_ms']:.1f} ms", f"{r['ratio']:.2f}×",
          "" if r["target_ratio"] is None else f"≤ {r['target_ratio']:g}×", verdict_mark(r["ok"]))
         for r in rows],
    ))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "samples":
        sys.exit(samples_main(sys.argv[2:]))
    sys.exit("usage: python bench/_common.py samples --title T --baseline NAME [--target NAME=RATIO] [--json]")
