"""The join instants, in a process of their own: nothing in the daemon can stand in front.

A thread of the daemon wakes on time but must then take the GIL from the event loop, and a
C call on the loop (a SQLite step, building a reply) holds it for milliseconds. So the daemon
starts this module at start-up as a separate process (``python -I -S joiner.py FD PPID``:
standard library only, imported alone) connected by a ``SOCK_SEQPACKET`` socketpair
(``daemon/runners/joins.py`` is the daemon's side). The daemon arms each staged bot's join
ahead of time, passing the runner's stdin FIFO fd (``SCM_RIGHTS``); this process naps in
``poll`` until ``SPIN_US`` before the earliest instant, sleeps then spins the rest, appends
the instant to the join journal, writes ``join\\n`` to every fd of that instant in one tight
loop, and reports what it wrote. It runs ``SCHED_FIFO`` when allowed, dies with the daemon
(``PR_SET_PDEATHSIG``) or when the socket closes, and ignores terminal and stop signals (the
daemon decides when it goes). It forks one *warmer* per CPU (``start_warmers``): a
``SCHED_IDLE`` process that spins from just before each instant until just after it, so the
runners woken by ``join`` find their CPUs awake instead of halted (``BOTSCHED_WARM_CPUS=0``
in the daemon's environment turns them off, to measure without). It reports an instant
``REPORT_AFTER_US`` after it, not at once: the daemon's work on a report (a commit, events,
the staging held back for it) would otherwise take a CPU from the runners just woken. When it cannot be
started, or keeps dying, the daemon runs ``serve`` in a thread instead: the same code and
protocol.

Messages are processed only between instants, in order, so a disarm is exclusive with the
fire: its answer comes after the report of any instant being fired. Daemon -> joiner:

- ``A DUE GRACE_US ID...`` + fds: arm (``ID`` takes the next fd; ``-ID``: none, a simulated
  runner). An instant more than ``GRACE_US`` past when reached is reported ``missed``.
- ``D ID``: disarm; answered ``d ID 1`` (it was pending: never written) or ``d ID 0``.
- ``P``: answered ``p`` (every instant reached before it was sent has been reported).
  A ``D`` or ``P`` first sends every report still held back, so both answers keep their order.
- ``J OFFSET`` + fd: the journal; each instant is ``pwrite``-n at OFFSET onwards (the file is
  preallocated, so a full disk cannot refuse the line) just before its joins are written.
- ``L UNTIL_NS``: send only while ``CLOCK_MONOTONIC`` < UNTIL_NS (-1: always): a cluster
  agent's leases. With a limit set, the process also sends only while the daemon is not
  stopped (SIGSTOP): a frozen agent cannot record a join, and once its leases lapse another
  agent would send it again (a thread froze with its daemon; this process must check).

Joiner -> daemon: ``F DUE SENT_US ID[=ERR]...``, ERR ``missed``, ``short`` or an errno.
"""

from __future__ import annotations

import array
import os
import select
import socket
import sys
import time

SPIN_US = 1_000
#: The warmers keep every CPU awake from the joiner's spin (about ``SPIN_US`` + 1 ms before an
#: instant) until this long after it, so the runners it wakes find a CPU running. Just past
#: the first writes, no longer: a woken runner is measured to wait until the warmer on its
#: CPU stops spinning (the guest's kernel does not preempt it at wake-up), so a 3 ms warm
#: made a cluster of joins read exactly 3 ms late (docs/reliability.md, "Quiet after a join").
WARM_AFTER_US = 150
#: Reports of an instant wait this long after it (the daemon's work on them would compete
#: with the runners just woken): the idle spread's p99 went from ~0.9 to ~0.2 ms.
REPORT_AFTER_US = 5_000
MAX_NAP_MS = 1_000
JOIN_LINE = b"join\n"
#: Fds per arm message (the kernel's SCM_MAX_FD is 253) and ids per report.
MAX_FDS = 250
REPORT_IDS = 1_000
RECV_BYTES = 1 << 16


def _now_us() -> int:
    return time.time_ns() // 1000


def _raise_priority() -> bool:
    """SCHED_FIFO when the system allows it (root, CAP_SYS_NICE, or an ``RLIMIT_RTPRIO``
    such as systemd's ``LimitRTPRIO=1``): each ``join`` written wakes a runner, and an
    ordinary task is preempted by the runner it just woke (a burst of 200 then takes ~20 ms
    to write on a loaded 2-core machine instead of ~1 ms). It only sleeps, spins at most
    200 µs, and writes a few bytes, so it cannot starve anything."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))  # 0: this thread
    except (OSError, AttributeError):
        return False
    return True


def _warm_cpu(cpu: int, commands: int) -> None:
    """A warmer's life: pinned to ``cpu`` at ``SCHED_IDLE`` (it runs only when nothing else
    wants that CPU, and any woken task preempts it at once), it spins until each deadline it
    is sent. On a virtual machine an idle vCPU halts, and waking a halted vCPU for the runner
    a ``join`` just woke costs the hypervisor's latency: 2-10 ms measured on a 2-vCPU guest,
    against ~0.2 ms when the CPU is kept running (``docs/reliability.md``, "Warm CPUs")."""
    try:
        os.sched_setaffinity(0, {cpu})
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except OSError:
        pass
    clock = time.monotonic_ns
    while True:
        try:
            data = os.read(commands, 4096)
        except InterruptedError:
            continue
        if not data:
            os._exit(0)  # the joiner is gone
        until = int(data.split()[-1])
        while clock() < until:
            pass


def start_warmers() -> list[int]:
    """One warmer process per CPU this process may use; the write ends of their command pipes.
    Forked before the joiner raises its own priority; each dies with the joiner (its pipe's
    EOF, or ``PR_SET_PDEATHSIG``)."""
    import ctypes
    import signal

    ends: list[int] = []
    for cpu in sorted(os.sched_getaffinity(0)):
        read_end, write_end = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.close(write_end)
                for end in ends:
                    os.close(end)
                ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
                _warm_cpu(cpu, read_end)
            finally:
                os._exit(0)
        os.close(read_end)
        os.set_blocking(write_end, False)
        ends.append(write_end)
    return ends


def _recv_fds(sock: socket.socket) -> tuple[bytes, list[int]]:
    """One message and its fds, without waiting (``socket.recv_fds`` ignores its flags)."""
    fds = array.array("i")
    data, ancillary, _, _ = sock.recvmsg(RECV_BYTES, socket.CMSG_LEN(MAX_FDS * fds.itemsize),
                                         socket.MSG_DONTWAIT | socket.MSG_CMSG_CLOEXEC)
    for level, kind, blob in ancillary:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds.frombytes(blob[:len(blob) - len(blob) % fds.itemsize])
    return data, list(fds)


class _Joiner:
    def __init__(self, sock: socket.socket, daemon_pid: int, warmers: list[int] | None = None) -> None:
        self.sock = sock
        self.warmers = warmers or []  # command pipes of the warmers (none in the thread fallback)
        self.daemon_pid = daemon_pid  # -1: a thread of the daemon (it cannot be stopped alone)
        self.batches: dict[int, dict[str, int]] = {}  # due_us -> {bot_id: fd (-1: none)}
        self.grace: dict[int, int] = {}
        self.due_of: dict[str, int] = {}
        self.journal = -1
        self.journal_at = 0
        self.until_ns = -1
        self.reports: list[bytes] = []  # held back until report_at_ns (monotonic)
        self.report_at_ns = 0

    def run(self) -> None:
        poller = select.poll()
        poller.register(self.sock, select.POLLIN)
        while True:
            timeout = -1
            if self.reports:
                wait_ns = self.report_at_ns - time.monotonic_ns()
                if wait_ns <= 0:
                    self._flush_reports()
                else:
                    timeout = -(-wait_ns // 1_000_000)  # whole ms, rounded up
            if self.batches:
                due = min(self.batches)
                left = due - _now_us()
                if left <= SPIN_US + 1_000:  # poll counts whole ms: spin the last stretch
                    self._warm(due)
                    self._spin_until(due)
                    self._fire(due)
                    continue
                nap = min((left - SPIN_US) // 1000, MAX_NAP_MS)
                timeout = nap if timeout < 0 else min(timeout, nap)
            if poller.poll(timeout) and not self._receive():
                return

    def _receive(self) -> bool:
        """Every message waiting; False once the daemon's end is closed."""
        while True:
            try:
                data, fds = _recv_fds(self.sock)
            except BlockingIOError:
                return True
            except OSError:
                return False
            if not data:
                for fd in fds:
                    os.close(fd)
                return False
            self._handle(data.split(), fds)

    def _handle(self, fields: list[bytes], fds: list[int]) -> None:
        kind = fields[0]
        if kind == b"A":
            due, grace = int(fields[1]), int(fields[2])
            batch = self.batches.setdefault(due, {})
            self.grace[due] = grace
            taken = iter(fds)
            for raw in fields[3:]:
                bot_id = raw.decode()
                fd = -1
                if bot_id.startswith("-"):
                    bot_id = bot_id[1:]
                else:
                    fd = next(taken)
                self._drop(bot_id)
                batch[bot_id] = fd
                self.due_of[bot_id] = due
        elif kind == b"D":
            bot_id = fields[1].decode()
            self._flush_reports()
            self._send(b"d %s %d" % (fields[1], self._drop(bot_id)))
        elif kind == b"P":
            self._flush_reports()
            self._send(b"p")
        elif kind == b"J":
            if self.journal >= 0:
                os.close(self.journal)
            self.journal, self.journal_at = fds[0], int(fields[1])
        elif kind == b"L":
            self.until_ns = int(fields[1])

    def _drop(self, bot_id: str) -> bool:
        due = self.due_of.pop(bot_id, None)
        if due is None:
            return False
        fd = self.batches[due].pop(bot_id)
        if not self.batches[due]:
            del self.batches[due]
            self.grace.pop(due, None)
        if fd >= 0:
            os.close(fd)
        return True

    def _warm(self, due: int) -> None:
        """Keep every CPU running until just after ``due`` (monotonic: the warmers' clock)."""
        if not self.warmers:
            return
        until = b"%d\n" % (time.monotonic_ns() + (due - _now_us() + WARM_AFTER_US) * 1000)
        for end in self.warmers:
            try:
                os.write(end, until)
            except OSError:
                pass  # a warmer gone, or its pipe full: the joins go out all the same

    def _spin_until(self, due: int) -> None:
        give_up = time.monotonic() + 2 * SPIN_US / 1e6 + 0.002  # a backward clock step must not trap us
        while True:
            left = due - _now_us()
            if left <= 0 or time.monotonic() > give_up:
                return
            if left > 200:
                time.sleep((left - 150) / 1e6)

    def _fire(self, due: int) -> None:
        """Every write first (the journal line, then each fd), then the bookkeeping."""
        batch = self.batches.pop(due)
        grace = self.grace.pop(due, 0)
        now = _now_us()
        errors: dict[str, bytes] = {}
        if now - due > grace or (self.until_ns >= 0 and (time.monotonic_ns() >= self.until_ns or self._frozen())):
            errors = dict.fromkeys(batch, b"missed")
            sent = now
        else:
            write = os.write
            if self.journal >= 0:
                line = b"%d\n" % due
                try:
                    os.pwrite(self.journal, line, self.journal_at)
                    self.journal_at += len(line)
                except OSError:
                    pass  # past its preallocated room on a full disk: best effort
            for bot_id, fd in batch.items():
                if fd < 0:
                    continue  # a simulated runner: the instant is all there is to it
                try:
                    if write(fd, JOIN_LINE) != len(JOIN_LINE):
                        errors[bot_id] = b"short"
                except OSError as exc:
                    errors[bot_id] = b"%d" % (exc.errno or 5)
            sent = _now_us()
        for bot_id, fd in batch.items():
            del self.due_of[bot_id]
            if fd >= 0:
                os.close(fd)
        items = [bot_id.encode() + (b"=" + errors[bot_id] if bot_id in errors else b"") for bot_id in batch]
        if not self.reports:
            self.report_at_ns = time.monotonic_ns() + (due + REPORT_AFTER_US - _now_us()) * 1000
        for start in range(0, len(items), REPORT_IDS):
            self.reports.append(b"F %d %d " % (due, sent) + b" ".join(items[start:start + REPORT_IDS]))

    def _flush_reports(self) -> None:
        reports, self.reports = self.reports, []
        for report in reports:
            self._send(report)

    def _frozen(self) -> bool:
        """The daemon is stopped (or gone)."""
        if self.daemon_pid < 0:
            return False
        try:
            with open(f"/proc/{self.daemon_pid}/stat", "rb") as handle:
                state = handle.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            return True
        return state in (b"T", b"t", b"Z", b"X")

    def _send(self, message: bytes) -> None:
        try:
            self.sock.sendall(message)
        except OSError:
            pass  # the daemon is gone: the next receive ends us


def serve(sock: socket.socket, daemon_pid: int = -1, warmers: list[int] | None = None) -> None:
    """Arm, fire and report until the daemon's end of ``sock`` closes."""
    _raise_priority()
    try:
        _Joiner(sock, daemon_pid, warmers).run()
    finally:
        sock.close()


def _die_with(parent: int) -> None:
    """SIGKILL when the daemon dies (whatever kills it), and never outlive it by a start race."""
    import ctypes
    import signal

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_IGN)
    with_errno = ctypes.CDLL(None, use_errno=True)
    with_errno.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os._exit(0)


def main(argv: list[str]) -> None:
    fd, parent = int(argv[1]), int(argv[2])
    _die_with(parent)
    sock = socket.socket(fileno=fd)
    serve(sock, parent, start_warmers() if os.environ.get("BOTSCHED_WARM_CPUS", "1") != "0" else [])


if __name__ == "__main__":
    main(sys.argv)
