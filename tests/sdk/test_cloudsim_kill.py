"""Kills in the simulated cloud, arranged as deployed by default: one base URL served by the
`api` function's instances (SSE streams included), no path split.

* The instance holding a worker's SSE stream is SIGKILLed (both SDKs): the worker reconnects
  through the same URL to a live instance and then runs a workflow.
* Chaos: function processes SIGKILLed at random while 100 official-SDK workflows run. Every
  workflow must complete, and no step whose completion the server had acknowledged may run
  again (a step may legitimately re-run only if its result never became durable, e.g. the
  instance died before committing it).
"""
from __future__ import annotations

import random
import re
import threading
import time

import pytest
import requests

from tests.sdk import scenarios
from tests.sdk.harness import Harness, wait_until
from tests.support.cloudsim import SimServer, start_cloudsim

pytestmark = [pytest.mark.process, pytest.mark.postgres, pytest.mark.cloudsim]


@pytest.fixture(scope="module")
def stream_sim(tmp_path_factory):
    # keep-alives every second: a stream whose worker is gone is noticed (and uncounted) within one
    srv = start_cloudsim(tmp_path_factory.mktemp("sim-stream"), tick=60.0, window_ms=65_000, dispatch=0,
                         env={"RESONATE_TASKS__RETRY_TIMEOUT": "1000",
                              "RESONATE_TRANSPORTS__HTTP_POLL__KEEPALIVE_INTERVAL": "1000"})
    yield srv
    srv.stop()


def streams(srv: SimServer) -> dict[int, int]:
    """Open SSE streams per live stream-holding instance (its own /metrics, not through the URL)."""
    out = {}
    for inst in srv.sim.ready(srv.sim.stream_role):
        try:
            text = requests.get(inst.url + "/metrics", timeout=5).text
        except requests.RequestException:
            continue
        m = re.search(r"^resonate_poll_connections (\S+)$", text, re.M)
        out[inst.pid] = int(float(m.group(1))) if m else 0
    return out


@pytest.mark.timeout(120)
def test_killing_the_instance_holding_a_workers_stream(request, stream_sim, lang, tmp_path):
    sim = stream_sim.sim
    assert sim.stream_role == "api" and not sim.ready("poll")  # one URL: api holds the streams
    wait_until(lambda: not any(streams(stream_sim).values()), 20, "no stream left from an earlier test")
    h = Harness(lang, stream_sim, tmp_path)
    request.node._sdk_harness = h
    try:
        group = f"g-{h.uid}"
        h.worker("w1", group)
        holder = wait_until(lambda: [pid for pid, n in streams(stream_sim).items() if n], 10, "the stream's instance")
        assert len(holder) == 1, streams(stream_sim)
        sim.kill(pid=holder[0])
        # the worker reconnects through the same URL: another instance, or the replacement
        wait_until(lambda: [pid for pid, n in streams(stream_sim).items() if n and pid != holder[0]], 40,
                   "the worker's stream on a live instance")
        root = f"nested-{h.uid}"
        c = h.client("c1", f"gc-{h.uid}", [{"op": "rpc", "id": root, "func": scenarios.fn(h, "nested"), "args": [3],
                                            "target": group}])
        [res] = c.result(timeout=60)
        assert scenarios.ok_value(res)["a"] == 7, res
        assert h.promise(root)["state"] == "resolved"
        assert len(h.lines("nested-steps.log")) == 4
        sim.wait_ready(30)
    finally:
        h.stop_all()

WORKFLOWS = 100
STEPS = 10
STEP_MS = 2000  # the run lasts ~25 s: long enough for a dozen kills in every phase


@pytest.fixture
def chaos_sim(tmp_path):
    srv = start_cloudsim(tmp_path / "sim", tick=60.0, window_ms=65_000, restart_delay=0.5,
                         env={"RESONATE_TASKS__RETRY_TIMEOUT": "2000"})
    yield srv
    srv.stop()


@pytest.mark.solo  # `make test` runs it alone after the parallel suite (pyproject.toml markers)
def test_random_sigkills_during_100_workflows(request, chaos_sim, tmp_path):
    h = Harness("py", chaos_sim, tmp_path)
    request.node._sdk_harness = h
    sim = chaos_sim.sim
    try:
        for i in range(3):
            h.worker(f"w{i}", "chaos")
        client = h.client("client", "clients", [{"op": "rpc_many", "prefix": f"chaos-{h.uid}-", "n": WORKFLOWS,
                                                 "func": "chaos_workflow", "args": [STEPS, STEP_MS],
                                                 "target": "poll://any@chaos", "timeout": 240}])
        stop = threading.Event()
        killed: list[tuple[str, int]] = []
        rng = random.Random(7)

        def chaos() -> None:
            time.sleep(1.0)
            while not stop.is_set() and len(killed) < 12:
                live = [i for i in sim.instances if i.ready and i.alive]
                if live:
                    victim = rng.choice(live)
                    sim.kill(pid=victim.pid)
                    killed.append((victim.role, victim.pid))
                stop.wait(rng.uniform(0.8, 1.8))

        t = threading.Thread(target=chaos, daemon=True)
        t.start()
        results = client.result(timeout=280)
        stop.set()
        t.join()
        roles = {r for r, _ in killed}
        assert len(killed) >= 6 and sim.stream_role == "api" and "api" in roles, killed
        outcome = results[0]
        failed = [r for r in outcome["results"] if not r["ok"]]
        assert not failed, failed[:5]
        assert sorted(r["value"]["wf"] for r in outcome["results"]) == list(range(WORKFLOWS))
        assert all(r["value"]["total"] == sum(range(STEPS)) for r in outcome["results"])

        # no step ran again after the server had recorded its result
        starts: dict[str, list[float]] = {}
        for line in h.lines("chaos.log"):
            what, step_id, _worker, at = line.split()
            if what == "start":
                starts.setdefault(step_id, []).append(float(at))
        assert len(starts) == WORKFLOWS * STEPS, len(starts)
        reruns = {k: v for k, v in starts.items() if len(v) > 1}
        for step_id, times in reruns.items():
            st, p = chaos_sim.rpc("promise.get", {"id": step_id})
            assert st == 200 and p["promise"]["state"] == "resolved", (step_id, p)
            settled_s = p["promise"]["settledAt"] / 1000
            late = [t for t in times if t > settled_s]
            assert not late, (step_id, times, settled_s)
        print(f"killed {len(killed)} instances {sorted(roles)}; {len(reruns)} steps re-ran before their"
              f" result was durable; {sim.restarts} restarts")
    finally:
        h.stop_all()
