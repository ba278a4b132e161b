"""SDK-compatibility scenarios, shared by the Python-SDK and TypeScript-SDK test modules.

Each scenario drives real SDK processes (see harness.py) and asserts on (a) what the SDK
returned to its caller, (b) side-effect files the durable functions wrote, and (c) the
server's own view through raw RPCs.
"""
from __future__ import annotations

import time

from tests.sdk.harness import Harness, b64json, unb64json, wait_until

FN = {
    "py": {
        "nested": "nested", "call_other_group": "call_other_group", "sleeper": "sleeper",
        "await_external": "await_external", "fanout": "fanout", "always_fails": "always_fails",
        "counted": "counted", "recoverable": "recoverable", "scheduled_tick": "scheduled_tick",
    },
    "ts": {
        "nested": "nested", "call_other_group": "callOtherGroup", "sleeper": "sleeper",
        "await_external": "awaitExternal", "fanout": "fanout", "always_fails": "alwaysFails",
        "counted": "counted", "recoverable": "recoverable", "scheduled_tick": "scheduledTick",
    },
}


def fn(h: Harness, key: str) -> str:
    return FN[h.lang][key]


def ok_value(res: dict):
    assert res.get("ok") is True, f"SDK call failed: {res}"
    return res["value"]


def lineage(h: Harness, root: str) -> list[dict]:
    """Every promise of a workflow (the SDKs stamp resonate:origin = root on all of them)."""
    return h.search_all({"resonate:origin": root})


# 1 ─ nested ctx.run steps ─────────────────────────────────────────────────────
def nested_steps(h: Harness) -> None:
    root = f"nested-{h.uid}"
    c = h.client("c1", f"g-{h.uid}", [{"op": "run", "id": root, "func": fn(h, "nested"), "args": [3]}])
    [res] = c.result()
    v = ok_value(res)
    # a = 3*2+1 = 7 ; b = 7*2+1 = 15
    assert v == {"a": 7, "b": 15, "by": "c1"}, v

    # Each leaf step ran exactly once (double, add_one, double, add_one).
    steps = h.lines("nested-steps.log")
    assert len(steps) == 4, steps

    root_p = h.promise(root)
    assert root_p["state"] == "resolved", root_p
    assert unb64json(root_p["value"].get("data")) == {"a": 7, "b": 15, "by": "c1"}
    family = lineage(h, root)
    # root + 2 outer steps + 2x2 inner steps, all settled as resolved by the fenced settles.
    assert len(family) == 7, [p["id"] for p in family]
    assert all(p["state"] == "resolved" for p in family), [(p["id"], p["state"]) for p in family]
    locals_ = [p for p in family if p["id"] != root]
    assert all(p["tags"].get("resonate:scope") == "local" for p in locals_), locals_
    # The inner steps' parent is an outer step (steps calling steps).
    outer_ids = {p["id"] for p in locals_ if p["tags"].get("resonate:parent") == root}
    inner = [p for p in locals_ if p["tags"].get("resonate:parent") in outer_ids]
    assert len(outer_ids) == 2 and len(inner) == 4, [(p["id"], p["tags"]) for p in family]
    h.assert_wire_clean()


# 2 ─ rpc across groups ────────────────────────────────────────────────────────
def rpc_other_group(h: Harness) -> None:
    ga, gb, gc = f"ga-{h.uid}", f"gb-{h.uid}", f"gc-{h.uid}"
    h.worker("wa", ga)
    h.worker("wb", gb)
    root = f"xgroup-{h.uid}"
    c = h.client("client", gc, [{"op": "rpc", "id": root, "func": fn(h, "call_other_group"),
                                 "args": [42, gb], "target": ga}])
    [res] = c.result()
    v = ok_value(res)
    assert v["orchestrator"] == "wa" and v["group"] == ga, v
    assert v["inner"]["worker"] == "wb" and v["inner"]["group"] == gb and v["inner"]["x"] == 42, v

    assert h.promise(root)["tags"]["resonate:target"].startswith(f"poll://any@{ga}"), h.promise(root)
    child = h.promise(v["inner"]["id"])
    assert child["state"] == "resolved", child
    assert child["tags"]["resonate:target"].startswith(f"poll://any@{gb}"), child
    assert child["tags"].get("resonate:parent") == root, child
    h.assert_wire_clean()


# 3 ─ durable sleep ────────────────────────────────────────────────────────────
def durable_sleep(h: Harness, ms: int = 1500) -> None:
    root = f"sleep-{h.uid}"
    c = h.client("c1", f"g-{h.uid}", [{"op": "run", "id": root, "func": fn(h, "sleeper"), "args": [ms]}])
    [res] = c.result()
    v = ok_value(res)
    assert v == {"woke": True, "by": "c1"}, v
    assert res["elapsed_ms"] >= ms, res

    timers = [p for p in lineage(h, root) if p["tags"].get("resonate:timer") == "true"]
    assert len(timers) == 1, timers
    t = timers[0]
    # The server resolved the timer at its deadline (not timed out, not early).
    assert t["state"] == "resolved", t
    assert t["settledAt"] >= t["timeoutAt"], t
    assert t["timeoutAt"] > t["createdAt"], t  # (the SDK reckons the deadline on its clock before sending)
    assert h.promise(root)["settledAt"] >= t["timeoutAt"], h.promise(root)
    h.assert_wire_clean()


# 4 ─ awaiting a promise resolved from outside ───────────────────────────────────
def external_promise(h: Harness, via: str) -> None:
    root = f"ext-{h.uid}"
    tag = h.uid
    group = f"g-{h.uid}"
    c = h.client("c1", group, [{"op": "run", "id": root, "func": fn(h, "await_external"), "args": [tag]}])
    idfile = h.data / f"external-{tag}.id"
    wait_until(lambda: idfile.exists() and idfile.read_text(), 30, "the workflow to create its promise")
    pid = idfile.read_text()
    # The workflow is blocked on the promise: give it time, it must not finish.
    time.sleep(1.0)
    assert not c.out.exists(), "workflow finished before its promise was resolved"
    p = h.promise(pid)
    assert p["state"] == "pending", p
    assert h.promise(root)["state"] == "pending"

    payload = {"hello": "outside", "n": 7}
    if via == "raw":
        status, data = h.server.rpc("promise.settle", {"id": pid, "state": "resolved",
                                                       "value": {"headers": {}, "data": b64json(payload)}})
        assert status == 200 and data["promise"]["state"] == "resolved", (status, data)
    else:
        r = h.client("resolver", f"gr-{h.uid}", [{"op": "resolve", "id": pid, "value": payload}])
        [rr] = r.result()
        assert rr.get("ok") is True and rr["state"] == "resolved", rr

    [res] = c.result(timeout=40)
    v = ok_value(res)
    assert v == {"got": payload, "promise": pid}, v
    assert h.promise(root)["state"] == "resolved"
    h.assert_wire_clean()


# 5 ─ fan-out / fan-in of 50 children ───────────────────────────────────────────
def fan_out_in(h: Harness, n: int = 50) -> None:
    group = f"g-{h.uid}"
    h.worker("w1", group)
    h.worker("w2", group)
    root = f"fan-{h.uid}"
    c = h.client("client", f"gc-{h.uid}", [{"op": "rpc", "id": root, "func": fn(h, "fanout"),
                                            "args": [n, group], "target": group}])
    [res] = c.result()
    v = ok_value(res)
    assert v == {"sum": sum(i * i for i in range(n)), "count": n}, v

    runs = h.lines("square.log")
    assert sorted(int(line.split()[1]) for line in runs) == list(range(n)), runs
    children = [p for p in lineage(h, root) if p["id"] != root]
    assert len(children) == n, len(children)
    assert all(p["state"] == "resolved" for p in children)
    assert {unb64json(p["value"].get("data")) for p in children} == {i * i for i in range(n)}
    h.assert_wire_clean()


# 6 ─ failure with retries off ───────────────────────────────────────────────────
def failure_no_retry(h: Harness) -> None:
    group = f"g-{h.uid}"
    h.worker("w1", group)
    root = f"fail-{h.uid}"
    msg = f"m{h.uid}"
    op = {"op": "rpc", "id": root, "func": fn(h, "always_fails"), "args": [msg], "target": group}
    if h.lang == "ts":
        op["retry"] = "never"  # TS: retry policy travels in the promise param
    c = h.client("client", f"gc-{h.uid}", [op])
    [res] = c.result()
    assert res.get("ok") is False, res
    assert f"boom: {msg}" in res["error"], res

    p = h.promise(root)
    assert p["state"] == "rejected", p
    assert f"boom: {msg}" in str(unb64json(p["value"].get("data"))), p
    time.sleep(2.5)  # > 2 retry timeouts: nothing may re-run it
    attempts = h.lines(f"fail-{msg}.log")
    assert len(attempts) == 1, attempts
    status, task = h.server.rpc("task.get", {"id": root})
    assert status == 200 and task["task"]["state"] == "fulfilled", (status, task)
    h.assert_wire_clean()


# 7 ─ idempotent re-invocation of the same id ───────────────────────────────────
def idempotent_run(h: Harness) -> None:
    root = f"idem-{h.uid}"
    key = h.uid
    op = {"op": "run", "id": root, "func": fn(h, "counted"), "args": [key]}
    c1 = h.client("c1", f"g1-{h.uid}", [op])
    # The function blocks until the test releases it, so the second run overlaps for sure.
    wait_until(lambda: h.lines(f"counted-{key}.log"), 30, "the first run to start executing")
    c2 = h.client("c2", f"g2-{h.uid}", [op])
    # c2's task.create must conflict (409) and fall back to a listener (spec 14.8 #107).
    wait_until(lambda: any(e.get("kind") == "task.create" and e.get("head", {}).get("status") == 409
                           for e in c2.wire()), 30, "c2's task.create to return 409")
    (h.data / f"counted-{key}.release").write_text("go")
    [r1] = c1.result()
    [r2] = c2.result()
    v1, v2 = ok_value(r1), ok_value(r2)
    assert v1 == v2, (v1, v2)
    assert v1["key"] == key and v1["by"] == "c1", v1
    # ...and once more after it finished (task.create on a fulfilled task), plus a get.
    c3 = h.client("c3", f"g3-{h.uid}", [op, {"op": "get", "id": root}])
    r3, r4 = c3.result()
    assert ok_value(r3) == v1, (r3, v1)
    assert ok_value(r4) == v1, (r4, v1)
    runs = h.lines(f"counted-{key}.log")
    assert len(runs) == 1, runs
    assert unb64json(h.promise(root)["value"].get("data")) == v1
    h.assert_wire_clean(extra={"task.create": {409}})


# 8 ─ recovery after SIGKILL ──────────────────────────────────────────────────────
def recovery_after_kill(h: Harness) -> None:
    group = f"g-{h.uid}"
    tag = h.uid
    ttl_s = 2.0
    w1 = h.worker("w1", group, ttl_s=ttl_s)
    root = f"rec-{h.uid}"
    c = h.client("client", f"gc-{h.uid}", [{"op": "rpc", "id": root, "func": fn(h, "recoverable"),
                                            "args": [5, 2, "w1", tag], "target": group}])
    wait_until(lambda: (h.data / f"recovery-{tag}.blocked").exists(), 30, "w1 to block in step 2")
    assert h.lines(f"recovery-{tag}.log") == ["0 w1", "1 w1", "2 w1"], h.lines(f"recovery-{tag}.log")
    # While w1 is alive its heartbeats keep the lease: after > 2 ttl nothing was re-dispatched
    # (a re-dispatch would reach w1, the group's only worker, and re-run step 2).
    time.sleep(2.5 * ttl_s)
    assert h.lines(f"recovery-{tag}.log") == ["0 w1", "1 w1", "2 w1"], h.lines(f"recovery-{tag}.log")
    beats = [e for e in w1.wire() if e.get("kind") == "task.heartbeat"]
    assert len(beats) >= 3 and all(e["head"]["status"] == 200 for e in beats), beats
    status, task = h.server.rpc("task.get", {"id": root})
    assert status == 200 and task["task"]["state"] == "acquired" and task["task"]["version"] == 1, task
    w1.kill()  # SIGKILL mid-workflow: its lease must expire and the task be re-dispatched
    t_kill = time.time()
    h.worker("w2", group, ttl_s=ttl_s)
    [res] = c.result(timeout=45)
    v = ok_value(res)
    assert v == {"steps": [0, 10, 20, 30, 40], "finished_by": "w2"}, v
    # Steps 0 and 1 completed under w1 and are not re-run; step 2 (interrupted) re-runs.
    assert h.lines(f"recovery-{tag}.log") == ["0 w1", "1 w1", "2 w1", "2 w2", "3 w2", "4 w2"], \
        h.lines(f"recovery-{tag}.log")
    assert time.time() - t_kill < 40
    assert h.promise(root)["state"] == "resolved"
    h.assert_wire_clean()


# 9 ─ cron schedule fires, then is deleted ──────────────────────────────────────────
def schedule_fires_then_deleted(h: Harness) -> None:
    group = f"g-{h.uid}"
    tag = h.uid
    sid = f"sched-{h.uid}"
    h.worker("w1", group)
    cron = "* * * * * *"  # 6-field, seconds first: every second (the SDKs pass cron through)
    c = h.client("creator", f"gc-{h.uid}", [{"op": "schedule", "id": sid, "cron": cron,
                                             "func": fn(h, "scheduled_tick"), "args": [tag], "target": group}])
    [res] = c.result()
    assert res.get("ok") is True and res["schedule"]["id"] == sid and res["schedule"]["cron"] == cron, res
    wait_until(lambda: len(h.lines(f"sched-{tag}.log")) >= 2, 25, "the schedule to fire twice")

    d = h.client("deleter", f"gd-{h.uid}", [{"op": "schedule_delete", "id": sid}, {"op": "schedule_get", "id": sid}])
    deleted, get_after = d.result()
    assert deleted.get("ok") is True, deleted
    assert get_after.get("ok") is False, get_after  # 404 surfaces as an SDK error
    status, data = h.server.rpc("schedule.get", {"id": sid})
    assert status == 404, (status, data)

    fired_before = {p["id"] for p in h.search_all({"resonate:schedule": sid})}
    assert fired_before, "fired promises must carry resonate:schedule"
    assert all(p.startswith(f"{sid}-") for p in fired_before), fired_before
    time.sleep(3.0)
    fired_after = {p["id"] for p in h.search_all({"resonate:schedule": sid})}
    assert fired_after == fired_before, fired_after - fired_before
    ran = [line.split()[0] for line in h.lines(f"sched-{tag}.log")]
    assert set(ran) <= fired_before, set(ran) - fired_before
    assert len(ran) == len(set(ran)), ran  # each firing ran once
    n = len(ran)
    time.sleep(1.5)
    assert len(h.lines(f"sched-{tag}.log")) <= len(fired_before) and len(h.lines(f"sched-{tag}.log")) >= n
    h.assert_wire_clean(extra={"schedule.get": {404}})


# 10 ─ promise search by tags with paging ───────────────────────────────────────────
def search_paging(h: Harness) -> None:
    suite = f"s{h.uid}"
    ids = [f"search-{h.uid}-{i:02d}" for i in range(25)]
    decoys = [f"search-{h.uid}-x{i}" for i in range(3)]
    resolved = ids[3:7]
    ops = [
        {"op": "create_promises", "ids": ids, "tags": {"suite": suite, "kind": "a"}},
        {"op": "create_promises", "ids": decoys, "tags": {"suite": f"other-{suite}"}},
        *({"op": "resolve", "id": i, "value": {"v": i}} for i in resolved),
        {"op": "search", "tags": {"suite": suite}, "limit": 10},
        {"op": "search", "tags": {"suite": suite, "kind": "a"}, "state": "resolved", "limit": 3},
        {"op": "search", "tags": {"suite": suite}, "state": "pending", "limit": 100},
    ]
    c = h.client("c1", f"g-{h.uid}", ops)
    results = c.result()
    for r in results:
        assert r.get("ok") is True, r
    all_pages = results[-3]["pages"]
    assert [len(p["ids"]) for p in all_pages] == [10, 10, 5], all_pages
    assert [bool(p["cursor"]) for p in all_pages] == [True, True, False], all_pages
    flat = [i for p in all_pages for i in p["ids"]]
    assert flat == sorted(ids), flat  # ordered by id, each exactly once, decoys excluded
    res_pages = results[-2]["pages"]
    assert [len(p["ids"]) for p in res_pages] == [3, 1], res_pages
    assert [i for p in res_pages for i in p["ids"]] == sorted(resolved)
    assert all(s == "resolved" for p in res_pages for s in p["states"])
    pend = results[-1]["pages"]
    assert len(pend) == 1 and sorted(pend[0]["ids"]) == sorted(set(ids) - set(resolved)), pend
    h.assert_wire_clean()
