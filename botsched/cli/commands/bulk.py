"""``botsched create --from FILE``: JSON lines in, all or nothing.

The client streams the file to the daemon in chunks while it reads it, so the daemon
checks one chunk while the client parses the next. The client checks only what it alone
can (JSON syntax, and relative or local join times, which mean *this shell's* now and
zone); the daemon validates the fields. At the end the client says whether to commit:
if any line was bad anywhere, nothing is created and every bad line is named.

Socket protocol: ``{"op": "create_many", "args": {"bots": BOOL}}``, then lines
``{"items": [{"line": N, ...bot fields...}, ...]}``, then ``{"end": true, "commit": BOOL}``.
"""

from __future__ import annotations

import errno
import json
import sys
import time
from collections.abc import Iterator
from typing import Any

from botsched.cli.output import changed, emit_json, read_source, user_zone, warn
from botsched.core import protocol
from botsched.core.errors import InvalidInput, from_code
from botsched.core.protocol import Op
from botsched.core.timeparse import ZoneSource, parse_join_at

#: Bytes of input per chunk line on the socket: well under ``protocol.MAX_LINE``.
CHUNK_BYTES = 64 * 1024
#: No valid bot needs a longer line (URL 2 KiB + metadata 16 KiB + escapes).
MAX_ITEM_BYTES = 128 * 1024


def parse_line(number: int, raw: bytes, zone: ZoneSource, now_us: int) -> dict[str, Any]:
    """One line as an item for the daemon; ``InvalidInput`` for what only the client sees."""
    if len(raw) > MAX_ITEM_BYTES:
        raise InvalidInput(f"longer than {MAX_ITEM_BYTES} bytes")
    try:
        item = json.loads(raw)
    except (ValueError, RecursionError):
        raise InvalidInput("not valid JSON") from None
    if not isinstance(item, dict):
        raise InvalidInput("expected a JSON object")
    if protocol.has_surrogate_escape(raw):
        protocol.encode(item)  # a lone surrogate ("\ud800") is not text: InvalidInput
    join_at = item.get("join_at")
    if isinstance(join_at, str):
        item["join_at"] = parse_join_at(join_at, now_us, zone).text
    item["line"] = number
    return item


def chunks(raw_lines: list[bytes], zone: ZoneSource, now_us: int, problems: list[str]) -> Iterator[tuple[bytes, int]]:
    """Encoded chunk lines with their item counts; bad lines go to ``problems``."""
    batch: list[dict[str, Any]] = []
    size = 0
    for number, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            batch.append(parse_line(number, raw, zone, now_us))
        except InvalidInput as exc:
            problems.append(f"line {number}: {exc.message}")
            continue
        size += len(raw) + 48
        if size >= CHUNK_BYTES:
            yield protocol.encode({"items": batch}), len(batch)
            batch, size = [], 0
    if batch:
        yield protocol.encode({"items": batch}), len(batch)


def _by_line(problem: str) -> int:
    number = problem.removeprefix("line ").split(":", 1)[0]
    return int(number) if number.isdigit() else 0


def create_from_file(source: str, as_json: bool, quiet: bool) -> None:
    """``create --from``: the output, written after the commit, is the only part that can
    lose stdout; then the bots exist and ``botsched.cli.main.run`` must know it."""
    try:
        _create_from_file(source, user_zone, as_json, quiet)
    except OSError as exc:
        if exc.errno in (errno.EPIPE, errno.EBADF):
            changed("created the bots")
        raise


def _create_from_file(source: str, zone: ZoneSource, as_json: bool, quiet: bool) -> None:
    from botsched.client.connection import connect

    raw_lines = read_source(source).splitlines()
    if not any(raw.strip() for raw in raw_lines):
        raise InvalidInput(f"{source}: no bots to create (the file has no JSON lines)")
    progress = _Progress(len(raw_lines)) if sys.stderr.isatty() and not quiet and len(raw_lines) > 1000 else None
    problems: list[str] = []

    def lines() -> Iterator[bytes]:
        for chunk, count in chunks(raw_lines, zone, time.time_ns() // 1000, problems):
            yield chunk
            if progress is not None:
                progress.advance(count)

    try:
        with connect() as conn:
            reply = conn.send_bulk(Op.CREATE_MANY, lines(), commit=lambda: not problems, bots=as_json)
    finally:
        if progress is not None:
            progress.close()
    if not reply.get("ok"):
        error = reply.get("error") or {}
        message = str(error.get("message", "bulk create failed"))
        if error.get("code") != "invalid":
            raise from_code(str(error.get("code")), message)
        problems += [line for line in message.splitlines() if line.startswith("line ")]
    if problems:
        problems.sort(key=_by_line)
        raise InvalidInput("\n".join([*problems, f"{len(problems)} invalid line(s); nothing was created"]))
    warn(list(reply.get("warnings") or []))
    result: list[str] = reply.get("result") or []
    if as_json:
        emit_json(result)
    else:
        sys.stdout.write("".join(f"{bot_id}\n" for bot_id in result))


class _Progress:
    """A rich progress bar on stderr (stdout carries the ids)."""

    def __init__(self, total: int) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        self._bar = Progress(TextColumn("creating"), BarColumn(), MofNCompleteColumn(), transient=True,
                             console=Console(stderr=True))
        self._bar.start()
        self._task = self._bar.add_task("create", total=total)

    def advance(self, count: int) -> None:
        self._bar.advance(self._task, count)

    def close(self) -> None:
        self._bar.stop()

