"""Timeouts, retries, leases, delay and."""
from __future__ import annotations

import pytest

from tests.conformance.helpers import (
    A,
    R,
    T,
    create,
    execute,
    find,
    get,
    messages_for,
    now_ms,
    ok,
    snap,
    suspend,
    task_create,
    task_get,
    wait_until,
)


def test_s76_tick_times_out_targeted_promise(rs):
    create(rs, "p", timeout=T + 100, tags={"resonate:target": A})
    assert ok(rs, "debug.tick", {"time": T + 100}, time=T + 100) == []
    s = snap(rs)
    p = find(s["promises"], "p")
    assert p["state"] == "rejected_timedout" and p["settledAt"] == T + 100 and p["value"] == {}
    assert find(s["tasks"], "p") == {"id": "p", "state": "fulfilled", "version": 0, "resumes": 0}
    assert s["promiseTimeouts"] == []
    assert s["taskTimeouts"] == []


def test_s76_tick_before_deadline_is_noop(rs):
    create(rs, "p", timeout=T + 100, tags={"resonate:target": A})
    assert ok(rs, "debug.tick", {"time": T + 99}, time=T + 99) == []
    s = snap(rs)
    assert find(s["promises"], "p")["state"] == "pending"
    assert s["promiseTimeouts"] == [{"id": "p", "timeout": T + 100}]


def test_s77_tick_ignores_bare_promise(rs):
    create(rs, "p", timeout=T + 100)
    assert ok(rs, "debug.tick", {"time": T + 200}, time=T + 200) == []
    assert find(snap(rs)["promises"], "p")["state"] == "pending"
    p = get(rs, "p", time=T + 200)
    assert p["state"] == "rejected_timedout" and p["settledAt"] == T + 100


def test_s78_lease_expiry(rs):
    task_create(rs, "t", ttl=5000)
    ok(rs, "debug.tick", {"time": T + 4999}, time=T + 4999)
    assert task_get(rs, "t", time=T + 4999)["state"] == "acquired"
    assert ok(rs, "debug.tick", {"time": T + 5000}, time=T + 5000) == []
    s = snap(rs)
    assert find(s["tasks"], "t") == {"id": "t", "state": "pending", "version": 1, "resumes": 0}
    assert s["taskTimeouts"] == [{"id": "t", "type": 0, "timeout": T + 5000 + R}]
    assert s["messages"] == [execute("t", 1)]


def test_s79_retry_timeout(rs):
    create(rs, "p", timeout=T + 10 * R, tags={"resonate:target": A})
    ok(rs, "debug.tick", {"time": T + R}, time=T + R)
    s = snap(rs)
    assert s["taskTimeouts"] == [{"id": "p", "type": 0, "timeout": T + 2 * R}]
    assert s["messages"] == [execute("p", 0)]
    assert find(s["tasks"], "p") == {"id": "p", "state": "pending", "version": 0, "resumes": 0}


def test_s80_phase_order_no_spurious_resume(rs):
    task_create(rs, "t", timeout=T + 1000)
    create(rs, "a", timeout=T + 500, tags={"resonate:target": A})
    assert suspend(rs, "t", 1, ["a"])[0] == 200
    ok(rs, "debug.tick", {"time": T + 2000}, time=T + 2000)
    s = snap(rs)
    assert find(s["tasks"], "t") == {"id": "t", "state": "fulfilled", "version": 1, "resumes": 0}
    assert find(s["tasks"], "a")["state"] == "fulfilled"
    assert find(s["promises"], "t")["state"] == "rejected_timedout"
    assert find(s["promises"], "a")["state"] == "rejected_timedout"
    assert messages_for(s, "t") == []
    assert s["callbacks"] == []
    assert s["taskTimeouts"] == []


def test_s81_sleeper_wakes_workflow(rs):
    task_create(rs, "t")
    st, d = rs.rpc("task.fence", {"id": "t", "version": 1, "action": {
        "kind": "promise.create", "head": {},
        "data": {"id": "s", "timeoutAt": T + 1000, "tags": {"resonate:timer": "true", "resonate:target": A}}}}, time=T)
    assert st == 200, d
    assert suspend(rs, "t", 1, ["s"])[0] == 200
    ok(rs, "debug.tick", {"time": T + 1000}, time=T + 1000)
    s = snap(rs)
    sp = find(s["promises"], "s")
    assert sp["state"] == "resolved" and sp["settledAt"] == T + 1000 and sp["value"] == {}
    assert find(s["tasks"], "s")["state"] == "fulfilled"
    assert find(s["tasks"], "t") == {"id": "t", "state": "pending", "version": 1, "resumes": 1}
    assert messages_for(s, "t") == [execute("t", 1)]
    assert find(s["taskTimeouts"], "t") == {"id": "t", "type": 0, "timeout": T + 1000 + R}


def test_s82_delay(rs):
    p = create(rs, "p", timeout=T + 60_000, tags={"resonate:target": A, "resonate:delay": str(T + 5000)})
    assert p["state"] == "pending"
    s = snap(rs)
    assert s["tasks"] == [{"id": "p", "state": "pending", "version": 0, "resumes": 0}]
    assert s["taskTimeouts"] == [{"id": "p", "type": 0, "timeout": T + 5000}]
    assert s["messages"] == []
    ok(rs, "debug.tick", {"time": T + 4999}, time=T + 4999)
    assert snap(rs)["messages"] == []
    ok(rs, "debug.tick", {"time": T + 5000}, time=T + 5000)
    s = snap(rs)
    assert s["messages"] == [execute("p", 0)]
    assert s["taskTimeouts"] == [{"id": "p", "type": 0, "timeout": T + 5000 + R}]


def test_s82_delay_already_passed_dispatches_now(rs):
    create(rs, "p", timeout=T + 60_000, tags={"resonate:target": A, "resonate:delay": str(T - 1)})
    s = snap(rs)
    assert s["taskTimeouts"] == [{"id": "p", "type": 0, "timeout": T + R}]
    assert s["messages"] == [execute("p", 0)]


@pytest.mark.parametrize("delay,with_target", [
    (str(T + 60_000), True),      # == timeoutAt
    (str(T + 70_000), True),      # > timeoutAt
    ("soon", True),               # non-numeric
    ("-1", True),                 # negative
    ("1.5", True),
    (str(T + 10), False),         # no target
])
def test_s83_delay_validation(rs, delay, with_target):
    tg = {"resonate:delay": delay}
    if with_target:
        tg["resonate:target"] = A
    st, d = rs.rpc("promise.create", {"id": "p", "timeoutAt": T + 60_000, "tags": tg}, time=T)
    assert st == 400 and isinstance(d, str), d
    assert rs.rpc("promise.get", {"id": "p"}, time=T)[0] == 404


def test_s84_tick_validation(rs):
    st, d = rs.rpc("debug.tick", {"time": 5}, time=6)
    assert st == 400 and isinstance(d, str)
    st, d = rs.rpc("debug.tick", {}, time=None)
    assert st == 400 and isinstance(d, str)
    for bad in ("5", 5.5, True, None):
        st, d = rs.rpc("debug.tick", {"time": bad}, time=None)
        assert st == 400 and isinstance(d, str), bad
    assert ok(rs, "debug.tick", {"time": 5}, time=None) == []


def test_q1_bare_promise_times_out_in_background(live):
    """outside a debug session every expired pending promise times out in the background,
    target or not (no touch needed); a listener gets the unblock queued/delivered."""
    deadline = now_ms() + 400
    create(live, "bare", timeout=deadline, time=None)
    create(live, "timer", timeout=deadline, tags={"resonate:timer": "true"}, time=None)
    create(live, "tgt", timeout=deadline, tags={"resonate:target": "poll://uni@nobody/x"}, time=None)

    def settled():
        ps = snap(live)["promises"]
        return all(p["state"] != "pending" for p in ps) and ps

    ps = wait_until(settled, timeout=5.0)
    assert ps, snap(live)["promises"]
    assert find(ps, "bare")["state"] == "rejected_timedout" and find(ps, "bare")["settledAt"] == deadline
    assert find(ps, "timer")["state"] == "resolved" and find(ps, "timer")["settledAt"] == deadline
    assert find(ps, "tgt")["state"] == "rejected_timedout"
    assert find(snap(live)["tasks"], "tgt")["state"] == "fulfilled"
