"""Distributed traces over OTLP/HTTP (docs/operations.md#traces): request → commit → delivery.

What: one SERVER span per `POST /`, `POST /operator` or `POST /ui/api` request, named after its kind (attributes
`resonate.kind`, `resonate.corr_id`, `resonate.status`), parented on the caller's W3C
`traceparent` when it sent one (its `tracestate` passed on), else the root of a new trace; a
"commit" child for the request's store transaction (its duration); a "deliver" span per message
that commit produced, ended when its transport took it (or failed). An HTTP push carries a
`traceparent` naming its deliver span, so the worker's own spans join the same trace.

Why not the OpenTelemetry SDK: it would load on every cold start and put its context machinery
on every request. Here a span is a small object, the "current" one a `ContextVar` (per thread
and per greenlet), and the `opentelemetry-proto` messages are built only at export, as the
metrics export does (shared/otlp.py, same endpoint, same resource attributes). This module is
imported only when `observability.otlp_endpoint` is set and `trace_sample_ratio` is above 0:
without it the request path only tests `tracer is None` where a span could start (the request,
its commit, each message sent) and does nothing else.

Sampling is decided once, at the server span (parent-based): a sampled incoming `traceparent` is
always recorded, an unsampled one never; without one, `trace_sample_ratio` of new traces are.
An unsampled request has no current span, so its commit and deliveries record nothing either.

Export: finished spans wait in a bounded buffer (the oldest dropped when it is full, counted in
`dropped`) and are POSTed as one `ExportTraceServiceRequest` to `<endpoint>/v1/traces` on the
metrics export's cadence: a timer thread locally, `maybe_export()` at the end of a function's
request (every `otlp_interval`, or sooner once `BATCH` spans wait), a last flush at `stop()`.
A failed POST loses its spans (counted in `lost`): traces are samples, not totals.

Gaps: rows sent later by a re-drive (a retry after a failed push, a worker connecting after the
commit, the sweeper) have no current span and are not traced; the REST and gRPC APIs are not
traced; operator kinds that run in many transactions of their own get no commit span.
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections import deque
from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING, Any, TypeVar

from shared.otlp import PeriodicExport, describe

if TYPE_CHECKING:
    from shared.delivery.messages import OutboxRow

log = logging.getLogger("resonate.tracing")

R = TypeVar("R")

MAX_SPANS = 8192  # the buffer between exports; beyond it the oldest spans are dropped
BATCH = 512  # this many waiting spans export at once, whatever the interval
# opentelemetry.proto.trace.v1.Span.SpanKind and Status.StatusCode (no proto import on the hot path)
INTERNAL, SERVER, CLIENT, PRODUCER = 1, 2, 3, 4
STATUS_ERROR = 2
_SAMPLED = 0x01  # W3C trace-flags
_HAS_IS_REMOTE, _IS_REMOTE = 0x100, 0x200  # OTLP SpanFlags: the parent span lives in another process

Attr = str | int | bool


class Span:
    """One span, open until `end_ns` is set. Ids are bytes (as OTLP encodes them)."""

    __slots__ = ("attributes", "end_ns", "error", "kind", "name", "parent_id", "remote_parent", "span_id",
                 "start_ns", "token", "trace_id", "tracestate")

    def __init__(self, trace_id: bytes, parent_id: bytes, tracestate: str, name: str, kind: int,
                 remote_parent: bool = False) -> None:
        self.trace_id = trace_id
        self.span_id = new_id(8)
        self.parent_id = parent_id
        self.tracestate = tracestate
        self.name = name
        self.kind = kind
        self.remote_parent = remote_parent
        self.start_ns = time.time_ns()
        self.end_ns = 0
        self.attributes: dict[str, Attr] = {}
        self.error = ""  # non-empty: the span failed, and why
        self.token: Token[Span | None] | None = None  # a server span: the context it replaced

    def child(self, name: str, kind: int = INTERNAL) -> Span:
        return Span(self.trace_id, self.span_id, self.tracestate, name, kind)

    def headers(self) -> dict[str, str]:
        """W3C trace-context headers naming this span as the parent (an outgoing request)."""
        out = {"traceparent": f"00-{self.trace_id.hex()}-{self.span_id.hex()}-01"}
        if self.tracestate:
            out["tracestate"] = self.tracestate
        return out

    def request(self, kind: str, corr_id: str) -> None:
        """What the envelope said (set by the service once it parsed)."""
        self.name = kind
        self.attributes["resonate.kind"] = kind
        self.attributes["resonate.corr_id"] = corr_id


def new_id(size: int) -> bytes:
    """A random trace (16 bytes) or span (8 bytes) id; never all zeros (W3C: invalid)."""
    while True:
        n = random.getrandbits(size * 8)
        if n:
            return n.to_bytes(size, "big")


# the span whose children the code running now creates: the server span, then its commit
_CURRENT: ContextVar[Span | None] = ContextVar("resonate_span", default=None)


def parse_traceparent(value: str | None) -> tuple[bytes, bytes, bool] | None:
    """`00-<trace id>-<parent id>-<flags>` → (trace id, parent id, sampled); None if absent or
    invalid (W3C: version ff, all-zero ids, a version-00 header with extra fields)."""
    if not value:
        return None
    parts = value.strip().split("-")
    if len(parts) < 4:
        return None
    version, trace, parent, flags = parts[:4]
    if len(version) != 2 or version.lower() == "ff" or len(trace) != 32 or len(parent) != 16 or len(flags) != 2:
        return None
    if version == "00" and len(parts) != 4:
        return None
    try:
        int(version, 16)
        tid, pid, bits = bytes.fromhex(trace), bytes.fromhex(parent), int(flags, 16)
    except ValueError:
        return None
    if not any(tid) or not any(pid):
        return None
    return tid, pid, bool(bits & _SAMPLED)


def _without_userinfo(url: str) -> str:
    """An http(s) address as a span shows it: credentials in the URL (`user:pass@`) left out."""
    scheme, sep, rest = url.partition("://")
    authority, slash, path = rest.partition("/")
    if not sep or "@" not in authority:
        return url
    return f"{scheme}://{authority.rpartition('@')[2]}{slash}{path}"


def traces_url(endpoint: str) -> str | None:
    """`observability.otlp_endpoint` → where spans are POSTed (`<endpoint>/v1/traces`)."""
    from shared.otlp import metrics_url

    url = metrics_url(endpoint)
    return None if url is None else url.removesuffix("/v1/metrics") + "/v1/traces"


class Tracer(PeriodicExport):
    """Records sampled spans and exports them to one OTLP/HTTP receiver (protobuf), on the
    metrics export's cadence (`PeriodicExport`), sooner once a batch waits."""

    thread_name = "otlp-traces"

    def __init__(self, url: str, ratio: float, interval_s: float, attributes: dict[str, str],
                 max_spans: int = MAX_SPANS) -> None:
        try:  # imported here, never at module import: the protobuf classes are for the export only
            from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
            from opentelemetry.proto.common.v1 import common_pb2
        except ImportError as e:
            raise RuntimeError("observability.otlp_endpoint is set but the `otel` extra is not installed: "
                               "pip install 'resonate-gcp[otel]' (opentelemetry-proto)") from e
        super().__init__(url, interval_s)
        self._svc, self._common = trace_service_pb2, common_pb2
        self.ratio = ratio
        self.attributes = attributes
        self.max_spans = max_spans
        self._spans: deque[Span] = deque()
        self._spans_lock = threading.Lock()
        self.dropped = 0  # spans dropped from a full buffer (the oldest first)
        self.lost = 0  # spans of exports the receiver refused or never got

    # ---- spans ----------------------------------------------------------------------------------

    def begin(self, trace: tuple[str | None, str | None] | None, path: str = "/") -> Span | None:
        """A request's server span, made current; None when this request is not sampled.
        `trace`: its (`traceparent`, `tracestate`) headers, if the shell read any; `path`: the
        route the envelope came in on."""
        parent = parse_traceparent(trace[0]) if trace is not None else None
        if parent is not None:
            if not parent[2]:  # the caller decided: not recorded
                return None
            span = Span(parent[0], parent[1], (trace[1] or "").strip() if trace is not None else "",
                        f"POST {path}", SERVER, remote_parent=True)
        else:
            if self.ratio < 1.0 and random.random() >= self.ratio:
                return None
            span = Span(new_id(16), b"", "", f"POST {path}", SERVER)
        span.attributes["url.path"] = path
        span.token = _CURRENT.set(span)
        return span

    def finish(self, span: Span, status: int) -> None:
        """The request answered `status`: end its span, and the context it set (commit included)."""
        if span.token is not None:
            _CURRENT.reset(span.token)
        span.attributes["resonate.status"] = status  # the envelope's status, which is the HTTP status too
        if status >= 500:
            span.error = f"status {status}"
        self._end(span)

    def commit(self, write: Callable[[Callable[[Any], R]], R], run: Callable[[Any], R]) -> R:
        """`write(run)` (the request's store transaction) as a "commit" child of the current span;
        the messages it produced are delivered under it (it stays current until the request ends)."""
        parent = _CURRENT.get()
        if parent is None:
            return write(run)
        span = parent.child("commit")
        try:
            result = write(run)
        except BaseException as e:
            span.error = type(e).__name__
            self._end(span)
            raise
        self._end(span)
        _CURRENT.set(span)  # reset with the server span's token at `finish`
        return result

    def deliver(self, row: OutboxRow) -> Span | None:
        """A "deliver" span for one message sent under the current span (None: none is current)."""
        parent = _CURRENT.get()
        if parent is None:
            return None
        m = row.message
        span = parent.child("deliver", CLIENT if row.is_http else PRODUCER)
        span.attributes["resonate.message.kind"] = m.kind
        span.attributes["resonate.message.id"] = m.id
        span.attributes["resonate.address"] = _without_userinfo(m.address) if row.is_http else m.address
        return span

    def delivered(self, span: Span, ok: bool, transport: str) -> None:
        """The transport's answer (`Sender`'s done callback): the deliver span ends."""
        span.attributes["resonate.transport"] = transport
        span.attributes["resonate.delivered"] = ok
        if not ok:
            span.error = f"{transport} delivery failed"
        self._end(span)

    def undelivered(self, span: Span, outcome: str) -> None:
        """Not handed to a transport now (no receiver connected, or never deliverable here)."""
        span.attributes["resonate.delivered"] = False
        span.attributes["resonate.outcome"] = outcome
        self._end(span)

    def propagation(self) -> dict[str, str]:
        """The current span as W3C headers (a Pub/Sub message's attributes), or {}."""
        span = _CURRENT.get()
        return {} if span is None else span.headers()

    def adopt(self, traceparent: str | None, tracestate: str | None) -> Token[Span | None] | None:
        """Continue a trace another process started (the `dispatch` function, from the Pub/Sub
        message's attributes): its span becomes the current parent; None when there is none or
        it was not sampled. Give the token back to `release`."""
        parent = parse_traceparent(traceparent)
        if parent is None or not parent[2]:
            return None
        remote = Span(parent[0], b"", (tracestate or "").strip(), "remote", INTERNAL)
        remote.span_id = parent[1]
        return _CURRENT.set(remote)

    def release(self, token: Token[Span | None]) -> None:
        _CURRENT.reset(token)

    def _end(self, span: Span) -> None:
        span.end_ns = time.time_ns()
        with self._spans_lock:
            if len(self._spans) >= self.max_spans:
                self._spans.popleft()
                self.dropped += 1
            self._spans.append(span)

    def pending(self) -> int:
        return len(self._spans)

    # ---- when -----------------------------------------------------------------------------------

    def _due(self) -> bool:
        """Spans wait, and the interval has passed or a batch is full."""
        return bool(self._spans) and (len(self._spans) >= BATCH or super()._due())

    def _tick_s(self) -> float:
        return min(super()._tick_s(), 1.0)  # a full batch goes within a second

    def _export_locked(self) -> bool:
        self._last = time.monotonic()
        with self._spans_lock:
            spans, self._spans = list(self._spans), deque()
            dropped, self.dropped = self.dropped, 0
        if dropped:
            log.warning("Trace spans dropped: the buffer of %d was full (the export interval is too long for "
                        "this traffic, or the receiver is down) dropped=%d", self.max_spans, dropped)
        if not spans:
            return True
        try:
            self._post(self.encode(spans).SerializeToString())
        except Exception as e:  # the receiver down: these spans are lost (traces are samples)
            self.lost += len(spans)
            log.warning("OTLP trace export to %s failed, %d spans lost: %s", self.url, len(spans), e)
            return False
        self.exports += 1
        return True

    # ---- what -----------------------------------------------------------------------------------

    def encode(self, spans: list[Span]) -> Any:
        """These spans as one ExportTraceServiceRequest under this process's resource."""
        req = self._svc.ExportTraceServiceRequest()
        rs = req.resource_spans.add()
        ss = rs.scope_spans.add()
        describe(rs.resource, ss.scope, self.attributes, self._common)
        add = ss.spans.add
        for s in spans:
            # fields set in place, never through temporary messages: about twice as fast (upb)
            flags = _SAMPLED | _HAS_IS_REMOTE | (_IS_REMOTE if s.remote_parent else 0)
            p = add(trace_id=s.trace_id, span_id=s.span_id, name=s.name, kind=s.kind, flags=flags,
                    start_time_unix_nano=s.start_ns, end_time_unix_nano=s.end_ns)
            if s.parent_id:
                p.parent_span_id = s.parent_id
            if s.tracestate:
                p.trace_state = s.tracestate
            attr_add = p.attributes.add
            for name, attr in s.attributes.items():
                value = attr_add(key=name).value
                if attr is True or attr is False:
                    value.bool_value = attr
                elif isinstance(attr, int):
                    value.int_value = attr
                else:
                    value.string_value = attr
            if s.error:
                p.status.code = STATUS_ERROR
                p.status.message = s.error
        return req
