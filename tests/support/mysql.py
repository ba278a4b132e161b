"""Fresh MySQL databases for tests (MariaDB 10.11 on the CI machine; MySQL 8.0+ works the same).

`fresh_database()` (context manager) and the `my_url` fixture give each test its own migrated
database; `take_database()` / `give_back()` do the same for code that outlives one block (a server
subprocess started by a test). MySQL has no template databases and migrating a new one costs most
of a second, so a database given back is wiped (every table emptied, AUTO_INCREMENT back to 1)
and reused by the next test of this process; all of them are dropped at exit. Names carry a
random part, so pytest-xdist workers never meet. The admin URL comes from RESONATE_TEST_MYSQL_URL.
"""
from __future__ import annotations

import atexit
import os
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

ADMIN_URL = os.environ.get("RESONATE_TEST_MYSQL_URL", "mysql://root@127.0.0.1:3306/mysql")
TABLES = ("promises", "tasks", "callbacks", "listeners", "outbox", "schedules", "meta", "poll_receivers",
          "poll_locks", "outbox_notes", "locks")

_lock = threading.Lock()
_free: list[str] = []  # migrated, wiped databases of this process
_all: set[str] = set()


def db_url(name: str, base: str = ADMIN_URL) -> str:
    u = urlsplit(base)
    return urlunsplit((u.scheme, u.netloc, "/" + name, u.query, u.fragment))


def admin(url: str = ADMIN_URL) -> Any:
    import pymysql

    from shared.storage.mysql import parse_url

    return pymysql.connect(**parse_url(url))


def available() -> bool:
    try:
        admin().close()
        return True
    except Exception:
        return False


def _ident(name: str) -> str:
    assert name.replace("_", "").isalnum(), name
    return "`" + name + "`"


def run(sql: str, url: str = ADMIN_URL) -> list:
    c = admin(url)
    try:
        with c.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        c.close()


def create_database(prefix: str = "resonate_t_") -> str:
    """A new empty database; returns its URL."""
    from tests.support import marks

    marks.require(marks.MYSQL, "creates a MySQL database")
    name = f"{prefix}{uuid.uuid4().hex[:12]}"
    run(f"CREATE DATABASE {_ident(name)} CHARACTER SET utf8mb4")
    return db_url(name)


def drop_database(url: str) -> None:
    name = urlsplit(url).path.lstrip("/")
    with _lock:
        _all.discard(name)
        if name in _free:
            _free.remove(name)
    run(f"DROP DATABASE IF EXISTS {_ident(name)}")


def kill_sessions(url: str) -> int:
    """Kill every session on url's database (what a server restart does to them); returns how many."""
    name = urlsplit(url).path.lstrip("/")
    ids = [r[0] for r in run(f"SELECT id FROM information_schema.processlist WHERE db = '{name}'"
                             " AND id <> CONNECTION_ID()")]
    for i in ids:
        try:
            run(f"KILL {int(i)}")
        except Exception:
            pass
    return len(ids)


def take_database() -> str:
    """A migrated, empty database (reused when one was given back); `give_back(url)` after use."""
    from tests.support import marks

    marks.require(marks.MYSQL, "creates a MySQL database")
    with _lock:
        name = _free.pop() if _free else None
    if name is not None:
        return db_url(name)
    from shared.storage.mysql import MySQLStore

    url = create_database()
    name = urlsplit(url).path.lstrip("/")
    with _lock:
        if not _all:
            atexit.register(_drop_all)
        _all.add(name)
    MySQLStore(url, pool_size=1).close()
    return url


def give_back(url: str) -> None:
    """Wipe the database and keep it for the next test; dropped instead if wiping fails."""
    name = urlsplit(url).path.lstrip("/")
    from shared.storage.mysql import MIGRATIONS, SCHEMA_VERSION

    try:
        kill_sessions(url)  # a server killed mid-transaction may leave its session holding locks briefly
        c = admin(url)
        try:
            with c.cursor() as cur:
                cur.execute("SELECT max(version), count(*) FROM schema_version")
                if tuple(cur.fetchone()) != (SCHEMA_VERSION, len(MIGRATIONS)):  # a test migrated it further
                    raise ValueError("not reusable")
                for t in TABLES:
                    cur.execute(f"DELETE FROM {t}")
                cur.execute("ALTER TABLE outbox AUTO_INCREMENT = 1")
                cur.execute("ALTER TABLE outbox_notes AUTO_INCREMENT = 1")
        finally:
            c.close()
    except Exception:
        drop_database(url)
        return
    with _lock:
        if name in _all:
            _free.append(name)


def _drop_all() -> None:
    with _lock:
        names = list(_all)
        _all.clear()
        _free.clear()
    for n in names:
        try:
            run(f"DROP DATABASE IF EXISTS {_ident(n)}")
        except Exception:
            pass


@contextmanager
def fresh_database() -> Iterator[str]:
    url = take_database()
    try:
        yield url
    finally:
        give_back(url)


@contextmanager
def empty_database() -> Iterator[str]:
    """A database without the schema (to test migrations)."""
    url = create_database()
    try:
        yield url
    finally:
        drop_database(url)


def require_mysql() -> None:
    if not available():
        pytest.fail(f"no MySQL at {ADMIN_URL} (set RESONATE_TEST_MYSQL_URL; .ci/run starts the local MariaDB)")


@pytest.fixture(scope="session")
def my_server() -> Iterator[None]:
    require_mysql()
    yield
    _drop_all()


@pytest.fixture
def my_url(my_server: None) -> Iterator[str]:
    """URL of a fresh migrated database, wiped after the test."""
    with fresh_database() as url:
        yield url
