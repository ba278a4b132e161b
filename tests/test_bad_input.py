"""Property-based robustness of `POST /` over real HTTP (docs/protocol.md).

Random and malformed bodies are sent to the real server (the session `server` fixture, one per
storage adapter). For every response:
  - never a 500 and never a dropped connection;
  - HTTP status == head.status, JSON body, head.version == "2026-04-01";
  - kind / corrId echo rules of docs/protocol.md ("unknown" / "0" when not extractable);
  - error data is a string;
  - a rejected (4xx) request leaves `debug.snap` unchanged.
Type errors that the spec pins down (wrong JSON type for a typed field, integers outside int64,
missing required fields, non-string tag values) must be 400.

All requests that can reach the engine carry `resonate:debug_time` = T, and every seeded deadline
is far beyond T, so no lazy timeout can legitimately change state during a rejected request.
"""
from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from shared.kinds import CONSOLE_KINDS, OPERATOR_KINDS, REST_KINDS
from shared.kinds import RPC_KINDS as REGISTRY
from shared.records import PROMISE_STATES, TASK_STATES
from tests.support.envelope import VERSION, check_reply, envelope
from tests.support.server import ServerProc

T = 4_000_000_000_000  # "now" of every request (beyond the wall clock; see module docstring)
FAR = 2**62
I64_MAX, I64_MIN = 2**63 - 1, -(2**63)
A = "poll://any@g"
MIB = 1024 * 1024
MAX_BODY = 10 * MIB

SETTINGS = settings(max_examples=300, deadline=None, database=None, print_blob=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much])
DATA_SETTINGS = settings(SETTINGS, max_examples=400)

# every kind `POST /` serves, the operators' kinds (`POST /operator`) and the console's views
# (`POST /ui/api`; shared/kinds.py); the REST API's are tested in test_legacy_*
CONSOLE_ONLY = tuple(k for k in CONSOLE_KINDS if k not in REGISTRY and k not in OPERATOR_KINDS)
KINDS = tuple(REGISTRY) + tuple(OPERATOR_KINDS) + CONSOLE_ONLY


def path_of(kind: Any) -> str:
    return "/operator" if kind in OPERATOR_KINDS else "/ui/api" if kind in CONSOLE_ONLY else "/"
ALLOWED_STATUS: dict[str, set[int]] = {
    "promise.get": {200, 400, 404}, "promise.create": {200, 400}, "promise.settle": {200, 400, 404},
    "promise.register_callback": {200, 400, 404, 422}, "promise.register_listener": {200, 400, 404},
    "promise.search": {200, 400}, "task.get": {200, 400, 404}, "task.create": {200, 400, 409, 422},
    "task.acquire": {200, 400, 404, 409}, "task.release": {200, 400, 404, 409},
    "task.fulfill": {200, 400, 404, 409}, "task.suspend": {200, 300, 400, 404, 409, 422},
    "task.fence": {200, 400, 404, 409}, "task.heartbeat": {200, 400}, "task.halt": {200, 400, 404, 409},
    "task.continue": {200, 400, 404, 409}, "task.search": {200, 400}, "schedule.get": {200, 400, 404},
    "schedule.create": {200, 400}, "schedule.delete": {200, 400, 404}, "schedule.search": {200, 400},
    "debug.start": {200}, "debug.stop": {200}, "debug.reset": {200}, "debug.snap": {200},
    "debug.tick": {200, 400}, "outbox.search": {200, 400}, "outbox.redrive": {200, 400},
    "promise.purge": {200, 400},
    "console.promises": {200, 400}, "console.promise": {200, 400, 404}, "console.tasks": {200, 400},
    "console.schedules": {200, 400}, "console.workers": {200},
}
assert set(ALLOWED_STATUS) == set(KINDS), "every kind needs its allowed statuses here"
READ_ONLY = {"promise.get", "promise.search", "task.get", "task.search", "schedule.get", "schedule.search",
             "debug.snap", "outbox.search", *CONSOLE_ONLY}

# ------------------------------------------------------------------------------------ harness


class Fuzz:
    """Talks to the server inside a debug session and keeps a small seeded state."""

    def __init__(self, server: ServerProc) -> None:
        self.srv = server
        self.dirty = True

    def post(self, body: Any, path: str = "/") -> tuple[requests.Response, Any]:
        """One request (a process: on its kept-alive session; whatever was sent before, the
        connection must survive)."""
        try:
            r = self.srv.post(body, raw=True) if path == "/" else self.srv.request(
                "POST", path, data=body, headers={"Content-Type": "application/json"}, timeout=60)
        except requests.RequestException as e:  # a dropped or reset connection
            pytest.fail(f"connection failed for body {body[:300]!r}: {e!r}\nserver log tail:\n{self.srv.logs()[-3000:]}")
        assert r.status_code != 500, (
            f"500 for body {body[:500]!r}:\n{r.text[:1000]}\nserver log tail:\n{self.srv.logs()[-3000:]}")
        assert r.headers.get("Content-Type", "").startswith("application/json"), (r.status_code, r.headers, r.text[:500])
        try:
            env = r.json()
        except ValueError:
            pytest.fail(f"non-JSON response {r.status_code} for body {body[:300]!r}: {r.text[:500]!r}")
        assert isinstance(env, dict) and isinstance(env.get("head"), dict), env
        assert env["head"].get("status") == r.status_code, (r.status_code, env)
        assert env["head"].get("version") == VERSION, env
        assert isinstance(env.get("kind"), str) and isinstance(env["head"].get("corrId"), str), env
        assert "data" in env, env
        if r.status_code >= 400:
            assert isinstance(env["data"], str), env
        big = _out_of_int64(env)
        assert big is None, f"integer outside int64 in the response: {big}\nbody: {body[:300]!r}\n{str(env)[:800]}"
        return r, env

    def rpc(self, kind: str, data: Any) -> tuple[int, Any]:
        req = envelope(kind, data, time=T)
        r, env = self.post(json.dumps(req).encode(), path_of(kind))
        check_reply(env, kind, req["head"]["corrId"], r.status_code)
        return r.status_code, env["data"]

    def ok(self, kind: str, data: Any, want: int = 200) -> Any:
        status, out = self.rpc(kind, data)
        assert status == want, (kind, data, status, out)
        return out

    def snap(self) -> dict[str, Any]:
        return self.ok("debug.snap", {})

    def state(self) -> dict[str, Any]:
        """Everything observable: the snapshot plus the schedules (which debug.snap leaves out)."""
        return {**self.snap(), "schedules": self.ok("schedule.search", {"limit": 1000})["schedules"]}

    def seed(self) -> None:
        """Wipe and seed a little state of every sort: tasks in each state, callback, listener, schedule."""
        self.ok("debug.start", {})
        self.ok("debug.reset", {})
        tg = {"resonate:target": A}
        self.ok("promise.create", {"id": "seed-wf", "timeoutAt": FAR, "tags": {**tg, "resonate:branch": "seed-wf"}})
        self.ok("task.create", {"pid": "w1", "ttl": 60_000, "action": {"kind": "promise.create", "head": {}, "data": {
            "id": "seed-run", "timeoutAt": FAR, "tags": {**tg, "resonate:branch": "seed-wf"}}}})
        self.ok("promise.create", {"id": "seed-a", "timeoutAt": FAR, "tags": {"k": "v"}, "param": {"data": "eA=="}})
        self.ok("promise.create", {"id": "seed-b", "timeoutAt": FAR, "tags": tg})
        self.ok("task.acquire", {"id": "seed-b", "version": 0, "pid": "w2", "ttl": 60_000})
        self.ok("task.suspend", {"id": "seed-b", "version": 1, "actions": [
            {"kind": "promise.register_callback", "head": {}, "data": {"awaited": "seed-a", "awaiter": "seed-b"}}]})
        self.ok("promise.register_listener", {"awaited": "seed-a", "address": "poll://uni@g/c1"})
        self.ok("promise.create", {"id": "seed-done", "timeoutAt": FAR})
        self.ok("promise.settle", {"id": "seed-done", "state": "resolved", "value": {"data": "eQ=="}})
        self.ok("promise.create", {"id": "seed-h", "timeoutAt": FAR, "tags": tg})
        self.ok("task.halt", {"id": "seed-h"})
        self.ok("schedule.create", {"id": "seed-s", "cron": "* * * * *", "promiseId": "{{.id}}-{{.timestamp}}",
                                    "promiseTimeout": 60_000, "promiseTags": tg})
        self.baseline = self._seed_view(self.state())
        self.dirty = False

    @staticmethod
    def _seed_view(state: dict[str, Any]) -> Any:
        """The seeded entities as they stand (accepted requests that leave them alone need no reseed)."""
        seeded = lambda i: i.startswith("seed-")
        return {"promises": [p for p in state["promises"] if seeded(p["id"])],
                "tasks": [t for t in state["tasks"] if seeded(t["id"])],
                "callbacks": state["callbacks"], "listeners": [x for x in state["listeners"] if seeded(x["id"])],
                "taskTimeouts": [x for x in state["taskTimeouts"] if seeded(x["id"])],
                "schedules": [x for x in state["schedules"] if seeded(x["id"])]}

    def ensure_seeded(self) -> None:
        if self.dirty:
            self.seed()

    def check(self, body: bytes, kind: Any = None, expect: int | None = None,
              echo: tuple[str, str] | None = None) -> tuple[int, Any]:
        """Send body; check status, echo, and that a 4xx leaves the snapshot unchanged."""
        before = self.state()
        if self.dirty:  # something was accepted since the last seeding: reseed only if it mattered
            if self._seed_view(before) != self.baseline or len(before["promises"]) > 40:
                self.seed()
                before = self.state()
            self.dirty = False
        r, env = self.post(body, path_of(kind))
        status = r.status_code
        if echo is not None:
            assert (env["kind"], env["head"]["corrId"]) == echo, (echo, env, body[:300])
        if isinstance(kind, str) and kind in ALLOWED_STATUS:
            assert status in ALLOWED_STATUS[kind] | {400}, (kind, status, env, body[:300])
        else:  # unknown kind or nothing extractable: only an envelope error is possible
            assert status == 400, (status, env, body[:300])
        if expect is not None:
            assert status == expect, f"expected {expect}, got {status}: {env}\nbody: {body[:600]!r}"
        if 400 <= status < 500:
            after = self.state()
            assert after == before, f"rejected request ({status}) changed state: {body[:600]!r}\n{env}"
        elif not (isinstance(kind, str) and kind in READ_ONLY):
            self.dirty = True
        return status, env


def _out_of_int64(v: Any, path: str = "$") -> str | None:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):
        return None if I64_MIN <= v <= I64_MAX else f"{path} = {v}"
    if isinstance(v, dict):
        items = v.items()
    elif isinstance(v, list):
        items = enumerate(v)
    else:
        return None
    for k, x in items:
        found = _out_of_int64(x, f"{path}.{k}")
        if found:
            return found
    return None


@pytest.fixture(scope="module")
def fz(server: ServerProc) -> Fuzz:
    f = Fuzz(server)
    f.seed()
    yield f
    f.ok("debug.reset", {})


def dumps(obj: Any) -> bytes:
    return json.dumps(obj).encode()  # ensure_ascii: lone surrogates travel as \udXXX escapes


# ------------------------------------------------------------------------------- strategies

LONE_SURROGATES = ["\ud800", "a\udfffb", "\udbff\udbff"]
weird_text = st.one_of(
    st.text(max_size=30),
    st.sampled_from(["", " ", "\x00", "a\x00b", "\u00e9t\u00e9", "\U0001f600", "\u202e", "%00", "\\", '"',
                     "x" * 10_000, "\U0001f600" * 2_000] + LONE_SURROGATES),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=True, allow_infinity=True),
                         weird_text)
any_json = st.recursive(json_scalars, lambda kids: st.one_of(
    st.lists(kids, max_size=4), st.dictionaries(weird_text, kids, max_size=4)), max_leaves=12)
huge_ints = st.one_of(st.integers(min_value=I64_MAX + 1, max_value=2**200),
                      st.integers(min_value=-(2**200), max_value=I64_MIN - 1),
                      st.sampled_from([I64_MAX + 1, I64_MIN - 1, 10**30]))
boundary_ints = st.one_of(st.sampled_from([0, -1, 1, I64_MAX, I64_MIN, T - 1, T, T + 1, 2**53, 2**53 + 1]),
                          st.integers(min_value=I64_MIN, max_value=I64_MAX))


def _has_surrogate(s: str) -> bool:
    return any("\ud800" <= c <= "\udfff" for c in s)


def is_i64(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and I64_MIN <= v <= I64_MAX


# Wrong values per expected type: every one of these is a type error (400) for that field.
WRONG: dict[str, st.SearchStrategy] = {
    "str": st.one_of(st.booleans(), st.integers(), st.floats(), st.lists(json_scalars, max_size=2),
                     st.dictionaries(st.text(max_size=3), json_scalars, max_size=2)),
    "int": st.one_of(st.booleans(), huge_ints, st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([1.0, 1e3, 1.5, -0.0, "5", "", "1e3"]), st.text(max_size=5),
                     st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2)),
    "obj": st.one_of(st.booleans(), st.integers(), st.floats(), weird_text, st.lists(json_scalars, max_size=2)),
    "list": st.one_of(st.booleans(), st.integers(), st.floats(), weird_text,
                      st.dictionaries(st.text(max_size=3), json_scalars, max_size=2)),
    "map": st.one_of(st.booleans(), st.integers(), st.floats(), weird_text, st.lists(json_scalars, max_size=2),
                     st.dictionaries(st.text(max_size=8), st.one_of(st.none(), st.booleans(), st.integers(),
                                                                    st.floats(), st.lists(st.text(), max_size=2),
                                                                    st.dictionaries(st.text(max_size=2), st.text(),
                                                                                    max_size=1)),
                                     min_size=1, max_size=3)),
}
WRONG["bool"] = st.one_of(st.integers(), st.floats(), weird_text, st.lists(json_scalars, max_size=2),
                          st.dictionaries(st.text(max_size=3), json_scalars, max_size=2))
WRONG["value"] = st.one_of(
    WRONG["obj"],
    st.fixed_dictionaries({"headers": WRONG["map"]}),
    st.fixed_dictionaries({"data": WRONG["str"]}),
    st.fixed_dictionaries({"headers": st.dictionaries(st.text(max_size=3), st.text(max_size=3), max_size=2),
                           "data": WRONG["str"]}),
)

# (path, type, required). Paths index into the data object; ints index lists.
CREATE_FIELDS = [(("id",), "str", True), (("timeoutAt",), "int", True), (("param",), "value", False),
                 (("tags",), "map", False)]
SETTLE_FIELDS = [(("id",), "str", True), (("state",), "enum:resolved,rejected,rejected_canceled", True),
                 (("value",), "value", False)]
SCHEMA: dict[str, list[tuple[tuple, str, bool]]] = {
    "promise.get": [(("id",), "str", True)],
    "promise.create": CREATE_FIELDS,
    "promise.settle": SETTLE_FIELDS,
    "promise.register_callback": [(("awaited",), "str", True), (("awaiter",), "str", True)],
    "promise.register_listener": [(("awaited",), "str", True), (("address",), "str", True)],
    "promise.search": [(("state",), "enum:pending,resolved,rejected,rejected_canceled,rejected_timedout", False),
                       (("tags",), "map", False), (("limit",), "int", False), (("cursor",), "str", False)],
    "task.get": [(("id",), "str", True)],
    "task.create": [(("pid",), "str", True), (("ttl",), "int", True), (("action",), "obj", True),
                    (("action", "kind"), "str", True), (("action", "head"), "any", True),
                    (("action", "data"), "obj", True)]
                   + [(("action", "data") + p, t, r) for p, t, r in CREATE_FIELDS],
    "task.acquire": [(("id",), "str", True), (("version",), "int", True), (("pid",), "str", True),
                     (("ttl",), "int", True)],
    "task.release": [(("id",), "str", True), (("version",), "int", True)],
    "task.fulfill": [(("id",), "str", True), (("version",), "int", True), (("action",), "obj", True),
                     (("action", "kind"), "str", True), (("action", "head"), "any", True),
                     (("action", "data"), "obj", True)]
                    + [(("action", "data") + p, t, r) for p, t, r in SETTLE_FIELDS],
    "task.suspend": [(("id",), "str", True), (("version",), "int", True), (("actions",), "list", True),
                     (("actions", 0), "obj", True), (("actions", 0, "kind"), "str", True),
                     (("actions", 0, "head"), "any", True),
                     (("actions", 0, "data"), "obj", True), (("actions", 0, "data", "awaited"), "str", True),
                     (("actions", 0, "data", "awaiter"), "str", True)],
    "task.fence": [(("id",), "str", True), (("version",), "int", True), (("action",), "obj", True),
                   (("action", "kind"), "str", True), (("action", "data"), "obj", True)],
    "task.heartbeat": [(("pid",), "str", True), (("tasks",), "list", True), (("tasks", 0), "obj", True),
                       (("tasks", 0, "id"), "str", True), (("tasks", 0, "version"), "int", True)],
    "task.halt": [(("id",), "str", True)],
    "task.continue": [(("id",), "str", True)],
    "task.search": [(("state",), "enum:pending,acquired,suspended,halted,fulfilled", False),
                    (("limit",), "int", False), (("cursor",), "str", False)],
    "schedule.get": [(("id",), "str", True)],
    "outbox.search": [(("dead",), "bool", False), (("limit",), "int", False), (("cursor",), "str", False)],
    "outbox.redrive": [(("ids",), "list", False), (("ids", 0), "int", True), (("all",), "bool", False)],
    "schedule.create": [(("id",), "str", True), (("cron",), "str", True), (("promiseId",), "str", True),
                        (("promiseTimeout",), "int", True), (("promiseParam",), "value", False),
                        (("promiseTags",), "map", False)],
    "schedule.delete": [(("id",), "str", True)],
    "schedule.search": [(("tags",), "map", False), (("limit",), "int", False), (("cursor",), "str", False)],
    "debug.tick": [(("time",), "int", True)],
    "promise.purge": [(("olderThan",), "int", True), (("dryRun",), "bool", False)],
    "console.promises": [(("prefix",), "str", False), (("state",), "enum:" + ",".join((*PROMISE_STATES, "settled")),
                                                                      False),
                         (("tags",), "map", False), (("createdAfter",), "int", False),
                         (("createdBefore",), "int", False), (("limit",), "int", False), (("cursor",), "str", False)],
    "console.promise": [(("id",), "str", True)],
    "console.tasks": [(("prefix",), "str", False), (("state",), "enum:" + ",".join(TASK_STATES), False),
                      (("limit",), "int", False), (("cursor",), "str", False)],
    "console.schedules": [(("prefix",), "str", False), (("limit",), "int", False), (("cursor",), "str", False)],
}
FENCE_CREATE = [(("action", "data") + p, t, r) for p, t, r in CREATE_FIELDS]
FENCE_SETTLE = [(("action", "data") + p, t, r) for p, t, r in SETTLE_FIELDS]
CRON_SAMPLES = ["* * * * *", "*/5 * * * * *", "0 0 29 2 *", "0 0 31 2 *", "*/0 * * * *", "60 * * * *", "1-0 * * * *",
                "0 0 * * 7", "0 0 * * 8", "* * * * MON-SUN", "@daily", "* * * * * * *", "* * * *", "0 0 L * *",
                "*/99999999999999999999 * * * *", "\t* * * * *\n", "* * * * \u0661", "0 0 1 1 * 2099", "H * * * *"]


def templates(kind: str) -> list[dict[str, Any]]:
    """Valid data objects for kind, aimed at the seeded state (right and wrong versions)."""
    tg = {"resonate:target": A}
    cr = {"kind": "promise.create", "head": {}, "data": {"id": "fz-new", "timeoutAt": FAR, "tags": tg}}
    return {
        "promise.get": [{"id": "seed-a"}, {"id": "missing"}],
        "promise.create": [{"id": "fz-p", "timeoutAt": FAR, "param": {"headers": {"h": "v"}, "data": "eA=="},
                            "tags": {"k": "v"}},
                           {"id": "fz-q", "timeoutAt": FAR, "tags": {**tg, "resonate:delay": str(T + 5)}}],
        "promise.settle": [{"id": "seed-a", "state": "resolved", "value": {"data": "eA=="}},
                           {"id": "missing", "state": "rejected"}],
        "promise.register_callback": [{"awaited": "seed-a", "awaiter": "seed-wf"},
                                      {"awaited": "missing", "awaiter": "seed-wf"},
                                      {"awaited": "seed-a", "awaiter": "seed-done"}],
        "promise.register_listener": [{"awaited": "seed-a", "address": "poll://uni@g/c2"},
                                      {"awaited": "missing", "address": "poll://uni@g/c2"}],
        "promise.search": [{"state": "pending", "tags": {"k": "v"}, "limit": 2, "cursor": "seed-a"}],
        "task.get": [{"id": "seed-run"}, {"id": "missing"}],
        "task.create": [{"pid": "w3", "ttl": 1000, "action": cr},
                        {"pid": "w3", "ttl": 1000, "action": {**cr, "data": {**cr["data"], "id": "seed-run"}}},
                        {"pid": "w3", "ttl": 1000, "action": {**cr, "data": {**cr["data"], "id": "seed-a"}}}],
        "task.acquire": [{"id": "seed-wf", "version": 0, "pid": "w3", "ttl": 1000},
                         {"id": "seed-wf", "version": 7, "pid": "w3", "ttl": 1000},
                         {"id": "seed-run", "version": 1, "pid": "w3", "ttl": 1000}],
        "task.release": [{"id": "seed-run", "version": 1}, {"id": "seed-run", "version": 0},
                         {"id": "seed-b", "version": 1}],
        "task.fulfill": [{"id": "seed-run", "version": 1, "action": {"kind": "promise.settle", "head": {},
                                                                     "data": {"id": "seed-run", "state": "resolved"}}},
                         {"id": "seed-run", "version": 2, "action": {"kind": "promise.settle", "head": {},
                                                                     "data": {"id": "seed-run", "state": "rejected"}}}],
        "task.suspend": [{"id": "seed-run", "version": 1, "actions": [
                             {"kind": "promise.register_callback", "head": {},
                              "data": {"awaited": "seed-a", "awaiter": "seed-run"}}]},
                         {"id": "seed-run", "version": 3, "actions": [
                             {"kind": "promise.register_callback", "head": {},
                              "data": {"awaited": "seed-done", "awaiter": "seed-run"}}]}],
        "task.fence": [{"id": "seed-run", "version": 1, "action": {
                            "kind": "promise.create", "head": {},
                            "data": {"id": "fz-child", "timeoutAt": FAR, "tags": {"resonate:branch": "seed-wf"}}}},
                       {"id": "seed-run", "version": 1, "action": {
                            "kind": "promise.settle", "data": {"id": "seed-a", "state": "resolved"}}},
                       {"id": "seed-run", "version": 9, "action": {
                            "kind": "promise.settle", "head": {}, "data": {"id": "seed-a", "state": "resolved"}}}],
        "task.heartbeat": [{"pid": "w1", "tasks": [{"id": "seed-run", "version": 1}]}, {"pid": "w1", "tasks": []}],
        "task.halt": [{"id": "seed-wf"}, {"id": "seed-done"}, {"id": "missing"}],
        "task.continue": [{"id": "seed-h"}, {"id": "seed-wf"}],
        "task.search": [{"state": "acquired", "limit": 1, "cursor": ""}],
        "schedule.get": [{"id": "seed-s"}, {"id": "missing"}],
        "schedule.create": [{"id": "fz-s", "cron": "*/5 * * * * *", "promiseId": "{{.id}}.{{.timestamp}}",
                             "promiseTimeout": 1000, "promiseParam": {"data": "eA=="}, "promiseTags": tg}],
        "schedule.delete": [{"id": "seed-s"}, {"id": "missing"}],
        "schedule.search": [{"tags": {"resonate:target": A}, "limit": 1, "cursor": ""}],
        "debug.start": [{}],
        "debug.snap": [{}],
        "outbox.search": [{"dead": True, "limit": 1, "cursor": "0"}, {}],
        "outbox.redrive": [{"ids": [1, 2]}, {"all": True}],
        "debug.tick": [{"time": T}],
        "promise.purge": [{"olderThan": 0, "dryRun": True}, {"olderThan": 3_600_000}],
        "console.promises": [{"prefix": "seed", "state": "settled", "tags": {"k": "v"}, "createdAfter": 0,
                              "createdBefore": FAR, "limit": 2}, {}],
        "console.promise": [{"id": "seed-wf"}, {"id": "missing"}],
        "console.tasks": [{"prefix": "seed", "state": "acquired", "limit": 1, "cursor": "a"}, {}],
        "console.schedules": [{"prefix": "s", "limit": 5}, {}],
        "console.workers": [{}],
    }[kind]


FUZZ_KINDS = sorted(k for k in KINDS if k not in ("debug.stop", "debug.reset"))  # these would end the session


def get_path(d: Any, path: tuple) -> Any:
    for p in path:
        d = d[p]
    return d


def _exists(d: Any, path: tuple) -> bool:
    try:
        get_path(d, path)
        return True
    except (KeyError, IndexError, TypeError):
        return False


def set_path(d: Any, path: tuple, v: Any) -> None:
    get_path(d, path[:-1])[path[-1]] = v


def del_path(d: Any, path: tuple) -> None:
    parent = get_path(d, path[:-1])
    if isinstance(parent, list):
        parent.pop(path[-1])
    else:
        parent.pop(path[-1], None)


def wrong_for(ty: str) -> st.SearchStrategy:
    if ty.startswith("enum:"):
        members = ty[5:].split(",")
        return st.one_of(WRONG["str"], st.text(max_size=20).filter(lambda s: s not in members),
                         st.sampled_from([m.upper() for m in members] + ["pending " + members[0]]))
    return WRONG[ty]


def valid_for(ty: str) -> st.SearchStrategy:
    """Values of the right type that probe edges (empty/long/unicode ids, boundary ints, odd tags)."""
    if ty == "str":
        return weird_text
    if ty == "int":
        return boundary_ints
    if ty.startswith("enum:"):
        return st.sampled_from(ty[5:].split(","))
    if ty == "bool":
        return st.booleans()
    if ty == "map":
        return st.one_of(
            st.dictionaries(weird_text, weird_text, max_size=3),
            st.fixed_dictionaries({"resonate:target": st.sampled_from(
                [A, "poll://uni@g", "poll://any@", "poll://x@g", "http://", "https://h/x", "gcps://p/t", "gcps://p",
                 "bash://", "ftp://h", "nope", "", "poll://any@g h", "poll://any@G/\U0001f600"])}),
            st.fixed_dictionaries({"resonate:target": st.just(A), "resonate:delay": st.sampled_from(
                ["", "0", "-1", "+5", " 5", "5.0", "1e3", "\u0663", str(T - 1), str(T), str(T + 1), str(FAR),
                 str(I64_MAX), str(I64_MAX + 1), "9" * 30, "1" * 5000])}),
            st.fixed_dictionaries({"resonate:timer": st.sampled_from(["true", "True", ""])}),
        )
    if ty == "value":
        return st.fixed_dictionaries({}, optional={"headers": st.dictionaries(weird_text, weird_text, max_size=2),
                                                   "data": weird_text})
    return any_json


@st.composite
def mutated(draw: Any) -> tuple[str, dict[str, Any], str, int | None]:
    """(kind, data, mutation, expected status or None)."""
    kind = draw(st.sampled_from(FUZZ_KINDS))
    data = json.loads(json.dumps(draw(st.sampled_from(templates(kind)))))
    fields = list(SCHEMA.get(kind, []))
    if kind == "task.fence":
        fields += FENCE_CREATE if data["action"]["kind"] == "promise.create" else FENCE_SETTLE
    how = draw(st.sampled_from(["wrong_type", "drop", "null", "valid_edge", "chaos", "extra"]))
    if not fields and how != "extra":
        how = "chaos"
    expect: int | None = None
    fields = [f for f in fields if _exists(data, f[0])]
    if how == "drop":  # removing a list element is not a missing field
        fields = [f for f in fields if not isinstance(f[0][-1], int)]
    elif how != "null":  # `head` of an action may be any JSON value, null included; it only has to be there
        fields = [f for f in fields if f[1] != "any"]
    if not fields and how in ("wrong_type", "drop", "null", "valid_edge"):
        how = "chaos"
    if how in ("wrong_type", "drop", "null", "valid_edge"):
        path, ty, required = draw(st.sampled_from(fields))
        if how == "wrong_type":
            set_path(data, path, draw(wrong_for(ty)))
            expect = 400
        elif how == "drop":
            del_path(data, path)
            expect = 400 if required else None
        elif how == "null":
            set_path(data, path, None)
            expect = 400 if required and ty != "any" else None
        elif path == ("cron",):
            set_path(data, path, draw(st.one_of(st.sampled_from(CRON_SAMPLES), weird_text)))
        else:
            set_path(data, path, draw(valid_for(ty)))
        return kind, data, f"{how} {'.'.join(map(str, path))}", expect
    if how == "extra":
        data[draw(weird_text)] = draw(any_json)
        if isinstance(data.get("action"), dict):
            data["action"][draw(st.text(max_size=5))] = draw(any_json)
        return kind, data, how, None
    # chaos: replace a random top-level field (or the whole data) with arbitrary JSON
    keys = list(data)
    if keys and draw(st.booleans()):
        data[draw(st.sampled_from(keys))] = draw(any_json)
    else:
        data = draw(st.dictionaries(weird_text, any_json, max_size=4))
    return kind, data, how, None


def body_for(kind: Any, data: Any, corr: Any = "c", now: int = T) -> bytes:
    return dumps(envelope(kind, data, corr=corr, time=now))


# ------------------------------------------------------------------------------- properties


@DATA_SETTINGS
@given(case=mutated())
@example(case=("promise.create", {"id": "x", "timeoutAt": FAR, "tags": {"resonate:target": A,
                                                                    "resonate:delay": "1" * 5000}},
               "delay with 5000 digits", 400))
@example(case=("promise.create", {"id": "x", "timeoutAt": 1.0}, "float int", 400))
@example(case=("promise.create", {"id": "x", "timeoutAt": True}, "bool int", 400))
@example(case=("promise.create", {"id": "x", "timeoutAt": I64_MAX + 1}, "int64 overflow", 400))
@example(case=("promise.create", {"id": "x", "timeoutAt": 5, "tags": {"k": 1}}, "non-string tag", 400))
@example(case=("task.acquire", {"id": "seed-wf", "version": 0, "pid": "w", "ttl": I64_MAX}, "ttl max", None))
@example(case=("promise.get", {"id": "\ud800"}, "lone surrogate id", None))
def test_kind_data_fuzz(fz: Fuzz, case: tuple[str, dict[str, Any], str, int | None]) -> None:
    """Every kind with mutated data: typed rejections are 400, nothing ever 500s, rejects change nothing."""
    kind, data, how, expect = case
    corr = uuid.uuid4().hex
    fz.check(body_for(kind, data, corr), kind=kind, expect=expect, echo=(kind, corr))


@st.composite
def envelopes(draw: Any) -> tuple[bytes, str, str, int | None]:
    """Envelopes whose top level or head is broken in one or more ways: (body, kind echo, corrId echo, status)."""
    kind: Any = draw(st.sampled_from(FUZZ_KINDS + ["promise.frobnicate", "", "PROMISE.GET", "debug.", "task"]))
    data: Any = draw(st.sampled_from(templates(kind))) if kind in FUZZ_KINDS else {}
    # (unpaired surrogates in kind/corrId have their own pinned test below)
    corr: Any = draw(st.one_of(st.just("c1"), st.just(""), weird_text.filter(lambda s: not _has_surrogate(s))))
    env: dict[str, Any] = envelope(kind, data, corr=corr, time=T)
    broken: list[str] = []
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        what = draw(st.sampled_from(["kind", "head", "corrId", "version", "auth", "debug_time", "data",
                                     "missing_kind", "missing_head", "missing_corrId", "missing_version",
                                     "missing_data", "extra_head", "extra_top"]))
        if what == "kind":
            env["kind"] = draw(st.one_of(WRONG["str"], st.none()))
        elif what == "head":
            env["head"] = draw(st.one_of(WRONG["obj"], st.none()))
        elif what == "corrId" and isinstance(env.get("head"), dict):
            env["head"]["corrId"] = draw(st.one_of(WRONG["str"], st.none()))
        elif what == "version" and isinstance(env.get("head"), dict):
            env["head"]["version"] = draw(st.one_of(WRONG["str"], st.none(), st.sampled_from(
                ["2025-01-01", "", "2026-04-01 ", "2026-04-02", VERSION.replace("-", "")])))
        elif what == "auth" and isinstance(env.get("head"), dict):
            env["head"]["auth"] = draw(WRONG["str"])
        elif what == "debug_time" and isinstance(env.get("head"), dict):
            env["head"]["resonate:debug_time"] = draw(WRONG["int"])
        elif what == "data":
            env["data"] = draw(st.one_of(WRONG["obj"], st.none()))
        elif what.startswith("missing_"):
            field = what[8:]
            if field in ("corrId", "version"):
                if isinstance(env.get("head"), dict):
                    env["head"].pop(field, None)
            else:
                env.pop(field, None)
        elif what == "extra_head" and isinstance(env.get("head"), dict):
            env["head"][draw(weird_text)] = draw(any_json)
        elif what == "extra_top":
            env[draw(weird_text)] = draw(any_json)
        broken.append(what)
    # expected outcome, pipeline steps 1-4 of docs/protocol.md
    k, h = env.get("kind"), env.get("head")
    kind_echo = k if isinstance(k, str) else "unknown"
    corr_echo = h.get("corrId") if isinstance(h, dict) and isinstance(h.get("corrId"), str) else "0"
    bad = (not isinstance(k, str) or not isinstance(h, dict) or not isinstance(h.get("corrId"), str)
           or not isinstance(h.get("version"), str)
           or (h.get("auth") is not None and not isinstance(h.get("auth"), str))
           or (h.get("resonate:debug_time") is not None and not is_i64(h.get("resonate:debug_time")))
           or "data" not in env or k == "" or not isinstance(env.get("data"), dict) or h.get("version") != VERSION
           or k not in ALLOWED_STATUS)
    if not bad and h.get("resonate:debug_time") is None:
        # would run on the wall clock: keep the request out of the engine (version mismatch -> 400)
        h["version"] = "2025-01-01"
        bad = True
    return dumps(env), kind_echo, corr_echo, 400 if bad else None


@SETTINGS
@given(case=envelopes())
@example(case=(b'{"kind":"promise.get","head":{"corrId":"c1"},"data":{"id":"x"}}', "promise.get", "c1", 400))
def test_envelope_fuzz(fz: Fuzz, case: tuple[bytes, str, str, int | None]) -> None:
    """Broken envelopes: 400 with the docs/protocol.md echo rules; never a 500; state untouched."""
    body, kind_echo, corr_echo, expect = case
    fz.check(body, kind=kind_echo, expect=expect, echo=(kind_echo, corr_echo))


def _truncations(draw: Any) -> bytes:
    kind = draw(st.sampled_from(FUZZ_KINDS))
    full = body_for(kind, draw(st.sampled_from(templates(kind))), "c-trunc")
    cut = draw(st.integers(min_value=0, max_value=len(full) - 1))
    return full[:cut]


raw_bodies = st.one_of(
    st.binary(max_size=300),
    st.builds(lambda s: s.encode("utf-8", "surrogatepass"), st.text(max_size=200)),
    st.composite(_truncations)(),
    any_json.map(lambda v: json.dumps(v).encode()),  # valid JSON that is not an envelope object (mostly)
    st.sampled_from([b"", b"null", b"[]", b"{}", b"0", b'"x"', b"\xef\xbb\xbf{}", b"\x00", b"{" * 100_000,
                     b"[" * 100_000 + b"]" * 100_000, b'{"kind":"promise.get"', b'{"kind":5}',
                     b'{"head":{"corrId":"c"}}', b"\xff\xfe{\x00}\x00", b"NaN", b"1e99999"]),
)


@SETTINGS
@given(body=raw_bodies)
@example(body=b'{"kind":"promise.get","head":{"corrId":"c","version":"2026-04-01"},"data":{"id":"x","z":'
         + b"[" * 50_000 + b"]" * 50_000 + b"}}")
@example(body=b"not json")
def test_raw_body_fuzz(fz: Fuzz, body: bytes) -> None:
    """Arbitrary bytes: a JSON envelope answer, 400 unless it happens to be a valid envelope."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        parsed = ValueError
    if parsed is ValueError:
        status, env = fz.check(body, expect=400)
        if b'"kind"' not in body:
            assert env["kind"] == "unknown", env
        if b'"corrId"' not in body:
            assert env["head"]["corrId"] == "0", env
    elif not isinstance(parsed, dict):
        fz.check(body, expect=400, echo=("unknown", "0"))
    else:
        h = parsed.get("head")
        if isinstance(h, dict) and h.get("resonate:debug_time") is None and h.get("version") == VERSION:
            return  # a valid-looking envelope on the wall clock; covered by the other properties
        k = parsed.get("kind")
        corr = h.get("corrId") if isinstance(h, dict) else None
        echo = (k if isinstance(k, str) else "unknown", corr if isinstance(corr, str) else "0")
        fz.check(body, kind=k, echo=None if _has_surrogate(echo[0] + echo[1]) else echo)


# ------------------------------------------------------------------------------- size limits


def test_body_over_limit_is_413_envelope(fz: Fuzz) -> None:
    """11 MiB -> 413 with a JSON envelope; the connection survives and the next request works."""
    fz.ensure_seeded()
    before = fz.state()
    pad = "A" * (11 * MIB)
    body = body_for("promise.create", {"id": "big", "timeoutAt": FAR, "param": {"data": pad}})
    r, env = fz.post(body)
    assert r.status_code == 413, (r.status_code, env)
    assert isinstance(env["data"], str)
    assert fz.state() == before
    # the limit is exact: one byte over is refused too
    over = _padded_body(MAX_BODY + 1)
    r, env = fz.post(over)
    assert r.status_code == 413, (r.status_code, env)
    # chunked upload (no Content-Length) over the limit
    r, env = fz.post(iter([body[i:i + MIB] for i in range(0, len(body), MIB)]))
    assert r.status_code == 413, (r.status_code, env)
    assert fz.state() == before
    r, env = fz.post(body_for("promise.get", {"id": "seed-a"}, "after-413"))  # same connection
    assert r.status_code == 200 and env["head"]["corrId"] == "after-413", env


def _padded_body(size: int) -> bytes:
    """A valid promise.create envelope of exactly `size` bytes (padding in param.data)."""
    base = body_for("promise.create", {"id": "big-exact", "timeoutAt": FAR, "param": {"data": ""}}, "c-big")
    body = body_for("promise.create", {"id": "big-exact", "timeoutAt": FAR,
                                       "param": {"data": "A" * (size - len(base))}}, "c-big")
    assert len(body) == size
    return body


def test_body_exactly_at_limit_is_accepted(fz: Fuzz) -> None:
    body = _padded_body(MAX_BODY)
    r, env = fz.post(body)
    assert r.status_code == 200, (r.status_code, str(env)[:300])
    assert env["kind"] == "promise.create" and env["head"]["corrId"] == "c-big"
    assert len(env["data"]["promise"]["param"]["data"]) == MAX_BODY - len(
        body_for("promise.create", {"id": "big-exact", "timeoutAt": FAR, "param": {"data": ""}}, "c-big"))
    fz.dirty = True  # the next test starts from fresh seeds (without the 10 MiB promise)


# ------------------------------------------------------------------------ pinned regressions
# Inputs that once made the server fail; each must answer with a proper envelope (never 500).


@pytest.mark.parametrize("where", ["corrId", "kind", "get id", "create id", "tag value", "param data", "cursor"])
def test_lone_surrogate_escapes_never_500(fz: Fuzz, where: str) -> None:
    """`"\\ud800"` is a legal JSON escape that decodes to an unpaired surrogate; it must not break
    the response encoder, and a stored one must not poison later snapshots or searches."""
    bad = "a\ud800"
    kind, data, corr = "promise.get", {"id": "seed-a"}, "c-sur"
    if where == "corrId":
        corr = bad
    elif where == "kind":
        kind = bad
    elif where == "get id":
        data = {"id": bad}
    elif where == "create id":
        kind, data = "promise.create", {"id": bad, "timeoutAt": FAR}
    elif where == "tag value":
        kind, data = "promise.create", {"id": "sur-tag", "timeoutAt": FAR, "tags": {"k": bad}}
    elif where == "param data":
        kind, data = "promise.create", {"id": "sur-param", "timeoutAt": FAR, "param": {"data": bad}}
    else:
        kind, data = "promise.search", {"cursor": bad}
    fz.ensure_seeded()
    r, env = fz.post(body_for(kind, data, corr))
    fz.dirty = True
    assert (env["kind"], env["head"]["corrId"]) in ((kind, corr), ("unknown", "0"), (kind, "0"), ("unknown", corr)), env
    # whatever was accepted, the state must still be readable
    assert fz.rpc("debug.snap", {})[0] == 200
    assert fz.rpc("promise.search", {})[0] == 200


@pytest.mark.parametrize("body", [
    b"[" * 100_000,
    b"{" * 100_000,
    b'{"kind":"promise.get","head":{"corrId":"c","version":"2026-04-01","resonate:debug_time":1},"data":'
    b'{"id":"x","pad":' + b"[" * 100_000 + b"]" * 100_000 + b"}}",
], ids=["arrays", "objects", "inside-data"])
def test_deeply_nested_json_is_400(fz: Fuzz, body: bytes) -> None:
    fz.check(body, expect=400)


def test_delay_with_thousands_of_digits_is_400(fz: Fuzz) -> None:
    data = {"id": "d", "timeoutAt": FAR, "tags": {"resonate:target": A, "resonate:delay": "1" * 5000}}
    fz.check(body_for("promise.create", data, "c-delay"), kind="promise.create", expect=400,
             echo=("promise.create", "c-delay"))


def test_int64_edges_never_500(fz: Fuzz) -> None:
    """Values inside int64 whose derived timestamps are not (now + ttl, now + R, instant +
    promiseTimeout, the next cron instant after now): any documented answer, never a 500."""
    fz.seed()
    fz.dirty = True
    tg = {"resonate:target": A}

    def send(kind: str, data: dict[str, Any], now: int = T) -> int:
        corr = uuid.uuid4().hex
        r, env = fz.post(body_for(kind, data, corr, now))
        assert (env["kind"], env["head"]["corrId"]) == (kind, corr), env
        assert r.status_code in ALLOWED_STATUS[kind], (kind, data, now, r.status_code, env)
        return r.status_code

    send("task.acquire", {"id": "seed-wf", "version": 0, "pid": "w9", "ttl": I64_MAX})
    send("task.heartbeat", {"pid": "w9", "tasks": []})
    send("task.create", {"pid": "w9", "ttl": I64_MAX - T + 1, "action": {
        "kind": "promise.create", "head": {}, "data": {"id": "big-ttl", "timeoutAt": FAR, "tags": tg}}})
    send("promise.create", {"id": "late", "timeoutAt": I64_MAX, "tags": tg}, now=I64_MAX - 1)
    send("task.release", {"id": "seed-run", "version": 1}, now=I64_MAX - 1)
    send("schedule.create", {"id": "late-s", "cron": "* * * * *", "promiseId": "{{.id}}", "promiseTimeout": 0,
                             "promiseTags": tg}, now=I64_MAX - 1)
    send("schedule.create", {"id": "huge-timeout", "cron": "* * * * * *", "promiseId": "{{.id}}-{{.timestamp}}",
                             "promiseTimeout": I64_MAX - 1000, "promiseTags": tg})
    tick = T + 2_000
    send("debug.tick", {"time": tick}, now=tick)
    assert fz.rpc("debug.snap", {})[0] == 200


def test_very_long_ids(fz: Fuzz) -> None:
    """A 1 MiB id is just a string: stored and found again, or rejected with a 4xx; never a 500."""
    fz.seed()
    fz.dirty = True
    big = "i" * MIB
    for kind, data in [("promise.create", {"id": big, "timeoutAt": FAR, "tags": {"resonate:target": A}}),
                       ("promise.get", {"id": big}),
                       ("task.get", {"id": big}),
                       ("promise.register_listener", {"awaited": big, "address": "poll://uni@g/" + big}),
                       ("task.acquire", {"id": big, "version": 0, "pid": big, "ttl": 1000}),
                       ("task.heartbeat", {"pid": big, "tasks": []}),
                       ("task.heartbeat", {"pid": "p", "tasks": [{"id": big, "version": 1}]}),
                       ("promise.search", {"cursor": big}),
                       ("schedule.create", {"id": big, "cron": "* * * * *", "promiseId": big + "{{.timestamp}}",
                                            "promiseTimeout": 1000, "promiseTags": {"resonate:target": A}}),
                       ("schedule.get", {"id": big}),
                       ("debug.tick", {"time": T + 120_000})]:
        corr = uuid.uuid4().hex
        now = T + 120_000 if kind == "debug.tick" else T
        r, env = fz.post(body_for(kind, data, corr, now))
        assert (env["kind"], env["head"]["corrId"]) == (kind, corr), env
        assert r.status_code in ALLOWED_STATUS[kind], (kind, r.status_code, str(env)[:300])
    assert fz.rpc("debug.snap", {})[0] == 200


@pytest.mark.parametrize("kind", sorted([*REST_KINDS, *OPERATOR_KINDS, *CONSOLE_ONLY]))
def test_other_surfaces_kinds_are_unknown_to_post_root(fz: Fuzz, kind: str) -> None:
    """The REST API's kinds are served by its routes only, the operators' on `POST /operator`
    only: `POST /` (the SDKs' protocol surface) answers them as unknown, whatever their data, and
    changes nothing."""
    before = fz.state()
    r, env = fz.post(json.dumps(envelope(kind, {"id": "p1", "processId": "x"}, time=T)).encode())
    assert (r.status_code, env["data"]) == (400, f"Unknown operation: {kind}")
    assert fz.state() == before


@pytest.mark.parametrize("kind", ["promise.get", "task.search", "debug.snap", "rest.promise.get"])
def test_post_operator_knows_only_the_operators_kinds(fz: Fuzz, kind: str) -> None:
    r, env = fz.post(json.dumps(envelope(kind, {"id": "p1"}, time=T)).encode(), "/operator")
    assert (r.status_code, env["data"]) == (400, f"Unknown operation: {kind}")
