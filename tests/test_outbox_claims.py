"""The delivery layer's storage needs: `Tx.get_promises` on every adapter, `Store.outbox_claims()`,
the LISTEN loop behind `OutboxClaims.listen`, constant reads per outbox page (no N+1), and the
one scheme switch / message body every path shares."""
from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from shared.delivery.inprocess import InProcessClaims
from shared.delivery.messages import OutboxRow, encode, message_json
from shared.delivery.outbox import Delivery
from shared.delivery.sender import Outcome, Sender
from shared.records import Message, Promise
from shared.storage import sqlite as sqlite_store
from shared.storage.base import Store
from tests.support.pg import pg_template, pg_url  # noqa: F401 (fixtures)
from tests.support.wait import wait_until


def _promise(i: int, state: str = "resolved") -> Promise:
    return Promise(f"p{i}", state, {"data": "YQ=="}, {"data": str(i)}, {"k": "v"}, 2**40, 1, 2)


ADAPTERS = ["memory", "sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]  # stores, in process


@pytest.fixture(params=ADAPTERS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    if request.param == "memory":
        from shared.storage.memory import MemoryStore

        s: Store = MemoryStore()
    elif request.param == "sqlite":
        s = sqlite_store.SqliteStore(str(tmp_path / "c.db"))
    else:
        from shared.storage.postgres import PostgresStore

        s = PostgresStore(request.getfixturevalue("pg_url"), pool_size=2)
    yield s
    s.close()


def test_get_promises_reads_the_existing_ones_by_id(store: Store) -> None:
    store.write(lambda tx: [tx.insert_promise(_promise(i)) for i in range(5)])
    wanted = ["p3", "p0", "nope", "p3", "p4"]
    got = store.read(lambda tx: tx.get_promises(wanted))
    assert got == {i: _promise(int(i[1:])) for i in ("p0", "p3", "p4")}
    assert got == store.read(lambda tx: {i: p for i in wanted if (p := tx.get_promise(i)) is not None})
    assert store.read(lambda tx: tx.get_promises([])) == {}
    assert store.read(lambda tx: tx.get_promises(set())) == {}
    # in a write transaction too (Postgres locks the rows and remembers the absent ids)
    assert store.write(lambda tx: sorted(tx.get_promises(["p1", "x"]))) == ["p1"]
    store.write(lambda tx: tx.insert_promise(_promise(9)))


def test_only_a_shared_database_offers_outbox_claims(store: Store) -> None:
    claims = store.outbox_claims()
    if store.name == "postgres":
        assert claims is store
        for name in ("listen", "claim_seqs", "claim_messages", "claim_push", "group_rows", "release", "renotify",
                     "receiver_up", "receiver_down", "receivers_alive", "dispatch_row", "dispatch_failed"):
            assert callable(getattr(claims, name)), name
    else:
        assert claims is None


def test_listen_reports_announced_poll_rows_and_ticks(pg_url: str) -> None:
    """The LISTEN loop lives in the adapter: (re)connect -> on_tick(True); every poll row written
    is announced as (seq, address); ticks come every tick_s; close() ends the thread."""
    from shared.storage.postgres import PostgresStore

    store = PostgresStore(pg_url, pool_size=2)
    claims = store.outbox_claims()
    assert claims is not None
    notes: list[tuple[int, str]] = []
    ticks: list[bool] = []
    sub = claims.listen(notes.extend, ticks.append, 0.2)
    try:
        assert wait_until(lambda: ticks[:1] == [True], 10), ticks
        store.write(lambda tx: tx.enqueue(Message("execute", "t1", "poll://any@g/w", 1)))
        store.write(lambda tx: tx.enqueue(Message("execute", "t2", "http://127.0.0.1:9/x", 1)))  # not announced
        assert wait_until(lambda: len(notes) >= 1, 10), notes
        seq = store.read(lambda tx: tx.outbox_page(0, 10))[0][0]
        assert notes == [(seq, "poll://any@g/w")]
        assert wait_until(lambda: False in ticks, 5), ticks
    finally:
        sub.close(5)
        store.close()
    threads = [t.name for t in threading.enumerate()]
    assert "listen" not in threads, threads


def _selects(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: int, run: str) -> int:
    """SELECT statements one re-drive pass (`run` = "page") or one send of claimed rows without
    payloads (`run` = "send", the cluster's path) reads, over `rows` unblock rows on SQLite."""
    seen: list[str] = []
    connect = sqlite_store.SqliteStore._connect

    def traced(self: sqlite_store.SqliteStore, writer: bool) -> Any:
        c = connect(self, writer)
        c.set_trace_callback(seen.append)
        return c

    monkeypatch.setattr(sqlite_store.SqliteStore, "_connect", traced)
    store = sqlite_store.SqliteStore(str(tmp_path / f"page{rows}{run}.db"))
    try:
        msgs = [Message("unblock", f"p{i}", f"poll://uni@g/w{i}") for i in range(rows)]

        def fill(tx: Any) -> None:
            for i, m in enumerate(msgs):
                tx.insert_promise(_promise(i))
                tx.enqueue(m)

        store.write(fill)
        sent: list[bytes] = []

        class Sink:
            def send(self, address: str, body: bytes, done: Any) -> None:
                sent.append(body)

            def close(self) -> None:
                pass

        claims = InProcessClaims(store, None, type("NoDebug", (), {"debug_session": False})())
        delivery = Delivery(store, Sender(None, None, {"poll": Sink()}, None), claims, background=False)
        seen.clear()
        if run == "page":
            claims.redrive(None, delivery)
        else:
            delivery.send_rows([OutboxRow.of(m, i + 1) for i, m in enumerate(msgs)])
        assert len(sent) == rows
        assert json.loads(sent[-1])["data"]["promise"]["id"] == f"p{rows - 1}"
        return sum(1 for s in seen if s.lstrip().upper().startswith("SELECT"))
    finally:
        store.close()


@pytest.mark.parametrize("run", ["page", "send"])
def test_unblock_payloads_cost_one_query_per_page(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, run: str) -> None:
    few, many = _selects(tmp_path, monkeypatch, 10, run), _selects(tmp_path, monkeypatch, 100, run)
    assert few == many, (few, many)
    assert many <= (3 if run == "page" else 1), many  # page: rows, their promises, the empty next page


def test_the_sender_switches_on_the_parsed_scheme_and_builds_one_body() -> None:
    got: list[tuple[str, bytes]] = []
    results: list[tuple[bool, str]] = []

    class Recorder:
        def send(self, address: str, body: bytes, done: Any) -> None:
            got.append((address, body))
            done(True)

        def close(self) -> None:
            pass

    from shared.delivery.hub import PollHub

    hub = PollHub()
    sender = Sender(hub, None, {"gcps": Recorder()}, "http://srv")
    ex = OutboxRow.of(Message("execute", "t", "gcps://proj/topic", 3))
    assert sender.send(ex, None, lambda ok, t: results.append((ok, t))) is Outcome.SENT
    assert got == [("gcps://proj/topic", encode(ex.message, None, "http://srv"))]
    assert json.loads(got[0][1]) == {"kind": "execute", "head": {"serverUrl": "http://srv"},
                                     "data": {"task": {"id": "t", "version": 3}}}
    assert results == [(True, "gcps")]
    poll = OutboxRow.of(Message("execute", "t", "poll://any@nobody", 3))
    assert sender.send(poll, None, lambda ok, t: None) is Outcome.NO_RECEIVER
    for address in ("http://127.0.0.1:1/x", "nope", "bash://"):  # push off, unparseable, bash off
        row = OutboxRow.of(Message("execute", "t", address, 3))
        assert sender.send(row, None, lambda ok, t: None) is Outcome.DROPPED
    wire = _promise(1).wire()
    assert message_json(Message("unblock", "p1", "poll://any@g"), wire) == {"kind": "unblock", "head": {},
                                                                           "data": {"promise": wire}}
    assert message_json(Message("execute", "t", "poll://any@g", 2), None)["head"] == {}  # debug.snap's shape
