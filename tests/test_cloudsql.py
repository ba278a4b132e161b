"""Cloud SQL through the real Cloud SQL Python Connector, offline: tests/support/fake_cloudsql.py
plays the SQL Admin API and the instance's mutual-TLS server proxy in front of the local Postgres.
Only the wire is fake: the connector fetches the CA and an ephemeral certificate over HTTP, dials
port 3307 with TLS 1.3, and pg8000 speaks the Postgres protocol through the tunnel."""
from __future__ import annotations

import collections
import functools
import json
import select
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from cryptography.hazmat.primitives import serialization

import shared.storage.cloudsql as cloudsql
from shared.config import ConfigError, load
from shared.runtime import open_store
from shared.service import Service
from shared.storage.base import StorageError
from shared.storage.postgres import PostgresStore
from tests.support.fake_cloudsql import TOKEN, FakeCloudSql, FakeCredentials
from tests.support.pg import admin, pg_template, pg_url  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]
VERSION = "2026-04-01"


@pytest.fixture
def fake() -> Iterator[FakeCloudSql]:
    f = FakeCloudSql()
    yield f
    cloudsql.close_connectors()
    f.close()


def _db(url: str) -> str:
    return urlsplit(url).path.lstrip("/")


def _dial(fake: FakeCloudSql, database: str, **kw: Any) -> Any:
    return cloudsql.connector_factory(fake.instance, "postgres", None, database, sqladmin_api_endpoint=fake.endpoint,
                                      credentials=kw.pop("credentials", None) or FakeCredentials(), **kw)


def _calls(fake: FakeCloudSql, suffix: str) -> list[Any]:
    return [body for _, path, body in fake.calls if path.endswith(suffix)]


def _rpc(service: Service, kind: str, data: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    raw = json.dumps({"kind": kind, "head": {"corrId": kind, "version": VERSION}, "data": data}).encode()
    status, out = service.rpc(raw)
    return status, json.loads(out)


# end to end ------------------------------------------------------------------------------------

def test_store_from_config_goes_through_the_connector(pg_url: str, fake: FakeCloudSql,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Config with an instance -> open_store -> PostgresStore over connector connections: a promise
    created through the engine lands in the real database, and every connection is the
    connector's TLS tunnel to the fake instance (its host in the URL is never dialed)."""
    creds = FakeCredentials()
    # the one seam: point the real connector at the fake Admin API (production uses ADC + Google)
    monkeypatch.setattr(cloudsql, "connector_factory", functools.partial(
        cloudsql.connector_factory, sqladmin_api_endpoint=fake.endpoint, credentials=creds))
    url = f"postgres://postgres@db.invalid:1/{_db(pg_url)}"  # Cloud SQL: the host is ignored
    cfg = load(env={"RESONATE_STORAGE__TYPE": "postgres", "RESONATE_STORAGE__POSTGRES__URL": url,
                    "RESONATE_STORAGE__POSTGRES__INSTANCE": fake.instance,
                    "RESONATE_STORAGE__POSTGRES__POOL_SIZE": "2"})
    store = open_store(cfg)
    try:
        service = Service(store, cfg)
        status, out = _rpc(service, "promise.create", {"id": "csql-1", "timeoutAt": 2**53, "param": {"data": "eA=="}})
        assert status == 200, out
        status, got = _rpc(service, "promise.get", {"id": "csql-1"})
        assert status == 200 and got["data"]["promise"] == out["data"]["promise"], got

        c = admin(pg_url)  # the row is in the real database, read without the connector
        try:
            assert c.run("SELECT id, state FROM promises") == [["csql-1", "pending"]]
        finally:
            c.close()

        pooled = [conn.pg for conn in store._pool._idle]
        assert pooled and all(isinstance(p, cloudsql.NativeConnection) for p in pooled)
        server_der = fake.server_cert.public_bytes(serialization.Encoding.DER)
        for p in pooled:
            assert isinstance(p._usock, ssl.SSLSocket) and p._usock.version() == "TLSv1.3"
            assert p._usock.getpeercert(binary_form=True) == server_der
            assert p._usock.getpeername() == (fake.ip, 3307)

        opened = len(fake.handshakes)
        extra = [store._dial() for _ in range(2)]  # open_store's dialer: one shared Connector
        for e in extra:
            assert e.run("SELECT current_database()") == [[_db(pg_url)]]
            e.close()
        assert len(fake.handshakes) == opened + 2
        assert set(fake.handshakes) == {"fake-ephemeral-client"}  # the client cert the CA signed for it
        assert len(_calls(fake, "/connectSettings")) == 1  # certificate cached, not fetched per connection
        eph = _calls(fake, ":generateEphemeralCert")
        assert len(eph) == 1 and "access_token" not in eph[0]  # built-in login, not IAM
    finally:
        store.close()


def test_listen_notify_through_the_connector(pg_url: str, fake: FakeCloudSql) -> None:
    """What the outbox listener does on a connector connection: LISTEN, select() on _usock, a
    round trip to parse, drain `notifications` (swapped for an unbounded deque)."""
    dial = _dial(fake, _db(pg_url))
    listener, sender = dial(), dial()
    try:
        listener.notifications = collections.deque()
        unbounded = listener.notifications
        assert unbounded.maxlen is None
        listener.run("LISTEN resonate_test")
        assert select.select([listener._usock], [], [], 0.2)[0] == []  # nothing yet
        sender.run("NOTIFY resonate_test, 'one'")
        sender.run("SELECT pg_notify('resonate_test', :p)", p="two")
        assert select.select([listener._usock], [], [], 5)[0] == [listener._usock]
        listener.run("SELECT 1")
        got = [n[1:] for n in unbounded]
        if len(got) < 2:  # the second may still be in flight
            select.select([listener._usock], [], [], 5)
            listener.run("SELECT 1")
            got = [n[1:] for n in unbounded]
        assert got == [("resonate_test", "one"), ("resonate_test", "two")]
        # pg8000.native API semantics on the adapter: :name params, prepared statements, autocommit
        assert listener.run("SELECT :a::int + :b::int AS s", a=2, b=3) == [[5]]
        assert listener.columns[0]["name"] == "s"
        assert listener.prepare("SELECT upper(:t)").run(t="x") == [["X"]]
        sender.run("CREATE TABLE csql_t (x int)")
        sender.run("INSERT INTO csql_t VALUES (:x)", x=1)
        assert sender.row_count == 1
        assert listener.run("SELECT x FROM csql_t") == [[1]]  # committed at once: autocommit, not DB-API
    finally:
        listener.close()
        sender.close()


def test_iam_auth_sends_the_login_token(pg_url: str, fake: FakeCloudSql) -> None:
    c = _dial(fake, _db(pg_url), iam_auth=True)()
    try:
        assert c.run("SELECT 1") == [[1]]
    finally:
        c.close()
    assert [b.get("access_token") for b in _calls(fake, ":generateEphemeralCert")] == [TOKEN]


def test_connector_failures_are_storage_errors(pg_url: str, fake: FakeCloudSql) -> None:
    cases = [({"ip_type": "public"}, "(public IP)", "PRIMARY"),  # the fake instance has a private IP only
             ({"credentials": FakeCredentials("wrong")}, "(private IP)", "invalid authentication")]
    for kw, where, why in cases:
        store = PostgresStore(f"postgres://postgres@/{_db(pg_url)}", lazy=True, connect=_dial(fake, _db(pg_url), **kw))
        with pytest.raises(StorageError) as e:
            store.ping()
        assert f"Cloud SQL instance {fake.instance} {where}" in str(e.value) and why in str(e.value), e.value
        store.close()
    missing = cloudsql.connector_factory(f"{fake.project}:{fake.region}:nope", database=_db(pg_url),
                                         sqladmin_api_endpoint=fake.endpoint, credentials=FakeCredentials())
    with pytest.raises(Exception, match="does not exist"):
        missing()
    with pytest.raises(ValueError, match="ip_type"):
        cloudsql.connector_factory(fake.instance, ip_type="PRIVATE")
    with pytest.raises(ValueError, match="project:region:instance"):
        cloudsql.connector_factory("just-a-name")


def test_unresponsive_instance_times_out(pg_url: str) -> None:
    """The connector itself waits forever on a proxy that never answers; the dialer's deadline
    turns that into a StorageError within its timeout."""
    f = FakeCloudSql(stall=True)
    try:
        store = PostgresStore(f"postgres://postgres@/{_db(pg_url)}", lazy=True, connect=_dial(f, _db(pg_url), timeout=1.0))
        t0 = time.monotonic()
        with pytest.raises(StorageError, match=r"within 1s"):
            store.ping()
        assert time.monotonic() - t0 < 20  # the dialer's 1 s deadline, not the connector's forever
        store.close()
    finally:
        f.close()  # first: resets the stuck handshake, so the connector's loop can shut down
        cloudsql.close_connectors()


def test_fake_proxy_demands_a_client_certificate(fake: FakeCloudSql) -> None:
    """The stand-in enforces what the real proxy does, so the passing tests mean something."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.load_verify_locations(cadata=fake.ca_cert.public_bytes(serialization.Encoding.PEM).decode())
    with socket.create_connection((fake.ip, 3307), timeout=5) as raw:
        try:
            with ctx.wrap_socket(raw) as tls:  # TLS 1.3: the server's verdict comes after the handshake
                tls.sendall(b"\x00\x00\x00\x08\x04\xd2\x16\x2f")
                assert tls.recv(1) == b""
        except (ssl.SSLError, ConnectionError):
            pass
    assert fake.handshakes == []


# configuration -------------------------------------------------------------------------------------

def test_config_from_env() -> None:
    cfg = load(env={"RESONATE_STORAGE__TYPE": "postgres",
                    "RESONATE_STORAGE__POSTGRES__INSTANCE": "proj:europe-west1:db",
                    "RESONATE_STORAGE__POSTGRES__IP_TYPE": "psc",
                    "RESONATE_STORAGE__POSTGRES__IAM_AUTH": "true"})
    pg = cfg.storage.postgres
    assert (pg.instance, pg.ip_type, pg.iam_auth, pg.url) == ("proj:europe-west1:db", "psc", True, None)
    assert load(env={}).storage.postgres.ip_type == "private"
    assert load(env={"RESONATE_STORAGE__POSTGRES__INSTANCE": "example.com:proj:us-east1:db"}).storage.postgres.instance
    for env, msg in (({"RESONATE_STORAGE__POSTGRES__IP_TYPE": "internal"}, "storage.postgres.ip_type: expected"),
                     ({"RESONATE_STORAGE__POSTGRES__INSTANCE": "db"}, "storage.postgres.instance: expected"),
                     ({"RESONATE_STORAGE__POSTGRES__IAM_AUTH": "yes"}, "storage.postgres.iam_auth"),
                     ({"RESONATE_STORAGE__TYPE": "postgres"}, "RESONATE_STORAGE__POSTGRES__INSTANCE")):
        with pytest.raises(ConfigError, match=msg):
            load(env=env)


def test_open_store_defaults_user_and_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without a URL the connector logs in as postgres to database postgres (no URL host needed)."""
    seen: list[tuple] = []

    def factory(*args: Any) -> Any:
        seen.append(args)

        def dial() -> Any:
            raise OSError("not dialing in this test")
        return dial

    monkeypatch.setattr(cloudsql, "connector_factory", factory)
    cfg = load(env={"RESONATE_STORAGE__TYPE": "postgres", "RESONATE_STORAGE__POSTGRES__INSTANCE": "p:r:i",
                    "RESONATE_STORAGE__POSTGRES__IP_TYPE": "public"})
    with pytest.raises(StorageError, match="not dialing"):
        open_store(cfg)
    assert seen == [("p:r:i", "postgres", None, "postgres", "public", False)]


@pytest.mark.process
def test_cli_flags_and_lazy_import() -> None:
    """The flags reach the config (a bad ip_type is reported), and nothing imports the connector
    (about half a second) unless an instance is configured."""
    r = subprocess.run([sys.executable, "-m", "local", "serve", "--storage-type", "postgres",
                        "--storage-postgres-instance", "p:r:i", "--storage-postgres-ip-type", "internal"],
                       cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 1 and "storage.postgres.ip_type: expected" in r.stderr, r.stderr
    code = ("import sys, shared.runtime, shared.storage.postgres, shared.storage.cloudsql;"
            "assert 'google.cloud.sql.connector' not in sys.modules and 'aiohttp' not in sys.modules")
    r = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
