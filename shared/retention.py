"""Running retention (docs/operations.md#retention): the background loop of the local server,
the sweeper's once-per-call pass and the `promise.purge` operator request all come here.

Promises are listed in short pages on read snapshots (never one long statement, never the
writer), and the finished workflows found there deleted in write transactions of at most
`batch_size` promises, each checking again what it deletes (shared/engine/retention.py), so
requests wait at most for one small batch. Retention is never part of `next_deadline`: it runs
on its own slow cadence and never wakes the timer loop.
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shared.clock import Clock
from shared.engine.retention import purge_workflows
from shared.requests import PromisePurge
from shared.storage.base import Store, Tx

log = logging.getLogger("resonate.retention")

SCAN_PAGE = 1_000  # promises listed per read: one short index range, never a long statement


@dataclass(frozen=True, slots=True)
class Purged:
    """What a run deleted (or, dry, would delete): whole workflows, promises, and whether it
    stopped early (time budget) with finished workflows left for the next run."""

    workflows: int = 0
    promises: int = 0
    partial: bool = False

    def as_dict(self) -> dict[str, int | bool]:
        return {"workflows": self.workflows, "promises": self.promises, "partial": self.partial}


def purge(store: Store, before: int, batch_size: int, dry_run: bool = False, budget_s: float | None = None,
          stop: Callable[[], bool] = lambda: False) -> Purged:
    """Delete (dry: count) every workflow finished at `before`, `batch_size` promises per
    transaction; stop early once `budget_s` seconds have passed or `stop()` says so.

    The promises are walked in id order, SCAN_PAGE per read; a workflow with a promise seen
    there that is not done is skipped, the others are checked whole and deleted by
    `purge_workflows` (a workflow already deleted from an earlier page is found empty)."""
    t_end = None if budget_s is None else time.monotonic() + budget_s
    workflows = promises = 0
    counted: set[str] = set()  # dry run: a workflow spread over several pages is counted once
    after: str | None = None
    while True:
        if stop() or (t_end is not None and time.monotonic() >= t_end):
            return Purged(workflows, promises, True)
        page = store.read(functools.partial(_page, before=before, after=after))
        if not page:
            return Purged(workflows, promises)
        live = {k for _, k, done in page if not done}
        keys = [k for k in dict.fromkeys(k for _, k, done in page if done) if k not in live and k not in counted]
        i = 0
        while i < len(keys):
            if stop() or (t_end is not None and time.monotonic() >= t_end):
                return Purged(workflows, promises, True)
            run = functools.partial(purge_workflows, keys=keys[i:], before=before, max_promises=batch_size,
                                    dry_run=dry_run)
            p = store.read(run) if dry_run else store.write(run)
            workflows, promises, i = workflows + p.workflows, promises + p.promises, i + p.consumed
            time.sleep(0)  # let requests waiting for the store (and, under gevent, the loop) go first
        if dry_run:
            counted.update(keys)
        after = page[-1][0]
        time.sleep(0)


def _page(tx: Tx, before: int, after: str | None) -> list[tuple[str, str, bool]]:
    return tx.retention_page(before, after, SCAN_PAGE)


PURGE_BUDGET_S = 20.0  # one `promise.purge` request's share; `more` tells the client to send it again


@dataclass(frozen=True, slots=True)
class Maintenance:
    """What a kind that runs across many transactions gets instead of a `Ctx` (shared/kinds.py)."""

    store: Store
    now: int
    batch_size: int  # retention.batch_size


def promise_purge(m: Maintenance, r: PromisePurge) -> tuple[int, Any]:
    """`promise.purge`: delete (dry: count) the workflows finished `olderThan` ms before now, in
    transactions of `batch_size` promises, for at most PURGE_BUDGET_S; `more`: some are left."""
    before = max(m.now - r.older_than, -(2 ** 63))  # a debug time near the 64-bit floor stays storable
    done = purge(m.store, before, m.batch_size, r.dry_run, PURGE_BUDGET_S)
    if not r.dry_run and done.promises:
        log.info("Purge deleted workflows=%d promises=%d older_than_ms=%d", done.workflows, done.promises,
                 r.older_than)
    return 200, {"workflows": done.workflows, "promises": done.promises, "dryRun": r.dry_run, "more": done.partial}


class Retention:
    """Retention as configured (`retention.*`): `run` deletes what is past the horizon now."""

    def __init__(self, store: Store, clock: Clock, settled_after: int, batch_size: int,
                 on_deleted: Callable[[Purged], None] | None = None) -> None:
        self.store = store
        self.clock = clock
        self.settled_after = settled_after
        self.batch_size = batch_size
        self.on_deleted = on_deleted  # metrics

    def run(self, budget_s: float | None = None, stop: Callable[[], bool] = lambda: False) -> Purged:
        if self.settled_after <= 0:
            return Purged()
        done = purge(self.store, self.clock.now() - self.settled_after, self.batch_size, budget_s=budget_s,
                     stop=stop)
        if done.promises:
            log.info("Retention deleted workflows=%d promises=%d partial=%s", done.workflows, done.promises,
                     done.partial)
            if self.on_deleted is not None:
                self.on_deleted(done)
        return done


class RetentionLoop:
    """The local server's retention thread: one run every `interval_ms`, paused during a debug
    session (as the timer loop is), stopped between batches at shutdown."""

    def __init__(self, retention: Retention, interval_ms: int, debug_session: Callable[[], bool]) -> None:
        self.retention = retention
        self.interval_s = interval_ms / 1000
        self.debug_session = debug_session
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.is_set():
            try:
                if not self.debug_session():
                    self.retention.run(stop=self._stopped.is_set)
            except Exception:
                log.exception("retention pass failed")
            self._stopped.wait(self.interval_s)
