"""Real workflows through the published resonate-sdk 0.6.7 (the last REST-era Python SDK), over
the REST API and the SSE listener (`legacy.poll_port`): nested steps, an RPC to a worker in
another process and group, a durable sleep, retried and permanently failing functions, and a
workflow that survives the server being SIGKILLed and restarted in the middle.

The SDK runs unmodified in its own interpreter (Python 3.12): tests/legacy/flows/driver.py runs
one workflow and prints its outcome as a JSON line, tests/legacy/flows/worker.py serves the
functions only it registers. Steps count their executions in files (FLOWS_DIR), so the tests
check how often each step ran, and the server's state is read back over REST.

The interpreter: RESONATE_LEGACY_SDK67_PYTHON, else tests/legacy/.venv/0.6.7/bin/python (made
by `make sdk-legacy`), with resonate-sdk 0.6.7 importable (installed in it, or its unpacked
sdist at tests/legacy/.venv/sdist/resonate_sdk-0.6.7).
"""
from __future__ import annotations

import base64
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support import marks
from tests.support.server import ROOT, ServerProc, free_port, process_backend_names, start_server

pytestmark = pytest.mark.process

FLOWS = ROOT / "tests" / "legacy" / "flows"
VENV_PYTHON = ROOT / "tests" / "legacy" / ".venv" / "0.6.7" / "bin" / "python"  # `make sdk-legacy`
SDIST = ROOT / "tests" / "legacy" / ".venv" / "sdist" / "resonate_sdk-0.6.7"
SDK_ENV = "RESONATE_LEGACY_SDK67_PYTHON"
REMOTE_GROUP = "flows-remote"  # tests/legacy/flows/flows.py
WAIT = 120  # seconds a process or a workflow state may take before the test gives up (a hang guard)
DURABLE = [b for b in process_backend_names() if b != "memory"]


# ---- the SDK's interpreter ------------------------------------------------------------------------


@dataclass(frozen=True)
class Sdk:
    python: str
    pythonpath: str | None  # the unpacked sdist, when the package is not installed in the venv


PROBE = ("import importlib.metadata as m, json, resonate\n"
         "try:\n    v = m.version('resonate-sdk')\nexcept m.PackageNotFoundError:\n    v = None\n"
         "print(json.dumps({'version': v, 'file': resonate.__file__}))")


@pytest.fixture(scope="session")
def sdk67() -> Sdk:
    """The interpreter with resonate-sdk 0.6.7 (`make sdk-legacy`, which `make test` runs): a
    missing one fails the tests, it never skips them."""
    python = os.environ.get(SDK_ENV) or str(VENV_PYTHON)
    if not Path(python).exists():
        pytest.fail(f"resonate-sdk 0.6.7 is not installed: no interpreter at {python} "
                    f"(run `make sdk-legacy`, or set {SDK_ENV} to a Python 3.12 with resonate-sdk==0.6.7)")
    for pythonpath in (None, str(SDIST)):
        if pythonpath is not None and not SDIST.is_dir():
            break
        env = {**_clean_env(), **({"PYTHONPATH": pythonpath} if pythonpath else {})}
        out = subprocess.run([python, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60)
        if out.returncode == 0:
            got = json.loads(out.stdout)
            installed = got["version"] == "0.6.7"
            from_sdist = pythonpath is not None and got["file"].startswith(pythonpath + os.sep)
            assert installed or from_sdist, f"{python} imports resonate {got}, not resonate-sdk 0.6.7"
            return Sdk(python, pythonpath)
    pytest.fail(f"{python} cannot import resonate (resonate-sdk 0.6.7): {out.stderr[-2000:]}")


def _clean_env() -> dict[str, str]:
    """The environment without the project's PYTHONPATH and RESONATE_* settings (the SDK reads
    RESONATE_HOST, RESONATE_USERNAME, ... itself)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("RESONATE_") and k != "PYTHONPATH"}


# ---- a server with the SSE listener, the SDK processes, the files they write ---------------------


@dataclass
class Flows:
    """One server (restartable on the same port and database) and the SDK processes around it."""

    sdk: Sdk
    backend: str
    work: Path
    poll_port: int
    srv: ServerProc
    dir: Path = field(init=False)
    procs: list[tuple[str, subprocess.Popen[str], Path]] = field(default_factory=list)
    worker_pid: int | None = None
    restarts: int = 0

    def __post_init__(self) -> None:
        self.dir = self.work / "flows"
        self.dir.mkdir(exist_ok=True)

    # processes

    def env(self) -> dict[str, str]:
        env = {**_clean_env(), "RESONATE_HOST": "http://127.0.0.1", "RESONATE_PORT_STORE": str(self.srv.port),
               "RESONATE_PORT_MESSAGE_SOURCE": str(self.poll_port), "FLOWS_DIR": str(self.dir),
               "PYTHONUNBUFFERED": "1"}
        if self.sdk.pythonpath:
            env["PYTHONPATH"] = self.sdk.pythonpath
        return env

    def spawn(self, name: str, script: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        name = f"{name}-{len(self.procs)}"
        out = self.work / f"{name}.out"
        with open(out, "w") as stdout, open(out.with_suffix(".err"), "w") as stderr:
            proc = subprocess.Popen([self.sdk.python, str(FLOWS / script), *argv], cwd=FLOWS,
                                    env={**self.env(), **(env or {})}, stdout=stdout, stderr=stderr, text=True)
        self.procs.append((name, proc, out))
        return proc

    def start_worker(self, ttl: int = 10) -> subprocess.Popen[str]:
        """A worker of the remote group; `ttl`: the lease (s) of the tasks it claims (it heartbeats
        every ttl/2 s)."""
        proc = self.spawn("worker", "worker.py", env={"FLOWS_TTL": str(ttl)})
        self.worker_pid = self.event(proc, "started")["pid"]
        return proc

    def driver(self, *argv: str) -> subprocess.Popen[str]:
        return self.spawn("driver", "driver.py", *argv)

    def lines(self, proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
        out = next(path for _, p, path in self.procs if p is proc)
        return [json.loads(line) for line in out.read_text().splitlines() if line.startswith("{")]

    def event(self, proc: subprocess.Popen[str], event: str) -> dict[str, Any]:
        found = self.until(lambda: next((d for d in self.lines(proc) if d.get("event") == event), None)
                           or _exited(proc), f"{event} from pid {proc.pid}")
        assert isinstance(found, dict), f"process {proc.pid} exited before {event}:\n{self.diag()}"
        return found

    def outcome(self, proc: subprocess.Popen[str]) -> dict[str, Any]:
        """The driver's outcome line, once it has exited."""
        self.until(lambda: _exited(proc), f"the driver (pid {proc.pid}) to finish")
        outs = [d for d in self.lines(proc) if "ok" in d]
        assert proc.returncode == 0 and len(outs) == 1, f"driver rc={proc.returncode}:\n{self.diag()}"
        return outs[0]

    def run(self, scenario: str, id: str, *args: Any) -> dict[str, Any]:
        return self.outcome(self.driver("run", scenario, id, json.dumps(list(args))))

    def until(self, probe: Callable[[], Any], what: str) -> Any:
        """Wait for `probe()` to be truthy. A server that crashed or failed a request (the SDK
        retries a 500 forever: the workflow would just hang) fails the test at once."""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            got = probe()
            if got:
                return got
            if self.srv.proc.poll() is not None or "Traceback" in self.srv.logs():
                pytest.fail(f"the server failed while waiting for {what}:\n{self.diag()}")
            time.sleep(0.05)
        pytest.fail(f"waited {WAIT} s for {what}:\n{self.diag()}")

    # the server

    def kill_and_restart(self) -> None:
        """SIGKILL the server, then start it again on the same port, SSE port and database."""
        self.srv.proc.kill()
        self.srv.proc.wait()
        self.restarts += 1
        self.srv.log.rename(self.srv.log.with_suffix(f".{self.restarts}.log"))  # the restart writes a new one
        self.srv = start_server(self.backend, self.work, args=["--legacy-poll-port", str(self.poll_port)],
                                port=self.srv.port, db=self.srv.db, pg_url=self.srv.pg_url, my_url=self.srv.my_url)

    def promise(self, id: str) -> dict[str, Any]:
        r = self.srv.request("GET", f"/promises/{id}")
        assert r.status_code == 200, (id, r.status_code, r.text)
        return r.json()

    def exists(self, id: str) -> bool:
        return self.srv.request("GET", f"/promises/{id}").status_code == 200

    def settled(self, id: str, state: str = "RESOLVED") -> Any:
        """The promise's decoded value, after checking its state."""
        p = self.promise(id)
        assert p["state"] == state, p
        return decode(p["value"])

    # the files the steps write

    def count(self, name: str) -> int:
        path = self.dir / f"{name}.count"
        return len(path.read_text().splitlines()) if path.exists() else 0

    def diag(self) -> str:
        parts = [f"--- server ({self.backend}) log before restart {n}, last 3000 chars:\n"
                 f"{self.srv.log.with_suffix(f'.{n}.log').read_text(errors='replace')[-3000:]}"
                 for n in range(1, self.restarts + 1)]
        parts.append(f"--- server ({self.backend}) log, last 4000 chars:\n{self.srv.logs()[-4000:]}")
        for name, _, out in self.procs:
            err = out.with_suffix(".err")
            parts.append(f"--- {name} stdout:\n{out.read_text()[-2000:]}\n--- {name} stderr:\n"
                         f"{err.read_text()[-4000:] if err.exists() else ''}")
        return "\n".join(parts)

    def stop(self) -> None:
        for _, proc, _ in self.procs:
            if proc.poll() is None:
                proc.kill()
            proc.wait()
        self.srv.stop()


def _exited(proc: subprocess.Popen[str]) -> bool:
    return proc.poll() is not None


def decode(value: dict[str, Any]) -> Any:
    """A REST value's data: standard base64 of the JSON the SDK encoded; None when there is none."""
    data = value.get("data")
    return None if data is None else json.loads(base64.b64decode(data, validate=True))


def open_flows(sdk: Sdk, backend: str, work: Path) -> Flows:
    for _attempt in range(3):
        poll_port = free_port()
        try:
            srv = start_server(backend, work, args=["--legacy-poll-port", str(poll_port)])
        except RuntimeError as e:  # another process bound the free SSE port first: take another one
            if "could not bind" not in str(e):
                raise
            continue
        return Flows(sdk, backend, work, poll_port, srv)
    raise RuntimeError("no free port for the SSE listener")


@pytest.fixture(scope="module", params=[marks.param(b) for b in process_backend_names()])
def flows(request, sdk67: Sdk, tmp_path_factory) -> Iterator[Flows]:
    """A server with its SSE listener and the worker of the remote group, shared by the scenarios
    of one backend (each uses its own promise ids)."""
    f = open_flows(sdk67, request.param, tmp_path_factory.mktemp(f"flows-{request.param}"))
    try:
        f.start_worker()
        yield f
    finally:
        f.stop()


@pytest.fixture(params=[marks.param(b) for b in process_backend_names()])
def own_flows(request, sdk67: Sdk, tmp_path: Path) -> Iterator[Flows]:
    """A server of its own, without a worker: the test starts (and kills) its workers."""
    f = open_flows(sdk67, request.param, tmp_path)
    try:
        yield f
    finally:
        f.stop()


def fresh(name: str) -> str:
    return f"{name}-{uuid.uuid4().hex[:10]}"


# ---- the scenarios ------------------------------------------------------------------------------


def test_registered_function_with_nested_steps(flows: Flows) -> None:
    id = fresh("nested")
    out = flows.run("nested", id, id, 5)
    assert out == {"id": id, "ok": True, "value": {"a": 6, "inner": [12, 112], "b": 336}}, flows.diag()
    # every step ran once, and each is a durable promise under its parent's id
    assert (flows.count(f"{id}.add"), flows.count(f"{id}.mul")) == (2, 2)
    root = flows.promise(id)
    assert root["state"] == "RESOLVED" and root["idempotencyKeyForCreate"] == id
    assert root["tags"] == {"resonate:root": id, "resonate:parent": id, "resonate:scope": "global",
                            "resonate:invoke": "poll://any@default"}
    assert decode(root["param"]) == {"func": "nested", "args": [id, 5], "kwargs": {}, "version": 1}
    assert decode(root["value"]) == out["value"]
    steps = {f"{id}.1": (id, 6), f"{id}.2": (id, [12, 112]), f"{id}.2.1": (f"{id}.2", 12),
             f"{id}.2.2": (f"{id}.2", 112), f"{id}.3": (id, 336)}
    for sid, (parent, value) in steps.items():
        p = flows.promise(sid)
        assert p["state"] == "RESOLVED" and decode(p["value"]) == value, p
        assert p["tags"] == {"resonate:root": id, "resonate:parent": parent, "resonate:scope": "local"}, p
        assert p["idempotencyKeyForCreate"] == sid and p["idempotencyKeyForComplete"] == sid, p
    assert not flows.exists(f"{id}.4")
    # running it again under the same id answers the stored result and runs nothing
    assert flows.run("nested", id, id, 5) == out
    assert (flows.count(f"{id}.add"), flows.count(f"{id}.mul")) == (2, 2)


def test_rpc_to_a_worker_in_another_process(flows: Flows) -> None:
    id = fresh("rpc")
    out = flows.run("rpc", id, id, 3)
    assert out["ok"], flows.diag()
    v = out["value"]
    assert v == {"square": {"value": 9, "id": f"{id}.1", "pid": flows.worker_pid},
                 "next_square": {"value": 16, "id": f"{id}.2", "pid": flows.worker_pid}, "sum": 25}
    assert flows.count(f"{id}.remote_square.3") == flows.count(f"{id}.remote_square.4") == 1
    for n, (child, sq) in enumerate([(f"{id}.1", 9), (f"{id}.2", 16)], start=3):
        p = flows.promise(child)
        assert p["state"] == "RESOLVED" and decode(p["value"])["value"] == sq, p
        assert p["tags"]["resonate:invoke"] == f"poll://any@{REMOTE_GROUP}", p
        assert decode(p["param"]) == {"func": "remote_square", "args": [id, n], "kwargs": {}, "version": 1}
        # the worker ran it as a root of its own: its nested step lives under the child's id
        step = flows.promise(f"{child}.1")
        assert step["tags"]["resonate:root"] == child and decode(step["value"]) == sq, step
    assert flows.settled(id) == v


def test_durable_sleep(flows: Flows) -> None:
    id = fresh("sleep")
    out = flows.run("sleep", id, id, 2)
    assert out == {"id": id, "ok": True, "value": {"before": "before#1", "after": "after#1"}}, flows.diag()
    sleep = flows.promise(f"{id}.2")
    # the server resolved the sleep by itself, at its deadline and not before, with no value
    assert sleep["state"] == "RESOLVED" and sleep["value"] == {}, sleep
    assert sleep["tags"] == {"resonate:timeout": "true"}, sleep
    assert sleep["completedOn"] >= sleep["timeout"], sleep
    # and the workflow went on only after it
    assert flows.promise(f"{id}.3")["createdOn"] >= sleep["completedOn"]
    assert (flows.count(f"{id}.before"), flows.count(f"{id}.after")) == (1, 1)
    assert flows.settled(id) == out["value"]


def test_failing_step_is_retried_until_it_succeeds(flows: Flows) -> None:
    id = fresh("retry")
    out = flows.run("retry", id, id, 2)
    assert out == {"id": id, "ok": True, "value": {"flaky": {"attempts": 3, "sdk_attempt": 3}}}, flows.diag()
    assert flows.count(f"{id}.flaky") == 3
    # the retries happen in the process: one promise for the step, resolved once
    assert flows.settled(f"{id}.1") == {"attempts": 3, "sdk_attempt": 3}
    assert flows.settled(id) == out["value"]


def test_registered_plain_function_is_retried(flows: Flows) -> None:
    id = fresh("retry-top")
    out = flows.outcome(flows.driver("retry_top", id, id, "2"))
    assert out == {"id": id, "ok": True, "value": {"attempts": 3, "sdk_attempt": 3}}, flows.diag()
    assert flows.count(f"{id}.flaky") == 3
    assert flows.settled(id) == out["value"]


def test_permanent_failure_reaches_the_caller(flows: Flows) -> None:
    id = fresh("fail")
    out = flows.run("fail", id, id)
    message = f"doomed attempt 3 of {id}"  # the first try and its two retries
    assert out == {"id": id, "ok": False, "error_type": "FlowError", "error": message}, flows.diag()
    assert flows.count(f"{id}.doomed") == 3
    for pid in (f"{id}.1", id):
        assert flows.settled(pid, "REJECTED") == {"__error__": message}


def test_permanent_failure_is_caught_by_the_workflow(flows: Flows) -> None:
    id = fresh("catch")
    out = flows.run("catch", id, id)
    caught = {"caught": "FlowError", "message": f"doomed attempt 3 of {id}"}
    assert out == {"id": id, "ok": True, "value": caught}, flows.diag()
    assert flows.settled(f"{id}.1", "REJECTED") == {"__error__": caught["message"]}
    assert flows.settled(id) == caught


def test_second_run_of_a_pending_id_waits_for_the_first(flows: Flows) -> None:
    """Another process runs the same id while the first one's RPC is stopped at its gate: it runs
    nothing itself and gets the first run's result (a subscription, notified over its SSE stream)."""
    id = fresh("twice")
    first = flows.driver("run", "crash", id, json.dumps([id, 0.5]))
    flows.until(lambda: (flows.dir / f"{id}.gate.reached").exists(), "the RPC to reach its gate")
    second = flows.driver("run", "crash", id, json.dumps([id, 0.5]))
    flows.event(second, "begun")  # its create found the first run's promise pending
    (flows.dir / f"{id}.gate.release").touch()
    value = _crash_expected(id, flows.worker_pid)
    assert flows.outcome(first) == flows.outcome(second) == {"id": id, "ok": True, "value": value}
    _check_crash_state(flows, id, value)


def test_rpc_moves_to_another_worker_when_its_worker_dies(own_flows: Flows) -> None:
    """The worker running the RPC's function is SIGKILLed at the gate: once the lease of its task
    lapses, the server gives the task to another worker of the group, and the caller gets that
    one's result. The function ran twice (at least once is the promise; its lease ran out)."""
    f = own_flows
    dead = f.start_worker(ttl=2)
    id = fresh("lost")
    driver = f.driver("run", "crash", id, json.dumps([id, 0.2]))
    reached = f.dir / f"{id}.gate.reached"
    f.until(reached.exists, "the RPC to reach its gate")
    dead.kill()
    dead.wait()
    reached.unlink()
    f.start_worker()  # a lease of 10 s, renewed every 5 s: this one keeps its task
    f.until(reached.exists, "the RPC to reach its gate again, in the new worker")
    (f.dir / f"{id}.gate.release").touch()
    value = _crash_expected(id, f.worker_pid)
    assert f.outcome(driver) == {"id": id, "ok": True, "value": value}, f.diag()
    _check_crash_state(f, id, value, remote_runs=2)


# ---- across a SIGKILL of the server ------------------------------------------------------------


@pytest.fixture(params=[marks.param(b) for b in DURABLE])
def durable_flows(request, sdk67: Sdk, tmp_path: Path) -> Iterator[Flows]:
    """A server of its own on a durable store (restarted by the test), with the remote worker."""
    f = open_flows(sdk67, request.param, tmp_path)
    try:
        f.start_worker()
        yield f
    finally:
        f.stop()


def _crash_expected(id: str, worker_pid: int | None) -> dict[str, Any]:
    return {"before": "before#1", "remote": {"gate": "passed", "id": f"{id}.2", "pid": worker_pid},
            "after": "after#1"}


def _check_crash_state(f: Flows, id: str, value: dict[str, Any], remote_runs: int = 1) -> None:
    """Every step ran once (the remote one `remote_runs` times), and the server holds every
    promise of the workflow resolved."""
    assert (f.count(f"{id}.before"), f.count(f"{id}.remote_gate"), f.count(f"{id}.after")) == (1, remote_runs, 1)
    assert f.settled(f"{id}.1") == "before#1"
    assert f.settled(f"{id}.2") == value["remote"]
    assert f.settled(f"{id}.3") is None and f.promise(f"{id}.3")["tags"] == {"resonate:timeout": "true"}
    assert f.settled(f"{id}.4") == "after#1"
    assert f.settled(id) == value


def test_workflow_survives_server_sigkills_at_rpc_sleep_and_local_step(durable_flows: Flows) -> None:
    """The server dies three times: while the RPC's function runs in the worker (stopped at a
    gate), once the workflow has entered its durable sleep, and while the caller runs its last
    step (at a gate, its task claimed). The workflow completes and no step ran twice."""
    f = durable_flows
    id = fresh("crash")
    driver = f.driver("run", "crash", id, json.dumps([id, 2, True]))
    f.until(lambda: (f.dir / f"{id}.gate.reached").exists(), "the RPC to reach its gate")
    assert f.settled(f"{id}.1") == "before#1"  # resolved before the kill
    f.kill_and_restart()
    (f.dir / f"{id}.gate.release").touch()
    f.until(lambda: f.exists(f"{id}.3"), "the durable sleep's promise")
    f.kill_and_restart()
    f.until(lambda: (f.dir / f"{id}.after.gate.reached").exists(), "the last step to reach its gate")
    f.kill_and_restart()
    (f.dir / f"{id}.after.gate.release").touch()
    out = f.outcome(driver)
    value = _crash_expected(id, f.worker_pid)
    assert out == {"id": id, "ok": True, "value": value}, f.diag()
    _check_crash_state(f, id, value)


def test_workflow_resumes_in_a_new_process_after_server_and_caller_die(durable_flows: Flows) -> None:
    """The server and the calling process are both SIGKILLed while the RPC runs in the worker. A
    new process of the caller's group takes the workflow over when the RPC completes: it replays
    the workflow from the start, and the step that was resolved before the kill does not run again."""
    f = durable_flows
    id = fresh("replay")
    first = f.driver("run", "crash", id, json.dumps([id, 1]))
    f.until(lambda: (f.dir / f"{id}.gate.reached").exists(), "the RPC to reach its gate")
    assert f.settled(f"{id}.1") == "before#1"
    first.kill()
    first.wait()
    f.kill_and_restart()
    second = f.driver("get", id)
    f.event(second, "begun")  # it read the promise, pending
    (f.dir / f"{id}.gate.release").touch()
    out = f.outcome(second)
    value = _crash_expected(id, f.worker_pid)
    assert out == {"id": id, "ok": True, "value": value}, f.diag()
    _check_crash_state(f, id, value)
