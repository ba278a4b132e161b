"""Debug."""
from __future__ import annotations

from tests.conformance.helpers import (
    SNAP_KEYS,
    A,
    T,
    create,
    execute,
    get,
    ok,
    settle,
    snap,
    suspend,
    task_create,
    unblock,
)


def _busy_state(rs):
    task_create(rs, "t")                                   # acquired, lease
    create(rs, "a")
    assert suspend(rs, "t", 1, ["a"])[0] == 200            # callback
    create(rs, "p", tags={"resonate:target": A})           # pending task, retry, execute
    create(rs, "l")
    ok(rs, "promise.register_listener", {"awaited": "l", "address": "poll://uni@g/c"})   # listener
    create(rs, "u")
    ok(rs, "promise.register_listener", {"awaited": "u", "address": "poll://uni@g/c"})
    settle(rs, "u")                                        # unblock queued
    ok(rs, "schedule.create", {"id": "s", "cron": "* * * * *", "promiseId": "{{.id}}.{{.timestamp}}",
                               "promiseTimeout": 1000, "promiseTags": {"resonate:target": A}})


def test_s103_reset(rs):
    _busy_state(rs)
    s = snap(rs)
    assert all(s[k] for k in ("promises", "promiseTimeouts", "callbacks", "listeners", "tasks", "taskTimeouts",
                              "messages")), s
    assert ok(rs, "debug.reset", {}, time=None) == {}
    s = snap(rs)
    assert set(s) == SNAP_KEYS, s.keys()
    assert s == {k: [] for k in SNAP_KEYS}
    assert rs.rpc("schedule.get", {"id": "s"}, time=T)[0] == 404
    # the schedule's timeout is gone too: nothing fires
    ok(rs, "debug.tick", {"time": T + 10 * 60_000}, time=T + 10 * 60_000)
    assert snap(rs) == {k: [] for k in SNAP_KEYS}


def test_s103_snap_shape(rs):
    _busy_state(rs)
    s = snap(rs)
    assert set(s) == SNAP_KEYS, s.keys()   # schedules/scheduleTimeouts omitted


def test_s104_snap_lists_only_not_ready_callbacks(rs):
    task_create(rs, "t1")
    task_create(rs, "t2")
    create(rs, "a")
    create(rs, "b")
    assert suspend(rs, "t1", 1, ["a", "b"])[0] == 200
    ok(rs, "promise.register_callback", {"awaited": "a", "awaiter": "t2"})
    s = snap(rs)
    assert sorted(s["callbacks"], key=lambda c: (c["awaiter"], c["awaited"])) == [
        {"awaiter": "t1", "awaited": "a"}, {"awaiter": "t1", "awaited": "b"}, {"awaiter": "t2", "awaited": "a"}]
    settle(rs, "a", time=T + 1)        # all callbacks on a become ready -> not listed
    s = snap(rs)
    assert s["callbacks"] == [{"awaiter": "t1", "awaited": "b"}]
    tasks = {t["id"]: t for t in s["tasks"]}
    assert tasks["t1"] == {"id": "t1", "state": "pending", "version": 1, "resumes": 1}
    assert tasks["t2"]["resumes"] == 1 and tasks["t2"]["state"] == "acquired"


def _order_fixture(rs):
    # unblocks are enqueued BEFORE the executes, and in non-sorted order
    for pid in ("u2", "u1"):
        create(rs, pid)
        for addr in ("poll://uni@g/z", "poll://uni@g/a"):
            ok(rs, "promise.register_listener", {"awaited": pid, "address": addr})
    u2 = settle(rs, "u2", time=T + 1)
    u1 = settle(rs, "u1", time=T + 2)
    create(rs, "x2", tags={"resonate:target": A}, time=T + 3)
    create(rs, "x1", tags={"resonate:target": "poll://any@h"}, time=T + 4)
    return u1, u2


def test_s104_snap_messages_executes_first(rs):
    _order_fixture(rs)
    kinds = [m["message"]["kind"] for m in snap(rs)["messages"]]
    assert kinds == ["execute", "execute", "unblock", "unblock", "unblock", "unblock"], kinds


def test_s104_snap_message_order_within_kind(rs):
    """Executes by task id, then unblocks by (promise id, address)."""
    u1, u2 = _order_fixture(rs)
    assert snap(rs)["messages"] == [
        execute("x1", 0, "poll://any@h"),
        execute("x2", 0),
        unblock(u1, "poll://uni@g/a"),
        unblock(u1, "poll://uni@g/z"),
        unblock(u2, "poll://uni@g/a"),
        unblock(u2, "poll://uni@g/z"),
    ]
    assert get(rs, "u1", time=T + 5) == u1
