"""Wall-clock milliseconds, made monotonic non-decreasing within the process
(docs/protocol.md#26-time-and-debug-mode)."""
from __future__ import annotations

import threading
import time


class Clock:
    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def now(self) -> int:
        t = time.time_ns() // 1_000_000
        with self._lock:
            if t < self._last:
                return self._last
            self._last = t
            return t
