"""Inbound JWT auth (docs/protocol.md, docs/operations.md) on a live local server.

Keys are generated here and written as PEM files; tokens are minted with PyJWT. The core
property: no request outside a token's prefix (or without a valid token) changes anything —
every refusal is checked against `debug.snap` taken with an admin token before and after.
"""
from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import requests

from shared.auth import may_use_group
from tests.support.server import ServerProc, process_backends, start_server
from tests.support.sse import SSE, bearer_stream, refusal
from tests.support.tokens import KeyPair, claims, hs256_with, unsigned
from tests.support.wait import wait_until

ISS, AUD = "https://issuer.test", "resonate-api"
ADDR = "poll://any@g-auth"
LEASE = 600_000


def _far() -> int:
    return int(time.time() * 1000) + 10**9


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair("ed25519")


def _auth_server(backend: str, key: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    work = tmp_path_factory.mktemp(f"auth-{backend}")
    env = {"RESONATE_AUTH__PUBLICKEY": key.write(work), "RESONATE_AUTH__ISS": ISS, "RESONATE_AUTH__AUD": AUD}
    s = start_server(backend, work, env=env)
    s.token = tok(key, role="admin")
    yield s
    s.stop()


@pytest.fixture(scope="module")
def srv(key: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """An in-process memory server (debug on) with an Ed25519 key and required `iss` and `aud`:
    the checks of `head.auth` live in the service, whatever carries the request."""
    yield from _auth_server("inproc", key, tmp_path_factory)


@pytest.fixture(scope="module")
def proc_srv(key: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """The same as a process: for what only a process shows (its log, an HTTP header)."""
    yield from _auth_server("memory", key, tmp_path_factory)


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


@pytest.mark.process
def test_invalid_tokens_are_refused_and_change_nothing(proc_srv: ServerProc, key: KeyPair, tmp_path: Path) -> None:
    srv = proc_srv
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
    # the HTTP header is not where POST / looks
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


@pytest.mark.process
def test_auth_log_lines(proc_srv: ServerProc, key: KeyPair) -> None:
    srv = proc_srv
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

POLL_CAP = 3  # transports.http_poll.max_connections_per_token of the poll servers


@pytest.fixture(scope="module", params=process_backends())
def psrv(request: pytest.FixtureRequest, key: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    """A server per backend with the same key and a per-token cap of POLL_CAP (no debug session:
    deliveries flow)."""
    work = tmp_path_factory.mktemp(f"poll-{request.param}")
    env = {"RESONATE_AUTH__PUBLICKEY": key.write(work), "RESONATE_AUTH__ISS": ISS, "RESONATE_AUTH__AUD": AUD,
           "RESONATE_TRANSPORTS__HTTP_POLL__MAX_CONNECTIONS_PER_TOKEN": str(POLL_CAP)}
    s = start_server(request.param, work, env=env)
    s.token = tok(key, role="admin")
    yield s
    s.stop()


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:8]}"


def target(s: ServerProc, id: str, address: str) -> None:
    """A pending promise whose task is sent to `address` (created with the admin token)."""
    assert s.rpc("promise.create", {"id": id, "timeoutAt": _far(), "tags": {"resonate:target": address}})[0] == 200


def test_poll_needs_a_valid_bearer_token(psrv: ServerProc, key: KeyPair) -> None:
    url = psrv.url + "/poll/g-sse/w1"
    for headers in ({}, {"Authorization": "Bearer garbage"}, {"Authorization": tok(key, role="admin")},
                    {"Authorization": "Bearer " + tok(key, ttl=-120, role="admin")},
                    {"Authorization": "Bearer " + tok(KeyPair("ed25519"), role="admin")}):
        assert refusal(SSE(url, headers=headers)) == (401, b"Unauthorized", "text/plain"), headers
    assert "Auth rejected: no token provided endpoint=poll" in psrv.logs()


def test_poll_opens_only_groups_the_token_is_entitled_to(psrv: ServerProc, key: KeyPair) -> None:
    """The `groups` claim (names; `x*` a prefix) when present, else the token's prefix; role admin
    and prefix "" any group. Every token has its own subject (no cap or takeover interferes)."""
    def opens(group: str, **token_claims: Any) -> int:
        token = tok(key, sub=uuid.uuid4().hex, **token_claims)
        return refusal(bearer_stream(f"{psrv.url}/poll/{group}/w", token))[0]

    cases = [
        ({"role": "worker", "prefix": "team-a"}, {"team-a": 200, "team-a.jobs": 200, "team-b": 403, "team": 403}),
        ({"role": "worker", "prefix": "team-a", "groups": ["jobs"]},  # the claim replaces the prefix rule
         {"jobs": 200, "jobs2": 403, "team-a": 403}),
        ({"groups": ["jobs-*", "mail"]}, {"jobs-1": 200, "jobs-": 200, "jobs": 403, "mail": 200, "mailer": 403}),
        ({"prefix": "team-a", "groups": []}, {"team-a": 403}),
        ({"prefix": "team-a", "groups": "team-a"}, {"team-a": 403}),  # not a list: nothing
        ({"role": "worker"}, {"team-a": 403, "anything": 403}),  # no prefix and no groups claim
        ({"role": "admin"}, {"anything": 200, "team-b": 200}),
        ({"role": "ADMIN", "prefix": "zzz", "groups": ["none"]}, {"team-b": 200}),
        ({"role": "worker", "prefix": ""}, {"anything": 200}),
    ]
    for token_claims, groups in cases:
        for group, status in groups.items():
            assert opens(quote(group, safe=""), **token_claims) == status, (token_claims, group)
    assert not may_use_group({"role": "worker"}, "\x00x")  # no string prefix: no group at all
    logs = psrv.logs()
    assert "Auth forbidden: group not permitted endpoint=poll group=team-b prefix=team-a" in logs


def test_poll_refuses_another_principals_worker_id_and_the_holder_keeps_receiving(psrv: ServerProc,
                                                                                   key: KeyPair) -> None:
    g = fresh("g-uni")
    url = f"{psrv.url}/poll/{g}/w1"
    holder = bearer_stream(url, tok(key, sub="tenant-b", prefix="tenant-b.", groups=[g]))
    try:
        assert holder.status == 200
        for other in (tok(key, sub="tenant-a", prefix="tenant-a.", groups=[g]),
                      tok(key, role="admin"),  # even an admin cannot take a worker id over
                      tok(key, sub="tenant-a", role="admin")):
            assert refusal(bearer_stream(url, other)) == (409, b"Worker id held by another principal", "text/plain")
        target(psrv, "tenant-b.uni", f"poll://uni@{g}/w1")
        msg = holder.next(15)
        assert msg["kind"] == "execute" and msg["data"]["task"]["id"] == "tenant-b.uni", msg
    finally:
        holder.close()
    assert f"Poll refused: Worker id held by another principal status=409 group={g} id=w1" in psrv.logs()


def test_poll_same_principal_reconnects_and_the_newest_connection_wins(psrv: ServerProc, key: KeyPair) -> None:
    g = fresh("g-re")
    url = f"{psrv.url}/poll/{g}/w1"
    first = bearer_stream(url, tok(key, sub="tenant-b", groups=[g]))
    second = bearer_stream(url, tok(key, ttl=600, sub="tenant-b", groups=[g]))  # a refreshed token
    try:
        assert (first.status, second.status) == (200, 200)
        target(psrv, "re.1", f"poll://uni@{g}/w1")
        assert second.next(15)["data"]["task"]["id"] == "re.1"
        assert first.events.empty()
    finally:
        first.close()
        second.close()


def test_poll_connections_per_token_are_capped(psrv: ServerProc, key: KeyPair) -> None:
    g = fresh("g-cap")
    token = tok(key, sub="tenant-cap", groups=[g])
    streams = [bearer_stream(f"{psrv.url}/poll/{g}/w{i}", token) for i in range(POLL_CAP)]
    extra: list[SSE] = []
    try:
        assert [s.status for s in streams] == [200] * POLL_CAP
        assert refusal(bearer_stream(f"{psrv.url}/poll/{g}/more", token)) == \
            (429, b"Too many poll connections for this token", "text/plain")
        # same subject, another token: one principal, one cap; another principal is not affected
        assert refusal(bearer_stream(f"{psrv.url}/poll/{g}/more", tok(key, ttl=900, sub="tenant-cap",
                                                                          groups=[g])))[0] == 429
        other = bearer_stream(f"{psrv.url}/poll/{g}/other", tok(key, sub="tenant-other", groups=[g]))
        extra.append(other)
        assert other.status == 200
        streams.pop().close()  # a slot frees once the server sees the hang-up

        def reopen() -> bool:
            s = bearer_stream(f"{psrv.url}/poll/{g}/more", token)
            if s.status == 200:
                extra.append(s)
                return True
            assert s.status == 429, (s.status, s.body)
            return False

        assert wait_until(reopen, 15, interval=0.1)
        assert refusal(bearer_stream(f"{psrv.url}/poll/{g}/again", token))[0] == 429
    finally:
        for s in streams + extra:
            s.close()
