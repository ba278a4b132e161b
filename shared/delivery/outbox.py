"""Outbox delivery: dispatch right after commit, remove a row only once its transport took it.

Decision Q4 (at-least-once): every `execute`/`unblock` row stays in the outbox until the SSE
write succeeded or the HTTP push answered 2xx. Rows that could not be delivered are re-driven
by a background loop (with backoff for failing pushes), and a worker that connects gets the
executes waiting for its group at once. An unblock with no live receiver is dropped (§9.4).

A push (HTTP, gcps, bash) that keeps failing is not retried forever: each failure is counted on
its outbox row (so the count survives a restart), the next attempt waits 0.5 s doubling to 60 s,
and failure number `max_attempts` marks the row dead: kept for an operator to see, never sent
again, until a new version of the message (a new execute for the task) replaces it. The task's
retry timer re-enqueues the same message every `tasks.retry_timeout`; that neither skips the
backoff nor revives a dead row.
"""
from __future__ import annotations

import logging
import queue
import threading
import time
from typing import TYPE_CHECKING, Any

from shared.delivery.hub import Connection, PollHub
from shared.delivery.push import HttpPush
from shared.logs import q
from shared.protocol import dumps, parse_address
from shared.records import Effects, Message

if TYPE_CHECKING:
    from shared.metrics import Metrics

log = logging.getLogger("resonate.delivery")

BACKOFF_BASE_S = 0.5  # the first retry of a failed push waits this long, doubling after each failure
BACKOFF_CAP_S = 60.0


def backoff_s(failures: int) -> float:
    """The wait after failure number `failures` (1-based)."""
    return min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** min(failures - 1, 20))


def log_dead(m: Message, failures: int) -> None:
    """The one WARN line of a row given up."""
    log.warning("Outbound delivery given up after %d failed attempts (transports.http_push.max_attempts): "
                "%s %s to %s stays in the outbox and is not sent again unless a new version replaces it",
                failures, m.kind, q(m.id), q(m.address))


class Delivery:
    def __init__(self, service: Any, hub: PollHub | None, push: HttpPush | None, server_url: str | None,
                 redrive_interval_ms: int = 1000, batch_size: int = 100, background: bool = True,
                 metrics: Metrics | None = None, max_attempts: int = 0) -> None:
        self.service = service
        self.max_attempts = max_attempts  # failed pushes before a row is dead (0: never)
        self.metrics = metrics
        self.background = background  # run the periodic re-drive loop (not in functions: the sweeper does)
        self.store = service.store
        self.hub = hub
        self.push = push
        self.server_url = server_url
        self.transports: dict[str, Any] = {}  # scheme -> send(address, body, done): gcps, bash (Runtime sets)
        self.redrive_interval = redrive_interval_ms / 1000
        self.batch_size = batch_size
        self._inflight: dict[tuple, Message] = {}
        self._cursor = 0  # queue position where the next periodic re-drive continues
        # messages whose row we deleted lately: a re-drive that read the outbox just before the
        # delete must not send them again (value: when acked, pruned after a minute)
        self._acked: dict[Message, float] = {}
        self._backoff: dict[tuple, tuple[float, int, Message]] = {}  # key -> (not before, failures, message)
        self._dead: dict[tuple, Message] = {}  # rows given up (loaded at start): never dispatched again
        self._lock = threading.Lock()
        self._acks: "queue.Queue[Message | None]" = queue.Queue()
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._threads: list[threading.Thread] = []
        service.hooks.append(self.on_effects)
        if hub is not None:
            hub.on_connect.append(self.on_connect)
            hub.on_drained.append(self.on_connect)

    # ---- lifecycle --------------------------------------------------------------------------

    def start(self) -> None:
        self._load_dead()
        loops = [(self._ack_loop, "acks")] + ([(self._redrive_loop, "redrive")] if self.background else [])
        for target, name in loops:
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self._threads.append(t)

    def flush(self, timeout: float) -> bool:
        """Wait until the sends started here have their results recorded (a function must not
        return while pushes are in flight: its CPU may be throttled right after)."""
        deadline = time.monotonic() + timeout
        while self._inflight:
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return self.wait_acks(max(0.0, deadline - time.monotonic()))

    def wait_acks(self, timeout: float) -> bool:
        """Wait until every queued acknowledgement was written (or failed and was logged)."""
        deadline = time.monotonic() + timeout
        if not hasattr(self._acks, "all_tasks_done"):  # gevent's queue (local server): join takes a timeout
            return bool(self._acks.join(timeout))
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

    # ---- entry points -------------------------------------------------------------------------

    def _load_dead(self) -> None:
        """The rows given up before a restart, so a retry timer's re-enqueue does not revive them."""
        try:
            rows = self.store.read(lambda tx: tx.dead_messages())
        except Exception:
            log.exception("reading the dead outbox rows failed")
            return
        with self._lock:
            self._dead = {m.key: m for m, _ in rows}

    def on_effects(self, fx: Effects) -> None:
        if fx.debug_changed and not self.service.debug_session:
            self._wake.set()
        now = time.monotonic()
        for m in fx.messages:
            self._acked.pop(m, None)  # queued anew: no longer the row we deleted
            if self._parked(m, now):
                continue
            self.dispatch(m, fx.payloads.get(m.id) if m.kind == "unblock" else None)

    def _parked(self, m: Message, now: float) -> bool:
        """The same message as a dead row, or as one waiting out its backoff (the re-drive sends
        it when due); a different one (a new version) replaces them."""
        with self._lock:
            dead = self._dead.get(m.key)
            if dead is not None:
                if dead == m:
                    return True
                del self._dead[m.key]
            b = self._backoff.get(m.key)
            if b is not None:
                if b[2] == m and b[0] > now:
                    return True
                if b[2] != m:
                    del self._backoff[m.key]
        return False

    def on_connect(self, conn: Connection) -> None:
        """A worker connected (or its full buffer drained): its group's waiting executes go out
        now, not at the next retry."""
        threading.Thread(target=self.redrive, kwargs={"group": conn.group}, daemon=True).start()

    def redrive(self, group: str | None = None) -> int:
        """Dispatch undelivered outbox rows (all, or only `poll://` rows of one group).

        Walks the outbox in pages. The periodic pass handles at most `batch_size * 10` rows and
        resumes where it stopped next time, so a long backlog is covered in turns; it skips
        `poll://` executes whose group has no connection at all: they wait for `on_connect`,
        which re-drives exactly that group (all its rows, at once).
        """
        if self.service.debug_session:
            return 0
        page_size = self.batch_size * 10
        after = 0 if group is not None else self._cursor
        budget = page_size if group is None else 100 * page_size
        sent = 0
        while budget > 0:
            page, promises = self.store.read(lambda tx: self._load_page(tx, after, page_size))
            if not page:
                after = 0
                break
            after = page[-1][0]
            budget -= len(page)
            sent += self._redrive_page([m for _, m in page], promises, group)
        if group is None:
            self._cursor = after
        return sent

    def _redrive_page(self, rows: list[Message], promises: dict[str, dict], group: str | None) -> int:
        now = time.monotonic()
        sent = 0
        for m in rows:
            if m.key in self._inflight or m in self._acked:
                continue
            addr = parse_address(m.address)
            if group is not None:
                if addr is None or addr.scheme != "poll" or addr.group != group:
                    continue
            elif self._backoff.get(m.key, (0.0, 0, m))[0] > now or self._dead.get(m.key) == m:
                continue
            elif addr is not None and addr.scheme == "poll" and self.hub is not None and m.kind == "execute" \
                    and not self.hub.has_group(addr.group):
                continue
            payload = promises.get(m.id) if m.kind == "unblock" else None
            if m.kind == "unblock" and payload is None:
                self._ack(m)  # the promise vanished (debug.reset); nothing to say
                continue
            sent += self.dispatch(m, payload)
        return sent

    def _load_page(self, tx: Any, after: int, limit: int) -> tuple[list[tuple[int, Message]], dict[str, dict]]:
        page = tx.outbox_page(after, limit)
        promises = {}
        for _, m in page:
            if m.kind == "unblock" and m.id not in promises:
                p = tx.get_promise(m.id)
                if p is not None:
                    promises[m.id] = p.wire()
        return page, promises

    # ---- dispatch ------------------------------------------------------------------------------

    def dispatch(self, m: Message, promise: dict | None = None) -> bool:
        if self.service.debug_session:
            return False
        with self._lock:
            if self._inflight.get(m.key) == m:
                return False
            self._inflight[m.key] = m
        addr = parse_address(m.address)
        if addr is None:
            log.warning("dropping message to unparseable address %s", q(m.address))
            self._ack(m)
            return False
        body = self._body(m, promise)
        if addr.scheme == "poll" and self.hub is not None:
            if self.hub.deliver(addr, body, lambda written: self._done(m, written, "poll")):
                self._count(m)
                return True
            if m.kind == "unblock":
                self._ack(m)  # nobody listens: dropped, clients re-register or read (§9.4)
            else:
                self._release(m)  # stays queued until a matching worker connects
            return False
        if addr.scheme in ("http", "https") and self.push is not None:
            self._count(m)
            self.push.send(addr.url, body, lambda ok: self._done(m, ok, "push"))
            return True
        other = self.transports.get(addr.scheme)
        if other is not None:  # gcps, bash: the row goes once the transport took the message
            self._count(m)
            other.send(m.address, body, lambda ok: self._done(m, ok, addr.scheme))
            return True
        log.warning("dropping message to %s: transport not enabled", q(m.address))
        self._ack(m)
        return False

    def _count(self, m: Message) -> None:
        if self.metrics is not None:
            self.metrics.message(m.kind)

    def _body(self, m: Message, promise: dict | None) -> bytes:
        if m.kind == "execute":
            head = {"serverUrl": self.server_url} if self.server_url else {}
            return dumps({"kind": "execute", "head": head, "data": {"task": {"id": m.id, "version": m.version}}})
        if promise is None:
            promise = self.store.read(lambda tx: tx.get_promise(m.id)).wire()
        return dumps({"kind": "unblock", "head": {}, "data": {"promise": promise}})

    def _done(self, m: Message, ok: bool, transport: str) -> None:
        if ok:
            if self.metrics is not None:
                self.metrics.delivered(m, transport)
            self._ack(m)
            return
        failures, dead = self._failed(m, transport)  # still in flight: no re-drive sends it meanwhile
        with self._lock:
            if dead:
                self._dead[m.key] = m
                self._backoff.pop(m.key, None)
            elif failures:
                self._backoff[m.key] = (time.monotonic() + backoff_s(failures), failures, m)
            if self._inflight.get(m.key) == m:
                del self._inflight[m.key]
        if dead:
            log_dead(m, failures)
            if self.metrics is not None:
                self.metrics.push_result("dead")
        self._wake.set()  # re-plan the loop's sleep around this retry

    def _failed(self, m: Message, transport: str) -> tuple[int, bool]:
        """(failures so far, dead) after this failure. Pushes count on the row (a restart keeps
        the count); a poll write that failed (the worker went away) is no failure of the target,
        so only this process's backoff counts it. (0, False): the row is gone or was replaced."""
        with self._lock:
            b = self._backoff.get(m.key)
            mine = b[1] + 1 if b is not None and b[2] == m else 1
        if transport == "poll":
            return mine, False
        try:
            res = self.store.write(lambda tx: tx.record_failure(m, self.max_attempts))
        except Exception:
            log.exception("recording a failed delivery failed; backing off in memory")
            return mine, False
        return res if res is not None else (0, False)

    def _release(self, m: Message) -> None:
        with self._lock:
            if self._inflight.get(m.key) == m:
                del self._inflight[m.key]

    def _ack(self, m: Message) -> None:
        self._acks.put(m)

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
                self.store.write(lambda tx: [tx.ack(x) for x in batch])
            except Exception:
                log.exception("acknowledging %d messages failed; they will be re-driven", len(batch))
            finally:
                now = time.monotonic()
                with self._lock:
                    for x in batch:
                        self._acked[x] = now
                        if self._inflight.get(x.key) == x:
                            del self._inflight[x.key]
                        self._backoff.pop(x.key, None)
                    if len(self._acked) > 10000 or next(iter(self._acked.values())) < now - 60:
                        self._acked = {k: t for k, t in self._acked.items() if t >= now - 60}
                for _ in batch:
                    self._acks.task_done()

    def _redrive_loop(self) -> None:
        """Re-drive undelivered rows; passes that find nothing to send back off (up to 30 s)."""
        idle = 0
        while not self._stopped.is_set():
            wait = min(30.0, self.redrive_interval * 2**idle)
            with self._lock:
                retry_at = min((b[0] for b in self._backoff.values()), default=None)
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
