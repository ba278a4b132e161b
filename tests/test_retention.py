"""Retention (docs/operations.md#retention) on every store: a workflow (the promises sharing one
`resonate:origin`, else a promise alone) whose promises all settled before the horizon disappears
whole, with its task and queued messages; a younger or still-running one stays; a purged id can
be created again and starts fresh. Through `promise.purge` (debug time fixes `now`) and through
the background loop (`retention.settled_after`, wall clock).
"""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from shared.engine.retention import finished, purge_workflows
from shared.records import Promise
from shared.storage.memory import MemoryStore
from tests.support.server import ServerProc, backends, start_server
from tests.support.wait import wait_until

FAR = 2**53
T0 = 1_700_000_000_000
TARGET = "poll://any@nobody"


def ids(srv: ServerProc) -> dict[str, list[str]]:
    """Every id a snapshot holds, by table."""
    s = srv.rpc("debug.snap", {})[1]
    msg_ids = [(m["message"]["data"].get("task") or m["message"]["data"]["promise"])["id"] for m in s["messages"]]
    return {"promises": sorted(p["id"] for p in s["promises"]), "tasks": sorted(t["id"] for t in s["tasks"]),
            "messages": sorted(msg_ids), "listeners": sorted(x["id"] for x in s["listeners"]),
            "callbacks": sorted(c["awaiter"] for c in s["callbacks"]) + sorted(c["awaited"] for c in s["callbacks"])}


def ok(srv: ServerProc, kind: str, data: dict[str, Any], t: int | None = None) -> Any:
    status, out = srv.rpc(kind, data, time=t)
    assert 200 <= status < 300, (kind, data, status, out)
    return out


def create(srv: ServerProc, id: str, t: int | None, tags: dict[str, str] | None = None, param: str = "") -> Any:
    data: dict[str, Any] = {"id": id, "timeoutAt": FAR, "tags": tags or {}}
    if param:
        data["param"] = {"data": param}
    return ok(srv, "promise.create", data, t)


def settle(srv: ServerProc, id: str, t: int | None) -> None:
    ok(srv, "promise.settle", {"id": id, "state": "resolved", "value": {"data": "ZG9uZQ=="}}, t)


@pytest.fixture(params=backends())
def srv(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    s = start_server(request.param, tmp_path / request.param, debug=True)
    yield s
    s.stop()


def test_purge_deletes_finished_workflows_whole_and_keeps_the_rest(srv: ServerProc) -> None:
    ok(srv, "debug.start", {}, T0)
    ok(srv, "debug.reset", {}, T0)
    # old: a root with a task (and its queued execute) and a child that still has a listener
    create(srv, "old", T0, {"resonate:origin": "old", "resonate:target": TARGET})
    create(srv, "old.1", T0, {"resonate:origin": "old", "resonate:parent": "old"})
    create(srv, "old.2", T0, {"resonate:origin": "old", "resonate:parent": "old"})
    ok(srv, "promise.register_listener", {"awaited": "old.2", "address": "poll://uni@g/w1"}, T0)
    settle(srv, "old.1", T0 + 10)
    settle(srv, "old.2", T0 + 15)
    settle(srv, "old", T0 + 20)
    create(srv, "lone", T0)  # no origin: its own workflow
    settle(srv, "lone", T0 + 10)
    create(srv, "young", T0, {"resonate:origin": "young"})  # settled after the horizon
    settle(srv, "young", T0 + 50_000)
    create(srv, "running", T0, {"resonate:origin": "running", "resonate:target": TARGET})  # still pending
    create(srv, "running.1", T0, {"resonate:origin": "running", "resonate:parent": "running"})
    settle(srv, "running.1", T0 + 10)
    before = ids(srv)
    assert {"old", "old.1", "old.2", "lone"} <= set(before["promises"]) and "old" in before["tasks"]

    t1 = T0 + 100_000  # horizon: t1 - 60 s = T0 + 40 s
    dry = ok(srv, "promise.purge", {"olderThan": 60_000, "dryRun": True}, t1)
    assert dry == {"workflows": 2, "promises": 4, "dryRun": True, "more": False}
    assert ids(srv) == before

    done = ok(srv, "promise.purge", {"olderThan": 60_000}, t1)
    assert done == {"workflows": 2, "promises": 4, "dryRun": False, "more": False}
    after = ids(srv)
    assert after["promises"] == ["running", "running.1", "young"]
    for table, rows in after.items():
        assert not {"old", "old.1", "old.2", "lone"} & set(rows), (table, rows)
    assert "running" in after["tasks"]
    assert srv.rpc("promise.get", {"id": "old"}, time=t1)[0] == 404
    assert ok(srv, "promise.purge", {"olderThan": 60_000}, t1) == {"workflows": 0, "promises": 0,
                                                                      "dryRun": False, "more": False}

    # the id is free again: a new promise, not the old one deduplicated
    again = create(srv, "old", t1, {"resonate:origin": "old"}, param="bmV3")["promise"]
    assert (again["state"], again["createdAt"], again["param"]["data"]) == ("pending", t1, "bmV3")

    # a later horizon takes the younger workflow too, never the running one
    assert ok(srv, "promise.purge", {"olderThan": 0}, t1)["workflows"] == 1
    assert ids(srv)["promises"] == ["old", "running", "running.1"]


def test_purge_refuses_bad_input_and_changes_nothing(srv: ServerProc) -> None:
    ok(srv, "debug.start", {}, T0)
    ok(srv, "debug.reset", {}, T0)
    create(srv, "p", T0)
    settle(srv, "p", T0)
    for data in ({}, {"olderThan": -1}, {"olderThan": "30d"}, {"olderThan": 1, "dryRun": "yes"}):
        status, out = srv.rpc("promise.purge", data, time=T0 + 10)
        assert status == 400 and isinstance(out, str), (data, status, out)
    assert ids(srv)["promises"] == ["p"]


@pytest.fixture(params=backends())
def retaining(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    s = start_server(request.param, tmp_path / request.param, debug=True,
                     args=["--retention-settled-after", "1", "--retention-interval", "50"])
    yield s
    s.stop()


def test_background_retention_deletes_finished_workflows_only(retaining: ServerProc) -> None:
    srv = retaining
    create(srv, "run", None, {"resonate:origin": "run", "resonate:target": TARGET})
    create(srv, "run.1", None, {"resonate:origin": "run", "resonate:parent": "run"})
    settle(srv, "run.1", None)
    create(srv, "done", None, {"resonate:origin": "done"})
    create(srv, "done.1", None, {"resonate:origin": "done", "resonate:parent": "done"})
    settle(srv, "done.1", None)
    settle(srv, "done", None)
    assert wait_until(lambda: srv.rpc("promise.get", {"id": "done"})[0] == 404, 30, interval=0.05)
    time.sleep(0.2)  # several more passes
    assert ids(srv)["promises"] == ["run", "run.1"]
    assert create(srv, "done", None)["promise"]["state"] == "pending"


# the engine's batching, on the memory store: a workflow larger than a transaction's budget is
# deleted over several transactions and never counted twice


def test_a_large_workflow_is_deleted_over_several_transactions() -> None:
    store = MemoryStore()
    store.write(lambda tx: [tx.insert_promise(Promise(f"big.{n:02}", "resolved", {}, {}, {"resonate:origin": "big"},
                                                      FAR, 1, 5)) for n in range(25)])
    store.write(lambda tx: tx.insert_promise(Promise("small", "resolved", {}, {}, {}, FAR, 1, 5)))
    keys = ["big", "small"]
    passes = [store.write(lambda tx: purge_workflows(tx, keys, 10, 10)) for _ in range(3)]
    assert [(p.workflows, p.promises, p.consumed) for p in passes] == [(0, 10, 0), (0, 10, 0), (2, 6, 2)]
    assert store.read(lambda tx: tx.all_promises()) == []


def test_finished_needs_every_promise_settled_before_the_horizon() -> None:
    def p(state: str, settled_at: int | None) -> Promise:
        return Promise("x", state, {}, {}, {}, FAR, 1, settled_at)

    assert finished([p("resolved", 5), p("rejected_timedout", 10)], 10)
    assert not finished([p("resolved", 5), p("resolved", 11)], 10)
    assert not finished([p("resolved", 5), p("pending", None)], 10)
    assert not finished([], 10)


def test_retention_runs_only_when_configured_and_reports_what_it_deleted() -> None:
    """`Retention.run` against the store's clock: off at 0; else the horizon is now minus
    `settled_after`, and the metrics hook hears what was deleted."""
    from shared.clock import Clock
    from shared.metrics import Metrics
    from shared.retention import Purged, Retention

    class At(Clock):
        def now(self) -> int:
            return 1_000

    store = MemoryStore()
    store.write(lambda tx: [tx.insert_promise(Promise(i, "resolved", {}, {}, {}, FAR, 1, at))
                            for i, at in (("a", 100), ("b", 500), ("c", 900))])
    metrics = Metrics()
    assert Retention(store, At(), 0, 100, metrics.retention).run() == Purged()
    assert Retention(store, At(), 500, 100, metrics.retention).run() == Purged(2, 2)  # settled at or before 500
    assert [p.id for p in store.read(lambda tx: tx.all_promises())] == ["c"]
    assert metrics.registry.get_sample_value("resonate_retention_deleted_total") == 2


def test_purge_walks_the_table_in_pages_and_counts_each_workflow_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Pages of 3 promises: workflows spread over several pages are counted once (dry run) and
    deleted whole; one with a pending promise on a later page stays."""
    import shared.retention as ret

    monkeypatch.setattr(ret, "SCAN_PAGE", 3)
    store = MemoryStore()

    def p(id: str, origin: str, state: str = "resolved") -> Promise:
        return Promise(id, state, {}, {}, {"resonate:origin": origin}, FAR, 1, None if state == "pending" else 5)

    rows = [p("a", "a"), p("b.1", "a"), p("c", "c"), p("d", "a"), p("e", "c"), p("f", "c", "pending"),
            p("g", "g"), p("h", "a")]
    store.write(lambda tx: [tx.insert_promise(x) for x in rows])
    assert ret.purge(store, 10, 100, dry_run=True) == ret.Purged(2, 5)
    assert len(store.read(lambda tx: tx.all_promises())) == 8
    assert ret.purge(store, 10, 2) == ret.Purged(2, 5)
    assert [x.id for x in store.read(lambda tx: tx.all_promises())] == ["c", "e", "f"]
