"""The serverless timer: one call handles every deadline of the coming window, on time.

Cloud Scheduler calls the `sweeper` function once a minute. Instead of firing only what is due
at that instant (a 1-minute timer resolution), a call keeps going while deadlines fall inside
its window, looking again every `poll_ms` (other instances keep writing deadlines), then
returns. Windows slightly longer than the tick overlap, and several sweepers at once are safe:
due rows are claimed with SKIP LOCKED on Postgres and serialized by the single writer on SQLite.

A deadline written while no sweeper runs (an idle system that gets a 2 s durable sleep) would
wait for the next tick; `SweeperWaker` closes that gap: a running sweeper advertises how long
it stays (meta `sweeper_until`), and the instance that commits a nearer deadline calls the
sweeper function at once. Nothing stays up between bursts of work. Deployed, the sweeper admits
only `run.invoker` callers: with `sweeper.auth = gcp` the waker sends a Google ID token for the
sweeper URL, minted from the instance's identity like the `gcp` push auth (shared/delivery/push_auth.py).
"""
from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import urllib3

from shared.clock import Clock
from shared.records import Effects
from shared.storage.base import Store, Tx

if TYPE_CHECKING:
    from shared.delivery.push_auth import PushAuth
    from shared.retention import Purged

log = logging.getLogger("resonate.sweeper")

UNTIL = "sweeper_until"  # meta key: epoch ms until which a sweeper is running (or was asked to)
START_GRACE_MS = 10_000
RETAIN_BUDGET_S = 20.0  # one call's retention pass (the function's timeout is 180 s, the window 65 s)
REDRIVE_EVERY_MS = 1_000  # a requested sweeper that did not announce itself by then is asked again


class Sweeps(Protocol):
    """What a window needs of the core (`Service`)."""

    @property
    def clock(self) -> Clock: ...
    @property
    def store(self) -> Store: ...
    @property
    def debug_session(self) -> bool: ...
    def refresh_debug_session(self) -> bool: ...
    def sweep(self) -> int: ...
    def next_deadline(self) -> int | None: ...


class Redrives(Protocol):
    """What a window needs of delivery (`Delivery`)."""

    def redrive(self) -> int: ...
    def flush(self, timeout: float) -> bool: ...


def _until(tx: Tx) -> int:
    v = tx.get_meta(UNTIL)
    return int(v) if v else 0


def _withdraw(tx: Tx, end: int, now: int) -> None:
    """Leaving at `now`: the announcement until `end` ends, unless another sweeper extended it."""
    if _until(tx) == end:
        tx.set_meta(UNTIL, str(now))


def run_window(service: Sweeps, delivery: Redrives, window_ms: int, sleep: Callable[[float], None] = time.sleep,
               poll_ms: int = 250, retain: Callable[[float], Purged] | None = None) -> dict:
    """Sweep due timers and re-drive the outbox until no deadline remains inside the window;
    then one retention pass (`retain(budget_s)`, shared/retention.py) of at most RETAIN_BUDGET_S,
    once the timers of the window are handled (a backlog is continued by the next calls)."""
    clock = service.clock
    start = clock.now()
    end = start + window_ms
    handled = redriven = passes = 0
    store = service.store
    store.write(lambda tx: tx.set_meta(UNTIL, str(max(end, _until(tx)))))
    next_redrive = start  # the outbox re-drive (several writes) runs at most once a second, not per look
    while not service.refresh_debug_session():  # another instance may start a debug session meanwhile
        passes += 1
        handled += service.sweep()
        if clock.now() >= next_redrive:
            redriven += delivery.redrive()
            next_redrive = clock.now() + REDRIVE_EVERY_MS
        nxt = service.next_deadline()
        now = clock.now()
        if now >= end:
            break
        if nxt is None or nxt > end:
            # leaving early: withdraw the announcement first, then look once more, so a deadline
            # committed meanwhile is either seen here or makes its writer wake a sweeper
            store.write(functools.partial(_withdraw, end=end, now=now))
            nxt = service.next_deadline()
            if nxt is None or nxt > end:
                break
            store.write(lambda tx: tx.set_meta(UNTIL, str(max(end, _until(tx)))))
        if nxt > now:
            sleep(min(nxt - now, poll_ms) / 1000)
    retained = retain(RETAIN_BUDGET_S).as_dict() if retain is not None and not service.debug_session else None
    delivery.flush(max(1.0, (end - clock.now()) / 1000))  # results are recorded before we return
    return {"handled": handled, "redriven": redriven, "passes": passes, "elapsed_ms": clock.now() - start,
            "debug_session": service.debug_session, "retention": retained}


class SweeperWaker:
    """After a commit that wrote a deadline inside the coming window: if no sweeper is running
    until then, claim the wake-up (one instance wins) and call the sweeper function."""

    def __init__(self, store: Store, clock: Clock, url: str, window_ms: int, timeout_s: float,
                 auth: PushAuth | None = None) -> None:
        self.store = store
        self.clock = clock
        self.url = url
        self.window_ms = window_ms
        self.auth = auth  # credentials for the call (a Google ID token for the sweeper URL), or none
        self._http = urllib3.PoolManager(num_pools=2, maxsize=4, retries=False,
                                         timeout=urllib3.Timeout(connect=5.0, read=timeout_s))

    def on_effects(self, fx: Effects) -> None:
        """After-commit subscriber."""
        deadline = fx.deadline
        if deadline is None:
            return
        now = self.clock.now()
        if deadline > now + self.window_ms:
            return  # the next tick's window covers it
        store = self.store
        if store.read(_until) >= deadline:
            return

        def claim(tx: Tx) -> bool:
            if _until(tx) >= deadline:
                return False
            tx.set_meta(UNTIL, str(now + START_GRACE_MS))
            return True

        if store.write(claim):
            threading.Thread(target=self._call, name="wake-sweeper", daemon=True).start()

    def _call(self) -> None:
        """Holds the request open for the whole window: the sweeper works while it is served."""
        try:
            headers = {"Content-Type": "application/json"}
            if self.auth is not None:  # a mint that fails fails the call (logged): never sent without it
                headers[self.auth.header] = self.auth.value(self.url)
            r = self._http.request("POST", self.url, body=b"{}", headers=headers)
            if r.status >= 300:
                log.warning("waking the sweeper at %s: HTTP %d", self.url, r.status)
        except Exception as e:
            log.warning("waking the sweeper at %s failed: %s", self.url, e)
