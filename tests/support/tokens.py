"""Keys and tokens for the inbound-auth tests: locally generated key pairs written as PEM files,
JWTs minted with PyJWT, and a loopback stand-in for Google's certificate endpoints."""
from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from cryptography.x509.oid import NameOID

from tests.support.server import free_port

SPKI = serialization.PublicFormat.SubjectPublicKeyInfo
PKCS1 = serialization.PublicFormat.PKCS1


class KeyPair:
    """A private key, its public PEM (SPKI or PKCS#1), and the algorithm it signs with."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        if kind.startswith("rsa"):
            self.private: Any = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.alg = "RS256"
        elif kind == "ec256":
            self.private, self.alg = ec.generate_private_key(ec.SECP256R1()), "ES256"
        elif kind == "ec384":
            self.private, self.alg = ec.generate_private_key(ec.SECP384R1()), "ES384"
        elif kind == "ed25519":
            self.private, self.alg = ed25519.Ed25519PrivateKey.generate(), "EdDSA"
        else:
            raise ValueError(kind)
        fmt = PKCS1 if kind == "rsa-pkcs1" else SPKI
        self.public_pem = self.private.public_key().public_bytes(serialization.Encoding.PEM, fmt)

    def write(self, folder: Path) -> str:
        path = folder / f"{self.kind}.pub.pem"
        path.write_bytes(self.public_pem)
        return str(path)

    def sign(self, claims: dict[str, Any], alg: str | None = None, headers: dict[str, Any] | None = None) -> str:
        return jwt.encode(claims, self.private, algorithm=alg or self.alg, headers=headers)


def claims(ttl: int = 300, **extra: Any) -> dict[str, Any]:
    """A payload expiring `ttl` seconds from now, plus the given claims."""
    return {"exp": int(time.time()) + ttl, **extra}


def unsigned(payload: dict[str, Any], alg: str = "HS256") -> str:
    """A token with any signature (the `publickey = "none"` mode accepts it)."""
    def b64(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    return f"{b64({'alg': alg, 'typ': 'JWT'})}.{b64(payload)}.c2lnbmF0dXJl"


def hs256_with(secret: bytes, payload: dict[str, Any]) -> str:
    """HS256 keyed with `secret` (e.g. a public PEM: the algorithm-confusion attack)."""
    def b64(raw: bytes) -> str:
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    msg = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + "." + b64(json.dumps(payload).encode())
    return msg + "." + b64(hmac.new(secret, msg.encode(), hashlib.sha256).digest())


# ----------------------------------------------------------------------------- Google stand-in

GOOGLE_ISS = "https://accounts.google.com"


class GoogleCerts:
    """Google's signer and its certificate endpoints on loopback: `/certs` answers the x509
    format (`{kid: PEM certificate}`, as oauth2/v1/certs), `/jwks` the JWK set (oauth2/v3/certs);
    `hits` counts the fetches (the server must cache them)."""

    def __init__(self, kid: str = "kid-1") -> None:
        self.kid = kid
        self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "fake-google")])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self.key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                .not_valid_after(now + datetime.timedelta(days=1)).sign(self.key, hashes.SHA256()))
        self.cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
        jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(self.key.public_key()))
        self.jwks = {"keys": [{**jwk, "kid": kid, "alg": "RS256", "use": "sig"}]}
        self.hits: dict[str, int] = {}
        self.port = free_port()
        self._httpd: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def token(self, audience: str, email: str, ttl: int = 300, key: Any = None, **extra: Any) -> str:
        now = int(time.time())
        payload = {"iss": GOOGLE_ISS, "aud": audience, "azp": "1234567890", "sub": "1234567890",
                   "email": email, "email_verified": True, "iat": now, "exp": now + ttl, **extra}
        return jwt.encode(payload, key or self.key, algorithm="RS256", headers={"kid": self.kid})

    def start(self) -> GoogleCerts:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits[self.path] = outer.hits.get(self.path, 0) + 1
                body = {"/certs": {outer.kid: outer.cert_pem}, "/jwks": outer.jwks}.get(self.path)
                raw = json.dumps(body).encode()
                self.send_response(200 if body is not None else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Cache-Control", "public, max-age=3600")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def log_message(self, *args: Any) -> None:
                pass

        self._httpd = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._httpd.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
