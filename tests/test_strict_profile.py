"""The strict profile (docs/protocol.md, profiles) against the compat default.

Every rule is shown twice: the strict server answers 400 with the spec's message as a JSON
string, and the compat server (the session `server` fixture) accepts the very same request.
The strict server runs on the same storage adapter as the compat server it is compared with.
"""
from __future__ import annotations

import time

import pytest

from tests.support.server import ServerProc, start_server

T0 = 1_000_000  # logical "now" of every debug-session request
FAR = 2**53
TARGET = "poll://any@strict"
SUNDAY = 1795305600000  # 2026-11-22T00:00:00Z, a Sunday
HOUR = 3_600_000
DAY = 24 * HOUR


@pytest.fixture(scope="module")
def strict_srv(server: ServerProc, tmp_path_factory) -> ServerProc:
    """A strict, debug-enabled server on the same backend as the compat `server` (memory, sqlite)."""
    srv = start_server(server.backend, tmp_path_factory.mktemp(f"strict-{server.backend}"), debug=True,
                       args=["--profile", "strict"])
    yield srv
    srv.stop()


@pytest.fixture
def pair(strict_srv: ServerProc, server: ServerProc) -> tuple[ServerProc, ServerProc]:
    """(strict, compat), both inside a fresh debug session."""
    for srv in (strict_srv, server):
        assert srv.rpc("debug.start", {})[0] == 200
        assert srv.rpc("debug.reset", {})[0] == 200
    return strict_srv, server


def each(pair, kind: str, data, time: int = T0) -> list[tuple[int, object]]:
    return [srv.rpc(kind, data, time=time) for srv in pair]


def strict_rejects(pair, kind: str, data, message: str, time: int = T0) -> tuple[int, object]:
    """Strict → 400 with exactly `message`; compat → 200. Returns compat's (status, data)."""
    (s_status, s_data), (c_status, c_data) = each(pair, kind, data, time)
    assert (s_status, s_data) == (400, message)
    assert c_status == 200, c_data
    return c_status, c_data


def ok(srv: ServerProc, kind: str, data, time: int = T0):
    status, body = srv.rpc(kind, data, time=time)
    assert status == 200, body
    return body


def snap(srv: ServerProc) -> dict:
    return ok(srv, "debug.snap", {})


def leases(srv: ServerProc) -> dict[str, int]:
    return {t["id"]: t["timeout"] for t in snap(srv)["taskTimeouts"] if t["type"] == 1}


def acquire_new(srv: ServerProc, id: str, pid: str = "w", ttl: int = 1000, time: int = T0) -> None:
    """Create promise `id` with its task acquired by `pid` (task.create), tags without lineage."""
    action = {"kind": "promise.create", "head": {},
              "data": {"id": id, "timeoutAt": FAR, "tags": {"resonate:target": TARGET}}}
    body = ok(srv, "task.create", {"pid": pid, "ttl": ttl, "action": action}, time)
    assert body["task"]["state"] == "acquired" and body["task"]["version"] == 1


# ---- promise.create payload rules, on all three carriers ----------------------------

def create_request(srv: ServerProc, carrier: str, id: str, tags: dict[str, str]) -> tuple[str, dict]:
    """The (kind, data) that creates promise `id` with `tags` (plus a target) via `carrier`."""
    payload = {"id": id, "timeoutAt": FAR, "param": {}, "tags": {"resonate:target": TARGET, **tags}}
    if carrier == "promise.create":
        return carrier, payload
    action = {"kind": "promise.create", "head": {}, "data": payload}
    if carrier == "task.create":
        return carrier, {"pid": "w", "ttl": 60000, "action": action}
    acquire_new(srv, "fencer", ttl=60000)  # no lineage tags: accepted by both profiles
    return carrier, {"id": "fencer", "version": 1, "action": action}


def created_id(kind: str, data: dict) -> str:
    return data["action"]["data"]["promise"]["id"] if kind == "task.fence" else data["promise"]["id"]


CARRIERS = ["promise.create", "task.create", "task.fence"]
ORIGIN_MSG = "Promise ID must be prefixed by resonate:origin"

REJECTED = {
    "origin-with-dot": ("root.0.d1f", {"resonate:origin": "root.0.d1f"}, "resonate:origin must not contain '.'"),
    "ts-scheduled-origin": ("nightly.1700000000000", {"resonate:origin": "nightly.1700000000000"},
                            "resonate:origin must not contain '.'"),
    "python-sdk-grandchild": ("root:1.2", {"resonate:origin": "root"}, ORIGIN_MSG),
    "python-sdk-child": ("root:1", {"resonate:origin": "root"}, ORIGIN_MSG),
    "origin-prefix-without-dot": ("rootx.1", {"resonate:origin": "root"}, ORIGIN_MSG),
    "origin-unrelated": ("other.1", {"resonate:origin": "root"}, ORIGIN_MSG),
    "branch": ("root.1.2", {"resonate:origin": "root", "resonate:branch": "root.2"},
               "Promise ID must be prefixed by resonate:branch"),
    "branch-prefix-without-dot": ("root.12", {"resonate:origin": "root", "resonate:branch": "root.1"},
                                  "Promise ID must be prefixed by resonate:branch"),
    "parent": ("root.1.2", {"resonate:origin": "root", "resonate:parent": "root.3"},
               "Promise ID must be prefixed by resonate:parent"),
    "parent-without-origin": ("a.b", {"resonate:parent": "a.c"}, "Promise ID must be prefixed by resonate:parent"),
    "prefix-with-dot": ("root", {"resonate:origin": "root", "resonate:prefix": "root.x"},
                        "resonate:prefix must not contain '.'"),
}

ACCEPTED = {
    "root": ("root", {"resonate:origin": "root", "resonate:branch": "root", "resonate:parent": "root",
                      "resonate:prefix": "root"}),
    "child": ("root.1", {"resonate:origin": "root", "resonate:branch": "root.1", "resonate:parent": "root"}),
    "local-step": ("root.1.2", {"resonate:origin": "root", "resonate:branch": "root.1", "resonate:parent": "root.1"}),
    "no-lineage-tags": ("anything:goes.here", {}),
    "detached-ts-root": ("d1f", {"resonate:origin": "d1f", "resonate:prefix": "root"}),
}


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("case", list(REJECTED))
def test_strict_rejects_create_payload(pair, carrier, case):
    id, tags, message = REJECTED[case]
    strict, compat = pair
    kind, data = create_request(strict, carrier, id, tags)
    create_request(compat, carrier, id, tags)
    _, body = strict_rejects(pair, kind, data, message)
    assert created_id(kind, body) == id
    assert id not in {p["id"] for p in snap(strict)["promises"]}
    assert id in {p["id"] for p in snap(compat)["promises"]}


@pytest.mark.parametrize("carrier", CARRIERS)
@pytest.mark.parametrize("case", list(ACCEPTED))
def test_strict_accepts_well_formed_ids(pair, carrier, case):
    id, tags = ACCEPTED[case]
    for srv in pair:
        kind, data = create_request(srv, carrier, id, tags)
        body = ok(srv, kind, data)
        assert created_id(kind, body) == id


def test_strict_checks_lineage_even_when_the_promise_exists(pair):
    """Validation precedes the idempotent lookup: an existing id does not bypass the strict rules"""
    strict, _ = pair
    ok(strict, "promise.create", {"id": "root:1", "timeoutAt": FAR})
    strict_rejects(pair, "promise.create", {"id": "root:1", "timeoutAt": FAR, "tags": {"resonate:origin": "root"}},
                   ORIGIN_MSG)


# ---- same-origin rules -----------------------------------------------------------

def test_register_callback_across_origins(pair):
    for srv in pair:
        ok(srv, "promise.create", {"id": "a", "timeoutAt": FAR, "tags": {"resonate:target": TARGET}})
        ok(srv, "promise.create", {"id": "b", "timeoutAt": FAR})
        ok(srv, "promise.create", {"id": "a.1", "timeoutAt": FAR})
    strict_rejects(pair, "promise.register_callback", {"awaited": "b", "awaiter": "a"},
                   "Awaiter and awaited must belong to the same origin")
    strict, compat = pair
    assert ok(strict, "promise.register_callback", {"awaited": "a.1", "awaiter": "a"})["promise"]["id"] == "a.1"
    assert snap(strict)["callbacks"] == [{"awaiter": "a", "awaited": "a.1"}]
    assert {(c["awaiter"], c["awaited"]) for c in snap(compat)["callbacks"]} == {("a", "b")}


def test_task_suspend_on_promise_of_another_origin(pair):
    for srv in pair:
        acquire_new(srv, "a", ttl=60000)
        ok(srv, "promise.create", {"id": "b", "timeoutAt": FAR})
        ok(srv, "promise.create", {"id": "a.1", "timeoutAt": FAR})
    act = lambda w: {"kind": "promise.register_callback", "head": {}, "data": {"awaited": w, "awaiter": "a"}}
    strict_rejects(pair, "task.suspend", {"id": "a", "version": 1, "actions": [act("a.1"), act("b")]},
                   "Awaited promise must belong to the same origin as the task")
    strict, compat = pair
    assert ok(strict, "task.get", {"id": "a"})["task"]["state"] == "acquired"
    assert ok(compat, "task.get", {"id": "a"})["task"]["state"] == "suspended"
    ok(strict, "task.suspend", {"id": "a", "version": 1, "actions": [act("a.1")]})
    assert ok(strict, "task.get", {"id": "a"})["task"]["state"] == "suspended"


def test_heartbeat_with_empty_tasks(pair):
    strict, compat = pair
    for srv in pair:
        acquire_new(srv, "a", pid="w", ttl=1000)
        acquire_new(srv, "b", pid="w", ttl=2000)
        acquire_new(srv, "c", pid="other", ttl=1000)
        assert leases(srv) == {"a": T0 + 1000, "b": T0 + 2000, "c": T0 + 1000}
    later = T0 + 500
    strict_rejects(pair, "task.heartbeat", {"pid": "w", "tasks": []}, "Tasks array must not be empty", time=later)
    assert leases(strict) == {"a": T0 + 1000, "b": T0 + 2000, "c": T0 + 1000}
    # compat (C6): every lease held by the pid is renewed with its own ttl, others untouched
    assert leases(compat) == {"a": later + 1000, "b": later + 2000, "c": T0 + 1000}


def test_heartbeat_across_origins(pair):
    strict, compat = pair
    for srv in pair:
        for id in ("a", "a.1", "b"):
            acquire_new(srv, id, pid="w", ttl=1000)
    later = T0 + 500
    tasks = [{"id": "a", "version": 1}, {"id": "b", "version": 1}]
    strict_rejects(pair, "task.heartbeat", {"pid": "w", "tasks": tasks}, "All tasks must belong to the same origin",
                   time=later)
    assert leases(strict) == {"a": T0 + 1000, "a.1": T0 + 1000, "b": T0 + 1000}
    assert leases(compat) == {"a": later + 1000, "a.1": T0 + 1000, "b": later + 1000}
    same = [{"id": "a", "version": 1}, {"id": "a.1", "version": 1}]
    assert ok(strict, "task.heartbeat", {"pid": "w", "tasks": same}, time=later) == {}
    assert leases(strict) == {"a": later + 1000, "a.1": later + 1000, "b": T0 + 1000}


# ---- schedules (C7, C10) -------------------------------------------------------------------

def schedule(id: str, cron: str) -> dict:
    return {"id": id, "cron": cron, "promiseId": "{{.id}}-{{.timestamp}}", "promiseTimeout": 60000,
            "promiseTags": {"resonate:target": TARGET}}


def test_schedule_id_with_dot(pair):
    _, body = strict_rejects(pair, "schedule.create", schedule("nightly.job", "0 0 * * *"),
                             "Schedule ID must not contain '.'")
    assert body["schedule"]["id"] == "nightly.job"
    strict, _ = pair
    assert ok(strict, "schedule.create", schedule("nightly", "0 0 * * *"))["schedule"]["id"] == "nightly"
    assert strict.rpc("schedule.get", {"id": "nightly.job"}, time=T0)[0] == 404


# cron -> (strict nextRunAt, compat nextRunAt) from Sunday 00:00 UTC
DOW = {
    "0 9 * * 1": (SUNDAY + 9 * HOUR, DAY + 9 * HOUR + SUNDAY),  # strict 1 = Sunday; compat 1 = Monday
    "0 9 * * 2": (SUNDAY + DAY + 9 * HOUR, SUNDAY + 2 * DAY + 9 * HOUR),  # Monday / Tuesday
    "0 9 * * 7": (SUNDAY + 6 * DAY + 9 * HOUR, SUNDAY + 9 * HOUR),  # Saturday / Sunday
    "0 9 * * SUN": (SUNDAY + 9 * HOUR, SUNDAY + 9 * HOUR),  # names agree
    "0 9 * * mon": (SUNDAY + DAY + 9 * HOUR, SUNDAY + DAY + 9 * HOUR),
}


@pytest.mark.parametrize("expr", list(DOW))
def test_cron_day_of_week_numbering(pair, expr):
    strict, compat = pair
    want_strict, want_compat = DOW[expr]
    for srv, want in ((strict, want_strict), (compat, want_compat)):
        s = ok(srv, "schedule.create", schedule("s", expr), time=SUNDAY)["schedule"]
        assert (s["createdAt"], s["nextRunAt"]) == (SUNDAY, want), srv
        assert "lastRunAt" not in s


def test_cron_day_zero_is_invalid_in_strict(pair):
    _, body = strict_rejects(pair, "schedule.create", schedule("s", "0 9 * * 0"), "Invalid cron expression",
                             time=SUNDAY)
    assert body["schedule"]["nextRunAt"] == SUNDAY + 9 * HOUR  # compat: 0 = Sunday
    strict_rejects(pair, "schedule.create", schedule("t", "0 9 * * 0-2"), "Invalid cron expression", time=SUNDAY)


# ---- background promise timeouts (C8 /) -----------------------------------------

def test_strict_background_timeouts_are_target_gated(pair):
    """Outside a debug session strict keeps the reference rule: only promises with a target time out."""
    strict, _ = pair
    ok(strict, "debug.stop", {})
    try:
        deadline = time.time_ns() // 1_000_000 + 300
        for id, tags in (("bare", {}), ("targeted", {"resonate:target": TARGET})):
            st, body = strict.rpc("promise.create", {"id": id, "timeoutAt": deadline, "tags": tags})
            assert st == 200 and body["promise"]["state"] == "pending"
        promise_timeouts = {t["id"] for t in snap(strict)["promiseTimeouts"]}
        assert promise_timeouts == {"targeted"}

        def stored(id: str) -> dict:
            return next(p for p in snap(strict)["promises"] if p["id"] == id)

        end = time.time() + 4
        while stored("targeted")["state"] == "pending" and time.time() < end:
            time.sleep(0.05)
        assert stored("targeted")["state"] == "rejected_timedout"
        assert stored("targeted")["settledAt"] == deadline
        time.sleep(max(0.0, deadline / 1000 + 1.5 - time.time()))
        assert stored("bare")["state"] == "pending"
        # it still times out lazily on the next touch
        st, body = strict.rpc("promise.get", {"id": "bare"})
        assert st == 200 and body["promise"]["state"] == "rejected_timedout"
        assert body["promise"]["settledAt"] == deadline
    finally:
        strict.rpc("debug.start", {})
