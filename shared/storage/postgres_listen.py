"""LISTEN on the outbox channel: the only place that reads pg8000's connection internals.

`PostgresStore.listen(...)` (`OutboxClaims.listen`) starts an `OutboxListener`: a thread holding
one dedicated connection that LISTENs for the announcements of `poll://` rows (`seq address`,
sent by `NOTIFY` in the transaction that writes a row, and again by `renotify`). Every
(re)connect calls `on_tick(True)` first, since announcements sent while it was away are lost;
a broken connection is replaced after a backoff (0.5 s doubling to 30 s).
"""
from __future__ import annotations

import collections
import logging
import select
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.storage.postgres_tx import NOTIFY_CHANNEL

log = logging.getLogger("resonate.delivery")

Notes = Callable[[list[tuple[int, str]]], None]


def parse_note(payload: str) -> tuple[int, str] | None:
    """`seq address` -> (seq, address); None for anything else on the channel."""
    seq, _, address = payload.partition(" ")
    try:
        return int(seq), address
    except ValueError:
        return None


class OutboxListener:
    """`connect()` opens a pg8000.native connection (the store's own dialer: URL or Cloud SQL)."""

    def __init__(self, connect: Callable[[], Any], on_notes: Notes, on_tick: Callable[[bool], None],
                 tick_s: float) -> None:
        self._connect = connect
        self._on_notes = on_notes
        self._on_tick = on_tick
        self._tick_s = tick_s
        self._stopped = threading.Event()
        self._conn: Any = None
        self._thread = threading.Thread(target=self._run, name="listen", daemon=True)

    def start(self) -> OutboxListener:
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        self._drop_connection()  # unblocks the select()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopped.is_set():
            try:
                self._conn = self._listen()
                backoff = 0.5
                self._on_tick(True)
                self._pump(self._conn)
            except Exception as e:
                if self._stopped.is_set():
                    return
                log.warning("outbox LISTEN connection failed (%s); reconnecting in %.1fs", e, backoff)
            self._drop_connection()
            self._stopped.wait(backoff)
            backoff = min(30.0, backoff * 2)

    def _listen(self) -> Any:
        """pg8000 keeps notifications in a 100-entry deque that silently drops the oldest: replace
        it with an unbounded one."""
        conn = self._connect()
        conn.notifications = collections.deque()
        conn.run(f"LISTEN {NOTIFY_CHANNEL}")
        return conn

    def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            try:
                conn.close()
            except Exception:
                pass

    def _pump(self, conn: Any) -> None:
        """pg8000 has no wait API: wait for the socket to turn readable, then a round trip makes
        it parse what arrived. A notification read together with a previous reply sits in the
        buffer unseen by select(); the periodic tick's round trip picks it up."""
        next_tick = time.monotonic() + self._tick_s
        while not self._stopped.is_set():
            sock = conn._usock
            pending = getattr(sock, "pending", lambda: 0)()  # TLS: decrypted bytes select() can't see
            timeout = max(0.0, next_tick - time.monotonic())
            if not pending:
                select.select([sock], [], [], timeout)
            conn.run("SELECT 1")
            notes = []
            while conn.notifications:
                note = parse_note(conn.notifications.popleft()[2])
                if note is not None:
                    notes.append(note)
            if notes:
                self._on_notes(notes)
            if time.monotonic() >= next_tick:
                self._on_tick(False)
                next_tick = time.monotonic() + self._tick_s
