"""Private deployments (docs/security.md#private-deployments): on a Cloud Run service with
`public=false` a caller presents its Google identity in `X-Serverless-Authorization` for Cloud
Run's invoker check, which reaches the server with the token's signature removed, and its
Resonate JWT where the server always reads it: `head.auth` on `POST /`, `Authorization: Bearer`
on every other route. `X-Serverless-Authorization` is never a Resonate credential.

In process, through the flask test client (`inproc`): the header rules are the routes' own.
"""
from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.auth import CREDENTIAL_HEADER, INVOKER_HEADER, header_credential
from tests.support.envelope import envelope
from tests.support.server import InprocServer, start_server
from tests.support.tokens import GOOGLE_ISS, GoogleCerts, KeyPair, claims

AUD = "resonate"
BASE_URL = "https://api-abc123-uc.a.run.app"  # the audience of the caller's Google identity token
GROUP = "tenant-workers"


def stripped_google_token(audience: str = BASE_URL, email: str = "caller@proj.iam.gserviceaccount.com") -> str:
    """A Google ID token as Cloud Run forwards it: header and payload, the signature removed."""
    def b64(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    now = int(time.time())
    payload = {"iss": GOOGLE_ISS, "aud": audience, "email": email, "email_verified": True, "sub": "1234",
               "iat": now, "exp": now + 3600}
    return f"{b64({'alg': 'RS256', 'kid': 'k1', 'typ': 'JWT'})}.{b64(payload)}."


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair("ed25519")


@pytest.fixture(scope="module")
def srv(key: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[InprocServer]:
    work = tmp_path_factory.mktemp("private")
    s = start_server("inproc", work, env={"RESONATE_AUTH__PUBLICKEY": key.write(work), "RESONATE_AUTH__AUD": AUD})
    assert isinstance(s, InprocServer)
    yield s
    s.stop()


def tenant(key: KeyPair) -> str:
    return key.sign(claims(600, aud=AUD, prefix="tenant/", groups=[f"{GROUP}*"], sub="tenant-worker"))


def rpc(srv: InprocServer, kind: str, data: dict, auth: str | None, headers: dict[str, str]) -> int:
    head = {"auth": auth} if auth is not None else {}
    env = envelope(kind, data, **head)
    with srv.app.test_client() as c:
        r = c.post("/", data=json.dumps(env), headers={"Content-Type": "application/json", **headers})
        body = r.get_json()
    assert body["head"]["status"] == r.status_code, body
    return r.status_code


def poll(srv: InprocServer, path: str, headers: dict[str, str]) -> int:
    """The status of a stream request; an accepted stream is closed unread."""
    c = srv.app.test_client()
    r = c.get(path, headers=headers, buffered=False)
    try:
        return r.status_code
    finally:
        r.close()


def create(id: str) -> dict:
    return {"id": id, "timeoutAt": int(time.time() * 1000) + 600_000}


def bearer(token: str) -> str:
    return f"Bearer {token}"


def test_the_credential_header_is_authorization_only() -> None:
    assert header_credential({CREDENTIAL_HEADER: "Bearer a.b.c"}) == "a.b.c"
    assert header_credential({INVOKER_HEADER: "Bearer a.b.c"}) is None
    assert header_credential({INVOKER_HEADER: "Bearer a.b.c", CREDENTIAL_HEADER: "Bearer d.e.f"}) == "d.e.f"


def test_a_resonate_jwt_only_in_x_serverless_authorization_is_refused(srv: InprocServer, key: KeyPair) -> None:
    admin = key.sign(claims(600, aud=AUD, role="admin"))
    only_there = {INVOKER_HEADER: bearer(admin)}
    mark = len(srv.logs())
    assert rpc(srv, "promise.create", create(f"tenant/x-{uuid.uuid4().hex}"), None, only_there) == 401
    assert poll(srv, f"/poll/{GROUP}/w1", only_there) == 401
    log = srv.logs()[mark:]
    assert "Auth rejected: no token provided kind=promise.create" in log
    assert "Auth rejected: no token provided endpoint=poll note=" in log  # the operator's hint
    # nor does it make up for a bad credential where one belongs
    bad = {INVOKER_HEADER: bearer(admin), CREDENTIAL_HEADER: bearer(KeyPair("ed25519").sign(claims(600, aud=AUD)))}
    assert poll(srv, f"/poll/{GROUP}/w1", bad) == 401
    assert rpc(srv, "promise.create", create(f"tenant/x-{uuid.uuid4().hex}"), "not-a-jwt", bad) == 401


def test_resonate_jwt_beside_a_stripped_google_identity_is_accepted_per_scope(srv: InprocServer,
                                                                               key: KeyPair) -> None:
    tok = tenant(key)
    both = {INVOKER_HEADER: bearer(stripped_google_token()), CREDENTIAL_HEADER: bearer(tok)}
    pid = f"tenant/p-{uuid.uuid4().hex}"
    # POST /: head.auth is the credential, whatever the headers hold
    assert rpc(srv, "promise.create", create(pid), tok, both) == 200
    assert rpc(srv, "promise.get", {"id": pid}, tok, {INVOKER_HEADER: bearer(stripped_google_token())}) == 200
    assert rpc(srv, "promise.create", create(f"other/p-{uuid.uuid4().hex}"), tok, both) == 403  # outside the prefix
    # /poll: Authorization is the credential
    assert poll(srv, f"/poll/{GROUP}-a/w-{uuid.uuid4().hex[:6]}", both) == 200
    assert poll(srv, f"/poll/other-workers/w-{uuid.uuid4().hex[:6]}", both) == 403  # a group it may not poll


def test_post_reads_head_auth_never_the_request_headers(srv: InprocServer, key: KeyPair) -> None:
    tok = tenant(key)
    pid = f"tenant/h-{uuid.uuid4().hex}"
    assert rpc(srv, "promise.create", create(pid), None, {CREDENTIAL_HEADER: bearer(tok)}) == 401
    assert rpc(srv, "promise.create", create(pid), tok, {CREDENTIAL_HEADER: "Bearer garbage",
                                                          INVOKER_HEADER: "Bearer garbage"}) == 200


def test_google_identity_in_authorization_without_x_serverless_authorization(srv: InprocServer,
                                                                             key: KeyPair) -> None:
    """The caller put its Google identity in `Authorization` (Cloud Run checks it there when
    `X-Serverless-Authorization` is absent and forwards it without its signature): `POST /` works
    as ever with `head.auth`; a stream has no place left for its Resonate JWT and is refused."""
    tok = tenant(key)
    google = {CREDENTIAL_HEADER: bearer(stripped_google_token())}
    assert rpc(srv, "promise.create", create(f"tenant/g-{uuid.uuid4().hex}"), tok, google) == 200
    assert poll(srv, f"/poll/{GROUP}/w-{uuid.uuid4().hex[:6]}", google) == 401


@pytest.mark.process  # a loopback stand-in for Google's certificate endpoints
def test_a_google_signed_token_counts_only_where_a_credential_belongs(key: KeyPair, tmp_path: Path) -> None:
    """With `auth.google_*` on, a Google-signed identity token is a credential in `head.auth` and
    `Authorization`, never in `X-Serverless-Authorization` (there, even unstripped, it is Cloud
    Run's business)."""
    google = GoogleCerts().start()
    email = "worker@proj.iam.gserviceaccount.com"
    s = start_server("inproc", tmp_path, env={
        "RESONATE_AUTH__PUBLICKEY": key.write(tmp_path), "RESONATE_AUTH__AUD": AUD,
        "RESONATE_AUTH__GOOGLE_AUDIENCE": BASE_URL, "RESONATE_AUTH__GOOGLE_SERVICE_ACCOUNTS": f'["{email}"]',
        "RESONATE_AUTH__GOOGLE_CERTS_URL": google.url + "/certs"})
    try:
        assert isinstance(s, InprocServer)
        signed = google.token(BASE_URL, email)
        assert rpc(s, "promise.create", create(f"g-{uuid.uuid4().hex}"), None, {INVOKER_HEADER: bearer(signed)}) == 401
        assert poll(s, f"/poll/{GROUP}/w1", {INVOKER_HEADER: bearer(signed)}) == 401
        assert rpc(s, "promise.create", create(f"g-{uuid.uuid4().hex}"), signed, {}) == 200  # as today
        assert poll(s, f"/poll/{GROUP}/w2", {CREDENTIAL_HEADER: bearer(signed)}) == 200
        # the stripped form Cloud Run forwards never verifies, wherever it is
        stripped = signed.rsplit(".", 1)[0] + "."
        assert rpc(s, "promise.create", create(f"g-{uuid.uuid4().hex}"), stripped, {}) == 401
    finally:
        s.stop()
        google.stop()
