"""Tenant isolation: a prefix-scoped token reaches nothing outside its prefix and groups.

The matrix is generated from the kind registry (`shared.kinds`, whose `touches` column is what
authorization checks): every request
kind has a builder below that names each id-bearing field through a slot (`i.task`, `i.group`,
...). For every slot a builder reads, a variant with that one slot set to tenant B's value is
sent with tenant A's token: it must answer 403 (never 404/422: no existence probe) and change
nothing (read back with an admin token); the table itself must list the foreign id (so a field
the table misses fails here, before any server is asked). Each kind's all-tenant-A request
still succeeds. A kind without a builder, or a builder without a kind, fails the suite.

Runs on memory, SQLite and Postgres servers and in the cloud simulation.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from shared.kinds import CONSOLE_KINDS, KINDS, OPERATOR_KINDS, REST_KINDS, RPC_KINDS, decode, touches
from shared.legacy.ids import invoke_id
from tests.support.envelope import envelope
from tests.support.server import ServerProc, backends, start_server
from tests.support.tokens import KeyPair, claims

FAR = 2**62
LEASE = 600_000
TENANTS = {"A": ("tenantA/", "tenantA-workers"), "B": ("tenantB/", "tenantB-workers")}
VALUE_SLOTS = frozenset({"version"})  # slots that carry no id (never swapped)


class Ids:
    """The values a builder reads, by slot: the `home` tenant's, except slot `foreign`: B's."""

    def __init__(self, foreign: str | None = None, home: str = "A") -> None:
        self.foreign = foreign
        self.home = home
        self.read: list[str] = []

    def __getattr__(self, slot: str) -> Any:
        if slot.startswith("_"):
            raise AttributeError(slot)
        self.read.append(slot)
        prefix, group = TENANTS["B" if slot == self.foreign else self.home]
        if slot == "version":
            return 1
        if slot == "group":
            return group
        return prefix + slot.replace("_", "-")


def _action(kind: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"kind": kind, "head": {}, "data": data}


def _target(i: Ids) -> str:
    return f"poll://any@{i.group}"


def _create(id: str, i: Ids) -> dict[str, Any]:
    """A promise to create, with every id-valued tag and a target."""
    return {"id": id, "timeoutAt": FAR, "tags": {"resonate:origin": i.origin, "resonate:parent": i.parent,
                                                 "resonate:branch": i.branch, "resonate:target": _target(i)}}


# The world each tenant has before every kind's rows (see `world`): `promise` pending, no target;
# `task` acquired by pid "w" at version 1 (its promise on the branch `wf`); `pending_task` pending
# at version 0; `halted` a halted task; `schedule` a schedule. Fresh ids: `new`, `new_schedule`.
BUILDERS: dict[str, Callable[[Ids], dict[str, Any]]] = {
    "promise.get": lambda i: {"id": i.promise},
    "promise.create": lambda i: _create(i.new, i),
    "promise.settle": lambda i: {"id": i.promise, "state": "resolved"},
    "promise.register_callback": lambda i: {"awaited": i.promise, "awaiter": i.task},
    "promise.register_listener": lambda i: {"awaited": i.promise, "address": f"poll://uni@{i.group}/w"},
    "promise.search": lambda i: {},
    "task.get": lambda i: {"id": i.task},
    "task.create": lambda i: {"pid": "w", "ttl": LEASE, "action": _action("promise.create", _create(i.new, i))},
    "task.acquire": lambda i: {"id": i.pending_task, "version": 0, "pid": "w", "ttl": LEASE},
    "task.release": lambda i: {"id": i.task, "version": i.version},
    "task.fulfill": lambda i: (lambda t: {"id": t, "version": i.version,
                                          "action": _action("promise.settle", {"id": t, "state": "resolved"})})(i.task),
    "task.suspend": lambda i: (lambda t: {"id": t, "version": i.version, "actions": [
        _action("promise.register_callback", {"awaited": i.promise, "awaiter": t})]})(i.task),
    "task.fence": lambda i: {"id": i.task, "version": i.version,
                             "action": _action("promise.create", _create(i.new, i))},
    "task.heartbeat": lambda i: {"pid": "w", "tasks": [{"id": i.task, "version": i.version}]},
    "task.halt": lambda i: {"id": i.task},
    "task.continue": lambda i: {"id": i.halted},
    "task.search": lambda i: {},
    "schedule.get": lambda i: {"id": i.schedule},
    "schedule.create": lambda i: {"id": i.new_schedule, "cron": "0 0 1 1 *",
                                  "promiseId": i.template + ".{{.timestamp}}", "promiseTimeout": 60_000,
                                  "promiseTags": {"resonate:target": _target(i)}},
    "schedule.delete": lambda i: {"id": i.schedule},
    "schedule.search": lambda i: {},
    "promise.purge": lambda i: {"olderThan": 0, "dryRun": True},
    "debug.start": lambda i: {},
    "debug.stop": lambda i: {},
    "debug.reset": lambda i: {},
    "debug.snap": lambda i: {},
    "outbox.search": lambda i: {"dead": True},
    # the web console's views (`POST /ui/api`)
    "console.promises": lambda i: {"prefix": i.promise},
    "console.promise": lambda i: {"id": i.promise},
    "console.tasks": lambda i: {"prefix": i.task},
    "console.schedules": lambda i: {"prefix": i.schedule},
    "console.workers": lambda i: {},
    "outbox.redrive": lambda i: {"all": True},
    "debug.tick": lambda i: {"time": 1},
    # the REST API's kinds: the `data` its routes build (sent over those routes: `rest_request`)
    "rest.promise.get": lambda i: {"id": i.promise},
    "rest.promise.create": lambda i: {"id": i.new, "timeout": FAR, "tags": {
        "resonate:origin": i.origin, "resonate:parent": i.parent, "resonate:invoke": _target(i)}},
    "rest.promise.complete": lambda i: {"id": i.promise, "state": "RESOLVED"},
    "rest.promise.search": lambda i: {"id": "*"},
    "rest.promise.callback": lambda i: {"promiseId": i.promise, "rootPromiseId": i.task, "timeout": FAR,
                                        "recv": _target(i)},
    "rest.promise.subscribe": lambda i: {"promiseId": i.promise, "id": "sub", "timeout": FAR,
                                         "recv": f"poll://uni@{i.group}/w"},
    "rest.task.claim": lambda i: {"id": invoke_id(i.pending_task), "counter": 0, "processId": "w", "ttl": LEASE},
    "rest.task.complete": lambda i: {"id": invoke_id(i.task), "counter": 0},
    "rest.task.drop": lambda i: {"id": invoke_id(i.task), "counter": 0},
    "rest.task.heartbeat": lambda i: {"processId": "w"},
    "rest.schedule.get": lambda i: {"id": i.schedule},
    "rest.schedule.create": lambda i: {"id": i.new_schedule, "cron": "0 0 1 1 *", "promiseTimeout": 60_000,
                                       "promiseId": i.template + ".{{.timestamp}}",
                                       "promiseTags": {"resonate:invoke": _target(i)}},
    "rest.schedule.delete": lambda i: {"id": i.schedule},
    "rest.schedule.search": lambda i: {"id": "*"},
}
# kinds that name no id yet are confined by the engine to the caller's scope (tested below)
SCOPED_BY_ENGINE = frozenset({"rest.task.heartbeat", "rest.lock.heartbeat"})


def rest_request(kind: str, d: dict[str, Any]) -> tuple[str, str, dict[str, Any] | None]:
    """(method, path, JSON body) of a REST kind's `data` (shared/legacy/rest.py's routes)."""
    body = {k: v for k, v in d.items() if k != "promiseId"}
    routes: dict[str, tuple[str, str, dict[str, Any] | None]] = {
        "rest.promise.get": ("GET", f"/promises/{d.get('id')}", None),
        "rest.promise.create": ("POST", "/promises", d),
        "rest.promise.complete": ("PATCH", f"/promises/{d.get('id')}", {"state": d.get("state")}),
        "rest.promise.search": ("GET", f"/promises?id={d.get('id')}", None),
        "rest.promise.callback": ("POST", f"/promises/callback/{d.get('promiseId')}", body),
        "rest.promise.subscribe": ("POST", f"/promises/subscribe/{d.get('promiseId')}", body),
        "rest.task.claim": ("POST", "/tasks/claim", d),
        "rest.task.complete": ("POST", "/tasks/complete", d),
        "rest.task.drop": ("POST", "/tasks/drop", d),
        "rest.task.heartbeat": ("POST", "/tasks/heartbeat", d),
        "rest.schedule.get": ("GET", f"/schedules/{d.get('id')}", None),
        "rest.schedule.create": ("POST", "/schedules", d),
        "rest.schedule.delete": ("DELETE", f"/schedules/{d.get('id')}", None),
        "rest.schedule.search": ("GET", f"/schedules?id={d.get('id')}", None),
        "rest.lock.acquire": ("POST", "/locks/acquire", d),
        "rest.lock.release": ("POST", "/locks/release", d),
        "rest.lock.heartbeat": ("POST", "/locks/heartbeat", d),
    }
    return routes[kind]
# further rows the matrix needs: the fence's other action, and a `{{.id}}` template
EXTRA: list[tuple[str, Callable[[Ids], dict[str, Any]]]] = [
    ("task.fence", lambda i: {"id": i.task, "version": i.version,
                              "action": _action("promise.settle", {"id": i.promise, "state": "resolved"})}),
    ("schedule.create", lambda i: {"id": i.new_schedule, "cron": "0 0 1 1 *", "promiseId": "{{.id}}.{{.timestamp}}",
                                   "promiseTimeout": 60_000, "promiseTags": {"resonate:target": _target(i)}}),
]

# the REST API's distributed locks: each tenant's world holds `lock`, taken by execution "e" of
# process "p"; a heartbeat names a process only (the engine extends only the caller's locks)
BUILDERS |= {
    "rest.lock.acquire": lambda i: {"resourceId": i.lock, "executionId": "e", "processId": "p", "ttl": LEASE},
    "rest.lock.release": lambda i: {"resourceId": i.lock, "executionId": "e"},
    "rest.lock.heartbeat": lambda i: {"processId": "p"},
}


@dataclass(frozen=True)
class Row:
    kind: str
    build: Callable[[Ids], dict[str, Any]]

    @property
    def data(self) -> dict[str, Any]:
        return self.build(Ids())

    def slots(self) -> list[str]:
        ids = Ids()
        self.build(ids)
        return [s for s in dict.fromkeys(ids.read) if s not in VALUE_SLOTS]

    def variant(self, slot: str) -> dict[str, Any]:
        return self.build(Ids(foreign=slot))

    @property
    def unscoped(self) -> bool:
        return touches(decode(self.kind, self.data)).unscoped


ROWS = [Row(k, b) for k, b in BUILDERS.items()] + [Row(k, b) for k, b in EXTRA]


def test_every_kind_has_a_row_in_the_table_and_the_matrix() -> None:
    assert set(KINDS) == set(BUILDERS)


@pytest.mark.parametrize("row", ROWS, ids=lambda r: r.kind)
def test_the_table_lists_every_foreign_field(row: Row) -> None:
    """Each slot swapped to tenant B shows up in what the table says the request touches."""
    b_prefix, b_group = TENANTS["B"]
    for slot in row.slots():
        t = touches(decode(row.kind, row.variant(slot)))
        foreign = [x for x in t.ids if x.startswith(b_prefix)] + [a for a in t.addresses if b_group in a]
        assert foreign, f"{row.kind}: the table misses field {slot!r}"
    if not row.slots() and row.kind not in SCOPED_BY_ENGINE:
        assert row.unscoped, f"{row.kind} names no id but is not marked unscoped"


# ------------------------------------------------------------------------------ over HTTP

def token(key: KeyPair, tenant: str | None) -> str:
    if tenant is None:
        return key.sign(claims(3600, role="admin"))
    prefix, group = TENANTS[tenant]
    return key.sign(claims(3600, role="worker", prefix=prefix, groups=[group.split("-")[0] + "-*"], sub=tenant))


def rpc_ok(s: ServerProc, kind: str, data: dict[str, Any], **head: Any) -> dict[str, Any]:
    status, out = s.rpc(kind, data, **head)
    assert status == 200, (kind, data, status, out)
    return out


def world(s: ServerProc, tenant: str) -> None:
    """Every record the builders name, for one tenant (created with the admin token)."""
    i = Ids(home=tenant)
    target = {"resonate:target": _target(i)}
    rpc_ok(s, "promise.create", {"id": i.promise, "timeoutAt": FAR})
    out = rpc_ok(s, "task.create", {"pid": "w", "ttl": LEASE, "action": _action("promise.create", {
        "id": i.task, "timeoutAt": FAR, "tags": {**target, "resonate:branch": i.wf}})})
    assert out["task"]["version"] == 1
    rpc_ok(s, "promise.create", {"id": i.pending_task, "timeoutAt": FAR, "tags": target})
    rpc_ok(s, "task.create", {"pid": "w", "ttl": LEASE, "action": _action("promise.create", {
        "id": i.halted, "timeoutAt": FAR, "tags": target})})
    rpc_ok(s, "task.halt", {"id": i.halted})
    rpc_ok(s, "schedule.create", {"id": i.schedule, "cron": "0 0 1 1 *", "promiseId": i.schedule + ".{{.timestamp}}",
                                  "promiseTimeout": 60_000, "promiseTags": target})
    assert send(s, "rest.lock.acquire", BUILDERS["rest.lock.acquire"](i), s.token or "")[0] == 201


def fresh(s: ServerProc) -> dict[str, Any]:
    """Both tenants' worlds on an empty store (a debug session: background delivery waits)."""
    rpc_ok(s, "debug.start", {})
    rpc_ok(s, "debug.reset", {})
    world(s, "A")
    world(s, "B")
    return rpc_ok(s, "debug.snap", {})


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair("ec256")


@pytest.fixture(scope="module", params=backends())
def srv(request: pytest.FixtureRequest, key: KeyPair, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    work = tmp_path_factory.mktemp(f"tenants-{request.param}")
    s = start_server(request.param, work, env={"RESONATE_AUTH__PUBLICKEY": key.write(work)})
    s.token = token(key, None)
    yield s
    s.stop()


def send(s: ServerProc, kind: str, data: dict[str, Any], auth: str) -> tuple[int, Any]:
    """One request of any kind with this token: an envelope on `POST /`, or a REST route
    (its refusal normalized to the envelope's `(403, "Forbidden")`)."""
    if kind in OPERATOR_KINDS or (kind in CONSOLE_KINDS and kind not in RPC_KINDS):
        path = "/operator" if kind in OPERATOR_KINDS else "/ui/api"
        r = s.request("POST", path, json=envelope(kind, data, auth=auth))
        return r.status_code, r.json()["data"]
    if kind not in REST_KINDS:
        return s.rpc(kind, data, auth=auth)
    method, path, body = rest_request(kind, data)
    r = s.request(method, path, json=body, headers={"Authorization": f"Bearer {auth}"})
    out = r.json() if r.content else None  # a 204 (schedule deleted) has no body
    if r.status_code == 403 and out["error"]["code"] == 4039:
        return 403, "Forbidden"
    return r.status_code, out


def check_matrix(s: ServerProc, key: KeyPair) -> None:
    a = token(key, "A")
    for row in ROWS:
        before = fresh(s)
        slots = row.slots()
        for slot in slots:
            data = row.variant(slot)
            assert send(s, row.kind, data, a) == (403, "Forbidden"), (row.kind, slot, data)
        if row.unscoped:
            assert send(s, row.kind, row.data, a) == (403, "Forbidden"), row.kind
        assert s.rpc("debug.snap", {})[1] == before, f"{row.kind}: a refused request changed state"
        if not row.unscoped:
            status, out = send(s, row.kind, row.data, a)
            assert status in (200, 201, 204, 300), (row.kind, status, out)  # the all-tenant-A request still works
    rpc_ok(s, "debug.stop", {})


def test_cross_tenant_matrix(srv: ServerProc, key: KeyPair) -> None:
    check_matrix(srv, key)


def test_preload_never_returns_another_tenants_promise(srv: ServerProc, key: KeyPair) -> None:
    """An admin put tenant B's promise on tenant A's branch: A's preload leaves it out."""
    fresh(srv)
    a = token(key, "A")
    branch = {"resonate:branch": "tenantA/flow"}
    rpc_ok(srv, "promise.create", {"id": "tenantB/intruder", "timeoutAt": FAR, "tags": branch})
    rpc_ok(srv, "promise.create", {"id": "tenantA/flow.1", "timeoutAt": FAR, "tags": branch})
    create = {"pid": "w", "ttl": LEASE, "action": _action("promise.create", {
        "id": "tenantA/flow", "timeoutAt": FAR, "tags": {**branch, "resonate:target": "poll://any@tenantA-workers"}})}
    status, out = srv.rpc("task.create", create, auth=a)
    assert status == 200 and [p["id"] for p in out["preload"]] == ["tenantA/flow.1"], out
    rpc_ok(srv, "task.release", {"id": "tenantA/flow", "version": out["task"]["version"]})
    status, out = srv.rpc("task.acquire", {"id": "tenantA/flow", "version": out["task"]["version"], "pid": "w",
                                           "ttl": LEASE}, auth=a)
    assert status == 200 and [p["id"] for p in out["preload"]] == ["tenantA/flow.1"], out
    rpc_ok(srv, "task.release", {"id": "tenantA/flow", "version": out["task"]["version"]})
    out = rpc_ok(srv, "task.acquire", {"id": "tenantA/flow", "version": out["task"]["version"], "pid": "w",
                                       "ttl": LEASE})  # the admin sees the whole branch
    assert sorted(p["id"] for p in out["preload"]) == ["tenantA/flow.1", "tenantB/intruder"], out
    rpc_ok(srv, "debug.stop", {})


def test_an_empty_heartbeat_renews_only_the_callers_tasks(srv: ServerProc, key: KeyPair) -> None:
    """Tenants A and B each have a task leased by the same pid; A's empty-list heartbeat for
    that pid renews A's lease only."""
    fresh(srv)
    t0 = int(time.time() * 1000)
    for tenant in ("A", "B"):
        prefix, group = TENANTS[tenant]
        st, out = srv.rpc("task.create", {"pid": "shared", "ttl": 10_000, "action": _action("promise.create", {
            "id": prefix + "hb", "timeoutAt": FAR, "tags": {"resonate:target": f"poll://any@{group}"}})},
            auth=token(key, tenant), time=t0)
        assert st == 200, out
    assert srv.rpc("task.heartbeat", {"pid": "shared", "tasks": []}, auth=token(key, "A"), time=t0 + 5_000)[0] == 200
    leases = {t["id"]: t["timeout"] for t in rpc_ok(srv, "debug.snap", {})["taskTimeouts"]}
    assert leases["tenantA/hb"] == t0 + 15_000 and leases["tenantB/hb"] == t0 + 10_000, leases
    rpc_ok(srv, "debug.stop", {})


def test_a_rest_heartbeat_renews_only_the_callers_tasks(srv: ServerProc, key: KeyPair) -> None:
    """The REST API's process heartbeat names no task: with a prefix token it extends (and
    counts) only the tasks of the caller's prefix that the process holds."""
    fresh(srv)
    t0 = int(time.time() * 1000)
    for tenant in ("A", "B"):
        prefix, group = TENANTS[tenant]
        st, out = srv.rpc("task.create", {"pid": "shared", "ttl": 10_000, "action": _action("promise.create", {
            "id": prefix + "hb", "timeoutAt": FAR, "tags": {"resonate:target": f"poll://any@{group}"}})},
            auth=token(key, tenant), time=t0)
        assert st == 200, out
    r = srv.request("POST", "/tasks/heartbeat", json={"processId": "shared"},
                    headers={"Authorization": f"Bearer {token(key, 'A')}"})
    assert r.status_code == 200 and r.json() == {"tasksAffected": 1}, r.text
    leases = {t["id"]: t["timeout"] for t in rpc_ok(srv, "debug.snap", {})["taskTimeouts"]}
    assert leases["tenantA/hb"] > t0 + 10_000 and leases["tenantB/hb"] == t0 + 10_000, leases
    rpc_ok(srv, "debug.stop", {})


@pytest.mark.process
@pytest.mark.postgres
@pytest.mark.cloudsim
def test_matrix_in_the_cloud_simulation(key: KeyPair, tmp_path: Path) -> None:
    from tests.support.cloudsim import start_cloudsim

    with start_cloudsim(tmp_path, tick=60.0, debug=True, env={"RESONATE_AUTH__PUBLICKEY": key.write(tmp_path)}) as s:
        s.token = token(key, None)
        check_matrix(s, key)
