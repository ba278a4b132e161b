"""Random differential test: identical envelope sequences through every storage adapter.

One `Service` per adapter (memory is the reference; SQLite on a fresh file; more adapters can be
added through the registry and `RESONATE_DIFF_BACKENDS`). Inside a debug session, a seeded
generator drives requests of all 28 kinds over a small id pool with a logical clock
(`head["resonate:debug_time"]`). After every step the full response and the full `debug.snap`
must be identical across adapters, and the snapshot must satisfy the cheap snapshot invariants. A run lasts until every kind has succeeded at least once (plus a minimum number of
steps); if some kind never succeeded within the step cap the test fails and names them.

Reproduce a failure: RESONATE_DIFF_SEED=<seed> pytest tests/test_differential.py
(the full trace of envelopes is written next to the failure message).
Environment:
  RESONATE_DIFF_BACKENDS   comma-separated adapters for every seed (the first is the
                           reference; e.g. "memory,sqlite,postgres")
  RESONATE_DIFF_SEED       run only this seed
  RESONATE_DIFF_SEEDS      number of seeds to run (default 5: seeds 1..N)
  RESONATE_DIFF_PG_SEEDS   without RESONATE_DIFF_BACKENDS: how many of the first seeds also run
                           on Postgres (default 2; the others compare memory with SQLite)
  RESONATE_DIFF_MY_SEEDS   the same for MySQL (default 1)
  RESONATE_DIFF_MIN_STEPS  minimum steps per seed (default 3000)
  RESONATE_DIFF_MAX_STEPS  step cap (default 20000)
  RESONATE_TEST_PG_URL        admin URL of the Postgres server (databases are cloned from a template)
"""
from __future__ import annotations

import json
import os
import random
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from shared import cron
from shared.config import load
from shared.kinds import CONSOLE, CONSOLE_KINDS, KINDS, OPERATOR, OPERATOR_KINDS, REST, REST_KINDS, RPC, RPC_KINDS
from shared.legacy.ids import invoke_id, resume_id
from shared.protocol import Envelope
from shared.service import Service
from tests.support.envelope import envelope

# ---------------------------------------------------------------------------------- adapters


def _memory(tmp: Path) -> Any:
    from shared.storage.memory import MemoryStore

    return MemoryStore()


def _sqlite(tmp: Path) -> Any:
    from shared.storage.sqlite import SqliteStore

    return SqliteStore(str(tmp / "diff.db"))


def _postgres(tmp: Path) -> Any:
    """A fresh database cloned from the migrated template, dropped when the store closes."""
    from shared.storage.postgres import PostgresStore
    from tests.support.pg import drop_database, template_clone_url

    url = template_clone_url()
    store = PostgresStore(url)
    close = store.close

    def close_and_drop() -> None:
        close()
        drop_database(url)

    store.close = close_and_drop  # type: ignore[method-assign]
    return store


def _mysql(tmp: Path) -> Any:
    """A fresh migrated database, given back (wiped for reuse) when the store closes."""
    from shared.storage.mysql import MySQLStore
    from tests.support.mysql import give_back, take_database

    url = take_database()
    store = MySQLStore(url)
    close = store.close

    def close_and_give_back() -> None:
        close()
        give_back(url)

    store.close = close_and_give_back  # type: ignore[method-assign]
    return store


# name -> factory(tmp_dir) -> Store. Add adapters here.
ADAPTERS: dict[str, Callable[[Path], Any]] = {
    "memory": _memory,
    "sqlite": _sqlite,
    "postgres": _postgres,
    "mysql": _mysql,
}
DB_MARKS = {"postgres": pytest.mark.postgres, "mysql": pytest.mark.mysql}


def selected_backends(seed: int) -> list[str]:
    """The adapters of one seed: RESONATE_DIFF_BACKENDS, else memory, SQLite and, for the first
    RESONATE_DIFF_PG_SEEDS seeds, Postgres, for the first RESONATE_DIFF_MY_SEEDS seeds MySQL (a
    database step costs several SQLite ones; the engine's answers do not depend on the seed's
    adapter set, the store contract suite compares every adapter method by method)."""
    raw = os.environ.get("RESONATE_DIFF_BACKENDS")
    if raw is None:
        raw = "memory,sqlite"
        if seed <= int(os.environ.get("RESONATE_DIFF_PG_SEEDS", "2")):
            raw += ",postgres"
        if seed <= int(os.environ.get("RESONATE_DIFF_MY_SEEDS", "1")):
            raw += ",mysql"
    names = [b.strip() for b in raw.split(",") if b.strip()]
    unknown = [n for n in names if n not in ADAPTERS]
    assert not unknown, f"unknown adapters in RESONATE_DIFF_BACKENDS: {unknown}; known: {sorted(ADAPTERS)}"
    assert len(names) >= 2, "a differential run needs at least two adapters"
    return names


def seeds() -> list[int]:
    if os.environ.get("RESONATE_DIFF_SEED"):
        return [int(os.environ["RESONATE_DIFF_SEED"])]
    return list(range(1, int(os.environ.get("RESONATE_DIFF_SEEDS", "5")) + 1))


def seed_params() -> list:
    """Seeds as params named by their adapters; a seed with Postgres (MySQL) is marked `postgres` (`mysql`)."""
    out = []
    for seed in seeds():
        names = selected_backends(seed)
        out.append(pytest.param(seed, marks=[DB_MARKS[n] for n in names if n in DB_MARKS],
                                id=f"{seed}-{'-'.join(names)}"))
    return out


MIN_STEPS = int(os.environ.get("RESONATE_DIFF_MIN_STEPS", "3000"))
MAX_STEPS = int(os.environ.get("RESONATE_DIFF_MAX_STEPS", "20000"))

# ---------------------------------------------------------------------------------- the model

ALL_KINDS = tuple(KINDS)  # every kind the server declares (shared/kinds.py): each must succeed in a run

# Statuses each kind may answer; anything else — 500 above all — is a failure.
ALLOWED_STATUS: dict[str, set[int]] = {
    "promise.get": {200, 400, 404},
    "promise.create": {200, 400},
    "promise.settle": {200, 400, 404},
    "promise.register_callback": {200, 400, 404, 422},
    "promise.register_listener": {200, 400, 404},
    "promise.search": {200, 400},
    "task.get": {200, 400, 404},
    "task.create": {200, 400, 409, 422},
    "task.acquire": {200, 400, 404, 409},
    "task.release": {200, 400, 404, 409},
    "task.fulfill": {200, 400, 404, 409},
    "task.suspend": {200, 300, 400, 404, 409, 422},
    "task.fence": {200, 400, 404, 409},
    "task.heartbeat": {200, 400},
    "task.halt": {200, 400, 404, 409},
    "task.continue": {200, 400, 404, 409},
    "task.search": {200, 400},
    "schedule.get": {200, 400, 404},
    "schedule.create": {200, 400},
    "schedule.delete": {200, 400, 404},
    "schedule.search": {200, 400},
    "debug.start": {200},
    "debug.stop": {200},
    "debug.reset": {200},
    "debug.snap": {200},
    "outbox.search": {200, 400},
    "outbox.redrive": {200, 400},
    "debug.tick": {200, 400},
    "promise.purge": {200, 400},
    # the console's views (`POST /ui/api`)
    "console.promises": {200, 400},
    "console.promise": {200, 400, 404},
    "console.tasks": {200, 400},
    "console.schedules": {200, 400},
    "console.workers": {200},
    # the REST API's kinds (sent to `Service.handle` as its routes do; errors carry a code)
    "rest.promise.get": {200, 400, 404},
    "rest.promise.create": {200, 201, 400, 409},
    "rest.promise.complete": {200, 201, 400, 403, 404},
    "rest.promise.search": {200, 400},
    "rest.promise.callback": {200, 201, 400, 404},
    "rest.promise.subscribe": {200, 201, 400, 404},
    "rest.task.claim": {201, 400, 403, 404},
    "rest.task.complete": {200, 201, 400, 403, 404},
    "rest.task.drop": {200, 400, 403, 404},
    "rest.task.heartbeat": {200, 400},
    "rest.schedule.get": {200, 400, 404},
    "rest.schedule.create": {200, 201, 400, 409},
    "rest.schedule.delete": {204, 400, 404},
    "rest.schedule.search": {200, 400},
    "rest.lock.acquire": {201, 400, 403},
    "rest.lock.release": {204, 400, 404},
    "rest.lock.heartbeat": {200, 400},
}

T0 = 1_700_000_000_000
R = 30_000
A = "poll://any@g"
TARGETS = [A, A, A, "poll://any@g/w1", "http://127.0.0.1:9/hook"]
POOL = ["p0", "p1", "p2", "p3", "p4", "p\u00e95"]  # six promise ids (one non-ASCII)
MISSING = "nope"
SCHEDULES = ["s0", "s1", "s.2"]
PIDS = ["w1", "w2"]
LISTENERS = ["poll://uni@g/c1", "poll://uni@g/c2", "http://127.0.0.1:9/listen"]
CRONS = ["* * * * *", "*/5 * * * * *", "*/5 * * * * *", "*/30 * * * * *", "0 * * * *"]
TEMPLATES = ["{{.id}}-{{.timestamp}}", "{{.id}}.{{.timestamp}}", "{{.id}}", "p1", "p4"]
SETTLE_STATES = ["resolved", "rejected", "rejected_canceled"]
I64_MAX = 2**63 - 1


class Gen:
    """Builds the next envelope from the reference's latest snapshot (read-only, no lazy timeouts)."""

    def __init__(self, rnd: random.Random) -> None:
        self.r = rnd
        self.clock = T0
        self.snap: dict[str, Any] = {k: [] for k in ("promises", "promiseTimeouts", "callbacks", "listeners",
                                                      "tasks", "taskTimeouts", "messages")}
        self.schedules: dict[str, tuple[str, int]] = {}  # id -> (cron, nextRunAt), from responses
        self.step = 0

    # ---- helpers over the snapshot ------------------------------------------------------------

    def promises(self, pred: Callable[[dict], bool] = lambda p: True) -> list[dict]:
        return [p for p in self.snap["promises"] if pred(p)]

    def tasks(self, pred: Callable[[dict], bool] = lambda t: True) -> list[dict]:
        return [t for t in self.snap["tasks"] if pred(t)]

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def any_promise_id(self) -> str:
        known = [p["id"] for p in self.snap["promises"]]
        roll = self.r.random()
        if roll < 0.75 or not known:
            return self.r.choice(POOL)
        if roll < 0.97:
            return self.r.choice(known)
        return MISSING

    def task_id(self, states: tuple[str, ...] | None, p_match: float = 0.85) -> str:
        if states is not None and self.chance(p_match):
            cands = [t["id"] for t in self.tasks(lambda t: t["state"] in states)]
            if cands:
                return self.r.choice(cands)
        cands = [t["id"] for t in self.snap["tasks"]]
        roll = self.r.random()
        if roll < 0.6 and cands:
            return self.r.choice(cands)
        if roll < 0.95:
            return self.r.choice(POOL)
        return MISSING

    def version_for(self, id: str) -> int:
        t = next((t for t in self.snap["tasks"] if t["id"] == id), None)
        if t is not None and self.chance(0.85):
            return t["version"]
        base = t["version"] if t is not None else 0
        return max(0, base + self.r.choice([-1, 1, 2]))

    def timeout_at(self) -> int:
        roll = self.r.random()
        if roll < 0.06:
            return max(0, self.clock - self.r.choice([0, 0, 1, 500]))  # born expired (== counts)
        if roll < 0.2:
            return self.clock + self.r.randint(1, 2_000)
        if roll < 0.5:
            return self.clock + self.r.randint(2_000, 60_000)
        if roll < 0.95:
            return self.clock + self.r.randint(60_000, 600_000)
        return self.r.choice([2**62, I64_MAX])

    def tags(self, id: str, timeout_at: int, need_target: bool = False) -> dict[str, str]:
        profile = self.r.choice(["workflow", "child", "local", "timer", "timer_bare", "delay", "bare", "http"])
        if need_target and profile in ("local", "timer_bare", "bare"):
            profile = "workflow"
        t: dict[str, str] = {}
        if profile == "workflow":
            t = {"resonate:target": self.r.choice(TARGETS), "resonate:branch": id, "resonate:origin": id}
        elif profile == "child":
            t = {"resonate:target": A, "resonate:branch": "p0", "resonate:parent": "p0"}
        elif profile == "local":
            t = {"resonate:branch": "p0", "k": "v"}
        elif profile == "timer":
            t = {"resonate:target": A, "resonate:timer": "true"}
        elif profile == "timer_bare":
            t = {"resonate:timer": self.r.choice(["true", "TRUE"])}
        elif profile == "delay":
            hi = max(self.clock, timeout_at - 1)
            t = {"resonate:target": A, "resonate:delay": str(self.r.randint(max(0, self.clock - 100), hi))}
        elif profile == "bare":
            t = self.r.choice([{}, {"k": "v"}, {"k": "w"}, {"k": "v\x00w"}, {"k": "\u00e9\U0001f600"}])
        elif profile == "http":
            t = {"resonate:target": "http://127.0.0.1:9/hook", "k": "v"}
        if self.chance(0.03):  # occasionally invalid: bad target, bad or misplaced delay
            t = self.r.choice([
                {"resonate:target": "nope"},
                {"resonate:target": "poll://x@g"},
                {"resonate:delay": "5"},
                {"resonate:target": A, "resonate:delay": str(timeout_at)},
                {"resonate:target": A, "resonate:delay": "-1"},
            ])
        return t

    def value(self) -> dict[str, Any] | None:
        return self.r.choice([None, {}, {"data": "eA=="}, {"headers": {"h": "1"}, "data": ""}, {"headers": {}}])

    def create_data(self, id: str, need_target: bool = False) -> dict[str, Any]:
        ta = self.timeout_at()
        d: dict[str, Any] = {"id": id, "timeoutAt": ta}
        tags = self.tags(id, ta, need_target)
        if tags or self.chance(0.5):
            d["tags"] = tags
        param = self.value()
        if param is not None:
            d["param"] = param
        return d

    def deadlines(self) -> list[int]:
        ds = [p["timeoutAt"] for p in self.promises(lambda p: p["state"] == "pending")]
        ds += [t["timeout"] for t in self.snap["taskTimeouts"]]
        ds += [n for _, n in self.schedules.values()]
        return sorted(d for d in ds if self.clock <= d <= self.clock + 120_000)

    # ---- time -------------------------------------------------------------------------------

    def advance(self) -> None:
        roll = self.r.random()
        if roll < 0.40:
            return
        if roll < 0.65:
            self.clock += self.r.randint(1, 50)
        elif roll < 0.88:
            self.clock += self.r.randint(50, 2_000)
        elif roll < 0.92:
            self.clock += self.r.randint(2_000, 35_000)
        else:
            ds = self.deadlines()
            if ds:
                d = self.r.choice(ds[:4])
                self.clock = max(self.clock, d + self.r.choice([-1, 0, 0, 1]))

    # ---- the next request ---------------------------------------------------------------------

    WEIGHTS: dict[str, float] = {
        "promise.get": 5, "promise.create": 12, "promise.settle": 5, "promise.register_callback": 4,
        "promise.register_listener": 4, "promise.search": 2,
        "task.get": 4, "task.create": 5, "task.acquire": 9, "task.release": 3, "task.fulfill": 4,
        "task.suspend": 6, "task.fence": 6, "task.heartbeat": 4, "task.halt": 2.5, "task.continue": 2.5,
        "task.search": 2,
        "schedule.get": 1.5, "schedule.create": 1.5, "schedule.delete": 1.2, "schedule.search": 1,
        "debug.start": 0.15, "debug.stop": 0.15, "debug.reset": 0.25, "debug.snap": 0.5, "debug.tick": 5,
        "outbox.search": 0.5, "outbox.redrive": 0.3, "promise.purge": 0.6,
        "console.promises": 1, "console.promise": 1, "console.tasks": 0.6, "console.schedules": 0.4,
        "console.workers": 0.1,
        "rest.promise.get": 1.5, "rest.promise.create": 4, "rest.promise.complete": 3, "rest.promise.search": 1,
        "rest.promise.callback": 2, "rest.promise.subscribe": 1.5, "rest.task.claim": 3, "rest.task.complete": 2.5,
        "rest.task.drop": 1, "rest.task.heartbeat": 1.5,
        "rest.schedule.get": 0.8, "rest.schedule.create": 1, "rest.schedule.delete": 0.6, "rest.schedule.search": 0.5,
        "rest.lock.acquire": 1.5, "rest.lock.release": 1, "rest.lock.heartbeat": 0.8,
    }

    def next(self) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """(kind, head, data) of the next request; advances the clock."""
        self.step += 1
        self.advance()
        weights = dict(self.WEIGHTS)
        # a small pool goes stale once everything has settled: reset more often then
        settled = sum(1 for p in self.snap["promises"] if p["id"] in POOL and p["state"] != "pending")
        weights["debug.reset"] += 6 * (settled / len(POOL)) ** 3
        kinds = list(weights)
        kind = self.r.choices(kinds, weights=[weights[k] for k in kinds])[0]
        # behave like workers more often than not: lease holders need something to hold
        states = Counter(t["state"] for t in self.snap["tasks"])
        if kind in ("task.release", "task.fulfill", "task.suspend", "task.fence") and not states["acquired"] \
                and states["pending"] and self.chance(0.6):
            kind = "task.acquire"
        elif kind == "task.continue" and not states["halted"] and self.chance(0.5):
            kind = "task.halt"
        head: dict[str, Any] = envelope(kind, None, corr=f"c{self.step}", time=self.clock)["head"]
        data = getattr(self, "g_" + kind.replace(".", "_"))(head)
        return kind, head, data

    # promise.*
    def g_promise_get(self, head):
        return {"id": self.any_promise_id() if self.chance(0.97) else ""}

    def g_promise_create(self, head):
        existing = {p["id"] for p in self.snap["promises"]}
        fresh = [i for i in POOL if i not in existing]
        id = self.r.choice(fresh) if fresh and self.chance(0.7) else self.any_promise_id()
        d = self.create_data(id)
        if self.chance(0.02):
            d = self.r.choice([{"id": "", "timeoutAt": 5}, {"id": id, "timeoutAt": -1}, {"id": id},
                               {"id": id, "timeoutAt": 1.5}, {"id": "a\x00b", "timeoutAt": 5}])
        return d

    def g_promise_settle(self, head):
        pending = [p["id"] for p in self.promises(lambda p: p["state"] == "pending")]
        id = self.r.choice(pending) if pending and self.chance(0.7) else self.any_promise_id()
        d: dict[str, Any] = {"id": id, "state": self.r.choice(SETTLE_STATES)}
        v = self.value()
        if v is not None:
            d["value"] = v
        if self.chance(0.02):
            d["state"] = self.r.choice(["pending", "rejected_timedout", "bogus"])
        return d

    def g_promise_register_callback(self, head):
        targeted = [p["id"] for p in self.promises(lambda p: "resonate:target" in p["tags"])]
        awaiter = self.r.choice(targeted) if targeted and self.chance(0.8) else self.any_promise_id()
        awaited = self.any_promise_id()
        if awaited == awaiter and not self.chance(0.05):
            awaited = self.r.choice([i for i in POOL if i != awaiter])
        return {"awaited": awaited, "awaiter": awaiter}

    def g_promise_register_listener(self, head):
        addr = self.r.choice(LISTENERS) if self.chance(0.97) else self.r.choice(["nope", "", "poll://uni@"])
        return {"awaited": self.any_promise_id(), "address": addr}

    def g_promise_search(self, head):
        d: dict[str, Any] = {}
        if self.chance(0.5):
            d["state"] = self.r.choice(["pending", "resolved", "rejected", "rejected_canceled", "rejected_timedout"])
        if self.chance(0.4):
            d["tags"] = self.r.choice([{}, {"k": "v"}, {"resonate:target": A}, {"resonate:branch": "p0"},
                                       {"k": "v", "resonate:target": A}, {"resonate:branch": "p0", "k": "v"},
                                       {"k": "v", "resonate:target": "http://127.0.0.1:9/hook"},
                                       {"k": "v\x00w"}, {"k": "\u00e9\U0001f600"}])
        if self.chance(0.6):
            d["limit"] = self.r.choice([1, 2, 3, 100, 1000] + ([0, 1001] if self.chance(0.05) else []))
        if self.chance(0.3):
            d["cursor"] = self.r.choice(POOL + ["", "s"])
        return d

    # task.*
    def g_task_get(self, head):
        return {"id": self.task_id(None)}

    def g_task_create(self, head):
        existing = {p["id"] for p in self.snap["promises"]}
        fresh = [i for i in POOL if i not in existing]
        id = self.r.choice(fresh) if fresh and self.chance(0.5) else self.task_id(("pending", "fulfilled"), 0.5)
        d = self.create_data(id, need_target=True)
        d.get("tags", {}).pop("resonate:delay", None)
        if "tags" not in d:
            d["tags"] = {"resonate:target": A}
        if self.chance(0.03):
            d["tags"] = self.r.choice([{}, {"resonate:target": A, "resonate:delay": "1"}])
        return {"pid": self.r.choice(PIDS), "ttl": self.r.choice([1, 1_000, 5_000, 30_000, 60_000]),
                "action": {"kind": "promise.create", "head": {}, "data": d}}

    def g_task_acquire(self, head):
        id = self.task_id(("pending",))
        return {"id": id, "version": self.version_for(id), "pid": self.r.choice(PIDS),
                "ttl": self.r.choice([1, 500, 5_000, 30_000, 60_000]) if self.chance(0.98) else I64_MAX}

    def g_task_release(self, head):
        id = self.task_id(("acquired",))
        return {"id": id, "version": self.version_for(id)}

    def g_task_fulfill(self, head):
        id = self.task_id(("acquired",))
        inner: dict[str, Any] = {"id": id, "state": self.r.choice(SETTLE_STATES)}
        v = self.value()
        if v is not None:
            inner["value"] = v
        if self.chance(0.02):
            inner["id"] = self.r.choice([i for i in POOL if i != id])
        return {"id": id, "version": self.version_for(id),
                "action": {"kind": "promise.settle", "head": {}, "data": inner}}

    def g_task_suspend(self, head):
        id = self.task_id(("acquired",))
        n = self.r.choice([1, 1, 2, 3])
        awaited = []
        for _ in range(n):
            roll = self.r.random()
            pend = [p["id"] for p in self.promises(lambda p: p["state"] == "pending" and p["id"] != id)]
            if roll < 0.7 and pend:
                awaited.append(self.r.choice(pend))
            elif roll < 0.93:
                awaited.append(self.r.choice([i for i in POOL if i != id]))
            else:
                awaited.append(MISSING)
        if self.chance(0.15):
            awaited.append(awaited[0])  # duplicate
        actions = [{"kind": "promise.register_callback", "head": {}, "data": {"awaited": a, "awaiter": id}}
                   for a in awaited]
        if self.chance(0.03):
            actions = self.r.choice([[], [{"kind": "promise.register_callback", "head": {},
                                           "data": {"awaited": awaited[0], "awaiter": "other"}}],
                                     [{"kind": "promise.register_callback", "head": {},
                                       "data": {"awaited": id, "awaiter": id}}]])
        return {"id": id, "version": self.version_for(id), "actions": actions}

    def g_task_fence(self, head):
        id = self.task_id(("acquired",))
        other = self.r.choice([i for i in POOL if i != id] + [MISSING])
        if self.chance(0.5):
            action = {"kind": "promise.create", "head": {}, "data": self.create_data(other)}
        else:
            s: dict[str, Any] = {"id": other, "state": self.r.choice(SETTLE_STATES)}
            v = self.value()
            if v is not None:
                s["value"] = v
            action = {"kind": "promise.settle", "data": s}
            if self.chance(0.5):
                action["head"] = {}
        if self.chance(0.03):
            action = self.r.choice([{"kind": "task.fulfill", "head": {}, "data": {"id": other}},
                                    {"kind": "promise.settle", "head": {}, "data": {"id": id, "state": "resolved"}},
                                    {"kind": "promise.create", "head": {}, "data": {"id": other}}])
        return {"id": id, "version": self.version_for(id), "action": action}

    def g_task_heartbeat(self, head):
        acquired = self.tasks(lambda t: t["state"] == "acquired")
        pid = self.r.choice([t["pid"] for t in acquired]) if acquired and self.chance(0.8) else self.r.choice(PIDS)
        if self.chance(0.35):
            return {"pid": pid, "tasks": []}
        items = []
        for _ in range(self.r.randint(1, 3)):
            id = self.task_id(("acquired",))
            items.append({"id": id, "version": self.version_for(id)})
        if self.chance(0.05):
            items.append({"id": "", "version": 0})
        return {"pid": pid, "tasks": items}

    def g_task_halt(self, head):
        return {"id": self.task_id(("pending", "acquired", "suspended", "halted"), 0.7)}

    def g_task_continue(self, head):
        return {"id": self.task_id(("halted",), 0.9)}

    def g_task_search(self, head):
        d: dict[str, Any] = {}
        if self.chance(0.5):
            d["state"] = self.r.choice(["pending", "acquired", "suspended", "halted", "fulfilled"])
        if self.chance(0.6):
            d["limit"] = self.r.choice([1, 2, 3, 100] + ([0, 1001] if self.chance(0.05) else []))
        if self.chance(0.3):
            d["cursor"] = self.r.choice(POOL + [""])
        return d

    # schedule.*
    def schedule_id(self) -> str:
        known = list(self.schedules)
        return self.r.choice(known) if known and self.chance(0.7) else self.r.choice(SCHEDULES + [MISSING])

    def g_schedule_get(self, head):
        return {"id": self.schedule_id()}

    def g_schedule_create(self, head):
        tags: dict[str, str] = {"resonate:target": self.r.choice(TARGETS)}
        if self.chance(0.4):
            tags["k"] = self.r.choice(["v", "v", "v\x00w"])
        d: dict[str, Any] = {"id": self.r.choice(SCHEDULES), "cron": self.r.choice(CRONS),
                             "promiseId": self.r.choice(TEMPLATES),
                             "promiseTimeout": self.r.choice([0, 1_000, 10_000, 120_000] + [I64_MAX] * self.chance(0.05)),
                             "promiseTags": tags}
        if self.chance(0.5):
            d["promiseParam"] = self.value() or {}
        if self.chance(0.04):
            self.r.choice([lambda: d.update(cron="nope"), lambda: d.update(promiseTags={}),
                           lambda: d.update(cron="* * *"), lambda: d.update(promiseTimeout=-1)])()
        return d

    def g_schedule_delete(self, head):
        return {"id": self.schedule_id()}

    def g_schedule_search(self, head):
        d: dict[str, Any] = {}
        if self.chance(0.4):
            d["tags"] = self.r.choice([{}, {"k": "v"}, {"resonate:target": A}, {"k": "v", "resonate:target": A},
                                       {"k": "v", "resonate:target": "poll://any@g/w1"}, {"k": "v\x00w"}])
        if self.chance(0.5):
            d["limit"] = self.r.choice([1, 2, 10])
        if self.chance(0.3):
            d["cursor"] = self.r.choice(SCHEDULES + [""])
        return d

    # debug.*
    def g_debug_start(self, head):
        return {}

    def g_debug_stop(self, head):
        return {}

    def g_debug_reset(self, head):
        return {}

    def g_debug_snap(self, head):
        return {}

    # outbox.* (no row dies here: nothing is delivered in a debug session)
    def g_outbox_search(self, head):
        d: dict[str, Any] = {}
        if self.chance(0.5):
            d["dead"] = self.chance(0.5)
        if self.chance(0.5):
            d["limit"] = self.r.choice([1, 2, 100] + ([0, 1001] if self.chance(0.05) else []))
        if self.chance(0.2):
            d["cursor"] = self.r.choice(["0", "", "x", str(2**40)])
        return d

    def g_outbox_redrive(self, head):
        return self.r.choice([{"all": True}, {"ids": [1, 2, 3]}, {"ids": [7]}, {}, {"ids": []},
                              {"ids": [1], "all": True}])

    def g_promise_purge(self, head):
        d: dict[str, Any] = {"olderThan": self.r.choice([0, 0, 1, 1_000, 60_000, 1_000_000, -1, I64_MAX])}
        if self.chance(0.3):
            d["dryRun"] = self.r.choice([True, False])
        return d

    # console.* (the web console's views)
    def g_console_promises(self, head):
        d: dict[str, Any] = {}
        if self.chance(0.6):
            d["prefix"] = self.r.choice(["", "p", "p1", "s", "x", "*", "p*"] + POOL[:3])
        if self.chance(0.4):
            d["state"] = self.r.choice(["pending", "resolved", "settled", "rejected_timedout", "nope"])
        if self.chance(0.3):
            d["tags"] = self.r.choice([{}, {"k": "v"}, {"resonate:target": A}])
        if self.chance(0.3):
            d["createdAfter"] = self.r.choice([0, self.clock - 5_000, self.clock])
        if self.chance(0.3):
            d["createdBefore"] = self.r.choice([1, self.clock, self.clock + 1, 2**62])
        if self.chance(0.5):
            d["limit"] = self.r.choice([1, 2, 50] + ([0, 201] if self.chance(0.05) else []))
        if self.chance(0.3):
            d["cursor"] = self.r.choice(POOL + [""])
        return d

    def g_console_promise(self, head):
        return {"id": self.r.choice(POOL)} if self.chance(0.95) else {}

    def g_console_tasks(self, head):
        d: dict[str, Any] = {}
        if self.chance(0.5):
            d["prefix"] = self.r.choice(["", "p", "p1", "x"])
        if self.chance(0.5):
            d["state"] = self.r.choice(["pending", "acquired", "suspended", "halted", "fulfilled"])
        if self.chance(0.5):
            d["limit"] = self.r.choice([1, 2, 50])
        if self.chance(0.3):
            d["cursor"] = self.r.choice(POOL + [""])
        return d

    def g_console_schedules(self, head):
        d: dict[str, Any] = {}
        if self.chance(0.5):
            d["prefix"] = self.r.choice(["", "s", "x"] + SCHEDULES[:2])
        if self.chance(0.5):
            d["limit"] = self.r.choice([1, 2, 50])
        return d

    def g_console_workers(self, head):
        return {}

    def g_debug_tick(self, head):
        roll = self.r.random()
        ds = self.deadlines()
        if roll < 0.4 and ds:
            t = self.r.choice(ds[:3]) + self.r.choice([0, 0, 1, -1])
        elif roll < 0.7:
            t = self.clock + self.r.randint(0, 2_000)
        elif roll < 0.9:
            t = self.clock + self.r.choice([R, R + 1, 60_000, 61_000])
        else:
            t = self.clock + self.r.randint(60_000, 200_000)
        t = max(t, self.clock)
        self.clock = t
        head["resonate:debug_time"] = t
        if self.chance(0.1):
            del head["resonate:debug_time"]
        elif self.chance(0.03):
            head["resonate:debug_time"] = t + 1  # must be rejected (400)
        if self.chance(0.02):
            return self.r.choice([{}, {"time": "5"}, {"time": 1.5}])
        return {"time": t}

    # rest.* (the older server's REST API: the `data` its routes build)
    def ikey(self) -> dict[str, Any]:
        return {"ikey": self.r.choice([None, None, "k1", "k2"]), "strict": self.chance(0.3)}

    def rest_value(self) -> dict[str, Any] | None:
        return self.r.choice([None, {}, {"data": "eA=="}, {"headers": {"h": "1"}, "data": None}, {"data": "!"}])

    def g_rest_promise_get(self, head):
        return {"id": self.any_promise_id()}

    def g_rest_promise_create(self, head):
        existing = {p["id"] for p in self.snap["promises"]}
        fresh = [i for i in POOL if i not in existing]
        id = self.r.choice(fresh) if fresh and self.chance(0.6) else self.any_promise_id()
        ta = self.timeout_at()
        tags = self.r.choice([{}, {"resonate:invoke": A}, {"resonate:invoke": "g"}, {"resonate:timeout": "true"},
                              {"resonate:invoke": "poll://any@g/w1", "resonate:branch": id}])
        promise: dict[str, Any] = {"id": id, "timeout": ta, "tags": tags, "param": self.rest_value()}
        if self.chance(0.3):
            return {"promise": promise, "task": {"processId": self.r.choice(PIDS), "ttl": self.r.choice([1, 5_000])},
                    **self.ikey()}
        return {**promise, **self.ikey()}

    def g_rest_promise_complete(self, head):
        pending = [p["id"] for p in self.promises(lambda p: p["state"] == "pending")]
        id = self.r.choice(pending) if pending and self.chance(0.6) else self.any_promise_id()
        state = self.r.choice(["RESOLVED", "REJECTED", "REJECTED_CANCELED"] if self.chance(0.97) else ["PENDING"])
        return {"id": id, "state": state, "value": self.rest_value(), **self.ikey()}

    def g_rest_promise_search(self, head):
        d: dict[str, Any] = {"id": self.r.choice(["*", "p*", "p1", "*5", "s*-*"])}
        if self.chance(0.4):
            d["state"] = self.r.choice(["pending", "RESOLVED", "rejected", "bogus"])
        if self.chance(0.3):
            d["limit"] = self.r.choice([1, 2, 100])
        return d

    def g_rest_promise_callback(self, head):
        targeted = [p["id"] for p in self.promises(lambda p: "resonate:target" in p["tags"])]
        root = self.r.choice(targeted) if targeted and self.chance(0.8) else self.any_promise_id()
        return {"promiseId": self.any_promise_id(), "rootPromiseId": root, "timeout": self.timeout_at(),
                "recv": self.r.choice([A, "poll://any@g/w2", "g"])}

    def g_rest_promise_subscribe(self, head):
        return {"promiseId": self.any_promise_id(), "id": "sub", "timeout": self.timeout_at(),
                "recv": self.r.choice(LISTENERS)}

    def rest_task_id(self, states: tuple[str, ...]) -> str:
        id = self.task_id(states)
        if self.chance(0.15):
            settled = [p["id"] for p in self.promises(lambda p: p["state"] != "pending")]
            return resume_id(id, self.r.choice(settled or POOL))
        return invoke_id(id) if self.chance(0.97) else id

    def rest_counter(self, task_id: str, claimed: bool) -> int:
        root = task_id.split(":")[1] if task_id.startswith("__") else task_id
        v = self.version_for(root)
        return max(0, v - 1) if claimed else v

    def g_rest_task_claim(self, head):
        id = self.rest_task_id(("pending",))
        return {"id": id, "counter": self.rest_counter(id, False), "processId": self.r.choice(PIDS),
                "ttl": self.r.choice([1, 500, 5_000, 60_000])}

    def g_rest_task_complete(self, head):
        id = self.rest_task_id(("acquired",))
        return {"id": id, "counter": self.rest_counter(id, True)}

    def g_rest_task_drop(self, head):
        id = self.rest_task_id(("acquired", "pending"))
        return {"id": id, "counter": self.rest_counter(id, True)}

    def g_rest_task_heartbeat(self, head):
        acquired = self.tasks(lambda t: t["state"] == "acquired")
        return {"processId": self.r.choice([t["pid"] for t in acquired]) if acquired and self.chance(0.8)
                else self.r.choice(PIDS)}

    def g_rest_schedule_get(self, head):
        return {"id": self.r.choice(SCHEDULES)}

    def g_rest_schedule_create(self, head):
        d: dict[str, Any] = {"id": self.r.choice(SCHEDULES),
                             "cron": self.r.choice(CRONS + ["@every 30s", "@hourly", "bad cron"]),
                             "promiseId": self.r.choice(TEMPLATES), "promiseTimeout": self.r.choice([0, 1_000, 60_000]),
                             "description": "d", "tags": self.r.choice([{}, {"team": "a"}]),
                             "promiseTags": self.r.choice([{}, {"resonate:invoke": A}]),
                             "ikey": self.r.choice([None, "s1"])}
        if self.chance(0.3):
            d["promiseParam"] = self.rest_value()
        return d

    def g_rest_schedule_delete(self, head):
        return {"id": self.r.choice(SCHEDULES)}

    def g_rest_schedule_search(self, head):
        return {"id": self.r.choice(["*", "s*", "s.2"]), "tags": self.r.choice([{}, {"team": "a"}])}

    def g_rest_lock_acquire(self, head):
        return {"resourceId": self.r.choice(["r1", "r2"]), "executionId": self.r.choice(["e1", "e2"]),
                "processId": self.r.choice(PIDS), "ttl": self.r.choice([0, 500, 5_000, 60_000, I64_MAX])}

    def g_rest_lock_release(self, head):
        return {"resourceId": self.r.choice(["r1", "r2"]), "executionId": self.r.choice(["e1", "e2"])}

    def g_rest_lock_heartbeat(self, head):
        return {"processId": self.r.choice(PIDS)}

    # ---- bookkeeping from the reference's responses --------------------------------------------

    def observe(self, kind: str, status: int, data: Any, snap: dict[str, Any], req: dict[str, Any]) -> None:
        self.snap = snap
        if kind in ("schedule.create", "schedule.get") and status == 200:
            s = data["schedule"]
            self.schedules[s["id"]] = (s["cron"], s["nextRunAt"])
            if data["schedule"]["cron"].startswith("@"):  # a REST schedule read over POST /: its own cron rules
                self.schedules.pop(s["id"])
        elif kind in ("rest.schedule.create", "rest.schedule.get") and status in (200, 201):
            self.schedules.pop(data["schedule"]["id"], None)  # its cron rules differ: not tracked for deadlines
        elif kind in ("schedule.delete", "rest.schedule.delete") and status in (200, 204):
            self.schedules.pop(req["id"], None)
        elif kind == "debug.reset":
            self.schedules.clear()
        elif kind == "debug.tick" and status == 200:
            for sid, (c, n) in list(self.schedules.items()):
                while n <= req["time"]:
                    n = cron.next_after(c, n)
                self.schedules[sid] = (c, n)


# ---------------------------------------------------------------------------------- invariants


def check_invariants(snap: dict[str, Any], prev: dict[str, Any] | None, reset: bool,
                     dormant: frozenset[str] = frozenset()) -> list[str]:
    """Cheap checks of the snapshot invariants on one snapshot (and against the previous one).
    `dormant`: tasks a REST `tasks/complete` suspended with nothing to wait on (the REST API's
    "this run is over"; the task is fulfilled when its promise settles)."""
    errs: list[str] = []
    promises = {p["id"]: p for p in snap["promises"]}
    tasks = {t["id"]: t for t in snap["tasks"]}
    ptos = {x["id"]: x["timeout"] for x in snap["promiseTimeouts"]}
    not_ready_by_awaiter = Counter(c["awaiter"] for c in snap["callbacks"])
    callbacks_awaited = {c["awaited"] for c in snap["callbacks"]}
    listeners = {x["id"] for x in snap["listeners"]}
    tto: dict[str, list[dict]] = {}
    for x in snap["taskTimeouts"]:
        tto.setdefault(x["id"], []).append(x)

    for id, p in promises.items():
        pending = p["state"] == "pending"
        target = "resonate:target" in p["tags"]
        if not 0 <= p["createdAt"] <= p["timeoutAt"]:
            errs.append(f"P-2 {id}: createdAt {p['createdAt']} timeoutAt {p['timeoutAt']}")
        if ("settledAt" in p) == pending:
            errs.append(f"P-3 {id}: state {p['state']} settledAt {p.get('settledAt')}")
        if "settledAt" in p and not p["createdAt"] <= p["settledAt"] <= p["timeoutAt"]:
            errs.append(f"P-3 {id}: createdAt {p['createdAt']} settledAt {p['settledAt']} timeoutAt {p['timeoutAt']}")
        if p["state"] == "rejected_timedout" and (p.get("settledAt") != p["timeoutAt"]
                                                  or p["tags"].get("resonate:timer") == "true"):
            errs.append(f"P-4 {id}: {p}")
        if not pending and p.get("settledAt") == p["timeoutAt"]:
            # an explicit settle needs now < timeoutAt (the lazy timeout wins at equality), so this was a timeout
            want = "resolved" if p["tags"].get("resonate:timer") == "true" else "rejected_timedout"
            if p["state"] != want or p["value"] != {}:
                errs.append(f"P-5 {id}: settled at timeoutAt as {p['state']} value {p['value']}")
        if target != (id in tasks):
            errs.append(f"P-6 {id}: target {target} task {id in tasks}")
        if (pending and target) != (id in ptos):
            errs.append(f"P-7 {id}: pending {pending} target {target} promiseTimeout {id in ptos}")
        if id in ptos and ptos[id] != p["timeoutAt"]:
            errs.append(f"P-7 {id}: promiseTimeout {ptos[id]} != timeoutAt {p['timeoutAt']}")
        if not pending and (id in callbacks_awaited or id in listeners):
            errs.append(f"P-8 {id}: settled but has callbacks/listeners")
        if target and id in tasks and (tasks[id]["state"] == "fulfilled") == pending:
            errs.append(f"P-9/T-1 {id}: promise {p['state']} task {tasks[id]['state']}")
        if "resonate:delay" in p["tags"]:
            d = p["tags"]["resonate:delay"]
            if not target or not d.isdigit() or int(d) >= p["timeoutAt"]:
                errs.append(f"P-12 {id}: delay {d!r} target {target} timeoutAt {p['timeoutAt']}")
        if "resonate:schedule" in p["tags"] and "resonate:invocation" not in p["tags"]:  # (REST firings: their own tags)
            tg = p["tags"]
            if not target or any(tg.get(f"resonate:{k}") != id for k in ("origin", "branch", "parent", "prefix")):
                errs.append(f"P-13 {id}: tags {tg}")

    for c in snap["callbacks"]:
        w, a = c["awaiter"], c["awaited"]
        if w == a:
            errs.append(f"P-10 callback on itself {c}")
        wp = promises.get(w)
        if wp is None or "resonate:target" not in wp["tags"] or wp["state"] != "pending":
            errs.append(f"P-10 callback awaiter not a pending targeted promise {c}")
        if a not in promises:
            errs.append(f"callback on a missing promise {c}")

    for id, t in tasks.items():
        p = promises.get(id)
        if p is None or "resonate:target" not in p["tags"]:
            errs.append(f"T-1 task {id} without a targeted promise")
        rows = tto.get(id, [])
        want = {"pending": [0], "acquired": [1]}.get(t["state"], [])
        if sorted(x["type"] for x in rows) != want:
            errs.append(f"T-2 {id}: state {t['state']} timeouts {rows}")
        acquired = t["state"] == "acquired"
        if ("ttl" in t) != acquired or ("pid" in t) != acquired or (acquired and not t["ttl"] > 0):
            errs.append(f"T-3 {id}: {t}")
        if t["state"] == "suspended" and not (id in dormant and t["resumes"] == 0):
            if t["resumes"] != 0 or not any(c["awaiter"] == id and promises.get(c["awaited"], {}).get("state") == "pending"
                                            for c in snap["callbacks"]):
                errs.append(f"T-4 {id}: suspended {t} callbacks {[c for c in snap['callbacks'] if c['awaiter'] == id]}")
        if t["state"] == "fulfilled" and (t["resumes"] != 0 or not_ready_by_awaiter[id]):
            errs.append(f"T-5 {id}: fulfilled {t} with callbacks")
        if "resumes" not in t or not isinstance(t["resumes"], int):
            errs.append(f"task {id} resumes missing")

    execs = Counter()
    unblocks = Counter()
    for m in snap["messages"]:
        msg = m["message"]
        if msg["kind"] == "execute":
            execs[msg["data"]["task"]["id"]] += 1
        else:
            pid = msg["data"]["promise"]["id"]
            unblocks[(pid, m["address"])] += 1
            if msg["data"]["promise"]["state"] == "pending":
                errs.append(f"M-3 unblock of a pending promise {pid}")
    errs += [f"M-1 {n} executes queued for {id}" for id, n in execs.items() if n > 1]
    errs += [f"M-1 {n} unblocks queued for {k}" for k, n in unblocks.items() if n > 1]

    if prev is not None and not reset:
        old_p = {p["id"]: p for p in prev["promises"]}
        for id, op in old_p.items():
            np_ = promises.get(id)
            if np_ is None:
                errs.append(f"P-1 promise {id} disappeared")
                continue
            for k in ("param", "tags", "timeoutAt", "createdAt"):
                old, new = op[k], np_[k]
                if k == "tags" and "resonate:invoke" in old:  # a REST callback re-aims a REST-routed root
                    old, new = ({t: v for t, v in x.items() if t != "resonate:target"} for x in (old, new))
                if old != new:
                    errs.append(f"P-11 {id}: {k} changed {op[k]!r} -> {np_[k]!r}")
            if op["state"] != "pending" and op != np_:
                errs.append(f"P-11 settled {id} changed {op} -> {np_}")
        old_t = {t["id"]: t for t in prev["tasks"]}
        for id, ot in old_t.items():
            nt = tasks.get(id)
            if nt is None:
                errs.append(f"T-9 task {id} disappeared")
                continue
            dv = nt["version"] - ot["version"]
            if dv not in (0, 1) or (dv == 1 and nt["state"] != "acquired"):
                errs.append(f"T-7 {id}: {ot} -> {nt}")
            if ot["state"] == "fulfilled" and (nt["state"], nt["version"]) != ("fulfilled", ot["version"]):
                errs.append(f"T-9 fulfilled {id} changed {ot} -> {nt}")
        for id, t in tasks.items():
            if id not in old_t and t["version"] not in (0, 1):
                errs.append(f"T-6 new task {id} at version {t['version']}")
    return errs


def workflow_key(p: dict[str, Any]) -> str:
    return p["tags"].get("resonate:origin") or p["id"]


def check_purge(prev: dict[str, Any], snap: dict[str, Any], req: dict[str, Any], out: dict[str, Any],
                now: int) -> list[str]:
    """`promise.purge` (docs/operations.md#retention) removed exactly the workflows whose every
    promise settled at or before now - olderThan, with their tasks; a dry run removed nothing."""
    before = now - req["olderThan"]
    workflows: dict[str, list[dict[str, Any]]] = {}
    for p in prev["promises"]:
        workflows.setdefault(workflow_key(p), []).append(p)
    finished = {k for k, ps in workflows.items()
                if all(p["state"] != "pending" and p.get("settledAt") is not None and p["settledAt"] <= before
                       for p in ps)}
    want = sorted(p["id"] for k in finished for p in workflows[k])
    kept = {p["id"] for p in snap["promises"]}
    gone = sorted(p["id"] for p in prev["promises"] if p["id"] not in kept)
    errs = []
    if req.get("dryRun"):
        if gone:
            errs.append(f"R-1 a dry run deleted {gone}")
    elif gone != want:
        errs.append(f"R-2 purged {gone}, expected {want}")
    if (out["workflows"], out["promises"]) != (len(finished), len(want)) or out["more"]:
        errs.append(f"R-3 purge answered {out}, expected {len(finished)} workflows, {len(want)} promises")
    if not req.get("dryRun"):
        errs += [f"R-4 task {t['id']} outlived its purged promise" for t in snap["tasks"] if t["id"] not in kept]
        errs += [f"R-4 message for purged {m}" for m in snap["messages"]
                 if (m["message"]["data"].get("task") or m["message"]["data"].get("promise"))["id"] in gone]
    return errs


# ---------------------------------------------------------------------------------- the run

INTERACTIONS = ("resume", "lease_expiry", "schedule_fired", "tick_timeout", "lazy_timeout", "timer_resolved",
                "halted_then_fulfilled", "ready_callback")


def interactions(prev: dict[str, Any], snap: dict[str, Any], kind: str) -> set[str]:
    """Which interesting transitions this step produced (the run must see each at least once)."""
    seen = set()
    old_t = {t["id"]: t for t in prev["tasks"]}
    for t in snap["tasks"]:
        o = old_t.get(t["id"])
        if o and o["state"] == "suspended" and t["state"] == "pending":
            seen.add("resume")
        if o and o["state"] == "acquired" and t["state"] == "pending" and kind == "debug.tick":
            seen.add("lease_expiry")
        if o and o["state"] == "halted" and t["state"] == "fulfilled":
            seen.add("halted_then_fulfilled")
        if t["resumes"] > 0:
            seen.add("ready_callback")
    old_p = {p["id"]: p for p in prev["promises"]}
    for p in snap["promises"]:
        o = old_p.get(p["id"])
        if o is None and "resonate:schedule" in p["tags"]:
            seen.add("schedule_fired")
        if o and o["state"] == "pending" and p["state"] != "pending" and p.get("settledAt") == p["timeoutAt"]:
            seen.add("tick_timeout" if kind == "debug.tick" else "lazy_timeout")
            if p["state"] == "resolved":
                seen.add("timer_resolved")
    return seen



def first_diff(a: Any, b: Any, path: str = "$") -> str:
    if type(a) is not type(b):
        return f"{path}: {a!r} != {b!r}"
    if isinstance(a, dict):
        for k in sorted(set(a) | set(b), key=str):
            if k not in a or k not in b:
                return f"{path}.{k}: {'<absent>' if k not in a else a[k]!r} != {'<absent>' if k not in b else b[k]!r}"
            if a[k] != b[k]:
                return first_diff(a[k], b[k], f"{path}.{k}")
    if isinstance(a, list):
        if len(a) != len(b):
            return f"{path}: length {len(a)} != {len(b)}\n  {a!r}\n  {b!r}"
        for i, (x, y) in enumerate(zip(a, b)):
            if x != y:
                return first_diff(x, y, f"{path}[{i}]")
    return f"{path}: {a!r} != {b!r}"


class Run:
    def __init__(self, seed: int, tmp: Path) -> None:
        self.seed = seed
        self.tmp = tmp
        self.names = selected_backends(seed)
        cfg = load({"debug": True, "storage.type": "memory"}, env={})
        self.stores = []
        self.services: list[Service] = []
        for i, name in enumerate(self.names):
            d = tmp / f"{i}-{name}"
            d.mkdir(parents=True, exist_ok=True)
            store = ADAPTERS[name](d)
            self.stores.append(store)
            self.services.append(Service(store, cfg))
        self.trace: list[dict[str, Any]] = []

    def close(self) -> None:
        for s in self.stores:
            try:
                s.close()
            except Exception:
                pass

    def fail(self, msg: str) -> None:
        path = self.tmp / f"trace-seed{self.seed}.jsonl"
        path.write_text("".join(json.dumps(e, ensure_ascii=False) + "\n" for e in self.trace))
        last = "\n".join(json.dumps(e, ensure_ascii=False)[:600] for e in self.trace[-25:])
        pytest.fail(f"seed {self.seed} (RESONATE_DIFF_SEED={self.seed}), step {len(self.trace)}, "
                    f"adapters {self.names}: {msg}\nfull trace: {path}\nlast requests:\n{last}", pytrace=False)

    def send(self, envelope: dict[str, Any]) -> tuple[int, Any]:
        """Send to every adapter; the responses must be identical. Returns the reference's."""
        if envelope["kind"] in REST_KINDS:
            return self.send_rest(envelope)
        raw = json.dumps(envelope).encode()
        self.trace.append(envelope)
        outs = []
        kind = envelope["kind"]  # `POST /operator`, `POST /ui/api` or `POST /`
        surface = OPERATOR if kind in OPERATOR_KINDS else CONSOLE if kind not in RPC_KINDS and kind in CONSOLE_KINDS \
            else RPC
        for svc in self.services:
            status, body = svc.rpc(raw, surface)
            outs.append((status, _positions(json.loads(body))))
        ref_status, ref = outs[0]
        for name, (status, body) in zip(self.names[1:], outs[1:]):
            if (status, body) != (ref_status, ref):
                self.fail(f"response differs: {self.names[0]} {ref_status} vs {name} {status}\n"
                          f"  {first_diff(ref, body)}\n  {self.names[0]}: {json.dumps(ref)[:1500]}\n"
                          f"  {name}: {json.dumps(body)[:1500]}")
        if ref_status != ref["head"]["status"]:
            self.fail(f"HTTP-level status {ref_status} != head.status {ref['head']['status']}")
        if ref["kind"] != envelope["kind"] or ref["head"]["corrId"] != envelope["head"]["corrId"]:
            self.fail(f"kind/corrId not echoed: {ref}")
        return ref_status, ref["data"]

    def send_rest(self, envelope: dict[str, Any]) -> tuple[int, Any]:
        """A REST kind, as its routes run it (`Service.handle(..., REST)`); the answers
        (records included: the REST shapes are rendered from them) must be identical."""
        self.trace.append(envelope)
        kind, head = envelope["kind"], envelope["head"]
        env = Envelope(kind, head["corrId"], head, envelope["data"], None, head.get("resonate:debug_time"))
        outs = [json.loads(json.dumps(svc.handle(env, None, REST), default=_record)) for svc in self.services]
        for name, out in zip(self.names[1:], outs[1:]):
            if out != outs[0]:
                self.fail(f"response differs: {self.names[0]} vs {name}\n  {first_diff(outs[0], out)}")
        return outs[0][0], outs[0][1]

    def snap(self, time: int) -> dict[str, Any]:
        raw = json.dumps(envelope("debug.snap", {}, corr="snap", time=time)).encode()
        outs = [json.loads(svc.rpc(raw)[1]) for svc in self.services]
        for name, body in zip(self.names[1:], outs[1:]):
            if body != outs[0]:
                self.fail(f"debug.snap differs between {self.names[0]} and {name}:\n  {first_diff(outs[0], body)}")
        assert outs[0]["head"]["status"] == 200, outs[0]
        return outs[0]["data"]


def _positions(body: Any) -> Any:
    """outbox.search names rows by queue position (seq), which adapters number differently (a
    Postgres sequence skips the values of conflicting inserts): compared by rank instead."""
    data = body.get("data") if body.get("kind") == "outbox.search" else None
    if isinstance(data, dict) and isinstance(data.get("messages"), list):
        for i, m in enumerate(data["messages"]):
            m["id"] = i
        if "cursor" in data:
            data["cursor"] = "(cursor)"
    return body


def _record(x: Any) -> Any:
    """Records inside a REST kind's answer, as plain data for the comparison and the trace."""
    import dataclasses

    if dataclasses.is_dataclass(x) and not isinstance(x, type):
        return {"record": type(x).__name__, **dataclasses.asdict(x)}
    raise TypeError(f"not JSON: {x!r}")


def run_seed(seed: int, tmp: Path) -> dict[str, Any]:
    rnd = random.Random(seed)
    gen = Gen(rnd)
    run = Run(seed, tmp)
    succeeded: set[str] = set()
    covered: set[str] = set()
    statuses: Counter = Counter()
    dormant: set[str] = set()  # tasks suspended by a REST complete with no callback (check_invariants)
    try:
        for kind in ("debug.start", "debug.reset"):
            status, _ = run.send(envelope(kind, {}, corr=kind, time=gen.clock))
            assert status == 200
            succeeded.add(kind)
        prev = run.snap(gen.clock)
        gen.snap = prev
        step = 0
        while step < MAX_STEPS:
            step += 1
            kind, head, data = gen.next()
            env = {"kind": kind, "head": head, "data": data}
            status, out = run.send(env)
            statuses[(kind, status)] += 1
            if status not in ALLOWED_STATUS[kind]:
                run.fail(f"{kind} answered {status} (allowed {sorted(ALLOWED_STATUS[kind])}): {out!r}")
            if status >= 400 and not isinstance(out, str) and not (kind in REST_KINDS and "code" in out):
                run.fail(f"error data must be a string (a REST kind's: its code and message): {out!r}")
            if 200 <= status < 300 or (kind == "task.suspend" and status == 300):
                succeeded.add(kind)
            snap = run.snap(gen.clock)
            if kind == "rest.task.complete" and status == 201:
                dormant.add(out["task"]["id"])
            dormant &= {t["id"] for t in snap["tasks"] if t["state"] == "suspended"}
            if kind == "promise.purge" and status == 200:
                errs = check_purge(prev, snap, data, out, gen.clock)
                kept = {p["id"] for p in snap["promises"]}  # the rest holds against what the purge kept
                prev = {**prev, "promises": [p for p in prev["promises"] if p["id"] in kept],
                        "tasks": [t for t in prev["tasks"] if t["id"] in kept]}
                errs += check_invariants(snap, prev, reset=False, dormant=frozenset(dormant))
            else:
                errs = check_invariants(snap, prev, reset=(kind == "debug.reset"), dormant=frozenset(dormant))
            if errs:
                run.fail("invariant violations after " + json.dumps(env, ensure_ascii=False)[:800] + ":\n  "
                         + "\n  ".join(errs[:20]))
            covered |= interactions(prev, snap, kind)
            gen.observe(kind, status, out, snap, data)
            prev = snap
            if step >= MIN_STEPS and len(succeeded) == len(ALL_KINDS) and len(covered) == len(INTERACTIONS):
                break
        missing = sorted(set(ALL_KINDS) - succeeded)
        if missing:
            run.fail(f"after {step} steps these kinds never succeeded: {missing}")
        unexercised = sorted(set(INTERACTIONS) - covered)
        if unexercised:
            run.fail(f"after {step} steps the generator never produced: {unexercised}")
        return {"steps": step, "statuses": statuses, "clock": gen.clock - T0}
    finally:
        run.close()


@pytest.mark.parametrize("seed", seed_params())
def test_differential(seed: int, tmp_path: Path) -> None:
    stats = run_seed(seed, tmp_path)
    print(f"seed {seed}: {stats['steps']} steps, logical time {stats['clock']} ms, "
          f"{sum(stats['statuses'].values())} requests")
