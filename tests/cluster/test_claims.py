"""Claims, leases and fencing (SPEC §10), contract style: separate store handles on one
database are separate agents. Real PostgreSQL (the session's private server).

- agents racing (``FOR UPDATE SKIP LOCKED``) for the same due bots: each bot exactly one
  winner, and no agent over the slots it asked for;
- a lease that runs out: the bot is re-staged by another agent (an event says from whom),
  and the old holder can neither renew it nor write for it (the fencing epoch);
- a bot past staged whose agent is lost becomes ``fatal_error`` ("agent NAME lost");
- reschedule and cancel racing a claim: exactly one winner.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from botsched.core import states
from botsched.core.model import NewBot
from botsched.daemon.store.base import NotScheduled
from botsched.daemon.store.postgres import Claim, PostgresStore

S = 1_000_000
URL = "https://meet.google.com/gvy-zzra-ktd"
LEASE = 15 * S  # cluster.lease_seconds' default


def now_us() -> int:
    return time.time_ns() // 1000


def due_bots(store: PostgresStore, count: int, join_us: int) -> list[str]:
    return store.insert([NewBot(URL, f"b{i}", None, join_us + i, {}, None) for i in range(count)], now_us())


def test_racing_agents_each_bot_has_exactly_one_winner_and_slots_are_kept(
    agents: Callable[[], PostgresStore],
) -> None:
    seeder = agents()
    start = now_us()
    ids = due_bots(seeder, 400, start)
    racers = {name: agents() for name in ("a", "b", "c")}
    slots = {"a": 7, "b": 11, "c": 3}
    won: dict[str, list[Claim]] = {name: [] for name in racers}
    calls: dict[str, list[int]] = {name: [] for name in racers}
    barrier = threading.Barrier(len(racers))

    def race(name: str) -> None:
        store = racers[name]
        barrier.wait()
        while True:
            got = store.claim_due(name, start + 3600 * S, slots[name], LEASE, now_us())
            calls[name].append(len(got))
            if not got:
                return
            won[name].extend(got)

    threads = [threading.Thread(target=race, args=(name,)) for name in racers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    claimed = [claim.id for claims in won.values() for claim in claims]
    assert sorted(claimed) == sorted(ids), "every due bot claimed, none twice"
    assert all(max(calls[name]) <= slots[name] for name in racers), "no agent took more than its free slots"
    assert sum(1 for claims in won.values() if claims) >= 2, "the work was spread (SKIP LOCKED, no waiting)"
    for name, claims in won.items():
        assert all(claim.state == states.STAGED and claim.epoch == 1 and claim.taken_from is None for claim in claims)
        assert all(seeder.holder(claim.id) == (name, 1) for claim in claims[:20])
    assert seeder.counts()["staged"] == 400
    staged_events = [event for event in seeder.events() if event.state == states.STAGED]
    assert sorted(event.bot_id for event in staged_events) == sorted(ids), "one staged event per bot"
    seqs = [event.seq for event in seeder.events()]
    assert seqs == sorted(set(seqs))


def test_only_due_bots_are_claimed_earliest_first(agents: Callable[[], PostgresStore]) -> None:
    store = agents()
    start = now_us()
    later = due_bots(store, 2, start + 600 * S)
    soon = due_bots(store, 3, start + 10 * S)
    got = store.claim_due("a", start + 60 * S, 10, LEASE, start)
    assert [claim.id for claim in got] == soon
    assert [claim.join_at_us for claim in got] == [start + 10 * S + i for i in range(3)]
    assert store.claim_due("a", start + 60 * S, 10, LEASE, start) == []
    assert store.claim_due("b", start + 3600 * S, 0, LEASE, start) == []  # no free slot: nothing
    assert {store.get(bot_id)["state"] for bot_id in later} == {"scheduled"}  # type: ignore[index]


def test_ad_hoc_bots_are_claimed_once_without_a_state_change(agents: Callable[[], PostgresStore]) -> None:
    a, b = agents(), agents()
    [bot_id] = a.insert([NewBot(URL, "now", None, None, {}, None)], now_us())
    [claim] = a.claim_due("a", now_us(), 5, LEASE, now_us())
    assert (claim.id, claim.state) == (bot_id, states.READY)
    assert b.claim_due("b", now_us(), 5, LEASE, now_us()) == []  # a holds it
    assert a.transition_held("a", [(bot_id, claim.epoch, "ready", "joining", None)], now_us()) == [bot_id]


def test_a_lapsed_lease_is_re_staged_elsewhere_and_the_old_holder_is_fenced_off(
    agents: Callable[[], PostgresStore],
) -> None:
    a, b = agents(), agents()
    start = now_us()
    [bot_id] = due_bots(a, 1, start)
    [first] = a.claim_due("a", start, 5, 200_000, start)  # a 0.2 s lease
    assert b.claim_due("b", start, 5, LEASE, now_us()) == [], "a live lease is not taken"
    time.sleep(0.3)  # a falls silent past its lease
    [taken] = b.claim_due("b", now_us(), 5, LEASE, now_us())
    assert (taken.id, taken.state, taken.taken_from) == (bot_id, states.STAGED, "a")
    assert taken.epoch == first.epoch + 1
    history = a.events(bot_id)
    assert history[-1].state == states.STAGED and history[-1].detail == "re-staged: agent a lost its lease"
    # a comes back: it holds nothing any more, and nothing it writes for the bot is accepted
    assert a.renew("a", [(bot_id, first.epoch)], LEASE) == set()
    assert a.transition_held("a", [(bot_id, first.epoch, "staged", "joining", None)], now_us()) == []
    assert a.get(bot_id)["state"] == "staged"  # type: ignore[index]
    # b, the holder, renews and runs it
    assert b.renew("b", [(bot_id, taken.epoch)], LEASE) == {bot_id}
    assert b.transition_held("b", [(bot_id, taken.epoch, "staged", "joining", "joined")], now_us()) == [bot_id]
    assert a.holder(bot_id) == ("b", taken.epoch)


def test_renewed_leases_are_kept(agents: Callable[[], PostgresStore]) -> None:
    a, b = agents(), agents()
    start = now_us()
    [bot_id] = due_bots(a, 1, start)
    [claim] = a.claim_due("a", start, 5, 400_000, start)
    for _ in range(4):  # heartbeats every 0.2 s keep a 0.4 s lease alive for 0.8 s
        time.sleep(0.2)
        assert a.renew("a", [(bot_id, claim.epoch)], 400_000) == {bot_id}
        assert b.claim_due("b", now_us(), 5, LEASE, now_us()) == []
    assert a.renew("b", [(bot_id, claim.epoch)], LEASE) == set(), "only the holder renews"


def test_a_lost_agent_s_joined_bots_become_fatal_error(agents: Callable[[], PostgresStore]) -> None:
    a, b = agents(), agents()
    start = now_us()
    joined, staged = due_bots(a, 2, start)
    claims = {claim.id: claim for claim in a.claim_due("a", start, 5, 200_000, start)}
    epoch = claims[joined].epoch
    assert a.transition_held("a", [(joined, epoch, "staged", "joining", None),
                                   (joined, epoch, "joining", "joined_recording", None)], now_us()) == [joined, joined]
    assert b.fail_lost(now_us()) == [], "the lease still runs"
    time.sleep(0.3)
    assert b.fail_lost(now_us()) == [joined]
    got = b.get(joined)
    assert got is not None and got["state"] == "fatal_error"
    assert got["events"][-1]["detail"] == "agent a lost"
    assert a.transition_held("a", [(joined, epoch, "joined_recording", "ended", None)], now_us()) == []
    # the staged one (not joined yet) is not failed: it goes to another agent
    assert [claim.id for claim in b.claim_due("b", now_us(), 5, LEASE, now_us())] == [staged]
    assert b.fail_lost(now_us()) == []


def test_reschedule_or_cancel_racing_a_claim_has_one_winner(agents: Callable[[], PostgresStore]) -> None:
    owner, agent = agents(), agents()
    start = now_us()
    ids = due_bots(owner, 60, start)
    outcome: dict[str, str] = {}
    barrier = threading.Barrier(2)

    def user() -> None:
        barrier.wait()
        for index, bot_id in enumerate(ids):
            try:
                if index % 2:
                    owner.delete_scheduled(bot_id)
                    outcome[bot_id] = "cancelled"
                else:
                    owner.reschedule(bot_id, "2030-01-01T00:00:00Z", start + 3600 * S, now_us())
                    outcome[bot_id] = "rescheduled"
            except NotScheduled as exc:
                assert exc.state == states.STAGED
                outcome[bot_id] = "lost"

    def scheduler() -> None:
        barrier.wait()
        for _ in range(len(ids)):  # one at a time, earliest first: the user works in that order too
            for claim in agent.claim_due("a", start + 60 * S, 1, LEASE, now_us()):
                assert outcome.get(claim.id) in (None, "lost"), f"{claim.id} claimed after the user won"

    threads = [threading.Thread(target=user), threading.Thread(target=scheduler)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    for bot_id in ids:
        found = owner.get(bot_id)
        if outcome[bot_id] == "cancelled":
            assert found is None
        elif outcome[bot_id] == "rescheduled":
            assert found is not None and found["state"] == "scheduled"
        else:
            assert found is not None and found["state"] == "staged"
