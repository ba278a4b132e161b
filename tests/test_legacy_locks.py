"""The older server's distributed locks (docs/legacy-api.md#locks):
`POST /locks/acquire` (201, re-entrant for the same execution, 403 while another holds it),
`/locks/release` (204 for the holder, else 404), `/locks/heartbeat` (every unexpired lock of the
process, `{"locksAffected": n}`), expiry by the background timeout pass, and prefix tokens.

In process: the flask app over a MemoryStore with a clock the test moves, so expiry instants are
exact and the stored locks are read back through the storage port. As processes, on every
backend: the same promises seen only through the API (real expiry with small ttls, waited for
with a deadline, never slept on).
"""
from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from shared.clock import Clock
from shared.config import load
from shared.http import create_app
from shared.protocol import I64_MAX
from shared.records import Effects, Lock
from shared.service import Service
from shared.storage.base import Store
from shared.storage.memory import MemoryStore
from shared.storage.sqlite import SqliteStore
from shared.timers import TimerLoop
from tests.support.clock import SetClock
from tests.support.server import ServerProc, process_backends, start_server
from tests.support.tokens import KeyPair, claims
from tests.support.wait import wait_until

T0 = 1_700_000_000_000  # the manual clock's start (tokens check `exp` against the wall clock, not this)
Reply = tuple[int, Any]



class Locks:
    """The flask app over a MemoryStore and a SetClock; the deadlines each commit announced."""

    def __init__(self, env: dict[str, str] | None = None, clock: Clock | None = None,
                 store: Store | None = None) -> None:
        self.clock = clock or SetClock(T0)
        self.service = Service(store or MemoryStore(), load({}, env=env or {}), clock=self.clock)
        self.deadlines: list[int] = []
        self.timers = TimerLoop(self.service)  # started only by the test that wants it

        def note(fx: Effects) -> None:
            if fx.deadline is not None:
                self.deadlines.append(fx.deadline)

        self.service.subscribe([note, self.timers.on_effects])
        self.client = Client(create_app(self.service, None))

    def move(self, t: int) -> None:
        assert isinstance(self.clock, SetClock)
        self.clock.t = t

    def post(self, verb: str, body: Any = None, raw: bytes | None = None, token: str | None = None) -> Reply:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        if raw is not None:
            r = self.client.post(f"/locks/{verb}", data=raw, headers=headers)
        else:
            r = self.client.post(f"/locks/{verb}", json=body, headers=headers)
        data = r.get_data()
        if r.status_code == 204:
            assert data == b""
            return 204, None
        assert r.mimetype == "application/json", (r.status_code, data)
        return r.status_code, json.loads(data)

    def acquire(self, resource: str, execution: str, process: str = "p1", ttl: int = 1000, **kw: Any) -> Reply:
        return self.post("acquire", {"resourceId": resource, "executionId": execution, "processId": process,
                                     "ttl": ttl}, **kw)

    def release(self, resource: str, execution: str, **kw: Any) -> Reply:
        return self.post("release", {"resourceId": resource, "executionId": execution}, **kw)

    def heartbeat(self, process: str, **kw: Any) -> Reply:
        return self.post("heartbeat", {"processId": process}, **kw)

    def stored(self, resource: str) -> Lock | None:
        return self.service.store.read(lambda tx: tx.get_lock(resource))

    def all_locks(self) -> list[Lock]:
        return self.service.store.read(lambda tx: tx.due_locks(I64_MAX, 10_000))


def lock_body(resource: str, execution: str, process: str, ttl: int, expires: int) -> dict[str, Any]:
    return {"resourceId": resource, "executionId": execution, "processId": process, "ttl": ttl,
            "expiryInMilliseconds": ttl, "expiresAt": expires}


def code(reply: Reply) -> tuple[int, int]:
    status, body = reply
    return status, body["error"]["code"]


@pytest.fixture
def lk() -> Locks:
    return Locks()


@pytest.fixture(params=["memory", "sqlite"])
def stored_lk(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Locks]:
    """`lk` over each store an in-process test can open (the timer pass reads the store's own
    deadlines and due locks)."""
    store = MemoryStore() if request.param == "memory" else SqliteStore(str(tmp_path / "s.db"))
    yield Locks(store=store)
    store.close()


# ------------------------------------------------------------------------------ in process


def test_acquire_returns_the_lock_and_another_execution_is_refused(lk: Locks) -> None:
    assert lk.acquire("r", "e1", "p1", 1000) == (201, lock_body("r", "e1", "p1", 1000, T0 + 1000))
    lk.move(T0 + 10)
    status, body = lk.acquire("r", "e2", "p2", 5000)
    assert (status, body["error"]["code"]) == (403, 4034)
    assert body["error"]["message"] and body["error"]["details"][0]["metadata"]["url"].endswith("#4034")
    assert lk.stored("r") == Lock("r", "e1", "p1", 1000, T0 + 1000)  # unchanged
    assert lk.acquire("other", "e2", "p2", 5000)[0] == 201  # another resource is free


def test_reentry_refreshes_process_ttl_and_expiry(lk: Locks) -> None:
    assert lk.acquire("r", "e1", "p1", 1000)[0] == 201
    lk.move(T0 + 500)
    assert lk.acquire("r", "e1", "p2", 3000) == (201, lock_body("r", "e1", "p2", 3000, T0 + 3500))
    assert lk.stored("r") == Lock("r", "e1", "p2", 3000, T0 + 3500)
    assert lk.heartbeat("p1") == (200, {"locksAffected": 0})  # the lock moved to p2
    assert lk.heartbeat("p2") == (200, {"locksAffected": 1})


def test_heartbeat_extends_every_lock_of_the_process_by_its_own_ttl_and_only_those(lk: Locks) -> None:
    assert lk.acquire("r1", "e1", "p1", 1000)[0] == 201
    assert lk.acquire("r2", "e2", "p1", 5000)[0] == 201
    assert lk.acquire("r3", "e3", "p2", 1000)[0] == 201
    lk.move(T0 + 600)
    assert lk.heartbeat("p1") == (200, {"locksAffected": 2})
    assert lk.stored("r1") == Lock("r1", "e1", "p1", 1000, T0 + 1600)
    assert lk.stored("r2") == Lock("r2", "e2", "p1", 5000, T0 + 5600)
    assert lk.stored("r3") == Lock("r3", "e3", "p2", 1000, T0 + 1000)
    assert lk.heartbeat("nobody") == (200, {"locksAffected": 0})
    lk.move(T0 + 1000)  # r3 expired; r1 held thanks to the heartbeat
    assert lk.acquire("r3", "x", "px")[0] == 201
    assert code(lk.acquire("r1", "x", "px")) == (403, 4034)


def test_expiry_is_at_expires_at_and_an_expired_lock_is_not_revived(lk: Locks) -> None:
    assert lk.acquire("r", "e1", "p1", 1000)[0] == 201
    lk.move(T0 + 999)
    assert code(lk.acquire("r", "e2", "p2")) == (403, 4034)
    lk.move(T0 + 1000)  # expires_at <= now: expired
    assert lk.heartbeat("p1") == (200, {"locksAffected": 0})
    assert lk.stored("r") == Lock("r", "e1", "p1", 1000, T0 + 1000)  # not extended
    assert code(lk.release("r", "e1")) == (404, 4042)  # its hold is over
    assert lk.acquire("r", "e2", "p2", 700) == (201, lock_body("r", "e2", "p2", 700, T0 + 1700))
    assert code(lk.acquire("r", "e1", "p1")) == (403, 4034)


def test_release_only_by_the_holder(lk: Locks) -> None:
    assert code(lk.release("r", "e1")) == (404, 4042)  # no lock at all
    assert lk.acquire("r", "e1", "p1")[0] == 201
    assert code(lk.release("r", "e2")) == (404, 4042)
    assert lk.stored("r") == Lock("r", "e1", "p1", 1000, T0 + 1000)
    assert lk.release("r", "e1") == (204, None)
    assert lk.stored("r") is None
    assert code(lk.release("r", "e1")) == (404, 4042)
    assert lk.acquire("r", "e2", "p2")[0] == 201


def test_the_older_field_names_for_the_duration(lk: Locks) -> None:
    base = {"resourceId": "a", "executionId": "e", "processId": "p"}
    assert lk.post("acquire", {**base, "expiryInMilliseconds": 2500}) == (201, lock_body("a", "e", "p", 2500,
                                                                                         T0 + 2500))
    assert lk.post("acquire", {**base, "resourceId": "b", "expiryInSeconds": 3}) == \
        (201, lock_body("b", "e", "p", 3000, T0 + 3000))
    # the newest name wins; JSON null counts as absent
    assert lk.post("acquire", {**base, "resourceId": "c", "ttl": 10, "expiryInMilliseconds": 20,
                               "expiryInSeconds": 30})[1]["ttl"] == 10
    assert lk.post("acquire", {**base, "resourceId": "d", "ttl": None, "expiryInSeconds": 2})[1]["ttl"] == 2000


def test_expiry_saturates_to_int64(lk: Locks) -> None:
    assert lk.acquire("r", "e", "p", I64_MAX)[1]["expiresAt"] == I64_MAX
    base = {"resourceId": "s", "executionId": "e", "processId": "p"}
    assert lk.post("acquire", {**base, "expiryInSeconds": I64_MAX})[1] == lock_body("s", "e", "p", I64_MAX, I64_MAX)


def test_the_timer_pass_deletes_a_lock_at_its_expiry(stored_lk: Locks) -> None:
    """No polling sweep: the write announces the expiry as a deadline (what wakes the timer
    loop), the store's next deadline is it, and the timeout pass deletes the lock then."""
    lk = stored_lk
    assert lk.acquire("r", "e1", "p1", 1000)[0] == 201
    assert lk.deadlines[-1] == T0 + 1000
    assert lk.service.next_deadline() == T0 + 1000
    lk.move(T0 + 999)
    lk.service.sweep()
    assert lk.stored("r") is not None
    lk.move(T0 + 1000)
    lk.service.sweep()
    assert lk.stored("r") is None and lk.service.next_deadline() is None


def test_a_heartbeat_moves_the_deadline(stored_lk: Locks) -> None:
    lk = stored_lk
    assert lk.acquire("r", "e1", "p1", 1000)[0] == 201
    lk.move(T0 + 900)
    assert lk.heartbeat("p1") == (200, {"locksAffected": 1})
    assert lk.deadlines[-1] == T0 + 1900 and lk.service.next_deadline() == T0 + 1900
    lk.move(T0 + 1000)
    lk.service.sweep()
    assert lk.stored("r") is not None  # the old expiry no longer applies
    lk.move(T0 + 1900)
    lk.service.sweep()
    assert lk.stored("r") is None


def test_the_timer_loop_deletes_an_expired_lock_nobody_touches() -> None:
    """The real timer loop on the real clock: a lock with a short ttl disappears by itself."""
    lk = Locks(clock=Clock())
    lk.timers.start()
    try:
        assert lk.acquire("r", "e1", "p1", 200)[0] == 201
        assert lk.acquire("long", "e1", "p1", 600_000)[0] == 201
        assert wait_until(lambda: lk.stored("r") is None, 10), "the expired lock was never deleted"
        assert lk.stored("long") is not None
    finally:
        lk.timers.stop()


ACQUIRE = {"resourceId": "new", "executionId": "e9", "processId": "p9", "ttl": 1000}
BAD: list[tuple[str, Any]] = [
    ("acquire", {}),
    *[("acquire", {k: v for k, v in ACQUIRE.items() if k != missing}) for missing in ACQUIRE],
    ("acquire", {**ACQUIRE, "resourceId": ""}),
    ("acquire", {**ACQUIRE, "resourceId": 5}),
    ("acquire", {**ACQUIRE, "resourceId": "r\u0000"}),
    ("acquire", {**ACQUIRE, "resourceId": "r" * 1025}),
    ("acquire", {**ACQUIRE, "executionId": None}),
    ("acquire", {**ACQUIRE, "processId": ["p"]}),
    ("acquire", {**ACQUIRE, "ttl": -1}),
    ("acquire", {**ACQUIRE, "ttl": "1000"}),
    ("acquire", {**ACQUIRE, "ttl": 1.5}),
    ("acquire", {**ACQUIRE, "ttl": 1000.0}),
    ("acquire", {**ACQUIRE, "ttl": True}),
    ("acquire", {**ACQUIRE, "ttl": 2**63}),
    ("acquire", {**ACQUIRE, "ttl": {}}),
    ("acquire", {**ACQUIRE, "ttl": None}),
    ("acquire", {k: v for k, v in ACQUIRE.items() if k != "ttl"} | {"expiryInSeconds": -1}),
    ("acquire", {k: v for k, v in ACQUIRE.items() if k != "ttl"} | {"expiryInMilliseconds": "x"}),
    ("acquire", {**ACQUIRE, "resourceId": "r", "executionId": "e1", "ttl": -5}),  # the holder, refreshing badly
    ("release", {}),
    ("release", {"resourceId": "r"}),
    ("release", {"resourceId": 7, "executionId": "e1"}),
    ("release", {"resourceId": "r", "executionId": ""}),
    ("heartbeat", {}),
    ("heartbeat", {"processId": 3}),
    ("heartbeat", {"processId": ""}),
]
NOT_JSON = [b"{", b"not json", b"[1, 2]", b'"p1"', b"null", b"", b"\xff\xfe"]


@pytest.mark.parametrize(("verb", "body"), BAD, ids=[f"{v}-{i}" for i, (v, _) in enumerate(BAD)])
def test_bad_input_is_a_json_400_and_changes_nothing(lk: Locks, verb: str, body: Any) -> None:
    assert lk.acquire("r", "e1", "p1")[0] == 201
    before = lk.all_locks()
    lk.move(T0 + 100)
    status, out = lk.post(verb, body)
    assert (status, out["error"]["code"]) == (400, 4000), out
    assert out["error"]["message"]
    assert lk.all_locks() == before


@pytest.mark.parametrize("verb", ["acquire", "release", "heartbeat"])
@pytest.mark.parametrize("raw", NOT_JSON, ids=repr)
def test_a_body_that_is_no_json_object_is_a_json_400(lk: Locks, verb: str, raw: bytes) -> None:
    assert lk.acquire("r", "e1", "p1")[0] == 201
    before = lk.all_locks()
    assert code(lk.post(verb, raw=raw)) == (400, 4000)
    assert lk.all_locks() == before


def test_unknown_lock_routes(lk: Locks) -> None:
    assert code(lk.post("steal", {"resourceId": "r"})) == (404, 4042)
    assert lk.client.get("/locks/acquire").status_code == 405


def test_locks_are_not_envelope_kinds(lk: Locks) -> None:
    """`POST /` does not serve the REST API's kinds."""
    env = {"kind": "rest.lock.acquire", "head": {"corrId": "c", "version": "2026-04-01"}, "data": ACQUIRE}
    r = lk.client.post("/", json=env)
    assert r.get_json()["head"]["status"] == 400
    assert lk.all_locks() == []


def test_legacy_off_answers_410() -> None:
    svc = Service(MemoryStore(), load({"legacy.enabled": False}, env={}))
    r = Client(create_app(svc, None)).post("/locks/acquire", json=ACQUIRE)
    assert r.status_code == 410 and "error" in r.get_json()
    assert svc.store.read(lambda tx: tx.get_lock("new")) is None


# ------------------------------------------------------------------ in process, with auth on

A, B = "tenantA/", "tenantB/"


@pytest.fixture(scope="module")
def key() -> KeyPair:
    return KeyPair("ed25519")


def token(key: KeyPair, prefix: str | None) -> str:
    if prefix is None:
        return key.sign(claims(3600, role="admin"))
    return key.sign(claims(3600, role="worker", prefix=prefix))


@pytest.fixture
def authed(key: KeyPair, tmp_path: Path) -> Locks:
    return Locks(env={"RESONATE_AUTH__PUBLICKEY": key.write(tmp_path)})


def test_a_prefix_token_reaches_no_lock_outside_its_prefix(authed: Locks, key: KeyPair) -> None:
    lk, a, b = authed, token(key, A), token(key, B)
    assert lk.acquire(B + "r", "eb", "shared", 1000, token=b)[0] == 201
    before = lk.all_locks()
    assert code(lk.acquire(B + "r", "eb", "shared", 9000, token=a)) == (403, 4039)  # even naming the holder
    assert code(lk.acquire(B + "new", "ea", "shared", token=a)) == (403, 4039)
    assert code(lk.release(B + "r", "eb", token=a)) == (403, 4039)
    assert lk.all_locks() == before
    assert code(lk.acquire(B + "r", "eb", "shared")) == (401, 4010)  # no token
    assert code(lk.heartbeat("shared")) == (401, 4010)
    assert lk.all_locks() == before
    assert lk.acquire(A + "r", "ea", "shared", 1000, token=a)[0] == 201
    assert lk.release(B + "r", "eb", token=b) == (204, None)


def test_a_heartbeat_extends_only_the_callers_locks_of_a_shared_process(authed: Locks, key: KeyPair) -> None:
    lk, a, b = authed, token(key, A), token(key, B)
    assert lk.acquire(A + "r", "ea", "shared", 1000, token=a)[0] == 201
    assert lk.acquire(B + "r", "eb", "shared", 1000, token=b)[0] == 201
    lk.move(T0 + 500)
    assert lk.heartbeat("shared", token=a) == (200, {"locksAffected": 1})
    assert lk.stored(A + "r") == Lock(A + "r", "ea", "shared", 1000, T0 + 1500)
    assert lk.stored(B + "r") == Lock(B + "r", "eb", "shared", 1000, T0 + 1000)
    lk.move(T0 + 700)
    assert lk.heartbeat("shared", token=token(key, None)) == (200, {"locksAffected": 2})  # an admin: every one
    assert lk.heartbeat("shared", token=token(key, "tenantC/")) == (200, {"locksAffected": 0})


# ------------------------------------------------------------------------------ as processes

def uid() -> str:
    return uuid.uuid4().hex[:10] + "/"


def rest(srv: ServerProc, verb: str, body: Any = None, raw: bytes | None = None,
         token: str | None = None) -> Reply:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    if raw is not None:
        r = srv.request("POST", f"/locks/{verb}", data=raw, headers=headers)
    else:
        r = srv.request("POST", f"/locks/{verb}", json=body, headers=headers)
    if r.status_code == 204:
        assert r.content == b""
        return 204, None
    assert r.headers["Content-Type"].startswith("application/json"), (r.status_code, r.text)
    return r.status_code, r.json()


def acq(srv: ServerProc, resource: str, execution: str, process: str, ttl: int, **kw: Any) -> Reply:
    return rest(srv, "acquire", {"resourceId": resource, "executionId": execution, "processId": process,
                                 "ttl": ttl}, **kw)


def rel(srv: ServerProc, resource: str, execution: str, **kw: Any) -> Reply:
    return rest(srv, "release", {"resourceId": resource, "executionId": execution}, **kw)


def hb(srv: ServerProc, process: str, **kw: Any) -> Reply:
    return rest(srv, "heartbeat", {"processId": process}, **kw)


LONG = 600_000


def test_contention_reentry_and_release_over_http(process_live: ServerProc) -> None:
    srv, x = process_live, uid()
    before = int(time.time() * 1000)
    status, lock = acq(srv, x + "r", "e1", x + "p1", LONG)
    after = int(time.time() * 1000)
    assert status == 201
    assert {k: v for k, v in lock.items() if k != "expiresAt"} == \
        {"resourceId": x + "r", "executionId": "e1", "processId": x + "p1", "ttl": LONG, "expiryInMilliseconds": LONG}
    assert before + LONG - 1000 <= lock["expiresAt"] <= after + LONG + 1000  # now + ttl (clocks may differ a little)
    assert code(acq(srv, x + "r", "e2", x + "p2", LONG)) == (403, 4034)
    status, again = acq(srv, x + "r", "e1", x + "p2", 2 * LONG)  # re-entry moves it to p2
    assert status == 201 and again["processId"] == x + "p2" and again["ttl"] == 2 * LONG
    assert again["expiresAt"] >= lock["expiresAt"] + LONG
    assert hb(srv, x + "p1") == (200, {"locksAffected": 0})
    assert hb(srv, x + "p2") == (200, {"locksAffected": 1})
    assert code(rel(srv, x + "r", "e2")) == (404, 4042)
    assert code(acq(srv, x + "r", "e2", x + "p2", LONG)) == (403, 4034)  # the non-holder's release changed nothing
    assert rel(srv, x + "r", "e1") == (204, None)
    assert code(rel(srv, x + "r", "e1")) == (404, 4042)
    assert acq(srv, x + "r", "e2", x + "p2", LONG)[0] == 201


def test_heartbeat_keeps_every_lock_of_the_process_and_only_those(process_live: ServerProc) -> None:
    """p1's two locks and p2's one share a short ttl, p1's taken first. Heartbeating p1 only,
    p2's lock lapses first (wait for it); p1's locks, which would have lapsed earlier without
    the heartbeats, are still held then."""
    srv, x, ttl = process_live, uid(), 3000
    assert acq(srv, x + "r1", "e1", x + "p1", ttl)[0] == 201
    assert acq(srv, x + "r2", "e2", x + "p1", ttl)[0] == 201
    assert acq(srv, x + "r3", "e3", x + "p2", ttl)[0] == 201

    def p2_lapsed() -> bool:
        assert hb(srv, x + "p1") == (200, {"locksAffected": 2})
        if acq(srv, x + "r3", "other", x + "q", LONG)[0] != 201:
            return False
        for r in ("r1", "r2"):  # right after a heartbeat: held for another ttl
            assert code(acq(srv, x + r, "other", x + "q", LONG)) == (403, 4034), r
        return True

    assert wait_until(p2_lapsed, 10, interval=0.1), "p2's lock never lapsed"
    assert hb(srv, x + "p2") == (200, {"locksAffected": 0})


def test_an_expired_lock_can_be_taken_by_another_execution(process_live: ServerProc) -> None:
    srv, x = process_live, uid()
    assert acq(srv, x + "r", "e1", x + "p1", 100)[0] == 201
    assert wait_until(lambda: acq(srv, x + "r", "e2", x + "p2", LONG)[0] == 201, 10), "the lock never expired"
    assert code(rel(srv, x + "r", "e1")) == (404, 4042)
    assert hb(srv, x + "p1") == (200, {"locksAffected": 0})
    assert rel(srv, x + "r", "e2") == (204, None)


PROCESS_BAD = [("acquire", {"executionId": "e9", "processId": "p9", "ttl": 1}),
               ("acquire", {"resourceId": "R", "executionId": "e9", "processId": "p9", "ttl": -1}),
               ("acquire", {"resourceId": "R", "executionId": "e9", "processId": "p9", "ttl": "5"}),
               ("acquire", {"resourceId": "R", "executionId": "e1", "processId": "p9", "ttl": 1.5}),
               ("release", {"resourceId": "R"}), ("heartbeat", {"processId": 1})]


def test_bad_input_over_http_is_a_json_400_and_changes_nothing(process_live: ServerProc) -> None:
    srv, x = process_live, uid()
    assert acq(srv, x + "R", "e1", x + "p1", LONG)[0] == 201
    for verb, body in PROCESS_BAD:
        body = {k: x + v if k in ("resourceId", "processId") and isinstance(v, str) else v for k, v in body.items()}
        assert code(rest(srv, verb, body)) == (400, 4000), (verb, body)
    for raw in (b"{", b"[]", b""):
        assert code(rest(srv, "acquire", raw=raw)) == (400, 4000)
    assert code(acq(srv, x + "R", "e2", x + "p2", LONG)) == (403, 4034)  # still held by e1
    assert hb(srv, x + "p1") == (200, {"locksAffected": 1})
    assert hb(srv, x + "p9") == (200, {"locksAffected": 0})  # nothing was taken for p9


@pytest.fixture(scope="module", params=process_backends())
def auth_srv(request: pytest.FixtureRequest, key: KeyPair,
             tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProc]:
    work = tmp_path_factory.mktemp(f"locks-auth-{request.param}")
    s = start_server(request.param, work, env={"RESONATE_AUTH__PUBLICKEY": key.write(work)})
    s.token = token(key, None)
    yield s
    s.stop()


def test_prefix_tokens_over_http(auth_srv: ServerProc, key: KeyPair) -> None:
    srv, x = auth_srv, uid()
    a, b, admin = token(key, A + x), token(key, B + x), token(key, None)
    assert acq(srv, B + x + "r", "eb", x + "shared", LONG, token=b)[0] == 201
    assert acq(srv, A + x + "r", "ea", x + "shared", LONG, token=a)[0] == 201
    assert code(acq(srv, B + x + "r", "eb", x + "shared", LONG, token=a)) == (403, 4039)
    assert code(acq(srv, B + x + "new", "ea", x + "shared", LONG, token=a)) == (403, 4039)
    assert code(rel(srv, B + x + "r", "eb", token=a)) == (403, 4039)
    assert code(acq(srv, B + x + "r", "eb", x + "shared", LONG)) == (401, 4010)
    assert hb(srv, x + "shared", token=a) == (200, {"locksAffected": 1})
    assert hb(srv, x + "shared", token=b) == (200, {"locksAffected": 1})
    assert hb(srv, x + "shared", token=admin) == (200, {"locksAffected": 2})
    assert acq(srv, B + x + "new", "eb", x + "shared", LONG, token=b)[0] == 201  # nothing took it
    assert rel(srv, B + x + "r", "eb", token=b) == (204, None)  # still held by eb
    assert rel(srv, A + x + "r", "ea", token=a) == (204, None)
