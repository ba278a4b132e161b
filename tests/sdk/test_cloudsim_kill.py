"""Chaos in the simulated cloud: function processes SIGKILLed at random while 100 official-SDK
workflows run. Every workflow must complete, and no step whose completion the server had
acknowledged may run again (a step may legitimately re-run only if its result never became
durable, e.g. the instance died before committing it)."""
from __future__ import annotations

import random
import threading
import time

import pytest

from tests.sdk.harness import Harness
from tests.support.cloudsim import start_cloudsim

pytestmark = [pytest.mark.process, pytest.mark.postgres]  # the cloud simulation

WORKFLOWS = 100
STEPS = 10
STEP_MS = 2000  # the run lasts ~25 s: long enough for a dozen kills in every phase


@pytest.fixture
def chaos_sim(tmp_path):
    srv = start_cloudsim(tmp_path / "sim", tick=60.0, window_ms=65_000, restart_delay=0.5,
                         env={"RESONATE_TASKS__RETRY_TIMEOUT": "2000"})
    yield srv
    srv.stop()


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
        assert len(killed) >= 6 and {"api", "poll"} <= roles, killed
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
