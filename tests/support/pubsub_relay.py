"""What the Pub/Sub emulator leaves out of a push: the subscription's OIDC token.

Real Pub/Sub signs each push to an authenticated endpoint with a Google ID token for the
subscription's service account; the emulator sends none. `OidcRelay` is the push endpoint the
emulator's subscription calls: it adds a Google-format token (RS256, signed with a local key
whose certificate it serves at `certs_url`, as Google serves its own) and forwards the envelope
unchanged to `target` (the dispatch function), answering with the target's status so Pub/Sub's
ack / retry / dead-letter logic sees the real outcome.

    relay = OidcRelay(audience="https://dispatch.test").start()
    relay.target = "http://127.0.0.1:PORT"        # the dispatch function
    relay.push_url                                  # the subscription's push endpoint
    relay.mint(email="other@x", lifetime_s=-120)    # tokens for refusal tests
    relay.forwards                                  # [(status, envelope dict)] per push
"""
from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import urllib3

from tests.support.fake_google_oidc import Issuer

PUSHER = "dispatch-push@resonate-test.iam.gserviceaccount.com"


class _Handler(BaseHTTPRequestHandler):
    relay: OidcRelay

    def log_message(self, *a: Any) -> None:
        pass

    def _reply(self, status: int, body: bytes, ctype: str = "application/json", extra: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        r = self.relay
        if self.path != "/certs":
            return self._reply(404, b"{}")
        r.cert_fetches += 1
        self._reply(200, json.dumps({r.issuer.kid: r.issuer.cert_pem}).encode(),
                    extra={"Cache-Control": "public, max-age=300"})

    def do_POST(self) -> None:
        r = self.relay
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if r.target is None:
            return self._reply(503, b'{"error": "no target yet"}')
        headers = {"Content-Type": "application/json", "Authorization": "Bearer " + r.mint()}
        try:
            resp = r.http.request("POST", r.target, body=body, headers=headers, timeout=60.0, retries=False)
            status, answer = resp.status, resp.data
        except urllib3.exceptions.HTTPError as e:
            status, answer = 502, json.dumps({"error": str(e)}).encode()
        with r.lock:
            r.forwards.append((status, json.loads(body)))
        self._reply(status, answer)


class OidcRelay:
    """Loopback push endpoint + certificate endpoint; one RSA key plays Google's."""

    def __init__(self, audience: str, email: str = PUSHER) -> None:
        self.audience = audience
        self.email = email
        self.issuer = Issuer(kid="dispatch-test-kid")
        self.target: str | None = None
        self.forwards: list[tuple[int, dict]] = []
        self.cert_fetches = 0
        self.lock = threading.Lock()
        self.http = urllib3.PoolManager()
        self._httpd: ThreadingHTTPServer | None = None

    def start(self) -> OidcRelay:
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), type("H", (_Handler,), {"relay": self}))
        threading.Thread(target=self._httpd.serve_forever, name="oidc-relay", daemon=True).start()
        return self

    @property
    def base(self) -> str:
        assert self._httpd is not None
        return f"http://127.0.0.1:{self._httpd.server_address[1]}"

    @property
    def push_url(self) -> str:
        return self.base + "/push"

    @property
    def certs_url(self) -> str:
        return self.base + "/certs"

    def mint(self, audience: str | None = None, email: str | None = None, lifetime_s: float = 3600,
             email_verified: bool = True, iss: str = "https://accounts.google.com", signer: Issuer | None = None) -> str:
        """A Google-format ID token as Pub/Sub sends it (claims overridable for refusal tests)."""
        from google.auth import crypt, jwt

        now = int(time.time())
        key = signer or self.issuer
        claims = {"iss": iss, "aud": audience or self.audience, "azp": "1122334455", "sub": "1122334455",
                  "email": email or self.email, "email_verified": email_verified,
                  "iat": min(now, int(now + lifetime_s) - 1), "exp": int(now + lifetime_s)}
        return jwt.encode(crypt.RSASigner.from_string(key.key_pem, key_id=key.kid), claims).decode()

    def pushed(self) -> list[tuple[int, dict]]:
        with self.lock:
            return list(self.forwards)

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        self.http.clear()
