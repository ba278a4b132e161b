"""Postgres for the bench: uniquely named databases that are dropped at the end, even on failure.

The admin URL is the test suite's (RESONATE_TEST_PG_URL, default postgresql://postgres@127.0.0.1:5432/postgres).
"""
from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import ExitStack


def available() -> bool:
    from tests.support.pg import available as ok

    return ok()


def settings() -> str:
    """The durability settings that decide commit cost, e.g. 'PostgreSQL 15.2, fsync=on, synchronous_commit=on'."""
    from tests.support.pg import admin

    c = admin()
    try:
        version = c.run("SHOW server_version")[0][0]
        rows = c.run("SELECT name, setting FROM pg_settings WHERE name IN "
                     "('fsync', 'synchronous_commit', 'wal_sync_method') ORDER BY name")
    finally:
        c.close()
    return f"PostgreSQL {version}, " + ", ".join(f"{k}={v}" for k, v in rows)


def new_database(stack: ExitStack, log: Callable[[str], None]) -> str:
    """An empty, uniquely named database (resonate_bench_<hex>), dropped when `stack` closes."""
    from tests.support.pg import create_database, drop_database

    url = create_database("resonate_bench_")

    def drop() -> None:
        for attempt in range(10):  # e.g. "too many clients" while other work holds every connection
            try:
                drop_database(url)
                return
            except Exception as e:  # never hide the bench's own error behind this one
                if attempt == 9:
                    log(f"could not drop {url}: {e!r}")
                    return
                time.sleep(0.5 * (attempt + 1))

    stack.callback(drop)
    return url


def migrate(url: str) -> None:
    """Create the schema (what a server's first use of the store does)."""
    from shared.storage.postgres import PostgresStore

    PostgresStore(url, pool_size=1).close()
