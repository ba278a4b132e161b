"""The idempotency-key / Strict matrix of the REST promise routes against the spec's tables.

Every case: a promise brought to a starting state (init, pending, resolved, rejected, canceled,
timed out) with or without stored idempotency keys, then one create / resolve / reject / cancel
with Strict true or false and a request key that matches the stored one, differs, or is absent.
The expected answer (status, error code, then state and both stored keys) comes from `expect`, an
oracle written from the older server's idempotency tables (docs/legacy-api.md#idempotency-keys-and-strict)
and what its published clients expect, not from the implementation: a key matches only when both are present and equal; create answers 201/200/
409, complete 201/200/403/404; a timed-out promise accepts any non-strict completion (200,
unchanged) and refuses a strict one (403).

Run in process (flask test client over the memory store) and over the REST routes of a server
process on every backend (unique ids per case, so one server per backend serves all cases).
"""
from __future__ import annotations

import itertools
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from tests.support.server import InprocServer, ServerProc

KC, KU, OTHER = "key-create", "key-complete", "key-other"  # stored at create / at completion; a stranger
STATES = ("init", "pending", "resolved", "rejected", "canceled", "timedout")
OPS = ("create", "resolve", "reject", "cancel")
TARGET = {"resolve": "RESOLVED", "reject": "REJECTED", "cancel": "REJECTED_CANCELED"}
COMPLETED = {"resolved": "RESOLVED", "rejected": "REJECTED", "canceled": "REJECTED_CANCELED",
             "timedout": "REJECTED_TIMEDOUT"}
ALREADY = {"RESOLVED": 4030, "REJECTED": 4031, "REJECTED_CANCELED": 4032, "REJECTED_TIMEDOUT": 4033}  # the REST error codes (docs/legacy-api.md#objects-and-errors)
NOT_FOUND, EXISTS = 4040, 4090
FOREVER = sys.maxsize  # what the clients send


@dataclass(frozen=True)
class Case:
    state: str
    op: str
    strict: bool
    key: str  # the request's key: "match" (the stored one this operation compares with), "other", "absent"
    stored: bool  # the starting promise was created (and completed) with keys

    @property
    def id(self) -> str:
        return (f"{self.state}-{self.op}-{'strict' if self.strict else 'lax'}-key_{self.key}"
                + ("" if self.stored or self.state == "init" else "-unkeyed"))

    def request_key(self) -> str | None:
        return {"absent": None, "other": OTHER}.get(self.key, KC if self.op == "create" else KU)


@dataclass(frozen=True)
class Outcome:
    status: int
    code: int | None  # the error body's code
    state: str | None  # after the request (None: still no promise)
    ikc: str | None
    iku: str | None


def matches(ik: str | None, stored: str | None) -> bool:
    return ik is not None and stored is not None and ik == stored


def expect(c: Case) -> Outcome:
    """The create and complete tables of docs/legacy-api.md#idempotency-keys-and-strict, as code."""
    ik = c.request_key()
    if c.state == "init":
        if c.op == "create":
            return Outcome(201, None, "PENDING", ik, None)
        return Outcome(404, NOT_FOUND, None, None, None)
    ikc = KC if c.stored else None
    iku = KU if c.stored and c.state in ("resolved", "rejected", "canceled") else None
    before = "PENDING" if c.state == "pending" else COMPLETED[c.state]
    same = Outcome(200, None, before, ikc, iku)
    if c.op == "create":
        ok = matches(ik, ikc) if before == "PENDING" else not c.strict and matches(ik, ikc)
        return same if ok else Outcome(409, EXISTS, before, ikc, iku)
    s = TARGET[c.op]
    if before == "PENDING":
        return Outcome(201, None, s, ikc, ik)
    if before == "REJECTED_TIMEDOUT":
        ok = not c.strict  # any key: a late completion of a timed-out promise is no error unless strict
    else:
        ok = matches(ik, iku) and (not c.strict or before == s)
    return same if ok else Outcome(403, ALREADY[before], before, ikc, iku)


def cases() -> Iterator[Case]:
    for state, op, strict, key, stored in itertools.product(STATES, OPS, (False, True), ("match", "other", "absent"),
                                                            (True, False)):
        if not stored and (state == "init" or key == "match"):
            continue  # no stored key: nothing to match; init has none either way
        yield Case(state, op, strict, key, stored)


CASES = list(cases())


# ---- driving the REST routes -----------------------------------------------------------------


def headers(ik: str | None, strict: bool) -> dict[str, str]:
    out = {"Strict": str(strict)}  # `True`/`False`, as the clients send it
    if ik is not None:
        out["Idempotency-Key"] = ik
    return out


def create(srv: Any, id: str, ik: str | None, strict: bool, timeout: int = FOREVER) -> Any:
    return srv.request("POST", "/promises", json={"id": id, "param": {}, "timeout": timeout, "tags": {}},
                       headers=headers(ik, strict))


def complete(srv: Any, id: str, state: str, ik: str | None, strict: bool) -> Any:
    return srv.request("PATCH", f"/promises/{id}", json={"state": state, "value": {}}, headers=headers(ik, strict))


def setup(srv: Any, c: Case, id: str) -> None:
    """The starting state, through the same routes (each step must succeed)."""
    if c.state == "init":
        return
    ikc, iku = (KC, KU) if c.stored else (None, None)
    r = create(srv, id, ikc, False, 0 if c.state == "timedout" else FOREVER)
    assert r.status_code == 201, r.text
    if c.state in ("resolved", "rejected", "canceled"):
        r = complete(srv, id, COMPLETED[c.state], iku, False)
        assert r.status_code == 201, r.text


def observed(srv: Any, c: Case, id: str) -> tuple[Outcome, Any]:
    """The answer to the case's request, and the promise read back afterwards."""
    ik = c.request_key()
    r = create(srv, id, ik, c.strict) if c.op == "create" else complete(srv, id, TARGET[c.op], ik, c.strict)
    body = r.json()
    code = body["error"]["code"] if r.status_code >= 400 else None
    got = srv.request("GET", f"/promises/{id}")
    if got.status_code == 404:
        return Outcome(r.status_code, code, None, None, None), body
    assert got.status_code == 200, got.text
    p = got.json()
    return Outcome(r.status_code, code, p["state"], p.get("idempotencyKeyForCreate"),
                   p.get("idempotencyKeyForComplete")), (body, p)


def check(srv: Any, c: Case) -> None:
    id = f"ik-{uuid.uuid4().hex[:12]}-{c.id}"
    setup(srv, c, id)
    want = expect(c)
    got, bodies = observed(srv, c, id)
    assert got == want, f"{c.id}: {bodies}"
    if want.status < 300:  # a success answers with the promise as it now is
        body, stored = bodies
        assert body == stored, f"{c.id}: answered {body}, stored {stored}"


def test_oracle_reads_the_tables() -> None:
    """The oracle against sentences of the older server's rules (create, complete and their
    consequences), so that a
    mistake in it cannot hide behind the implementation agreeing with it."""
    o = lambda *a: expect(Case(*a))
    # a non-strict retry of "resolve" with the same key is answered 200 even if the first was "reject"
    assert o("rejected", "resolve", False, "match", True).status == 200
    assert o("rejected", "resolve", True, "match", True) == Outcome(403, 4031, "REJECTED", KC, KU)
    # a request without a key never matches, so it is never deduplicated
    assert o("pending", "create", False, "absent", False).status == 409
    assert o("resolved", "resolve", False, "absent", False).status == 403
    # pending: a create with the create key is a retry, strict or not; any completion completes
    assert o("pending", "create", True, "match", True) == Outcome(200, None, "PENDING", KC, None)
    assert o("pending", "cancel", True, "absent", True) == Outcome(201, None, "REJECTED_CANCELED", KC, None)
    # completed: a strict create is always a conflict
    assert o("canceled", "create", True, "match", True) == Outcome(409, 4090, "REJECTED_CANCELED", KC, KU)
    # timed out: a non-strict late completion is no error and changes nothing; a strict one is 403
    assert o("timedout", "resolve", False, "other", True) == Outcome(200, None, "REJECTED_TIMEDOUT", KC, None)
    assert o("timedout", "reject", True, "match", True) == Outcome(403, 4033, "REJECTED_TIMEDOUT", KC, None)
    assert o("init", "reject", False, "match", True) == Outcome(404, 4040, None, None, None)
    assert len(CASES) == 4 * 2 * 3 + 5 * 4 * 2 * (3 + 2)
    assert {expect(c).status for c in CASES} == {200, 201, 403, 404, 409}


@pytest.fixture(scope="module")
def inproc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[InprocServer]:
    srv = InprocServer(tmp_path_factory.mktemp("legacy-ik"), debug=False)
    yield srv
    srv.stop()


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_in_process(inproc: InprocServer, case: Case) -> None:
    check(inproc, case)


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_rest(process_server: ServerProc, case: Case) -> None:
    check(process_server, case)

