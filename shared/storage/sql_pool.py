"""What the server-database adapters (Postgres, MySQL) share: the connection pool and the
transaction loop (retries on contention, one re-run after a broken connection).

An adapter provides the driver: `connect()` opening one connection, `wrap(raw, gen)` making the
pooled `Conn`, a Tx class whose `_simple(sql)` runs BEGIN/COMMIT and which records its failure
state (`fail`: OK < ABORTED < RETRY < BROKEN, and the `error` to raise) when a statement fails,
and `_rollback(tx)`. Everything else here is the same for both.
"""
from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from shared.storage.base import Busy, StorageError

T = TypeVar("T")

# failure states of a transaction, by severity (Tx.fail)
OK, ABORTED, RETRY, BROKEN = 0, 1, 2, 3

MAX_RETRIES = 5  # contention re-runs of one write before Busy
BACKOFF_S = 0.004  # first retry waits up to this, doubling per retry (jittered)
POOL_WAIT_S = 30.0  # longest wait for a free pooled connection before Busy


class PooledConn(Protocol):
    gen: int


class SqlTx(Protocol):
    fail: int
    error: StorageError | None
    committing: bool

    def _simple(self, sql: str) -> None: ...


class Pool:
    """At most `size` connections, idle ones reused last-in first-out. `invalidate()` drops every
    idle connection and marks the checked-out ones for closing on release (after a break,
    the others most likely broke too: a server restart takes them all)."""

    def __init__(self, connect: Callable[[], Any], size: int, wrap: Callable[[Any, int], Any],
                 close: Callable[[Any], None], name: str) -> None:
        if size < 1:
            raise ValueError("pool_size must be >= 1")
        self._connect = connect
        self._wrap = wrap
        self._close = close
        self.name = name
        self.size = size
        self._cond = threading.Condition()  # looked up now: gevent's under monkey patching
        self._idle: list[Any] = []
        self._open = 0
        self._gen = 0
        self.closed = False

    def acquire(self) -> Any:
        deadline = None
        with self._cond:
            while True:
                if self.closed:
                    raise StorageError("store is closed")
                if self._idle:
                    return self._idle.pop()
                if self._open < self.size:
                    self._open += 1
                    gen = self._gen
                    break
                deadline = deadline or time.monotonic() + POOL_WAIT_S
                left = deadline - time.monotonic()
                if left <= 0:
                    raise Busy(f"{self.name}: all {self.size} pooled connections stayed busy for {POOL_WAIT_S:.0f}s")
                self._cond.wait(left)
        try:
            return self._wrap(self._connect(), gen)
        except BaseException:
            with self._cond:
                self._open -= 1
                self._cond.notify()
            raise

    def release(self, c: Any, healthy: bool) -> None:
        with self._cond:
            if healthy and not self.closed and c.gen == self._gen:
                self._idle.append(c)
                self._cond.notify()
                return
            self._open -= 1
            self._cond.notify()
        self._close(c)

    def invalidate(self) -> None:
        with self._cond:
            self._gen += 1
            dead, self._idle = self._idle, []
            self._open -= len(dead)
            self._cond.notify_all()
        for c in dead:
            self._close(c)

    def close(self) -> None:
        with self._cond:
            self.closed = True
        self.invalidate()


class Transactions:
    """The transaction loop, mixed into an adapter's store (which sets `_pool` and implements
    `_new_tx` and `_rollback`).

    One call = one transaction. Contention (the Tx marked itself RETRY) re-runs fn from scratch
    with jittered backoff; when retries run out the caller gets `Busy` (answer 503) and nothing
    is committed. A connection that broke discards every idle one, and a transaction that broke
    before COMMIT is re-run once on a fresh connection. A break during COMMIT is never re-run:
    its outcome is unknown, so the caller gets StorageError."""

    _pool: Pool
    retries = 0  # contention re-runs (observability)
    reconnects = 0  # re-runs after a broken connection

    def _new_tx(self, conn: Any, writable: bool) -> Any:
        raise NotImplementedError

    def _rollback(self, tx: Any) -> bool:
        """Roll back; False if the connection is no longer usable."""
        raise NotImplementedError

    def _transaction(self, fn: Callable[[Any], T], begin: str, writable: bool) -> T:
        conflicts = 0
        reconnected = False
        pause = 0.0
        while True:
            if pause:  # back off without holding a pooled connection
                time.sleep(pause)
            conn = self._pool.acquire()
            tx: SqlTx = self._new_tx(conn, writable)
            healthy = False
            try:
                tx._simple(begin)
                result = fn(tx)
                if tx.fail:  # fn swallowed a database error: never COMMIT a dead transaction
                    raise tx.error  # type: ignore[misc]
                tx.committing = True
                tx._simple("COMMIT")
                healthy = True
                return result
            except BaseException as e:
                if tx.fail == BROKEN:
                    self._pool.invalidate()
                    if not isinstance(e, Exception):  # e.g. GreenletExit: stop, don't re-run
                        raise
                    if tx.committing:
                        raise StorageError(f"{tx.error}; the COMMIT outcome is unknown") from e
                    if reconnected:
                        _reraise(tx.error, e)
                    reconnected = True  # the break happened before COMMIT: nothing was committed
                    self.reconnects += 1
                    continue
                healthy = self._rollback(tx)
                if tx.fail == RETRY and isinstance(e, Exception):
                    conflicts += 1
                    if conflicts > MAX_RETRIES:
                        raise Busy(f"{tx.error}; gave up after {MAX_RETRIES} retries") from e
                    self.retries += 1
                    pause = random.uniform(0, BACKOFF_S * (2 ** (conflicts - 1)))
                    continue
                raise  # fn's own exception, or the database error it let through, unchanged
            finally:
                self._pool.release(conn, healthy)


def _reraise(err: BaseException | None, e: BaseException) -> None:
    if err is None or err is e:
        raise e
    raise err from e
