"""Outbox claims for several processes on one MySQL database (shared/delivery/cluster.py), and
the announcements of `poll://` rows without LISTEN/NOTIFY.

The claims mean what they mean on Postgres (postgres_outbox.py): `claimed_until` is a lease on
the database's clock; a row is sent only by the process holding its claim; no claim is granted
during a debug session; a failed send backs off (0.5 s doubling to a minute) or, at its last
allowed attempt, parks the row dead. MySQL has no `UPDATE ... RETURNING`, so a claim is two
statements in one transaction: the claimable rows are read with `FOR UPDATE SKIP LOCKED`
(concurrent claimers split them, nobody waits), then their lease is written.

Announcements: the transaction that writes a poll row (and `renotify`, and a `release` that asks
for it) inserts a note `(seq, address)` into `outbox_notes`, whose AUTO_INCREMENT id orders
them. Each listening process polls for notes past the last id it saw every `POLL_S` (one indexed
read). Ids are handed out at insert but become visible at commit, so a note may appear behind a
later one: the ids skipped over are asked for again for `GAP_S` (a rolled-back insert leaves a
gap that never fills). Missed announcements are caught up like lost NOTIFYs: by `renotify` and
the connected instances' periodic rescans. The sweeper deletes notes older than a minute.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from shared.records import DEBUG_SESSION, Message
from shared.storage.base import ClaimedRow as Row
from shared.storage.mysql_tx import DB_NOW, key_hash
from shared.storage.sql_common import DEAD

log = logging.getLogger("resonate.delivery")

POLL_S = 0.02  # how often a listening process reads new notes
GAP_S = 2.0  # how long a skipped note id is looked for (a transaction committing late)
MAX_GAPS = 1000
NOTE_TTL_MS = 60_000

_COLS = "seq, kind, id, address, version"
_DEBUG = f"SELECT count(*) FROM meta WHERE k = '{DEBUG_SESSION}'"
_HTTP = "(LOWER(LEFT(address, 7)) = 'http://' OR LOWER(LEFT(address, 8)) = 'https://')"
_LEASE = f"claimed_until = {DB_NOW} + IF({_HTTP}, %(http_ttl)s, %(ttl)s)"
_UNCLAIMED = f"claimed_until < {DB_NOW}"
_NO_RECEIVER = ("NOT EXISTS (SELECT 1 FROM poll_receivers r WHERE r.grp = outbox.poll_group"
                f" AND (outbox.poll_uni IS NULL OR r.id = outbox.poll_uni) AND r.expires_at > {DB_NOW})")
_UNCLAIMED_UNBLOCK = f"kind = 'unblock' AND poll_group IS NOT NULL AND {_UNCLAIMED}"
# release: claimed_until is assigned before attempts (MySQL assigns left to right, each seeing
# the ones before it): the backoff and the last-attempt test read the failures before this one
_RELEASE = (f"UPDATE outbox SET claimed_until = CASE WHEN %(failed)s = 0 THEN 0"
            f" WHEN %(max)s > 0 AND attempts + 1 >= %(max)s THEN {DEAD}"
            f" ELSE {DB_NOW} + LEAST(%(cap)s, %(base)s * POW(2, LEAST(attempts, 20))) END,"
            " attempts = attempts + %(failed)s WHERE seq = %(s)s")
_LAST = "%(max)s > 0 AND (attempts + 1 >= %(max)s OR %(attempt)s >= %(max)s)"
_DISPATCH_FAILED = (f"UPDATE outbox SET claimed_until = IF({_LAST}, {DEAD}, {DB_NOW} + %(ttl)s),"
                    " attempts = attempts + 1 WHERE seq = %(s)s")
_ROW = f"SELECT attempts, claimed_until >= {DEAD} FROM outbox WHERE seq = %(s)s"
_LIVE = f"SELECT 1 FROM outbox WHERE seq = %(s)s AND version = %(v)s AND claimed_until < {DEAD} FOR UPDATE"


def _rows(rows: Any) -> list[Row]:
    return sorted((r[0], Message(r[1], r[2], r[3], r[4])) for r in rows)


def _debug(tx: Any) -> bool:
    return bool(tx._x(_DEBUG)[0][0])


def _claim(tx: Any, where: str, args: dict[str, Any], ttl: int, http_ttl: int, order: str = "") -> list[Row]:
    """Lease the claimable rows matching `where` to this process: read them skipping rows other
    transactions lock, then write their lease."""
    if _debug(tx):
        return []
    rows = tx._x(f"SELECT {_COLS} FROM outbox WHERE {where} AND {_UNCLAIMED}{order} FOR UPDATE SKIP LOCKED", **args)
    if rows:
        tx._n(f"UPDATE outbox SET {_LEASE} WHERE seq IN %(seqs)s", seqs=tuple(r[0] for r in rows),
              ttl=ttl, http_ttl=http_ttl)
    return _rows(rows)


def _notes(tx: Any, notes: list[tuple[int, str]]) -> None:
    if notes:
        values = ", ".join(f"(%(s{i})s, %(a{i})s, {DB_NOW})" for i in range(len(notes)))
        args = {f"s{i}": s for i, (s, _) in enumerate(notes)} | {f"a{i}": a for i, (_, a) in enumerate(notes)}
        tx._n(f"INSERT INTO outbox_notes (seq, address, created_at) VALUES {values}", **args)


class MyClusterOutbox:
    """`OutboxClaims` (shared/storage/base.py), mixed into MySQLStore (which provides `write`,
    `read` and `_connect`)."""

    write: Any
    read: Any
    _connect: Callable[[], Any]

    def outbox_claims(self) -> MyClusterOutbox:
        """Other processes may share the database: every send needs a claim."""
        return self

    def listen(self, on_notes: Callable[[list[tuple[int, str]]], None], on_tick: Callable[[bool], None],
               tick_s: float) -> NotesListener:
        """A thread polling `outbox_notes` on a connection of its own; `close()` it to stop."""
        return NotesListener(self._connect, on_notes, on_tick, tick_s).start()

    def claim_seqs(self, seqs: list[int], ttl_ms: int) -> list[Row]:
        """Claim these rows if nobody holds them (an announcement's path)."""
        if not seqs:
            return []
        return self.write(lambda tx: _claim(tx, "seq IN %(s)s", {"s": tuple(seqs)}, ttl_ms, ttl_ms))

    def claim_messages(self, ms: list[Message], ttl_ms: int, http_ttl_ms: int | None = None) -> list[Row]:
        """Claim the non-poll rows of these just-committed messages (the committing process sends them)."""
        if not ms:
            return []
        http_ttl = ttl_ms if http_ttl_ms is None else http_ttl_ms
        keys = tuple(key_hash(m) for m in ms)
        return self.write(lambda tx: _claim(tx, "key_hash IN %(k)s AND poll_group IS NULL", {"k": keys},
                                            ttl_ms, http_ttl))

    def claim_push(self, limit: int, ttl_ms: int, http_ttl_ms: int | None = None) -> list[Row]:
        """Claim up to `limit` unclaimed non-poll rows, oldest first, skipping rows others lock."""
        http_ttl = ttl_ms if http_ttl_ms is None else http_ttl_ms
        return self.write(lambda tx: _claim(tx, "poll_group IS NULL", {"n": limit}, ttl_ms, http_ttl,
                                            " ORDER BY seq LIMIT %(n)s"))

    def group_rows(self, group: str, after: int, limit: int) -> list[Row]:
        """Unclaimed rows for one poll group (a worker of it connected), in queue order."""
        return _rows(self.read(lambda tx: tx._x(
            f"SELECT {_COLS} FROM outbox WHERE poll_group = %(g)s AND seq > %(after)s AND {_UNCLAIMED}"
            " ORDER BY seq LIMIT %(n)s", g=group, after=after, n=limit)))

    def release(self, seq: int, m: Message, failed: bool, notify: bool,
                max_attempts: int = 0) -> tuple[int, bool] | None:
        """As `PgClusterOutbox.release`: claimable again at once, after a backoff when the send
        failed, or never (dead) at failure number `max_attempts`; optionally announced again."""

        def run(tx: Any) -> tuple[int, bool] | None:
            if not tx._x(_LIVE, s=seq, v=m.version):
                return None
            tx._n(_RELEASE, s=seq, failed=int(failed), base=500, cap=60_000, max=max_attempts if failed else 0)
            if notify:
                _notes(tx, [(seq, m.address)])
            r = tx._x(_ROW, s=seq)[0]
            return r[0], bool(r[1])

        return self.write(run)

    # Pub/Sub dispatch (shared/delivery/pubsub_dispatch.py) ------------------------------------
    def dispatch_row(self, seq: int, version: int) -> tuple[Message, int, bool, bool] | None:
        def run(tx: Any) -> Any:
            rows = tx._x(f"SELECT {_COLS}, attempts, claimed_until >= {DEAD} FROM outbox"
                         " WHERE seq = %(s)s AND version = %(v)s", s=seq, v=version)
            return (rows, _debug(tx)) if rows else None

        found = self.read(run)
        if found is None:
            return None
        r = found[0][0]
        return Message(r[1], r[2], r[3], r[4]), r[5], bool(r[6]), found[1]

    def dispatch_failed(self, seq: int, version: int, ttl_ms: int, max_attempts: int,
                        attempt: int = 0) -> tuple[int, bool] | None:
        def run(tx: Any) -> tuple[int, bool] | None:
            if not tx._x(_LIVE, s=seq, v=version):
                return None
            tx._n(_DISPATCH_FAILED, s=seq, ttl=ttl_ms, max=max_attempts, attempt=attempt)
            r = tx._x(_ROW, s=seq)[0]
            return r[0], bool(r[1])

        return self.write(run)

    def retry_later(self, seq: int, version: int, delay_ms: int) -> None:
        self.write(lambda tx: tx._n(f"UPDATE outbox SET claimed_until = {DB_NOW} + %(d)s WHERE seq = %(s)s"
                                    f" AND version = %(v)s AND claimed_until < {DEAD}", s=seq, v=version, d=delay_ms))

    def dead_rows(self, limit: int = 100) -> list[tuple[int, Message, int]]:
        rows = self.read(lambda tx: tx._x(f"SELECT {_COLS}, attempts FROM outbox WHERE claimed_until >= {DEAD}"
                                          " ORDER BY seq LIMIT %(n)s", n=limit))
        return [(r[0], Message(r[1], r[2], r[3], r[4]), r[5]) for r in rows]

    def renotify(self, limit: int, settle_ms: int, every_ms: int) -> int:
        """Announce unclaimed poll rows again (lost announcement, dead claimant), each at most
        every `every_ms`, only those some process has a receiver for."""
        def run(tx: Any) -> int:
            if _debug(tx):
                return 0
            rows = tx._x(f"SELECT seq, address FROM outbox WHERE poll_group IS NOT NULL AND {_UNCLAIMED}"
                         f" AND created_at < {DB_NOW} - %(settle)s AND notified_at < {DB_NOW} - %(every)s"
                         f" AND NOT {_NO_RECEIVER} ORDER BY seq LIMIT %(n)s FOR UPDATE SKIP LOCKED",
                         settle=settle_ms, every=every_ms, n=limit)
            if rows:
                tx._n(f"UPDATE outbox SET notified_at = {DB_NOW} WHERE seq IN %(s)s", s=tuple(r[0] for r in rows))
                _notes(tx, [(r[0], r[1]) for r in rows])
            return len(rows)

        return self.write(run)

    def drop_stale_unblocks(self, age_ms: int) -> int:
        """Drop unclaimed poll unblocks that have no receiver now, or that none claimed within
        `age_ms`; forget lapsed receivers and old announcements."""
        def run(tx: Any) -> int:
            tx._n(f"DELETE FROM poll_receivers WHERE expires_at < {DB_NOW} - 60000")
            tx._n(f"DELETE FROM outbox_notes WHERE created_at < {DB_NOW} - %(ttl)s", ttl=NOTE_TTL_MS)
            if _debug(tx):
                return 0
            return tx._n(f"DELETE FROM outbox WHERE {_UNCLAIMED_UNBLOCK} AND ({_NO_RECEIVER}"
                         f" OR created_at < {DB_NOW} - %(age)s)", age=age_ms)

        return self.write(run)

    def drop_unreceived(self, ms: list[Message]) -> int:
        """Just-committed poll unblocks with no receiver in any process are dropped at once."""
        if not ms:
            return 0
        keys = tuple(key_hash(m) for m in ms)

        def run(tx: Any) -> int:
            if _debug(tx):
                return 0
            return tx._n(f"DELETE FROM outbox WHERE key_hash IN %(k)s AND {_UNCLAIMED_UNBLOCK} AND {_NO_RECEIVER}",
                         k=keys)

        return self.write(run)

    # the registry of SSE connections -----------------------------------------------------------
    def receiver_up(self, group: str, id: str, instance: str, ttl_ms: int, principal: str | None = None) -> bool:
        """Register (or refresh) this instance's entry for a worker id; with a principal, only if
        no other principal's live entry on another instance holds it (the row of poll_locks
        serializes registrations of one (group, id) across instances)."""
        def run(tx: Any) -> bool:
            if principal is not None:
                tx._n("INSERT INTO poll_locks (grp, id) VALUES (%(g)s, %(id)s) ON DUPLICATE KEY UPDATE grp = grp",
                      g=group, id=id)
                if tx._x("SELECT 1 FROM poll_receivers WHERE grp = %(g)s AND id = %(id)s AND instance <> %(i)s"
                         f" AND principal IS NOT NULL AND principal <> %(p)s AND expires_at > {DB_NOW} LIMIT 1",
                         g=group, id=id, i=instance, p=principal):
                    return False
            tx._n("INSERT INTO poll_receivers (grp, id, instance, expires_at, principal)"
                  f" VALUES (%(g)s, %(id)s, %(i)s, {DB_NOW} + %(ttl)s, %(p)s) ON DUPLICATE KEY UPDATE"
                  " expires_at = VALUES(expires_at), principal = VALUES(principal)",
                  g=group, id=id, i=instance, ttl=ttl_ms, p=principal)
            return True

        return self.write(run)

    def receiver_down(self, group: str, id: str, instance: str) -> None:
        self.write(lambda tx: tx._n("DELETE FROM poll_receivers WHERE grp = %(g)s AND id = %(id)s"
                                    " AND instance = %(i)s", g=group, id=id, i=instance))

    def receivers(self) -> list[tuple[str, str]]:
        """(group, id) of every live entry of every process (the console's workers view)."""
        sql = f"SELECT DISTINCT grp, id FROM poll_receivers WHERE expires_at >= {DB_NOW} ORDER BY grp, id"
        return [(r[0], r[1]) for r in self.read(lambda tx: tx._x(sql))]

    def receivers_alive(self, instance: str, ttl_ms: int, keys: list[tuple[str, str]]) -> set[tuple[str, str]]:
        """Extend this process's unlapsed entries for the (group, id) it still holds; returns those."""
        if not keys:
            return set()
        where = f"instance = %(i)s AND (grp, id) IN %(keys)s AND expires_at > {DB_NOW}"

        def run(tx: Any) -> set[tuple[str, str]]:
            rows = tx._x(f"SELECT grp, id FROM poll_receivers WHERE {where} FOR UPDATE", i=instance,
                         keys=tuple(keys))
            if rows:
                tx._n(f"UPDATE poll_receivers SET expires_at = {DB_NOW} + %(ttl)s WHERE {where}", i=instance,
                      keys=tuple(keys), ttl=ttl_ms)
            return {(r[0], r[1]) for r in rows}

        return self.write(run)


class NotesListener:
    """Polls `outbox_notes` on a dedicated autocommit connection (each read sees what committed
    since): `on_notes` for each batch of new notes, `on_tick(True)` after every (re)connect,
    `on_tick(False)` every `tick_s`; a broken connection is replaced after a backoff (0.5 s
    doubling to 30 s)."""

    def __init__(self, connect: Callable[[], Any], on_notes: Callable[[list[tuple[int, str]]], None],
                 on_tick: Callable[[bool], None], tick_s: float, poll_s: float = POLL_S) -> None:
        self._connect = connect
        self._on_notes = on_notes
        self._on_tick = on_tick
        self._tick_s = tick_s
        self._poll_s = poll_s
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="notes", daemon=True)
        self.polls = 0

    def start(self) -> NotesListener:
        self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stopped.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        backoff = 0.5
        while not self._stopped.is_set():
            db = None
            try:
                db = self._connect()
                backoff = 0.5
                self._pump(db)
            except Exception as e:
                if self._stopped.is_set():
                    return
                log.warning("outbox notes poller failed (%s); reconnecting in %.1fs", e, backoff)
            finally:
                if db is not None:
                    try:
                        db.close()
                    except Exception:
                        pass
            self._stopped.wait(backoff)
            backoff = min(30.0, backoff * 2)

    def _pump(self, db: Any) -> None:
        cur = db.cursor()
        cur.execute("SELECT COALESCE(MAX(note), 0) FROM outbox_notes")
        last = int(cur.fetchone()[0])
        gaps: dict[int, float] = {}  # note id skipped over -> looked for until
        self._on_tick(True)  # announcements made before now are not read: the caller rescans
        next_tick = time.monotonic() + self._tick_s
        while not self._stopped.wait(self._poll_s):
            now = time.monotonic()
            if gaps:
                gaps = {n: until for n, until in gaps.items() if until > now}
            if gaps:
                cur.execute("SELECT note, seq, address FROM outbox_notes WHERE note > %s OR note IN %s ORDER BY note",
                            (last, tuple(gaps)))
            else:
                cur.execute("SELECT note, seq, address FROM outbox_notes WHERE note > %s ORDER BY note", (last,))
            self.polls += 1
            notes = []
            for note, seq, address in cur.fetchall():
                if note > last:
                    if len(gaps) < MAX_GAPS:
                        gaps.update((n, now + GAP_S) for n in range(last + 1, min(note, last + 1 + MAX_GAPS)))
                    last = note
                gaps.pop(note, None)
                notes.append((int(seq), address))
            if notes:
                self._on_notes(notes)
            if now >= next_tick:
                self._on_tick(False)
                next_tick = now + self._tick_s
