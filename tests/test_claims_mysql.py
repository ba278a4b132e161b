"""`OutboxClaims` on MySQL against Postgres: the same script of claims, releases, announcements,
receivers and Pub/Sub dispatch bookkeeping, step by step, must give the same answers on both
(Postgres' claims are the reference: shared/storage/postgres_outbox.py)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from shared.records import Message
from tests.support.mysql import my_server, my_url  # noqa: F401 (fixtures)
from tests.support.pg import pg_template, pg_url  # noqa: F401 (fixtures)

pytestmark = [pytest.mark.mysql, pytest.mark.postgres]

H1 = Message("execute", "t1", "http://h/1", 1)
H2 = Message("execute", "t2", "https://h/2", 1)
P1 = Message("execute", "t3", "poll://any@g", 1)
U1 = Message("unblock", "p1", "poll://uni@g/w1")
U2 = Message("unblock", "p2", "poll://uni@other/w9")


def _norm(v: Any, seqs: dict[int, int]) -> Any:
    """Seqs as their order of first appearance (the two databases may number rows differently)."""
    if isinstance(v, list):
        return [_norm(x, seqs) for x in v]
    if isinstance(v, tuple) and len(v) >= 2 and isinstance(v[0], int) and isinstance(v[1], Message):
        return (seqs.setdefault(v[0], len(seqs)), *v[1:])
    return v


def _script(s: Any) -> list[tuple[str, Callable[[], Any]]]:
    known: dict[Message, int] = {}

    def seq(m: Message) -> int:  # remembered: outbox_page leaves dead rows out
        if m not in known:
            known.update((x, q) for q, x in s.read(lambda tx: tx.outbox_page(0, 100)))
        return known[m]
    return [
        ("enqueue", lambda: s.write(lambda tx: [tx.enqueue(m) for m in (H1, H2, P1, U1, U2)])),
        ("claim new http", lambda: s.claim_messages([H1, H2, P1], 60_000)),  # the poll row is not claimed here
        ("claim again", lambda: s.claim_messages([H1, H2], 60_000)),
        ("push batch", lambda: s.claim_push(10, 60_000)),
        ("group rows", lambda: s.group_rows("g", 0, 10)),
        ("claim poll by seq", lambda: s.claim_seqs([seq(P1)], 30_000)),
        ("claim poll twice", lambda: s.claim_seqs([seq(P1)], 30_000)),
        ("release ok", lambda: s.release(seq(P1), P1, False, True)),
        ("release wrong version", lambda: s.release(seq(H1), Message("execute", "t1", "http://h/1", 7), True, False)),
        ("release failed", lambda: s.release(seq(H1), H1, True, False, 3)),
        ("backing off", lambda: s.claim_push(10, 60_000)),
        ("release failed 2", lambda: s.release(seq(H1), H1, True, False, 3)),
        ("release failed 3: dead", lambda: s.release(seq(H1), H1, True, False, 3)),
        ("dead rows", lambda: s.dead_rows()),
        ("dead stays", lambda: s.release(seq(H1), H1, True, False, 3)),
        ("dispatch row", lambda: s.dispatch_row(seq(H2), 1)),
        ("dispatch row gone", lambda: s.dispatch_row(seq(H2), 5)),
        ("dispatch failed", lambda: s.dispatch_failed(seq(H2), 1, 60_000, 2)),
        ("dispatch failed last", lambda: s.dispatch_failed(seq(H2), 1, 60_000, 2)),
        ("dispatch failed dead", lambda: s.dispatch_failed(seq(H2), 1, 60_000, 2)),
        ("retry later", lambda: s.retry_later(seq(P1), 1, 0)),
        ("receiver up", lambda: s.receiver_up("g", "w1", "i1", 60_000, "alice")),
        ("other principal refused", lambda: s.receiver_up("g", "w1", "i2", 60_000, "bob")),
        ("same principal elsewhere", lambda: s.receiver_up("g", "w1", "i2", 60_000, "alice")),
        ("alive", lambda: sorted(s.receivers_alive("i1", 60_000, [("g", "w1"), ("g", "nope")]))),
        ("alive none", lambda: sorted(s.receivers_alive("i1", 60_000, []))),
        ("drop unreceived", lambda: s.drop_unreceived([U1, U2])),
        ("renotify", lambda: s.renotify(100, 0, 0)),
        ("renotify again soon", lambda: s.renotify(100, 0, 60_000)),
        ("receiver down", lambda: s.receiver_down("g", "w1", "i1")),
        ("receiver down 2", lambda: s.receiver_down("g", "w1", "i2")),
        ("drop stale", lambda: s.drop_stale_unblocks(60_000)),
        ("outbox", lambda: s.read(lambda tx: tx.outbox())),
        ("debug on", lambda: s.write(lambda tx: tx.set_meta("debug_session", "1"))),
        ("no claims in debug", lambda: (s.claim_seqs([seq(P1)], 1000), s.claim_push(10, 1000),
                                        s.dispatch_row(seq(P1), 1))),
    ]


def test_mysql_claims_answer_as_postgres_claims(pg_url: str, my_url: str) -> None:
    from shared.storage.mysql import MySQLStore
    from shared.storage.postgres import PostgresStore

    pg, my = PostgresStore(pg_url, pool_size=2), MySQLStore(my_url, pool_size=2)
    try:
        seqs_pg: dict[int, int] = {}
        seqs_my: dict[int, int] = {}
        for (name, a), (_, b) in zip(_script(pg), _script(my), strict=True):
            got_pg, got_my = _norm(a(), seqs_pg), _norm(b(), seqs_my)
            assert got_pg == got_my, (name, got_pg, got_my)
    finally:
        pg.close()
        my.close()


def test_release_backoff_doubles_on_the_database_clock(my_url: str) -> None:
    from shared.storage.mysql import MySQLStore

    s = MySQLStore(my_url, pool_size=2)
    try:
        s.write(lambda tx: tx.enqueue(H1))
        (seq, _), = s.claim_push(10, 60_000)
        until = []
        for _ in range(3):
            s.write(lambda tx: tx._x("UPDATE outbox SET claimed_until = 0"))
            s.claim_push(10, 60_000)
            now = int(time.time() * 1000)
            s.release(seq, H1, True, False)
            until.append(s.read(lambda tx: tx._x("SELECT claimed_until FROM outbox")[0][0]) - now)
        for got, want in zip(until, (500, 1000, 2000), strict=True):
            assert want - 200 <= got <= want + 200, until
    finally:
        s.close()
