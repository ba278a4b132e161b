"""HTTP pushes through Pub/Sub (dispatch.topic), against the REAL Pub/Sub emulator.

The cloud simulation's functions publish each push row to a dispatch topic; the emulator's push
subscription calls an OIDC relay (the emulator signs nothing; the relay adds a Google-format
token whose certificate the functions fetch from `dispatch.certs_url`) that forwards to the
`dispatch` function, which pushes to the HTTP worker. No network; the emulator missing FAILS.

Emulator behaviour these tests rely on (measured): a push answered non-2xx is redelivered
about every 1 s (with a retry_policy set it waits 1 s, then 3 s: slower, so none is set);
dead-lettering works (the message lands in the dead-letter topic after max_delivery_attempts,
with CloudPubSubDeadLetterSourceDeliveryCount); pushes carry no `deliveryAttempt` field, so
the row's own failure count decides the last attempt there, and the `deliveryAttempt` path is
checked by posting envelopes directly.
"""
from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pg8000.native
import pytest
import requests

from shared.records import Message
from shared.storage.postgres_outbox import DEAD, key_text
from tests.support.cloudsim import SimServer, start_pubsub_cloudsim
from tests.support.fake_google_oidc import Issuer
from tests.support.pg import pg_template, pg_url  # noqa: F401 (fixtures)
from tests.support.pubsub import Emulator, pubsub_emulator  # noqa: F401 (fixture)
from tests.support.wait import wait_until
from tests.test_cli import cli

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.cloudsim]

HOUR = 3_600_000
MAX_ATTEMPTS = 5


class Worker:
    """The HTTP worker: /ok answers 200, /flaky/<id> fails its first 2 pushes, /down 500 until
    its path is in `healed`."""

    def __init__(self) -> None:
        self.hits: list[tuple[str, dict, int]] = []  # (path, body, status)
        self.lock = threading.Lock()
        self.healed: set[str] = set()
        worker = self

        class H(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with worker.lock:
                    seen = sum(1 for p, _, _ in worker.hits if p == self.path)
                    down = self.path.startswith("/down") and self.path not in worker.healed
                    status = 500 if down or (self.path.startswith("/flaky") and seen < 2) else 200
                    worker.hits.append((self.path, body, status))
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *a: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), H)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_port}{path}"

    def at(self, path: str) -> list[tuple[str, dict, int]]:
        with self.lock:
            return [h for h in self.hits if h[0] == path]


@pytest.fixture(scope="module")
def worker() -> Iterator[Worker]:
    w = Worker()
    yield w
    w.httpd.shutdown()


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory, pubsub_emulator: Emulator) -> Iterator[SimServer]:
    srv = start_pubsub_cloudsim(tmp_path_factory.mktemp("pubsub-sim"), pubsub_emulator, max_attempts=MAX_ATTEMPTS,
                                api=1, tick=2)
    yield srv
    srv.stop()



def db(srv: SimServer) -> pg8000.native.Connection:
    return pg8000.native.Connection(user="postgres", host="127.0.0.1", database=srv.pg_url.rsplit("/", 1)[1])


def rows(srv: SimServer, id: str) -> list[tuple]:
    """(seq, version, attempts, dead, claimed_until) of the outbox rows for `id`."""
    c = db(srv)
    try:
        return [tuple(r) for r in c.run("SELECT seq, version, attempts, claimed_until >= :d, claimed_until"
                                        " FROM outbox WHERE id = :i ORDER BY seq", d=DEAD, i=id)]
    finally:
        c.close()


def insert_row(srv: SimServer, id: str, address: str, lease_ms: int) -> int:
    """An execute row written as a commit would (lease_ms > 0: as if already published)."""
    m = Message("execute", id, address, 1)
    c = db(srv)
    try:
        return c.run("INSERT INTO outbox (key, kind, id, address, version, created_at, claimed_until)"
                     " VALUES (:k, 'execute', :i, :a, 1, 0, CASE WHEN :l > 0 THEN"
                     " (extract(epoch from clock_timestamp()) * 1000)::bigint + :l ELSE 0 END) RETURNING seq",
                     k=key_text(m), i=id, a=address, l=lease_ms)[0][0]
    finally:
        c.close()


def envelope(seq: int, version: int = 1, attempt: int | None = None) -> dict:
    data = base64.b64encode(json.dumps({"seq": seq, "version": version}).encode()).decode()
    env: dict[str, Any] = {"message": {"data": data, "messageId": "1", "attributes": {"kind": "execute"}},
                           "subscription": "projects/resonate-test/subscriptions/direct"}
    if attempt is not None:
        env["deliveryAttempt"] = attempt
    return env


def post(srv: SimServer, env: dict, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token is not None else {}
    return requests.post(srv.sim.service_url("dispatch"), json=env, headers=headers, timeout=30)


def create(srv: SimServer, id: str, target: str | None = None) -> None:
    tags = {"resonate:target": target} if target else {}
    st, d = srv.rpc("promise.create", {"id": id, "timeoutAt": int(time.time() * 1000) + HOUR, "tags": tags})
    assert st == 200, d


def forwarded(srv: SimServer, seq: int) -> list[int]:
    """The dispatch function's answers to the emulator's pushes of row `seq`, in order."""
    return [st for st, env in srv.relay.pushed()
            if json.loads(base64.b64decode(env["message"]["data"]))["seq"] == seq]


def test_task_reaches_the_worker_through_pubsub_despite_two_failures(sim: SimServer, worker: Worker):
    id = "flaky-" + uuid.uuid4().hex[:8]
    path = f"/flaky/{id}"
    t0 = time.monotonic()
    create(sim, id, worker.url(path))
    (seq, version, _, dead, claimed), = rows(sim, id)  # claimed for the whole retry period
    assert not dead and claimed > time.time() * 1000 + 10 * 60_000
    assert wait_until(lambda: [s for _, _, s in worker.at(path)] == [500, 500, 200], 20), (worker.at(path), sim.logs())
    took = time.monotonic() - t0
    assert wait_until(lambda: rows(sim, id) == [], 5), rows(sim, id)
    body = worker.at(path)[-1][1]
    assert body == {"kind": "execute", "head": {"serverUrl": sim.url}, "data": {"task": {"id": id, "version": version}}}
    # each push went emulator -> relay (OIDC) -> dispatch function -> worker; the api pushed nothing
    # the relay notes an answer once the dispatch function has sent it, after the worker saw the push
    assert wait_until(lambda: forwarded(sim, seq) == [500, 500, 200], 10), forwarded(sim, seq)
    time.sleep(1.5)
    assert len(worker.at(path)) == 3 and forwarded(sim, seq) == [500, 500, 200]  # acked: not redelivered
    assert took < 120, took  # redelivered on Pub/Sub's backoff, not after the row's 10-minute claim


def test_unblock_to_an_http_listener_goes_through_pubsub(sim: SimServer, worker: Worker):
    id = "awaited-" + uuid.uuid4().hex[:8]
    path = f"/ok/{id}"
    create(sim, id)
    assert sim.rpc("promise.register_listener", {"awaited": id, "address": worker.url(path)})[0] == 200
    assert sim.rpc("promise.settle", {"id": id, "state": "resolved", "value": {"data": "NDI="}})[0] == 200
    assert wait_until(lambda: len(worker.at(path)) == 1, 10), sim.logs()
    body = worker.at(path)[0][1]
    assert body["kind"] == "unblock" and body["data"]["promise"]["id"] == id, body
    assert body["data"]["promise"]["state"] == "resolved" and body["data"]["promise"]["value"]["data"] == "NDI="
    assert wait_until(lambda: rows(sim, id) == [], 5)


def test_sweeper_publishes_a_row_whose_message_was_lost(sim: SimServer, worker: Worker):
    id = "lost-" + uuid.uuid4().hex[:8]
    path = f"/ok/{id}"
    seq = insert_row(sim, id, worker.url(path), lease_ms=0)  # committed, never published (instance died)
    assert wait_until(lambda: len(worker.at(path)) == 1, 15), sim.logs()  # the next tick's re-drive
    assert wait_until(lambda: forwarded(sim, seq) == [200], 10), forwarded(sim, seq)  # noted after the answer
    assert wait_until(lambda: rows(sim, id) == [], 5)


def test_dispatch_refuses_bad_tokens_and_changes_nothing(sim: SimServer, worker: Worker):
    id = "auth-" + uuid.uuid4().hex[:8]
    path = f"/ok/{id}"
    seq = insert_row(sim, id, worker.url(path), lease_ms=HOUR)  # as if published
    before = rows(sim, id)
    r = sim.relay
    stranger = Issuer(kid=r.issuer.kid)  # right kid, wrong key
    cases = {
        "no token": (None, 401),
        "not a JWT": ("abc.def.ghi", 401),
        "expired": (r.mint(lifetime_s=-600), 401),
        "wrong audience": (r.mint(audience="https://elsewhere.test"), 401),
        "wrong issuer": (r.mint(iss="https://evil.test"), 401),
        "signed by another key": (r.mint(signer=stranger), 401),
        "service account not allowed": (r.mint(email="intruder@resonate-test.iam.gserviceaccount.com"), 403),
        "email not verified": (r.mint(email_verified=False), 403),
    }
    for name, (token, want) in cases.items():
        got = post(sim, envelope(seq), token)
        assert got.status_code == want, (name, got.status_code, got.text)
    assert requests.post(sim.sim.service_url("dispatch"), json=envelope(seq), timeout=30,
                         headers={"Authorization": "Basic " + r.mint()}).status_code == 401
    assert rows(sim, id) == before and worker.at(path) == []  # nothing changed, nothing pushed
    ok = post(sim, envelope(seq), r.mint())
    assert ok.status_code == 200 and ok.json() == {"status": "delivered"}, ok.text
    assert len(worker.at(path)) == 1 and rows(sim, id) == []


def test_message_for_a_gone_or_replaced_row_is_acked_with_nothing_to_do(sim: SimServer, worker: Worker):
    id = "gone-" + uuid.uuid4().hex[:8]
    path = f"/ok/{id}"
    seq = insert_row(sim, id, worker.url(path), lease_ms=HOUR)
    token = sim.relay.mint()
    assert post(sim, envelope(seq, version=7), token).json() == {"status": "gone"}  # replaced by version 1
    assert post(sim, envelope(seq + 10_000), token).json() == {"status": "gone"}
    bad = {"message": {"data": base64.b64encode(b"not json").decode(), "messageId": "9"}, "subscription": "s"}
    assert post(sim, bad, token).json() == {"status": "malformed"}  # 200: retrying cannot help
    assert worker.at(path) == [] and len(rows(sim, id)) == 1


def test_worker_that_always_fails_ends_in_the_dead_letter_topic(sim: SimServer, worker: Worker,
                                                                pubsub_emulator: Emulator):
    id = "down-" + uuid.uuid4().hex[:8]
    path = f"/down/{id}"
    create(sim, id, worker.url(path))
    (seq, version, _, _, _), = rows(sim, id)
    assert wait_until(lambda: rows(sim, id)[0][3], 20), (rows(sim, id), worker.at(path))  # marked dead
    assert rows(sim, id)[0][2] == MAX_ATTEMPTS and len(worker.at(path)) == MAX_ATTEMPTS
    dead = pubsub_emulator.pull(sim.dead_subscription, want=1, timeout=10)
    mine = [(d, a) for d, a in dead if json.loads(d) == {"seq": seq, "version": version}]
    assert mine and mine[0][1]["CloudPubSubDeadLetterSourceDeliveryCount"] == str(MAX_ATTEMPTS), dead
    assert wait_until(lambda: forwarded(sim, seq) == [500] * MAX_ATTEMPTS, 10), forwarded(sim, seq)
    time.sleep(2.5)  # a sweeper tick later: a dead row is never published again
    assert len(worker.at(path)) == MAX_ATTEMPTS and rows(sim, id)[0][3]


def test_pubsubs_last_delivery_attempt_marks_the_row_dead(sim: SimServer, worker: Worker):
    """Real Pub/Sub sends `deliveryAttempt` when dead-lettering is on (the emulator does not):
    the attempt it calls the last one marks the row dead whatever the row counted."""
    id = "last-" + uuid.uuid4().hex[:8]
    path = f"/down/{id}"
    seq = insert_row(sim, id, worker.url(path), lease_ms=HOUR)
    token = sim.relay.mint()
    first = post(sim, envelope(seq, attempt=1), token)
    assert first.status_code == 500 and first.json() == {"status": "failed", "attempts": 1, "dead": False}
    assert rows(sim, id)[0][2:4] == (1, False)
    last = post(sim, envelope(seq, attempt=MAX_ATTEMPTS), token)
    assert last.status_code == 500 and last.json() == {"status": "failed", "attempts": 2, "dead": True}
    assert rows(sim, id)[0][2:4] == (2, True)
    again = post(sim, envelope(seq, attempt=MAX_ATTEMPTS + 1), token)  # a late duplicate
    assert again.status_code == 200 and again.json() == {"status": "dead"}
    assert len(worker.at(path)) == 2


def test_a_failed_publish_makes_the_row_claimable_again_soon(pg_url: str, pubsub_emulator: Emulator):
    """In process, the real client against the emulator: publishing to a topic that does not
    exist fails, and the row's long claim is replaced by a short one (failures not counted)."""
    from shared.config import load
    from shared.runtime import Runtime
    from tests.support.server import VERSION

    cfg = load({"storage.type": "postgres", "storage.postgres.url": pg_url,
                "dispatch.topic": pubsub_emulator.topic_path("no-such-topic"), "dispatch.audience": "a",
                "dispatch.service_accounts": ("x@y",)}, env={})
    rt = Runtime(cfg, background=False, metrics=False)
    rt.start()
    try:
        env = {"kind": "promise.create", "head": {"corrId": "c", "version": VERSION},
               "data": {"id": "pf", "timeoutAt": int(time.time() * 1000) + HOUR,
                        "tags": {"resonate:target": "http://127.0.0.1:9/never"}}}
        t0 = time.time() * 1000
        st, _ = rt.service.rpc(json.dumps(env).encode())
        assert st == 200

        def lease() -> tuple[int, int]:
            return rt.store.read(lambda tx: tx._x("SELECT claimed_until, attempts FROM outbox WHERE id = 'pf'"))[0]

        assert wait_until(lambda: lease()[0] < t0 + 60_000, 15), lease()
        until, attempts = lease()
        assert t0 < until <= time.time() * 1000 + 5_000 and attempts == 0
    finally:
        rt.stop(5)


def dead_letters(sim: SimServer, emu: Emulator) -> list[int]:
    """The rows named by the dead-letter subscription's messages (a dry run: they stay)."""
    out = cli("messages", "redrive", "--pubsub", "--subscription", sim.dead_subscription, "--topic", sim.topic,
              "--dry-run", "--json", env=emu.env())
    return [m.get("seq") for m in out.json()["messages"]]


def test_dead_letters_are_redriven_from_pubsub_and_from_the_outbox(sim: SimServer, worker: Worker,
                                                                  pubsub_emulator: Emulator):
    """Two rows die the Pub/Sub way. Once the worker recovers, one comes back through
    `messages redrive ID` against the api (its commit publishes the row again), then the other
    through `messages redrive --pubsub` (the dispatch function revives its row and pushes); the
    first one's dead letter, moved back too, finds its row gone and pushes nothing twice."""
    ids = ["dlq-" + uuid.uuid4().hex[:8] for _ in range(2)]
    paths = [f"/down/{id}" for id in ids]
    for id, path in zip(ids, paths):
        create(sim, id, worker.url(path))
    assert wait_until(lambda: all(rows(sim, id)[0][3] for id in ids), 30), [rows(sim, id) for id in ids]
    seqs = [rows(sim, id)[0][0] for id in ids]
    assert wait_until(lambda: set(seqs) <= set(dead_letters(sim, pubsub_emulator)), 60)
    listed = cli("messages", "list", "--dead", "-S", sim.url, "--json").json()["messages"]
    assert {m["id"] for m in listed} >= set(seqs)
    worker.healed.update(paths)

    # from the outbox, through the api: the row is claimable again and its commit publishes it
    out = cli("messages", "redrive", str(seqs[1]), "-S", sim.url, "--json").json()
    assert [m["id"] for m in out["redriven"]] == [seqs[1]], out
    assert wait_until(lambda: rows(sim, ids[1]) == [], 30), (rows(sim, ids[1]), worker.at(paths[1]))
    assert [st for _, _, st in worker.at(paths[1])] == [500] * MAX_ATTEMPTS + [200]

    # the Pub/Sub shape: every dead letter goes back to the dispatch topic, ours among them
    out = cli("messages", "redrive", "--pubsub", "--subscription", sim.dead_subscription, "--topic", sim.topic,
              "--json", env=pubsub_emulator.env()).json()
    assert set(seqs) <= {m["seq"] for m in out["messages"]}, out
    assert wait_until(lambda: rows(sim, ids[0]) == [], 30), (rows(sim, ids[0]), worker.at(paths[0]))
    assert [st for _, _, st in worker.at(paths[0])] == [500] * MAX_ATTEMPTS + [200]
    assert wait_until(lambda: len(forwarded(sim, seqs[1])) == MAX_ATTEMPTS + 2, 20)  # the late one: acked, gone
    assert forwarded(sim, seqs[1])[-1] == 200 and len(worker.at(paths[1])) == MAX_ATTEMPTS + 1
    assert not set(seqs) & set(dead_letters(sim, pubsub_emulator))  # the dead-letter subscription let go
