"""The REST API's schedules (docs/legacy-api.md#schedules): create with idempotency keys, get,
delete, search, and firing on the one schedule engine (what the resonate-sdk 0.6.7 client sends and reads back).

In process: flask's test client over the memory store with a clock the test sets, firing driven
by `Service.sweep(now=…)`. Over a server process on every backend: the same life cycle, fired by
`debug.tick`, so that every store keeps what a REST schedule needs (description, own tags, key,
the REST marker).
"""
from __future__ import annotations

import json
import sys
from typing import Any

import pytest
from werkzeug.test import Client

from shared.config import load
from shared.http import create_app
from shared.kinds import decode, touches
from shared.legacy import ids
from shared.service import Service
from shared.storage.memory import MemoryStore
from tests.support.clock import SetClock
from tests.support.server import ServerProc, process_backends, start_server

T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z (a Tuesday)
MAX = sys.maxsize  # 2**63 - 1, what the 0.6.7 client sends as a timeout
BODY = {"id": "s", "description": "every five minutes", "cron": "*/5 * * * *", "tags": {"env": "prod"},
        "promiseId": "{{.id}}.{{.timestamp}}", "promiseTimeout": 60_000,
        "promiseParam": {"headers": {"h": "v"}, "data": "aGVsbG8="}, "promiseTags": {"k": "v"}}
RUN = T0 + 100_000  # the first tick of */5 after T0



class Api:
    """The server in this process: REST routes and `POST /` over one memory store."""

    def __init__(self, **config: Any) -> None:
        self.clock = SetClock(T0)
        self.service = Service(MemoryStore(), load({"debug": True, **config}, env={}), clock=self.clock)
        self.client = Client(create_app(self.service, None))

    def create(self, body: dict[str, Any], ikey: str | None = None, **headers: str) -> tuple[int, Any]:
        if ikey is not None:
            headers["idempotency-Key"] = ikey  # spelled as the 0.6.7 client does
        r = self.client.post("/schedules", json=body, headers=headers)
        return r.status_code, r.get_json()

    def get(self, path: str) -> tuple[int, Any]:
        r = self.client.get(path)
        return r.status_code, r.get_json()

    def schedule(self, id: str) -> dict[str, Any]:
        status, out = self.get(f"/schedules/{id}")
        assert status == 200, out
        return out

    def promise(self, id: str) -> dict[str, Any] | None:
        status, out = self.get(f"/promises/{id}")
        return out if status == 200 else None

    def rpc(self, kind: str, data: Any) -> tuple[int, Any]:
        env = {"kind": kind, "head": {"corrId": "c", "version": "2026-04-01"}, "data": data}
        r = self.client.post("/", data=json.dumps(env), headers={"Content-Type": "application/json"})
        return r.status_code, r.get_json()["data"]

    def fire(self, at: int) -> None:
        self.clock.t = at
        self.service.sweep(now=at)


@pytest.fixture
def api() -> Api:
    return Api()


def error_code(out: Any) -> int:
    assert isinstance(out, dict) and isinstance(out["error"], dict), out
    assert isinstance(out["error"]["message"], str) and out["error"]["details"], out
    return out["error"]["code"]


# ---- create and get ------------------------------------------------------------------------


def test_create_answers_the_schedule_object_and_get_returns_it_unchanged(api: Api) -> None:
    status, created = api.create(BODY, ikey="k1")
    assert status == 201
    assert created == {
        "id": "s", "description": "every five minutes", "cron": "*/5 * * * *", "tags": {"env": "prod"},
        "promiseId": "{{.id}}.{{.timestamp}}", "promiseTimeout": 60_000,
        "promiseParam": {"headers": {"h": "v"}, "data": "aGVsbG8="}, "promiseTags": {"k": "v"},
        "nextRunTime": RUN, "idempotencyKey": "k1", "createdOn": T0}
    api.clock.t = RUN - 1  # later reads do not recompute anything
    assert api.schedule("s") == created
    assert list(created) == ["id", "description", "cron", "tags", "promiseId", "promiseTimeout", "promiseParam",
                             "promiseTags", "nextRunTime", "idempotencyKey", "createdOn"]


def test_the_0_6_7_clients_create_and_read(api: Api) -> None:
    """Exactly what `RemoteScheduleStore.create(sid, "0 * * * *", "foo", sys.maxsize)` sends."""
    body = {"id": "sid0", "description": "", "cron": "0 * * * *", "tags": {}, "promiseId": "foo",
            "promiseTimeout": MAX, "promiseParam": {}, "promiseTags": {}}
    status, created = api.create(body)
    assert status == 201
    assert created == {"id": "sid0", "description": "", "cron": "0 * * * *", "tags": {}, "promiseId": "foo",
                       "promiseTimeout": MAX, "promiseParam": {}, "promiseTags": {}, "nextRunTime": T0 + 2_800_000,
                       "createdOn": T0}
    assert api.schedule("sid0") == created


def test_desc_is_accepted_and_echoed_as_description(api: Api) -> None:
    body = {k: v for k, v in BODY.items() if k != "description"}
    assert api.create({**body, "desc": "old name"})[1]["description"] == "old name"
    assert api.create({**body, "id": "s2"})[1]["description"] == ""


def test_ids_may_contain_slashes_and_percent_encoded_characters(api: Api) -> None:
    assert api.create({**BODY, "id": "a/b c/d"})[0] == 201
    assert api.schedule("a/b%20c/d")["id"] == "a/b c/d"
    assert api.schedule("a/b c/d")["id"] == "a/b c/d"


def test_get_unknown_is_a_404_json_error(api: Api) -> None:
    status, out = api.get("/schedules/nope/x")
    assert status == 404 and error_code(out) == 4041


@pytest.mark.parametrize(("cron", "offset"), [
    ("0 * * * *", 2_800_000),
    ("*/10 * * * * *", 10_000),  # a leading seconds field
    ("@hourly", 2_800_000),
    ("@daily", 6_400_000),
    ("@midnight", 6_400_000),
    ("@every 5m", 300_000),
    ("@every 1h30m", 5_400_000),
    ("@every 300ms", 1_000),  # at least a second, whole seconds
    ("0 0 ? * *", 6_400_000),
    ("0 0 * * 0", 352_000_000),  # Sunday the 19th: the standard dialect, 0 = Sunday
])
def test_cron_dialect_of_the_older_server(cron: str, offset: int) -> None:
    for profile in ("compat", "strict"):  # the REST API's dialect whatever the envelope profile
        api = Api(profile=profile)
        status, out = api.create({**BODY, "cron": cron})
        assert status == 201, (profile, out)
        assert out["cron"] == cron and out["nextRunTime"] == T0 + offset, profile


def test_every_fires_at_its_interval(api: Api) -> None:
    api.create({**BODY, "cron": "@every 90s"})
    api.fire(T0 + 90_000)
    assert api.schedule("s")["nextRunTime"] == T0 + 180_000
    assert api.promise(f"s.{T0 + 90_000}") is not None


# ---- repeats -------------------------------------------------------------------------------


def test_repeat_with_the_same_key_answers_the_stored_schedule(api: Api) -> None:
    _, first = api.create(BODY, ikey="k")
    api.clock.t = T0 + 5_000
    status, again = api.create({**BODY, "cron": "0 * 2 * *", "promiseId": "bar", "description": "x"}, ikey="k")
    assert status == 200 and again == first
    assert api.schedule("s") == first


@pytest.mark.parametrize(("stored", "sent"), [(None, None), (None, "k"), ("k", None), ("k", "other")])
def test_repeat_without_a_matching_key_is_a_conflict(api: Api, stored: str | None, sent: str | None) -> None:
    _, first = api.create(BODY, ikey=stored)
    status, out = api.create({**BODY, "cron": "0 * * * *"}, ikey=sent)
    assert status == 409 and error_code(out) == 4091
    assert api.schedule("s") == first


# ---- bad input -----------------------------------------------------------------------------


def _without(key: str) -> dict[str, Any]:
    return {k: v for k, v in BODY.items() if k != key}


@pytest.mark.parametrize("body", [
    {**BODY, "cron": "nope"},
    {**BODY, "cron": "* * * *"},
    {**BODY, "cron": "61 * * * *"},
    {**BODY, "cron": "* * * * * * *"},
    {**BODY, "cron": "@fortnightly"},
    {**BODY, "cron": "@every"},
    {**BODY, "cron": "@every 5x"},
    {**BODY, "cron": "@every -5m"},
    {**BODY, "cron": ""},
    {**BODY, "promiseParam": {"data": "not base64!"}},
    {**BODY, "promiseParam": "x"},
    _without("id"), _without("cron"), _without("promiseId"), _without("promiseTimeout"),
    {**BODY, "id": ""},
    {**BODY, "promiseTimeout": -1},
    {**BODY, "promiseTimeout": 2**63},
    {**BODY, "promiseTimeout": "60"},
    {**BODY, "tags": {"k": 1}},
    {**BODY, "tags": {"resonate:rest": "true"}},  # reserved: the engine's marker
    {**BODY, "promiseTags": ["x"]},
    {**BODY, "promiseTags": {"resonate:invoke": "poll://"}},
    {**BODY, "description": 5},
])
def test_bad_input_is_a_400_and_changes_nothing(api: Api, body: dict[str, Any]) -> None:
    status, out = api.create(body, ikey="k")
    assert status == 400 and error_code(out) == 4000, out
    assert api.get("/schedules?id=*")[1] == {"schedules": [], "cursor": None}


@pytest.mark.parametrize("raw", [b"{", b"[1]", b'"s"'])
def test_a_body_that_is_not_a_json_object_is_a_400(api: Api, raw: bytes) -> None:
    r = api.client.post("/schedules", data=raw, headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and error_code(r.get_json()) == 4000


def test_invalid_cron_is_refused_even_when_the_schedule_exists(api: Api) -> None:
    api.create(BODY, ikey="k")
    status, _ = api.create({**BODY, "cron": "nope"}, ikey="k")
    assert status == 400


# ---- delete --------------------------------------------------------------------------------


def test_delete_answers_204_then_404_and_keeps_fired_promises(api: Api) -> None:
    api.create({**BODY, "id": "a/b"})
    api.fire(T0 + 100_000)
    r = api.client.delete("/schedules/a/b")
    assert r.status_code == 204 and r.get_data() == b""
    status, out = api.get("/schedules/a/b")
    assert status == 404 and error_code(out) == 4041
    r = api.client.delete("/schedules/a/b")
    assert r.status_code == 404 and error_code(r.get_json()) == 4041
    assert api.promise(f"a/b.{RUN}") is not None
    api.fire(T0 + 10_000_000)  # nothing fires any more
    assert api.promise(f"a/b.{RUN + 300_000}") is None


# ---- search --------------------------------------------------------------------------------


def _ids(out: dict[str, Any]) -> list[str]:
    return [s["id"] for s in out["schedules"]]


@pytest.fixture
def several(api: Api) -> Api:
    for id, env in [("a/1", "prod"), ("a/2", "dev"), ("a/x/1", "prod"), ("b/1", "prod")]:
        assert api.create({**BODY, "id": id, "tags": {"env": env}})[0] == 201
    return api


@pytest.mark.parametrize(("query", "want"), [
    ("id=*", ["a/1", "a/2", "a/x/1", "b/1"]),
    ("id=a/*", ["a/1", "a/2", "a/x/1"]),
    ("id=*/1", ["a/1", "a/x/1", "b/1"]),
    ("id=a/*/1", ["a/x/1"]),
    ("id=b/1", ["b/1"]),
    ("id=c*", []),
    ("id=*&tags[env]=prod", ["a/1", "a/x/1", "b/1"]),
    ("id=a/*&tags[env]=prod", ["a/1", "a/x/1"]),
    ("id=*&tags[env]=prod&tags[other]=x", []),
])
def test_search_by_id_pattern_and_own_tags(several: Api, query: str, want: list[str]) -> None:
    status, out = several.get(f"/schedules?{query}")
    assert status == 200 and _ids(out) == want and out["cursor"] is None
    for s in out["schedules"]:
        assert s == several.schedule(s["id"])


def test_search_pages_with_an_opaque_cursor(several: Api) -> None:
    status, page = several.get("/schedules?id=*&tags[env]=prod&limit=2")
    assert status == 200 and _ids(page) == ["a/1", "a/x/1"] and isinstance(page["cursor"], str)
    # the cursor carries the whole query: other parameters are ignored
    status, rest = several.get(f"/schedules?id=b/*&limit=100&cursor={page['cursor']}")
    assert status == 200 and _ids(rest) == ["b/1"] and rest["cursor"] is None
    status, one = several.get("/schedules?id=*&limit=4")
    assert _ids(one) == ["a/1", "a/2", "a/x/1", "b/1"] and one["cursor"] is None


@pytest.mark.parametrize("query", ["", "limit=5", "id=*&limit=101", "id=*&limit=-1", "id=*&limit=x",
                                   "cursor=!!", "cursor=WzFd"])
def test_bad_search_is_a_400(several: Api, query: str) -> None:
    status, out = several.get(f"/schedules?{query}")
    assert status == 400 and error_code(out) == 4000


# ---- firing --------------------------------------------------------------------------------


def test_firing_creates_the_promise_the_older_server_did(api: Api) -> None:
    api.create(BODY, ikey="k")
    api.fire(RUN + 1_000)
    p = api.promise(f"s.{RUN}")
    assert p == {"id": f"s.{RUN}", "state": "PENDING", "param": {"headers": {"h": "v"}, "data": "aGVsbG8="},
                 "value": {}, "timeout": RUN + 60_000,
                 "tags": {"k": "v", "resonate:schedule": "s", "resonate:invocation": "true"},
                 "createdOn": RUN, "idempotencyKeyForCreate": f"s.{RUN}"}
    s = api.schedule("s")
    assert (s["lastRunTime"], s["nextRunTime"]) == (RUN, RUN + 300_000)
    assert list(s).index("lastRunTime") == list(s).index("promiseTags") + 1
    # the SDK's idempotent create of the same promise is a 200 with it
    r = api.client.post("/promises", json={"id": f"s.{RUN}", "timeout": 1}, headers={"Idempotency-Key": f"s.{RUN}"})
    assert r.status_code == 200 and r.get_json() == p


def test_firing_catches_up_and_advances_last_and_next_run(api: Api) -> None:
    api.create({**BODY, "promiseTimeout": 10_000_000})
    api.fire(RUN + 600_000)
    for k in range(3):
        assert api.promise(f"s.{RUN + k * 300_000}")["createdOn"] == RUN + k * 300_000
    s = api.schedule("s")
    assert (s["lastRunTime"], s["nextRunTime"]) == (RUN + 600_000, RUN + 900_000)


def test_a_passed_deadline_times_the_promise_out_at_once(api: Api) -> None:
    api.create({**BODY, "promiseTimeout": 10})
    api.fire(RUN + 5_000)
    p = api.promise(f"s.{RUN}")
    assert p is not None
    assert (p["state"], p["timeout"], p["completedOn"], p["createdOn"]) == ("REJECTED_TIMEDOUT", RUN + 10,
                                                                           RUN + 10, RUN)


def test_the_deadline_is_clamped_to_int64(api: Api) -> None:
    api.create({**BODY, "promiseTimeout": MAX})
    api.fire(RUN)
    p = api.promise(f"s.{RUN}")
    assert p is not None and p["state"] == "PENDING" and p["timeout"] == MAX


def test_an_id_collision_leaves_the_existing_promise_alone(api: Api) -> None:
    r = api.client.post("/promises", json={"id": "fixed-s", "timeout": MAX, "param": {"data": "b2xk"}},
                        headers={"Idempotency-Key": "mine"})
    assert r.status_code == 201
    before = r.get_json()
    api.create({**BODY, "promiseId": "fixed-{{.id}}"})
    api.fire(RUN + 300_000)
    assert api.promise("fixed-s") == before
    assert api.schedule("s")["lastRunTime"] == RUN + 300_000


def test_a_timer_tag_resolves_the_fired_promise_at_its_deadline(api: Api) -> None:
    api.create({**BODY, "promiseTags": {"resonate:timeout": "true"}})
    api.fire(RUN)
    api.fire(RUN + 60_000)
    p = api.promise(f"s.{RUN}")
    assert p is not None and p["state"] == "RESOLVED" and p["tags"]["resonate:timeout"] == "true"


def test_an_invoke_tag_routes_the_fired_promise_to_a_worker(api: Api) -> None:
    api.create({**BODY, "promiseTags": {"resonate:invoke": "default"}})
    api.fire(RUN)
    pid = f"s.{RUN}"
    assert api.promise(pid)["tags"] == {"resonate:invoke": "default", "resonate:schedule": "s",
                                        "resonate:invocation": "true"}
    snap = api.rpc("debug.snap", {})[1]
    sent = [(m["address"], m["message"]["data"]["task"]["id"]) for m in snap["messages"]]
    assert sent == [("poll://any@default", pid)]
    r = api.client.post("/tasks/claim", json={"id": ids.invoke_id(pid), "counter": 0, "processId": "w", "ttl": 10_000})
    assert r.status_code == 201
    assert r.get_json()["promises"]["root"]["data"] == api.promise(pid)


# ---- one engine: envelope schedules are untouched --------------------------------------------

ENVELOPE = {"id": "e", "cron": "*/5 * * * *", "promiseId": "{{.id}}.{{.timestamp}}", "promiseTimeout": 60_000,
            "promiseParam": {}, "promiseTags": {"resonate:target": "poll://any@g"}}


def test_envelope_schedules_fire_as_before_and_read_through_rest(api: Api) -> None:
    assert api.rpc("schedule.create", ENVELOPE)[0] == 200
    api.fire(RUN)
    pid = f"e.{RUN}"
    snap = api.rpc("debug.snap", {})[1]
    p = next(p for p in snap["promises"] if p["id"] == pid)
    assert p["tags"] == {"resonate:target": "poll://any@g", "resonate:schedule": "e", "resonate:origin": pid,
                         "resonate:branch": pid, "resonate:parent": pid, "resonate:prefix": pid}
    assert "idempotencyKeyForCreate" not in api.promise(pid)
    s = api.schedule("e")
    assert s == {"id": "e", "description": "", "cron": "*/5 * * * *", "tags": {}, "promiseId": "{{.id}}.{{.timestamp}}",
                 "promiseTimeout": 60_000, "promiseParam": {}, "promiseTags": {"resonate:target": "poll://any@g"},
                 "lastRunTime": RUN, "nextRunTime": RUN + 300_000, "createdOn": T0}
    status, out = api.create({**BODY, "id": "e"}, ikey="k")  # no stored key: a conflict
    assert status == 409 and error_code(out) == 4091


def test_a_rest_schedule_reads_through_the_envelope_protocol(api: Api) -> None:
    api.create(BODY, ikey="k")
    status, out = api.rpc("schedule.get", {"id": "s"})
    assert status == 200
    assert out["schedule"] == {"id": "s", "cron": "*/5 * * * *", "promiseId": "{{.id}}.{{.timestamp}}",
                               "promiseTimeout": 60_000, "promiseParam": {"headers": {"h": "v"}, "data": "aGVsbG8="},
                               "promiseTags": {"k": "v"}, "createdAt": T0, "nextRunAt": RUN}


# ---- authorization --------------------------------------------------------------------------


def test_create_touches_the_id_the_template_head_the_id_tags_and_the_target() -> None:
    req = decode("rest.schedule.create", {**BODY, "id": "t1/s", "promiseId": "t1/{{.id}}/{{.timestamp}}/x",
                                          "promiseTags": {"resonate:invoke": "poll://any@g",
                                                          "resonate:parent": "t2/p"}, "ikey": None})
    t = touches(req)
    assert t.ids == ("t1/s", "t1/t1/s/", "t2/p") and t.addresses == ("poll://any@g",) and not t.unscoped
    assert touches(decode("rest.schedule.get", {"id": "x"})).ids == ("x",)
    assert touches(decode("rest.schedule.delete", {"id": "x"})).ids == ("x",)
    assert touches(decode("rest.schedule.search", {"id": "*"})).unscoped


# ---- a server process, on every backend ------------------------------------------------------


@pytest.fixture(scope="module", params=process_backends())
def proc(request, tmp_path_factory) -> ServerProc:
    srv = start_server(request.param, tmp_path_factory.mktemp(f"sched-{request.param}"), debug=True)
    yield srv
    srv.stop()


def test_life_cycle_over_a_server_process(proc: ServerProc) -> None:
    assert proc.rpc("debug.start", {})[0] == 200  # background loops paused: the test fires
    assert proc.rpc("debug.reset", {})[0] == 200
    body = {**BODY, "promiseTags": {"resonate:invoke": "poll://any@nobody"}}
    r = proc.request("POST", "/schedules", json=body, headers={"idempotency-Key": "k"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["tags"] == {"env": "prod"} and created["promiseTags"] == body["promiseTags"]
    assert proc.request("GET", "/schedules/s").json() == created
    r = proc.request("POST", "/schedules", json={**body, "cron": "@hourly"}, headers={"Idempotency-Key": "k"})
    assert (r.status_code, r.json()) == (200, created)
    r = proc.request("POST", "/schedules", json=body)
    assert r.status_code == 409 and r.json()["error"]["code"] == 4091
    r = proc.request("GET", "/schedules", params={"id": "*", "tags[env]": "prod"})
    assert r.json() == {"schedules": [created], "cursor": None}

    run = created["nextRunTime"]
    assert proc.rpc("debug.tick", {"time": run}, time=run)[0] == 200
    pid = f"s.{run}"
    p = proc.request("GET", f"/promises/{pid}").json()
    assert (p["state"], p["timeout"], p["createdOn"], p["idempotencyKeyForCreate"]) == ("PENDING", run + 60_000,
                                                                                        run, pid)
    assert p["tags"] == {"resonate:invoke": "poll://any@nobody", "resonate:schedule": "s",
                         "resonate:invocation": "true"}
    assert p["param"] == BODY["promiseParam"]
    s = proc.request("GET", "/schedules/s").json()
    assert s == {**created, "lastRunTime": run, "nextRunTime": run + 300_000}

    r = proc.request("DELETE", "/schedules/s")
    assert r.status_code == 204 and r.content == b""
    r = proc.request("GET", "/schedules/s")
    assert r.status_code == 404 and r.json()["error"]["code"] == 4041
    assert proc.request("GET", f"/promises/{pid}").status_code == 200
