"""The local server's `POST /` fast path (`shared.http.fast_rpc`) answers exactly as the flask
route does, and its connection handler (`local.nodelay.OneSendHandler`) writes a response's head
and first body bytes with one send."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from shared.clock import Clock
from shared.config import load
from shared.http import create_app, fast_rpc
from shared.service import Service
from shared.storage.memory import MemoryStore


def _envelope(kind: str, data: Any) -> bytes:
    return json.dumps({"kind": kind, "head": {"corrId": "c1", "version": "2026-04-01"}, "data": data}).encode()


BODIES = [
    _envelope("promise.create", {"id": "p1", "timeoutAt": 4_000_000_000_000}),
    _envelope("promise.create", {"id": "p1", "timeoutAt": 4_000_000_000_000}),  # the same again: idempotent 200
    _envelope("promise.get", {"id": "p1"}),
    _envelope("promise.get", {"id": "nope"}),  # 404
    _envelope("promise.nope", {}),  # 400
    b"not json",
    b"",
    _envelope("promise.get", {"id": "x\u0000"}),
]


class _Fixed(Clock):
    def now(self) -> int:
        return 1_700_000_000_000


def _clients(**overrides: Any) -> tuple[Client, Client]:
    """(flask alone, fast path in front of flask), each over its own store."""
    apps = []
    for _ in range(2):
        service = Service(MemoryStore(), load(overrides, env={}), clock=_Fixed())
        apps.append((create_app(service, None), service))
    (flask_app, _), (inner, service) = apps
    return Client(flask_app), Client(fast_rpc(inner, service))


def _answer(c: Client, body: bytes, path: str = "/", **kw: Any) -> tuple[int, dict[str, str], bytes]:
    r = c.post(path, data=body, headers={"Content-Type": "application/json"}, **kw)
    headers = {k: v for k, v in r.headers.items() if k.lower() != "date"}
    return r.status_code, headers, r.get_data()


@pytest.mark.parametrize("body", BODIES)
def test_same_answers_as_the_flask_route(body: bytes) -> None:
    flask_c, fast_c = _clients(**{"debug": True})
    for b in BODIES[:BODIES.index(body)]:  # the same history on both stores
        _answer(flask_c, b)
        _answer(fast_c, b)
    assert _answer(fast_c, body) == _answer(flask_c, body)


SURFACE_BODIES = [  # (path, body): each envelope route, its own kinds and another route's
    ("/operator", _envelope("outbox.search", {"dead": True})),
    ("/operator", _envelope("promise.get", {"id": "p1"})),  # not an operator kind: 400
    ("/ui/api", _envelope("console.promises", {"prefix": "p"})),
    ("/ui/api", _envelope("console.promise", {"id": "p1"})),
    ("/ui/api", _envelope("promise.settle", {"id": "p1", "state": "resolved", "value": {}})),
    ("/ui/api", _envelope("promise.create", {"id": "p2", "timeoutAt": 4_000_000_000_000})),  # 400 there
    ("/ui/api", b"not json"),
    ("/", _envelope("console.promises", {})),  # 400 on `POST /`
]


@pytest.mark.parametrize("ui", [True, False])
def test_operator_and_console_routes_answer_as_flask(ui: bool) -> None:
    flask_c, fast_c = _clients(**{"ui.enabled": ui})
    for c in (flask_c, fast_c):
        _answer(c, BODIES[0])
    for path, body in SURFACE_BODIES:
        assert _answer(fast_c, body, path) == _answer(flask_c, body, path), (path, body)


def test_other_routes_and_methods_go_to_flask() -> None:
    flask_c, fast_c = _clients()
    for method, path in [("GET", "/health"), ("GET", "/"), ("PUT", "/"), ("POST", "/promises"), ("POST", "/x")]:
        a, b = fast_c.open(path, method=method), flask_c.open(path, method=method)
        assert (a.status_code, a.get_data(), a.headers.get("Content-Type")) == \
            (b.status_code, b.get_data(), b.headers.get("Content-Type")), (method, path)


def test_oversized_and_chunked_bodies_take_the_flask_route() -> None:
    flask_c, fast_c = _clients(**{"server.max_body": 64})
    big = _envelope("promise.get", {"id": "x" * 100})
    assert _answer(fast_c, big) == _answer(flask_c, big)
    assert _answer(fast_c, big)[0] == 413


def _call(app: Any, body: bytes, length: str | None) -> tuple[str, list, bytes]:
    """The WSGI app called with a hand-made environ (`length`: the Content-Length header)."""
    import io

    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": "/", "SERVER_NAME": "x", "SERVER_PORT": "80",
               "wsgi.url_scheme": "http", "wsgi.input": io.BytesIO(body), "wsgi.input_terminated": True,
               "SERVER_PROTOCOL": "HTTP/1.1", "CONTENT_TYPE": "application/json"}
    if length is not None:
        environ["CONTENT_LENGTH"] = length
    seen: list = []
    out = b"".join(app(environ, lambda status, headers, exc=None: seen.extend([status, headers])))
    return seen[0], seen[1], out


def test_a_traced_request_takes_the_flask_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """Its log lines carry the trace, which `shared.logs` reads from flask's request context."""
    import shared.http

    service = Service(MemoryStore(), load({}, env={}))
    seen: list[bool] = []

    def rpc(service: Service, req: Any) -> Any:
        seen.append(True)
        return real(service, req)

    real = shared.http.rpc
    monkeypatch.setattr(shared.http, "rpc", rpc)
    app = fast_rpc(create_app(service, None), service)
    for header in ("X-Cloud-Trace-Context", "traceparent"):
        r = Client(app).post("/", data=BODIES[3], headers={header: "x"})
        assert r.status_code == 404
    assert seen == [True, True]
    Client(app).post("/", data=BODIES[3])
    assert seen == [True, True]  # untraced: the fast path


def test_a_body_without_length_takes_the_flask_route() -> None:
    service = Service(MemoryStore(), load({}, env={}))
    status, _, out = _call(fast_rpc(create_app(service, None), service), BODIES[3], None)  # chunked upload
    assert status.startswith("404"), out


def test_a_short_body_is_answered_as_unreadable() -> None:
    service = Service(MemoryStore(), load({}, env={}))
    status, headers, out = _call(fast_rpc(create_app(service, None), service), b'{"kind"', "100")
    assert status == "400 BAD REQUEST" and ("Content-Type", "application/json") in headers
    assert json.loads(out)["data"] == "Invalid request envelope: the body could not be read"


def test_cors_keeps_the_flask_route() -> None:
    service = Service(MemoryStore(), load({"server.cors.allow_origins": ["*"]}, env={}))
    app = create_app(service, None)
    assert fast_rpc(app, service) is app


class _Sock:
    def __init__(self) -> None:
        self.sent: list[bytes] = []

    def sendall(self, data: bytes) -> None:
        self.sent.append(bytes(data))


def _handler(chunked: bool) -> Any:
    from local.nodelay import OneSendHandler

    h = OneSendHandler.__new__(OneSendHandler)
    h.socket = _Sock()
    h.status = b"200 OK"
    h.code = 200
    h.response_length = 0
    h.provided_date = "x"
    h.provided_content_length = None if chunked else "5"
    h.response_headers = [(b"Content-Type", b"text/plain")] + ([] if chunked else [(b"Content-Length", b"5")])
    h.result = iter([]) if chunked else [b"hello"]
    h.request_version = "HTTP/1.1"
    h.response_use_chunked = False
    h.headers_sent = False
    return h


def test_head_and_body_go_out_in_one_send() -> None:
    h = _handler(chunked=False)
    h.write(b"hello")
    assert h.socket.sent == [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"]
    h = _handler(chunked=True)  # a stream (SSE): the first chunk framed, in the same send
    h.write(b": connected\n\n")
    h.write(b"data: 1\n\n")
    assert h.socket.sent == [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"d\r\n: connected\n\n\r\n", b"9\r\ndata: 1\n\n\r\n"]


def _headers(raw: bytes) -> Any:
    import io

    from local.nodelay import RequestHeaders

    return RequestHeaders(io.BytesIO(raw))


def test_request_headers_read_as_the_email_parser_did() -> None:
    import io
    from http import client

    raw = (b"Host: x\r\nContent-Type: application/json\r\ncontent-length:  12 \r\nX-A: 1\r\nx-a: 2\r\n"
           b"X-Fold: a\r\n  b\r\n\r\nBODY")
    h, ref = _headers(raw), client.parse_headers(io.BytesIO(raw))
    for name in ("host", "CONTENT-TYPE", "Content-Length", "x-a", "X-Fold", "missing"):
        assert (h.get(name) or "").split() == (ref.get(name) or "").split(), name
    assert h.typeheader == "application/json" and h.getheader("content-length") == "12"
    assert list(h.headers)[:2] == ["Host: x\r\n", "Content-Type: application/json\r\n"]
    del h["content-length"]
    assert h.get("Content-Length") is None and h.status == ""
    stream = io.BytesIO(raw)
    _ = type(h)(stream)
    assert stream.read() == b"BODY"  # the body is left where it was


@pytest.mark.parametrize("raw, status", [
    (b"A: " + b"x" * 70000 + b"\r\n\r\n", "Line too long"),
    (b"".join(b"H%d: v\r\n" % i for i in range(101)) + b"\r\n", "More than 100 header fields"),
    (b"no colon here\r\n\r\n", "Malformed header line"),
    (b" folded first\r\n\r\n", "Continuation line without a field"),
    (b"Bad Name : v\r\n\r\n", "Malformed header line"),
])
def test_bad_header_blocks_are_refused(raw: bytes, status: str) -> None:
    assert _headers(raw).status == status


@pytest.mark.process
def test_bad_headers_get_400_from_the_server(tmp_path: Path) -> None:
    import socket

    from tests.support.server import start_server

    srv = start_server("sqlite", tmp_path)
    try:
        host, port = "127.0.0.1", srv.port
        for raw in (b"no colon\r\n", b"".join(b"H%d: v\r\n" % i for i in range(101))):
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n" + raw + b"\r\n")
                assert s.recv(100).startswith(b"HTTP/1.1 400"), raw[:20]
    finally:
        srv.stop()
