"""An offline Cloud SQL for the real Cloud SQL Python Connector: the wire is fake, the client is not.

- **SQL Admin API** (HTTP on loopback): `connectSettings` (region, addresses, server CA,
  database version) and `generateEphemeralCert` (signs the connector's public key with the CA).
  Both check the bearer token, project, region and instance like the real service would reject.
- **Server-side proxy** (mutual TLS 1.3 on port 3307, the port the connector always dials): the
  server certificate is issued by that CA for `project:instance`, and a client must present a
  certificate the CA signed. After the handshake it relays bytes to a real Postgres.

The connector cannot be told another port, so the proxy binds 3307 on a random loopback address
(127.x.y.z, all routed to `lo` on Linux) to keep concurrent test runs apart; the Admin API
announces that address as the instance's private IP.
"""
from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import random
import socket
import ssl
import sys
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID
from google.auth.credentials import Credentials

PROXY_PORT = 3307
TOKEN = "fake-cloudsql-token"


class FakeCredentials(Credentials):
    """Google credentials with a fixed bearer token; refresh (also the connector's IAM
    down-scoping) just renews the expiry, so no metadata server or key file is needed."""

    def __init__(self, token: str = TOKEN) -> None:
        super().__init__()
        self._fixed = token
        self.refresh(None)

    def refresh(self, request: Any) -> None:
        self.token = self._fixed
        self.expiry = datetime.datetime.now(datetime.UTC).replace(tzinfo=None) + datetime.timedelta(hours=1)


class _HttpServer(ThreadingHTTPServer):
    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that hung up (the connector cancels its second Admin API call when the first
        fails) is routine: no traceback for it."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


class FakeCloudSql:
    """One fake instance `project:region:instance` in front of the Postgres at `upstream`.
    `ip_types` are the address types connectSettings announces (connector names: PRIVATE,
    PRIMARY for public), all pointing at the proxy; `stall=True` makes the proxy a black hole. `calls` records every Admin API request as
    (method, path, json body); `handshakes` the client certificate subject of every proxied
    connection."""

    def __init__(self, project: str = "fake-project", region: str = "us-central1", instance: str = "fake-db",
                 upstream: tuple[str, int] = ("127.0.0.1", 5432), ip_types: tuple[str, ...] = ("PRIVATE",),
                 stall: bool = False, database_version: str = "POSTGRES_16") -> None:
        self.project, self.region, self.instance_name = project, region, instance
        self.instance = f"{project}:{region}:{instance}"
        self.upstream, self.ip_types, self.database_version = upstream, ip_types, database_version
        self.calls: list[tuple[str, str, Any]] = []
        self.handshakes: list[str] = []
        now = datetime.datetime.now(datetime.UTC)
        self._ca_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self.ca_cert = (x509.CertificateBuilder().subject_name(_name("Google Cloud SQL Server CA"))
                        .issuer_name(_name("Google Cloud SQL Server CA")).public_key(self._ca_key.public_key())
                        .serial_number(x509.random_serial_number())
                        .not_valid_before(now - datetime.timedelta(minutes=5))
                        .not_valid_after(now + datetime.timedelta(days=1))
                        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                        .sign(self._ca_key, hashes.SHA256()))
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-cloudsql-")
        self._lsock = self._bind_proxy_socket()
        self.ip = self._lsock.getsockname()[0]
        self.server_cert = self._issue_server_cert()
        self._loop = asyncio.new_event_loop()
        self._proxy: asyncio.Server | None = None
        self._loop_thread = threading.Thread(target=self._loop.run_forever, daemon=True, name="fake-cloudsql-proxy")
        self._loop_thread.start()
        if not stall:  # stall: TCP connections queue up but nobody answers the TLS handshake
            asyncio.run_coroutine_threadsafe(self._start_proxy(), self._loop).result(10)
        self._http = _HttpServer(("127.0.0.1", 0), self._handler())
        self._http.daemon_threads = True
        self.endpoint = f"http://127.0.0.1:{self._http.server_address[1]}"
        threading.Thread(target=self._http.serve_forever, daemon=True, name="fake-sqladmin").start()

    # certificates --------------------------------------------------------------------------
    def _issue(self, subject: str, public_key: Any, hours: float, san: x509.GeneralName | None = None) -> x509.Certificate:
        now = datetime.datetime.now(datetime.UTC)
        b = (x509.CertificateBuilder().subject_name(_name(subject)).issuer_name(self.ca_cert.subject)
             .public_key(public_key).serial_number(x509.random_serial_number())
             .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(hours=hours)))
        if san is not None:
            b = b.add_extension(x509.SubjectAlternativeName([san]), critical=False)
        return b.sign(self._ca_key, hashes.SHA256())

    def _issue_server_cert(self) -> x509.Certificate:
        """What Cloud SQL's server proxy presents: CN `project:instance`, issued by the server CA."""
        key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        cert = self._issue(f"{self.project}:{self.instance_name}", key.public_key(), 24,
                           x509.IPAddress(ipaddress.ip_address(self.ip)))
        d = Path(self._tmp.name)
        (d / "server.pem").write_text(_pem(cert))
        (d / "server.key").write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                                         serialization.PrivateFormat.TraditionalOpenSSL,
                                                         serialization.NoEncryption()))
        return cert

    # server-side proxy -----------------------------------------------------------------------
    @staticmethod
    def _bind_proxy_socket() -> socket.socket:
        tried: list[str] = []
        errors: list[str] = []
        for host in [f"127.{random.randint(1, 254)}.{random.randint(0, 255)}.{random.randint(1, 254)}"
                     for _ in range(8)] + ["127.0.0.1"]:
            s = socket.socket()
            try:
                s.bind((host, PROXY_PORT))
                s.listen(64)
                return s
            except OSError as e:
                s.close()
                tried.append(host)
                errors.append(str(e))
        raise RuntimeError(f"fake Cloud SQL: cannot bind port {PROXY_PORT} (the connector's fixed server-proxy "
                           f"port) on any of {', '.join(tried)}: {errors[-1]}")

    async def _start_proxy(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_3
        ctx.load_cert_chain(Path(self._tmp.name) / "server.pem", Path(self._tmp.name) / "server.key")
        ctx.verify_mode = ssl.CERT_REQUIRED  # mutual TLS: only certificates this CA issued get in
        ctx.load_verify_locations(cadata=_pem(self.ca_cert))
        self._proxy = await asyncio.start_server(self._relay, sock=self._lsock, ssl=ctx)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert") or {}
        self.handshakes.append(dict(x[0] for x in peer.get("subject", ())).get("commonName", "?"))
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return

        async def pump(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                w.close()

        await asyncio.gather(pump(reader, up_writer), pump(up_reader, writer))

    # SQL Admin API ---------------------------------------------------------------------------
    def _handler(self) -> type[BaseHTTPRequestHandler]:
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, body: dict[str, Any]) -> None:
                raw = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            def _route(self, method: str) -> None:
                n = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(n)) if n else None
                path = self.path.split("?", 1)[0]
                fake.calls.append((method, path, body))
                status, out = fake._api(method, path, self.headers.get("Authorization"), body)
                self._answer(status, out)

            def do_GET(self) -> None:
                self._route("GET")

            def do_POST(self) -> None:
                self._route("POST")

        return Handler

    def _api(self, method: str, path: str, auth: str | None, body: Any) -> tuple[int, dict[str, Any]]:
        if auth != f"Bearer {TOKEN}":
            return 401, {"error": {"code": 401, "message": "Request had invalid authentication credentials."}}
        base = f"/sql/v1beta4/projects/{self.project}/instances/{self.instance_name}"
        if method == "GET" and path == base + "/connectSettings":
            return 200, {"kind": "sql#connectSettings", "region": self.region, "databaseVersion": self.database_version,
                         "backendType": "SECOND_GEN", "serverCaCert": {"cert": _pem(self.ca_cert)},
                         "ipAddresses": [{"type": t, "ipAddress": self.ip} for t in self.ip_types]}
        if method == "POST" and path == base + ":generateEphemeralCert":
            try:
                key = serialization.load_pem_public_key(body["public_key"].encode())
            except Exception as e:
                return 400, {"error": {"code": 400, "message": f"invalid public_key: {e}"}}
            cert = self._issue("fake-ephemeral-client", key, 1)
            return 200, {"ephemeralCert": {"kind": "sql#sslCert", "cert": _pem(cert)}}
        return 404, {"error": {"code": 404, "message": f"The Cloud SQL instance does not exist ({method} {path})."}}

    def close(self) -> None:
        self._http.shutdown()
        self._http.server_close()

        async def stop() -> None:
            if self._proxy is not None:
                self._proxy.close()
            me = asyncio.current_task()
            for t in asyncio.all_tasks():  # open relays: drop them, as an instance going away would
                if t is not me:
                    t.cancel()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._loop_thread.join(10)
        self._lsock.close()
        self._tmp.cleanup()
