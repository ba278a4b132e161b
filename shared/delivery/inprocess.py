"""Claims when this process is the outbox's only sender (memory, SQLite): kept in memory.

A message is claimed while a send of it is in flight here, so the re-drive never sends it twice
at once; a row deleted lately is remembered for a minute, so a re-drive that read the outbox just
before the delete does not send it again. Failed pushes back off in memory (their count is kept
on the row, `Tx.record_failure`), dead rows are remembered from the start. Nothing goes out
during a debug session (docs/protocol.md#26-time-and-debug-mode): the outbox must stay put for `debug.snap`.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from typing import TYPE_CHECKING, Any, Protocol

from shared.delivery.messages import OutboxRow, rows_of, unblock_ids
from shared.delivery.outbox import Outlet, Payloads, backoff_s
from shared.records import Effects, Message
from shared.storage.base import Store, Tx

if TYPE_CHECKING:
    from shared.delivery.hub import PollHub

log = logging.getLogger("resonate.delivery")

Key = tuple[str, ...]


class DebugFlag(Protocol):
    @property
    def debug_session(self) -> bool:
        """True while a debug session is on."""


class InProcessClaims:
    def __init__(self, store: Store, hub: PollHub | None, debug: DebugFlag, batch_size: int = 100,
                 max_attempts: int = 0) -> None:
        self.store = store
        self.hub = hub
        self.debug = debug
        self.batch_size = batch_size
        self.max_attempts = max_attempts  # failed pushes before a row is dead (0: never)
        self._inflight: dict[Key, Message] = {}
        self._cursor = 0  # queue position where the next periodic re-drive continues
        self._acked: dict[Message, float] = {}  # message -> when its row was deleted (pruned after a minute)
        self._backoff: dict[Key, tuple[float, int, Message]] = {}  # key -> (not before, failures, message)
        self._dead: dict[Key, Message] = {}  # rows given up (loaded at start): never dispatched again
        self._lock = threading.Lock()

    # ---- lifecycle ----------------------------------------------------------------------------

    def start(self) -> None:
        """The rows given up before a restart, so a retry timer's re-enqueue does not revive them."""
        try:
            rows = self.store.read(lambda tx: tx.dead_messages())
        except Exception:
            log.exception("reading the dead outbox rows failed")
            return
        with self._lock:
            self._dead = {m.key: m for m, _ in rows}

    def stop(self, timeout: float) -> None:
        return None

    # ---- claiming -----------------------------------------------------------------------------

    def committed(self, fx: Effects, out: Outlet) -> None:
        debug = self.debug.debug_session
        if fx.debug_changed and not debug:
            out.wake()
        now = time.monotonic()
        if fx.revived:
            with self._lock:
                for m in fx.revived:
                    if self._dead.get(m.key) == m:
                        del self._dead[m.key]
                    self._backoff.pop(m.key, None)
        rows = []
        for m in fx.messages:
            self._acked.pop(m, None)  # queued anew: no longer the row we deleted
            if not self._parked(m, now) and not debug and self._claim(m):
                rows.append(OutboxRow.of(m))
        self._send(rows, fx.payloads, out)

    def redrive(self, group: str | None, out: Outlet) -> int:
        """Walks the outbox in pages. The periodic pass (no group) handles at most `batch_size * 10`
        rows and resumes where it stopped next time, so a long backlog is covered in turns; it
        skips `poll://` executes whose group has no connection at all: they wait for
        `receiver_ready`, which re-drives exactly that group (all its rows, at once)."""
        if self.debug.debug_session:
            return 0
        page_size = self.batch_size * 10
        after = 0 if group is not None else self._cursor
        budget = page_size if group is None else 100 * page_size
        sent = 0
        while budget > 0:
            page, promises = self.store.read(functools.partial(_load_page, after=after, limit=page_size))
            if not page:
                after = 0
                break
            after = page[-1][0]
            budget -= len(page)
            sent += self._redrive_page(rows_of(page), promises, group, out)
        if group is None:
            self._cursor = after
        return sent

    def _redrive_page(self, rows: list[OutboxRow], promises: Payloads, group: str | None, out: Outlet) -> int:
        now = time.monotonic()
        chosen = []
        for row in rows:
            m, addr = row.message, row.address
            if m.key in self._inflight or m in self._acked:
                continue
            if group is not None:
                if addr is None or addr.scheme != "poll" or addr.group != group:
                    continue
            elif self._backoff.get(m.key, (0.0, 0, m))[0] > now or self._dead.get(m.key) == m:
                continue
            elif addr is not None and addr.scheme == "poll" and self.hub is not None and m.kind == "execute" \
                    and not self.hub.has_group(addr.group):
                continue
            if self._claim(m):
                chosen.append(row)
        return self._send(chosen, promises, out)  # an unblock whose promise vanished (debug.reset) is acked

    def receiver_ready(self, group: str, out: Outlet) -> None:
        threading.Thread(target=out.redrive, kwargs={"group": group}, daemon=True).start()

    def _claim(self, m: Message) -> bool:
        with self._lock:
            if self._inflight.get(m.key) == m:
                return False
            self._inflight[m.key] = m
            return True

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

    def _send(self, rows: list[OutboxRow], payloads: Payloads, out: Outlet) -> int:
        if not rows:
            return 0
        try:
            return out.send_rows(rows, payloads)
        except BaseException:
            for row in rows:  # not sent after all (their payloads could not be read): claimable again
                self._release(row.message)
            raise

    # ---- results ------------------------------------------------------------------------------

    def unsent(self, row: OutboxRow, out: Outlet) -> None:
        if row.message.kind == "unblock":
            out.ack(row.message)  # nobody listens: dropped, clients re-register or read
        else:
            self._release(row.message)  # stays queued until a matching worker connects

    def failed(self, row: OutboxRow, transport: str) -> tuple[int, bool]:
        m = row.message
        failures, dead = self._count_failure(m, transport)  # still claimed: no re-drive sends it meanwhile
        with self._lock:
            if dead:
                self._dead[m.key] = m
                self._backoff.pop(m.key, None)
            elif failures:
                self._backoff[m.key] = (time.monotonic() + backoff_s(failures), failures, m)
            if self._inflight.get(m.key) == m:
                del self._inflight[m.key]
        return failures, dead

    def _count_failure(self, m: Message, transport: str) -> tuple[int, bool]:
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

    def acked(self, batch: list[Message]) -> None:
        now = time.monotonic()
        with self._lock:
            for x in batch:
                self._acked[x] = now
                if self._inflight.get(x.key) == x:
                    del self._inflight[x.key]
                self._backoff.pop(x.key, None)
            if len(self._acked) > 10000 or next(iter(self._acked.values())) < now - 60:
                self._acked = {k: t for k, t in self._acked.items() if t >= now - 60}

    def next_retry(self) -> float | None:
        with self._lock:
            return min((b[0] for b in self._backoff.values()), default=None)

    def _release(self, m: Message) -> None:
        with self._lock:
            if self._inflight.get(m.key) == m:
                del self._inflight[m.key]


def _load_page(tx: Tx, after: int, limit: int) -> tuple[list[tuple[int, Message]], dict[str, dict[str, Any]]]:
    """One page of the outbox and its unblocks' promises: two queries, however long the page."""
    page = tx.outbox_page(after, limit)
    ids = unblock_ids(OutboxRow(m, None, seq) for seq, m in page)
    return page, {i: p.wire() for i, p in tx.get_promises(ids).items()} if ids else {}
