"""A stand-in OTLP/HTTP receiver (what a Collector's otlphttp receiver accepts): POST /v1/metrics
with a protobuf ExportMetricsServiceRequest and POST /v1/traces with an ExportTraceServiceRequest,
decoded with opentelemetry-proto's own classes, so a test reads what an instance really sent, not
what it meant to send."""
from __future__ import annotations

import http.server
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


@dataclass
class Export:
    resource: dict[str, str]
    # (metric name, sorted attribute pairs) -> value (sum/gauge: the number; histogram: its count)
    points: dict[tuple[str, tuple[tuple[str, str], ...]], float]
    temporality: dict[str, int]  # metric name -> aggregation temporality (sums and histograms)
    raw: Any


def _attrs(kvs: Any) -> dict[str, str]:
    return {kv.key: kv.value.string_value for kv in kvs}


def decode(body: bytes) -> list[Export]:
    req = metrics_service_pb2.ExportMetricsServiceRequest()
    req.ParseFromString(body)
    out = []
    for rm in req.resource_metrics:
        points: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        temporality: dict[str, int] = {}
        for sm in rm.scope_metrics:
            for m in sm.metrics:
                kind = m.WhichOneof("data")
                data = getattr(m, kind)
                if kind in ("sum", "histogram"):
                    temporality[m.name] = data.aggregation_temporality
                for p in data.data_points:
                    key = (m.name, tuple(sorted(_attrs(p.attributes).items())))
                    if kind == "histogram":
                        assert sum(p.bucket_counts) == p.count, "bucket counts add up to the count"
                        assert len(p.bucket_counts) == len(p.explicit_bounds) + 1
                        points[key] = p.count
                    else:
                        points[key] = p.as_double if p.HasField("as_double") else p.as_int
        out.append(Export(_attrs(rm.resource.attributes), points, temporality, rm))
    return out


@dataclass
class SpanRecord:
    """One exported span, ids in hex (as a traceparent writes them)."""

    resource: dict[str, str]
    trace_id: str
    span_id: str
    parent_id: str
    trace_state: str
    name: str
    kind: int
    start_ns: int
    end_ns: int
    flags: int
    attributes: dict[str, Any]
    status_code: int
    status_message: str


def _value(v: Any) -> Any:
    return getattr(v, v.WhichOneof("value")) if v.WhichOneof("value") else None


def decode_traces(body: bytes) -> list[SpanRecord]:
    req = trace_service_pb2.ExportTraceServiceRequest()
    req.ParseFromString(body)
    out = []
    for rs in req.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for sp in ss.spans:
                out.append(SpanRecord(resource, sp.trace_id.hex(), sp.span_id.hex(), sp.parent_span_id.hex(),
                                      sp.trace_state, sp.name, sp.kind, sp.start_time_unix_nano,
                                      sp.end_time_unix_nano, sp.flags, {kv.key: _value(kv.value) for kv in sp.attributes},
                                      sp.status.code, sp.status.message))
    return out


@dataclass
class Receiver:
    url: str
    exports: list[Export] = field(default_factory=list)
    spans: list[SpanRecord] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def latest(self, instance: str) -> Export | None:
        with self.lock:
            found = [e for e in self.exports if e.resource.get("service.instance.id") == instance]
        return found[-1] if found else None

    def instances(self) -> set[str]:
        with self.lock:
            return {e.resource["service.instance.id"] for e in self.exports}

    def wait(self, cond: Any, timeout: float = 15.0) -> None:
        end = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > end:
                raise AssertionError(f"receiver: condition not met in {timeout}s; got {len(self.exports)} exports")
            time.sleep(0.05)


def start() -> tuple[Receiver, http.server.ThreadingHTTPServer]:
    holder: dict[str, Receiver] = {}

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            rec = holder["r"]
            with rec.lock:
                rec.paths.append(self.path)
            if self.path not in ("/v1/metrics", "/v1/traces") \
                    or self.headers.get("Content-Type") != "application/x-protobuf":
                self.send_response(404)
                self.end_headers()
                return
            if self.path == "/v1/traces":
                spans = decode_traces(body)
                with rec.lock:
                    rec.spans.extend(spans)
            else:
                exports = decode(body)
                with rec.lock:
                    rec.exports.extend(exports)
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = Receiver(f"http://127.0.0.1:{srv.server_address[1]}")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return holder["r"], srv
