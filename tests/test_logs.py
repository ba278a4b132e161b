"""Logs (docs/operations.md): the text lines of startup and shutdown, the JSON mode's Cloud Logging
fields (also inside a function, with the request's trace), and level control."""
from __future__ import annotations

import json
import logging
import re
import signal
import sys
import time

import pytest
import requests

from tests.support.server import ROOT, start_server

TEXT_LINE = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z (DEBUG| INFO| WARN|ERROR) [\w.]+: .")
RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
TRACE_ID = "105445aa7843bc8bf206b12000100000"
SOURCE = "logging.googleapis.com/sourceLocation"
TRACE = "logging.googleapis.com/trace"


def _stop(srv) -> tuple[int, str]:
    srv.proc.send_signal(signal.SIGTERM)
    code = srv.proc.wait(timeout=15)
    return code, srv.logs()


def _create(srv, id: str, **headers: str) -> requests.Response:
    body = {"kind": "promise.create", "head": {"corrId": f"c-{id}", "version": "2026-04-01"},
            "data": {"id": id, "timeoutAt": 2**53}}
    return requests.post(srv.url + "/", json=body, headers=headers, timeout=10)


@pytest.mark.process  # a server process
def test_text_startup_and_shutdown_lines_in_order(tmp_path):
    db = tmp_path / "r.db"
    srv = start_server("sqlite", tmp_path, debug=False, db=db)
    code, logs = _stop(srv)
    assert code == 0, logs
    lines = logs.splitlines()
    assert lines and all(TEXT_LINE.match(line) for line in lines), logs
    expected = [
        f"INFO resonate: Resonate Server starting port={srv.port}",
        "INFO resonate: Operational config ",
        "INFO resonate: Auth disabled — all requests accepted",
        f"INFO resonate: Using SQLite backend path={db}",
        "INFO resonate: SQLite initialized",
        "INFO resonate: Transport config http_push_connect_timeout_ms=10000 http_push_request_timeout_ms=180000",
        f"INFO resonate: Server listening bind=0.0.0.0 port={srv.port} server_url=http://localhost:{srv.port}",
        "INFO resonate: Received SIGTERM, initiating graceful shutdown...",
        "INFO resonate: HTTP server stopped, draining background tasks...",
        "INFO resonate: Timeout processing loop shutting down",
        "INFO resonate: Message processing loop shutting down",
        "INFO resonate: Resonate Server stopped",
    ]
    at = 0
    for want in expected:  # each in turn, in this order
        found = next((i for i in range(at, len(lines)) if want in lines[i]), None)
        assert found is not None, f"missing (in order) {want!r}:\n{logs}"
        at = found + 1
    assert "Debug mode enabled" not in logs and "WARN" not in logs


@pytest.mark.process  # a server process
def test_dev_logs_debug_mode_and_memory_backend(tmp_path):
    srv = start_server("memory", tmp_path)
    code, logs = _stop(srv)
    assert code == 0
    assert "INFO resonate: Debug mode enabled — debug operations allowed" in logs
    assert "INFO resonate: Using in-memory backend" in logs


@pytest.mark.process  # a server process
def test_json_mode_lines_carry_cloud_logging_fields_and_the_request_trace(tmp_path):
    env = {"RESONATE_LOG_FORMAT": "json", "RESONATE_LEVEL": "debug", "GOOGLE_CLOUD_PROJECT": "proj-1"}
    srv = start_server("sqlite", tmp_path, debug=False, env=env)
    try:
        assert _create(srv, "traced", **{"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1"}).status_code == 200
        assert _create(srv, "untraced").status_code == 200
        w3c = "4bf92f3577b34da6a3ce929d0e0e4736"
        assert _create(srv, "w3c", traceparent=f"00-{w3c}-00f067aa0ba902b7-01").status_code == 200
        r = requests.post(srv.url + "/", data=b"{not json", timeout=10)
        assert r.status_code == 400
    finally:
        code, logs = _stop(srv)
    assert code == 0, logs
    entries = [json.loads(line) for line in logs.splitlines()]  # every line is one JSON object
    for e in entries:
        assert e["severity"] in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"), e
        assert isinstance(e["message"], str) and RFC3339.fullmatch(e["time"]), e
        loc = e[SOURCE]
        assert loc["file"].endswith(".py") and isinstance(loc["line"], int) and loc["function"], e
    by_msg = {e["message"]: e for e in entries}
    start = by_msg[f"Resonate Server starting port={srv.port} storage=sqlite profile=compat"]
    assert start["severity"] == "INFO" and start[SOURCE]["file"].endswith("server.py") and TRACE not in start
    traced = [e for e in entries if "corr_id=c-traced" in e["message"]]
    assert [e["message"].split(" kind=")[0] for e in traced] == ["Received request", "Request completed"]
    for e in traced:
        assert e["severity"] == "DEBUG"
        assert e[TRACE] == f"projects/proj-1/traces/{TRACE_ID}"
        assert e["logging.googleapis.com/spanId"] == "0000000000000001"
        assert e["logging.googleapis.com/trace_sampled"] is True
    assert all(TRACE not in e for e in entries if "corr_id=c-untraced" in e["message"])
    assert all(e[TRACE] == f"projects/proj-1/traces/{w3c}" for e in entries if "corr_id=c-w3c" in e["message"])
    bad = [e for e in entries if e["message"].startswith("Invalid request envelope rejected")]
    assert len(bad) == 1 and bad[0]["severity"] == "WARNING", entries


@pytest.fixture
def root_logging():
    """Put the root logger back as it was (the function module configures it on import)."""
    root = logging.getLogger()
    saved = (root.level, list(root.handlers))
    yield
    root.handlers[:] = saved[1]
    root.setLevel(saved[0])


def test_function_logs_json_by_default_with_the_request_trace(tmp_path, monkeypatch, capsys, root_logging):
    import functions_framework

    monkeypatch.delenv("RESONATE_LOG_FORMAT", raising=False)
    monkeypatch.setenv("RESONATE_LEVEL", "debug")
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "fn-proj")
    monkeypatch.setenv("RESONATE_STORAGE__TYPE", "sqlite")
    monkeypatch.setenv("RESONATE_STORAGE__SQLITE__PATH", str(tmp_path / "fn.db"))
    app = functions_framework.create_app(target="api", source=str(ROOT / "functions" / "main.py"))
    c = app.test_client()
    head = {"corrId": "fn-1", "version": "2026-04-01"}
    data = {"id": "p", "timeoutAt": int(time.time() * 1000) + 3_600_000}
    r = c.post("/", json={"kind": "promise.create", "head": head, "data": data},
               headers={"X-Cloud-Trace-Context": f"{TRACE_ID}/12345;o=0"})
    assert r.status_code == 200, r.data
    logging.getLogger("resonate.test").info("outside any request")
    out = capsys.readouterr().out
    entries = [json.loads(line) for line in out.splitlines() if line.strip()]
    mine = [e for e in entries if "corr_id=fn-1" in e["message"]]
    assert [e["message"].split(" kind=")[0] for e in mine] == ["Received request", "Request completed"], out
    for e in mine:
        assert e[TRACE] == f"projects/fn-proj/traces/{TRACE_ID}"
        assert e["logging.googleapis.com/spanId"] == f"{12345:016x}"
        assert e["logging.googleapis.com/trace_sampled"] is False
        assert e[SOURCE]["file"].endswith("service.py")
    outside = [e for e in entries if e["message"] == "outside any request"]
    assert len(outside) == 1 and TRACE not in outside[0] and outside[0]["severity"] == "INFO"


def test_json_exception_carries_the_traceback(capsys, root_logging):
    from shared.logs import setup_logging

    setup_logging("info", "json")
    try:
        raise ValueError("broken thing")
    except ValueError:
        logging.getLogger("resonate.test").exception("it failed")
    logging.getLogger("resonate.test").debug("hidden at info")
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(lines) == 1
    e = lines[0]
    assert e["severity"] == "ERROR" and e["message"].startswith("it failed\nTraceback (most recent call last):")
    assert "ValueError: broken thing" in e["stack_trace"] and e["stack_trace"] in e["message"]


@pytest.mark.process  # a server process
@pytest.mark.parametrize("level", ["warn", "debug", "off"])
def test_level_controls_what_is_logged(tmp_path, level):
    srv = start_server("sqlite", tmp_path, debug=False, args=["--level", level])
    try:
        assert _create(srv, "lv").status_code == 200
    finally:
        code, logs = _stop(srv)
    assert code == 0, logs
    if level == "off":
        assert logs == ""
    elif level == "warn":
        assert "INFO" not in logs and "DEBUG" not in logs, logs
    else:
        assert "DEBUG resonate.service: Received request kind=promise.create corr_id=c-lv" in logs
        assert re.search(r"DEBUG resonate.service: Request completed kind=promise.create corr_id=c-lv status=200 "
                         r"elapsed_ms=\d+\.\d\d", logs), logs
        assert re.search(r"DEBUG resonate.http: finished processing request method=POST uri=/ status=200 "
                         r"latency_ms=\d+\.\d\d", logs), logs


@pytest.mark.process  # a server process
def test_info_level_logs_no_per_request_lines(tmp_path):
    srv = start_server("sqlite", tmp_path, debug=False)
    try:
        for i in range(5):
            assert _create(srv, f"quiet{i}").status_code == 200
        get = {"kind": "promise.get", "head": {"corrId": "g", "version": "2026-04-01"}, "data": {"id": "missing"}}
        assert requests.post(srv.url + "/", json=get, timeout=10).status_code == 404
    finally:
        code, logs = _stop(srv)
    assert code == 0 and "corr_id" not in logs and "finished processing" not in logs, logs


def test_filter_directives_and_trace_header_parsing():
    from shared.logs import parse_level, q, trace_fields

    assert parse_level("warn,resonate.http=debug") == (logging.WARNING, {"resonate.http": logging.DEBUG}, [])
    assert parse_level("TRACE")[0] == logging.DEBUG and parse_level("off")[0] > logging.CRITICAL
    assert parse_level("loud")[2] == ["loud"]
    assert trace_fields({"X-Cloud-Trace-Context": f"{TRACE_ID}/1;o=1"}, None)[TRACE] == TRACE_ID
    assert trace_fields({"X-Cloud-Trace-Context": "not-hex/1"}, "p") == {}
    assert trace_fields({"traceparent": "garbage"}, "p") == {}
    assert q("plain-id") == "plain-id" and q("two words") == '"two words"'
    assert q("forged\n2026-01-01T00:00:00Z  INFO x: y") == json.dumps("forged\n2026-01-01T00:00:00Z  INFO x: y")
    assert len(q("x" * 5000)) < 300


def test_formatters_keep_one_event_on_one_line(capsys, root_logging):
    """Behind `q()` at each call site: whatever a message still holds that could break a line
    (CR, LF, other C0/C1 controls, U+2028/U+2029, a lone surrogate) is escaped by both formats."""
    from shared.logs import one_line, setup_logging

    forged = "x\r\n2026-01-01T00:00:00.000000Z  INFO resonate: forged\u2028\x85\x1b\x00\ud800"
    assert one_line(forged) == "x\\r\\n2026-01-01T00:00:00.000000Z  INFO resonate: forged\\u2028\\u0085" \
                               "\\u001b\\u0000\\ud800"
    assert one_line("tab\tand é, 😀") == "tab\tand é, 😀"
    for fmt in ("text", "json"):
        setup_logging("info", fmt)
        logging.getLogger("resonate.test").warning("id=%s", forged)
        out = capsys.readouterr().out
        assert out.count("\n") == 1 and "\u2028" not in out and "\x85" not in out, out
        if fmt == "json":
            assert "\n" not in json.loads(out)["message"]


def test_ready_failure_answers_503_empty_and_logs_the_spec_error(caplog):
    from flask import Flask

    from shared.http import ready

    class Store:
        def ping(self) -> None:
            raise ConnectionError("connection refused")

    class Svc:
        store = Store()

    with Flask(__name__).test_request_context("/ready"), caplog.at_level(logging.ERROR, "resonate.http"):
        r = ready(Svc())  # type: ignore[arg-type]
    assert r.status_code == 503 and r.get_data() == b""
    assert [rec.getMessage() for rec in caplog.records] == [
        "Readiness check failed: storage database unavailable error=connection refused"]


if __name__ == "__main__":  # pragma: no cover
    sys.exit(pytest.main([__file__, "-q"]))
