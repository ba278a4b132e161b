"""Cloud simulation: the functions as separate processes over one real Postgres.

Each function of `functions/main.py` runs as its own `functions-framework` process (gunicorn
gthread, as on Cloud Run), several instances per role, with no shared memory: only Postgres
connects them. A supervisor restarts an instance that dies (a new instance, on a new port); a
router (`local.router`, its own process) is the front end of every function URL; a ticker calls
the sweeper every `tick` seconds as Cloud Scheduler does, without waiting for the previous call.

Two arrangements, as the deployment has:

* default: one base URL, the `api` function's own URL: every route (`POST /`, the SSE streams
  of `GET /poll/...`, `/health`, `/ready`, `/metrics`) is served by `api` instances, and the
  router is only what Cloud Run's front end is for a function URL (round robin over the live
  instances, streaming, 502 when an instance dies mid-request, requests held during a cold
  start). No `poll` instances.
* `load_balancer=True`: the optional load-balancer shape: the base URL splits paths, `GET
  /poll/...` to `poll` instances, everything else to `api` instances.

`private=True` adds Cloud Run's invoker check of a private service on the base URL (see
`local.router`): callers present an identity token for the base URL in
`X-Serverless-Authorization` (or `Authorization`), which reaches the instances without its
signature.

    with CloudSim(pg_url, port=8001) as sim:      # or sim = CloudSim(...).start(); sim.stop()
        sim.url, sim.instances, sim.kill("api"), sim.wait_ready(), sim.ticks

`python -m local cloud-sim` runs it in the foreground (local/cli.py).
"""
from __future__ import annotations

import functools
import http.client
import itertools
import json
import logging
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from local.simprocs import (
    defined_targets,
    die_with_parent,
    ensure_database,
    free_port,
    group_running,
    listens,
    raise_fd_limit,
    signal_group,
    wait_accept,
)

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "functions" / "main.py"
DEFAULT_PG_URL = "postgres://postgres@127.0.0.1:5432/resonate"
log = logging.getLogger("resonate.cloudsim")


@dataclass
class Instance:
    role: str
    port: int
    proc: subprocess.Popen
    log_path: Path
    generation: int = 0  # 0: first start of its slot; n: the n-th restart
    started: float = field(default_factory=time.monotonic)
    ready: bool = False
    ready_at: float | None = None

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def alive(self) -> bool:
        return self.proc.poll() is None


class CloudSim:
    """The simulated deployment. `start()` returns once every instance is ready; `url` is the
    base URL (the router); `instances` / `ready(role)` list the live instances (role, pid, port,
    url); `stream_role` is the role holding the SSE streams (`api`, or `poll` behind the load
    balancer); `kill(role)` crashes one; `wait_ready()` waits for replacements; `ticks` holds
    every sweeper call's result; `events` every instance start, ready and exit; `stop()` ends it
    all. `poll` defaults to 2 behind the load balancer and must be 0 without one (a poll
    function has no URL of its own in the one-URL shape)."""

    def __init__(self, pg_url: str | None = None, port: int | None = 8001, *, api: int = 2, poll: int | None = None,
                 sweeper: int = 1, dispatch: int = 1, tick: float = 60.0, env: dict[str, str] | None = None,
                 debug: bool = False, threads: dict[str, int] | None = None, log_dir: str | Path | None = None,
                 restart_delay: float = 0.5, grace: float = 3.0, create_db: bool = True,
                 load_balancer: bool = False, private: bool = False) -> None:
        if poll is None:
            poll = 2 if load_balancer else 0
        if poll and not load_balancer:
            raise ValueError("poll instances need the load-balancer arrangement (load_balancer=True): "
                             "without it the api function serves the streams")
        self.pg_url = pg_url or os.environ.get("RESONATE_STORAGE__POSTGRES__URL") or DEFAULT_PG_URL
        self.port = port or free_port()
        self.load_balancer = load_balancer
        self.private = private
        self.service_ports = {"sweeper": free_port(), "dispatch": free_port()}  # each function's own URL
        self.counts = {"api": api, "poll": poll, "sweeper": sweeper, "dispatch": dispatch}
        self.tick = tick
        self.extra_env = dict(env or {})
        self.debug = debug
        # gthread: one thread per request in flight, an SSE stream included; the instances that
        # hold the streams get poll's pool (Cloud Run's concurrency is THREADS)
        self.threads = {"api": 1100 if not load_balancer else 64, "poll": 1100, "sweeper": 16, "dispatch": 64,
                        **(threads or {})}
        self.log_dir = Path(log_dir) if log_dir else Path(tempfile.mkdtemp(prefix="cloudsim-"))
        self.restart_delay = restart_delay
        self.grace = grace
        self.create_db = create_db
        self.ticks: list[dict[str, Any]] = []  # one entry per sweeper call: {n, pid, status, result | error}
        self.events: list[tuple[float, str, str, int, int]] = []  # (time, start|ready|exit, role, pid, port)
        self.restarts = 0
        self.router: subprocess.Popen | None = None
        self._slots: dict[str, list[Instance | None]] = {}
        self._due: dict[tuple[str, int], float] = {}  # (role, slot) -> monotonic time to (re)start at
        self._failures: dict[tuple[str, int], int] = {}
        self._generation: dict[tuple[str, int], int] = {}
        self._mu = threading.RLock()
        self._stopping = threading.Event()
        self._stopped = threading.Event()
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self._sent_table = ""
        self._tick_n = itertools.count(1)
        self._threads: list[threading.Thread] = []

    # ----------------------------------------------------------------- public
    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def instances(self) -> list[Instance]:
        """Every running instance (ready or still starting)."""
        with self._mu:
            return [i for slots in self._slots.values() for i in slots if i is not None]

    def ready(self, role: str | None = None) -> list[Instance]:
        return [i for i in self.instances if i.ready and i.alive and (role is None or i.role == role)]

    @property
    def running(self) -> bool:
        """Started and not stopped (a router that died stops the whole simulation)."""
        return self._started.is_set() and not self._stopping.is_set()

    @property
    def stream_role(self) -> str:
        """The role whose instances hold the workers' SSE streams."""
        return "poll" if self.load_balancer else "api"

    def urls(self, role: str) -> list[str]:
        """The ready instances' own addresses."""
        return [i.url for i in self.ready(role)]

    def service_url(self, role: str) -> str:
        """A function's stable URL (through the router): `url` for api (and poll behind the load
        balancer), its own for the others."""
        return self.url if role in ("api", "poll") else f"http://127.0.0.1:{self.service_ports[role]}"

    def start(self, timeout: float = 60.0) -> CloudSim:
        t0 = time.monotonic()
        if self.create_db:
            ensure_database(self.pg_url)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        raise_fd_limit()
        targets = defined_targets(SOURCE)
        for role, n in self.counts.items():
            if n and role not in targets:
                log.warning("functions/main.py has no `%s` target yet: not starting %s instance(s)", role, n)
                self.counts[role] = 0
        self._slots = {role: [None] * n for role, n in self.counts.items()}
        self._due = {(role, k): 0.0 for role, n in self.counts.items() for k in range(n)}
        # the supervisor thread forks every child: PDEATHSIG ties them to that thread's life
        sup = threading.Thread(target=self._supervise, name="cloudsim-supervisor", daemon=True)
        sup.start()
        self._threads.append(sup)
        if not self._started.wait(timeout) or self._start_error is not None:
            err = self._start_error
            self.stop()
            raise RuntimeError(f"cloud sim did not start: {err!r}\n{self.logs(4000)}")
        try:
            self.wait_ready(max(1.0, timeout - (time.monotonic() - t0)))
        except TimeoutError:
            self.stop()
            raise
        log.info("cloud sim ready on %s (%s%s) in %.2f s (logs in %s)", self.url,
                 "load balancer: /poll to poll, the rest to api" if self.load_balancer else "one URL: the api function",
                 ", private" if self.private else "", time.monotonic() - t0, self.log_dir)
        if self.counts["sweeper"] and self.tick > 0:
            tk = threading.Thread(target=self._ticker, name="cloudsim-ticker", daemon=True)
            tk.start()
            self._threads.append(tk)
        return self

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Until every role has its full count of ready instances."""
        deadline = time.monotonic() + timeout
        while True:
            missing = {r: n - len(self.ready(r)) for r, n in self.counts.items() if len(self.ready(r)) < n}
            if not missing:
                return
            if time.monotonic() > deadline or self._stopping.is_set():
                raise TimeoutError(f"instances not ready: {missing}\n{self.logs(4000)}")
            time.sleep(0.05)

    def kill(self, role: str | None = None, pid: int | None = None, sig: int = signal.SIGKILL,
             wait: float = 5.0) -> Instance:
        """Kill one random ready instance (of `role`, or the one with `pid`) with its whole process
        group, as a crash, and wait (up to `wait` s) until none of its processes runs any more (so
        its sockets are closed); the supervisor starts a new one."""
        choices = [i for i in self.instances if (role is None or i.role == role) and (pid is None or i.pid == pid)]
        choices = [i for i in choices if i.ready and i.alive] or choices
        if not choices:
            raise LookupError(f"no {role or 'any'} instance{'' if pid is None else f' with pid {pid}'} to kill")
        victim = random.choice(choices)
        log.info("killing %s instance pid %d (port %d)", victim.role, victim.pid, victim.port)
        signal_group(victim.proc, sig)
        deadline = time.monotonic() + wait
        while group_running(victim.pid) and time.monotonic() < deadline:
            time.sleep(0.005)
        return victim

    def tick_now(self) -> None:
        """Fire one scheduler tick now (besides the periodic ones)."""
        self._fire()

    def logs(self, tail: int = 20000) -> str:
        parts = []
        for p in sorted(self.log_dir.glob("*.log"), key=lambda p: p.stat().st_mtime):
            parts.append(f"--- {p.name}\n" + p.read_text(errors="replace")[-tail:])
        return "\n".join(parts)

    def stop(self) -> None:
        self._stopping.set()
        for t in self._threads:
            if t is not threading.current_thread():
                t.join(timeout=self.grace + 10)
        self._stop_children()  # no-op unless the supervisor could not do it

    def __enter__(self) -> CloudSim:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------ supervision
    @property
    def _preexec(self) -> Any:
        return functools.partial(die_with_parent, os.getpid())

    def _env(self, role: str, port: int) -> dict[str, str]:
        # workers run on this machine: pushes to loopback stay allowed (the functions' default is
        # to refuse private addresses; a caller's RESONATE_* setting still wins)
        env = {"RESONATE_TRANSPORTS__HTTP_PUSH__DENY_PRIVATE": "false", **os.environ,
               "RESONATE_STORAGE__TYPE": "postgres", "RESONATE_STORAGE__POSTGRES__URL": self.pg_url,
               "RESONATE_SERVER__URL": self.url, "RESONATE_OBSERVABILITY__METRICS_PORT": "0",
               "THREADS": str(self.threads.get(role, 16)), "WORKERS": "1", "PORT": str(port),
               "K_SERVICE": role, "PYTHONUNBUFFERED": "1"}
        if self.counts["sweeper"]:  # the sweeper function's URL, for instances that wake it on demand
            env["RESONATE_SWEEPER__URL"] = self.service_url("sweeper")
        if self.debug:
            env["RESONATE_DEBUG"] = "true"
        env.update(self.extra_env)
        return env

    def _spawn(self, role: str, slot: int) -> Instance:
        port = free_port()
        path = self.log_dir / f"{role}{slot}-{port}.log"
        exe = os.path.join(os.path.dirname(sys.executable), "functions-framework")
        cmd = [exe, f"--target={role}", f"--source={SOURCE}", "--host=127.0.0.1", f"--port={port}"]
        with open(path, "ab") as fh:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self._env(role, port), stdin=subprocess.DEVNULL, stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=self._preexec)
        gen = self._generation[(role, slot)] = self._generation.get((role, slot), -1) + 1
        inst = Instance(role, port, proc, path, gen)
        self._event("start", inst)
        return inst

    def _event(self, what: str, inst: Instance) -> None:
        self.events.append((time.time(), what, inst.role, inst.pid, inst.port))
        if what == "exit":
            log.info("%s instance pid %d (port %d) exited with %s%s", inst.role, inst.pid, inst.port,
                     inst.proc.returncode, "" if inst.ready else f" before it was ready (see {inst.log_path})")
        elif what == "ready":
            log.info("%s %s instance pid %d on port %d (ready in %.2f s)",
                     "restarted" if inst.generation else "started", inst.role, inst.pid, inst.port,
                     (inst.ready_at or 0) - inst.started)

    def _supervise(self) -> None:
        try:
            with open(self.log_dir / "router.log", "ab") as fh:
                cmd = [sys.executable, "-m", "local.router", "--port", str(self.port)]
                cmd += ["--load-balancer"] if self.load_balancer else []
                cmd += ["--private", self.url] if self.private else []
                for role, port in self.service_ports.items():
                    cmd += ["--service", f"{role}={port}"] if self.counts[role] else []
                self.router = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.PIPE, stdout=fh,
                                               stderr=subprocess.STDOUT, start_new_session=True,
                                               preexec_fn=self._preexec)
            wait_accept(self.port, self.router, 20.0)
        except BaseException as e:
            self._start_error = e
            self._started.set()
            self._stop_children()
            return
        self._started.set()
        try:
            while not self._stopping.is_set():
                try:
                    self._supervise_once()
                except Exception:  # e.g. out of descriptors: keep supervising what runs
                    log.exception("supervisor pass failed")
                time.sleep(0.05)
        finally:
            self._stop_children()
            self._stopped.set()

    def _supervise_once(self) -> None:
        now = time.monotonic()
        for role, slots in self._slots.items():
            for k, inst in enumerate(slots):
                key = (role, k)
                if inst is not None and not inst.alive:  # died: a new instance after a short delay
                    signal_group(inst.proc, signal.SIGKILL)  # an orphaned gunicorn worker goes with it
                    self._event("exit", inst)
                    quick = not inst.ready or (inst.ready_at or 0) > now - 5
                    self._failures[key] = self._failures.get(key, 0) + 1 if quick else 0
                    self._due[key] = now + min(10.0, self.restart_delay * 2 ** min(self._failures[key], 5))
                    with self._mu:
                        slots[k] = inst = None
                    self.restarts += 1
                if inst is None and now >= self._due.get(key, 0.0):
                    with self._mu:
                        slots[k] = inst = self._spawn(role, k)
                if inst is not None and not inst.ready and self._probe(inst):
                    inst.ready, inst.ready_at = True, time.monotonic()
                    self._event("ready", inst)
        table = json.dumps({r: [[i.port, i.pid] for i in self.ready(r)] for r in self.counts}) + "\n"
        if table != self._sent_table and self.router is not None:
            try:
                self.router.stdin.write(table.encode())  # type: ignore[union-attr]
                self.router.stdin.flush()  # type: ignore[union-attr]
                self._sent_table = table
            except (OSError, ValueError):
                if not self._stopping.is_set():
                    log.error("router exited (%s); see %s", self.router.poll(), self.log_dir / "router.log")
                self._stopping.set()

    @staticmethod
    def _probe(inst: Instance) -> bool:
        if not listens(inst.pid, inst.port):  # not yet, or another process took the port first
            return False
        try:
            if inst.role == "api":  # api: /health answers 200 (and the first request built the runtime)
                conn = http.client.HTTPConnection("127.0.0.1", inst.port, timeout=5)
                try:
                    conn.request("GET", "/health")
                    return conn.getresponse().status == 200
                finally:
                    conn.close()
            with socket.create_connection(("127.0.0.1", inst.port), timeout=0.2):
                return True
        except OSError:
            return False

    def _stop_children(self) -> None:
        with self._mu:
            procs = [i.proc for i in self.instances]
            for slots in self._slots.values():
                slots[:] = [None] * len(slots)
        router, self.router = self.router, None
        if router is not None:
            procs.append(router)
            try:
                router.stdin.close()  # type: ignore[union-attr]
            except (OSError, ValueError):
                pass
        for p in procs:
            signal_group(p, signal.SIGTERM)
        deadline = time.monotonic() + self.grace
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            signal_group(p, signal.SIGKILL)  # the group: gunicorn's worker too
            p.wait()

    # ----------------------------------------------------------------- ticker
    def _ticker(self) -> None:
        nxt = time.monotonic()
        while not self._stopping.is_set():
            self._fire()
            nxt += self.tick
            self._stopping.wait(max(0.0, nxt - time.monotonic()))

    def _fire(self) -> None:
        """One Cloud Scheduler call to the sweeper's URL, on its own thread: a tick never waits."""
        n = next(self._tick_n)
        threading.Thread(target=self._call_sweeper, args=(n,), name=f"cloudsim-tick-{n}", daemon=True).start()

    def _call_sweeper(self, n: int) -> None:
        entry: dict[str, Any] = {"n": n, "pid": None, "status": None, "at": time.time()}
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.service_ports["sweeper"], timeout=600)
            try:
                conn.request("POST", "/", body=b"{}", headers={"Content-Type": "application/json",
                                                               "User-Agent": "Google-Cloud-Scheduler"})
                resp = conn.getresponse()
                body = resp.read()
            finally:
                conn.close()
            entry["status"] = resp.status
            served = resp.getheader("X-Sim-Instance") or ""
            entry["pid"] = int(served.split("/")[1]) if "/" in served else None
            try:
                entry["result"] = json.loads(body)
            except ValueError:
                entry["error"] = body[:500].decode(errors="replace")
        except (OSError, http.client.HTTPException) as e:
            entry["error"] = repr(e)
        entry["done"] = time.time()
        self.ticks.append(entry)
        if not self._stopping.is_set():
            log.info("tick %d -> sweeper pid %s: %s %s", n, entry["pid"], entry["status"],
                     json.dumps(entry.get("result", entry.get("error"))))
