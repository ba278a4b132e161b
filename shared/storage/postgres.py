"""Postgres adapter (pg8000, pure Python: its sockets are cooperative under gevent's monkey patch).

One `write(fn)` = one READ COMMITTED transaction with row locks (postgres_tx.py explains which).
Contention (serialization failure, deadlock, a concurrent insert of the same id) re-runs fn from
scratch with jittered backoff; when retries run out the caller gets `Busy` (answer 503) and
nothing is committed. `read(fn)` runs on a REPEATABLE READ READ ONLY snapshot.

Each process keeps a small pool. A connection that broke (network error, server restart, admin
termination) is discarded together with every idle one, and a transaction that broke before
COMMIT is re-run once on a fresh connection. A break during COMMIT is never re-run: its outcome
is unknown, so the caller gets StorageError. The schema is migrated on first use under an
advisory lock, so any number of cold-starting instances may race.

Results must equal `MemoryStore`'s for every `Tx` method (the differential test checks it).
"""
from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

import pg8000.native
from pg8000.exceptions import DatabaseError

from shared.storage.base import StorageError
from shared.storage.postgres_outbox import PgClusterOutbox
from shared.storage.postgres_tx import (
    MIGRATION_LOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    Busy,
    Conn,
    PgTx,
    classify,
)
from shared.storage.sql_pool import MAX_RETRIES, Pool, Transactions

__all__ = ["MAX_RETRIES", "MIGRATIONS", "SCHEMA_VERSION", "Busy", "PgTx", "PostgresStore", "parse_url"]

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
SOCKET_TIMEOUT_S = 60.0  # a half-open TCP connection must not hang a request forever
SESSION_SETUP = ("SET lock_timeout = '10s'; SET idle_in_transaction_session_timeout = '60s';"
                 " SET statement_timeout = '30s'")
BEGIN_WRITE = "START TRANSACTION ISOLATION LEVEL READ COMMITTED, READ WRITE"
BEGIN_READ = "START TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"


def parse_url(url: str) -> dict[str, Any]:
    """pg8000 keyword arguments from `postgres[ql]://user:pass@host:port/db?sslmode=..&host=/socket/dir`."""
    u = urlsplit(url)
    if u.scheme not in ("postgres", "postgresql"):
        raise StorageError(f"postgres: expected a postgres:// or postgresql:// URL, got {u.scheme or url!r}")
    q = {k: v[-1] for k, v in parse_qs(u.query).items()}
    user = unquote(u.username or "") or q.get("user") or "postgres"
    kw: dict[str, Any] = {"user": user, "password": unquote(u.password) if u.password else q.get("password"),
                          "database": unquote(u.path.lstrip("/")) or q.get("dbname") or user,
                          "application_name": q.get("application_name", "resonate"),
                          "timeout": float(q.get("connect_timeout", CONNECT_TIMEOUT_S))}
    port = u.port or int(q.get("port", 5432))
    host = q.get("host") or unquote(u.hostname or "") or "localhost"
    if host.startswith("/"):  # a Unix socket directory, as libpq and Cloud SQL (/cloudsql/<instance>) spell it
        kw["unix_sock"] = f"{host}/.s.PGSQL.{port}"
        kw["ssl_context"] = False
        kw["host"] = None
    else:
        kw["host"], kw["port"] = host, port
        mode = q.get("sslmode", "prefer")
        if mode == "disable":
            kw["ssl_context"] = False
        elif mode in ("verify-ca", "verify-full"):
            import ssl

            ctx = ssl.create_default_context(cafile=q.get("sslrootcert"))
            ctx.check_hostname = mode == "verify-full"
            kw["ssl_context"] = ctx
        elif mode == "require":
            kw["ssl_context"] = True  # encrypted, unverified (libpq's meaning)
        else:
            kw["ssl_context"] = None  # prefer: TLS if the server offers it
    return kw


def _close(c: Conn) -> None:
    try:
        c.pg.close()
    except Exception:
        pass


class PostgresStore(Transactions, PgClusterOutbox):
    """`Store` over one Postgres database. `lazy=True` defers connecting and migrating to the
    first read/write/ping (a cold start while the database is down then answers errors instead
    of failing to start); otherwise the constructor migrates and raises StorageError if it can't."""

    name = "postgres"
    max_key_length: int | None = None  # TEXT columns: the byte bound of shared/requests.py is the only one

    def __init__(self, url: str, pool_size: int = 10, lazy: bool = False,
                 connect: Callable[[], Any] | None = None) -> None:
        self.url = url
        self._params = parse_url(url)
        # connect: opens one pg8000.native-like connection instead of dialing the URL's host (e.g.
        # shared.storage.cloudsql.connector_factory(...)); its `where` attribute names it in errors
        self._dial = connect
        self._pool = Pool(self._connect, pool_size, Conn, _close, "postgres")
        self._schema_lock = threading.Lock()
        self._schema_ok = False
        self.retries = 0  # contention re-runs (observability)
        self.reconnects = 0  # re-runs after a broken connection
        if not lazy:
            try:
                self._ensure_schema()
            except BaseException:
                self._pool.close()
                raise

    # connections -------------------------------------------------------------------------
    def _connect(self) -> Any:
        p = self._params
        where = getattr(self._dial, "where", None) or p.get("unix_sock") or f"{p['host']}:{p['port']}"
        try:
            pg = self._dial() if self._dial is not None else pg8000.native.Connection(**p)
        except DatabaseError as e:  # refused by the server: auth, unknown database, too many connections
            raise StorageError(f"postgres: cannot connect to {where}/{p['database']}: {classify(e)[1]}") from e
        except Exception as e:
            raise StorageError(f"postgres: cannot connect to {where}: {e}") from e
        try:
            pg.run(SESSION_SETUP)
            if pg._usock is not None:
                pg._usock.settimeout(SOCKET_TIMEOUT_S)
        except Exception as e:
            _close(Conn(pg, 0))
            raise StorageError(f"postgres: session setup failed on {where}: {e}") from e
        return pg

    # transactions ------------------------------------------------------------------------
    def write(self, fn: Callable[[PgTx], T]) -> T:
        self._ensure_schema()
        return self._transaction(fn, BEGIN_WRITE, True)

    def read(self, fn: Callable[[PgTx], T]) -> T:
        self._ensure_schema()
        return self._transaction(fn, BEGIN_READ, False)

    def _new_tx(self, conn: Conn, writable: bool) -> PgTx:
        return PgTx(conn, writable)

    def _rollback(self, tx: PgTx) -> bool:
        """Roll back; False if the connection is no longer usable."""
        try:
            tx._c.pg.run("ROLLBACK")
            return True
        except Exception:
            return False

    # schema --------------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        if self._schema_ok:
            return
        with self._schema_lock:
            if not self._schema_ok:
                self._transaction(_migrate, BEGIN_WRITE, True)
                self._schema_ok = True

    def schema_version(self) -> int:
        return self.read(lambda tx: tx._x("SELECT max(version) FROM schema_version")[0][0])

    # lifecycle ---------------------------------------------------------------------------
    def ping(self) -> None:
        if self._pool.closed:
            raise StorageError("store is closed")
        self._ensure_schema()
        self._transaction(lambda tx: tx._x("SELECT 1"), BEGIN_READ, False)

    def close(self) -> None:
        self._pool.close()


def _migrate(tx: PgTx) -> None:
    """Apply the missing MIGRATIONS in one transaction, one instance at a time per database.
    An up-to-date database (every start but the first) is confirmed without taking the lock."""
    if _version(tx) == SCHEMA_VERSION:
        return
    tx._simple("SET LOCAL lock_timeout = '50s'; SET LOCAL statement_timeout = 0")  # < SOCKET_TIMEOUT_S
    tx._x(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK})")
    tx._simple("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL PRIMARY KEY,"
               " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    cur = _version(tx)
    for version, ddl in MIGRATIONS:
        if version > cur:
            for stmt in ddl:
                tx._simple(stmt)
            tx._x("INSERT INTO schema_version (version) VALUES (:v)", v=version)


def _version(tx: PgTx) -> int:
    if tx._x("SELECT to_regclass('schema_version') IS NULL")[0][0]:
        return 0
    cur = tx._x("SELECT coalesce(max(version), 0) FROM schema_version")[0][0]
    if cur > SCHEMA_VERSION:
        raise StorageError(f"database schema version {cur} is newer than this server's {SCHEMA_VERSION}")
    return cur
