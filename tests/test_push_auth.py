"""Outbound auth for HTTP pushes (docs/operations.md), end to end and offline.

A live server (SQLite: in-process delivery; Postgres: cluster delivery) pushes the execute
message of a promise whose `resonate:target` is a loopback worker. In `gcp` mode the server
mints ID tokens from a fake GCE metadata server (`GCE_METADATA_HOST`), and the worker checks
them as a Cloud Run service does (`verify_token` against the issuer's certs, audience = the URL
it was called at, or the configured audience). Helpers: `tests/support/fake_google_oidc.py`.
"""
from __future__ import annotations

import base64
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator

import pg8000.native
import pytest

from shared.delivery.push_auth import GoogleIdTokens, MintError
from shared.storage.postgres import parse_url
from tests.support import marks
from tests.support.fake_google_oidc import FakeMetadata, Issuer, TokenEndpoint, Worker
from tests.support.server import ServerProc, start_server
from tests.support.wait import wait_until

HOUR = 3_600_000
MODE = "RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__MODE"
backends = pytest.mark.parametrize("backend", [marks.param("sqlite"), marks.param("postgres")])


@pytest.fixture(scope="module")
def issuer() -> Issuer:
    return Issuer()


@pytest.fixture
def launch(tmp_path) -> Iterator[Callable[..., ServerProc]]:
    started: list[ServerProc] = []

    def go(backend: str, env: dict[str, str]) -> ServerProc:
        srv = start_server(backend, tmp_path / f"s{len(started)}", debug=False, env=env)
        started.append(srv)
        return srv

    yield go
    for srv in started:
        srv.stop()


@pytest.fixture
def servers() -> Iterator[list]:
    """Fakes started by a test, stopped after it."""
    running: list = []
    yield running
    for s in running:
        s.stop()


def gcp_env(md: FakeMetadata, **extra: str) -> dict[str, str]:
    # no key file, whatever the caller's environment holds: the metadata server it is
    return {MODE: "gcp", "GCE_METADATA_HOST": md.host, "GOOGLE_APPLICATION_CREDENTIALS": "", **extra}


def create(srv: ServerProc, id: str, target: str) -> None:
    st, d = srv.rpc("promise.create", {"id": id, "timeoutAt": int(time.time() * 1000) + HOUR,
                                       "tags": {"resonate:target": target}})
    assert st == 200, d



def outbox_rows(srv: ServerProc) -> int:
    if srv.backend == "sqlite":
        with sqlite3.connect(f"file:{srv.db}?mode=ro", uri=True) as c:
            return c.execute("SELECT count(*) FROM outbox").fetchone()[0]
    c = pg8000.native.Connection(**parse_url(srv.pg_url or ""))
    try:
        return c.run("SELECT count(*) FROM outbox")[0][0]
    finally:
        c.close()


def token_of(value: str) -> str:
    assert value.startswith("Bearer "), value
    return value[len("Bearer "):]


@backends
def test_bearer_mode_sends_the_static_token(backend, launch, issuer, servers):
    w = Worker(issuer, verify=False).start()
    servers.append(w)
    srv = launch(backend, {MODE: "bearer", "RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__TOKEN": "s3cret-push-token",
                           "RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__ALLOW": f"http://{w.host}"})
    create(srv, "b1", w.url("/bearer"))
    assert wait_until(lambda: len(w.received) == 1, 10), srv.logs()
    assert w.received[0].headers["authorization"] == "Bearer s3cret-push-token"
    assert w.received[0].body["data"]["task"]["id"] == "b1"
    assert "HTTP push outbound auth enabled mode=Bearer" in srv.logs()
    assert "s3cret-push-token" not in srv.logs()


@backends
def test_mode_none_sends_no_auth_header(backend, launch, issuer, servers):
    w = Worker(issuer, verify=False).start()
    servers.append(w)
    srv = launch(backend, {MODE: "none"})
    create(srv, "n1", w.url("/none"))
    assert wait_until(lambda: len(w.received) == 1, 10), srv.logs()
    assert "authorization" not in w.received[0].headers
    assert "HTTP push outbound auth enabled mode=None" in srv.logs()


@backends
def test_gcp_token_has_the_push_url_as_audience_and_is_reused(backend, launch, issuer, servers):
    md, w = FakeMetadata(issuer).start(), Worker(issuer).start()
    servers += [md, w]
    srv = launch(backend, gcp_env(md))
    u1, u2 = w.url("/run/a?x=1&y=two"), w.url("/run/b")
    for i in range(3):  # concurrent pushes to one URL: one mint, the others wait for it
        create(srv, f"a{i}", u1)
    create(srv, "b0", u2)
    assert wait_until(lambda: len(w.accepted()) == 4, 15), (w.received, srv.logs())
    assert all(p.status == 200 for p in w.received), [p.status for p in w.received]
    assert md.hits == {u1: 1, u2: 1}  # the full URL, path and query included, once per audience
    by_path = {p.path: p for p in w.received}
    assert by_path["/run/a?x=1&y=two"].claims["aud"] == u1 and by_path["/run/b"].claims["aud"] == u2
    tokens = {token_of(p.headers["authorization"]) for p in w.received if p.path.startswith("/run/a")}
    assert len(tokens) == 1
    create(srv, "a3", u1)  # later pushes reuse the cached token too
    assert wait_until(lambda: len(w.accepted()) == 5, 10)
    assert md.hits == {u1: 1, u2: 1}
    logs = srv.logs()
    assert "HTTP push outbound auth enabled mode=Gcp" in logs
    assert not any(token_of(p.headers["authorization"]) in logs for p in w.received)


@backends
def test_gcp_configured_audience_in_a_custom_header(backend, launch, issuer, servers):
    aud, header = "https://worker-xyz-uc.a.run.app", "X-Serverless-Authorization"
    md, w = FakeMetadata(issuer).start(), Worker(issuer, header=header, audience=aud).start()
    servers += [md, w]
    srv = launch(backend, gcp_env(md, RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__AUDIENCE=aud,
                                  RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__HEADER=header,
                                  RESONATE_TRANSPORTS__HTTP_PUSH__AUTH__ALLOW=f"http://{w.host}"))
    create(srv, "c1", w.url("/one"))
    create(srv, "c2", w.url("/two"))
    assert wait_until(lambda: len(w.accepted()) == 2, 15), (w.received, srv.logs())
    assert md.hits == {aud: 1}
    for p in w.received:
        assert "authorization" not in p.headers and p.claims["aud"] == aud
        assert p.headers["x-serverless-authorization"].startswith("Bearer ")


@backends
def test_gcp_token_is_minted_again_once_it_expires(backend, launch, issuer, servers):
    md, w = FakeMetadata(issuer, lifetime_s=4).start(), Worker(issuer).start()
    servers += [md, w]
    srv = launch(backend, gcp_env(md))
    u = w.url("/short")
    create(srv, "e1", u)
    assert wait_until(lambda: len(w.accepted()) == 1, 10), srv.logs()
    create(srv, "e2", u)
    assert wait_until(lambda: len(w.accepted()) == 2, 10)
    first, second = w.accepted()[:2]
    assert md.hits == {u: 1} and first.headers["authorization"] == second.headers["authorization"]
    time.sleep(max(0.0, first.claims["exp"] - time.time()) + 0.2)  # the cached token has expired
    create(srv, "e3", u)
    assert wait_until(lambda: len(w.accepted()) == 3, 10), (w.received, srv.logs())
    third = w.accepted()[2]
    assert md.hits == {u: 2} and third.claims["exp"] > first.claims["exp"]
    assert all(p.status == 200 for p in w.received)  # never an expired token on the wire


@backends
def test_gcp_token_is_refreshed_in_the_background_before_it_expires(backend, launch, issuer, servers):
    md, w = FakeMetadata(issuer, lifetime_s=8).start(), Worker(issuer).start()
    servers += [md, w]
    srv = launch(backend, gcp_env(md))
    u = w.url("/ahead")
    create(srv, "r1", u)
    assert wait_until(lambda: len(w.accepted()) == 1, 10), srv.logs()
    first = w.accepted()[0]
    # the last quarter of its life (2 s) but more than a tenth (0.8 s) before exp: still sent
    time.sleep(max(0.0, first.claims["exp"] - 1.4 - time.time()))
    create(srv, "r2", u)
    assert wait_until(lambda: len(w.accepted()) == 2, 10)
    assert w.accepted()[1].headers["authorization"] == first.headers["authorization"]
    assert wait_until(lambda: md.hits == {u: 2}, 5), md.hits  # minted meanwhile, off the push
    create(srv, "r3", u)
    assert wait_until(lambda: len(w.accepted()) == 3, 10)
    assert w.accepted()[2].claims["exp"] > first.claims["exp"] and md.hits == {u: 2}


@backends
def test_metadata_server_down_fails_the_push_until_it_returns(backend, launch, issuer, servers):
    md, w = FakeMetadata(issuer), Worker(issuer).start()  # the metadata server is not up yet
    servers += [md, w]
    srv = launch(backend, gcp_env(md))
    u = w.url("/later")
    create(srv, "d1", u)
    assert wait_until(lambda: "OIDC ID token mint failed" in srv.logs(), 10), srv.logs()
    time.sleep(0.5)
    assert w.received == []  # never sent without the token
    assert outbox_rows(srv) == 1  # the row waits for a retry
    md.start()
    assert wait_until(lambda: len(w.accepted()) == 1, 30), (w.received, srv.logs())
    assert wait_until(lambda: outbox_rows(srv) == 0, 5)
    assert md.hits == {u: 1} and w.received[0].body["data"]["task"]["id"] == "d1"


# ---- the token cache alone (fake clock and minter) ----------------------------------------------

def fake_jwt(exp: float, n: int) -> str:
    seg = base64.urlsafe_b64encode(json.dumps({"exp": exp, "n": n}).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJub25lIn0.{seg}.sig"


def test_cache_mints_once_for_concurrent_callers_and_refreshes_in_the_background():
    now = [1000.0]
    mints: list[str] = []
    gate, fail = threading.Event(), [False]

    def minter(aud: str) -> str:
        gate.wait(5)
        if fail[0]:
            raise MintError("metadata server answered 503")
        mints.append(aud)
        return fake_jwt(now[0] + 3600, len(mints))

    auth = GoogleIdTokens(minter=minter, clock=lambda: now[0])
    got: list[str] = []
    threads = [threading.Thread(target=lambda: got.append(auth.value("http://w/x"))) for _ in range(20)]
    for t in threads:
        t.start()
    time.sleep(0.2)
    gate.set()
    for t in threads:
        t.join(5)
    assert len(got) == 20 and len(set(got)) == 1 and mints == ["http://w/x"]
    now[0] += 3600 - 200  # inside the last 5 minutes: served at once, refreshed behind
    assert auth.value("http://w/x") == got[0]
    assert wait_until(lambda: len(mints) == 2, 5)
    assert wait_until(lambda: auth.value("http://w/x") != got[0], 5)
    now[0] += 3600 - 200
    fail[0] = True  # a failed background refresh keeps the current token while it is valid
    assert auth.value("http://w/x").startswith("Bearer ")
    now[0] += 190  # within 30 s of exp: not sent any more, and minting fails
    with pytest.raises(MintError):
        auth.value("http://w/x")


def test_key_file_credentials_are_exchanged_at_their_token_uri(monkeypatch, tmp_path, issuer, servers):
    from google.auth import jwt

    ep = TokenEndpoint(issuer).start()
    servers.append(ep)
    key = tmp_path / "sa.json"
    key.write_text(json.dumps(ep.key_file(issuer.key_pem)))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(key))
    auth = GoogleIdTokens()
    tok = token_of(auth.value("https://w.example/run"))
    claims = jwt.decode(tok, certs={issuer.kid: issuer.cert_pem}, audience="https://w.example/run")
    assert claims["email"] and ep.audiences == ["https://w.example/run"]
    assert token_of(auth.value("https://w.example/run")) == tok and len(ep.audiences) == 1
