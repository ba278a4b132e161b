"""The core facade every shell calls: one RPC in, one response out; sweeps; effects fan-out.

It runs the request pipeline of §2.6 around the engine and the store, and after each commit
hands the transaction's effects (messages, new deadlines) to whoever subscribed (delivery,
the timer loop). Shells (flask routes, Cloud Functions, the local runner) stay a few lines.
"""
from __future__ import annotations

import logging
from typing import Any, Callable

from shared.clock import Clock
from shared.config import Config
from shared.engine import DEBUG_SESSION, OPERATIONS, READ_FIRST, Ctx, EngineConfig, process_timeouts
from shared.protocol import Envelope, Reject, dumps, parse_envelope, response
from shared.records import Effects
from shared.requests import Req, decode
from shared.storage.base import Busy, ReadOnlyViolation, Store, StorageError

log = logging.getLogger("resonate.service")
EffectsHook = Callable[[Effects], None]


class Service:
    def __init__(self, store: Store, cfg: Config, clock: Clock | None = None) -> None:
        self.store = store
        self.cfg = cfg
        self.engine_cfg = EngineConfig(retry_timeout=cfg.tasks.retry_timeout, strict=cfg.strict)
        self.clock = clock or Clock()
        self.hooks: list[EffectsHook] = []
        self.debug_session = False
        self.refresh_debug_session()

    # ---- requests ----------------------------------------------------------------------------

    def rpc(self, raw: bytes) -> tuple[int, bytes]:
        """POST / : bytes in, (status, JSON bytes) out. Never raises."""
        env, err = parse_envelope(raw)
        if err is not None:
            return err["head"]["status"], dumps(err)
        assert env is not None
        status, data = self.handle(env)
        return status, dumps(response(env.kind, env.corr_id, status, data))

    def handle(self, env: Envelope) -> tuple[int, Any]:
        try:
            kind = env.kind
            if kind.startswith("debug.") and kind in OPERATIONS and not self.cfg.debug:
                return 403, "Debug operations are disabled"
            if kind not in OPERATIONS:
                return 400, f"Unknown operation: {kind}"
            debug_time = env.debug_time if self.cfg.debug else None
            req = decode(kind, env.data, self.cfg.strict)
            if env.nul:
                return 400, "Invalid request: strings must not contain NUL characters"
            if kind == "debug.tick" and debug_time is not None and debug_time != req.time:
                return 400, "resonate:debug_time must equal data.time"
            now = debug_time if debug_time is not None else self.clock.now()
            return self.execute(req, now, env.corr_id)
        except Reject as e:
            return e.status, e.message
        except Busy as e:
            log.warning("storage contention in %s: %s", env.kind, e)
            return 503, f"Service unavailable: {e}"
        except StorageError as e:
            log.error("storage failure in %s: %s", env.kind, e)
            return 500, f"Internal error: {e}"
        except Exception as e:  # a bug must still answer with an envelope, never drop the connection
            log.exception("internal error in %s", env.kind)
            return 500, f"Internal error: {type(e).__name__}: {e}"

    def execute(self, req: Req, now: int, corr_id: str = "") -> tuple[int, Any]:
        op = OPERATIONS[req.kind]

        def run(tx: Any) -> tuple[tuple[int, Any], Effects]:
            c = Ctx(tx, now, self.engine_cfg, corr_id)
            return op(c, req), c.fx

        if req.kind in READ_FIRST:
            try:
                result, fx = self.store.read(run)
                return result
            except ReadOnlyViolation:
                pass
        result, fx = self.store.write(run)
        self._after_commit(fx)
        return result

    # ---- background work ------------------------------------------------------------------

    def sweep(self, now: int | None = None) -> int:
        """Apply everything due now in batches (background timeouts); returns rows handled."""
        total = 0
        while True:
            t = self.clock.now() if now is None else now

            def run(tx: Any) -> tuple[int, Effects]:
                c = Ctx(tx, t, self.engine_cfg)
                return process_timeouts(c, self.engine_cfg.timeouts_target_only, self.cfg.timeouts.batch_size), c.fx

            handled, fx = self.store.write(run)
            self._after_commit(fx)
            total += handled
            if handled == 0:
                return total

    def next_deadline(self) -> int | None:
        return self.store.read(lambda tx: tx.next_deadline(self.engine_cfg.timeouts_target_only))

    def refresh_debug_session(self) -> bool:
        """Re-read the debug-session flag (other instances may have changed it)."""
        self.debug_session = bool(self.store.read(lambda tx: tx.get_meta(DEBUG_SESSION)))
        return self.debug_session

    def _after_commit(self, fx: Effects) -> None:
        if fx.debug_changed:
            self.refresh_debug_session()
        for hook in self.hooks:
            try:
                hook(fx)
            except Exception:
                log.exception("effects hook failed")
