"""Runner output in the shared database (``logs`` from any agent): bounded per bot, shipped
in batches (one transaction for many flushes of many bots), nothing lost at close."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from botsched.daemon.logship import LogShipper
from botsched.daemon.store.postgres import PostgresStore


def _text(store: PostgresStore, bot_id: str) -> bytes:
    return b"".join(data for _, data in store.read_logs(bot_id, limit=1000))


def test_each_bot_keeps_only_its_newest_output(agents: Callable[[], PostgresStore]) -> None:
    store = agents()
    store.append_logs([("bot_x", b"a" * 600), ("bot_y", b"y\n")], max_bytes=1000)
    store.append_logs([("bot_x", b"b" * 300)], max_bytes=1000)
    assert _text(store, "bot_x") == b"a" * 600 + b"b" * 300  # within the bound: all kept
    store.append_logs([("bot_x", b"c" * 600)], max_bytes=1000)
    assert _text(store, "bot_x") == b"b" * 300 + b"c" * 600  # the oldest chunk went
    assert _text(store, "bot_y") == b"y\n"  # another bot's output is not touched
    other = agents()  # another agent reads the same, in pages
    [(first_seq, first)] = other.read_logs("bot_x", limit=1)
    assert first == b"b" * 300
    assert b"".join(data for _, data in other.read_logs("bot_x", first_seq)) == b"c" * 600


def test_the_shipper_batches_flushes_into_few_transactions_and_ships_the_rest_at_close(
    agents: Callable[[], PostgresStore],
) -> None:
    store = agents()
    writes: list[int] = []

    def write(chunks: Sequence[tuple[str, bytes]]) -> None:
        writes.append(len(chunks))
        store.append_logs(chunks)

    shipper = LogShipper(write)
    for i in range(200):  # 200 flushes of 4 runners, in a burst
        shipper.add(f"bot_{i % 4}", f"line {i}\n".encode())
    shipper.close()
    for n in range(4):
        assert _text(store, f"bot_{n}") == b"".join(f"line {i}\n".encode() for i in range(n, 200, 4))
    assert 1 <= len(writes) <= 2, f"one transaction per batch, not per flush: {writes}"
