"""(h) A three-step workflow through the official Python SDK: the latency users feel.

Everything is measured in one run, in rounds, the backends taking turns within each round so a
change in the machine's load hits them alike: the SDK's in-process mode (no server), the local
server on SQLite, the same on Postgres, the cloud simulation (functions over Postgres behind the
router), then the two floor terms: one fsync'd SQLite commit (`bench.rawsqlite`, same disk) and
one no-op HTTP round trip (`GET /health` on the SQLite server, one keep-alive connection, with
aiohttp as the SDK uses it). Latencies of all rounds are pooled; throughputs are averaged.

Target (SQLite): p50 <= 1.25 x (in-process p50 + R x (commit + no-op round trip)), R the requests
one workflow sends (10 with resonate-sdk 0.8.1).
"""
from __future__ import annotations

import asyncio
import json
import math
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.figures import HOST, ROOT, pct
from bench.http import GET_HEALTH, Conn
from bench.rawsqlite import commits_per_second


def run_flow(url: str | None, seq: int, conc: int, metrics: list[str] | None = None,
             warmup: int = 20) -> dict[str, Any]:
    spec = {"url": url, "seq": seq, "conc": conc, "rounds": 1, "warmup": warmup, "metrics": metrics or []}
    p = subprocess.run([sys.executable, "-m", "bench.sdkflow", json.dumps(spec)], cwd=ROOT, capture_output=True,
                       text=True, timeout=600)
    if p.returncode != 0:
        err = p.stderr
        at = err.find("Traceback")  # the error, not aiohttp's unclosed-session warnings after it
        detail = err[at:at + 3000] if at >= 0 else err[-2000:]
        raise RuntimeError(f"SDK workflow client failed ({p.returncode}): {detail}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def health_rtt(port: int, n: int = 300) -> tuple[list[float], list[float]]:
    """`GET /health` round trips, one keep-alive connection at a time: (the SDK's HTTP client,
    aiohttp, as the SDK sets it up; the bench's own asyncio client), interleaved."""
    import aiohttp

    async def go() -> tuple[list[float], list[float]]:
        sdk: list[float] = []
        own: list[float] = []
        url = f"http://{HOST}:{port}/health"
        c = await Conn.open(HOST, port)
        try:
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=256)) as session:
                for i in range(n + 50):
                    t0 = time.perf_counter()
                    async with session.get(url) as resp:
                        await resp.read()
                        if resp.status != 200:
                            raise RuntimeError(f"GET /health answered {resp.status}")
                    t1 = time.perf_counter()
                    status, _ = await c.request(GET_HEALTH)
                    t2 = time.perf_counter()
                    if status != 200:
                        raise RuntimeError(f"GET /health answered {status}")
                    if i >= 50:
                        sdk.append((t1 - t0) * 1000)
                        own.append((t2 - t1) * 1000)
        finally:
            c.close()
        return sdk, own

    return asyncio.run(go())


def commit_ms(path: Path) -> float:
    """One fsync'd single-row commit (WAL, synchronous=FULL), from a 1.5 s loop."""
    return 1000 / commits_per_second(path, 1.5)


def count_fsyncs(pid: int, flow: Callable[[], Any]) -> int | None:
    """fsync + fdatasync calls of process `pid` (all threads) while `flow()` runs (strace);
    None when strace is missing or may not attach."""
    strace = shutil.which("strace")
    if strace is None:
        return None
    out = Path(tempfile.mkstemp(prefix="bench-strace-")[1])
    p = subprocess.Popen([strace, "-f", "-qq", "-c", "-o", str(out), "-e", "trace=fsync,fdatasync", "-p", str(pid)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(0.5)  # attached to every thread
        if p.poll() is not None:
            return None
        flow()
        time.sleep(0.3)  # the last acknowledgement's commit
    finally:
        p.send_signal(signal.SIGINT)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
    try:
        text = out.read_text()
    finally:
        out.unlink(missing_ok=True)
    calls = 0
    for line in text.splitlines():
        parts = line.split()
        if parts and parts[-1] in ("fsync", "fdatasync"):
            calls += int(parts[3])  # % time, seconds, usecs/call, calls, [errors,] syscall
    return calls


def pg_commits(url: str) -> int:
    """Transactions committed in the database of `url` so far (pg_stat_database.xact_commit,
    read-only ones included; the statistics lag up to a second behind)."""
    from tests.support.pg import admin

    c = admin()
    try:
        name = url.rsplit("/", 1)[1].split("?")[0]
        c.run("SELECT pg_stat_clear_snapshot()")
        return int(c.run("SELECT xact_commit FROM pg_stat_database WHERE datname = :d", d=name)[0][0])
    finally:
        c.close()


def stop_flow_servers(servers: list[Any]) -> None:
    for s in servers:
        try:
            s.stop() if hasattr(s, "ticks") else s.stop(drop=False)
        except Exception:
            pass


def measure(workdir: Path, pg_url: str | None, sim_url: str | None, rounds: int, seq: int, conc: int,
            log: Callable[[str], None]) -> dict[str, Any]:
    """All of (h): per backend pooled latencies, rates, requests, the server's own time, commits."""
    from tests.support.server import free_port, start_server

    servers: list[Any] = []
    targets: dict[str, tuple[str, list[str]]] = {}  # backend -> (url, metrics urls)
    pids: dict[str, int] = {}
    try:
        mport = free_port()
        s = start_server("sqlite", workdir / "h-sqlite", debug=False, args=["--observability-metrics-port", str(mport)])
        servers.append(s)
        targets["SQLite"] = (s.url, [f"http://127.0.0.1:{mport}/metrics"])
        pids["SQLite"] = s.proc.pid
        sqlite_port = s.port
        if pg_url is not None:
            mport = free_port()
            s = start_server("postgres", workdir / "h-pg", debug=False, pg_url=pg_url,
                             args=["--observability-metrics-port", str(mport)])
            servers.append(s)
            targets["Postgres"] = (s.url, [f"http://127.0.0.1:{mport}/metrics"])
        if sim_url is not None:
            from local.cloudsim import CloudSim

            sim = CloudSim(sim_url, free_port(), tick=60.0, log_dir=workdir / "h-sim", create_db=False, grace=1.0)
            servers.append(sim)
            sim.start()
            targets["cloud-sim"] = (sim.url, [u + "/metrics" for u in sim.urls("api")])
        log(f"(h) SDK workflow (3 ctx.run steps, resonate-sdk 0.8.1): {rounds} rounds of {seq} sequential + "
            f"{conc} at once per backend; backends {', '.join(['in-process', *targets])}")
        res: dict[str, dict[str, Any]] = {b: {"lat": [], "rates": [], "rtt": [], "srv": [], "requests": {}}
                                          for b in ["in-process", *targets]}
        health: list[float] = []
        health_own: list[float] = []
        commits: list[float] = []
        for r in range(rounds):
            for b in res:
                if "error" in res[b]:
                    continue
                url, metrics = (None, []) if b == "in-process" else targets[b]
                try:
                    d = run_flow(url, seq, conc, metrics)
                except Exception as exc:  # e.g. a shared Postgres out of connections: the other backends go on
                    if b in ("in-process", "SQLite"):
                        raise
                    res[b]["error"] = str(exc)
                    log(f"(h) round {r + 1} {b} failed, left out of the remaining rounds: {str(exc)[:1500]}")
                    continue
                e = res[b]
                e["lat"] += d["lat_ms"]
                e["rates"].append(d["rate"])
                if "requests" in d:
                    e["requests"] = d["requests"]
                    e["per_workflow"] = d["per_workflow"]
                    e["rtt"].append(d["rtt_mean_ms"])
                if "server_mean_ms" in d:
                    e["srv"].append(d["server_mean_ms"])
                log(f"(h) round {r + 1} {b}: p50 {d['p50_ms']:.1f} ms, p99 {d['p99_ms']:.1f} ms, "
                    f"{d['rate']:.0f} workflows/s"
                    + (f"; {d['per_workflow']:.1f} requests/workflow, client-observed {d['rtt_mean_ms']:.2f} ms "
                       f"per request, server {d.get('server_mean_ms', math.nan):.2f} ms" if "requests" in d else ""))
            h, own = health_rtt(sqlite_port)
            health += h
            health_own += own
            c = commit_ms(workdir / "h-raw.db")
            commits.append(c)
            log(f"(h) round {r + 1} floor terms: GET /health p50 {pct(h, 50):.3f} ms with aiohttp (the SDK's client; "
                f"{pct(own, 50):.3f} ms with the bench's), fsync'd SQLite commit {c:.3f} ms")
        # commits per workflow, in a separate untimed pass (strace slows the traced calls)
        n = 20
        fs = count_fsyncs(pids["SQLite"], lambda: run_flow(targets["SQLite"][0], n, 1, warmup=0))
        if fs is not None:
            res["SQLite"]["fsyncs"] = fs / (n + 1)
        if "Postgres" in targets and pg_url is not None and "error" not in res["Postgres"]:
            before = pg_commits(pg_url)
            run_flow(targets["Postgres"][0], n, 1, warmup=0)
            time.sleep(1.0)
            res["Postgres"]["xacts"] = (pg_commits(pg_url) - before) / (n + 1)
        return {"res": res, "health": health, "commit_ms": sorted(commits)[len(commits) // 2]}
    finally:
        stop_flow_servers(servers)


def unavailable() -> str | None:
    """Why (h) cannot run here (resonate-sdk missing), else None."""
    try:
        import resonate.resonate  # noqa: F401
    except ImportError as e:
        return f"resonate-sdk not importable ({e})"
    return None
