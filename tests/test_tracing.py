"""Traces (shared/tracing.py, docs/operations.md#traces): a server span per request, parented on
the caller's W3C traceparent, a commit child, a deliver span per pushed message whose push carries
a traceparent naming it; exported over OTLP/HTTP to a stand-in collector that decodes the protobuf
with opentelemetry-proto's own classes. Unsampled callers and ratio 0 record nothing; without an
endpoint no tracer exists at all."""
from __future__ import annotations

import base64
import http.server
import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import requests

from shared.config import ConfigError, load
from shared.delivery.messages import OutboxRow
from shared.records import Message
from shared.tracing import (
    CLIENT,
    INTERNAL,
    PRODUCER,
    SERVER,
    Tracer,
    _without_userinfo,
    parse_traceparent,
    traces_url,
)
from tests.support import otlp_receiver
from tests.support.otlp_receiver import Receiver, SpanRecord
from tests.support.server import ServerProc, start_server

ROOT = Path(__file__).resolve().parents[1]
VERSION = "2026-04-01"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"


@dataclass
class Worker:
    """A worker's HTTP endpoint: records each push's headers and answers 200."""

    url: str
    pushes: list[dict[str, str]] = field(default_factory=list)

    def wait(self, n: int = 1, timeout: float = 15.0) -> list[dict[str, str]]:
        end = time.monotonic() + timeout
        while len(self.pushes) < n:
            assert time.monotonic() < end, f"the worker got {len(self.pushes)} pushes, not {n}"
            time.sleep(0.02)
        return self.pushes


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    rec, srv = otlp_receiver.start()
    yield rec
    srv.shutdown()


@pytest.fixture
def worker() -> Iterator[Worker]:
    holder: dict[str, Worker] = {}

    class H(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            holder["w"].pushes.append({k.lower(): v for k, v in self.headers.items()})
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    holder["w"] = Worker(f"http://127.0.0.1:{srv.server_address[1]}/worker")
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield holder["w"]
    srv.shutdown()


def envelope(kind: str, data: dict[str, Any], corr: str = "c1") -> dict[str, Any]:
    return {"kind": kind, "head": {"corrId": corr, "version": VERSION}, "data": data}


def create(id: str, target: str | None = None) -> dict[str, Any]:
    tags = {"resonate:target": target} if target else {}
    return envelope("promise.create", {"id": id, "timeoutAt": int(time.time() * 1000) + 3_600_000, "tags": tags},
                    corr=f"corr-{id}")


def in_trace(rec: Receiver, trace: str) -> dict[str, SpanRecord]:
    with rec.lock:
        return {s.name: s for s in rec.spans if s.trace_id == trace}


def wait_spans(rec: Receiver, trace: str, names: set[str]) -> dict[str, SpanRecord]:
    rec.wait(lambda: names <= set(in_trace(rec, trace)))
    return in_trace(rec, trace)


# ---- units --------------------------------------------------------------------------------------

def test_traceparent_forms() -> None:
    tid, pid = bytes.fromhex(TRACE), bytes.fromhex(PARENT)
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-01") == (tid, pid, True)
    assert parse_traceparent(f"00-{TRACE}-{PARENT}-00") == (tid, pid, False)
    assert parse_traceparent(f" 00-{TRACE}-{PARENT}-03 ") == (tid, pid, True)
    assert parse_traceparent(f"01-{TRACE}-{PARENT}-01-future") == (tid, pid, True)  # a later version's extra field
    for bad in (None, "", "garbage", f"ff-{TRACE}-{PARENT}-01", f"00-{'0' * 32}-{PARENT}-01",
                f"00-{TRACE}-{'0' * 16}-01", f"00-{TRACE}-{PARENT}-01-extra", f"00-{TRACE[:-1]}x-{PARENT}-01",
                f"00-{TRACE}-{PARENT}-1"):
        assert parse_traceparent(bad) is None, bad
    assert _without_userinfo("https://u:secret@w.example/p?q=1") == "https://w.example/p?q=1"
    assert _without_userinfo("http://w.example:80/a@b") == "http://w.example:80/a@b"
    assert traces_url("localhost:4318") == "http://localhost:4318/v1/traces"
    assert traces_url("https://otlp.example.com/base/") == "https://otlp.example.com/base/v1/traces"


def test_sample_ratio_config() -> None:
    assert load(env={}).observability.trace_sample_ratio == 1.0
    env = {"RESONATE_OBSERVABILITY__TRACE_SAMPLE_RATIO": "0.25"}
    assert load(env=env).observability.trace_sample_ratio == 0.25
    for bad in ("1.5", "-0.1", "nan", "often"):
        with pytest.raises(ConfigError, match=r"observability\.trace_sample_ratio from RESONATE_OBSERVABILITY__TRACE"):
            load(env={"RESONATE_OBSERVABILITY__TRACE_SAMPLE_RATIO": bad})


def test_full_buffer_drops_the_oldest_and_counts() -> None:
    tracer = Tracer("http://127.0.0.1:9/v1/traces", 1.0, 60, {"service.name": "resonate"}, max_spans=3)
    for i in range(5):
        span = tracer.begin(None)
        assert span is not None
        span.request(f"k{i}", "c")
        tracer.finish(span, 200)
    assert tracer.pending() == 3 and tracer.dropped == 2
    spans = otlp_receiver.decode_traces(tracer.encode(list(tracer._spans)).SerializeToString())
    assert [s.name for s in spans] == ["k2", "k3", "k4"]


def test_ratio_samples_new_traces_only() -> None:
    tracer = Tracer("http://127.0.0.1:9/v1/traces", 0.5, 60, {})
    sampled = 0
    for _ in range(400):
        span = tracer.begin(None)
        if span is not None:
            sampled += 1
            tracer.finish(span, 200)
    assert 100 < sampled < 300
    # the caller's decision wins either way
    for _ in range(50):
        assert tracer.begin((f"00-{TRACE}-{PARENT}-00", None)) is None
        span = tracer.begin((f"00-{TRACE}-{PARENT}-01", None))
        assert span is not None
        tracer.finish(span, 200)
    assert tracer.propagation() == {}, "every request's context ended with it"


# ---- no tracer ----------------------------------------------------------------------------------

def test_no_endpoint_builds_no_tracer(tmp_path: Path) -> None:
    from shared.runtime import Runtime

    rt = Runtime(load(env={"RESONATE_STORAGE__TYPE": "memory"}), background=False)
    try:
        assert rt.tracer is None and rt.service.tracer is None and rt.sender.tracer is None
    finally:
        rt.stop()
    # ... and a function's request without an endpoint never imports the module
    code = f"""
import json, os, sys, time
os.environ.update(RESONATE_STORAGE__TYPE="sqlite", RESONATE_STORAGE__SQLITE__PATH={str(tmp_path / 'c.db')!r})
os.environ.pop("RESONATE_OBSERVABILITY__OTLP_ENDPOINT", None); os.environ.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
import functions_framework
app = functions_framework.create_app(target="api", source={str(ROOT / 'functions' / 'main.py')!r})
r = app.test_client().post("/", json={json.dumps(create("p"))},
                           headers={{"traceparent": "00-{TRACE}-{PARENT}-01"}})
print(json.dumps([r.status_code, "shared.tracing" in sys.modules]))
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT,
                         check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [200, False]


def test_ratio_zero_records_nothing(receiver: Receiver, worker: Worker) -> None:
    from shared.runtime import Runtime

    cfg = load(env={"RESONATE_STORAGE__TYPE": "memory", "RESONATE_OBSERVABILITY__OTLP_ENDPOINT": receiver.url,
                    "RESONATE_OBSERVABILITY__TRACE_SAMPLE_RATIO": "0"})
    rt = Runtime(cfg, background=False)
    rt.delivery.start()
    try:
        assert rt.tracer is None and rt.exporter is not None  # metrics still exported
        status, _ = rt.service.rpc(json.dumps(create("z", worker.url)).encode(),
                                   trace=(f"00-{TRACE}-{PARENT}-01", None))
        assert status == 200
        worker.wait()
        assert "traceparent" not in worker.pushes[0]
    finally:
        rt.stop()
    assert receiver.exports, "the metrics export still ran"
    assert receiver.spans == [] and "/v1/traces" not in receiver.paths


# ---- over real HTTP: the local server -----------------------------------------------------------

@pytest.fixture
def traced_server(tmp_path: Path, receiver: Receiver) -> Iterator[ServerProc]:
    srv = start_server("memory", tmp_path, debug=False,
                       args=["--observability-otlp-endpoint", receiver.url, "--observability-otlp-interval", "100"])
    yield srv
    srv.stop()


def post(srv: ServerProc, body: dict[str, Any], path: str = "/", **headers: str) -> requests.Response:
    return requests.post(srv.url + path, json=body, headers=headers, timeout=30)


@pytest.mark.process  # a server process
def test_request_commit_and_push_share_the_callers_trace(traced_server: ServerProc, receiver: Receiver,
                                                         worker: Worker) -> None:
    r = post(traced_server, create("traced", worker.url), traceparent=f"00-{TRACE}-{PARENT}-01",
             tracestate="vendor=opaque")
    assert r.status_code == 200
    spans = wait_spans(receiver, TRACE, {"promise.create", "commit", "deliver"})
    server, commit, deliver = spans["promise.create"], spans["commit"], spans["deliver"]
    assert server.kind == SERVER and server.parent_id == PARENT
    assert server.attributes["resonate.kind"] == "promise.create"
    assert server.attributes["resonate.corr_id"] == "corr-traced"
    assert server.attributes["resonate.status"] == 200
    assert server.trace_state == "vendor=opaque" and server.flags & 0x300 == 0x300  # a remote parent
    assert server.resource["service.name"] == "resonate" and server.resource["service.instance.id"]
    assert commit.kind == INTERNAL and commit.parent_id == server.span_id
    assert server.start_ns <= commit.start_ns <= commit.end_ns <= server.end_ns
    assert deliver.kind == CLIENT and deliver.parent_id == commit.span_id
    assert deliver.attributes["resonate.message.kind"] == "execute"
    assert deliver.attributes["resonate.address"] == worker.url
    assert deliver.attributes["resonate.transport"] == "push" and deliver.attributes["resonate.delivered"] is True
    assert deliver.status_code == 0
    # the worker continues the trace: its parent is the deliver span
    (push,) = worker.wait()
    assert push["traceparent"] == f"00-{TRACE}-{deliver.span_id}-01"
    assert push["tracestate"] == "vendor=opaque"


@pytest.mark.process  # a server process
def test_sse_write_is_a_deliver_span_and_a_queued_message_says_so(traced_server: ServerProc,
                                                                  receiver: Receiver) -> None:
    from tests.support.sse import SSE

    stream = SSE(traced_server.url + "/poll/g-traced/w1")
    try:
        assert stream.status == 200
        trace = "cc" * 16
        assert post(traced_server, create("sse", "poll://any@g-traced"),
                    traceparent=f"00-{trace}-{PARENT}-01").status_code == 200
        assert stream.next()["kind"] == "execute"
        spans = wait_spans(receiver, trace, {"commit", "deliver"})
        deliver = spans["deliver"]
        assert deliver.kind == PRODUCER and deliver.parent_id == spans["commit"].span_id
        assert deliver.attributes["resonate.transport"] == "poll" and deliver.attributes["resonate.delivered"] is True
    finally:
        stream.close()
    # nobody listens to this group: the execute waits in the outbox, and its span says why
    trace = "dd" * 16
    assert post(traced_server, create("queued", "poll://any@g-nobody"),
                traceparent=f"00-{trace}-{PARENT}-01").status_code == 200
    deliver = wait_spans(receiver, trace, {"deliver"})["deliver"]
    assert deliver.attributes["resonate.outcome"] == "no receiver" and deliver.attributes["resonate.delivered"] is False


@pytest.mark.process  # a server process
def test_untraced_request_starts_a_new_trace_and_unsampled_records_nothing(traced_server: ServerProc,
                                                                             receiver: Receiver) -> None:
    unsampled = "aa" * 16
    assert post(traced_server, create("dark"), traceparent=f"00-{unsampled}-{PARENT}-00").status_code == 200
    assert post(traced_server, create("fresh")).status_code == 200  # no header: the fast path
    receiver.wait(lambda: any(s.attributes.get("resonate.corr_id") == "corr-fresh" for s in list(receiver.spans)))
    (server,) = [s for s in receiver.spans if s.attributes.get("resonate.corr_id") == "corr-fresh"]
    assert server.parent_id == "" and server.trace_id not in (TRACE, unsampled) and server.flags & 0x200 == 0
    commit = wait_spans(receiver, server.trace_id, {"commit"})["commit"]
    assert commit.parent_id == server.span_id
    # spans are exported in the order they ended: the unsampled request's would have come first
    assert in_trace(receiver, unsampled) == {}
    assert not any(s.attributes.get("resonate.corr_id") == "corr-dark" for s in receiver.spans)


@pytest.mark.process  # a server process
@pytest.mark.parametrize("path, kind, trace", [("/operator", "outbox.search", "bb" * 16),
                                               ("/ui/api", "console.promises", "bc" * 16)])
def test_operator_and_console_routes_get_a_server_span(traced_server: ServerProc, receiver: Receiver, path: str,
                                                       kind: str, trace: str) -> None:
    r = post(traced_server, envelope(kind, {}), path, traceparent=f"00-{trace}-{PARENT}-01")
    assert r.status_code == 200, r.text
    server = wait_spans(receiver, trace, {kind})[kind]
    assert server.attributes["url.path"] == path and server.attributes["resonate.status"] == 200
    assert server.parent_id == PARENT


# ---- the Cloud Functions shape --------------------------------------------------------------------

def test_function_exports_its_spans_at_the_end_of_the_request(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              receiver: Receiver) -> None:
    import functions_framework

    monkeypatch.setenv("RESONATE_STORAGE__TYPE", "sqlite")
    monkeypatch.setenv("RESONATE_STORAGE__SQLITE__PATH", str(tmp_path / "f.db"))
    monkeypatch.setenv("RESONATE_OBSERVABILITY__OTLP_ENDPOINT", receiver.url)
    monkeypatch.setenv("RESONATE_OBSERVABILITY__OTLP_INTERVAL", "0")
    app = functions_framework.create_app(target="api", source=str(ROOT / "functions" / "main.py"))
    r = app.test_client().post("/", json=create("fn"), headers={"traceparent": f"00-{TRACE}-{PARENT}-01"})
    assert r.status_code == 200
    spans = in_trace(receiver, TRACE)  # exported within the request: no waiting
    assert spans["promise.create"].parent_id == PARENT
    assert spans["commit"].parent_id == spans["promise.create"].span_id
    assert set(receiver.paths) >= {"/v1/traces", "/v1/metrics"}


# ---- the Pub/Sub dispatch shape ------------------------------------------------------------------

def test_pubsub_message_carries_the_commit_and_dispatch_continues_it(receiver: Receiver, worker: Worker) -> None:
    """The committing request publishes the row with its trace context as attributes; the
    dispatch function's push joins that trace and hands it on to the worker."""
    from concurrent.futures import Future

    from shared.config import Dispatch
    from shared.delivery.pubsub_dispatch import DispatchHandler, Publisher
    from shared.delivery.push import HttpPush
    from shared.delivery.sender import Sender

    tracer = Tracer(receiver.url + "/v1/traces", 1.0, 60, {"service.name": "resonate"})
    published: list[dict[str, str]] = []

    class Client:
        def publish(self, topic: str, data: bytes, **attrs: str) -> Future[str]:
            published.append(attrs)
            f: Future[str] = Future()
            f.set_result("1")
            return f

    publisher = Publisher("projects/p/topics/t", tracer=tracer)
    publisher._client = Client()
    m = Message("execute", "task-1", worker.url, 1)
    span = tracer.begin((f"00-{TRACE}-{PARENT}-01", "k=v"))
    assert span is not None
    publisher.publish(7, m, lambda ok: None)  # as DatabaseClaims does after the commit
    tracer.finish(span, 200)
    publisher.publish(8, m, lambda ok: None)  # no current span: no attributes
    assert published == [{"kind": "execute", "traceparent": f"00-{TRACE}-{span.span_id.hex()}-01",
                          "tracestate": "k=v"}, {"kind": "execute"}]

    sender = Sender(None, HttpPush(), {}, None, tracer=tracer)
    handler = DispatchHandler(None, None, sender, Dispatch(audience="a", service_accounts=("x",)), 5.0)  # type: ignore[arg-type]
    body = json.dumps({"message": {"data": base64.b64encode(b'{"seq":7,"version":1}').decode(),
                                   "attributes": published[0]}}).encode()
    try:
        assert handler._traced_push(OutboxRow.of(m, 7), None, body)
    finally:
        sender.close()
    assert tracer.export()
    deliver = wait_spans(receiver, TRACE, {"deliver"})["deliver"]
    assert deliver.parent_id == span.span_id.hex() and deliver.trace_state == "k=v"
    assert worker.wait()[0]["traceparent"] == f"00-{TRACE}-{deliver.span_id}-01"
