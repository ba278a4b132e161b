"""In-memory adapter (`dev` mode and the differential test's oracle side).

One lock serializes transactions; each transaction keeps an undo log so a function that raises
leaves nothing behind, exactly like a rolled-back database transaction.
"""
from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from shared.records import LEASE, ORIGIN, Lock, Message, Promise, Schedule, Task
from shared.storage.base import StorageError

T = TypeVar("T")
_MISSING = object()


def id_pattern(pattern: str) -> Callable[[str], bool]:
    """The REST API's id pattern as a predicate: `*` any run of characters, the rest literal."""
    rx = re.compile(".*".join(re.escape(part) for part in pattern.split("*")), re.DOTALL)
    return lambda s: rx.fullmatch(s) is not None


class _State:
    def __init__(self) -> None:
        self.promises: dict[str, Promise] = {}
        self.tasks: dict[str, Task] = {}
        self.callbacks: dict[tuple[str, str], bool] = {}  # (awaited, awaiter) -> ready
        self.listeners: dict[tuple[str, str], None] = {}  # (promise_id, address)
        self.outbox: dict[tuple, tuple[int, Message]] = {}  # key -> (seq, message)
        self.failures: dict[tuple, tuple[Message, int, bool]] = {}  # key -> (that message, failures, dead)
        self.schedules: dict[str, Schedule] = {}
        self.locks: dict[str, Lock] = {}
        self.meta: dict[str, str] = {}
        self.seq = itertools.count(1)


class MemoryTx:
    def __init__(self, st: _State, writable: bool) -> None:
        self.st = st
        self.writable = writable
        self.undo: list[tuple[dict, Any, Any]] = []

    def _set(self, table: dict, key: Any, value: Any) -> None:
        if not self.writable:
            from shared.storage.base import ReadOnlyViolation

            raise ReadOnlyViolation()
        self.undo.append((table, key, table.get(key, _MISSING)))
        if value is _MISSING:
            table.pop(key, None)
        else:
            table[key] = value

    def rollback(self) -> None:
        for table, key, old in reversed(self.undo):
            if old is _MISSING:
                table.pop(key, None)
            else:
                table[key] = old
        self.undo.clear()

    # promises
    def get_promise(self, id: str) -> Promise | None:
        return self.st.promises.get(id)

    def get_promises(self, ids: Collection[str]) -> dict[str, Promise]:
        return {i: p for i in ids if (p := self.st.promises.get(i)) is not None}

    def insert_promise(self, p: Promise) -> None:
        if p.id in self.st.promises:
            raise StorageError(f"duplicate promise {p.id}")
        self._set(self.st.promises, p.id, p)

    def update_promise(self, p: Promise) -> None:
        self._set(self.st.promises, p.id, p)

    def search_promises(self, state, tags, cursor, limit):
        out = []
        for pid in sorted(self.st.promises):
            if cursor is not None and pid <= cursor:
                continue
            p = self.st.promises[pid]
            if state is not None and p.state != state:
                continue
            if any(p.tags.get(k) != v for k, v in tags.items()):
                continue
            out.append(p)
            if len(out) >= limit:
                break
        return out

    def promises_by_branch(self, branch: str) -> list[Promise]:
        return [p for _, p in sorted(self.st.promises.items()) if p.tags.get("resonate:branch") == branch]

    def due_promises(self, t: int, target_only: bool, limit: int) -> list[Promise]:
        due = [p for p in self.st.promises.values()
               if p.state == "pending" and p.timeout_at <= t and (not target_only or p.target is not None)]
        due.sort(key=lambda p: (p.timeout_at, p.id))
        return due[:limit]

    # retention
    def retention_page(self, before: int, after: str | None, limit: int) -> list[tuple[str, str, bool]]:
        ids = sorted(i for i in self.st.promises if after is None or i > after)[:limit]
        return [(p.id, p.tags.get(ORIGIN) or p.id,
                 p.state != "pending" and p.settled_at is not None and p.settled_at <= before)
                for p in (self.st.promises[i] for i in ids)]

    def workflow_promises(self, key: str, limit: int | None = None) -> list[Promise]:
        return [p for _, p in sorted(self.st.promises.items()) if (p.tags.get(ORIGIN) or p.id) == key][:limit]

    def delete_promises(self, ids: Collection[str]) -> int:
        gone = {i for i in ids if i in self.st.promises}
        for i in sorted(gone):
            self._set(self.st.promises, i, _MISSING)
            if i in self.st.tasks:
                self._set(self.st.tasks, i, _MISSING)
        for table in (self.st.callbacks, self.st.listeners):
            for key in [k for k in table if k[0] in gone or (table is self.st.callbacks and k[1] in gone)]:
                self._set(table, key, _MISSING)
        for queue in (self.st.outbox, self.st.failures):
            for mkey in [k for k in queue if k[1] in gone]:
                self._set(queue, mkey, _MISSING)
        return len(gone)

    # tasks
    def get_task(self, id: str) -> Task | None:
        return self.st.tasks.get(id)

    def insert_task(self, t: Task) -> None:
        if t.id in self.st.tasks:
            raise StorageError(f"duplicate task {t.id}")
        self._set(self.st.tasks, t.id, t)

    def update_task(self, t: Task) -> None:
        self._set(self.st.tasks, t.id, t)

    def search_tasks(self, state, cursor, limit, prefix=""):
        out = []
        match = id_pattern(prefix + "*")
        for tid in sorted(self.st.tasks):
            if (cursor is not None and tid <= cursor) or not match(tid):
                continue
            t = self.st.tasks[tid]
            if state is not None and t.state != state:
                continue
            out.append(t)
            if len(out) >= limit:
                break
        return out

    def due_tasks(self, t: int, limit: int) -> list[Task]:
        due = [k for k in self.st.tasks.values() if k.timer_at is not None and k.timer_at <= t]
        due.sort(key=lambda k: (k.timer_at, k.id))
        return due[:limit]

    def tasks_leased_by(self, pid: str) -> list[Task]:
        return sorted((k for k in self.st.tasks.values()
                       if k.state == "acquired" and k.timer_type == LEASE and k.pid == pid), key=lambda k: k.id)

    # callbacks
    def add_callback(self, awaited: str, awaiter: str, ready: bool) -> None:
        if (awaited, awaiter) not in self.st.callbacks:
            self._set(self.st.callbacks, (awaited, awaiter), ready)

    def mark_callbacks_ready(self, awaited: str) -> list[str]:
        awaiters = sorted(w for (a, w) in self.st.callbacks if a == awaited)
        for w in awaiters:
            if not self.st.callbacks[(awaited, w)]:
                self._set(self.st.callbacks, (awaited, w), True)
        return awaiters

    def delete_callbacks(self, awaiter: str, ready_only: bool) -> None:
        for key, ready in list(self.st.callbacks.items()):
            if key[1] == awaiter and (ready or not ready_only):
                self._set(self.st.callbacks, key, _MISSING)

    def ready_counts(self, awaiters: list[str]) -> dict[str, int]:
        wanted, out = set(awaiters), dict[str, int]()
        for (_, w), ready in self.st.callbacks.items():
            if ready and w in wanted:
                out[w] = out.get(w, 0) + 1
        return out

    # listeners
    def add_listener(self, promise_id: str, address: str) -> None:
        if (promise_id, address) not in self.st.listeners:
            self._set(self.st.listeners, (promise_id, address), None)

    def count_listeners(self, promise_id: str, other_than: str | None = None) -> int:
        return sum(1 for (p, a) in self.st.listeners if p == promise_id and a != other_than)

    def pop_listeners(self, promise_id: str) -> list[str]:
        addrs = sorted(a for (p, a) in self.st.listeners if p == promise_id)
        for a in addrs:
            self._set(self.st.listeners, (promise_id, a), _MISSING)
        return addrs

    # outbox
    def enqueue(self, m: Message) -> None:
        old = self.st.outbox.get(m.key)
        if old is None:
            self._set(self.st.outbox, m.key, (next(self.st.seq), m))
        elif m.kind == "execute" and old[1] != m:
            self._set(self.st.outbox, m.key, (old[0], m))
            if m.key in self.st.failures:  # a new version starts with a clean record
                self._set(self.st.failures, m.key, _MISSING)

    def outbox(self, limit: int | None = None) -> list[Message]:
        rows = sorted(self.st.outbox.values(), key=lambda r: r[0])
        return [m for _, m in rows[:limit]]

    def outbox_page(self, after: int, limit: int) -> list[tuple[int, Message]]:
        return sorted((r for r in self.st.outbox.values() if r[0] > after and not self._dead(r[1])),
                      key=lambda r: r[0])[:limit]

    def _dead(self, m: Message) -> bool:
        f = self.st.failures.get(m.key)
        return f is not None and f[0] == m and f[2]

    def record_failure(self, m: Message, max_attempts: int) -> tuple[int, bool] | None:
        row = self.st.outbox.get(m.key)
        if row is None or row[1] != m or self._dead(m):
            return None
        f = self.st.failures.get(m.key)
        n = (f[1] if f is not None and f[0] == m else 0) + 1
        dead = 0 < max_attempts <= n
        self._set(self.st.failures, m.key, (m, n, dead))
        return n, dead

    def dead_messages(self) -> list[tuple[Message, int]]:
        rows = sorted(self.st.outbox.values(), key=lambda r: r[0])
        return [(m, self.st.failures[m.key][1]) for _, m in rows if self._dead(m)]

    def outbox_rows(self, dead_only: bool, after: int, limit: int) -> list[tuple[int, Message, int, bool]]:
        out = []
        for seq, m in sorted((r for r in self.st.outbox.values() if r[0] > after), key=lambda r: r[0]):
            f = self.st.failures.get(m.key)
            failures, dead = (f[1], f[2]) if f is not None and f[0] == m else (0, False)
            if dead or not dead_only:
                out.append((seq, m, failures, dead))
        return out[:limit]

    def revive_dead(self, seq: int | None) -> list[tuple[int, Message]]:
        rows = sorted(self.st.outbox.values(), key=lambda r: r[0])
        revived = [(s, m) for s, m in rows if (seq is None or s == seq) and self._dead(m)]
        for _, m in revived:
            self._set(self.st.failures, m.key, _MISSING)
        return revived

    def outbox_count(self) -> int:
        return len(self.st.outbox)

    def ack(self, m: Message) -> bool:
        row = self.st.outbox.get(m.key)
        if row is None or row[1] != m:
            return False
        self._set(self.st.outbox, m.key, _MISSING)
        if m.key in self.st.failures:
            self._set(self.st.failures, m.key, _MISSING)
        return True

    # schedules
    def get_schedule(self, id: str) -> Schedule | None:
        return self.st.schedules.get(id)

    def insert_schedule(self, s: Schedule) -> None:
        self._set(self.st.schedules, s.id, s)

    def update_schedule(self, s: Schedule) -> None:
        self._set(self.st.schedules, s.id, s)

    def delete_schedule(self, id: str) -> bool:
        if id not in self.st.schedules:
            return False
        self._set(self.st.schedules, id, _MISSING)
        return True

    def search_schedules(self, tags, cursor, limit):
        out = []
        for sid in sorted(self.st.schedules):
            if cursor is not None and sid <= cursor:
                continue
            s = self.st.schedules[sid]
            if any(s.promise_tags.get(k) != v for k, v in tags.items()):
                continue
            out.append(s)
            if len(out) >= limit:
                break
        return out

    def due_schedules(self, t: int, limit: int) -> list[Schedule]:
        due = sorted((s for s in self.st.schedules.values() if s.next_run_at <= t),
                     key=lambda s: (s.next_run_at, s.id))
        return due[:limit]

    # timers, debug, snapshots
    # the REST API
    def search_promises_by_id(self, pattern, states, tags, cursor, limit, created=(None, None)):
        match = id_pattern(pattern)
        after, before = created
        out = []
        for pid in sorted(self.st.promises):
            if (cursor is not None and pid <= cursor) or not match(pid):
                continue
            p = self.st.promises[pid]
            if states is not None and p.state not in states:
                continue
            if (after is not None and p.created_at < after) or (before is not None and p.created_at >= before):
                continue
            if any(p.tags.get(k) != v for k, v in tags.items()):
                continue
            out.append(p)
            if len(out) >= limit:
                break
        return out

    def search_schedules_by_id(self, pattern, tags, cursor, limit):
        match = id_pattern(pattern)
        out = []
        for sid in sorted(self.st.schedules):
            if (cursor is not None and sid <= cursor) or not match(sid):
                continue
            s = self.st.schedules[sid]
            if any(s.tags.get(k) != v for k, v in tags.items()):
                continue
            out.append(s)
            if len(out) >= limit:
                break
        return out

    def ready_awaited(self, awaiter: str) -> list[str]:
        return sorted(a for (a, w), ready in self.st.callbacks.items() if w == awaiter and ready)

    def get_lock(self, resource_id: str) -> Lock | None:
        return self.st.locks.get(resource_id)

    def put_lock(self, lock: Lock) -> None:
        self._set(self.st.locks, lock.resource_id, lock)

    def delete_lock(self, resource_id: str) -> bool:
        if resource_id not in self.st.locks:
            return False
        self._set(self.st.locks, resource_id, _MISSING)
        return True

    def locks_of_process(self, process_id: str) -> list[Lock]:
        return [lk for _, lk in sorted(self.st.locks.items()) if lk.process_id == process_id]

    def due_locks(self, t: int, limit: int) -> list[Lock]:
        due = sorted((lk for lk in self.st.locks.values() if lk.expires_at <= t),
                     key=lambda lk: (lk.expires_at, lk.resource_id))
        return due[:limit]

    def next_deadline(self, target_only: bool) -> int | None:
        cands = [p.timeout_at for p in self.st.promises.values()
                 if p.state == "pending" and (not target_only or p.target is not None)]
        cands += [t.timer_at for t in self.st.tasks.values() if t.timer_at is not None]
        cands += [s.next_run_at for s in self.st.schedules.values()]
        cands += [lk.expires_at for lk in self.st.locks.values()]
        return min(cands) if cands else None

    def get_meta(self, key: str) -> str | None:
        return self.st.meta.get(key)

    def set_meta(self, key: str, value: str | None) -> None:
        self._set(self.st.meta, key, _MISSING if value is None else value)

    def reset(self) -> None:
        for table in (self.st.promises, self.st.tasks, self.st.callbacks, self.st.listeners,
                      self.st.outbox, self.st.failures, self.st.schedules, self.st.locks):
            for key in list(table):
                self._set(table, key, _MISSING)

    def all_promises(self) -> list[Promise]:
        return [p for _, p in sorted(self.st.promises.items())]

    def all_tasks(self) -> list[Task]:
        return [t for _, t in sorted(self.st.tasks.items())]

    def all_callbacks(self) -> list[tuple[str, str, bool]]:
        return sorted(((a, w, r) for (a, w), r in self.st.callbacks.items()), key=lambda c: (c[1], c[0]))

    def all_listeners(self) -> list[tuple[str, str]]:
        return sorted(self.st.listeners)


class MemoryStore:
    """Everything in one process's memory; lost at exit. Used by `dev`."""

    name = "memory"
    max_key_length: int | None = None

    def __init__(self) -> None:
        self._st = _State()
        self._lock = threading.RLock()

    def write(self, fn: Callable[[MemoryTx], T]) -> T:
        with self._lock:
            tx = MemoryTx(self._st, writable=True)
            try:
                return fn(tx)
            except BaseException:
                tx.rollback()
                raise

    def read(self, fn: Callable[[MemoryTx], T]) -> T:
        with self._lock:
            return fn(MemoryTx(self._st, writable=False))

    def ping(self) -> None:
        return None

    def close(self) -> None:
        return None

    def outbox_claims(self) -> None:
        """One process holds the whole store: nobody else sends its outbox."""
        return None
