"""Fresh Postgres databases for tests, cloned from a migrated template (one per process).

`fresh_database()` (context manager) and the `pg_url` fixture give each test its own database;
`template_clone_url()` / `drop_database()` do the same for non-pytest code (e.g. a server
subprocess started by a test). The admin URL comes from RESONATE_TEST_PG_URL.

The template uses an ICU (en-US) default collation when the server supports it, so every test
also checks that ids order by code point regardless of the database's collation.
"""
from __future__ import annotations

import atexit
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

import pg8000.native
import pytest

ADMIN_URL = os.environ.get("RESONATE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")

_lock = threading.Lock()
_template: str | None = None


def db_url(name: str, base: str = ADMIN_URL) -> str:
    """`base` with its database replaced by `name`."""
    u = urlsplit(base)
    return urlunsplit((u.scheme, u.netloc, "/" + name, u.query, u.fragment))


def admin(url: str = ADMIN_URL) -> pg8000.native.Connection:
    """An autocommit pg8000 connection (CREATE/DROP DATABASE cannot run inside a transaction)."""
    from shared.storage.postgres import parse_url

    return pg8000.native.Connection(**parse_url(url))


def available() -> bool:
    try:
        admin().close()
        return True
    except Exception:
        return False


def _ident(name: str) -> str:
    assert name.replace("_", "").isalnum(), name
    return '"' + name + '"'


def create_database(prefix: str = "resonate_t_", template: str | None = "template0", icu: bool = False) -> str:
    """A new empty (or template-cloned) database; returns its URL."""
    from tests.support import marks

    marks.require(marks.POSTGRES, "creates a Postgres database")
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    sql = f"CREATE DATABASE {_ident(name)} TEMPLATE {_ident(template or 'template0')}"
    c = admin()
    try:
        if icu:
            try:
                c.run(sql + " ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'en-US'")
                return db_url(name)
            except pg8000.native.DatabaseError:
                pass  # no ICU in this build: fall back to the server's default collation
        c.run(sql)
    finally:
        c.close()
    return db_url(name)


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    c = admin()
    try:
        c.run(f"DROP DATABASE IF EXISTS {_ident(name)} WITH (FORCE)")
    finally:
        c.close()


def terminate_backends(url: str) -> int:
    """Kill every session on url's database (what a server restart does to them); returns how many."""
    name = urlsplit(url).path.lstrip("/")
    c = admin()
    try:
        rows = c.run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :d"
                     " AND pid <> pg_backend_pid()", d=name)
        return len(rows)
    finally:
        c.close()


def template_name() -> str:
    """The per-process migrated template database, created on first call, dropped at exit."""
    global _template
    with _lock:
        if _template is None:
            from shared.storage.postgres import PostgresStore

            url = create_database("resonate_tpl_", icu=True)
            try:
                PostgresStore(url, pool_size=1).close()
            except BaseException:
                drop_database(url)
                raise
            _template = urlsplit(url).path.lstrip("/")
            atexit.register(_drop_template)
        return _template


def _drop_template() -> None:
    global _template
    with _lock:
        name, _template = _template, None
    if name is not None:
        try:
            drop_database(db_url(name))
        except Exception:
            pass


def template_clone_url() -> str:
    """A fresh, already migrated database (the caller drops it with drop_database(url))."""
    return create_database("resonate_t_", template=template_name())


@contextmanager
def fresh_database() -> Iterator[str]:
    url = template_clone_url()
    try:
        yield url
    finally:
        drop_database(url)


@contextmanager
def empty_database() -> Iterator[str]:
    """A database without the schema (to test migrations)."""
    url = create_database("resonate_t_", icu=True)
    try:
        yield url
    finally:
        drop_database(url)


def require_postgres() -> None:
    if not available():
        pytest.fail(f"no Postgres at {ADMIN_URL} (set RESONATE_TEST_PG_URL; .ci/run starts the local one)")


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    require_postgres()
    yield template_name()
    _drop_template()


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    """URL of a fresh migrated database, dropped after the test."""
    with fresh_database() as url:
        yield url


class TcpProxy:
    """A TCP forwarder in front of a database (Postgres by default) that a test can take down (connections reset,
    new ones refused) and bring back on the same port: a database outage without touching
    the real server."""

    def __init__(self, target: tuple[str, int] = ("127.0.0.1", 5432)) -> None:
        self.target = target
        probe = socket.socket()
        probe.bind(("127.0.0.1", 0))
        self.port = probe.getsockname()[1]
        probe.close()
        self._lsock: socket.socket | None = None
        self._socks: list[socket.socket] = []
        self._mu = threading.Lock()
        self.up()

    def url(self, db_url_: str) -> str:
        u = urlsplit(db_url_)
        netloc = (u.netloc.rsplit("@", 1)[0] + "@" if "@" in u.netloc else "") + f"127.0.0.1:{self.port}"
        return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))

    def up(self) -> None:
        ls = socket.socket()
        ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        ls.bind(("127.0.0.1", self.port))
        ls.listen(64)
        self._lsock = ls
        threading.Thread(target=self._accept, args=(ls,), daemon=True).start()

    def down(self) -> None:
        ls, self._lsock = self._lsock, None
        if ls is not None:
            try:
                ls.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            ls.close()
        with self._mu:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _accept(self, ls: socket.socket) -> None:
        while True:
            try:
                client, _ = ls.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.target)
            except OSError:
                client.close()
                continue
            with self._mu:
                self._socks += [client, server]
            for a, b in ((client, server), (server, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a: socket.socket, b: socket.socket) -> None:
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for s in (a, b):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def close(self) -> None:
        self.down()
