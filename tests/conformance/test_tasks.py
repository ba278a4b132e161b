"""Tasks."""
from __future__ import annotations

import pytest

from tests.conformance.helpers import (
    A,
    R,
    T,
    acquire,
    call,
    cb_action,
    create,
    create_action,
    execute,
    find,
    fulfill,
    get,
    messages_for,
    ok,
    settle,
    settle_action,
    snap,
    suspend,
    task_create,
    task_get,
)
from tests.support.server import VERSION


def test_s40_task_create_acquires(rs):
    d = ok(rs, "task.create", {"pid": "w", "ttl": 60_000, "action": {
        "kind": "promise.create", "head": {},
        "data": {"id": "t", "timeoutAt": T + 600_000, "tags": {"resonate:target": A}}}})
    assert d["task"] == {"id": "t", "state": "acquired", "version": 1, "resumes": 0, "ttl": 60_000, "pid": "w"}
    assert d["promise"] == {"id": "t", "state": "pending", "param": {}, "value": {},
                            "tags": {"resonate:target": A}, "timeoutAt": T + 600_000, "createdAt": T}
    assert d["preload"] == []
    s = snap(rs)
    assert s["taskTimeouts"] == [{"id": "t", "type": 1, "timeout": T + 60_000}]
    assert s["promiseTimeouts"] == [{"id": "t", "timeout": T + 600_000}]
    assert s["messages"] == []


def test_s41_task_create_requires_target(rs):
    st, d = rs.rpc("task.create", {"pid": "w", "ttl": 60_000, "action": create_action("t", tags={"x": "y"})}, time=T)
    assert st == 400 and isinstance(d, str)
    st, d = rs.rpc("task.create", {"pid": "w", "ttl": 60_000, "action": create_action("t")}, time=T)
    assert st == 400 and isinstance(d, str)
    assert rs.rpc("promise.get", {"id": "t"}, time=T)[0] == 404


def test_s42_task_create_rejects_delay(rs):
    st, d = rs.rpc("task.create", {"pid": "w", "ttl": 60_000, "action": create_action(
        "t", tags={"resonate:target": A, "resonate:delay": str(T + 10)})}, time=T)
    assert st == 400 and isinstance(d, str)
    assert rs.rpc("promise.get", {"id": "t"}, time=T)[0] == 404


def test_s43_task_create_acquires_pending_task(rs):
    create(rs, "p", tags={"resonate:target": A})
    d = task_create(rs, "p", pid="w2", ttl=7000, time=T + 1)
    assert d["task"] == {"id": "p", "state": "acquired", "version": 1, "resumes": 0, "ttl": 7000, "pid": "w2"}
    assert d["promise"]["createdAt"] == T  # the existing promise, request fields ignored
    assert find(snap(rs)["taskTimeouts"], "p") == {"id": "p", "type": 1, "timeout": T + 1 + 7000}


def test_s44_task_create_conflict(rs):
    task_create(rs, "t")
    st, d = rs.rpc("task.create", {"pid": "x", "ttl": 1000, "action": create_action("t", tags={"resonate:target": A})},
                   time=T + 1)
    assert st == 409 and isinstance(d, str)


def test_s45_task_create_on_fulfilled(rs):
    task_create(rs, "t")
    assert fulfill(rs, "t", 1)[0] == 200
    d = task_create(rs, "t", pid="x", time=T + 2)
    assert d["task"] == {"id": "t", "state": "fulfilled", "version": 1, "resumes": 0}
    assert d["promise"]["state"] == "resolved"
    assert d["preload"] == []


def test_s46_task_create_on_bare_promise(rs):
    create(rs, "p")
    st, d = rs.rpc("task.create", {"pid": "w", "ttl": 1000, "action": create_action("p", tags={"resonate:target": A})},
                   time=T)
    assert st == 422 and isinstance(d, str)


def test_s47_task_create_born_expired(rs):
    d = task_create(rs, "t", timeout=T)
    assert d["promise"]["state"] == "rejected_timedout"
    assert d["promise"]["createdAt"] == T and d["promise"]["settledAt"] == T
    assert d["task"] == {"id": "t", "state": "fulfilled", "version": 0, "resumes": 0}
    assert d["preload"] == []
    s = snap(rs)
    assert s["taskTimeouts"] == [] and s["promiseTimeouts"] == [] and s["messages"] == []


def test_s48_task_acquire(rs):
    p = create(rs, "p", tags={"resonate:target": A})
    st, d = acquire(rs, "p", 0, pid="w", ttl=5000, time=T)
    assert st == 200, d
    assert d["task"] == {"id": "p", "state": "acquired", "version": 1, "resumes": 0, "ttl": 5000, "pid": "w"}
    assert d["promise"] == p
    assert d["preload"] == []
    assert find(snap(rs)["taskTimeouts"], "p") == {"id": "p", "type": 1, "timeout": T + 5000}


def test_s49_task_acquire_conflicts(rs):
    create(rs, "p", tags={"resonate:target": A})
    st, d = acquire(rs, "p", 1)
    assert st == 409 and isinstance(d, str)
    assert acquire(rs, "p", 0)[0] == 200
    st, d = acquire(rs, "p", 1)
    assert st == 409 and isinstance(d, str)
    st, d = acquire(rs, "p", 0)
    assert st == 409 and isinstance(d, str)
    st, d = acquire(rs, "nope", 0)
    assert st == 404 and isinstance(d, str)


def test_s50_task_acquire_after_expiry(rs):
    create(rs, "p", timeout=T + 100, tags={"resonate:target": A})
    st, d = acquire(rs, "p", 0, time=T + 100)
    assert st == 409 and isinstance(d, str)
    assert task_get(rs, "p", time=T + 100) == {"id": "p", "state": "fulfilled", "version": 0, "resumes": 0}
    assert find(snap(rs)["promises"], "p")["state"] == "rejected_timedout"


def test_s51_task_release(rs):
    task_create(rs, "t")
    st, d = rs.rpc("task.release", {"id": "t", "version": 1}, time=T + 3)
    assert st == 200 and d == {}
    s = snap(rs)
    assert find(s["tasks"], "t") == {"id": "t", "state": "pending", "version": 1, "resumes": 0}
    assert s["taskTimeouts"] == [{"id": "t", "type": 0, "timeout": T + 3 + R}]
    assert s["messages"] == [execute("t", 1)]
    st, d = acquire(rs, "t", 1, time=T + 4)
    assert st == 200 and d["task"]["version"] == 2


def test_s52_task_release_conflicts(rs):
    task_create(rs, "t")
    st, d = rs.rpc("task.release", {"id": "t", "version": 0}, time=T)
    assert st == 409 and isinstance(d, str)
    create(rs, "p", tags={"resonate:target": A})
    st, d = rs.rpc("task.release", {"id": "p", "version": 0}, time=T)
    assert st == 409 and isinstance(d, str)
    st, d = rs.rpc("task.release", {"id": "nope", "version": 0}, time=T)
    assert st == 404 and isinstance(d, str)


def test_s53_task_fulfill(rs):
    task_create(rs, "t")
    st, d = rs.rpc("task.fulfill", {"id": "t", "version": 1, "action": {
        "kind": "promise.settle", "head": {}, "data": {"id": "t", "state": "resolved", "value": {}}}}, time=T + 5)
    assert st == 200, d
    assert d["promise"]["state"] == "resolved" and d["promise"]["settledAt"] == T + 5
    assert d["promise"]["value"] == {}
    s = snap(rs)
    assert find(s["tasks"], "t") == {"id": "t", "state": "fulfilled", "version": 1, "resumes": 0}
    assert s["taskTimeouts"] == []
    assert s["promiseTimeouts"] == []


def test_s54_task_fulfill_id_mismatch(rs):
    task_create(rs, "t")
    create(rs, "other")
    st, d = rs.rpc("task.fulfill", {"id": "t", "version": 1, "action": settle_action("other")}, time=T)
    assert st == 400 and isinstance(d, str)
    assert get(rs, "other")["state"] == "pending"
    assert task_get(rs, "t")["state"] == "acquired"


def test_s55_task_fulfill_conflicts(rs):
    task_create(rs, "t")
    st, d = fulfill(rs, "t", 2)
    assert st == 409 and isinstance(d, str)
    create(rs, "p", tags={"resonate:target": A})
    st, d = fulfill(rs, "p", 0)
    assert st == 409 and isinstance(d, str)
    st, d = fulfill(rs, "nope", 0)
    assert st == 404 and isinstance(d, str)
    assert get(rs, "t")["state"] == "pending" and get(rs, "p")["state"] == "pending"


def test_s56_task_suspend(rs):
    task_create(rs, "t")
    create(rs, "t.a")
    st, d = rs.rpc("task.suspend", {"id": "t", "version": 1, "actions": [
        {"kind": "promise.register_callback", "head": {}, "data": {"awaited": "t.a", "awaiter": "t"}}]}, time=T + 1)
    assert st == 200 and d == {}
    s = snap(rs)
    assert find(s["tasks"], "t") == {"id": "t", "state": "suspended", "version": 1, "resumes": 0}
    assert find(s["taskTimeouts"], "t") is None
    assert s["callbacks"] == [{"awaiter": "t", "awaited": "t.a"}]


def test_s57_task_suspend_redirect(rs):
    task_create(rs, "t")
    create(rs, "a")
    settle(rs, "a")
    st, d = suspend(rs, "t", 1, ["a"], time=T + 1)
    assert st == 300, d
    assert isinstance(d, dict) and isinstance(d.get("preload"), list)
    assert d["preload"] == []
    s = snap(rs)
    assert find(s["tasks"], "t") == {"id": "t", "state": "acquired", "version": 1, "resumes": 0,
                                     "ttl": 60_000, "pid": "w"}
    assert find(s["taskTimeouts"], "t") == {"id": "t", "type": 1, "timeout": T + 60_000}
    assert s["callbacks"] == []


def test_s58_task_suspend_on_expired(rs):
    task_create(rs, "t")
    create(rs, "a", timeout=T + 10)
    st, d = suspend(rs, "t", 1, ["a"], time=T + 10)
    assert st == 300, d
    s = snap(rs)
    a = find(s["promises"], "a")
    assert a["state"] == "rejected_timedout" and a["settledAt"] == T + 10
    assert find(s["tasks"], "t")["state"] == "acquired"
    assert s["callbacks"] == []


def test_s59_task_suspend_errors(rs):
    task_create(rs, "t")
    create(rs, "a")
    st, d = suspend(rs, "t", 1, ["missing"])
    assert st == 422 and isinstance(d, str)
    st, d = rs.rpc("task.suspend", {"id": "t", "version": 1, "actions": []}, time=T)
    assert st == 400 and isinstance(d, str)
    st, d = rs.rpc("task.suspend", {"id": "t", "version": 1, "actions": [cb_action("a", "other")]}, time=T)
    assert st == 400 and isinstance(d, str)
    st, d = rs.rpc("task.suspend", {"id": "t", "version": 1, "actions": [cb_action("t", "t")]}, time=T)
    assert st == 400 and isinstance(d, str)
    assert task_get(rs, "t")["state"] == "acquired"
    assert snap(rs)["callbacks"] == []


def test_s60_resume_on_settle(rs):
    task_create(rs, "t")
    create(rs, "a")
    assert suspend(rs, "t", 1, ["a"])[0] == 200
    settle(rs, "a", time=T + 7)
    s = snap(rs)
    assert find(s["tasks"], "t") == {"id": "t", "state": "pending", "version": 1, "resumes": 1}
    assert find(s["taskTimeouts"], "t") == {"id": "t", "type": 0, "timeout": T + 7 + R}
    assert messages_for(s, "t") == [execute("t", 1)]
    assert s["callbacks"] == []
    st, d = acquire(rs, "t", 1, time=T + 8)
    assert st == 200, d
    assert d["task"]["version"] == 2 and d["task"]["resumes"] == 0


def test_s61_two_resumes_one_execute(rs):
    task_create(rs, "t")
    create(rs, "a")
    create(rs, "b")
    assert suspend(rs, "t", 1, ["a", "b"])[0] == 200
    assert sorted(snap(rs)["callbacks"], key=lambda c: c["awaited"]) == [
        {"awaiter": "t", "awaited": "a"}, {"awaiter": "t", "awaited": "b"}]
    settle(rs, "a", time=T + 1)
    settle(rs, "b", time=T + 2)
    s = snap(rs)
    assert find(s["tasks"], "t") == {"id": "t", "state": "pending", "version": 1, "resumes": 2}
    assert messages_for(s, "t") == [execute("t", 1)]
    assert task_get(rs, "t", time=T + 3)["resumes"] == 2


def test_s62_duplicate_awaited(rs):
    task_create(rs, "t")
    create(rs, "a")
    st, d = suspend(rs, "t", 1, ["a", "a"])
    assert st == 200 and d == {}
    assert snap(rs)["callbacks"] == [{"awaiter": "t", "awaited": "a"}]


def _ids(preload):
    return sorted(p["id"] for p in preload)


def test_s63_preload(rs):
    branch = {"resonate:target": A, "resonate:branch": "t"}
    create(rs, "t", tags=branch)
    c = create(rs, "c", tags={"resonate:branch": "t"})
    create(rs, "x", tags={"resonate:branch": "other"})
    # task.acquire
    st, d = acquire(rs, "t", 0)
    assert st == 200, d
    assert _ids(d["preload"]) == ["c"] and d["preload"][0] == c
    # task.fence
    st, d = rs.rpc("task.fence", {"id": "t", "version": 1, "action": create_action("d", tags={"k": "v"})}, time=T)
    assert st == 200, d
    assert _ids(d["preload"]) == ["c"]
    # 300-suspend
    create(rs, "done")
    settle(rs, "done")
    st, d = suspend(rs, "t", 1, ["done"])
    assert st == 300, d
    assert _ids(d["preload"]) == ["c"]
    # task.create on the (released, pending) task
    assert rs.rpc("task.release", {"id": "t", "version": 1}, time=T)[0] == 200
    d = task_create(rs, "t", tags=branch, time=T + 1)
    assert d["task"]["state"] == "acquired" and d["task"]["version"] == 2
    assert _ids(d["preload"]) == ["c"] and d["preload"][0] == c


def test_s64_fence_create(rs):
    task_create(rs, "t", tags={"resonate:target": A, "resonate:branch": "t"})
    r, body = call(rs, "task.fence", {"id": "t", "version": 1, "action": {
        "kind": "promise.create", "head": {},
        "data": {"id": "c", "timeoutAt": T + 50_000, "tags": {"resonate:branch": "t"}}}}, time=T + 1, corr="c9")
    assert r.status_code == 200, body
    c = {"id": "c", "state": "pending", "param": {}, "value": {}, "tags": {"resonate:branch": "t"},
         "timeoutAt": T + 50_000, "createdAt": T + 1}
    assert body["data"]["action"] == {"kind": "promise.create",
                                      "head": {"corrId": "c9", "status": 200, "version": VERSION},
                                      "data": {"promise": c}}
    assert c in body["data"]["preload"]
    assert get(rs, "c", time=T + 2) == c
    # fencing again returns the existing promise unchanged
    r, body = call(rs, "task.fence", {"id": "t", "version": 1, "action": create_action("c", timeout=T + 1)},
                   time=T + 3, corr="c10")
    assert body["data"]["action"]["data"]["promise"] == c


def test_s65_fence_settle_missing(rs):
    task_create(rs, "t")
    r, body = call(rs, "task.fence", {"id": "t", "version": 1, "action": settle_action("nope")}, time=T, corr="c65")
    assert r.status_code == 200, body
    inner = body["data"]["action"]
    assert inner["kind"] == "promise.settle"
    assert inner["head"]["status"] == 404
    assert inner["head"]["corrId"] == "c65" and inner["head"]["version"] == VERSION
    assert inner["data"] == "Promise not found"


def test_s65_fence_settle_pending(rs):
    task_create(rs, "t")
    create(rs, "c")
    r, body = call(rs, "task.fence", {"id": "t", "version": 1, "action": settle_action("c", "rejected", {"data": "eA=="})},
                   time=T + 4)
    assert r.status_code == 200, body
    inner = body["data"]["action"]
    assert inner["head"]["status"] == 200
    p = inner["data"]["promise"]
    assert p["state"] == "rejected" and p["value"] == {"data": "eA=="} and p["settledAt"] == T + 4


def test_s66_fence_create_with_target(rs):
    task_create(rs, "t")
    st, d = rs.rpc("task.fence", {"id": "t", "version": 1, "action": create_action(
        "c", timeout=T + 90_000, tags={"resonate:target": A})}, time=T + 2)
    assert st == 200, d
    s = snap(rs)
    assert find(s["tasks"], "c") == {"id": "c", "state": "pending", "version": 0, "resumes": 0}
    assert find(s["taskTimeouts"], "c") == {"id": "c", "type": 0, "timeout": T + 2 + R}
    assert find(s["promiseTimeouts"], "c") == {"id": "c", "timeout": T + 90_000}
    assert s["messages"] == [execute("c", 0)]


def test_s67_fence_errors(rs):
    task_create(rs, "t")
    st, d = rs.rpc("task.fence", {"id": "t", "version": 2, "action": create_action("c")}, time=T)
    assert st == 409 and isinstance(d, str)
    st, d = rs.rpc("task.fence", {"id": "nope", "version": 1, "action": create_action("c")}, time=T)
    assert st == 404 and isinstance(d, str)
    st, d = rs.rpc("task.fence", {"id": "t", "version": 1, "action": {
        "kind": "task.fulfill", "head": {}, "data": {"id": "c"}}}, time=T)
    assert st == 400 and isinstance(d, str)
    st, d = rs.rpc("task.fence", {"id": "t", "version": 1, "action": settle_action("t")}, time=T)
    assert st == 400 and isinstance(d, str)
    st, d = rs.rpc("task.fence", {"id": "t", "version": 1, "action": create_action("t")}, time=T)
    assert st == 400 and isinstance(d, str)
    assert rs.rpc("promise.get", {"id": "c"}, time=T)[0] == 404
    assert get(rs, "t")["state"] == "pending"


def test_s68_heartbeat(rs):
    task_create(rs, "t", pid="w", ttl=5000)
    st, d = rs.rpc("task.heartbeat", {"pid": "w", "tasks": [{"id": "t", "version": 1}]}, time=T + 4000)
    assert st == 200 and d == {}
    assert find(snap(rs)["taskTimeouts"], "t") == {"id": "t", "type": 1, "timeout": T + 9000}
    st, d = rs.rpc("task.heartbeat", {"pid": "x", "tasks": [{"id": "t", "version": 1}]}, time=T + 5000)
    assert st == 200 and d == {}
    st, d = rs.rpc("task.heartbeat", {"pid": "w", "tasks": [{"id": "t", "version": 0}]}, time=T + 5000)
    assert st == 200 and d == {}
    st, d = rs.rpc("task.heartbeat", {"pid": "w", "tasks": [{"id": "nope", "version": 1}]}, time=T + 5000)
    assert st == 200 and d == {}
    assert find(snap(rs)["taskTimeouts"], "t") == {"id": "t", "type": 1, "timeout": T + 9000}


def test_s69_heartbeat_empty_renews_pid(rs):
    task_create(rs, "t", pid="w", ttl=5000)
    task_create(rs, "u", pid="w", ttl=3000)
    task_create(rs, "v", pid="other", ttl=5000)
    st, d = rs.rpc("task.heartbeat", {"pid": "w", "tasks": []}, time=T + 4000)
    assert st == 200 and d == {}
    tt = snap(rs)["taskTimeouts"]
    assert find(tt, "t") == {"id": "t", "type": 1, "timeout": T + 9000}
    assert find(tt, "u") == {"id": "u", "type": 1, "timeout": T + 7000}
    assert find(tt, "v") == {"id": "v", "type": 1, "timeout": T + 5000}


@pytest.mark.parametrize("state", ["pending", "acquired", "suspended"])
def test_s70_halt(rs, state):
    if state == "pending":
        create(rs, "t", tags={"resonate:target": A})
        version = 0
    else:
        task_create(rs, "t")
        version = 1
        if state == "suspended":
            create(rs, "a")
            assert suspend(rs, "t", 1, ["a"])[0] == 200
    assert task_get(rs, "t")["state"] == state
    st, d = rs.rpc("task.halt", {"id": "t"}, time=T + 1)
    assert st == 200 and d == {}
    s = snap(rs)
    assert find(s["tasks"], "t") == {"id": "t", "state": "halted", "version": version, "resumes": 0}
    assert find(s["taskTimeouts"], "t") is None
    st, d = rs.rpc("task.halt", {"id": "t"}, time=T + 2)
    assert st == 200 and d == {}
    assert task_get(rs, "t", time=T + 2)["state"] == "halted"


def test_s70_halt_fulfilled_and_missing(rs):
    task_create(rs, "t")
    assert fulfill(rs, "t", 1)[0] == 200
    st, d = rs.rpc("task.halt", {"id": "t"}, time=T)
    assert st == 409 and isinstance(d, str)
    st, d = rs.rpc("task.halt", {"id": "nope"}, time=T)
    assert st == 404 and isinstance(d, str)


def test_s71_halted_loses_lease(rs):
    task_create(rs, "t", pid="w")
    assert rs.rpc("task.halt", {"id": "t"}, time=T + 1)[0] == 200
    st, d = fulfill(rs, "t", 1, time=T + 2)
    assert st == 409 and isinstance(d, str)
    st, d = rs.rpc("task.fence", {"id": "t", "version": 1, "action": create_action("c")}, time=T + 2)
    assert st == 409
    assert get(rs, "t", time=T + 3)["state"] == "pending"


def test_s72_continue(rs):
    task_create(rs, "t")
    assert rs.rpc("task.halt", {"id": "t"}, time=T + 1)[0] == 200
    st, d = rs.rpc("task.continue", {"id": "t"}, time=T + 2)
    assert st == 200 and d == {}
    s = snap(rs)
    assert find(s["tasks"], "t") == {"id": "t", "state": "pending", "version": 1, "resumes": 0}
    assert s["taskTimeouts"] == [{"id": "t", "type": 0, "timeout": T + 2 + R}]
    assert s["messages"] == [execute("t", 1)]
    st, d = rs.rpc("task.continue", {"id": "t"}, time=T + 3)
    assert st == 409 and isinstance(d, str)
    st, d = rs.rpc("task.continue", {"id": "nope"}, time=T + 3)
    assert st == 404 and isinstance(d, str)


def test_s73_halted_task_promise_times_out(rs):
    task_create(rs, "t", timeout=T + 1000)
    assert rs.rpc("task.halt", {"id": "t"}, time=T + 1)[0] == 200
    assert ok(rs, "debug.tick", {"time": T + 1000}, time=T + 1000) == []
    s = snap(rs)
    assert find(s["tasks"], "t") == {"id": "t", "state": "fulfilled", "version": 1, "resumes": 0}
    assert find(s["promises"], "t")["state"] == "rejected_timedout"


def test_s74_halted_task_collects_resumes(rs):
    task_create(rs, "t")
    create(rs, "a")
    assert suspend(rs, "t", 1, ["a"])[0] == 200
    assert rs.rpc("task.halt", {"id": "t"}, time=T + 1)[0] == 200
    settle(rs, "a", time=T + 2)
    assert task_get(rs, "t", time=T + 3) == {"id": "t", "state": "halted", "version": 1, "resumes": 1}
    s = snap(rs)
    assert messages_for(s, "t") == []
    assert find(s["taskTimeouts"], "t") is None


def test_s75_task_search_and_get(rs):
    task_create(rs, "t1", pid="w1", ttl=1000)
    task_create(rs, "t2", pid="w2", ttl=2000)
    create(rs, "t3", tags={"resonate:target": A})
    task_create(rs, "t4")
    assert fulfill(rs, "t4", 1)[0] == 200
    d = ok(rs, "task.search", {"state": "acquired", "limit": 1})
    assert d["tasks"] == [{"id": "t1", "state": "acquired", "version": 1, "resumes": 0, "ttl": 1000, "pid": "w1"}]
    assert isinstance(d.get("cursor"), str)
    d2 = ok(rs, "task.search", {"state": "acquired", "limit": 1, "cursor": d["cursor"]})
    assert d2["tasks"] == [{"id": "t2", "state": "acquired", "version": 1, "resumes": 0, "ttl": 2000, "pid": "w2"}]
    assert "cursor" not in d2
    d3 = ok(rs, "task.search", {})
    assert [t["id"] for t in d3["tasks"]] == ["t1", "t2", "t3", "t4"] and "cursor" not in d3
    assert task_get(rs, "t1") == {"id": "t1", "state": "acquired", "version": 1, "resumes": 0, "ttl": 1000, "pid": "w1"}
    assert task_get(rs, "t3") == {"id": "t3", "state": "pending", "version": 0, "resumes": 0}
    assert task_get(rs, "t4") == {"id": "t4", "state": "fulfilled", "version": 1, "resumes": 0}
    for bad in (0, 1001):
        st, e = rs.rpc("task.search", {"limit": bad}, time=T)
        assert st == 400 and isinstance(e, str)
