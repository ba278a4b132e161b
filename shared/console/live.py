"""The console's live stream: refresh hints, never data.

Each commit of this process wakes every open stream (a `change` event; at most one per
`MIN_GAP` seconds per stream, however busy the server), and every `ui.live_interval` a `tick`
tells the page to look again for what other instances committed (Cloud Functions instances, a
router's replicas: none of their commits reach this process). The page re-runs its own query on
either, so a hint carries no ids and leaks nothing across prefixes.
"""
from __future__ import annotations

import threading
import time
from collections.abc import Iterator

from shared.records import Effects

MIN_GAP = 0.25  # s between two hints on one stream


class Changes:
    """Counts this process's commits and wakes the streams waiting for one."""

    def __init__(self) -> None:
        self.seq = 0
        self.closed = False  # the server is shutting down: every stream ends
        self._cond = threading.Condition()

    def on_effects(self, fx: Effects) -> None:
        """The after-commit hook: cheap (one increment and a notify), called on every commit."""
        with self._cond:
            self.seq += 1
            self._cond.notify_all()

    def close(self) -> None:
        """End every stream (graceful shutdown: they would otherwise hold it until their next write)."""
        with self._cond:
            self.closed = True
            self._cond.notify_all()

    def wait(self, seen: int, timeout: float) -> int:
        with self._cond:
            self._cond.wait_for(lambda: self.seq != seen or self.closed, timeout)
            return self.seq

    def stream(self, interval_s: float) -> Iterator[bytes]:
        """SSE frames: `hello` at once, then `change` after commits and `tick` every interval,
        until `close()`."""
        yield b"retry: 2000\nevent: hello\ndata: {}\n\n"
        seen = self.seq
        last_tick = time.monotonic()
        while not self.closed:
            now = time.monotonic()
            seq = self.wait(seen, max(0.0, last_tick + interval_s - now))
            if self.closed:
                return
            if seq != seen:
                seen = seq
                yield b"event: change\ndata: {}\n\n"
                time.sleep(MIN_GAP)
            elif time.monotonic() - last_tick >= interval_s:
                last_tick = time.monotonic()
                yield b"event: tick\ndata: {}\n\n"
