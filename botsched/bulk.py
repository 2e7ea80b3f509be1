"""``botsched create --from FILE``: JSON lines in, all or nothing.

The client checks what only it can (JSON syntax, relative and local join times, which
mean *this shell's* now and zone) and names every bad line; the daemon validates the
rest and creates everything in one transaction.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import Any

from botsched import protocol
from botsched.errors import BotschedError, InvalidInput
from botsched.timeparse import parse_join_at

#: Bytes per chunk line on the socket: well under ``protocol.MAX_LINE``.
CHUNK_BYTES = 256 * 1024
#: No valid bot needs a longer line (URL 2 KiB + metadata 16 KiB + escapes).
MAX_ITEM_BYTES = 128 * 1024


def _open(source: str) -> Any:
    if source == "-":
        return sys.stdin.buffer
    try:
        return open(source, "rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read {source}: {exc.strerror}") from None


@dataclass
class Parsed:
    """The lines that parsed (with their raw sizes, for chunking) and the problems only the
    client can see: JSON syntax, and join times relative to this shell's clock and zone."""

    items: list[dict[str, Any]] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)


def parse_lines(raw_lines: list[bytes], zone: tzinfo, now_us: int) -> Parsed:
    """Parse every non-blank line; the daemon validates the fields."""
    parsed = Parsed()
    problems = parsed.problems
    for number, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        if len(raw) > MAX_ITEM_BYTES:
            problems.append(f"line {number}: longer than {MAX_ITEM_BYTES} bytes")
            continue
        try:
            item = json.loads(raw)
        except (ValueError, RecursionError):
            problems.append(f"line {number}: not valid JSON")
            continue
        if not isinstance(item, dict):
            problems.append(f"line {number}: expected a JSON object")
            continue
        join_at = item.get("join_at")
        if isinstance(join_at, str):
            try:
                item["join_at"] = parse_join_at(join_at, now_us, zone).text
            except InvalidInput as exc:
                problems.append(f"line {number}: {exc.message}")
                continue
        item["line"] = number
        parsed.items.append(item)
        parsed.sizes.append(len(raw) + 48)  # + the canonical join_at and the line number
    return parsed


def _chunks(items: list[dict[str, Any]], sizes: list[int]) -> list[bytes]:
    """Pack items into ``{"items": [...]}`` lines of about ``CHUNK_BYTES`` each (one
    ``json.dumps`` per chunk, not per item: that is most of the client's time)."""
    chunks: list[bytes] = []
    start = size = 0
    for index, item_size in enumerate(sizes):
        if index > start and size + item_size > CHUNK_BYTES:
            chunks.append(protocol.encode({"items": items[start:index]}))
            start, size = index, 0
        size += item_size
    if start < len(items):
        chunks.append(protocol.encode({"items": items[start:]}))
    return chunks


def _by_line(problem: str) -> int:
    number = problem.removeprefix("line ").split(":", 1)[0]
    return int(number) if number.isdigit() else 0


def create_from_file(source: str, zone: tzinfo, as_json: bool, quiet: bool) -> None:
    from botsched.client import connect

    handle = _open(source)
    try:
        raw_lines = handle.read().splitlines()
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()
    show_progress = sys.stderr.isatty() and not quiet and len(raw_lines) > 1000
    parsed = parse_lines(raw_lines, zone, time.time_ns() // 1000)
    items, problems = parsed.items, parsed.problems
    if not items and not problems:
        raise InvalidInput(f"{source}: no bots to create (the file has no JSON lines)")
    chunks = _chunks(items, parsed.sizes)
    with connect() as conn:
        if problems:  # let the daemon name the other bad lines too, then refuse them all
            try:
                conn.call_bulk("create_many", chunks, dry_run=True)
            except InvalidInput as exc:
                problems += [line for line in exc.message.splitlines() if line.startswith("line ")]
            problems.sort(key=_by_line)
            raise InvalidInput("\n".join(problems + [f"{len(problems)} invalid line(s); nothing was created"]))
        if show_progress:
            result, warnings = _send_with_progress(conn, chunks, len(items), want_bots=as_json)
        else:
            result, warnings = conn.call_bulk("create_many", chunks, bots=as_json)
    for warning in warnings:
        sys.stderr.write(f"warning: {warning}\n")
    if as_json:
        sys.stdout.write(json.dumps(result, ensure_ascii=False, indent=2) + "\n")
    else:
        sys.stdout.write("".join(f"{bot_id}\n" for bot_id in result))


def _send_with_progress(conn: Any, chunks: list[bytes], total: int, want_bots: bool) -> tuple[Any, list[str]]:
    """The same request as ``call_bulk``, sent chunk by chunk under a rich progress bar."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    bar = Progress(TextColumn("creating"), BarColumn(), MofNCompleteColumn(), transient=True,
                   console=Console(stderr=True))  # stdout carries the ids
    with bar as progress:
        task = progress.add_task("create", total=total)
        conn.sock.settimeout(None)
        conn.send(protocol.request("create_many", chunks=len(chunks), bots=want_bots))
        for chunk in chunks:
            conn.send(chunk)
            progress.advance(task, chunk.count(b'"line":'))
        progress.update(task, description="committing")
        message = conn.receive()
    if message.get("ok"):
        return message.get("result"), list(message.get("warnings") or [])
    error = message.get("error") or {}
    from botsched.errors import from_code

    raise from_code(str(error.get("code")), str(error.get("message", "bulk create failed"))) if error else BotschedError(
        "bulk create failed"
    )
