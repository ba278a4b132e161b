"""Loopback stand-ins for Google's OIDC chain (gcp-stack.md recipes 5 and 6), no network.

    issuer = Issuer()                       # an RSA key + self-signed cert; signs ID tokens
    md = FakeMetadata(issuer).start()       # GCE metadata server: identity?audience=… → a JWT
    env = {"GCE_METADATA_HOST": md.host}    # for the server subprocess
    w = Worker(issuer).start()              # receives pushes, verifies them like Cloud Run
    ... md.hits == {"http://…/x": 1}; w.received[0].claims["aud"]; md.stop(); md.start()

The worker checks tokens with `google.oauth2.id_token.verify_token(certs_url=<its /certs>)`:
signature, `aud`, `exp`, plus the issuer; a push without a valid token gets 401.
"""
from __future__ import annotations

import datetime
import json
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from tests.support.server import free_port

ISSUER = "https://accounts.google.com"
EMAIL = "pusher@resonate-test.iam.gserviceaccount.com"


class Issuer:
    """Plays Google's token signer: one RSA key, published as a cert under `kid`."""

    def __init__(self, kid: str = "test-kid-1") -> None:
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-google")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1)).sign(key, hashes.SHA256()))
        self.kid = kid
        self.key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                         serialization.NoEncryption()).decode()
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()

    def sign(self, audience: str, lifetime_s: float) -> str:
        from google.auth import crypt, jwt

        now = int(time.time())
        claims = {"iss": ISSUER, "aud": audience, "sub": "1234567890", "email": EMAIL, "email_verified": True,
                  "iat": now, "exp": int(now + lifetime_s)}
        return jwt.encode(crypt.RSASigner.from_string(self.key_pem, key_id=self.kid), claims).decode()


class _Server:
    """A ThreadingHTTPServer on a fixed loopback port that can go down and come back."""
    handler: type[BaseHTTPRequestHandler]

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> Any:
        handler = type("H", (self.handler,), {"owner": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None


class _Quiet(BaseHTTPRequestHandler):
    owner: Any

    def log_message(self, *a: Any) -> None:
        pass

    def reply(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


class _MetadataHandler(_Quiet):
    def do_GET(self) -> None:
        md: FakeMetadata = self.owner
        flavor = {"Metadata-Flavor": "Google"}
        if self.headers.get("Metadata-Flavor") != "Google":
            return self.reply(403, b"Missing Metadata-Flavor:Google header.", flavor)
        u = urlsplit(self.path)
        if u.path == "/computeMetadata/v1/instance/service-accounts/default/identity":
            aud = parse_qs(u.query).get("audience", [""])[0]
            if not aud:
                return self.reply(400, b"non-empty audience parameter required", flavor)
            with md.lock:
                md.hits[aud] = md.hits.get(aud, 0) + 1
            return self.reply(200, md.issuer.sign(aud, md.lifetime_s).encode(), flavor)
        if u.path.rstrip("/") == "/computeMetadata/v1/instance/service-accounts/default":
            return self.reply(200, json.dumps({"email": EMAIL, "aliases": ["default"]}).encode(), flavor)
        if u.path == "/":
            return self.reply(200, b"", flavor)
        return self.reply(404, b"not found", flavor)


class FakeMetadata(_Server):
    """GCE metadata server: `hits` counts identity requests per audience."""
    handler = _MetadataHandler

    def __init__(self, issuer: Issuer, lifetime_s: float = 3600, port: int | None = None) -> None:
        super().__init__(port)
        self.issuer = issuer
        self.lifetime_s = lifetime_s
        self.hits: dict[str, int] = {}
        self.lock = threading.Lock()


@dataclass
class Push:
    path: str
    headers: dict[str, str]
    body: dict
    claims: dict | None = None  # the verified token's claims (gcp mode)
    status: int = 200


class _WorkerHandler(_Quiet):
    def do_GET(self) -> None:
        w: Worker = self.owner
        if self.path == "/certs":
            return self.reply(200, json.dumps({w.issuer.kid: w.issuer.cert_pem}).encode(),
                              {"Content-Type": "application/json"})
        self.reply(404)

    def do_POST(self) -> None:
        w: Worker = self.owner
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        p = Push(self.path, {k.lower(): v for k, v in self.headers.items()}, body)
        if w.verify:
            p.status, p.claims = w.check(self.headers.get(w.header, ""), f"http://{w.host}{self.path}")
        with w.lock:
            w.received.append(p)
        self.reply(p.status)


class Worker(_Server):
    """A push target that, with `verify`, accepts only `<header>: Bearer <valid ID token>` whose
    audience is `audience` or else the full URL it was called at — as Cloud Run does."""
    handler = _WorkerHandler

    def __init__(self, issuer: Issuer, verify: bool = True, header: str = "Authorization",
                 audience: str | None = None) -> None:
        super().__init__()
        self.issuer, self.verify, self.header, self.audience = issuer, verify, header, audience
        self.received: list[Push] = []
        self.lock = threading.Lock()

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def check(self, value: str, called_at: str) -> tuple[int, dict | None]:
        import google.auth.transport.requests
        from google.oauth2 import id_token

        if not value.startswith("Bearer "):
            return 401, None
        try:
            claims = id_token.verify_token(value[len("Bearer "):], google.auth.transport.requests.Request(),
                                           audience=self.audience or called_at, certs_url=self.url("/certs"))
        except ValueError:
            return 401, None
        if claims.get("iss") not in (ISSUER, "accounts.google.com") or claims.get("email") != EMAIL:
            return 403, None
        return 200, claims

    def accepted(self) -> list[Push]:
        with self.lock:
            return [p for p in self.received if p.status == 200]


class _TokenHandler(_Quiet):
    def do_POST(self) -> None:
        from google.auth import jwt

        t: TokenEndpoint = self.owner
        form = parse_qs(self.rfile.read(int(self.headers["Content-Length"])).decode())
        assertion = jwt.decode(form["assertion"][0], verify=False)  # signed with the key file's key
        aud = assertion["target_audience"]
        t.audiences.append(aud)
        self.reply(200, json.dumps({"id_token": t.issuer.sign(aud, 3600)}).encode(),
                   {"Content-Type": "application/json"})


class TokenEndpoint(_Server):
    """Google's OAuth token endpoint for a service-account key file: exchanges the signed
    assertion (it carries `target_audience`) for an ID token; `audiences` lists the exchanges."""
    handler = _TokenHandler

    def __init__(self, issuer: Issuer) -> None:
        super().__init__()
        self.issuer = issuer
        self.audiences: list[str] = []

    def key_file(self, key_pem: str) -> dict:
        """A service-account key file whose `token_uri` is this endpoint."""
        return {"type": "service_account", "project_id": "resonate-test", "private_key_id": "sa-kid",
                "private_key": key_pem, "client_email": EMAIL, "client_id": "1",
                "token_uri": f"http://{self.host}/token"}
