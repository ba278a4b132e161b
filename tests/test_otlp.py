"""The OTLP metrics export (shared/otlp.py, docs/operations.md#metrics-export-otlp): servers
configured with an endpoint push the same series as GET /metrics to a stand-in receiver that
decodes the protobuf; two instances are told apart and sum; unset, nothing is sent or imported."""
from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from shared.config import ConfigError, load
from shared.otlp import metrics_url
from tests.support import otlp_receiver
from tests.support.otlp_receiver import Receiver
from tests.support.server import start_server

ROOT = Path(__file__).resolve().parents[1]
VERSION = "2026-04-01"
CUMULATIVE = 2  # AGGREGATION_TEMPORALITY_CUMULATIVE


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec, srv = otlp_receiver.start()
    yield rec
    srv.shutdown()


def now_ms() -> int:
    return int(time.time() * 1000)


def test_endpoint_forms() -> None:
    assert metrics_url("") is None and metrics_url("  ") is None
    assert metrics_url("http://collector:4318") == "http://collector:4318/v1/metrics"
    assert metrics_url("https://otlp.example.com/base/") == "https://otlp.example.com/base/v1/metrics"
    assert metrics_url("localhost:4317") == "http://localhost:4317/v1/metrics"  # the reference's form
    for bad in ("ftp://x:1", "http://", "http://a b:1"):
        with pytest.raises(ValueError, match="OTLP endpoint"):
            metrics_url(bad)


def test_config_default_is_off_and_bad_endpoint_is_refused() -> None:
    assert load(env={}).observability.otlp_endpoint == ""
    with pytest.raises(ConfigError, match=r"observability\.otlp_endpoint from RESONATE_OBSERVABILITY__OTLP_END"):
        load(env={"RESONATE_OBSERVABILITY__OTLP_ENDPOINT": "grpc://collector:4317"})
    cfg = load(env={"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    assert cfg.observability.otlp_endpoint == "http://c:4318"


def _function(monkeypatch: pytest.MonkeyPatch, db: Path, endpoint: str | None, interval_ms: int = 0) -> object:
    """A fresh `api` function instance (functions-framework loads the module anew)."""
    import functions_framework

    monkeypatch.setenv("RESONATE_STORAGE__TYPE", "sqlite")
    monkeypatch.setenv("RESONATE_STORAGE__SQLITE__PATH", str(db))
    if endpoint is not None:
        monkeypatch.setenv("RESONATE_OBSERVABILITY__OTLP_ENDPOINT", endpoint)
        monkeypatch.setenv("RESONATE_OBSERVABILITY__OTLP_INTERVAL", str(interval_ms))  # 0: after every request
    app = functions_framework.create_app(target="api", source=str(ROOT / "functions" / "main.py"))
    return app.test_client()


def _rpc(c, kind: str, data: dict) -> int:  # type: ignore[no-untyped-def]
    r = c.post("/", json={"kind": kind, "head": {"corrId": "c", "version": VERSION}, "data": data})
    return int(r.status_code)


def created(e: otlp_receiver.Export) -> float:
    return e.points.get(("resonate_request_total", (("kind", "promise.create"), ("status", "200"))), 0.0)


def test_two_function_instances_export_distinguishable_series_that_sum(tmp_path, monkeypatch, receiver) -> None:
    a = _function(monkeypatch, tmp_path / "f.db", receiver.url)
    b = _function(monkeypatch, tmp_path / "f.db", receiver.url)
    far = now_ms() + 3_600_000
    assert _rpc(a, "promise.create", {"id": "p1", "timeoutAt": far}) == 200
    assert _rpc(a, "promise.create", {"id": "p2", "timeoutAt": far}) == 200
    assert _rpc(a, "promise.get", {"id": "missing"}) == 404
    assert _rpc(b, "promise.create", {"id": "p3", "timeoutAt": far}) == 200
    # the export happens within the request (a function may have no CPU after it): no waiting
    ids = receiver.instances()
    assert len(ids) == 2, ids
    latest = {i: receiver.latest(i) for i in ids}
    assert sorted(created(e) for e in latest.values()) == [1, 2]  # type: ignore[arg-type]
    assert sum(created(e) for e in latest.values()) == 3  # type: ignore[arg-type]
    for e in latest.values():
        assert e is not None
        assert e.resource["service.name"] == "resonate"
        assert e.temporality["resonate_request_total"] == CUMULATIVE
        assert e.temporality["resonate_request_duration_seconds"] == CUMULATIVE
        assert e.points[("resonate_outbox_depth", ())] == 0
        # the histogram counts what the counter counts, and the series /metrics has are all here
        n = sum(v for (name, labels), v in e.points.items()
                if name == "resonate_request_duration_seconds" and ("kind", "promise.create") in labels)
        assert n == created(e)
        assert ("resonate_messages_total", (("kind", "execute"),)) in e.points
    a_id = next(i for i, e in latest.items() if e is not None and created(e) == 2)
    a_last = receiver.latest(a_id)
    assert a_last is not None
    assert a_last.points[("resonate_request_total", (("kind", "promise.get"), ("status", "404")))] == 1
    assert set(receiver.paths) == {"/v1/metrics", "/v1/traces"}  # traces: tests/test_tracing.py


def test_export_waits_for_its_interval(tmp_path, monkeypatch, receiver) -> None:
    c = _function(monkeypatch, tmp_path / "f.db", receiver.url, interval_ms=3_600_000)
    for i in range(3):
        assert _rpc(c, "promise.create", {"id": f"i{i}", "timeoutAt": now_ms() + 60_000}) == 200
    assert receiver.exports == [], "an hour has not passed: nothing sent yet"


def test_unreachable_receiver_does_not_fail_requests(tmp_path, monkeypatch) -> None:
    from tests.support.server import free_port

    c = _function(monkeypatch, tmp_path / "f.db", f"http://127.0.0.1:{free_port()}")
    assert _rpc(c, "promise.create", {"id": "u", "timeoutAt": now_ms() + 60_000}) == 200
    assert _rpc(c, "promise.get", {"id": "u"}) == 200


def test_unset_endpoint_sends_and_imports_nothing(tmp_path) -> None:
    """A cold start without export never loads the exporter or opentelemetry (bench figure f)."""
    code = f"""
import json, os, sys, time
os.environ.update(RESONATE_STORAGE__TYPE="sqlite", RESONATE_STORAGE__SQLITE__PATH={str(tmp_path / 'c.db')!r})
os.environ.pop("RESONATE_OBSERVABILITY__OTLP_ENDPOINT", None); os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
import functions_framework
app = functions_framework.create_app(target="api", source={str(ROOT / 'functions' / 'main.py')!r})
r = app.test_client().post("/", json={{"kind": "promise.create", "head": {{"corrId": "c", "version": "{VERSION}"}},
                                       "data": {{"id": "p", "timeoutAt": int(time.time() * 1000) + 60000}}}})
print(json.dumps([r.status_code, sorted(m for m in sys.modules if m.startswith(("opentelemetry", "shared.otlp")))]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         check=True)
    status, loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert status == 200
    assert loaded == []


def _local(tmp_path: Path, receiver: Receiver, interval_ms: int):  # type: ignore[no-untyped-def]
    return start_server("sqlite", tmp_path, debug=False,
                        args=["--observability-otlp-endpoint", receiver.url,
                              "--observability-otlp-interval", str(interval_ms), "--observability-metrics-port", "0"])


@pytest.mark.process  # a server process
def test_local_server_exports_on_its_timer(tmp_path, receiver) -> None:
    srv = _local(tmp_path, receiver, 200)
    try:
        far = now_ms() + 3_600_000
        for i in range(3):
            assert srv.rpc("promise.create", {"id": f"l{i}", "timeoutAt": far})[0] == 200
        receiver.wait(lambda: any(created(e) == 3 for e in list(receiver.exports)))
        (instance,) = receiver.instances()
        assert receiver.latest(instance).resource["service.name"] == "resonate"  # type: ignore[union-attr]
    finally:
        srv.stop()


@pytest.mark.process  # a server process
def test_local_server_exports_its_totals_when_it_stops(tmp_path, receiver) -> None:
    srv = _local(tmp_path, receiver, 3_600_000)  # the timer never fires within the test
    try:
        for i in range(2):
            assert srv.rpc("promise.create", {"id": f"s{i}", "timeoutAt": now_ms() + 3_600_000})[0] == 200
    finally:
        srv.stop()
    assert len(receiver.exports) == 1, "one export: the final one"
    assert created(receiver.exports[0]) == 2


def test_encoding_matches_the_prometheus_registry() -> None:
    """Same names and labels as GET /metrics; histogram buckets per bucket (not cumulative) with
    the registry's bounds; a histogram nothing observed yet is left out; counters carry a start."""
    from prometheus_client.parser import text_string_to_metric_families

    from shared.metrics import REQUEST_BUCKETS, Metrics
    from shared.otlp import OtlpExporter

    m = Metrics()
    exporter = OtlpExporter(m, "http://127.0.0.1:9/v1/metrics", 60, instance_id="i-1")
    (e,) = otlp_receiver.decode(exporter.encode().SerializeToString())
    assert "resonate_request_duration_seconds" not in {n for n, _ in e.points}, "no request yet: no histogram"
    m.request("promise.create", 200, 0.003)
    m.request("promise.create", 200, 0.2)
    m.request("promise.get", 404, 0.001)
    (e,) = otlp_receiver.decode(exporter.encode().SerializeToString())
    assert e.resource["service.instance.id"] == "i-1"
    metric = {x.name: x for x in e.raw.scope_metrics[0].metrics}
    (create,) = [p for p in metric["resonate_request_duration_seconds"].histogram.data_points
                 if p.attributes[0].value.string_value == "promise.create"]
    assert list(create.explicit_bounds) == list(REQUEST_BUCKETS)
    assert create.bucket_counts[0] == 1 and create.bucket_counts[REQUEST_BUCKETS.index(0.25)] == 1
    assert create.count == 2 and create.sum == pytest.approx(0.203)
    assert metric["resonate_request_duration_seconds"].unit == "s"
    total = metric["resonate_request_total"].sum
    assert total.is_monotonic and all(p.start_time_unix_nano == exporter.start_ns for p in total.data_points)
    # every series of the exposition, by name and labels, with its value (histograms: their count)
    expected = {}
    for fam in text_string_to_metric_families(m.exposition().decode()):
        for s in fam.samples:
            if s.name.endswith(("_bucket", "_sum")):
                continue
            name = s.name.removesuffix("_count") if fam.type == "histogram" else s.name
            expected[(name, tuple(sorted(s.labels.items())))] = s.value
    assert e.points == expected
