"""Polling helpers for tests that wait on another thread or process.

A wait is for something the product promises will happen: it must not fail because a loaded
machine (CI, two cores, other jobs) was slow, yet must still fail when the thing never happens.
So `wait_until` waits at least FLOOR seconds (30; RESONATE_TEST_WAIT_FLOOR overrides it) whatever
bound the caller names: a correct run returns as soon as the condition holds, a broken one
fails a little later. An absence (nothing more arrives) is checked with `stays_false`, which
waits exactly as long as asked: it cannot fail spuriously on a slow machine.
"""
from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

FLOOR = float(os.environ.get("RESONATE_TEST_WAIT_FLOOR", "30"))


def wait_until(pred: Callable[[], Any], timeout: float, interval: float = 0.05) -> Any:
    """Poll `pred` until it is truthy or max(`timeout`, FLOOR) seconds pass; returns its last value."""
    deadline = time.monotonic() + max(timeout, FLOOR)
    while True:
        v = pred()
        if v or time.monotonic() >= deadline:
            return v
        time.sleep(interval)


def stays_false(pred: Callable[[], Any], seconds: float, interval: float = 0.05) -> bool:
    """True when `pred` stayed falsy for `seconds` (an absence: the wait is never stretched)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if pred():
            return False
        time.sleep(interval)
    return not pred()
