"""Hot paths read a page in a constant number of statements, however many rows it holds (no
N+1): counted with SQLite's statement trace on a real database file."""
from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import load
from shared.kinds import decode
from shared.service import Service
from shared.storage import sqlite as sqlite_store


def _statements(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int, kind: str, data: dict) -> int:
    seen: list[str] = []
    connect = sqlite_store.SqliteStore._connect

    def traced(self: sqlite_store.SqliteStore, writer: bool):  # type: ignore[no-untyped-def]
        c = connect(self, writer)
        c.set_trace_callback(seen.append)
        return c

    monkeypatch.setattr(sqlite_store.SqliteStore, "_connect", traced)
    store = sqlite_store.SqliteStore(str(tmp_path / f"q{rows}.db"))
    try:
        svc = Service(store, load({"debug": True}, env={}))
        for i in range(rows):
            svc.execute(decode("promise.create", {"id": f"p{i}", "timeoutAt": 2**60,
                                                  "tags": {"resonate:target": "poll://any@g"}}), 1)
        seen.clear()
        status, _ = svc.execute(decode(kind, data), 2)
        assert status == 200
        return sum(1 for s in seen if s.lstrip().upper().startswith("SELECT"))
    finally:
        store.close()


@pytest.mark.parametrize("kind,data", [("task.search", {"limit": 100}), ("debug.snap", {})])
def test_a_page_costs_the_same_number_of_reads_for_10_or_100_rows(tmp_path, monkeypatch, kind, data) -> None:
    assert _statements(tmp_path, monkeypatch, 10, kind, data) == _statements(tmp_path, monkeypatch, 100, kind, data)
