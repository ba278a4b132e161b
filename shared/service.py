"""The core facade every shell calls: one RPC in, one response out; sweeps; effects fan-out.

It runs the request pipeline (docs/protocol.md#24-request-pipeline) around the engine and the
store, and after each commit hands the transaction's effects (messages, new deadlines) to its metrics, then to the
subscribers `shared/runtime.py` lists, in that order (delivery, the timer loop, the sweeper
waker). Shells (flask routes, Cloud Functions, the local runner) stay a few lines.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from logging import DEBUG
from time import perf_counter
from typing import TYPE_CHECKING, Any

from shared.clock import Clock
from shared.config import Config, Transports
from shared.config_routes import compile_routes
from shared.engine import Ctx, EngineConfig, process_timeouts
from shared.kinds import CONSOLE, KINDS, OPERATOR, RPC, Kind, decode
from shared.logs import q
from shared.protocol import Envelope, Reject, dumps, parse_address, parse_envelope, response
from shared.records import DEBUG_SESSION, Effects
from shared.requests import DebugTick, Request
from shared.retention import Maintenance
from shared.storage.base import Busy, ReadOnlyViolation, StorageError, Store

FORBIDDEN = (403, "Forbidden")  # shared.auth's refusal (imported lazily: PyJWT only with auth on)
SURFACE_PATHS = {RPC: "/", OPERATOR: "/operator", CONSOLE: "/ui/api"}  # where each envelope surface is served

if TYPE_CHECKING:
    from shared.auth import Authenticator
    from shared.delivery.destinations import Policy
    from shared.metrics import Metrics
    from shared.tracing import Span, Tracer

log = logging.getLogger("resonate.service")
EffectsHook = Callable[[Effects], None]


def internal_error(e: BaseException) -> bytes:
    """The envelope of a failure outside the request pipeline (nothing of the request is
    trusted any more: kind and corrId are the unknown ones)."""
    return dumps(response("unknown", "0", 500, f"Internal error: {type(e).__name__}"))


def _log_outcome(env: Envelope, status: int, elapsed: float) -> None:
    """The per-request outcome line (payloads and tokens are never logged)."""
    fields = "kind=%s corr_id=%s status=%d elapsed_ms=%.2f"
    args = (q(env.kind), q(env.corr_id), status, elapsed * 1000)
    if status >= 500 and status != 503:
        log.error("Request failed with internal error " + fields, *args, stacklevel=2)
    elif status >= 400:
        log.debug("Request rejected " + fields, *args, stacklevel=2)
    else:
        log.debug("Request completed " + fields, *args, stacklevel=2)


def destination_refusal(transports: Transports, address: str, policy: Callable[[], Policy] | None = None) -> str | None:
    """Why the outbound destination policy refuses `address` (http(s): the push policy on its
    host; gcps: the allowed projects), or None; None too for other schemes and malformed
    addresses (the decoders answer for those). The one judgement of every target a caller sends
    (`Service.check_destinations`) and of the routing rules at startup (`shared.config_routes`).
    `policy`: the push policy, built on demand (a Service keeps one)."""
    addr = parse_address(address)
    if addr is None:
        return None
    if addr.scheme == "gcps":
        from shared.delivery.destinations import project_refusal

        return project_refusal(transports.gcps.allow_projects, addr.group)
    if addr.scheme not in ("http", "https"):
        return None
    from urllib3.util import parse_url

    from shared.delivery.destinations import Policy, check_url

    try:
        u = parse_url(addr.url)
    except ValueError as e:
        return f"not a valid URL ({e})"
    if not u.host:
        return "the URL has no host"
    why = check_url(policy() if policy is not None else Policy.from_config(transports.http_push), u.host, u.port)
    return None if why is None else f"host {u.host!r} {why}"


class Service:
    def __init__(self, store: Store, cfg: Config, clock: Clock | None = None, metrics: Metrics | None = None) -> None:
        self.store = store
        self.cfg = cfg
        # the store's limit on ids, addresses and indexed tags (MySQL: 255 characters), checked
        # while decoding, before any transaction
        self.key_limit: int | None = getattr(store, "max_key_length", None)
        self.engine_cfg = EngineConfig(retry_timeout=cfg.tasks.retry_timeout, claim_timeout=cfg.legacy.claim_timeout,
                                       strict=cfg.strict,
                                       max_listeners=cfg.promises.max_listeners,
                                       routes=compile_routes(cfg.tasks.routes))
        for i, rule in enumerate(cfg.tasks.routes, 1):
            log.info("Routing %s", rule.describe(i))
        self.clock = clock or Clock()
        self.metrics = metrics
        self.subscribers: tuple[EffectsHook, ...] = ()  # after-commit, in order (`subscribe`)
        # metrics first: it notes each message's commit time before delivery can complete it
        self._hooks: tuple[EffectsHook, ...] = (metrics.on_effects,) if metrics is not None else ()
        self.debug_session = False
        # the (group, worker id) pairs holding an SSE stream now, for the console (the runtime sets it)
        self.presence: Callable[[], Iterable[tuple[str, str]]] | None = None
        self.tracer: Tracer | None = None  # shared/tracing.py: set by the runtime when traces are exported
        self.on_close: list[Callable[[], None]] = []  # `close_streams`
        self._policy: Policy | None = None  # built on the first http(s) address
        self.refresh_debug_session()
        # inbound auth: the key is loaded here, once per process (PyJWT only when on)
        self.auth: Authenticator | None = None
        if cfg.auth is not None:
            from shared.auth import authenticator

            self.auth = authenticator(cfg.auth)

    # ---- requests ----------------------------------------------------------------------------

    def rpc(self, raw: bytes, surface: str = RPC,
            trace: tuple[str | None, str | None] | None = None) -> tuple[int, bytes]:
        """POST / : bytes in, (status, JSON bytes) out. Never raises: whatever goes wrong, the
        client gets an envelope (a 500 naming the error), never the web framework's HTML page.

        Metrics count the envelopes that parsed (the reference's rule), timed from the
        raw bytes to the encoded response. `trace`: the request's (traceparent, tracestate)."""
        tracer = self.tracer
        span = tracer.begin(trace, SURFACE_PATHS[surface]) if tracer is not None else None
        try:
            status, body = self._rpc(raw, surface, span)
        except Exception as e:  # a bug outside handle() (parsing, auth, encoding, metrics, logging)
            log.exception("internal error while handling a request")
            status, body = 500, internal_error(e)
        if tracer is not None and span is not None:
            tracer.finish(span, status)
        return status, body

    def _rpc(self, raw: bytes, surface: str = RPC, span: Span | None = None) -> tuple[int, bytes]:
        t0 = perf_counter()
        env, err = parse_envelope(raw)
        if err is not None:
            log.warning("Invalid request envelope rejected status=%d error=%s", err["head"]["status"], q(err["data"]))
            return err["head"]["status"], dumps(err)
        assert env is not None
        if span is not None:
            span.request(env.kind, env.corr_id)
        debug = log.isEnabledFor(DEBUG)
        if debug:
            log.debug("Received request kind=%s corr_id=%s", q(env.kind), q(env.corr_id))
        claims = self._authenticate(env) if self.auth is not None else None
        refused: tuple[int, Any] | None
        if isinstance(claims, tuple):  # not authenticated
            status, data = refused = claims
        else:
            status, data = self.handle(env, claims, surface)
            refused = (status, data) if (status, data) == FORBIDDEN else None
        body = dumps(response(env.kind, env.corr_id, status, data))
        if refused is not None:
            log.warning("Request rejected by auth kind=%s corr_id=%s status=%d elapsed_ms=%.2f", q(env.kind),
                        q(env.corr_id), status, (perf_counter() - t0) * 1000)
        if self.metrics is not None:
            self.metrics.request(env.kind, status, perf_counter() - t0)
        if debug or (status >= 500 and status != 503):  # a routine 4xx is no warning here
            _log_outcome(env, status, perf_counter() - t0)
        return status, body

    def _authenticate(self, env: Envelope) -> dict[str, Any] | tuple[int, Any]:
        """Step 3 of the request pipeline (before any decoding or transaction): the claims, else the answer."""
        assert self.auth is not None
        try:
            return self.auth.authenticate(env.auth, env.kind)
        except Exception as e:  # a bug in a verifier must still answer with an envelope
            log.exception("internal error while authenticating kind=%s", q(env.kind))
            return 500, f"Internal error: {type(e).__name__}: {e}"

    def handle(self, env: Envelope, claims: Mapping[str, Any] | None = None, surface: str = RPC) -> tuple[int, Any]:
        """Decode, authorize (`claims` of an authenticated caller; None with auth off), execute.
        `surface`: where the request came in (`shared.kinds`: `POST /`, the REST API's routes,
        `POST /operator`, the console's `POST /ui/api`); a kind is served on its own surfaces only
        (never a REST, operator or console kind on `POST /`)."""
        try:
            k = KINDS.get(env.kind)
            if k is None or surface not in k.surfaces:
                return 400, f"Unknown operation: {env.kind}"
            if k.debug and not self.cfg.debug:
                return 403, "Debug operations are disabled"
            debug_time = env.debug_time if self.cfg.debug else None
            req = decode(k.name, env.data, self.cfg.strict, self.key_limit)
            if env.nul:
                return 400, "Invalid request: strings must not contain NUL characters"
            if isinstance(req, DebugTick) and debug_time is not None and debug_time != req.time:
                return 400, "resonate:debug_time must equal data.time"
            touched = k.touches(req)
            scope = None
            if claims is not None and self.auth is not None:  # every id the request touches
                refused = self.auth.authorize(claims, k.name, touched, k.admin_only(surface))
                if refused is not None:
                    return refused
                from shared.auth import scope_of

                scope = scope_of(claims)
            if touched.addresses:
                self.check_destinations(touched.addresses)
            now = debug_time if debug_time is not None else self.clock.now()
            return self.execute(req, now, env.corr_id, scope)
        except Reject as e:
            return e.status, e.message
        except Busy as e:
            log.warning("storage contention kind=%s error=%s", q(env.kind), q(str(e), 2000))
            return 503, f"Service unavailable: {e}"
        except StorageError as e:
            log.error("storage failure kind=%s error=%s", q(env.kind), q(str(e), 2000))
            return 500, f"Internal error: {e}"
        except Exception as e:  # a bug must still answer with an envelope, never drop the connection
            log.exception("internal error kind=%s", q(env.kind))
            return 500, f"Internal error: {type(e).__name__}: {e}"

    def check_destinations(self, addresses: tuple[str, ...]) -> None:
        """The outbound destination policy on the addresses a request registers (targets,
        listeners): Reject(400) for one the server must never deliver to. Runs before the
        transaction, so a refused request changes nothing; pushes check again when they
        connect (`shared.delivery.destinations`). poll:// and bash:// are not destinations."""
        for address in addresses:
            why = destination_refusal(self.cfg.transports, address, self._http_policy)
            if why is not None:
                log.warning("Destination refused address=%s reason=%s", q(address), q(why))
                raise Reject(400, f"Invalid request: destination {address!r} refused: {why}")

    def _http_policy(self) -> Policy:
        if self._policy is None:
            from shared.delivery.destinations import Policy

            self._policy = Policy.from_config(self.cfg.transports.http_push)
        return self._policy

    def execute(self, req: Request, now: int, corr_id: str = "", scope: str | None = None) -> tuple[int, Any]:
        """Run one decoded request; `scope`: the id prefix the caller is confined to (None: all)."""
        k: Kind[Any] = KINDS[req.kind]
        if k.batched is not None:  # an operator kind: many short transactions of its own
            return k.batched(Maintenance(self.store, now, self.cfg.retention.batch_size), req)
        op = k.operation
        assert op is not None

        def run(tx: Any) -> tuple[tuple[int, Any], Effects]:
            c = Ctx(tx, now, self.engine_cfg, corr_id, scope=scope, presence=self.presence)
            return op(c, req), c.fx

        if k.read_first:
            try:
                result, fx = self.store.read(run)
                return result
            except ReadOnlyViolation:
                pass
        if self.tracer is None:
            result, fx = self.store.write(run)
        else:  # a "commit" span under the request's (shared/tracing.py)
            result, fx = self.tracer.commit(self.store.write, run)
        self._after_commit(fx)
        return result

    # ---- background work ------------------------------------------------------------------

    def sweep(self, now: int | None = None) -> int:
        """Apply everything due now in batches (background timeouts); returns rows handled."""
        total = 0
        while True:
            t = self.clock.now() if now is None else now

            def run(tx: Any, t: int = t) -> tuple[int, Effects]:
                c = Ctx(tx, t, self.engine_cfg)
                return process_timeouts(c, self.engine_cfg.timeouts_target_only, self.cfg.timeouts.batch_size), c.fx

            handled, fx = self.store.write(run)
            if fx.due and now is None and self.metrics is not None:
                self.metrics.timers(fx.due)
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

    def subscribe(self, subscribers: Sequence[EffectsHook]) -> None:
        """Who gets each commit's effects, in order (the runtime's wiring; set once: the
        subscribers themselves need this service, so they exist only after it)."""
        if self.subscribers:
            raise RuntimeError("the after-commit subscribers are set already")
        self.subscribers = tuple(subscribers)
        self._hooks = (*self._hooks, *self.subscribers)

    def observe(self, hook: EffectsHook) -> None:
        """One more after-commit hook, after the subscribers (the console's live stream)."""
        self._hooks = (*self._hooks, hook)

    def close_streams(self) -> None:
        """End the long-lived answers the routes hold open besides the poll hub's (the console's
        live streams): graceful shutdown must not wait for their next write."""
        for close in self.on_close:
            close()

    def _after_commit(self, fx: Effects) -> None:
        if fx.debug_changed:
            self.refresh_debug_session()
        for hook in self._hooks:
            try:
                hook(fx)
            except Exception:
                log.exception("effects hook failed")
