"""Inbound JWT auth (protocol §2.8, operations.md §9) on a live local server.

Keys are generated here and written as PEM files; tokens are minted with PyJWT. The core
property: no request outside a token's prefix (or without a valid token) changes anything —
every refusal is checked against `debug.snap` taken with an admin token before and after.
"""
from __future__ import annotations

import base64
import json
import time
import uuid
from pathlib import Path
from typing import Any, Iterator

import pytest
import requests

from tests.support.server import ServerProc, start_server
from tests.support.sse import SSE
from tests.support.tokens import KeyPair, claims, hs256_with, unsigned

ISS, AUD = "https://issuer.test", "resonate-api"
ADDR = "poll://any@g-auth"
LEASE = 600_000


def _far() -> int:
    return int(time.time() * 1000) + 10**9


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair("ed25519")


@pytest.fixture(scope="module")
def srv(key: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """An in-memory server (debug on) with an Ed25519 key and required `iss` and `aud`."""
    work = tmp_path_factory.mktemp("auth")
    env = {"RESONATE_AUTH__PUBLICKEY": key.write(work), "RESONATE_AUTH__ISS": ISS, "RESONATE_AUTH__AUD": AUD}
    s = start_server("memory", work, env=env)
    s.token = tok(key, role="admin")
    yield s
    s.stop()


def tok(key: KeyPair, ttl: int = 300, **extra: Any) -> str:
    return key.sign(claims(ttl, iss=ISS, aud=AUD, **extra))


def snap(s: ServerProc) -> dict[str, Any]:
    status, data = s.rpc("debug.snap", {})
    assert status == 200, data
    return data


def settled_snap(s: ServerProc) -> dict[str, Any]:
    """The state once background delivery has nothing left to change."""
    prev = snap(s)
    for _ in range(50):
        time.sleep(0.1)
        cur = snap(s)
        if cur == prev:
            return cur
        prev = cur
    raise AssertionError("state never settled")


def world(s: ServerProc, x: str) -> int:
    """A pending promise `x.p`, an acquired task `x.t`, a schedule `x-s`; the task's version."""
    assert s.rpc("promise.create", {"id": f"{x}.p", "timeoutAt": _far()})[0] == 200
    st, d = s.rpc("task.create", {"pid": "w", "ttl": LEASE, "action": {
        "kind": "promise.create", "head": {}, "data": {"id": f"{x}.t", "timeoutAt": _far(),
                                                       "tags": {"resonate:target": ADDR}}}})
    assert st == 200, d
    st, d2 = s.rpc("schedule.create", {"id": f"{x}-s", "cron": "0 0 1 1 *", "promiseId": f"{x}.sched.{{{{.id}}}}",
                                       "promiseTimeout": 60_000, "promiseTags": {"resonate:target": ADDR}})
    assert st == 200, d2
    return d["task"]["version"]


def per_id_requests(x: str, v: int) -> list[tuple[str, dict[str, Any]]]:
    """One request of every kind that names a resource, all of them under `x`."""
    t, far = f"{x}.t", _far()
    settle = {"kind": "promise.settle", "head": {}, "data": {"id": t, "state": "resolved"}}
    return [
        ("promise.get", {"id": f"{x}.p"}),
        ("promise.create", {"id": f"{x}.new", "timeoutAt": far}),
        ("promise.settle", {"id": f"{x}.p", "state": "resolved"}),
        ("promise.register_callback", {"awaited": f"{x}.p", "awaiter": t}),
        ("promise.register_listener", {"awaited": f"{x}.p", "address": ADDR}),
        ("task.get", {"id": t}),
        ("task.create", {"pid": "w", "ttl": LEASE, "action": {"kind": "promise.create", "head": {}, "data": {
            "id": f"{x}.t2", "timeoutAt": far, "tags": {"resonate:target": ADDR}}}}),
        ("task.heartbeat", {"pid": "w", "tasks": [{"id": t, "version": v}]}),
        ("task.fence", {"id": t, "version": v, "action": {"kind": "promise.create", "head": {},
                                                          "data": {"id": f"{x}.f", "timeoutAt": far}}}),
        ("task.suspend", {"id": t, "version": v, "actions": [{"kind": "promise.register_callback", "head": {},
                                                             "data": {"awaited": f"{x}.p", "awaiter": t}}]}),
        ("task.release", {"id": t, "version": v}),
        ("task.acquire", {"id": t, "version": v, "pid": "w2", "ttl": LEASE}),
        ("task.fulfill", {"id": t, "version": v, "action": settle}),
        ("task.halt", {"id": t}),
        ("task.continue", {"id": t}),
        ("schedule.get", {"id": f"{x}-s"}),
        ("schedule.create", {"id": f"{x}-s2", "cron": "0 0 1 1 *", "promiseId": f"{x}.s2.{{{{.id}}}}",
                             "promiseTimeout": 60_000, "promiseTags": {"resonate:target": ADDR}}),
        ("schedule.delete", {"id": f"{x}-s"}),
    ]


# searches and debug span every prefix: refused to any non-empty prefix (an unknown kind is a 400
# for every caller: it reaches nothing)
GLOBAL = [("promise.search", {}), ("task.search", {}), ("schedule.search", {}), ("debug.snap", {}),
          ("debug.start", {}), ("debug.stop", {}), ("debug.reset", {}), ("debug.tick", {"time": 1})]


@pytest.fixture
def versions(srv: ServerProc) -> dict[str, int]:
    """A fresh state (debug session: background loops paused) with team-a and team-b worlds."""
    assert srv.rpc("debug.start", {})[0] == 200 and srv.rpc("debug.reset", {})[0] == 200
    return {x: world(srv, x) for x in ("team-a", "team-b")}


def test_no_request_outside_the_prefix_changes_anything(srv: ServerProc, key: KeyPair,
                                                        versions: dict[str, int]) -> None:
    before = settled_snap(srv)
    mixed = ("task.heartbeat", {"pid": "w", "tasks": [{"id": "team-a.t", "version": versions["team-a"]},
                                                      {"id": "team-b.t", "version": versions["team-b"]}]})
    for token in (tok(key, role="worker", prefix="team-a"), tok(key, prefix="team-a")):
        for kind, data in per_id_requests("team-b", versions["team-b"]) + GLOBAL + [mixed]:
            assert srv.rpc(kind, data, auth=token) == (403, "Forbidden"), kind
    assert snap(srv) == before


@pytest.mark.parametrize("prefix", [{}, {"prefix": None}, {"prefix": 7}, {"prefix": ["team-a"]}],
                         ids=["absent", "null", "number", "list"])
def test_tokens_without_a_string_prefix_are_forbidden_everything(srv: ServerProc, key: KeyPair,
                                                                 versions: dict[str, int], prefix: dict) -> None:
    before = settled_snap(srv)
    token = tok(key, role="worker", **prefix)
    for kind, data in per_id_requests("team-a", versions["team-a"]) + GLOBAL:
        assert srv.rpc(kind, data, auth=token) == (403, "Forbidden"), kind
    assert snap(srv) == before


def test_requests_inside_the_prefix_pass(srv: ServerProc, key: KeyPair, versions: dict[str, int]) -> None:
    before = settled_snap(srv)
    token = tok(key, role="worker", prefix="team-a", groups=["g-auth"])
    for kind, data in per_id_requests("team-a", versions["team-a"]):
        status, out = srv.rpc(kind, data, auth=token)
        assert status not in (401, 403), (kind, status, out)
    assert srv.rpc("promise.create", {"id": "team-abc.1", "timeoutAt": _far()}, auth=token)[0] == 200  # plain prefix
    # a missing or non-string id passes the check; the kind's own validation answers
    assert srv.rpc("promise.get", {}, auth=token)[0] == 400
    assert srv.rpc("task.heartbeat", {"pid": "w"}, auth=token)[0] == 400
    assert srv.rpc("promise.get", {"id": 5}, auth=token)[0] == 400
    assert snap(srv) != before


def test_admin_and_wildcard_reach_everything(srv: ServerProc, key: KeyPair, versions: dict[str, int]) -> None:
    for token in (tok(key, role="ADMIN", prefix="zzz"), tok(key, role="admin"),
                  tok(key, role="worker", prefix="")):
        for kind, data in [("promise.search", {}), ("task.search", {}), ("schedule.search", {}),
                           ("debug.snap", {}), ("promise.get", {"id": "team-b.p"}), ("task.get", {"id": "team-b.t"})]:
            status, out = srv.rpc(kind, data, auth=token)
            assert status == 200, (kind, out)
    assert srv.rpc("promise.frobnicate", {}, auth=tok(key, role="admin")) == (400, "Unknown operation: promise.frobnicate")


def test_invalid_tokens_are_refused_and_change_nothing(srv: ServerProc, key: KeyPair, tmp_path: Path) -> None:
    assert srv.rpc("debug.start", {})[0] == 200 and srv.rpc("debug.reset", {})[0] == 200
    before = settled_snap(srv)
    good = tok(key, role="admin")
    h, p, sig = good.split(".")
    forged = json.loads(base64.urlsafe_b64decode(p + "==="))
    bad: dict[str, str | None] = {
        "missing": None, "empty": "", "garbage": "not-a-jwt", "two segments": f"{h}.{p}",
        "expired": tok(key, ttl=-120, role="admin"),
        "no exp": key.sign({"iss": ISS, "aud": AUD, "role": "admin"}),
        "exp not a number": key.sign({"exp": "tomorrow", "iss": ISS, "aud": AUD, "role": "admin"}),
        "wrong aud": key.sign(claims(iss=ISS, aud="other", role="admin")),
        "aud list without ours": key.sign(claims(iss=ISS, aud=["a", "b"], role="admin")),
        "no aud": key.sign(claims(iss=ISS, role="admin")),
        "wrong iss": key.sign(claims(iss="https://evil", aud=AUD, role="admin")),
        "no iss": key.sign(claims(aud=AUD, role="admin")),
        "other key": tok(KeyPair("ed25519"), role="admin"),
        "foreign algorithm": tok(KeyPair("rsa"), role="admin"),
        "alg none": unsigned(claims(iss=ISS, aud=AUD, role="admin"), alg="none"),
        "HS256 keyed with the public PEM": hs256_with(key.public_pem, claims(iss=ISS, aud=AUD, role="admin")),
        "tampered payload": f"{h}." + base64.urlsafe_b64encode(json.dumps(
            {**forged, "prefix": "x"}).encode()).rstrip(b"=").decode() + f".{sig}",
        "role not a string": tok(key, role=1),
        "not valid yet (nbf)": tok(key, role="admin", nbf=int(time.time()) + 3600),
        "issued in the future (iat)": tok(key, role="admin", iat=int(time.time()) + 3600),
        "nbf not a number": tok(key, role="admin", nbf="soon"),
    }
    for name, token in bad.items():
        head = {} if token is None else {"auth": token}
        srv.token, saved = None, srv.token
        try:
            assert srv.rpc("promise.create", {"id": f"bad.{uuid.uuid4().hex}", "timeoutAt": _far()},
                           **head) == (401, "Unauthorized"), name
            assert srv.rpc("debug.reset", {}, **head) == (401, "Unauthorized"), name
        finally:
            srv.token = saved
    # the HTTP header is not where POST / looks (§9.2)
    r = requests.post(srv.url + "/", headers={"Authorization": f"Bearer {good}"}, timeout=10, json={
        "kind": "promise.create", "head": {"corrId": "c", "version": "2026-04-01"},
        "data": {"id": "bad.header", "timeoutAt": _far()}})
    assert r.status_code == 401 and r.json()["data"] == "Unauthorized"
    assert snap(srv) == before
    logs = srv.logs()
    assert good not in logs and bad["expired"] not in logs  # tokens are never logged


def test_accepted_token_forms(srv: ServerProc, key: KeyPair) -> None:
    now = int(time.time())
    for name, token in {
        "aud string": tok(key, role="admin"),
        "aud list": key.sign(claims(iss=ISS, aud=["other", AUD], role="admin")),
        "expired within the 60 s leeway": tok(key, ttl=-20, role="admin"),
        "nbf and iat within the 60 s leeway": tok(key, role="admin", nbf=now + 30, iat=now + 30),
        "nbf and iat in the past": tok(key, role="admin", nbf=now - 3600, iat=now - 3600),
        "extra claims": tok(key, role="admin", sub="someone", jti=5, scope=["x"]),
    }.items():
        assert srv.rpc("promise.get", {"id": "nope"}, auth=token)[0] == 404, name


def test_auth_log_lines(srv: ServerProc, key: KeyPair) -> None:
    srv.rpc("promise.get", {"id": "team-b.x"}, auth=tok(key, role="w", prefix="team-a"))
    srv.rpc("promise.get", {"id": "x"}, auth="garbage")
    logs = srv.logs()
    for line in ("Loaded public key path=", "key_type=Ed25519", "Auth enabled key=",
                 f"Auth issuer configured issuer={ISS}", f"Auth audience configured audience={AUD}",
                 "Auth forbidden: resource ID does not match prefix kind=promise.get prefix=team-a",
                 "Auth rejected: token verification failed kind=promise.get",
                 "Request rejected by auth kind=promise.get"):
        assert line in logs, line


# ----------------------------------------------------------------------------------- poll stream

def test_poll_needs_a_bearer_token_and_checks_only_authentication(srv: ServerProc, key: KeyPair) -> None:
    url = srv.url + "/poll/g-sse/w1"
    for headers in ({}, {"Authorization": "Bearer garbage"}, {"Authorization": tok(key, role="admin")},
                    {"Authorization": "Bearer " + tok(key, ttl=-120, role="admin")},
                    {"Authorization": "Bearer " + tok(KeyPair("ed25519"), role="admin")}):
        s = SSE(url, headers=headers)
        assert (s.status, s.body, s.headers.get("Content-Type", "").split(";")[0]) == \
            (401, b"Unauthorized", "text/plain"), headers
    assert srv.rpc("debug.stop", {})[0] == 200  # deliveries wait while a debug session runs
    s = SSE(url, headers={"Authorization": "Bearer " + tok(key, role="worker", prefix="team-b")})
    try:
        assert s.status == 200 and s.headers["Content-Type"].startswith("text/event-stream")
        assert srv.rpc("promise.create", {"id": "team-a.sse", "timeoutAt": _far(),
                                          "tags": {"resonate:target": "poll://any@g-sse"}})[0] == 200
        msg = s.next(10)
        assert msg["kind"] == "execute" and msg["data"]["task"]["id"] == "team-a.sse"
    finally:
        s.close()
    assert "Auth rejected: no token provided endpoint=poll" in srv.logs()
