"""OTLP/HTTP metrics export (docs/operations.md#metrics-export-otlp): the same series as `GET /metrics`,
pushed to `observability.otlp_endpoint` so that a backend (Cloud Monitoring through an OpenTelemetry
Collector, or any OTLP receiver) sums them across instances and keeps them after an instance is gone.

Why a push and not a scrape: Cloud Functions instances come and go (scale to zero, scale out), and
nothing can scrape an instance it cannot address. Each instance pushes its own series, tagged with a
`service.instance.id` of its own, so two instances never overwrite each other and a query sums them.

Why cumulative temporality: the Prometheus registry already holds cumulative counts since the
instance started, and Cloud Monitoring's CUMULATIVE kind (and Managed Service for Prometheus, which
refuses deltas) wants exactly that: a monotone series with a start time. A lost export loses nothing
(the next one carries the total); a backend computes rates per instance and sums them. The one loss
is what an instance counted after its last export before it was shut down.

Why not the OpenTelemetry SDK: the metrics live in the Prometheus registry (shared/metrics.py);
re-recording every observation into an SDK would double the hot path's work. This module reads the
registry when it exports (as a scrape would) and encodes it with the `opentelemetry-proto` messages
(the `otel` extra). It is imported only when an endpoint is configured, and imports protobuf then:
the functions' cold start without export pays nothing.

When: a serverless instance gets CPU only while it serves a request, so a timer thread there may
never run. `maybe_export()` is called at the end of a request and exports (synchronously, one
POST with a short timeout) when `observability.otlp_interval` has passed since the last export;
an idle instance exports nothing (its totals are unchanged). The local server also runs a timer
thread (`start()`), and `stop()` exports a last time.
"""
from __future__ import annotations

import logging
import os
import threading
import time
from collections import defaultdict
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from shared.metrics import Metrics

log = logging.getLogger("resonate.otlp")

SERVICE_NAME = "resonate"
TIMEOUT_S = 5.0  # one export's POST; a slow collector delays one request per interval at most this long
# Cloud Run (and so Cloud Functions gen2) name the service and revision in the environment
_ENV_ATTRIBUTES = (("K_SERVICE", "faas.name"), ("K_REVISION", "faas.version"))


def metrics_url(endpoint: str) -> str | None:
    """`observability.otlp_endpoint` → the URL metrics are POSTed to, or None (export off).

    `http(s)://host:port[/base]` gets `/v1/metrics` appended (as OTEL_EXPORTER_OTLP_ENDPOINT does);
    the older `host:port` form (the reference's, no scheme) means `http://host:port`. Anything else
    raises ValueError (the config check turns it into a ConfigError naming the key)."""
    e = endpoint.strip()
    if not e:
        return None
    if "://" not in e:
        e = "http://" + e
    scheme, _, rest = e.partition("://")
    host = rest.split("/", 1)[0]
    if scheme.lower() not in ("http", "https") or not host or any(c.isspace() for c in e):
        raise ValueError(f"OTLP endpoint must be http(s)://host:port (OTLP/HTTP) or host:port, not {endpoint!r}")
    return e.rstrip("/") + "/v1/metrics"


def resource_attributes(instance_id: str | None = None) -> dict[str, str]:
    """What names this process in every export: a backend aggregates over `service.name` and
    tells instances apart by `service.instance.id` (random per process unless given)."""
    import uuid

    attrs = {"service.name": SERVICE_NAME, "service.instance.id": instance_id or uuid.uuid4().hex}
    for env, key in _ENV_ATTRIBUTES:
        if os.environ.get(env):
            attrs[key] = os.environ[env]
    return attrs


def describe(resource: Any, scope: Any, attributes: dict[str, str], common: Any) -> None:
    """Name this process on a ResourceMetrics/ResourceSpans message: its resource attributes
    and the instrumentation scope `resonate` (the same for the metrics and the traces)."""
    for k, v in attributes.items():
        resource.attributes.add(key=k, value=common.AnyValue(string_value=v))
    scope.name = "resonate"


class PeriodicExport:
    """When an OTLP export runs, shared by the metrics and the traces exports: `maybe_export()`
    at the end of a request once `_due()` (one caller at a time, the others go on), a timer
    thread where the process keeps its CPU (`start`), a last export at `stop`. Subclasses
    implement `_export_locked` (build the request and `_post` it)."""

    thread_name = "otlp-export"

    def __init__(self, url: str, interval_s: float) -> None:
        self.url = url
        self.interval_s = interval_s
        self.exports = 0  # successful POSTs (tests, /debug)
        self._last = time.monotonic()
        self._lock = threading.Lock()  # one export at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _due(self) -> bool:
        return time.monotonic() - self._last >= self.interval_s

    def _tick_s(self) -> float:
        """How long the timer thread sleeps between looks."""
        return max(self.interval_s, 0.05)

    def maybe_export(self) -> None:
        """At the end of a request (and on the timer): export when due. One caller pays at a time;
        the others go on (non-blocking lock)."""
        if not self._due() or not self._lock.acquire(blocking=False):
            return
        try:
            if self._due():
                self._export_locked()
        finally:
            self._lock.release()

    def export(self) -> bool:
        """Export now (shutdown, tests). False when the receiver refused or could not be reached."""
        with self._lock:
            return self._export_locked()

    def start(self) -> None:
        """A timer thread (processes that keep their CPU between requests: the local server)."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name=self.thread_name, daemon=True)
            self._thread.start()

    def stop(self, timeout_s: float = TIMEOUT_S) -> None:
        """Stop the thread and export what is left (the final totals, the last spans)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        self.export()

    def _loop(self) -> None:
        while not self._stop.wait(self._tick_s()):
            self.maybe_export()

    def _export_locked(self) -> bool:
        raise NotImplementedError

    def _post(self, body: bytes) -> None:
        """One POST of a serialized export request; raises when it did not go through."""
        import urllib.request  # imported after the first export's interval, never at a cold start

        req = urllib.request.Request(self.url, data=body, method="POST",
                                     headers={"Content-Type": "application/x-protobuf"})
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            resp.read()


class OtlpExporter(PeriodicExport):
    """Pushes one `Metrics` registry to an OTLP/HTTP receiver (protobuf)."""

    def __init__(self, metrics: Metrics, url: str, interval_s: float, instance_id: str | None = None) -> None:
        # protobuf classes: imported here, never at module import (see the module docstring)
        try:
            from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2
            from opentelemetry.proto.common.v1 import common_pb2
            from opentelemetry.proto.metrics.v1 import metrics_pb2
        except ImportError as e:
            raise RuntimeError("observability.otlp_endpoint is set but the `otel` extra is not installed: "
                               "pip install 'resonate-gcp[otel]' (opentelemetry-proto)") from e

        super().__init__(url, interval_s)
        self._svc, self._common, self._pb = metrics_service_pb2, common_pb2, metrics_pb2
        self.metrics = metrics
        self.attributes = resource_attributes(instance_id)
        self.start_ns = time.time_ns()  # the registry counts from (about) now: cumulative series' start

    def _export_locked(self) -> bool:
        self._last = time.monotonic()
        try:
            self._post(self.encode().SerializeToString())
        except Exception as e:  # the receiver down: the next export carries the totals
            log.warning("OTLP metrics export to %s failed: %s", self.url, e)
            return False
        self.exports += 1
        return True

    # ---- what ---------------------------------------------------------------------------------

    def encode(self) -> Any:
        """The registry now, as one ExportMetricsServiceRequest (cumulative, this process's resource)."""
        pb, common = self._pb, self._common
        now = time.time_ns()
        req = self._svc.ExportMetricsServiceRequest()
        rm = req.resource_metrics.add()
        sm = rm.scope_metrics.add()
        describe(rm.resource, sm.scope, self.attributes, common)
        for family in self.metrics.registry.collect():
            if family.type == "histogram":
                self._histogram(sm.metrics, family, now)
                continue
            if not family.samples:
                continue
            # a counter's samples are named <family>_total, as /metrics shows them: the same names here
            m = sm.metrics.add(name=family.samples[0].name, description=family.documentation)
            points = m.gauge.data_points
            if family.type == "counter":
                m.sum.aggregation_temporality = pb.AGGREGATION_TEMPORALITY_CUMULATIVE
                m.sum.is_monotonic = True
                points = m.sum.data_points
            for s in family.samples:
                pt = points.add(time_unix_nano=now, as_double=s.value)
                if family.type == "counter":
                    pt.start_time_unix_nano = self.start_ns
                self._labels(pt, s.labels)
        return req

    def _histogram(self, metrics: Any, family: Any, now: int) -> None:
        """Prometheus's cumulative `le` buckets → OTLP's per-bucket counts (+Inf last, implicit
        bound). A histogram no request has observed yet (no labelled child) is left out."""
        series: dict[tuple, dict[str, Any]] = defaultdict(lambda: {"buckets": []})
        for s in family.samples:
            key = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            if s.name.endswith("_bucket"):
                series[key]["buckets"].append((float(s.labels["le"]), s.value))
            elif s.name.endswith("_count"):
                series[key]["count"] = s.value
            elif s.name.endswith("_sum"):
                series[key]["sum"] = s.value
        if not series:
            return
        m = metrics.add(name=family.name, description=family.documentation,
                        unit="s" if family.name.endswith("_seconds") else "")
        m.histogram.aggregation_temporality = self._pb.AGGREGATION_TEMPORALITY_CUMULATIVE
        for key, d in series.items():
            bounds = sorted(d["buckets"])  # (le, cumulative count), +Inf last
            counts, prev = [], 0.0
            for _, c in bounds:
                counts.append(int(c - prev))
                prev = c
            pt = m.histogram.data_points.add(start_time_unix_nano=self.start_ns, time_unix_nano=now,
                                             count=int(d.get("count", prev)), sum=d.get("sum", 0.0),
                                             explicit_bounds=[le for le, _ in bounds[:-1]], bucket_counts=counts)
            self._labels(pt, dict(key))

    def _labels(self, pt: Any, labels: dict[str, str]) -> None:
        for k, v in sorted(labels.items()):
            pt.attributes.add(key=k, value=self._common.AnyValue(string_value=v))

