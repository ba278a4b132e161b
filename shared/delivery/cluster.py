"""Claims when any number of processes share one Postgres database (Cloud Functions, replicas).

No process knows which other process holds a worker's SSE connection, and any may die at any
instant, so the outbox row is the only truth and every send happens under a claim on it
(`OutboxClaims`, implemented in `shared/storage/postgres_outbox.py`):

- A `poll://` row is announced with NOTIFY in the transaction that writes it. Every process
  holding SSE connections LISTENs; the ones with a matching connection race to claim the row,
  exactly one wins and writes the event (so an anycast message reaches exactly one worker
  across all instances), then deletes the row. A failed write gives the claim back and
  announces the row again. A worker that connects (to any instance) claims its group's waiting
  rows at once; connected instances also re-check their groups every few seconds.
- Other rows (HTTP push) are claimed and pushed by the committing process right after commit;
  a failed push is released with backoff, and its last allowed attempt
  (`transports.http_push.max_attempts`) parks the row dead (never claimed again). With
  `dispatch.topic` set (the cloud), http(s) rows are instead claimed for as long as Pub/Sub
  retries and published, and the `dispatch` function pushes them
  (`shared/delivery/pubsub_dispatch.py`). The sweeper (or a local re-drive loop) claims what is
  left in batches with SKIP LOCKED, re-announces unclaimed poll rows, and drops unblocks that no
  connection claimed (no receiver; docs/protocol.md#7-messages).

Claims are leases on the database's clock: a process that dies while sending only delays the
row until its lease runs out. Delivery stays at-least-once (docs/protocol.md#7-messages). The registry of SSE
receivers (who holds which worker id, across instances) is `registry.py`.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING

from shared.delivery.messages import OutboxRow, rows_of
from shared.delivery.outbox import Outlet, Payloads
from shared.delivery.pubsub_dispatch import DISPATCH_LEASE_MS, PUBLISH_RETRY_MS
from shared.logs import q
from shared.protocol import Address, parse_address
from shared.records import Effects, Message
from shared.storage.base import OutboxClaims, Subscription

if TYPE_CHECKING:
    from shared.delivery.hub import PollHub
    from shared.delivery.pubsub_dispatch import Publisher
    from shared.delivery.registry import ReceiverRegistry

log = logging.getLogger("resonate.delivery")

SSE_LEASE_MS = 30_000  # a claimed poll row waits this long if its claimant dies before the write
RESCAN_S = 5.0  # connected instances re-check their groups' rows (dead claimants, lost NOTIFYs)
RENOTIFY_EVERY_MS = 10_000  # the sweeper announces one unclaimed poll row at most this often
SETTLE_MS = 2_000  # rows younger than this were just announced by their writer
UNBLOCK_TTL_MS = 60_000  # an unblock nobody claimed within this had no receiver: dropped
PUBLISH_WAIT_S = 10.0  # `committed` waits this long for Pub/Sub to confirm what it published


class DatabaseClaims:
    def __init__(self, claims: OutboxClaims, hub: PollHub | None, registry: ReceiverRegistry | None,
                 publisher: Publisher | None = None, batch_size: int = 100, push_timeout_s: float = 180.0,
                 max_attempts: int = 0, claim_at_commit: bool = True) -> None:
        """`publisher` (dispatch.topic): http(s) rows are published, the `dispatch` function pushes
        them. `claim_at_commit` False (HTTP push disabled): non-poll rows wait for the re-drive."""
        self.claims = claims
        self.hub = hub
        self.registry = registry
        self.publisher = publisher
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.claim_at_commit = claim_at_commit
        self.push_lease_ms = int((push_timeout_s + 30) * 1000)  # never shorter than one push attempt
        self._subscription: Subscription | None = None
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._scanning: dict[str, bool] = {}  # group -> another pass requested

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """Dead rows are never claimed (`claimed_until` = DEAD): nothing to remember here."""

    def stop(self, timeout: float) -> None:
        with self._lock:
            self._stopped.set()
            subscription, self._subscription = self._subscription, None
        if self.publisher is not None:
            self.publisher.close()
        if subscription is not None:
            subscription.close(timeout)

    # ---- claiming -----------------------------------------------------------------------------

    def committed(self, fx: Effects, out: Outlet) -> None:
        if fx.debug_changed:
            out.wake()
            threading.Thread(target=self._after_debug_change, args=(out,), daemon=True).start()
        rows = [OutboxRow.of(m) for m in fx.messages]
        push = [r.message for r in rows if not r.is_poll]  # the commit itself announced the poll rows
        try:
            self.claims.drop_unreceived([r.message for r in rows if r.is_poll and r.message.kind == "unblock"])
            if push and self.claim_at_commit:
                parsed = {r.message.address: r.address for r in rows}
                claimed = rows_of(self.claims.claim_messages(push, self.push_lease_ms, self._http_lease_ms()), parsed)
                self._dispatch(claimed, fx.payloads, out)
                if self.publisher is not None:  # answer only once Pub/Sub has them (CPU throttling)
                    self.publisher.wait([(r.seq, r.message) for r in claimed], PUBLISH_WAIT_S)
        except Exception:
            log.exception("dispatching %d new messages failed; the sweeper re-drives them", len(fx.messages))

    def redrive(self, group: str | None, out: Outlet) -> int:
        """One background pass: push what is unclaimed, re-announce poll rows, drop dead unblocks."""
        if group is not None:
            return self._claim_group(group, out)
        sent = 0
        for _ in range(10):
            rows = rows_of(self.claims.claim_push(self.batch_size, self.push_lease_ms, self._http_lease_ms()))
            sent += self._dispatch(rows, {}, out)
            if len(rows) < self.batch_size:
                break
        sent += self.claims.renotify(self.batch_size * 10, SETTLE_MS, RENOTIFY_EVERY_MS)
        self.claims.drop_stale_unblocks(UNBLOCK_TTL_MS)
        return sent

    def receiver_ready(self, group: str, out: Outlet) -> None:
        """A receiver was admitted (or its full buffer drained): claim what waits for it."""
        self._ensure_listener(out)
        self._schedule_group(group, out)

    def _after_debug_change(self, out: Outlet) -> None:
        """Leaving a debug session: the parked outbox goes out now, not at the next sweep."""
        try:
            out.redrive()
            self.claims.renotify(self.batch_size * 100, 0, 0)
        except Exception:
            log.exception("re-drive after the debug session failed")

    def _http_lease_ms(self) -> int:
        return DISPATCH_LEASE_MS if self.publisher is not None else self.push_lease_ms

    def _dispatch(self, rows: Sequence[OutboxRow], payloads: Payloads, out: Outlet) -> int:
        """Send claimed rows; with a publisher, http(s) rows are published for the `dispatch` function."""
        if self.publisher is None:
            return out.send_rows(rows, payloads)
        published = [r for r in rows if r.is_http]
        for r in published:
            self._publish(self.publisher, r, out)
        return len(published) + out.send_rows([r for r in rows if not r.is_http], payloads)

    def _publish(self, publisher: Publisher, row: OutboxRow, out: Outlet) -> None:
        """Pub/Sub has the message: the row stays claimed until the dispatch function settles it.
        A failed publish makes it claimable again shortly (the sweeper publishes it again)."""
        seq, m = row.seq, row.message

        def published(ok: bool) -> None:
            try:
                if not ok:
                    self.claims.retry_later(seq, m.version, PUBLISH_RETRY_MS)
            except Exception:
                log.exception("releasing row %d after a failed publish failed; its lease lapses by itself", seq)
            finally:
                out.end()

        out.begin()
        publisher.publish(seq, m, published)

    # ---- poll rows ----------------------------------------------------------------------------

    def _schedule_group(self, group: str, out: Outlet) -> None:
        """One claiming pass per group at a time; connects during a pass ask for one more
        (a thousand workers connecting at once cost a few passes, not a thousand)."""
        with self._lock:
            if group in self._scanning:
                self._scanning[group] = True
                return
            self._scanning[group] = False

        def run() -> None:
            while True:
                try:
                    self._claim_group(group, out)
                except Exception:
                    log.exception("claiming the waiting rows of poll group %s failed", q(group))
                with self._lock:
                    if not self._scanning[group]:
                        del self._scanning[group]
                        return
                    self._scanning[group] = False

        threading.Thread(target=run, name=f"claim-{group}", daemon=True).start()

    def _claim_group(self, group: str, out: Outlet) -> int:
        """Claim and send the waiting rows this instance has a receiver for."""
        if self.hub is None:
            return 0
        sent = after = 0
        while self.hub.has_group(group):
            page = rows_of(self.claims.group_rows(group, after, self.batch_size * 10))
            if not page:
                break
            after = page[-1].seq
            mine = [r.seq for r in page if self._receiver(r.address)]
            parsed = {r.message.address: r.address for r in page}
            sent += self._dispatch(rows_of(self.claims.claim_seqs(mine, SSE_LEASE_MS), parsed), {}, out)
        return sent

    def _receiver(self, addr: Address | None) -> bool:
        return addr is not None and self.hub is not None and self.hub.has_receiver(addr)

    def _on_notes(self, notes: list[tuple[int, str]], out: Outlet) -> None:
        parsed: dict[str, Address | None] = {}
        seqs = []
        for seq, address in notes:
            if address not in parsed:
                parsed[address] = parse_address(address)
            if self._receiver(parsed[address]):
                seqs.append(seq)
        if seqs:
            self._dispatch(rows_of(self.claims.claim_seqs(seqs, SSE_LEASE_MS), parsed), {}, out)

    def _on_tick(self, reconnected: bool, out: Outlet) -> None:
        """Refresh this process's receiver registry, then claim what waits for its groups."""
        if self.hub is None:
            return
        if self.registry is not None:
            self.registry.refresh(reconnected)
        for group in self.hub.groups():
            try:
                self._claim_group(group, out)
            except Exception:
                log.exception("re-checking poll group %s failed", q(group))

    def _ensure_listener(self, out: Outlet) -> None:
        with self._lock:
            if self._subscription is None and not self._stopped.is_set():
                self._subscription = self.claims.listen(lambda notes: self._on_notes(notes, out),
                                                        lambda reconnected: self._on_tick(reconnected, out), RESCAN_S)

    # ---- results ------------------------------------------------------------------------------

    def unsent(self, row: OutboxRow, out: Outlet) -> None:
        self.failed(row, "poll")

    def failed(self, row: OutboxRow, transport: str) -> tuple[int, bool]:
        """A push is retried after a backoff that grows with its failures; a poll row is offered
        to other connections at once unless ours still exists (its buffer was full: it comes back
        through the hub's drained event)."""
        m = row.message
        try:
            if transport != "poll":
                res = self.claims.release(row.seq, m, failed=True, notify=False, max_attempts=self.max_attempts)
                return res if res is not None else (0, False)
            self.claims.release(row.seq, m, failed=False, notify=not self._receiver(row.address))
        except Exception:
            log.exception("releasing a claim failed; it lapses by itself")
        return 0, False

    def acked(self, batch: list[Message]) -> None:
        return None

    def next_retry(self) -> float | None:
        return None  # backoffs live on the rows (`claimed_until`)
