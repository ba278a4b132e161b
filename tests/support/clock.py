"""A service clock the test sets by hand (`clock.t = ...`): runs with exact instants, on any machine."""
from __future__ import annotations

from shared.clock import Clock


class SetClock(Clock):
    def __init__(self, t: int) -> None:
        super().__init__()
        self.t = t

    def now(self) -> int:
        return self.t
