"""Schedules."""
from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.conformance.helpers import A, execute, find, get, ok, snap

SCHED = {"id": "s", "cron": "* * * * *", "promiseId": "{{.id}}-{{.timestamp}}", "promiseTimeout": 60_000,
         "promiseParam": {}, "promiseTags": {"resonate:target": A}}


def make(rs, time=0, **over):
    return ok(rs, "schedule.create", {**SCHED, **over}, time=time)["schedule"]


def test_s85_schedule_create(rs):
    s = make(rs, time=0)
    assert s == {"id": "s", "cron": "* * * * *", "promiseId": "{{.id}}-{{.timestamp}}", "promiseTimeout": 60_000,
                 "promiseParam": {}, "promiseTags": {"resonate:target": A}, "createdAt": 0, "nextRunAt": 60_000}
    assert "lastRunAt" not in s
    assert ok(rs, "schedule.get", {"id": "s"}, time=1)["schedule"] == s


def test_s86_schedule_create_idempotent(rs):
    s = make(rs, time=0)
    again = make(rs, time=5000, cron="0 * * * *", promiseTimeout=1)
    assert again == s


@pytest.mark.parametrize("over", [
    {"cron": "nope"},
    {"cron": "* * * *"},          # fewer than 5 fields
    {"cron": "61 * * * *"},
    {"cron": ""},
    {"promiseTags": {}},
    {"promiseTags": {"k": "v"}},
    {"id": ""},
    {"promiseId": ""},
    {"promiseTimeout": -1},
])
def test_s87_schedule_create_invalid(rs, over):
    st, d = rs.rpc("schedule.create", {**SCHED, **over}, time=0)
    assert st == 400 and isinstance(d, str), (over, d)
    assert rs.rpc("schedule.get", {"id": over.get("id", "s") or "s"}, time=0)[0] == 404


def test_s87_invalid_cron_checked_even_if_exists(rs):
    make(rs, time=0)
    st, d = rs.rpc("schedule.create", {**SCHED, "cron": "nope"}, time=0)
    assert st == 400 and isinstance(d, str)


def test_s88_schedule_fires(rs):
    make(rs, time=0)
    assert ok(rs, "debug.tick", {"time": 60_000}, time=60_000) == []
    s = snap(rs)
    p = find(s["promises"], "s-60000")
    assert p is not None, s["promises"]
    assert p["state"] == "pending"
    assert p["createdAt"] == 60_000 and p["timeoutAt"] == 120_000
    assert p["param"] == {} and p["value"] == {}
    assert p["tags"] == {"resonate:target": A, "resonate:schedule": "s", "resonate:origin": "s-60000",
                         "resonate:branch": "s-60000", "resonate:parent": "s-60000", "resonate:prefix": "s-60000"}
    assert find(s["tasks"], "s-60000") == {"id": "s-60000", "state": "pending", "version": 0, "resumes": 0}
    assert s["messages"] == [execute("s-60000", 0)]
    assert find(s["promiseTimeouts"], "s-60000") == {"id": "s-60000", "timeout": 120_000}
    sched = ok(rs, "schedule.get", {"id": "s"}, time=60_000)["schedule"]
    assert sched["lastRunAt"] == 60_000 and sched["nextRunAt"] == 120_000
    assert sched["createdAt"] == 0
    assert get(rs, "s-60000", time=60_001) == p


def test_s88_schedule_param_and_template(rs):
    make(rs, time=0, id="n", promiseId="job.{{.id}}.{{.timestamp}}.{{.id}}", promiseParam={"data": "eA==", "headers": {"h": "v"}})
    ok(rs, "debug.tick", {"time": 60_000}, time=60_000)
    p = get(rs, "job.n.60000.n", time=60_000)
    assert p["param"] == {"data": "eA==", "headers": {"h": "v"}}
    assert p["tags"]["resonate:schedule"] == "n"


def test_s89_tick_twice_fires_once(rs):
    make(rs, time=0)
    ok(rs, "debug.tick", {"time": 60_000}, time=60_000)
    ok(rs, "debug.tick", {"time": 60_000}, time=60_000)
    s = snap(rs)
    assert [p["id"] for p in s["promises"]] == ["s-60000"]
    assert len(s["tasks"]) == 1
    assert s["messages"] == [execute("s-60000", 0)]


def test_s90_catch_up_in_one_pass(rs):
    make(rs, time=0)
    ok(rs, "debug.tick", {"time": 300_000}, time=300_000)
    s = snap(rs)
    instants = [60_000, 120_000, 180_000, 240_000, 300_000]
    ids = [f"s-{n}" for n in instants]
    assert sorted(p["id"] for p in s["promises"]) == sorted(ids)
    for n in instants:
        p = find(s["promises"], f"s-{n}")
        t = find(s["tasks"], f"s-{n}")
        assert p["createdAt"] == n and p["timeoutAt"] == n + 60_000
        if n + 60_000 <= 300_000:
            assert p["state"] == "rejected_timedout" and p["settledAt"] == n + 60_000, p
            assert t == {"id": f"s-{n}", "state": "fulfilled", "version": 0, "resumes": 0}
        else:
            assert p["state"] == "pending", p
            assert t == {"id": f"s-{n}", "state": "pending", "version": 0, "resumes": 0}
    assert s["messages"] == [execute("s-300000", 0)]
    assert s["promiseTimeouts"] == [{"id": "s-300000", "timeout": 360_000}]
    sched = ok(rs, "schedule.get", {"id": "s"}, time=300_000)["schedule"]
    assert sched["lastRunAt"] == 300_000 and sched["nextRunAt"] == 360_000


def test_s91_schedule_delete(rs):
    make(rs, time=0)
    ok(rs, "debug.tick", {"time": 60_000}, time=60_000)
    st, d = rs.rpc("schedule.delete", {"id": "s"}, time=60_001)
    assert st == 200 and d == {}
    st, d = rs.rpc("schedule.delete", {"id": "s"}, time=60_002)
    assert st == 404 and isinstance(d, str)
    st, d = rs.rpc("schedule.get", {"id": "s"}, time=60_002)
    assert st == 404 and isinstance(d, str)
    assert get(rs, "s-60000", time=60_003)["state"] == "pending"
    ok(rs, "debug.tick", {"time": 120_000}, time=120_000)
    assert [p["id"] for p in snap(rs)["promises"]] == ["s-60000"]


def test_s92_schedule_search(rs):
    names = [f"sch{i:02d}" for i in range(12)]
    for n in names:
        tags = {"resonate:target": A}
        if n in ("sch03", "sch07"):
            tags["k"] = "v"
        make(rs, time=0, id=n, promiseTags=tags)
    d = ok(rs, "schedule.search", {}, time=0)
    assert [s["id"] for s in d["schedules"]] == names[:10]
    assert isinstance(d.get("cursor"), str)
    d2 = ok(rs, "schedule.search", {"cursor": d["cursor"]}, time=0)
    assert [s["id"] for s in d2["schedules"]] == names[10:]
    assert "cursor" not in d2
    d3 = ok(rs, "schedule.search", {"tags": {"k": "v"}}, time=0)
    assert [s["id"] for s in d3["schedules"]] == ["sch03", "sch07"]
    assert "cursor" not in d3
    d4 = ok(rs, "schedule.search", {"limit": 2}, time=0)
    assert [s["id"] for s in d4["schedules"]] == names[:2] and isinstance(d4.get("cursor"), str)
    for bad in (0, 1001):
        st, e = rs.rpc("schedule.search", {"limit": bad}, time=0)
        assert st == 400 and isinstance(e, str)


def _ms(*args) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_s93_cron_vixie_day_of_week(rs):
    sunday = _ms(2024, 1, 7, 12, 0)
    assert datetime.fromtimestamp(sunday / 1000, UTC).weekday() == 6
    s = make(rs, time=sunday, cron="0 9 * * 1")
    assert s["nextRunAt"] == _ms(2024, 1, 8, 9, 0)
    s0 = make(rs, time=sunday, id="sun0", cron="0 9 * * 0")
    assert s0["nextRunAt"] == _ms(2024, 1, 14, 9, 0)
    s7 = make(rs, time=sunday, id="sun7", cron="0 9 * * 7")
    assert s7["nextRunAt"] == _ms(2024, 1, 14, 9, 0)
    mon = make(rs, time=sunday, id="mon", cron="0 9 * * MON")
    assert mon["nextRunAt"] == _ms(2024, 1, 8, 9, 0)


def test_s93_cron_six_field_seconds(rs):
    """the 6-field seconds-first form is accepted."""
    s = make(rs, time=1_000, id="sec", cron="30 * * * * *")
    assert s["nextRunAt"] == 30_000
