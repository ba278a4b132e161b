"""Outbox delivery: dispatch right after commit, remove a row only once its transport took it.

Decision Q4 (at-least-once): every `execute`/`unblock` row stays in the outbox until the SSE
write succeeded or the HTTP push answered 2xx. Rows that could not be delivered are re-driven
by a background loop (with backoff for failing pushes), and a worker that connects gets the
executes waiting for its group at once. An unblock with no live receiver is dropped (docs/protocol.md#7-messages).

A push (HTTP, gcps, bash) that keeps failing is not retried forever: each failure is counted on
its outbox row (so the count survives a restart), the next attempt waits 0.5 s doubling to 60 s,
and failure number `max_attempts` marks the row dead: kept for an operator to see, never sent
again, until a new version of the message (a new execute for the task) replaces it. The task's
retry timer re-enqueues the same message every `tasks.retry_timeout`; that neither skips the
backoff nor revives a dead row.

`Delivery` is the same for every store. What differs is who may send a row, which a
`ClaimStrategy` decides: `InProcessClaims` (`inprocess.py`: this process is the only sender,
memory and SQLite) or `DatabaseClaims` (`cluster.py`: leases in a database other processes
share, Postgres). The strategy claims rows and hands them to `send_rows`; the `Sender`
(`sender.py`) picks the transport; results come back here and go to the strategy (failures)
or the acknowledgement queue (one transaction for many deletes).
"""
from __future__ import annotations

import functools
import logging
import queue
import threading
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, cast

from shared.delivery.messages import OutboxRow, unblock_ids
from shared.delivery.sender import Outcome, Sender
from shared.logs import q
from shared.records import Effects, Message
from shared.storage.base import Store, Tx

if TYPE_CHECKING:
    from shared.delivery.hub import Connection
    from shared.metrics import Metrics

log = logging.getLogger("resonate.delivery")

BACKOFF_BASE_S = 0.5  # the first retry of a failed push waits this long, doubling after each failure
BACKOFF_CAP_S = 60.0

Payloads = Mapping[str, dict[str, Any]]  # promise id -> wire form, for unblocks


def backoff_s(failures: int) -> float:
    """The wait after failure number `failures` (1-based)."""
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(failures - 1, 20))


def log_dead(m: Message, failures: int) -> None:
    """The one WARN line of a row given up."""
    log.warning("Outbound delivery given up after %d failed attempts (transports.http_push.max_attempts): "
                "%s %s to %s stays in the outbox and is not sent again unless a new version replaces it",
                failures, m.kind, q(m.id), q(m.address))


class _TimedJoin(Protocol):
    def join(self, timeout: float | None = None) -> bool:
        """gevent's queue (the local server's, under monkey patching): True once every item is done."""


class Outlet(Protocol):
    """What a claim strategy may ask of the delivery: send claimed rows, acknowledge, re-drive."""

    def send_rows(self, rows: Sequence[OutboxRow], payloads: Payloads | None = None) -> int: ...
    def ack(self, m: Message) -> None: ...
    def wake(self) -> None: ...
    def redrive(self, group: str | None = None) -> int: ...
    def begin(self) -> None:
        """A send this process started elsewhere (a Pub/Sub publish): `flush` waits for its `end`."""
    def end(self) -> None: ...


class ClaimStrategy(Protocol):
    """Who may send which row, and what a failure does to it."""

    def start(self) -> None: ...
    def stop(self, timeout: float) -> None: ...
    def committed(self, fx: Effects, out: Outlet) -> None:
        """A transaction committed: claim and send what it queued (and react to a debug session change)."""
    def redrive(self, group: str | None, out: Outlet) -> int:
        """Send undelivered rows (all, or the `poll://` rows of one group); returns how many went out."""
    def receiver_ready(self, group: str, out: Outlet) -> None:
        """A worker of `group` connected here (or its full buffer drained)."""
    def unsent(self, row: OutboxRow, out: Outlet) -> None:
        """A claimed poll row no connection here could take."""
    def failed(self, row: OutboxRow, transport: str) -> tuple[int, bool]:
        """A send failed: (failures so far, now dead); (0, False) when the row is gone or replaced."""
    def acked(self, batch: list[Message]) -> None:
        """These rows were deleted (or the delete failed and was logged)."""
    def next_retry(self) -> float | None:
        """Monotonic time of the earliest backoff this process keeps in memory (None: none)."""


class Delivery:
    def __init__(self, store: Store, sender: Sender, claims: ClaimStrategy, metrics: Metrics | None = None,
                 redrive_interval_ms: int = 1000, background: bool = True) -> None:
        self.store = store
        self.sender = sender
        self.claims = claims
        self.metrics = metrics
        self.background = background  # run the periodic re-drive loop (not in functions: the sweeper does)
        self.redrive_interval = redrive_interval_ms / 1000
        self._busy = 0  # sends started here whose result is not recorded yet
        self._idle = threading.Condition()
        self._acks: queue.Queue[Message | None] = queue.Queue()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self.claims.start()
        loops = [(self._ack_loop, "acks")] + ([(self._redrive_loop, "redrive")] if self.background else [])
        for target, name in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def flush(self, timeout: float) -> bool:
        """Wait until the sends started here have their results recorded (a function must not
        return while pushes are in flight: its CPU may be throttled right after)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return self.wait_acks(max(0.0, deadline - time.monotonic()))

    def wait_acks(self, timeout: float) -> bool:
        """Wait until every queued acknowledgement was written (or failed and was logged)."""
        deadline = time.monotonic() + timeout
        if not hasattr(self._acks, "all_tasks_done"):  # gevent's queue (local server): join takes a timeout
            return cast(_TimedJoin, self._acks).join(timeout)
        with self._acks.all_tasks_done:
            while self._acks.unfinished_tasks:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._acks.all_tasks_done.wait(left)
        return True

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        self._wake.set()
        self._acks.put(None)
        for t in self._threads:
            t.join(timeout)
        self.claims.stop(timeout)

    # ---- entry points -------------------------------------------------------------------------

    def on_effects(self, fx: Effects) -> None:
        """After-commit subscriber: the messages the transaction queued go out now."""
        self.claims.committed(fx, self)

    def on_connect(self, conn: Connection) -> None:
        """Poll hub subscriber (connect, drained buffer): what waits for the group goes out now."""
        self.claims.receiver_ready(conn.group, self)

    def redrive(self, group: str | None = None) -> int:
        return self.claims.redrive(group, self)

    # ---- the outlet claim strategies use ----------------------------------------------------------

    def send_rows(self, rows: Sequence[OutboxRow], payloads: Payloads | None = None) -> int:
        """Send claimed rows. The unblocks' promises not in `payloads` are read in one query; an
        unblock whose promise is gone (debug.reset) has nothing to say and is acknowledged."""
        have: Payloads = payloads or {}
        missing = unblock_ids(rows, have)
        if missing:
            loaded = self.store.read(lambda tx: {i: p.wire() for i, p in tx.get_promises(missing).items()})
            have = {**have, **loaded}
        sent = 0
        for row in rows:
            promise = None
            if row.message.kind == "unblock":
                promise = have.get(row.message.id)
                if promise is None:
                    self.ack(row.message)
                    continue
            sent += self._send(row, promise)
        return sent

    def ack(self, m: Message) -> None:
        self._acks.put(m)

    def wake(self) -> None:
        self._wake.set()

    def begin(self) -> None:
        with self._idle:
            self._busy += 1

    def end(self) -> None:
        with self._idle:
            self._busy -= 1
            self._idle.notify_all()

    # ---- sending ------------------------------------------------------------------------------

    def _send(self, row: OutboxRow, promise: dict[str, Any] | None) -> int:
        self.begin()
        try:
            outcome = self.sender.send(row, promise, lambda ok, transport: self._result(row, ok, transport))
        except BaseException:
            self.end()
            raise
        if outcome is Outcome.SENT:
            return 1
        try:
            if outcome is Outcome.DROPPED:
                self.ack(row.message)
            else:
                self.claims.unsent(row, self)
        finally:
            self.end()
        return 0

    def _result(self, row: OutboxRow, ok: bool, transport: str) -> None:
        m = row.message
        try:
            if ok:
                if self.metrics is not None:
                    self.metrics.delivered(m, transport)
                self.ack(m)
                return
            failures, dead = self.claims.failed(row, transport)
            if dead:
                log_dead(m, failures)
                if self.metrics is not None:
                    self.metrics.push_result("dead")
            if self.claims.next_retry() is not None:
                self._wake.set()  # re-plan the loop's sleep around this retry
        finally:
            self.end()

    # ---- loops ---------------------------------------------------------------------------------

    def _ack_loop(self) -> None:
        """Acks of concurrent deliveries share one transaction."""
        while True:
            m = self._acks.get()
            if m is None:
                self._acks.task_done()
                return
            batch = [m]
            while len(batch) < 1000:
                try:
                    nxt = self._acks.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._acks.task_done()
                    self._acks.put(None)
                    break
                batch.append(nxt)
            try:
                self.store.write(functools.partial(_ack_all, batch))
            except Exception:
                log.exception("acknowledging %d messages failed; they will be re-driven", len(batch))
            finally:
                self.claims.acked(batch)
                for _ in batch:
                    self._acks.task_done()

    def _redrive_loop(self) -> None:
        """Re-drive undelivered rows; passes that find nothing to send back off (up to 30 s)."""
        idle = 0
        while not self._stopped.is_set():
            wait = min(30.0, self.redrive_interval * 2**idle)
            retry_at = self.claims.next_retry()
            if retry_at is not None:
                wait = max(0.0, min(wait, retry_at - time.monotonic()))
            if self._wake.wait(wait):
                idle = 0
            self._wake.clear()
            if self._stopped.is_set():
                return
            try:
                idle = 0 if self.redrive() else min(idle + 1, 8)
            except Exception:
                log.exception("outbox re-drive failed")


def _ack_all(batch: list[Message], tx: Tx) -> None:
    for m in batch:
        tx.ack(m)
