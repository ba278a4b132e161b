"""Google OIDC identity tokens as inbound credentials (`auth.google_*`, shared/auth_google.py).

A loopback server plays Google's certificate endpoints (x509 `/certs` as oauth2/v1/certs, JWK
`/jwks` as oauth2/v3/certs); tokens are RS256 JWTs in Google's format signed by its key. Accepted:
Google-signed, configured audience, allowed service account (full access). Everything else: 401.
"""
from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.server import ServerProc, start_server
from tests.support.sse import SSE
from tests.support.tokens import GoogleCerts, KeyPair, claims

pytestmark = pytest.mark.process

AUDIENCE = "https://resonate-api.example.run.app"
ALLOWED = "worker@proj.iam.gserviceaccount.com"


@pytest.fixture(scope="module")
def google() -> Iterator[GoogleCerts]:
    g = GoogleCerts().start()
    yield g
    g.stop()


def _server(tmp: Path, google: GoogleCerts, path: str, publickey: str | None) -> ServerProc:
    env = {"RESONATE_AUTH__GOOGLE_AUDIENCE": AUDIENCE,
           "RESONATE_AUTH__GOOGLE_SERVICE_ACCOUNTS": f'["{ALLOWED}","other@proj.iam.gserviceaccount.com"]',
           "RESONATE_AUTH__GOOGLE_CERTS_URL": google.url + path}
    if publickey is not None:
        env["RESONATE_AUTH__PUBLICKEY"] = publickey
    return start_server("memory", tmp, env=env)


def _create(s: ServerProc, token: str | None) -> tuple[int, object]:
    return s.rpc("promise.create", {"id": f"g.{uuid.uuid4().hex}", "timeoutAt": int(time.time() * 1000) + 10**9},
                 **({"auth": token} if token is not None else {}))


def test_google_tokens_beside_the_configured_key(google: GoogleCerts, tmp_path: Path) -> None:
    key = KeyPair("ed25519")
    s = _server(tmp_path, google, "/certs", key.write(tmp_path))
    try:
        good = google.token(AUDIENCE, ALLOWED)
        assert _create(s, good)[0] == 200
        assert s.rpc("promise.search", {}, auth=good)[0] == 200  # role admin: searches too
        assert s.rpc("debug.snap", {}, auth=good)[0] == 200
        assert _create(s, key.sign(claims(role="admin")))[0] == 200  # the own issuer still works
        refused = {
            "wrong audience": google.token("https://elsewhere", ALLOWED),
            "account not allowed": google.token(AUDIENCE, "intruder@proj.iam.gserviceaccount.com"),
            "email not verified": google.token(AUDIENCE, ALLOWED, email_verified=False),
            "no email": google.token(AUDIENCE, None),
            "expired": google.token(AUDIENCE, ALLOWED, ttl=-600),
            "not Google's key": google.token(AUDIENCE, ALLOWED, key=KeyPair("rsa").private),
            "unknown issuer, same key": google.token(AUDIENCE, ALLOWED, iss="https://evil.example"),
        }
        before = s.rpc("debug.snap", {}, auth=good)[1]
        for name, token in refused.items():
            assert _create(s, token) == (401, "Unauthorized"), name
        assert s.rpc("debug.snap", {}, auth=good)[1] == before
        # the account's unique id (`sub`) may stand in for the email on the allow-list
        sub = google.token(AUDIENCE, None, sub=ALLOWED)
        assert _create(s, sub)[0] == 200
        # the poll stream takes the Google token as a bearer token
        ok = SSE(s.url + "/poll/g/1", headers={"Authorization": f"Bearer {good}"})
        bad = SSE(s.url + "/poll/g/2", headers={"Authorization": f"Bearer {refused['account not allowed']}"})
        try:
            assert (ok.status, bad.status, bad.body) == (200, 401, b"Unauthorized")
        finally:
            ok.close()
        assert google.hits.get("/certs") == 1, google.hits  # cached for the answer's max-age
        assert "Google identity token: service account not allowed" in s.logs()
    finally:
        s.stop()


def test_google_only_with_jwks_certificates(google: GoogleCerts, tmp_path: Path) -> None:
    s = _server(tmp_path, google, "/jwks", None)
    try:
        assert _create(s, google.token(AUDIENCE, ALLOWED))[0] == 200
        assert _create(s, google.token(AUDIENCE, "intruder@x.iam.gserviceaccount.com")) == (401, "Unauthorized")
        assert _create(s, google.token("https://elsewhere", ALLOWED)) == (401, "Unauthorized")
        assert _create(s, KeyPair("ed25519").sign(claims(role="admin"))) == (401, "Unauthorized")  # no key: no JWTs
        assert _create(s, None) == (401, "Unauthorized")
    finally:
        s.stop()


def test_unreachable_certificates_answer_503(google: GoogleCerts, tmp_path: Path) -> None:
    s = _server(tmp_path, google, "/missing", None)
    try:
        assert _create(s, google.token(AUDIENCE, ALLOWED)) == (503, "Service unavailable: token could not be checked")
    finally:
        s.stop()
