"""Start the real server as a subprocess and talk to it over HTTP (what every client sees)."""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parents[2]
VERSION = "2026-04-01"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def backends() -> list[str]:
    """Adapters the suite runs on; RESONATE_TEST_BACKENDS narrows it (comma-separated)."""
    raw = os.environ.get("RESONATE_TEST_BACKENDS", "memory,sqlite,postgres")
    return [b.strip() for b in raw.split(",") if b.strip()]


@dataclass
class ServerProc:
    backend: str
    port: int
    proc: subprocess.Popen
    log: Path
    db: Path | None = None
    pg_url: str | None = None  # the cloned database a postgres server owns (dropped at stop)
    session: requests.Session = field(default_factory=requests.Session)
    token: str | None = None  # inbound auth on: sent as head.auth by `rpc` unless the caller gives one

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, body: Any, raw: bool = False) -> requests.Response:
        if raw:
            return self.session.post(self.url + "/", data=body, headers={"Content-Type": "application/json"}, timeout=30)
        return self.session.post(self.url + "/", json=body, timeout=30)

    def rpc(self, kind: str, data: Any, time: int | None = None, **head: Any) -> tuple[int, Any]:
        """Send one envelope; return (status, data) after checking the envelope echo rules."""
        corr = uuid.uuid4().hex
        h: dict[str, Any] = {"corrId": corr, "version": VERSION, **head}
        if self.token is not None and "auth" not in h:
            h["auth"] = self.token
        if time is not None:
            h["resonate:debug_time"] = time
        r = self.post({"kind": kind, "head": h, "data": data})
        body = r.json()
        assert body["kind"] == kind, body
        assert body["head"]["corrId"] == corr, body
        assert body["head"]["status"] == r.status_code, body
        assert body["head"]["version"] == VERSION
        return r.status_code, body["data"]

    def logs(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self, drop: bool = True) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if drop and self.pg_url is not None:
            from tests.support.pg import drop_database

            drop_database(self.pg_url)
        return self.proc.returncode


def start_server(backend: str, workdir: Path, debug: bool = True, args: list[str] | None = None,
                 env: dict[str, str] | None = None, port: int | None = None, db: Path | None = None,
                 pg_url: str | None = None) -> ServerProc:
    """Start `python -m local serve|dev` on a free port and wait until /health answers."""
    port = port or free_port()
    workdir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "local"]
    if backend == "memory":
        cmd += ["dev"]
    elif backend == "sqlite":
        db = db or workdir / "resonate.db"
        cmd += ["serve", "--storage-sqlite-path", str(db)]
        if debug:
            cmd.append("--debug")
    elif backend == "postgres":
        from tests.support.pg import template_clone_url

        # a fresh database cloned from the migrated template; the URL travels in the environment
        pg_url = pg_url or template_clone_url()
        env = {**(env or {}), "RESONATE_STORAGE__POSTGRES__URL": pg_url}
        cmd += ["serve", "--storage-type", "postgres"]
        if debug:
            cmd.append("--debug")
    else:
        raise ValueError(f"unknown backend {backend}")
    cmd += ["--server-port", str(port), "--observability-metrics-port", "0"] + (args or [])
    log = workdir / f"server-{port}.log"
    fh = open(log, "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    srv = ServerProc(backend, port, proc, log, db, pg_url if backend == "postgres" else None)
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited {proc.returncode}:\n{srv.logs()}")
        try:
            if requests.get(srv.url + "/health", timeout=1).status_code == 200:
                return srv
        except requests.RequestException:
            pass
        time.sleep(0.05)
    srv.stop()
    raise RuntimeError(f"server did not start:\n{srv.logs()}")
