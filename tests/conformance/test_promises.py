"""Promises."""
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
    ok,
    settle,
    snap,
    suspend,
    task_create,
    unblock,
)


def test_s13_create_pending_record(rs):
    p = create(rs, "p", timeout=T + 60_000)
    assert p == {"id": "p", "state": "pending", "param": {}, "value": {}, "tags": {},
                 "timeoutAt": T + 60_000, "createdAt": T}
    assert "settledAt" not in p


def test_s14_create_is_idempotent(rs):
    create(rs, "p", param={"data": "a"})
    st, d = rs.rpc("promise.create", {"id": "p", "timeoutAt": T + 99, "param": {"data": "b"},
                                      "tags": {"x": "y"}}, time=T + 1)
    assert st == 200, d
    p = d["promise"]
    assert p["param"] == {"data": "a"}
    assert p["createdAt"] == T and p["timeoutAt"] == T + 60_000 and p["tags"] == {}


def test_s15_create_born_expired(rs):
    p = create(rs, "p", timeout=T)
    assert p["state"] == "rejected_timedout"
    assert p["createdAt"] == T and p["settledAt"] == T
    assert p["value"] == {}


def test_s16_create_born_expired_timer(rs):
    p = create(rs, "p", timeout=T - 5, tags={"resonate:timer": "true"})
    assert p["state"] == "resolved"
    assert p["value"] == {}
    assert p["createdAt"] == T - 5 and p["settledAt"] == T - 5


def test_s17_bare_create_has_no_task(rs):
    create(rs, "p")
    s = snap(rs)
    assert [x["id"] for x in s["promises"]] == ["p"]
    assert s["tasks"] == []
    assert s["promiseTimeouts"] == []
    assert s["taskTimeouts"] == []
    assert s["messages"] == []


def test_s18_create_with_target_snapshot(rs):
    create(rs, "p", tags={"resonate:target": A}, timeout=T + 60_000)
    s = snap(rs)
    assert s["tasks"] == [{"id": "p", "state": "pending", "version": 0, "resumes": 0}]
    assert s["promiseTimeouts"] == [{"id": "p", "timeout": T + 60_000}]
    assert s["taskTimeouts"] == [{"id": "p", "type": 0, "timeout": T + 30_000}]
    assert s["messages"] == [{"address": A, "message": {"kind": "execute", "head": {},
                                                        "data": {"task": {"id": "p", "version": 0}}}}]


@pytest.mark.parametrize("target", ["foo", "poll://x@g", "ftp://h", "poll://any@", "nats://h/x", ""])
def test_s19_invalid_target(rs, target):
    st, d = rs.rpc("promise.create", {"id": "p", "timeoutAt": T + 1000, "tags": {"resonate:target": target}}, time=T)
    assert st == 400, d
    assert d == "Invalid resonate:target address"
    assert rs.rpc("promise.get", {"id": "p"}, time=T)[0] == 404


@pytest.mark.parametrize("target", ["gcps://proj/topic", "https://h/x", "bash://", "http://127.0.0.1:1/x",
                                    "poll://uni@g/w1", "poll://any@g/w1", "poll://any@MixedCase"])
def test_s20_valid_targets(rs, target):
    p = create(rs, "p", tags={"resonate:target": target})
    assert p["tags"]["resonate:target"] == target
    s = snap(rs)
    assert s["tasks"] == [{"id": "p", "state": "pending", "version": 0, "resumes": 0}]
    assert s["messages"] == [execute("p", 0, target)]


def test_s21_get_missing(rs):
    st, d = rs.rpc("promise.get", {"id": "nope"}, time=T)
    assert st == 404 and isinstance(d, str)


def test_s22_get_lazy_timeout(rs):
    create(rs, "p", timeout=T + 10)
    p = get(rs, "p", time=T + 10)
    assert p["state"] == "rejected_timedout"
    assert p["settledAt"] == T + 10
    assert p["value"] == {}
    # persisted, as the snapshot (no lazy timeouts of its own) shows
    assert find(snap(rs)["promises"], "p") == p


def test_s23_get_lazy_timeout_timer(rs):
    create(rs, "p", timeout=T + 10, tags={"resonate:timer": "true"})
    p = get(rs, "p", time=T + 20)
    assert p["state"] == "resolved"
    assert p["settledAt"] == T + 10
    assert p["value"] == {}


def test_s24_settle_resolved(rs):
    create(rs, "p")
    p = settle(rs, "p", "resolved", {"data": "eA=="}, time=T + 5)
    assert p["state"] == "resolved"
    assert p["value"] == {"data": "eA=="}
    assert p["settledAt"] == T + 5
    assert get(rs, "p", time=T + 6) == p


def test_s25_settle_is_final(rs):
    create(rs, "p")
    first = settle(rs, "p", "resolved", {"data": "eA==", "headers": {"h": "1"}}, time=T + 5)
    again = settle(rs, "p", "rejected", {"data": "eQ=="}, time=T + 6)
    assert again == first
    assert again["state"] == "resolved" and again["value"] == {"data": "eA==", "headers": {"h": "1"}}


@pytest.mark.parametrize("state", ["rejected_timedout", "pending", "bogus"])
def test_s26_settle_bad_state(rs, state):
    create(rs, "p")
    st, d = rs.rpc("promise.settle", {"id": "p", "state": state}, time=T)
    assert st == 400 and isinstance(d, str)
    assert get(rs, "p")["state"] == "pending"


def test_s27_settle_missing(rs):
    st, d = rs.rpc("promise.settle", {"id": "nope", "state": "resolved"}, time=T)
    assert st == 404 and isinstance(d, str)


def test_s28_settle_at_deadline_timeout_wins(rs):
    create(rs, "p", timeout=T + 10)
    p = settle(rs, "p", "resolved", {"data": "eA=="}, time=T + 10)
    assert p["state"] == "rejected_timedout"
    assert p["settledAt"] == T + 10
    assert p["value"] == {}


def test_s29_settle_fulfils_task(rs):
    create(rs, "p", tags={"resonate:target": A})
    settle(rs, "p", "resolved", time=T + 1)
    s = snap(rs)
    assert s["tasks"] == [{"id": "p", "state": "fulfilled", "version": 0, "resumes": 0}]
    assert find(s["taskTimeouts"], "p") is None
    assert find(s["promiseTimeouts"], "p") is None


def test_s30_settle_unblocks_listener(rs):
    create(rs, "p")
    addr = "poll://uni@g/w1"
    ok(rs, "promise.register_listener", {"awaited": "p", "address": addr})
    assert snap(rs)["listeners"] == [{"id": "p", "address": addr}]
    p = settle(rs, "p", "resolved", {"data": "eA=="}, time=T + 1)
    s = snap(rs)
    assert s["listeners"] == []
    assert s["messages"] == [unblock(p, addr)]
    assert s["messages"][0]["message"]["data"]["promise"]["state"] == "resolved"


def test_s31_register_listener_twice(rs):
    create(rs, "p")
    addr = "poll://uni@g/w1"
    for _ in range(2):
        d = ok(rs, "promise.register_listener", {"awaited": "p", "address": addr})
        assert d["promise"]["state"] == "pending"
    assert snap(rs)["listeners"] == [{"id": "p", "address": addr}]
    p = settle(rs, "p", time=T + 1)
    assert snap(rs)["messages"] == [unblock(p, addr)]


def test_s32_register_listener_on_settled(rs):
    create(rs, "p")
    p = settle(rs, "p", time=T + 1)
    d = ok(rs, "promise.register_listener", {"awaited": "p", "address": "poll://uni@g/w1"}, time=T + 2)
    assert d["promise"] == p
    s = snap(rs)
    assert s["listeners"] == []
    assert s["messages"] == []


def test_s33_register_listener_errors(rs):
    st, d = rs.rpc("promise.register_listener", {"awaited": "p", "address": "nope"}, time=T)
    assert st == 400 and isinstance(d, str)
    st, d = rs.rpc("promise.register_listener", {"awaited": "p", "address": "poll://uni@g/w1"}, time=T)
    assert st == 404 and isinstance(d, str)
    create(rs, "p")
    st, d = rs.rpc("promise.register_listener", {"awaited": "p", "address": "nope"}, time=T)
    assert st == 400 and isinstance(d, str)
    assert snap(rs)["listeners"] == []


def test_s34_register_callback(rs):
    a = create(rs, "a")
    create(rs, "t", tags={"resonate:target": A})
    d = ok(rs, "promise.register_callback", {"awaited": "a", "awaiter": "t"})
    assert d["promise"] == a
    assert snap(rs)["callbacks"] == [{"awaiter": "t", "awaited": "a"}]
    # idempotent
    ok(rs, "promise.register_callback", {"awaited": "a", "awaiter": "t"})
    assert snap(rs)["callbacks"] == [{"awaiter": "t", "awaited": "a"}]


def test_s35_register_callback_errors(rs):
    create(rs, "a")
    create(rs, "t", tags={"resonate:target": A})
    create(rs, "bare")
    st, d = rs.rpc("promise.register_callback", {"awaited": "t", "awaiter": "t"}, time=T)
    assert st == 400 and isinstance(d, str)
    st, d = rs.rpc("promise.register_callback", {"awaited": "missing", "awaiter": "t"}, time=T)
    assert st == 404 and isinstance(d, str)
    st, d = rs.rpc("promise.register_callback", {"awaited": "a", "awaiter": "missing"}, time=T)
    assert st == 422 and isinstance(d, str)
    st, d = rs.rpc("promise.register_callback", {"awaited": "a", "awaiter": "bare"}, time=T)
    assert st == 422 and isinstance(d, str)
    assert snap(rs)["callbacks"] == []


def test_s36_register_callback_on_settled_resumes_suspended(rs):
    task_create(rs, "t")                      # t acquired v1 (no message)
    create(rs, "b")
    assert suspend(rs, "t", 1, ["b"])[0] == 200
    create(rs, "a")
    settle(rs, "a", time=T + 1)
    d = ok(rs, "promise.register_callback", {"awaited": "a", "awaiter": "t"}, time=T + 9)
    assert d["promise"]["state"] == "resolved"
    s = snap(rs)
    assert find(s["tasks"], "t") == {"id": "t", "state": "pending", "version": 1, "resumes": 1}
    assert find(s["taskTimeouts"], "t") == {"id": "t", "type": 0, "timeout": T + 9 + R}
    assert messages_for(s, "t") == [execute("t", 1)]


def test_s37_search_by_tags_paginates(rs):
    for i in range(1, 6):
        create(rs, f"s{i}", tags={"k": "v"} if i in (1, 3, 5) else {"k": "w"})
    d = ok(rs, "promise.search", {"tags": {"k": "v"}, "limit": 2})
    assert [p["id"] for p in d["promises"]] == ["s1", "s3"]
    assert isinstance(d.get("cursor"), str)
    d2 = ok(rs, "promise.search", {"tags": {"k": "v"}, "limit": 2, "cursor": d["cursor"]})
    assert [p["id"] for p in d2["promises"]] == ["s5"]
    assert "cursor" not in d2


@pytest.mark.parametrize("limit", [0, 1001, -1])
def test_s38_search_limit_bounds(rs, limit):
    st, d = rs.rpc("promise.search", {"limit": limit}, time=T)
    assert st == 400 and isinstance(d, str)


def test_s38_search_default_limit_100(rs):
    for i in range(105):
        create(rs, f"p{i:03d}")
    d = ok(rs, "promise.search", {})
    assert len(d["promises"]) == 100
    assert [p["id"] for p in d["promises"]] == [f"p{i:03d}" for i in range(100)]
    assert isinstance(d.get("cursor"), str)
    d2 = ok(rs, "promise.search", {"cursor": d["cursor"]})
    assert [p["id"] for p in d2["promises"]] == [f"p{i:03d}" for i in range(100, 105)]
    assert "cursor" not in d2
    d3 = ok(rs, "promise.search", {"limit": 1000})
    assert len(d3["promises"]) == 105 and "cursor" not in d3


def test_s39_search_shows_stored_state(rs):
    create(rs, "p", timeout=T + 10)
    d = ok(rs, "promise.search", {"state": "pending"}, time=T + 100)
    assert [p["id"] for p in d["promises"]] == ["p"]
    assert d["promises"][0]["state"] == "pending"
