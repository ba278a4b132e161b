"""Baseline: raw SQLite single-row commits per second (WAL, synchronous=FULL, one INSERT + COMMIT).

Runs on the same directory (hence the same disk) as the server's database, with the same
durability settings the server uses, so the ratio shows what group commit buys (or costs).
"""
from __future__ import annotations

import os
import sqlite3
import time
from pathlib import Path


def commits_per_second(path: Path, seconds: float = 3.0) -> float:
    for suffix in ("", "-wal", "-shm"):
        try:
            os.remove(str(path) + suffix)
        except FileNotFoundError:
            pass
    db = sqlite3.connect(str(path), isolation_level=None)
    try:
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")
        db.execute("CREATE TABLE t (id TEXT PRIMARY KEY, value TEXT NOT NULL)")
        payload = "x" * 200  # about the size of a promise row
        for i in range(100):  # warm-up
            db.execute("BEGIN")
            db.execute("INSERT INTO t VALUES (?, ?)", (f"warm-{i}", payload))
            db.execute("COMMIT")
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + seconds
        while True:
            db.execute("BEGIN")
            db.execute("INSERT INTO t VALUES (?, ?)", (f"row-{n}", payload))
            db.execute("COMMIT")
            n += 1
            if n % 64 == 0 and time.perf_counter() >= deadline:
                break
        return n / (time.perf_counter() - t0)
    finally:
        db.close()
