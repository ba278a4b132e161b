"""The engine: one function per request kind over a storage transaction (registered in
`shared.kinds`), plus the background timeout pass. No I/O beyond the transaction, no clock."""
from __future__ import annotations

from shared.engine.core import Ctx, EngineConfig, Resp
from shared.engine.debug import DEBUG_SESSION
from shared.engine.timeouts import process_timeouts

__all__ = ["DEBUG_SESSION", "Ctx", "EngineConfig", "Resp", "process_timeouts"]
