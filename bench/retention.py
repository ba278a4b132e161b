"""(i) Requests while retention purges: `promise.create` latency on a SQLite server whose retention
loop is deleting N finished promises, against the same load on a copy of the same database with
retention off. Retention deletes in transactions of `retention.batch_size` promises and lists in
short pages, so requests should wait at most for one batch (docs/operations.md#retention)."""
from __future__ import annotations

import functools
import shutil
import sqlite3
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import figures
from shared.records import Promise
from shared.storage.base import Tx
from shared.storage.sqlite import SqliteStore

WORKFLOW = 5  # promises per finished workflow (a root and four children)


def _insert(tx: Tx, batch: list[Promise]) -> None:
    for p in batch:
        tx.insert_promise(p)


def fill(db: Path, n: int) -> None:
    """N resolved promises, settled a day ago, in workflows of WORKFLOW."""
    store = SqliteStore(str(db))
    old = figures.now_ms() - 86_400_000
    try:
        for lo in range(0, n, 5_000):
            batch = [Promise(f"old-{i:07}", "resolved", {}, {}, {"resonate:origin": f"old-{i - i % WORKFLOW:07}"},
                             old, old, old) for i in range(lo, min(n, lo + 5_000))]
            store.write(functools.partial(_insert, batch=batch))
    finally:
        store.close()


def _left(db: Path) -> int:
    with sqlite3.connect(db) as c:
        return int(c.execute("SELECT count(*) FROM promises WHERE id LIKE 'old-%'").fetchone()[0])


def measure(workdir: Path, n: int, procs: int, conns: int, seconds: float,
            log: Callable[[str], None]) -> dict[str, Any]:
    """{off, purging}: each `figures.load` result plus `purged` (finished promises deleted by the end)."""
    from tests.support.server import start_server

    base = workdir / "retention-base.db"
    log(f"(i) filling {n:,} finished promises")
    fill(base, n)
    out: dict[str, Any] = {}
    for label, args in (("off", []), ("purging", ["--retention-settled-after", "60000"])):
        db = workdir / f"retention-{label}.db"
        shutil.copy(base, db)
        srv = start_server("sqlite", workdir / f"retention-{label}", debug=False, db=db, args=args)
        try:
            r = figures.load(srv.port, "create", procs, conns, seconds, prefix=f"ret-{label}")
            r["left_at_end"] = _left(db)  # read while the server runs (WAL readers never wait)
        finally:
            srv.stop(drop=False)
        r["purged"] = n - _left(db)
        out[label] = r
        log(f"(i) promise.create, retention {label}: {r['rate']:,.0f}/s, p50 {r['p50_ms']:.2f} ms, "
            f"p99 {r['p99_ms']:.2f} ms, errors {r['errors']}; finished promises purged {r['purged']:,} "
            f"(still {r['left_at_end']:,} when the load ended)")
    return out
