"""Prometheus metrics (docs/operations.md#metrics): the reference's five, plus dispatch latency, timer
lateness, outbox depth and open SSE streams.

Each Runtime owns one `Metrics` with its own registry (not the library's global one), so several
servers can live in one process (tests) and nothing else leaks into the exposition. The hot path
(one request) is a dict lookup, a counter increment and a histogram observation on cached
children; gauges that a query can answer (outbox depth, connections) are computed at scrape time
instead of being tracked on every change. The engine never imports this module: it reports what
it did through `Effects` and the shells turn that into observations.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest

from shared.kinds import KINDS
from shared.records import Effects, Message

if TYPE_CHECKING:
    from shared.delivery.hub import PollHub
    from shared.retention import Purged
    from shared.storage.base import Store

log = logging.getLogger("resonate.metrics")

# only the documented series: no `_created` timestamps next to every counter and histogram
prometheus_client.disable_created_metrics()

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"  # what generate_latest writes
REQUEST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)  # the reference's
# a message waits for its worker to connect, a failing push backs off: the tail reaches minutes
DISPATCH_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
# the local timer loop is late by milliseconds; a serverless sweeper by up to a tick when idle
LATENESS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
# commit times kept for messages not yet delivered (dropped unblocks are never delivered): the
# oldest are forgotten first, so memory stays bounded (~2 MB) and a long wait goes unobserved
MAX_TRACKED = 10_000


class Metrics:
    """One process's metrics; `store` and `hub` feed the scrape-time gauges."""

    def __init__(self, store: Store | None = None, hub: PollHub | None = None) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        r = self.registry
        self.requests = Counter("resonate_request_total", "RPC requests (POST /) by kind and status",
                                ["kind", "status"], registry=r)
        self.request_duration = Histogram("resonate_request_duration_seconds", "RPC request duration by kind",
                                          ["kind"], buckets=REQUEST_BUCKETS, registry=r)
        self.messages = Counter("resonate_messages_total",
                                "Outbox messages handed to a transport (each attempt)", ["kind"], registry=r)
        self.deliveries = Counter("resonate_deliveries_total", "HTTP push delivery outcomes", ["status"], registry=r)
        self.schedule_promises = Counter("resonate_schedule_promises_total",
                                         "Promises created by schedule firings", registry=r)
        self.dispatch_latency = Histogram(
            "resonate_dispatch_latency_seconds",
            "From the commit that queued a message to its delivery (SSE event written, push answered 2xx)",
            ["transport"], buckets=DISPATCH_BUCKETS, registry=r)
        self.timer_lateness = Histogram(
            "resonate_timer_lateness_seconds",
            "How late a due timer (promise timeout, task retry, lease expiry, schedule) was processed",
            ["timer"], buckets=LATENESS_BUCKETS, registry=r)
        self.retention_deleted = Counter("resonate_retention_deleted_total",
                                         "Promises deleted by retention (docs/operations.md#retention)", registry=r)
        if store is not None or hub is not None:
            r.register(_ScrapeTimeGauges(store, hub))
        # children are created up front: every series exists from the first scrape (the reference
        # increments `messages` by 0 for the same reason), and the hot path skips labels()
        self._msg = {k: self.messages.labels(k).inc for k in ("execute", "unblock")}
        self._delivery = {s: self.deliveries.labels(s).inc for s in ("success", "error", "dropped", "dead")}
        self._dispatch = {t: self.dispatch_latency.labels(t).observe for t in ("poll", "push", "gcps")}
        self._late = {t: self.timer_lateness.labels(t).observe for t in ("promise", "retry", "lease", "schedule")}
        self._req: dict[tuple[str, int], tuple[Callable[[], None], Callable[[float], None]]] = {}
        self._queued: dict[Message, float] = {}  # message -> monotonic time of its commit
        self._lock = threading.Lock()

    # ---- requests (Service.rpc) ---------------------------------------------------------------

    def request(self, kind: str, status: int, seconds: float) -> None:
        """One envelope that passed parsing. Unknown kinds share one label (they are client-chosen)."""
        pair = self._req.get((kind, status))
        if pair is None:
            pair = self._request_children(kind, status)
        inc, observe = pair
        inc()
        observe(seconds)

    def _request_children(self, kind: str, status: int) -> tuple[Callable[[], None], Callable[[float], None]]:
        label = KINDS[kind].metric_label if kind in KINDS else "unknown"
        pair = (self.requests.labels(label, str(status)).inc, self.request_duration.labels(label).observe)
        if label != "unknown":  # cache only the bounded set: arbitrary kinds must not grow the dict
            self._req[(kind, status)] = pair
        return pair

    # ---- commits (a Service effects hook, registered before delivery's) -----------------------

    def on_effects(self, fx: Effects) -> None:
        if fx.messages:
            now = time.monotonic()
            with self._lock:
                q = self._queued
                for m in fx.messages:
                    q.pop(m, None)  # re-queued: the newest commit counts, and it moves to the end
                    q[m] = now
                while len(q) > MAX_TRACKED:
                    del q[next(iter(q))]
        if fx.schedule_promises:
            self.schedule_promises.inc(fx.schedule_promises)

    def timers(self, due: Iterable[tuple[str, int]]) -> None:
        """Timers a background pass just committed: lateness against the wall clock now."""
        now_ms = time.time() * 1000
        late = self._late
        for timer, at in due:
            late[timer](max(0.0, now_ms - at) / 1000)

    def retention(self, done: Purged) -> None:
        """A retention run that deleted something."""
        self.retention_deleted.inc(done.promises)

    # ---- delivery ---------------------------------------------------------------------------

    def message(self, kind: str) -> None:
        """A message handed to a transport (SSE queue, HTTP push)."""
        self._msg[kind]()

    def delivered(self, m: Message, transport: str) -> None:
        """The transport confirmed m (SSE write, push 2xx). Messages committed by another process
        (or before a restart) have no commit time here and are not observed."""
        with self._lock:
            t = self._queued.pop(m, None)
        observe = self._dispatch.get(transport)  # bash runs are not deliveries
        if t is not None and observe is not None:
            observe(time.monotonic() - t)

    def push_result(self, status: str) -> None:
        """`success` | `error` | `dropped`; `dead`: a row given up after its last
        allowed attempt (transports.http_push.max_attempts), counted once beside that attempt's error."""
        self._delivery[status]()

    # ---- exposition -------------------------------------------------------------------------

    def exposition(self) -> bytes:
        return generate_latest(self.registry)

    def wsgi_app(self) -> Callable:
        """`GET /metrics` and nothing else (404), for a dedicated metrics listener."""

        def app(environ: dict[str, Any], start_response: Callable) -> list[bytes]:
            if environ.get("PATH_INFO") != "/metrics" or environ.get("REQUEST_METHOD") not in ("GET", "HEAD"):
                start_response("404 Not Found", [("Content-Type", "text/plain"), ("Content-Length", "0")])
                return []
            body = self.exposition()
            start_response("200 OK", [("Content-Type", CONTENT_TYPE), ("Content-Length", str(len(body)))])
            return [] if environ["REQUEST_METHOD"] == "HEAD" else [body]

        return app


class _ScrapeTimeGauges:
    """Outbox depth (one count query through the store's read path) and open SSE streams, read
    when scraped: nothing to keep in step on the hot path."""

    def __init__(self, store: Store | None, hub: PollHub | None) -> None:
        self.store = store
        self.hub = hub

    def collect(self) -> Iterator[Metric]:
        if self.store is not None:
            try:
                depth = self.store.read(lambda tx: tx.outbox_count())
            except Exception as e:  # a scrape during a database outage still shows the rest
                log.warning("outbox depth unavailable: %s", e)
            else:
                yield GaugeMetricFamily("resonate_outbox_depth", "Messages queued in the outbox", value=depth)
        if self.hub is not None:
            yield GaugeMetricFamily("resonate_poll_connections", "Open SSE (poll) connections in this process",
                                    value=self.hub.count)
