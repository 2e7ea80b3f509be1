"""``botsched create --from FILE``: JSON lines in, all or nothing.

The client checks what only it can (JSON syntax, relative and local join times, which
mean *this shell's* now and zone) and names every bad line; the daemon validates the
rest and creates everything in one transaction.
"""

from __future__ import annotations

import json
import sys
import time
from datetime import tzinfo
from typing import Any

from botsched import protocol
from botsched.errors import BotschedError, InvalidInput
from botsched.timeparse import parse_join_at
from botsched.validation import validate_bot_name, validate_dedup_key, validate_meeting_url, validate_metadata

#: Bytes per chunk line on the socket: well under ``protocol.MAX_LINE``.
CHUNK_BYTES = 256 * 1024
FIELDS = {"meeting_url", "bot_name", "join_at", "metadata", "deduplication_key"}


def _open(source: str) -> Any:
    if source == "-":
        return sys.stdin.buffer
    try:
        return open(source, "rb")
    except OSError as exc:
        raise InvalidInput(f"cannot read {source}: {exc.strerror}") from None


def parse_lines(raw_lines: list[bytes], zone: tzinfo, now_us: int) -> list[dict[str, Any]]:
    """Parse every non-blank line; raise one ``InvalidInput`` naming each bad line."""
    items: list[dict[str, Any]] = []
    problems: list[str] = []
    for number, raw in enumerate(raw_lines, 1):
        if not raw.strip():
            continue
        try:
            item = json.loads(raw)
        except (ValueError, RecursionError):
            problems.append(f"line {number}: not valid JSON")
            continue
        if not isinstance(item, dict):
            problems.append(f"line {number}: expected a JSON object")
            continue
        unknown = set(item) - FIELDS
        if unknown:
            problems.append(f"line {number}: unknown field(s): {', '.join(sorted(unknown))}")
            continue
        try:
            _check_item(item, zone, now_us)
        except InvalidInput as exc:
            problems.append(f"line {number}: {exc.message}")
            continue
        item["line"] = number
        items.append(item)
    if problems:
        raise InvalidInput("\n".join(problems + [f"{len(problems)} invalid line(s); nothing was created"]))
    return items


def _check_item(item: dict[str, Any], zone: tzinfo, now_us: int) -> None:
    """The daemon re-checks everything; checking here too names *every* bad line at once."""
    validate_meeting_url(item.get("meeting_url"))
    if item.get("bot_name") is not None:
        validate_bot_name(item["bot_name"])
    validate_metadata(item.get("metadata"))
    validate_dedup_key(item.get("deduplication_key"))
    join_at = item.get("join_at")
    if join_at is not None:
        if not isinstance(join_at, str):
            raise InvalidInput("join_at must be a string time")
        item["join_at"] = parse_join_at(join_at, now_us, zone).text


def _chunks(items: list[dict[str, Any]]) -> list[bytes]:
    """Pack items into ``{"items": [...]}`` lines of about ``CHUNK_BYTES`` each."""
    chunks: list[bytes] = []
    batch: list[bytes] = []
    size = 0
    for item in items:
        encoded = json.dumps(item, ensure_ascii=False, separators=(",", ":")).encode()
        if batch and size + len(encoded) > CHUNK_BYTES:
            chunks.append(b'{"items":[' + b",".join(batch) + b"]}\n")
            batch, size = [], 0
        batch.append(encoded)
        size += len(encoded) + 1
    if batch:
        chunks.append(b'{"items":[' + b",".join(batch) + b"]}\n")
    return chunks


def create_from_file(source: str, zone: tzinfo, as_json: bool, quiet: bool) -> None:
    from botsched.client import connect

    handle = _open(source)
    try:
        raw_lines = handle.read().splitlines()
    finally:
        if handle is not sys.stdin.buffer:
            handle.close()
    show_progress = sys.stderr.isatty() and not quiet and len(raw_lines) > 1000
    items = parse_lines(raw_lines, zone, time.time_ns() // 1000)
    if not items:
        raise InvalidInput(f"{source}: no bots to create (the file has no JSON lines)")
    chunks = _chunks(items)
    with connect() as conn:
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
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with Progress(TextColumn("creating"), BarColumn(), MofNCompleteColumn(), transient=True) as progress:
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
