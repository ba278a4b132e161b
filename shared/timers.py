"""The timer loop: sleep until the earliest deadline, wake early when an earlier one is written.

Handles promise timeouts (every pending promise in compat: docs/protocol.md#66-background-timeouts),
task retries and leases, and cron schedules, through `Service.sweep`. Paused during debug
sessions (docs/protocol.md#26-time-and-debug-mode).
"""
from __future__ import annotations

import logging
import threading
from typing import Protocol

from shared.clock import Clock
from shared.records import Effects

log = logging.getLogger("resonate.timers")


class Timers(Protocol):
    """What the loop needs of the core (`Service`)."""

    @property
    def clock(self) -> Clock: ...
    @property
    def debug_session(self) -> bool: ...
    def sweep(self) -> int:
        """Apply everything due now; rows handled."""
    def next_deadline(self) -> int | None: ...


class TimerLoop:
    def __init__(self, service: Timers, max_sleep_ms: int = 60000) -> None:
        self.service = service
        self.max_sleep_ms = max_sleep_ms
        self._target: int | None = None  # the deadline we are sleeping towards
        self._wake = threading.Event()
        self._stopped = threading.Event()
        self._thread: threading.Thread | None = None

    def on_effects(self, fx: Effects) -> None:
        """After-commit subscriber: an earlier deadline (or a debug session change) wakes the loop."""
        if fx.debug_changed or (fx.deadline is not None and (self._target is None or fx.deadline < self._target)):
            self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="timers", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stopped.is_set():
            sleep_ms = self.max_sleep_ms
            self._wake.clear()  # before the work: a deadline written during it wakes the next wait
            try:
                if not self.service.debug_session:
                    self.service.sweep()
                    nxt = self.service.next_deadline()
                    self._target = nxt
                    if nxt is not None:
                        sleep_ms = max(0, min(sleep_ms, nxt - self.service.clock.now()))
                else:
                    self._target = None
            except Exception:
                log.exception("background timeout processing failed")
                sleep_ms = 1000
            if sleep_ms > 0:
                self._wake.wait(sleep_ms / 1000)
