"""MySQL adapter (PyMySQL, pure Python like pg8000: its sockets are cooperative under gevent's
monkey patch). MySQL 8.0 or later; MariaDB 10.6 or later (SKIP LOCKED) works too.

One `write(fn)` = one READ COMMITTED transaction with row locks (mysql_tx.py explains which);
`read(fn)` runs on a REPEATABLE READ READ ONLY consistent snapshot. The pool and the
transaction loop are Postgres' (sql_pool.py): contention (deadlock 1213, lock wait timeout 1205,
a concurrent insert of the same id) re-runs fn with jittered backoff, then `Busy` (503); a
connection that broke (server restart, network) is discarded with every idle one and a
transaction that broke before COMMIT is re-run once on a fresh connection.

The schema is migrated on first use under a named lock (GET_LOCK), so any number of starting
instances may race. Durability is the server's: every acknowledged write is a committed InnoDB
transaction, durable across a crash of the database host only with `innodb_flush_log_at_trx_commit
= 1` (the default) and, when the binary log is on, `sync_binlog = 1`.

Results must equal `MemoryStore`'s for every `Tx` method (the differential test checks it).
"""
from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar
from urllib.parse import parse_qs, unquote, urlsplit

from shared.storage.base import StorageError
from shared.storage.mysql_outbox import MyClusterOutbox
from shared.storage.mysql_tx import (
    KEY_CHARS,
    MIGRATION_LOCK,
    MIGRATION_UNLOCK,
    MIGRATIONS,
    SCHEMA_VERSION,
    Conn,
    MyTx,
)
from shared.storage.sql_pool import Pool, Transactions

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "MySQLStore", "parse_url"]

T = TypeVar("T")

CONNECT_TIMEOUT_S = 10.0
SOCKET_TIMEOUT_S = 60.0  # a half-open TCP connection must not hang a request forever
LOCK_WAIT_S = 10  # innodb_lock_wait_timeout: a row lock held longer answers 503 after the retries
SESSION_SETUP = ("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED",
                 f"SET SESSION time_zone = '+00:00', innodb_lock_wait_timeout = {LOCK_WAIT_S},"
                 " sql_mode = 'STRICT_ALL_TABLES,NO_ENGINE_SUBSTITUTION'")
BEGIN_WRITE = "START TRANSACTION READ WRITE"
# one round trip: the isolation level of the next transaction, then the snapshot
BEGIN_READ = ("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ;"
              " START TRANSACTION READ ONLY, WITH CONSISTENT SNAPSHOT")
_TRUE = ("1", "true", "yes", "on")
_ADD_COLUMN = re.compile(r"ALTER TABLE (\w+) ADD COLUMN (\w+) ", re.IGNORECASE)


def parse_url(url: str) -> dict[str, Any]:
    """PyMySQL keyword arguments from `mysql://user:pass@host:port/db?ssl-mode=..&ssl-ca=..`.

    TLS, as the mysql client spells it: `ssl-mode` DISABLED | PREFERRED (the default: TLS if the
    server offers it) | REQUIRED (encrypted, unverified) | VERIFY_CA | VERIFY_IDENTITY (the
    server's certificate checked against `ssl-ca`, or the system's CAs; IDENTITY also checks its
    name); `ssl-cert` / `ssl-key` present a client certificate. `unix_socket=/path` dials a
    Unix socket instead of host:port. `_` may replace `-` in the names."""
    u = urlsplit(url)
    if u.scheme not in ("mysql", "mariadb"):
        raise StorageError(f"mysql: expected a mysql:// URL, got {u.scheme or url!r}")
    q = {k.replace("_", "-").lower(): v[-1] for k, v in parse_qs(u.query).items()}
    database = unquote(u.path.lstrip("/")) or q.get("database", "")
    if not database:
        raise StorageError("mysql: the URL names no database (mysql://user:pass@host:3306/<database>)")
    kw: dict[str, Any] = {"user": unquote(u.username or "") or q.get("user") or "root",
                          "password": unquote(u.password) if u.password else q.get("password", ""),
                          "database": database, "charset": "utf8mb4", "autocommit": True,
                          "connect_timeout": float(q.get("connect-timeout", CONNECT_TIMEOUT_S)),
                          "read_timeout": SOCKET_TIMEOUT_S, "write_timeout": SOCKET_TIMEOUT_S,
                          "program_name": "resonate"}
    if q.get("unix-socket") or q.get("socket"):
        kw["unix_socket"] = q.get("unix-socket") or q.get("socket")
        return kw
    kw["host"] = unquote(u.hostname or "") or "localhost"
    kw["port"] = u.port or 3306
    mode = q.get("ssl-mode", "PREFERRED").upper()
    if mode == "DISABLED" or q.get("ssl", "").lower() in ("0", "false", "no", "off"):
        kw["ssl_disabled"] = True
    elif mode in ("REQUIRED", "VERIFY_CA", "VERIFY_IDENTITY") or q.get("ssl", "").lower() in _TRUE:
        verify = mode in ("VERIFY_CA", "VERIFY_IDENTITY")
        ssl: dict[str, Any] = {"check_hostname": mode == "VERIFY_IDENTITY", "verify_mode": verify}
        if q.get("ssl-ca"):
            ssl["ca"] = q["ssl-ca"]
        if q.get("ssl-cert"):
            ssl["cert"] = q["ssl-cert"]
        if q.get("ssl-key"):
            ssl["key"] = q["ssl-key"]
        kw["ssl"] = ssl
    elif mode != "PREFERRED":
        raise StorageError(f"mysql: unknown ssl-mode {mode!r} (DISABLED, PREFERRED, REQUIRED, VERIFY_CA,"
                           " VERIFY_IDENTITY)")
    return kw


def connector_kwargs() -> dict[str, Any]:
    """What the Cloud SQL connector must pass on to PyMySQL (the rest of parse_url's arguments:
    user, password, database, TLS, come from the connector)."""
    from pymysql.constants import CLIENT

    return {"charset": "utf8mb4", "autocommit": True, "read_timeout": SOCKET_TIMEOUT_S,
            "write_timeout": SOCKET_TIMEOUT_S, "program_name": "resonate", "client_flag": CLIENT.MULTI_STATEMENTS}


def _close(c: Conn) -> None:
    try:
        c.db.close()
    except Exception:
        pass


class MySQLStore(Transactions, MyClusterOutbox):
    """`Store` over one MySQL database. `lazy=True` defers connecting and migrating to the
    first read/write/ping (a cold start while the database is down then answers errors instead
    of failing to start); otherwise the constructor migrates and raises StorageError if it can't."""

    name = "mysql"
    max_key_length: int | None = KEY_CHARS  # VARCHAR(255) keys: longer ones answer 400 (shared/requests.py)

    def __init__(self, url: str, pool_size: int = 10, lazy: bool = False,
                 connect: Callable[[], Any] | None = None) -> None:
        self.url = url
        self._params = parse_url(url)
        self._dial = connect  # opens one PyMySQL connection another way (e.g. a connector); `where` names it
        self._pool = Pool(self._connect, pool_size, Conn, _close, "mysql")
        self._schema_lock = threading.Lock()
        self._schema_ok = False
        self.retries = 0
        self.reconnects = 0
        if not lazy:
            try:
                self._ensure_schema()
            except BaseException:
                self._pool.close()
                raise

    # connections -------------------------------------------------------------------------
    def _connect(self) -> Any:
        import pymysql
        from pymysql.constants import CLIENT

        p = self._params
        where = (getattr(self._dial, "where", None) or p.get("unix_socket")
                 or f"{p.get('host')}:{p.get('port')}")
        try:
            db = self._dial() if self._dial is not None else pymysql.connect(
                **p, client_flag=CLIENT.MULTI_STATEMENTS)
        except pymysql.err.MySQLError as e:
            code = e.args[0] if e.args else ""
            text = e.args[1] if len(e.args) > 1 else str(e)
            hint = f" (create it: CREATE DATABASE `{p['database']}`)" if code == 1049 else ""
            raise StorageError(f"mysql: cannot connect to {where}/{p['database']}: {code} {text}{hint}") from e
        except Exception as e:
            raise StorageError(f"mysql: cannot connect to {where}: {e}") from e
        try:
            with db.cursor() as cur:
                for stmt in SESSION_SETUP:
                    cur.execute(stmt)
        except Exception as e:
            _close(Conn(db, 0))
            raise StorageError(f"mysql: session setup failed on {where}: {e}") from e
        return db

    # transactions ------------------------------------------------------------------------
    def write(self, fn: Callable[[MyTx], T]) -> T:
        self._ensure_schema()
        return self._transaction(fn, BEGIN_WRITE, True)

    def read(self, fn: Callable[[MyTx], T]) -> T:
        self._ensure_schema()
        return self._transaction(fn, BEGIN_READ, False)

    def _new_tx(self, conn: Conn, writable: bool) -> MyTx:
        return MyTx(conn, writable)

    def _rollback(self, tx: MyTx) -> bool:
        try:
            tx._c.db.rollback()
            return True
        except Exception:
            return False

    # schema --------------------------------------------------------------------------------
    def _ensure_schema(self) -> None:
        if self._schema_ok:
            return
        with self._schema_lock:
            if not self._schema_ok:
                self._migrate()
                self._schema_ok = True

    def _migrate(self) -> None:
        """Apply the missing MIGRATIONS, one instance at a time per database (GET_LOCK; MySQL DDL
        commits by itself, so no transaction spans them). An up-to-date database (every start but
        the first) is confirmed without taking the lock."""
        conn = self._pool.acquire()
        tx = MyTx(conn, True)
        healthy = False
        try:
            if _version(tx) != SCHEMA_VERSION:
                if not tx._x(f"SELECT {MIGRATION_LOCK}")[0][0]:
                    raise StorageError("mysql: another instance held the migration lock for 50s")
                try:
                    tx._simple("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL PRIMARY KEY,"
                               " applied_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP) ENGINE=InnoDB")
                    cur = _version(tx)
                    table = f"ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE={_nopad_bin(tx)}"
                    for version, ddl in MIGRATIONS:
                        if version > cur:
                            for stmt in ddl:
                                _apply(tx, stmt.replace("{table}", table))
                            tx._x("INSERT INTO schema_version (version) VALUES (%(v)s)", v=version)
                finally:
                    tx._x(f"SELECT {MIGRATION_UNLOCK}")
            healthy = True
        except Exception as e:
            if tx.fail:
                raise tx.error from e  # type: ignore[misc]
            raise
        finally:
            self._pool.release(conn, healthy)

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


def _version(tx: MyTx) -> int:
    if not tx._x("SELECT count(*) FROM information_schema.tables WHERE table_schema = DATABASE()"
                 " AND table_name = 'schema_version'")[0][0]:
        return 0
    cur = tx._x("SELECT coalesce(max(version), 0) FROM schema_version")[0][0]
    if cur > SCHEMA_VERSION:
        raise StorageError(f"database schema version {cur} is newer than this server's {SCHEMA_VERSION}")
    return int(cur)


def _apply(tx: MyTx, stmt: str) -> None:
    """Run one migration statement; an `ALTER TABLE t ADD COLUMN c ...` whose column exists
    already (a migration interrupted after it) is skipped: MySQL 8 has no `ADD COLUMN IF NOT EXISTS`."""
    m = _ADD_COLUMN.match(stmt)
    if m is not None and tx._x("SELECT count(*) FROM information_schema.columns WHERE table_schema = DATABASE()"
                               " AND table_name = %(t)s AND column_name = %(c)s", t=m[1], c=m[2])[0][0]:
        return
    tx._simple(stmt)


def _nopad_bin(tx: MyTx) -> str:
    """The binary NO PAD utf8mb4 collation: MySQL 8 and MariaDB name it differently."""
    rows = tx._x("SELECT collation_name FROM information_schema.collations"
                 " WHERE collation_name IN ('utf8mb4_0900_bin', 'utf8mb4_nopad_bin') ORDER BY collation_name")
    if not rows:
        raise StorageError("mysql: the server has no binary NO PAD utf8mb4 collation (MySQL 8.0+, MariaDB 10.6+)")
    return rows[0][0]
