"""A cluster agent's scheduler (SPEC §10): the single-machine rules, staged through claims.

Only with a store that supports claims (the PostgreSQL one); the SQLite daemon never loads
this. What changes against ``Scheduler``:

- staging is ``claim_due``: at most as many bots as this agent has free runner slots, each
  claimed (agent, lease, fencing epoch) in the database, so each bot has one agent;
- joins, runner reports and every other write about a bot this agent runs go through
  ``transition_held``: accepted only while the claim (agent and epoch) is still ours;
- a heartbeat every ``lease_seconds / 3`` renews the leases; a claim that is no longer
  ours (the lease lapsed and another agent took the bot, or it was failed) stops that
  bot's runner here and drops every write for it. The heartbeat also fails the bots
  past ``staged`` of agents whose lease lapsed (``fail_lost``); ``claim_due`` re-stages
  their unjoined staged bots.

The join is still sent from this agent's own clock: nothing crosses the network at the
join instant (the in-memory join times of the bots we hold drive it).

While the database is away (docs/cluster-failures.md): nothing here waits on it (the store
fails at once during an outage); the bots we hold go on from memory -- their joins are sent
on time while the server itself said it is down, for up to ``cluster.outage_grace_seconds``
after our last renewal (no agent can take a bot over meanwhile), otherwise only while our
leases surely hold -- and every change is queued, in order, with its true time, until the
database is back. Then we renew first, write the queue, and take over other agents' lapsed
bots only after a whole lease of reachability (their holders renew first).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import Protocol

from botsched import __version__
from botsched.core import states
from botsched.core.config import Config
from botsched.core.errors import Conflict
from botsched.core.model import Due
from botsched.daemon.agents import CLOCK_WARN_MS, AgentBeat, AgentRow, agent_name, offset_warnings, slots
from botsched.daemon.runners import Runner, RunnerError
from botsched.daemon.scheduler import ARM_LEAD_US, BATCH, LATE_NOTE_US, RECORD_RETRY_US, Clock, Scheduler, _seconds
from botsched.daemon.store.base import Change, StorageError, Store
from botsched.daemon.store.postgres import Claim, DatabaseUnreachable, FencedChange, Outage

__all__ = ["ClaimingStore", "ClusterScheduler", "agent_name", "supports_claims"]

log = logging.getLogger("botsched.daemon.cluster")

#: Joins are sent only within this share of a lease after its renewal began (the rest is
#: slack for clock-rate differences and the renewal's own round trip).
LEASE_MARGIN = 0.9


class ClaimingStore(Store, Protocol):
    """A store that several agents share: claims, leases, fencing (store/postgres.py)."""

    def claim_due(self, agent: str, until_us: int, slots: int, lease_us: int, now_us: int,
                  take_over: bool = True) -> list[Claim]: ...
    def renew(self, agent: str, held: list[tuple[str, int]], lease_us: int) -> set[str]: ...
    def transition_held(self, agent: str, changes: list[FencedChange], now_us: int) -> list[str]: ...
    def listen(self, on_due: Callable[[int], None], stopping: threading.Event,
               on_leave: Callable[[str], None] | None = None,
               on_events: Callable[[str], None] | None = None) -> None: ...
    def notify_leave(self, bot_id: str) -> None: ...
    def fail_lost(self, now_us: int, limit: int = 1000) -> list[str]: ...
    def holder(self, bot_id: str) -> tuple[str | None, int] | None: ...
    def outage(self) -> Outage | None: ...
    def reachable_for(self) -> float: ...
    on_reachable: Callable[[], None] | None
    def clock_offset_ms(self, samples: int = 3) -> float: ...
    def beat_agent(self, beat: AgentBeat, lease_us: int, replacing: str | None = None) -> bool: ...
    def agent_holder(self, name: str) -> tuple[str, str, int, float] | None: ...
    def retire_agent(self, name: str, instance: str) -> None: ...
    def agents(self) -> list[AgentRow]: ...


def supports_claims(store: Store) -> bool:
    return all(hasattr(store, name) for name in ("claim_due", "renew", "transition_held", "fail_lost"))


class ClusterScheduler(Scheduler):
    """``Scheduler`` for one agent of a shared database."""

    def __init__(self, store: ClaimingStore, runner: Runner, config: Config, clock: Clock | None = None) -> None:
        super().__init__(store, runner, config, clock)
        self.shared = store
        self.agent = agent_name(config)
        #: bot_id -> fencing epoch of every claim this agent holds (runs a runner for)
        self.held: dict[str, int] = {}
        #: the held bots still staged, with their join_at: the joins this agent sends
        self._staged: dict[str, int] = {}
        self._next_beat_us = 0
        #: told of each ``botsched_events`` notification (the daemon's EventFeed.notice)
        self.on_events: Callable[[str], None] | None = None
        #: time.monotonic() until which every lease we hold is surely still ours (see _lease_ok),
        #: and when the renewal (or first claim) that gave that bound began
        self._leases_until = 0.0
        self._renewed_at = 0.0
        #: the state we last wrote for each bot we hold: runner reports during an outage queue from it
        self._held_state: dict[str, str] = {}
        # the join process sends a join only while _join_bound() holds: an agent frozen past its
        # lease (SIGSTOP, a VM pause) must not send, when it thaws, a join another agent sent
        self._sent_bound = 0.0
        runner.send_joins_until(self._sent_bound)
        #: this daemon process in the agents registry (two live daemons never share a name)
        self.instance = secrets.token_hex(8)
        self.clock_offset_ms: float | None = None
        #: another live daemon has our name (we lapsed meanwhile): we claim and run nothing
        self._name_lost = False

    @property
    def lease_us(self) -> int:
        return int(float(self.config["cluster.lease_seconds"]) * 1_000_000)

    @property
    def outage_grace_s(self) -> float:
        return float(self.config["cluster.outage_grace_seconds"])

    # -- what is due: our own staged bots, the shared queue, the heartbeat ---------------

    def next_due_us(self) -> int | None:
        due = super().next_due_us()
        return self._next_beat_us if due is None else min(due, self._next_beat_us)

    def _next_time(self, state: str, exclude_armed: bool = False) -> int | None:
        if state == states.READY:
            return None  # ad-hoc bots are claimed with the rest (a create pokes us)
        if state != states.STAGED:
            return super()._next_time(state, exclude_armed)
        skip = self._unrecorded_ids.union(self.runner.armed()) if exclude_armed else self._unrecorded_ids
        when = min((t for bot_id, t in self._staged.items() if bot_id not in skip), default=None)
        if when is not None and not self._may_join():
            when = max(when, self.clock.now_us() + RECORD_RETRY_US)  # joins wait for a renewal: no busy loop
        return when

    def _next_stage_us(self) -> int | None:
        when = self.store.next_time(states.SCHEDULED)
        return None if when is None else when - self.config.stage_lead_us

    def tick(self) -> int | None:
        now = self.clock.now_us()
        if now >= self._next_beat_us:
            self._heartbeat(now)
        self._bound_joins()  # an outage the server announced may extend it (see _may_join)
        try:
            return super().tick()
        except DatabaseUnreachable:
            # joins, arming and queued records are done (they need no database); staging waits
            return self._offline_due(now)

    def _offline_due(self, now: int) -> int:
        """When to tick while the database is away: our next join or arming, else a retry."""
        candidates = [now + RECORD_RETRY_US]
        when = self._next_time(states.STAGED, exclude_armed=True)
        if when is not None:
            candidates.append(when)
        if self._to_arm:
            candidates.append(self._next_arm_us - ARM_LEAD_US)
        return min(candidates)

    def _lease_ok(self) -> bool:
        """Our leases hold now: the last renewal (or first claim) began less than
        ``LEASE_MARGIN`` x lease ago by this machine's monotonic clock. Past that another agent
        may have taken our bots: nothing is sent for them until a heartbeat says they are ours."""
        return time.monotonic() < self._leases_until

    def _may_join(self) -> bool:
        """Joins of the bots we hold may be sent now: our leases hold, or the database server
        itself said it is down (no agent can take a bot over while it is), that outage began
        while our leases held, and our last renewal is less than ``outage_grace_seconds`` ago.
        A database that just stops answering may be this machine cut off while the others
        still reach it: then only the leases count."""
        return time.monotonic() < self._join_bound()

    def _join_bound(self) -> float:
        """``_may_join`` as a deadline (``time.monotonic()``), the one the join process obeys."""
        outage = self.shared.outage()
        if outage is not None and outage.server_said and outage.since < self._leases_until:
            return max(self._leases_until, self._renewed_at + self.outage_grace_s)
        return self._leases_until

    def _bound_joins(self) -> None:
        """Tell the join process the current deadline (only when it moved)."""
        bound = self._join_bound()
        if bound != self._sent_bound:
            self._sent_bound = bound
            self.runner.send_joins_until(bound)

    def _may_take_over(self) -> bool:
        """Other agents' lapsed leases may be taken (re-staged, failed): only once the database
        has been reachable a whole lease without a break. After an outage every holder gets
        that long to renew: a lease that lapsed while nobody could renew is no sign of death."""
        return self.shared.reachable_for() >= self.lease_us / 1_000_000

    def _leases_from(self, started: float) -> None:
        self._renewed_at = started
        self._leases_until = started + LEASE_MARGIN * self.lease_us / 1_000_000
        self._bound_joins()

    # -- staging: claims ---------------------------------------------------------------

    def _start_ready(self, now: int) -> int:
        return 0  # claim_due hands us ad-hoc bots too (see _stage_due)

    def _stage_due(self, now: int) -> int:
        if self._name_lost:
            return 0
        free = self.runner.free_slots()
        slots = BATCH if free is None else min(free, BATCH)
        if slots <= 0:
            return 0
        started = time.monotonic()
        claims = self.shared.claim_due(self.agent, now + self.config.stage_lead_us, slots, self.lease_us, now,
                                       take_over=self._may_take_over())
        if claims and not self.held:
            self._leases_from(started)  # else the last renewal's (earlier) bound still covers them
        ready_changes: list[Change] = []
        joins: list[str] = []
        for claim in claims:
            self.held[claim.id] = claim.epoch
            self._held_state[claim.id] = claim.state
            if claim.taken_from is not None:
                log.warning("%s: re-staged here (agent %s lost its lease)", claim.id, claim.taken_from)
            missed = self._missed(Due(claim.id, claim.state, claim.join_at_us), now)
            if missed:
                self._write([(claim.id, claim.state, states.FATAL_ERROR, missed)], now)
                continue
            try:
                self.runner.stage(self._bot(claim.id))
            except RunnerError as exc:
                self.runner.discard(claim.id)
                self._write([(claim.id, claim.state, states.FATAL_ERROR, f"runner could not start: {exc}")],
                            self.clock.now_us())
                continue
            if claim.state == states.READY:
                ready_changes.append((claim.id, states.READY, states.JOINING, None))
                joins.append(claim.id)
                continue
            self._staged[claim.id] = claim.join_at_us
            if self.runner.arms_joins:
                self._want_armed(claim.id, claim.join_at_us)
        self._record_then_join(ready_changes, joins, now)
        if self.runner.arms_joins:
            self._arm_due(self.clock.now_us())
        return len(claims) if len(claims) == BATCH else 0

    def _join_due(self, now: int) -> int:
        if self._staged and not self._may_join():
            self._heartbeat(now)  # joins wait for a renewal (a lost bot is let go there)
            if not self._may_join():
                return 0
        skip = self._unrecorded_ids.union(self.runner.armed()) if self.runner.arms_joins else self._unrecorded_ids
        due = sorted((t, bot_id) for bot_id, t in self._staged.items() if t <= now and bot_id not in skip)
        changes: list[Change] = []
        joins: list[str] = []
        for join_at_us, bot_id in due:
            missed = self._missed(Due(bot_id, states.STAGED, join_at_us), now)
            if missed:
                self.runner.discard(bot_id)
                changes.append((bot_id, states.STAGED, states.FATAL_ERROR, missed))
                continue
            late = now - join_at_us
            detail = f"joined {_seconds(late)} late" if late > LATE_NOTE_US else None
            changes.append((bot_id, states.STAGED, states.JOINING, detail))
            joins.append(bot_id)
        self._record_then_join(changes, joins, now)
        return 0

    # -- writes: fenced on our claims ------------------------------------------------------

    def _write(self, changes: Sequence[Change], now: int) -> list[str]:
        """Scheduled bots nobody holds (misfires): a plain compare-and-set. Anything else
        only for a bot we hold, fenced on its epoch; a change for a bot we do not hold is
        dropped (an agent that lost a bot writes nothing for it)."""
        free = [change for change in changes if change[1] == states.SCHEDULED]
        fenced: list[FencedChange] = []
        for bot_id, old, new, detail in changes:
            if old == states.SCHEDULED:
                continue
            epoch = self.held.get(bot_id)
            if epoch is None:
                log.warning("%s: %s -> %s not written: this agent does not hold the bot", bot_id, old, new)
                continue
            fenced.append((bot_id, epoch, old, new, detail))
        moved = self.store.transition_many(free, now) if free else []
        if fenced:
            won = self.shared.transition_held(self.agent, fenced, now)
            moved.extend(won)
            won_set = set(won)
            for bot_id, _epoch, _old, new, _detail in fenced:
                if bot_id not in won_set:
                    continue
                if new != states.STAGED:
                    self._staged.pop(bot_id, None)
                self._held_state[bot_id] = new
                if states.is_terminal(new):
                    self.held.pop(bot_id, None)
                    self._held_state.pop(bot_id, None)
        return moved

    def joins_sent(self, fired: list[tuple[str, int, int, str | None]]) -> None:
        """As ``Scheduler.joins_sent``, except that a join the thread held back only because our
        leases were not sure any more (frozen, cut off, an outage past its grace) is not a
        failure: the bot stays staged, and its join is sent late once a renewal says it is
        still ours (within ``misfire_grace_seconds``); a bot taken over meanwhile is let go."""
        kept = []
        for bot_id, due_us, sent_us, error in fired:
            if (error == "missed" and bot_id in self._staged
                    and self._missed(Due(bot_id, states.STAGED, due_us), sent_us) is None):
                log.warning("%s: join held back at its join_at (this agent's leases were not sure); "
                            "it is sent once a renewal says the bot is still ours", bot_id)
                continue
            kept.append((bot_id, due_us, sent_us, error))
        if kept:
            super().joins_sent(kept)
        else:
            self.poke()

    def report(self, bot_id: str, state: str, detail: str | None) -> None:
        """A runner's report. While the database is away (or earlier changes wait to be
        written) it queues behind them, from the state we last wrote or queued for the bot:
        written when the database is back, in order, at its true time."""
        if self.shared.outage() is None and not self._unrecorded:
            try:
                super().report(bot_id, state, detail)
                return
            except DatabaseUnreachable:
                pass  # the outage begins now: queue it like the others
        if bot_id not in self.held:
            log.warning("runner reported %s for %s, which this agent does not hold; ignored", state, bot_id)
            return
        queued = [change[2] for changes, _ in self._unrecorded for change in changes if change[0] == bot_id]
        old = queued[-1] if queued else self._held_state.get(bot_id)
        if old is None or not states.is_legal(old, state):
            log.warning("runner reported %s for %s (last known %s); ignored", state, bot_id, old)
            return
        self._record([(bot_id, old, state, detail)], self.clock.now_us())

    # -- the heartbeat ------------------------------------------------------------------

    def _heartbeat(self, now: int) -> None:
        """Renew our leases; stop the runners of claims we no longer hold; fail the bots
        that lost agents had past ``staged`` (not just after an outage: see _may_take_over)."""
        self._next_beat_us = now + max(self.lease_us // 3, 1_000)
        try:
            self._beat_registry()
            if self.held and self._name_lost:
                for bot_id in list(self.held):
                    self._lose(bot_id)
            elif self.held:
                started = time.monotonic()
                kept = self.shared.renew(self.agent, list(self.held.items()), self.lease_us)
                self._leases_from(started)
                for bot_id in [bot_id for bot_id in self.held if bot_id not in kept]:
                    self._lose(bot_id)
            lost = self.shared.fail_lost(now) if self._may_take_over() else []
        except DatabaseUnreachable:
            return  # the store said so once, when the outage began; we retry every beat
        except StorageError as exc:
            log.error("heartbeat failed: %s", exc.message)
            return
        if lost:
            log.warning("%d bot(s) of lost agents -> fatal_error: %s", len(lost), ", ".join(lost[:3]))

    # -- the agents registry ----------------------------------------------------------

    def _beat(self) -> AgentBeat:
        used, total = slots(self.runner, self.config, len(self.held))
        return AgentBeat(self.agent, self.instance, socket.gethostname(), os.getpid(), __version__,
                         str(self.config["runner.kind"]), used, total, self.clock_offset_ms)

    def _measure_clock(self) -> None:
        """Our clock's offset from the database server's; logged when it crosses ``CLOCK_WARN_MS``
        (joins follow our clock: an offset is how early or late our bots join)."""
        offset = self.shared.clock_offset_ms()
        was_off = self.clock_offset_ms is not None and abs(self.clock_offset_ms) > CLOCK_WARN_MS
        self.clock_offset_ms = offset
        if abs(offset) > CLOCK_WARN_MS and not was_off:
            log.warning("this machine's clock is %+.1f ms off the database server's: bots join that much "
                        "off time (sync it, e.g. with NTP)", offset)
        elif was_off and abs(offset) <= CLOCK_WARN_MS:
            log.info("this machine's clock is back within %g ms of the database server's (%+.1f ms)",
                     CLOCK_WARN_MS, offset)

    def register(self) -> None:
        """Enter the agents registry under our name, or refuse to start (exit 4) while another
        live daemon has it. A holder whose lease lapsed may be replaced, and so may a dead
        daemon of this host (a crash and restart need not wait out the lease)."""
        self._measure_clock()
        holder = self.shared.agent_holder(self.agent)
        replacing = None
        if holder is not None:
            instance, host, pid, _left = holder
            if host == socket.gethostname() and pid != os.getpid() and not _daemon_alive(pid):
                replacing = instance
        if not self.shared.beat_agent(self._beat(), self.lease_us, replacing):
            assert holder is not None
            raise Conflict(f"agent name {self.agent!r} is taken by a live agent (pid {holder[2]} on {holder[1]}, "
                           f"lease {max(holder[3], 0):.1f}s left): give this one another cluster.agent_name")

    def _beat_registry(self) -> None:
        """The heartbeat's registry row: our slots and clock offset, alive for a lease more."""
        self._measure_clock()
        ours = self.shared.beat_agent(self._beat(), self.lease_us)
        if ours == (not self._name_lost):
            return
        self._name_lost = not ours
        if ours:
            log.warning("agent name %s is ours again: claiming bots again", self.agent)
        else:
            log.error("agent name %s was taken by another live agent while this one was away: its bots are "
                      "let go and nothing is claimed until the name is free again", self.agent)

    def agents(self) -> tuple[list[AgentRow], list[str]]:
        """``botsched agents``: every agent of the shared database, and warnings about clocks."""
        rows = self.shared.agents()
        return rows, offset_warnings(rows)

    def _lose(self, bot_id: str) -> None:
        """A claim is no longer ours: stop its runner (and its armed join), forget it."""
        if bot_id in self._unrecorded_ids:
            return  # our own write for it is pending: the next heartbeat looks again
        log.warning("%s: this agent no longer holds the bot; its runner is stopped", bot_id)
        self.held.pop(bot_id, None)
        self._held_state.pop(bot_id, None)
        self._staged.pop(bot_id, None)
        self._to_arm.pop(bot_id, None)
        self.runner.discard(bot_id)  # its armed join too

    # -- notifications: changes made through any agent ------------------------------------

    async def run(self) -> None:
        """The scheduler loop, with a thread that LISTENs for queue changes committed by any
        agent (a create or reschedule through another machine) and pokes this loop at once."""
        loop = asyncio.get_running_loop()
        stopping = threading.Event()

        def on_due(due_us: int) -> None:
            when = due_us - self.config.stage_lead_us if due_us else None
            if not stopping.is_set():
                with contextlib.suppress(RuntimeError):  # the loop closed meanwhile: nothing to poke
                    loop.call_soon_threadsafe(self.poke, when)

        def on_leave(bot_id: str) -> None:
            if not stopping.is_set():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._leave_here, bot_id)

        def on_reachable() -> None:
            if not stopping.is_set():
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self._reachable_again)

        self.shared.on_reachable = on_reachable
        listener = threading.Thread(target=self.shared.listen, args=(on_due, stopping, on_leave, self.on_events),
                                    name="botsched-listen", daemon=True)
        listener.start()
        try:
            await super().run()
        finally:
            stopping.set()
            self.shared.on_reachable = None
            with contextlib.suppress(StorageError):  # an outage: the lease lapses by itself
                self.shared.retire_agent(self.agent, self.instance)

    def _reachable_again(self) -> None:
        """The database is back: renew at once (the queue is written right after, in order)."""
        self._next_beat_us = 0
        self.poke()

    def leave_elsewhere(self, bot_id: str) -> str | None:
        """``leave`` for a bot another agent runs: ask that agent (a notification), and say so;
        ``None`` when the bot is ours (or nobody's): the local runner is asked, as always."""
        if bot_id in self.held:
            return None
        holder = self.shared.holder(bot_id)
        if holder is None or holder[0] is None or holder[0] == self.agent:
            return None
        self.shared.notify_leave(bot_id)
        return f"asked agent {holder[0]}, which runs {bot_id}, to make it leave"

    def _leave_here(self, bot_id: str) -> None:
        if bot_id not in self.held:
            return  # not ours (any more): its holder heard the same notification
        try:
            note = self.runner.leave(bot_id)
        except RunnerError as exc:
            log.warning("%s: leave asked through another agent: %s", bot_id, exc)
            return
        log.info("%s: leave asked through another agent%s", bot_id, f" ({note})" if note else "")

    # -- start-up -----------------------------------------------------------------------

    def recover(self) -> None:
        """Re-attach to the runners of the bots this agent (by name) still holds; the others
        are not ours to touch (their agent runs them, or they are re-staged when it is lost)."""
        self.register()
        log.info("cluster agent %s: lease %ss, %s runner slot(s)", self.agent, self.config["cluster.lease_seconds"],
                 self.runner.free_slots())
        waiting = (states.SCHEDULED, states.READY)
        active = [s for s in states.ALL_STATES if s not in states.TERMINAL and s not in waiting]
        mine: dict[str, Due] = {}
        epochs: dict[str, int] = {}
        for due in self.store.in_states(active):
            holder = self.shared.holder(due.id)
            if holder is not None and holder[0] == self.agent:
                mine[due.id] = due
                epochs[due.id] = holder[1]
        started = time.monotonic()
        kept = self.shared.renew(self.agent, list(epochs.items()), self.lease_us) if epochs else set()
        self._leases_from(started)
        for bot_id, due in mine.items():
            if bot_id not in kept:
                continue
            self.held[bot_id] = epochs[bot_id]
            self._held_state[bot_id] = due.state
            since = self.store.state_since(bot_id)
            if since is None:
                continue
            try:
                self.runner.resume(self._bot(bot_id), since[1])
            except RunnerError as exc:
                self._write([(bot_id, due.state, states.FATAL_ERROR, str(exc))], self.clock.now_us())
                continue
            if due.state == states.STAGED:
                self._staged[bot_id] = due.join_at_us
                if self.runner.arms_joins:
                    self._want_armed(bot_id, due.join_at_us)
        stray = self.runner.stop_strays(set(self.held))
        if stray:
            log.warning("%d runner(s) of bots this agent no longer holds stopped: %s", len(stray), ", ".join(stray[:3]))


def _daemon_alive(pid: int) -> bool:
    """A botsched process of this host runs as ``pid`` (a zombie is dead: nobody reaped it
    yet; another program that got the pid after a reboot is not a daemon of ours)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            if handle.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                return False
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return b"botsched" in handle.read()
    except (OSError, IndexError):
        return True  # no /proc: kill(0) said it exists
