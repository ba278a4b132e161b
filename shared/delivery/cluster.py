"""Delivery when any number of processes share one Postgres database (Cloud Functions, replicas).

No process knows which other process holds a worker's SSE connection, and any may die at any
instant, so the outbox row is the only truth and every send happens under a claim on it
(`shared/storage/postgres_outbox.py`):

- A `poll://` row is announced with NOTIFY in the transaction that writes it. Every process
  holding SSE connections LISTENs; the ones with a matching connection race to claim the row,
  exactly one wins and writes the event (so an anycast message reaches exactly one worker
  across all instances), then deletes the row. A failed write gives the claim back and
  announces the row again. A worker that connects (to any instance) claims its group's waiting
  rows at once; connected instances also re-check their groups every few seconds.
- Other rows (HTTP push) are claimed and pushed by the committing process right after commit;
  a failed push is released with backoff, and its last allowed attempt
  (`transports.http_push.max_attempts`) parks the row dead (never claimed again). With `dispatch.topic` set (the cloud), http(s) rows
  are instead claimed for as long as Pub/Sub retries and published, and the `dispatch`
  function pushes them (`shared/delivery/pubsub_dispatch.py`). The sweeper (or a local
  re-drive loop) claims what is left in batches with SKIP LOCKED, re-announces unclaimed poll
  rows, and drops unblocks that no connection claimed (no receiver, §9.4).

Claims are leases on the database's clock: a process that dies while sending only delays the
row until its lease runs out. Delivery stays at-least-once (decision Q4).

With inbound auth on, the receiver registry also records each connection's principal (a digest
of it), and a connection is admitted only if no live entry of another principal holds its
(group, id) on another instance (409 otherwise; `PgClusterOutbox.receiver_up` checks and inserts
under a per-(group, id) advisory lock, so two simultaneous connects cannot both win). A dead
instance's entries stop counting once they lapse, at most RECEIVER_TTL_MS (30 s) after its last
refresh; the same principal is never blocked by its own entries.
"""
from __future__ import annotations

import hashlib
import logging
import select
import threading
import time
import uuid
from typing import Any

from shared.delivery.hub import Connection, Held, PollHub, RegistryUnavailable
from shared.delivery.outbox import Delivery, log_dead
from shared.delivery.pubsub_dispatch import DISPATCH_LEASE_MS, PUBLISH_RETRY_MS
from shared.delivery.push import HttpPush
from shared.logs import q
from shared.protocol import Address, parse_address
from shared.records import Effects, Message

log = logging.getLogger("resonate.delivery")

SSE_LEASE_MS = 30_000  # a claimed poll row waits this long if its claimant dies before the write
RESCAN_S = 5.0  # connected instances re-check their groups' rows (dead claimants, lost NOTIFYs)
RENOTIFY_EVERY_MS = 10_000  # the sweeper announces one unclaimed poll row at most this often
SETTLE_MS = 2_000  # rows younger than this were just announced by their writer
UNBLOCK_TTL_MS = 60_000  # an unblock nobody claimed within this had no receiver: dropped
RECEIVER_TTL_MS = 30_000  # a registry entry of a process that stopped refreshing it lapses
PUBLISH_WAIT_S = 10.0  # on_effects waits this long for Pub/Sub to confirm what it published


class ClusterDelivery(Delivery):
    def __init__(self, service: Any, hub: PollHub | None, push: HttpPush | None, server_url: str | None,
                 redrive_interval_ms: int = 1000, batch_size: int = 100, push_timeout_s: float = 180.0,
                 background: bool = True, metrics: Any = None, publisher: Any = None, max_attempts: int = 0) -> None:
        super().__init__(service, hub, push, server_url, redrive_interval_ms, batch_size, background, metrics,
                         max_attempts)
        self.push_lease_ms = int((push_timeout_s + 30) * 1000)  # never shorter than one push attempt
        self.publisher = publisher  # pubsub_dispatch.Publisher (dispatch.topic): http(s) rows are published
        self._listener: threading.Thread | None = None
        self._listen_lock = threading.Lock()
        self._conn: Any = None
        self._busy = 0  # sends awaiting their result (flush waits for them)
        self._idle = threading.Condition()
        self._scanning: dict[str, bool] = {}  # group -> another pass requested
        self.instance = uuid.uuid4().hex  # this process's name in the receiver registry
        if hub is not None:
            hub.on_disconnect.append(self._on_disconnect)
            hub.admit = self._admit

    # ---- lifecycle ----------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        super().stop(timeout)
        if self.publisher is not None:
            self.publisher.close()
        self._drop_listen_connection()
        if self._listener is not None:
            self._listener.join(timeout)

    def _load_dead(self) -> None:
        """Dead rows are never claimed (`claimed_until` = DEAD): nothing to remember here."""

    def flush(self, timeout: float) -> bool:
        """Wait until every send started here has its result recorded (a function must not
        return while pushes are in flight: its CPU may be throttled right after)."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._busy:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(left)
        return self.wait_acks(max(0.0, deadline - time.monotonic()))

    # ---- entry points -------------------------------------------------------------------------

    def on_effects(self, fx: Effects) -> None:
        if fx.debug_changed:
            self._wake.set()
            threading.Thread(target=self._after_debug_change, daemon=True).start()
        polled = [m for m in fx.messages if _is_poll(m)]  # the commit itself announced these
        push = [m for m in fx.messages if not _is_poll(m)]
        try:
            self.store.drop_unreceived([m for m in polled if m.kind == "unblock"])
            if push and self.push is not None:
                rows = self.store.claim_messages(push, self.push_lease_ms, self._http_lease_ms())
                self._send_rows(rows, fx.payloads)
                if self.publisher is not None:  # answer only once Pub/Sub has them (CPU throttling)
                    self.publisher.wait(rows, PUBLISH_WAIT_S)
        except Exception:
            log.exception("dispatching %d new messages failed; the sweeper re-drives them", len(fx.messages))

    def _admit(self, conn: Connection) -> None:
        """Register the receiver before the stream starts (so unblocks for it are kept from now
        on). With a principal (auth on) the registry decides across instances: Held when another
        principal's live entry has the (group, id), RegistryUnavailable when that cannot be
        checked. With auth off a failed write is only logged (the entry is written again when
        the LISTEN connection comes back)."""
        try:
            admitted = self.store.receiver_up(conn.group, conn.id, self.instance, RECEIVER_TTL_MS,
                                              principal_key(conn.principal))
        except Exception:
            if conn.principal is None:
                log.exception("registering SSE receiver group=%s id=%s failed", q(conn.group), q(conn.id))
                return
            log.exception("registering SSE receiver group=%s id=%s failed; connection refused",
                          q(conn.group), q(conn.id))
            raise RegistryUnavailable() from None
        if not admitted:
            log.warning("Poll refused: worker id held by another principal on another instance group=%s id=%s",
                        q(conn.group), q(conn.id))
            raise Held()

    def on_connect(self, conn: Connection) -> None:
        """A receiver was admitted (or its full buffer drained): claim what waits for it."""
        self._ensure_listener()
        self._schedule_group(conn.group)

    def _schedule_group(self, group: str) -> None:
        """One claiming pass per group at a time; connects during a pass ask for one more
        (a thousand workers connecting at once cost a few passes, not a thousand)."""
        with self._listen_lock:
            if group in self._scanning:
                self._scanning[group] = True
                return
            self._scanning[group] = False

        def run() -> None:
            while True:
                try:
                    self._claim_group(group)
                except Exception:
                    log.exception("claiming the waiting rows of poll group %s failed", q(group))
                with self._listen_lock:
                    if not self._scanning[group]:
                        del self._scanning[group]
                        return
                    self._scanning[group] = False

        threading.Thread(target=run, name=f"claim-{group}", daemon=True).start()

    def _on_disconnect(self, conn: Connection) -> None:
        if self.hub is not None and self.hub.has_id(conn.group, conn.id):
            return  # another connection of the same worker is still here
        try:
            self.store.receiver_down(conn.group, conn.id, self.instance)
        except Exception:
            log.warning("unregistering SSE receiver group=%s id=%s failed; it lapses", q(conn.group), q(conn.id))

    def redrive(self, group: str | None = None) -> int:
        """One background pass: push what is unclaimed, re-announce poll rows, drop dead unblocks."""
        if group is not None:
            return self._claim_group(group)
        sent = 0
        for _ in range(10):
            rows = self.store.claim_push(self.batch_size, self.push_lease_ms, self._http_lease_ms())
            sent += self._send_rows(rows, {})
            if len(rows) < self.batch_size:
                break
        sent += self.store.renotify(self.batch_size * 10, SETTLE_MS, RENOTIFY_EVERY_MS)
        self.store.drop_stale_unblocks(UNBLOCK_TTL_MS)
        return sent

    def _after_debug_change(self) -> None:
        """Leaving a debug session: the parked outbox goes out now, not at the next sweep."""
        try:
            self.redrive()
            self.store.renotify(self.batch_size * 100, 0, 0)
        except Exception:
            log.exception("re-drive after the debug session failed")

    # ---- poll rows ----------------------------------------------------------------------------

    def _claim_group(self, group: str) -> int:
        """Claim and send the waiting rows this instance has a receiver for."""
        if self.hub is None:
            return 0
        sent = after = 0
        while self.hub.has_group(group):
            page = self.store.group_rows(group, after, self.batch_size * 10)
            if not page:
                break
            after = page[-1][0]
            mine = [seq for seq, m in page if self._receiver(m)]
            sent += self._send_rows(self.store.claim_seqs(mine, SSE_LEASE_MS), {})
        return sent

    def _receiver(self, m: Message) -> Address | None:
        addr = parse_address(m.address)
        return addr if addr is not None and self.hub is not None and self.hub.has_receiver(addr) else None

    def _on_notes(self, notes: list[str]) -> None:
        seqs = []
        for note in notes:
            seq, _, address = note.partition(" ")
            addr = parse_address(address)
            if addr is not None and self.hub is not None and self.hub.has_receiver(addr):
                seqs.append(int(seq))
        if seqs:
            self._send_rows(self.store.claim_seqs(seqs, SSE_LEASE_MS), {})

    # ---- sending claimed rows -----------------------------------------------------------------

    def _send_rows(self, rows: list[tuple[int, Message]], payloads: dict[str, dict]) -> int:
        missing = {m.id for _, m in rows if m.kind == "unblock" and m.id not in payloads}
        if missing:
            payloads = dict(payloads)
            payloads.update(self.store.read(lambda tx: {i: p.wire() for i in missing
                                                        if (p := tx.get_promise(i)) is not None}))
        sent = 0
        for seq, m in rows:
            if m.kind == "unblock" and m.id not in payloads:
                self._ack(m)  # the promise is gone (debug.reset): nothing to say
                continue
            sent += self._send(seq, m, payloads.get(m.id))
        return sent

    def _send(self, seq: int, m: Message, promise: dict | None) -> bool:
        addr = parse_address(m.address)
        if addr is None:
            log.warning("dropping message to unparseable address %s", q(m.address))
            self._ack(m)
            return False
        if addr.scheme in ("http", "https") and self.publisher is not None:  # the dispatch function pushes
            self._started()
            self.publisher.publish(seq, m, lambda ok: self._published(seq, m, ok))
            return True
        body = self._body(m, promise)
        if addr.scheme == "poll" and self.hub is not None:
            self._started()
            if self.hub.deliver(addr, body, lambda ok: self._result(seq, m, ok, push=False)):
                self._count(m)
                return True
            self._result(seq, m, False, push=False)
            return False
        if addr.scheme in ("http", "https") and self.push is not None:
            self._started()
            self._count(m)
            self.push.send(addr.url, body, lambda ok: self._result(seq, m, ok, push=True))
            return True
        other = self.transports.get(addr.scheme)
        if other is not None:  # gcps, bash: released with backoff on failure, like a push
            self._started()
            self._count(m)
            other.send(m.address, body, lambda ok: self._result(seq, m, ok, push=True, transport=addr.scheme))
            return True
        log.warning("dropping message to %s: transport not enabled", q(m.address))
        self._ack(m)
        return False

    def _http_lease_ms(self) -> int:
        return DISPATCH_LEASE_MS if self.publisher is not None else self.push_lease_ms

    def _published(self, seq: int, m: Message, ok: bool) -> None:
        """Pub/Sub has the message: the row stays claimed until the dispatch function settles it.
        A failed publish makes it claimable again shortly (the sweeper publishes it again)."""
        try:
            if not ok:
                self.store.retry_later(seq, m.version, PUBLISH_RETRY_MS)
        except Exception:
            log.exception("releasing row %d after a failed publish failed; its lease lapses by itself", seq)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _started(self) -> None:
        with self._idle:
            self._busy += 1

    def _result(self, seq: int, m: Message, ok: bool, push: bool, transport: str | None = None) -> None:
        try:
            if ok:
                if self.metrics is not None:
                    self.metrics.delivered(m, transport or ("push" if push else "poll"))
                self._ack(m)
            else:
                self._give_back(seq, m, push)
        finally:
            with self._idle:
                self._busy -= 1
                self._idle.notify_all()

    def _give_back(self, seq: int, m: Message, push: bool) -> None:
        """A send failed. A push is retried after a backoff that grows with its failures; a poll
        row is offered to other connections at once unless ours still exists (its buffer was
        full: it comes back through on_drained)."""
        try:
            if push:
                res = self.store.release(seq, m, failed=True, notify=False, max_attempts=self.max_attempts)
                if res is not None and res[1]:
                    log_dead(m, res[0])
                    if self.metrics is not None:
                        self.metrics.push_result("dead")
            else:
                self.store.release(seq, m, failed=False, notify=self._receiver(m) is None)
        except Exception:
            log.exception("releasing a claim failed; it lapses by itself")

    # ---- LISTEN -------------------------------------------------------------------------------

    def _ensure_listener(self) -> None:
        with self._listen_lock:
            if self._listener is None and not self._stopped.is_set():
                self._listener = threading.Thread(target=self._listen_loop, name="listen", daemon=True)
                self._listener.start()

    def _listen_loop(self) -> None:
        """Hold one LISTEN connection; after every (re)connect, re-check the connected groups
        (notifications sent while we were away are lost)."""
        backoff = 0.5
        while not self._stopped.is_set():
            try:
                self._conn = self.store.listen()
                backoff = 0.5
                self._rescan(reconnected=True)
                self._pump(self._conn)
            except Exception as e:
                if self._stopped.is_set():
                    return
                log.warning("outbox LISTEN connection failed (%s); reconnecting in %.1fs", e, backoff)
            self._drop_listen_connection()
            self._stopped.wait(backoff)
            backoff = min(30.0, backoff * 2)

    def _drop_listen_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _pump(self, conn: Any) -> None:
        """pg8000 has no wait API: wait for the socket to turn readable, then a round trip makes
        it parse what arrived. A notification read together with a previous reply sits in the
        buffer unseen by select(); the periodic rescan's round trip picks it up."""
        next_scan = time.monotonic() + RESCAN_S
        while not self._stopped.is_set():
            sock = conn._usock
            pending = getattr(sock, "pending", lambda: 0)()  # TLS: decrypted bytes select() can't see
            timeout = max(0.0, next_scan - time.monotonic())
            if not pending:
                select.select([sock], [], [], timeout)
            conn.run("SELECT 1")
            notes = []
            while conn.notifications:
                notes.append(conn.notifications.popleft()[2])
            if notes:
                self._on_notes(notes)
            if time.monotonic() >= next_scan:
                self._rescan()
                next_scan = time.monotonic() + RESCAN_S

    def _rescan(self, reconnected: bool = False) -> None:
        """Refresh this process's receiver registry (re-register every connection whose entry
        lapsed, e.g. while the LISTEN connection was down), then claim what waits for its groups."""
        if self.hub is None:
            return
        holders = self.hub.holders()
        lapsed = holders
        if holders and not reconnected:
            alive = self.store.receivers_alive(self.instance, RECEIVER_TTL_MS, list(holders))
            lapsed = {k: p for k, p in holders.items() if k not in alive}
        for (group, id), principal in lapsed.items():
            self._reregister(group, id, principal)
        for group in self.hub.groups():
            try:
                self._claim_group(group)
            except Exception:
                log.exception("re-checking poll group %s failed", q(group))

    def _reregister(self, group: str, id: str, principal: str | None) -> None:
        """Write a lapsed entry again. If another principal took the id meanwhile (our entry had
        lapsed, so its connect was admitted), it keeps it: ours are ended (the worker reconnects
        and is refused while the other holds it)."""
        if self.hub is None or not self.hub.has_id(group, id):
            return  # gone since the snapshot: an entry now would only block others until it lapsed
        if self.store.receiver_up(group, id, self.instance, RECEIVER_TTL_MS, principal_key(principal)):
            return
        n = self.hub.disconnect_id(group, id)
        log.warning("Poll connections ended: worker id taken by another principal while this instance's "
                    "registry entry had lapsed group=%s id=%s connections=%d", q(group), q(id), n)


def principal_key(principal: str | None) -> str | None:
    """What the registry stores for a principal: a digest (fixed size, any characters, and no
    token subject in the table)."""
    if principal is None:
        return None
    return hashlib.sha256(principal.encode("utf-8", "surrogatepass")).hexdigest()


def _is_poll(m: Message) -> bool:
    addr = parse_address(m.address)
    return addr is not None and addr.scheme == "poll"
