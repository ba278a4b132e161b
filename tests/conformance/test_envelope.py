"""Envelope and transport plus the request body limit (10 MiB)."""
from __future__ import annotations

import json

import pytest
import requests

from tests.conformance.helpers import T, call, cb_action, create, now_ms, ok, task_create
from tests.support import marks
from tests.support.envelope import VERSION


def raw_post(srv, body: bytes) -> requests.Response:
    return srv.post(body, raw=True)


def assert_error(r: requests.Response, status: int, kind: str | None = None, corr: str | None = None) -> dict:
    assert r.status_code == status, (r.status_code, r.text[:500])
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    body = r.json()
    assert body["head"]["status"] == status, body
    assert body["head"]["version"] == VERSION, body
    assert isinstance(body["data"], str), body
    if kind is not None:
        assert body["kind"] == kind, body
    if corr is not None:
        assert body["head"]["corrId"] == corr, body
    return body


def env(kind, data, corr="c1", version=VERSION, **head):
    return json.dumps({"kind": kind, "head": {"corrId": corr, "version": version, **head}, "data": data}).encode()


def test_s1_body_not_json(rs):
    r = raw_post(rs, b"not json")
    assert_error(r, 400, kind="unknown", corr="0")


@pytest.mark.parametrize("body", [b"", b"[]", b"\xff\xfe"])
def test_s1_unparseable_envelopes(rs, body):
    assert_error(raw_post(rs, body), 400, kind="unknown", corr="0")


def test_s1_kind_not_string(rs):
    body = b'{"kind":5,"head":{"corrId":"c","version":"2026-04-01"},"data":{}}'
    assert_error(raw_post(rs, body), 400, kind="unknown", corr="c")


def test_s1_corr_not_string(rs):
    body = b'{"kind":"promise.get","head":{"corrId":5,"version":"2026-04-01"},"data":{"id":"x"}}'
    assert_error(raw_post(rs, body), 400, kind="promise.get", corr="0")


def test_s2_missing_version_echoes_kind_and_corr(rs):
    r = raw_post(rs, b'{"kind":"promise.get","head":{"corrId":"c1"},"data":{"id":"x"}}')
    assert_error(r, 400, kind="promise.get", corr="c1")


@pytest.mark.parametrize("kind,data", [
    ("promise.get", {"id": "x"}),
    ("promise.create", {"id": "x", "timeoutAt": T + 1}),
    ("task.search", {}),
    ("debug.snap", {}),
])
def test_s3_unsupported_version(rs, kind, data):
    r = raw_post(rs, env(kind, data, corr="c3", version="2025-01-01"))
    body = assert_error(r, 400, kind=kind, corr="c3")
    assert "2025-01-01" in body["data"], body
    # nothing was created by the rejected request
    assert rs.rpc("promise.get", {"id": "x"}, time=T)[0] == 404


def test_s4_empty_kind(rs):
    r = raw_post(rs, env("", {"id": "x"}, corr="c4"))
    assert_error(r, 400, kind="", corr="c4")


def test_s5_data_not_object(rs):
    r = raw_post(rs, env("promise.get", [], corr="c5"))
    assert_error(r, 400, kind="promise.get", corr="c5")


def test_s6_unknown_kind(rs):
    r = raw_post(rs, env("promise.frobnicate", {}, corr="c6"))
    body = assert_error(r, 400, kind="promise.frobnicate", corr="c6")
    assert body["data"] == "Unknown operation: promise.frobnicate"


def test_s7_unknown_fields_ignored(rs):
    p = create(rs, "p")
    body = {"kind": "promise.get", "extra": {"x": 1},
            "head": {"corrId": "c7", "version": VERSION, "resonate:origin": "x", "resonate:debug_time": T, "other": 5},
            "data": {"id": "p", "extra": "field", "more": [1, 2]}}
    r = raw_post(rs, json.dumps(body).encode())
    assert r.status_code == 200, r.text
    out = r.json()
    assert out["kind"] == "promise.get" and out["head"]["corrId"] == "c7" and out["head"]["status"] == 200
    assert out["data"]["promise"] == p
    # extra fields on a create are ignored too
    st, d = rs.rpc("promise.create", {"id": "q", "timeoutAt": T + 5, "bogus": True}, time=T, **{"resonate:origin": "q"})
    assert st == 200 and d["promise"]["id"] == "q" and d["promise"]["state"] == "pending"


def _check_status(rs, kind, data, expected, time=T):
    r, body = call(rs, kind, data, time=time)
    assert r.status_code == expected, body
    assert body["head"]["status"] == expected
    assert body["head"]["version"] == VERSION
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    if expected not in (200, 300):
        assert isinstance(body["data"], str), body
    else:
        assert isinstance(body["data"], dict), body
    return body


def test_s8_http_status_equals_head_status(rs):
    _check_status(rs, "promise.create", {"id": "a", "timeoutAt": T + 100}, 200)
    settle_ok = ok(rs, "promise.settle", {"id": "a", "state": "resolved"})
    assert settle_ok["promise"]["state"] == "resolved"
    task_create(rs, "t")
    _check_status(rs, "task.suspend", {"id": "t", "version": 1, "actions": [cb_action("a", "t")]}, 300)
    _check_status(rs, "promise.get", {"id": "nope"}, 404)
    _check_status(rs, "task.acquire", {"id": "t", "version": 0, "pid": "w", "ttl": 1000}, 409)
    _check_status(rs, "promise.register_callback", {"awaited": "a", "awaiter": "missing"}, 422)
    _check_status(rs, "promise.get", {"id": ""}, 400)


@pytest.mark.parametrize("bad", [1.5, "5", True])
def test_s9_timeout_at_type_errors(rs, bad):
    st, d = rs.rpc("promise.create", {"id": "p", "timeoutAt": bad}, time=T)
    assert st == 400 and isinstance(d, str), d
    assert rs.rpc("promise.get", {"id": "p"}, time=T)[0] == 404


@pytest.mark.parametrize("literal", [b"1.0", b"1e3", b"9223372036854775808", b"false", b"null"])
def test_s9_timeout_at_integer_strictness_extra(rs, literal):
    """Floats in any notation, out-of-range integers, booleans (and a missing required value) are 400."""
    body = (b'{"kind":"promise.create","head":{"corrId":"c9","version":"' + VERSION.encode()
            + b'","resonate:debug_time":' + str(T).encode() + b'},"data":{"id":"p","timeoutAt":' + literal + b'}}')
    r = raw_post(rs, body)
    assert_error(r, 400, kind="promise.create", corr="c9")


@pytest.fixture(params=[marks.param("inproc"), marks.param("sqlite")])
def nodebug_server(request, spawn):
    """A server started WITHOUT debug (`serve` without --debug; `dev` always enables debug)."""
    return spawn(request.param, debug=False)


def test_s10_debug_disabled(nodebug_server):
    srv = nodebug_server
    for kind, data in [("debug.start", {}), ("debug.stop", {}), ("debug.reset", {}), ("debug.snap", {}),
                       ("debug.tick", {"time": 5})]:
        st, d = srv.rpc(kind, data)
        assert st == 403, (kind, st, d)
        assert isinstance(d, str), d
    # resonate:debug_time is ignored: "now" is the wall clock
    before = now_ms()
    st, d = srv.rpc("promise.create", {"id": "p", "timeoutAt": before + 3_600_000}, time=T)
    after = now_ms()
    assert st == 200, d
    p = d["promise"]
    assert p["state"] == "pending"
    assert before - 1000 <= p["createdAt"] <= after + 1000, (before, p, after)
    # a deadline in the (debug) past but the wall-clock future is not expired
    st, d = srv.rpc("promise.create", {"id": "q", "timeoutAt": before + 60_000}, time=before + 120_000)
    assert st == 200 and d["promise"]["state"] == "pending", d


@pytest.fixture(scope="module")
def gone(tmp_path_factory):
    """The reference server's legacy paths: `legacy.enabled = false` (this server serves the older
    REST API by default: docs/legacy-api.md, tests/test_legacy_*.py)."""
    from tests.support.server import start_server

    srv = start_server("inproc", tmp_path_factory.mktemp("gone"), args=["--legacy-enabled", "false"])
    yield srv
    srv.stop()


@pytest.mark.parametrize("method", ["GET", "POST", "PUT", "PATCH", "DELETE"])
@pytest.mark.parametrize("path", ["/promises", "/promises/x", "/schedules/y", "/tasks/z", "/tasks", "/locks/acquire",
                                  "/callbacks", "/subscriptions"])
def test_s11_legacy_rest_gone(gone, method, path):
    r = gone.request(method, path, json={"id": "x"})
    assert r.status_code == 410, (method, path, r.status_code, r.text[:200])
    body = r.json()
    assert isinstance(body, dict) and isinstance(body.get("error"), str), body


def test_s12_health(rs):
    r = rs.request("GET", "/health")
    assert r.status_code == 200


def test_ready(rs):
    r = rs.request("GET", "/ready")
    assert r.status_code == 200


def test_body_limit_413(rs):
    """bodies up to 10 MiB are accepted; an 11 MiB body gets 413 with a JSON envelope whose
    data is a string, and the connection is not reset."""
    big = "A" * (11 * 1024 * 1024)
    body = json.dumps({"kind": "promise.create", "head": {"corrId": "big", "version": VERSION,
                                                          "resonate:debug_time": T},
                       "data": {"id": "big", "timeoutAt": T + 1000, "param": {"data": big}}}).encode()
    assert len(body) > 11 * 1024 * 1024
    try:
        r = rs.post(body, raw=True)  # a process: on its kept-alive session, reused below
    except requests.ConnectionError as e:  # a reset/broken pipe is the failure this test guards against
        pytest.fail(f"connection reset on an oversized body: {e!r}")
    assert r.status_code == 413, (r.status_code, r.text[:300])
    assert r.headers.get("Content-Type", "").startswith("application/json"), r.headers
    out = r.json()
    assert out["head"]["status"] == 413, out
    assert out["head"]["version"] == VERSION
    assert isinstance(out["data"], str), out
    assert out["kind"] in ("promise.create", "unknown"), out
    assert out["head"]["corrId"] in ("big", "0"), out
    assert rs.rpc("promise.get", {"id": "big"}, time=T)[0] == 404
    # the server still answers normally afterwards (same client session)
    r2 = rs.post({"kind": "promise.get", "head": {"corrId": "after", "version": VERSION}, "data": {"id": "nope"}})
    assert r2.status_code == 404 and r2.json()["head"]["corrId"] == "after"


def test_body_limit_under_10mib_accepted(rs):
    payload = "A" * (9 * 1024 * 1024)
    st, d = rs.rpc("promise.create", {"id": "big", "timeoutAt": T + 1000, "param": {"data": payload}}, time=T)
    assert st == 200, d if isinstance(d, str) else d.keys()
    assert d["promise"]["param"]["data"] == payload
