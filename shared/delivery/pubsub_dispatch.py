"""HTTP pushes through Pub/Sub: the cloud shape of delivery (`dispatch.topic` set).

Why: a Cloud Function's CPU is throttled once it has answered, so a push the `api` instance
starts after its commit may stall, and retrying it would wait for the sweeper's next call.
Instead the committing instance claims each new http(s) outbox row for DISPATCH_LEASE_MS (long
enough to cover Pub/Sub's retries) and publishes a small message naming the row (seq, version).
The topic's push subscription calls the `dispatch` function, which checks the subscription's
OIDC token, rebuilds the worker's body from the row and pushes it (the same `HttpPush` the local
server uses) within the request:

- 2xx: the row is deleted, the message acked (200);
- failure: 500, so Pub/Sub retries with its backoff; the row's failures are counted and its
  claim renewed. The last allowed attempt (`dispatch.max_attempts`, counted by the row, or
  Pub/Sub's `deliveryAttempt` when dead-lettering is on) marks the row dead (kept, never
  re-published) while the subscription's dead-letter policy moves the message aside;
- a row that is gone, replaced by a newer version, or dead: 200, nothing to do; but a message an
  operator moved back from the dead-letter subscription (`resonate messages redrive --pubsub`,
  attribute `resonate-redrive`) revives its dead row first, as `outbox.redrive` does, and is pushed.

The outbox row stays the truth: a failed publish makes the row claimable again shortly, and a
row whose lease lapsed (message lost, Pub/Sub gave up) is re-published by the sweeper's re-drive.
google-cloud-pubsub and google-auth are imported on first use (cold starts).
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, wait
from typing import TYPE_CHECKING, Any

from shared.delivery.messages import OutboxRow
from shared.logs import q
from shared.records import Message

if TYPE_CHECKING:
    from shared.config import Dispatch as DispatchConfig
    from shared.delivery.sender import Sender
    from shared.metrics import Metrics
    from shared.storage.base import OutboxClaims, Store
    from shared.tracing import Tracer

log = logging.getLogger("resonate.dispatch")

DISPATCH_LEASE_MS = 15 * 60_000  # a published row stays claimed this long (renewed by each failure)
PUBLISH_RETRY_MS = 5_000  # a row whose publish failed is claimable again after this
MAX_IN_FLIGHT = 1_000  # publishes not yet confirmed, per process (publish() blocks beyond)
CLOCK_SKEW_S = 10
GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")


class Publisher:
    """One PublisherClient per process, built on first publish (it honours PUBSUB_EMULATOR_HOST
    and otherwise uses Application Default Credentials)."""

    def __init__(self, topic: str, max_in_flight: int = MAX_IN_FLIGHT, tracer: Tracer | None = None) -> None:
        self.topic = topic
        self.max_in_flight = max_in_flight
        self.tracer = tracer  # traces on: the committing request's trace context rides as attributes
        self._client: Any = None
        self._lock = threading.Lock()
        self._pending: dict[tuple[int, int], Future] = {}

    def client(self) -> Any:
        with self._lock:
            if self._client is None:
                import google.cloud.pubsub_v1 as pubsub_v1

                t = pubsub_v1.types
                flow = t.PublishFlowControl(message_limit=self.max_in_flight,
                                            limit_exceeded_behavior=t.LimitExceededBehavior.BLOCK)
                self._client = pubsub_v1.PublisherClient(batch_settings=t.BatchSettings(max_latency=0.005),
                                                         publisher_options=t.PublisherOptions(flow_control=flow))
            return self._client

    def publish(self, seq: int, m: Message, done: Callable[[bool], None]) -> None:
        """Publish the message naming row (seq, m.version); `done(ok)` once Pub/Sub answered."""
        key = (seq, m.version)
        data = json.dumps({"seq": seq, "version": m.version}, separators=(",", ":")).encode()
        trace = self.tracer.propagation() if self.tracer is not None else {}  # traceparent, tracestate
        try:
            fut = self.client().publish(self.topic, data, kind=m.kind, **trace)
        except Exception as e:
            log.warning("publishing outbox row %d to %s failed: %s", seq, self.topic, e)
            done(False)
            return
        with self._lock:
            self._pending[key] = fut

        def finished(f: Future) -> None:
            with self._lock:
                if self._pending.get(key) is f:
                    del self._pending[key]
            err = f.exception()
            if err is not None:
                log.warning("publishing outbox row %d to %s failed: %s", seq, self.topic, err)
            done(err is None)

        fut.add_done_callback(finished)

    def wait(self, rows: list[tuple[int, Message]], timeout: float) -> bool:
        """Wait until these rows' publishes are answered: a function must not return with
        messages still in its client's batch (its CPU may be throttled right after)."""
        with self._lock:
            futs = [f for seq, m in rows if (f := self._pending.get((seq, m.version))) is not None]
        return not wait(futs, timeout).not_done if futs else True

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.stop()  # sends what is batched, then refuses new publishes
            except Exception:
                log.exception("stopping the Pub/Sub publisher failed")


class TokenCheck:
    """The push subscription's OIDC token: Google-signed (certificates cached for their
    max-age), `aud` = dispatch.audience, issuer Google, a verified `email` on the allow-list."""

    def __init__(self, audience: str, accounts: tuple[str, ...], certs_url: str) -> None:
        self.audience = audience
        self.accounts = frozenset(accounts)
        self.certs_url = certs_url
        self._fetch: Any = None

    def refusal(self, authorization: str | None) -> tuple[int, str] | None:
        """None when allowed, else (401 | 403 | 503, why)."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return 401, "missing bearer token"
        from google.auth.exceptions import TransportError
        from google.oauth2 import id_token

        if self._fetch is None:
            from shared.auth_google import CachedFetch

            self._fetch = CachedFetch()
        try:
            claims = id_token.verify_token(token.strip(), self._fetch, audience=self.audience,
                                           certs_url=self.certs_url, clock_skew_in_seconds=CLOCK_SKEW_S)
        except TransportError as e:
            return 503, f"Google certificates unavailable: {e}"
        except Exception as e:  # google-auth raises ValueError and its own exceptions
            return 401, f"invalid token: {type(e).__name__}: {e}"
        if claims.get("iss") not in GOOGLE_ISSUERS:
            return 401, f"unexpected issuer {claims.get('iss')!r}"
        if claims.get("email") not in self.accounts:
            return 403, f"service account {claims.get('email')!r} not allowed"
        if claims.get("email_verified") is not True:
            return 403, f"email {claims.get('email')!r} not verified"
        return None


def _attributes(body: bytes) -> dict[str, Any]:
    """The Pub/Sub message's attributes in a push envelope ({} when it has none or is malformed)."""
    try:
        attrs = json.loads(body)["message"].get("attributes") or {}
    except (ValueError, KeyError, TypeError, AttributeError):
        return {}
    return attrs if isinstance(attrs, dict) else {}


def is_redrive(body: bytes) -> bool:
    """The push envelope carries a message re-published from the dead letters (shared/delivery/pubsub_redrive.py)."""
    return _attributes(body).get("resonate-redrive") == "1"


def trace_context(body: bytes) -> tuple[str | None, str | None]:
    """(traceparent, tracestate) the publishing request attached (`Publisher.publish`), if any."""
    attrs = _attributes(body)
    tp, ts = attrs.get("traceparent"), attrs.get("tracestate")
    return (tp if isinstance(tp, str) else None), (ts if isinstance(ts, str) else None)


def parse_push(body: bytes) -> tuple[int, int, int]:
    """(seq, version, deliveryAttempt or 0) of a Pub/Sub push envelope; ValueError if malformed."""
    try:
        env = json.loads(body)
        msg = env["message"]
        ref = json.loads(base64.b64decode(msg["data"], validate=True))
        seq, version = ref["seq"], ref["version"]
        attempt = env.get("deliveryAttempt") or 0
    except (ValueError, KeyError, TypeError, binascii.Error) as e:
        raise ValueError(f"not a dispatch push envelope: {e!r}") from None
    if not all(type(v) is int for v in (seq, version, attempt)):
        raise ValueError("not a dispatch push envelope: seq, version and deliveryAttempt must be integers")
    return seq, version, attempt


class DispatchHandler:
    """The `dispatch` function's work for one push request (`handle`): the row comes from the
    outbox claims, the body and the push from the instance's `Sender` (its HttpPush, push auth)."""

    def __init__(self, claims: OutboxClaims, store: Store, sender: Sender, cfg: DispatchConfig,
                 push_timeout_s: float, metrics: Metrics | None = None) -> None:
        self.claims = claims
        self.store = store
        self.sender = sender
        self.metrics = metrics
        self.max_attempts = cfg.max_attempts
        self.push_timeout_s = push_timeout_s
        self.check = TokenCheck(cfg.audience or "", cfg.service_accounts, cfg.certs_url)

    def handle(self, authorization: str | None, body: bytes) -> tuple[int, dict]:
        refused = self.check.refusal(authorization)
        if refused is not None:
            log.warning("dispatch push refused (%d): %s", *refused)
            return refused[0], {"error": refused[1]}
        try:
            seq, version, attempt = parse_push(body)
        except ValueError as e:  # retrying cannot help; the row (if any) is re-published when its lease lapses
            log.error("dropping a Pub/Sub message: %s", e)
            return 200, {"status": "malformed"}
        found = self.claims.dispatch_row(seq, version)
        if found is None:
            return 200, {"status": "gone"}
        m, _, dead, debug = found
        if dead and is_redrive(body):
            dead = not self._revive(seq, m)
        if dead:
            return 200, {"status": "dead"}
        if debug:
            return 503, {"status": "debug session"}  # the outbox stays put; Pub/Sub retries later
        row = OutboxRow.of(m, seq)
        if not self.sender.pushes(row):
            log.warning("dropping message to %s: not an HTTP push address, or HTTP push disabled", q(m.address))
            self._ack(m)
            return 200, {"status": "dropped"}
        promise = None
        if m.kind == "unblock":
            p = self.store.read(lambda tx: tx.get_promise(m.id))
            if p is None:  # the promise is gone (debug.reset): nothing to say
                self._ack(m)
                return 200, {"status": "gone"}
            promise = p.wire()
        if self._traced_push(row, promise, body):
            self._ack(m)
            if self.metrics is not None:
                self.metrics.delivered(m, "push")
            return 200, {"status": "delivered"}
        res = self.claims.dispatch_failed(seq, version, DISPATCH_LEASE_MS, self.max_attempts, attempt)
        if res is None:
            return 200, {"status": "gone"}
        failures, dead = res
        if dead:
            log.error("giving up on %s %s to %s after %d failed attempts: row %d marked dead", m.kind, q(m.id),
                      q(m.address), max(failures, attempt), seq)
        return 500, {"status": "failed", "attempts": failures, "dead": dead}

    def _revive(self, seq: int, m: Message) -> bool:
        """Clear the dead mark of row `seq` if it still holds `m` (not replaced meanwhile), and
        keep it claimed for this push (the sweeper's re-drive must not publish it again)."""
        revived = self.store.write(lambda tx: tx.revive_dead(seq))
        if not any(x == m for _, x in revived):
            return False
        self.claims.retry_later(seq, m.version, DISPATCH_LEASE_MS)
        log.warning("re-driven from the dead letters: %s %s to %s (row %d)", m.kind, q(m.id), q(m.address), seq)
        return True

    def _traced_push(self, row: OutboxRow, promise: dict[str, Any] | None, body: bytes) -> bool:
        """The push under the committing request's trace (the message's attributes), when traces
        are on here: its deliver span joins that trace, and the worker sees the traceparent."""
        tracer = self.sender.tracer
        token = tracer.adopt(*trace_context(body)) if tracer is not None else None
        try:
            return self._push(row, promise)
        finally:
            if tracer is not None and token is not None:
                tracer.release(token)

    def _push(self, row: OutboxRow, promise: dict[str, Any] | None) -> bool:
        """One HTTP push, waited for: the answer to Pub/Sub is its result."""
        done = threading.Event()
        result: list[bool] = []

        def finished(ok: bool, transport: str) -> None:
            result.append(ok)
            done.set()

        self.sender.send(row, promise, finished)
        return done.wait(self.push_timeout_s + 5) and result[0]

    def _ack(self, m: Message) -> None:
        """Delete the row before answering 200 (an error answers 500: Pub/Sub delivers again)."""
        self.store.write(lambda tx: tx.ack(m))
