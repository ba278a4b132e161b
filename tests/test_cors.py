"""CORS (docs/operations.md) on a live local server: preflights and simple requests, allowed and
disallowed origins, explicit lists and `*`, and off by default."""
from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.support.server import ServerProc, start_server
from tests.support.sse import SSE

pytestmark = pytest.mark.process

APP, DEV = "https://app.example", "http://localhost:3000"
METHODS = "GET,POST,PUT,PATCH,DELETE,OPTIONS"
HEADERS = "origin,content-length,content-type,authorization"
ENVELOPE = {"kind": "promise.get", "head": {"corrId": "c", "version": "2026-04-01"}, "data": {"id": "x"}}
CORS_HEADERS = ("Access-Control-Allow-Origin", "Access-Control-Allow-Methods", "Access-Control-Allow-Headers",
                "Access-Control-Expose-Headers", "Access-Control-Allow-Credentials", "Access-Control-Max-Age")


@pytest.fixture(scope="module")
def listed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """Two origins (and an entry that cannot be a header value); auth on (unsigned mode)."""
    s = start_server("memory", tmp_path_factory.mktemp("cors"), args=[
        "--server-cors-allow-origin", APP, "--server-cors-allow-origin", DEV,
        "--server-cors-allow-origin", "https://bad\x01.example"], env={"RESONATE_AUTH__PUBLICKEY": "none"})
    yield s
    s.stop()


def preflight(s: ServerProc, path: str, origin: str, headers: str = "content-type,authorization") -> requests.Response:
    return requests.options(s.url + path, timeout=10, headers={
        "Origin": origin, "Access-Control-Request-Method": "POST", "Access-Control-Request-Headers": headers})


@pytest.mark.parametrize("path", ["/", "/poll/g/w1", "/health", "/ready", "/promises/x", "/no/such/path"])
def test_preflight_from_a_listed_origin(listed: ServerProc, path: str) -> None:
    r = preflight(listed, path, DEV)
    assert (r.status_code, r.content) == (200, b"")
    assert r.headers["Access-Control-Allow-Origin"] == DEV
    assert r.headers["Access-Control-Allow-Methods"] == METHODS
    assert r.headers["Access-Control-Allow-Headers"] == HEADERS
    assert "origin" in r.headers["Vary"].lower()
    for absent in ("Access-Control-Allow-Credentials", "Access-Control-Max-Age", "Access-Control-Expose-Headers"):
        assert absent not in r.headers, absent


def test_preflight_from_another_origin_gets_no_allow_origin(listed: ServerProc) -> None:
    for origin in ("https://evil.example", "https://app.example:8443", "http://app.example", "null"):
        r = preflight(listed, "/", origin)
        assert r.status_code == 200 and "Access-Control-Allow-Origin" not in r.headers, origin


def test_simple_requests(listed: ServerProc) -> None:
    r = requests.post(listed.url + "/", json=ENVELOPE, headers={"Origin": APP}, timeout=10)
    assert r.status_code == 401  # auth is on: the browser can still read the refusal
    assert r.headers["Access-Control-Allow-Origin"] == APP
    assert "Access-Control-Expose-Headers" not in r.headers
    assert "Access-Control-Allow-Methods" not in r.headers  # preflight-only headers
    r = requests.post(listed.url + "/", json=ENVELOPE, headers={"Origin": "https://evil.example"}, timeout=10)
    assert "Access-Control-Allow-Origin" not in r.headers
    r = requests.get(listed.url + "/health", timeout=10)  # no Origin: not a CORS request
    assert "Access-Control-Allow-Origin" not in r.headers
    s = SSE(listed.url + "/poll/g/w1", headers={"Origin": APP})
    assert (s.status, s.headers.get("Access-Control-Allow-Origin")) == (401, APP)
    assert f'CORS enabled origins=["{APP}", "{DEV}"' in listed.logs()


def test_permissive(tmp_path: Path) -> None:
    s = start_server("memory", tmp_path, env={"RESONATE_SERVER__CORS__ALLOW_ORIGINS": '["*"]'})
    try:
        r = preflight(s, "/poll/g/w1", "https://anyone.example", headers="authorization,x-custom")
        assert (r.status_code, r.content) == (200, b"")
        assert r.headers["Access-Control-Allow-Origin"] == "*"
        assert r.headers["Access-Control-Allow-Methods"] == "*"
        # the requested headers are echoed: a `*` would not cover Authorization in browsers
        assert r.headers["Access-Control-Allow-Headers"] == "authorization,x-custom"
        assert "Access-Control-Allow-Credentials" not in r.headers
        r = requests.post(s.url + "/", json=ENVELOPE, headers={"Origin": "https://anyone.example"}, timeout=10)
        assert r.status_code == 404
        assert (r.headers["Access-Control-Allow-Origin"], r.headers["Access-Control-Expose-Headers"]) == ("*", "*")
    finally:
        s.stop()


def test_off_by_default(tmp_path: Path) -> None:
    s = start_server("memory", tmp_path)
    try:
        for r in (preflight(s, "/", APP), requests.get(s.url + "/health", headers={"Origin": APP}, timeout=10),
                  requests.post(s.url + "/", json=ENVELOPE, headers={"Origin": APP}, timeout=10)):
            assert not [h for h in CORS_HEADERS if h in r.headers], dict(r.headers)
        assert "CORS enabled" not in s.logs()
    finally:
        s.stop()
