"""The server under test: a real subprocess over HTTP (what every client sees), or `inproc`.

`start_server(backend, workdir, ...)`: `memory`, `sqlite`, `postgres` start `python -m local`
on a free port (`ServerProc`); `inproc` runs `shared.runtime.Runtime` over the memory store in
this process and answers through the flask app's test client (`InprocServer`, no socket). Both
offer `.rpc`, `.post`, `.request`, `.logs`, `.stop`, `.token`, `.backend`; only a process has a
`.url` (SSE streams, raw sockets, SDK workers need one: those tests are marked `process`).
"""
from __future__ import annotations

import io
import json
import logging
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import requests

from local.simprocs import listens
from tests.support import marks
from tests.support.envelope import VERSION, check_reply, envelope

ROOT = Path(__file__).resolve().parents[2]
__all__ = ["ROOT", "VERSION", "InprocServer", "ServerProc", "backend_names", "backends", "process_backend_names",
           "process_backends", "start_legacy_server", "start_server"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


DEFAULT_BACKENDS = "inproc,sqlite,postgres,mysql"


def backend_names() -> list[str]:
    """The backends the server suites run on: RESONATE_TEST_BACKENDS (comma-separated, default
    inproc,sqlite,postgres,mysql; `memory` is the in-memory store in a server process)."""
    raw = os.environ.get("RESONATE_TEST_BACKENDS", DEFAULT_BACKENDS)
    return [b.strip() for b in raw.split(",") if b.strip()]


def process_backend_names() -> list[str]:
    """The same for tests that need a real server process: `inproc` becomes `memory`."""
    return list(dict.fromkeys("memory" if b == "inproc" else b for b in backend_names()))


def backends() -> list[Any]:
    """`backend_names()` as pytest params carrying their marks (`process`, `postgres`, `mysql`)."""
    return [marks.param(b) for b in backend_names()]


def process_backends() -> list[Any]:
    """`process_backend_names()` as marked pytest params."""
    return [marks.param(b) for b in process_backend_names()]


class _Rpc:
    """`.rpc` over the subclass's `.post`."""

    token: str | None = None  # inbound auth on: sent as head.auth by `rpc` unless the caller gives one

    def post(self, body: Any, raw: bool = False) -> Any:
        raise NotImplementedError

    def request(self, method: str, path: str, **kw: Any) -> Any:
        raise NotImplementedError

    def rpc(self, kind: str, data: Any, time: int | None = None, **head: Any) -> tuple[int, Any]:
        """Send one envelope; return (status, data) after checking the envelope echo rules. The
        operators' kinds (shared/kinds.py OPERATOR_KINDS) go to `POST /operator`, the others to `POST /`."""
        from shared.kinds import OPERATOR_KINDS

        if self.token is not None and "auth" not in head:
            head["auth"] = self.token
        env = envelope(kind, data, time=time, **head)
        r = self.post(env) if kind not in OPERATOR_KINDS else self.request("POST", "/operator", json=env)
        body = r.json()
        check_reply(body, kind, env["head"]["corrId"], r.status_code)
        return r.status_code, body["data"]


@dataclass
class ServerProc(_Rpc):
    backend: str
    port: int
    proc: subprocess.Popen
    log: Path
    db: Path | None = None
    pg_url: str | None = None  # the cloned database a postgres server owns (dropped at stop)
    my_url: str | None = None  # the database a mysql server owns (given back at stop)
    session: requests.Session = field(default_factory=requests.Session)
    token: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def post(self, body: Any, raw: bool = False) -> requests.Response:
        if raw:
            return self.session.post(self.url + "/", data=body, headers={"Content-Type": "application/json"}, timeout=60)
        return self.session.post(self.url + "/", json=body, timeout=30)

    def request(self, method: str, path: str, **kw: Any) -> requests.Response:
        """Any other route (`/health`, a legacy path, …) on the kept-alive session."""
        kw.setdefault("timeout", 30)
        return self.session.request(method, self.url + path, **kw)

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
        if drop and self.my_url is not None:
            from tests.support.mysql import give_back

            give_back(self.my_url)
        return self.proc.returncode


def start_server(backend: str, workdir: Path, debug: bool = True, args: list[str] | None = None,
                 env: dict[str, str] | None = None, port: int | None = None, db: Path | None = None,
                 pg_url: str | None = None, my_url: str | None = None) -> ServerProc:
    """Start `python -m local serve|dev` on a free port and wait until /health answers (`inproc`:
    the same server in this process; `port`, `db`, `pg_url`, `my_url` are for processes only)."""
    if backend == "inproc":
        # the suites use the RPC half of ServerProc's interface, which InprocServer has too
        return cast(ServerProc, InprocServer(workdir, debug=debug, args=args, env=env))
    marks.require(marks.PROCESS, "starts a server process")
    chosen = port is not None
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
    elif backend == "mysql":
        from tests.support.mysql import take_database

        my_url = my_url or take_database()
        env = {**(env or {}), "RESONATE_STORAGE__MYSQL__URL": my_url}
        cmd += ["serve", "--storage-type", "mysql"]
        if debug:
            cmd.append("--debug")
    else:
        raise ValueError(f"unknown backend {backend}")
    for _attempt in range(3):
        srv = _launch(backend, cmd, args or [], workdir, port, env, db, pg_url, my_url)
        if srv is not None or chosen:
            break
        port = free_port()  # another process bound the free port first: take another one
    if srv is None:
        raise RuntimeError(f"server could not bind port {port}")
    return srv


def start_legacy_server(backend: str, workdir: Path, **kw: Any) -> tuple[ServerProc, int]:
    """`start_server` with the REST-era SDKs' SSE listener on a free port of its own (not the fixed
    8002, so such servers run side by side); (the server, that port). A listener port another
    process took first makes the server exit: then it starts again on other ports."""
    args = kw.pop("args", None) or []
    for attempt in range(3):
        poll = free_port()
        try:
            return start_server(backend, workdir, args=[*args, "--legacy-poll-port", str(poll)], **kw), poll
        except RuntimeError as e:
            if "could not bind" not in str(e) or attempt == 2:
                raise
    raise AssertionError("unreachable")


def _launch(backend: str, cmd: list[str], args: list[str], workdir: Path, port: int, env: dict[str, str] | None,
            db: Path | None, pg_url: str | None, my_url: str | None) -> ServerProc | None:
    """Start the server on `port`; the ServerProc once it answers /health on its own socket, None
    when the port was taken by another process (`listens`: a stranger's /health does not count)."""
    cmd = [*cmd, "--server-port", str(port), "--observability-metrics-port", "0", "--legacy-poll-port", "0",
           "--server-grpc-port", "0", *args]
    log = workdir / f"server-{port}.log"
    fh = open(log, "wb")
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=fh, stderr=subprocess.STDOUT,
                            env={**os.environ, **(env or {})})
    srv = ServerProc(backend, port, proc, log, db, pg_url if backend == "postgres" else None,
                     my_url if backend == "mysql" else None)
    deadline = time.time() + 30
    while time.time() < deadline:
        if proc.poll() is not None:
            if "Failed to bind" in srv.logs():
                return None
            raise RuntimeError(f"server exited {proc.returncode}:\n{srv.logs()}")
        try:
            if listens(proc.pid, port) and requests.get(srv.url + "/health", timeout=1).status_code == 200:
                return srv
        except requests.RequestException:
            pass
        time.sleep(0.05)
    srv.stop()
    raise RuntimeError(f"server did not start:\n{srv.logs()}")


# ------------------------------------------------------------------------------ in process


class InprocResponse:
    """The parts of a `requests.Response` the suites read, from a werkzeug test response."""

    def __init__(self, r: Any) -> None:
        self.status_code: int = r.status_code
        self.headers = r.headers
        self.content: bytes = r.get_data()

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


def _flag_overrides(args: list[str] | None) -> dict[str, Any]:
    """`--section-key value` / `--section-key=value` / `--debug` as dotted config overrides (the
    server's own flags are the dotted keys spelled with dashes; local.cli is not imported here
    because it monkey-patches the process for gevent)."""
    from shared.config import parse_value, schema

    by_flag = {"--" + k.replace(".", "-").replace("_", "-"): k for k in schema().leaves}
    out: dict[str, Any] = {}
    it = iter(args or [])
    for arg in it:
        if arg == "--debug":
            out["debug"] = True
            continue
        name, eq, value = arg.partition("=")
        if name not in by_flag:
            raise ValueError(f"inproc server: flag {name!r} is not a configuration key (use a process backend)")
        out[by_flag[name]] = parse_value(by_flag[name], value if eq else next(it))
    return out


class InprocServer(_Rpc):
    """The server in this process: `Runtime` over the memory store (background loops on threads,
    as in a process) behind the flask app of `shared.http.create_app`, called through its test
    client. Configuration as a `dev` process would read it: defaults < RESONATE_* (os.environ,
    then `env`) < `args` flags; no resonate.toml."""

    backend = "inproc"
    proc = None
    db = None
    pg_url = None
    my_url = None

    def __init__(self, workdir: Path | None = None, debug: bool = True, args: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        from shared.config import load
        from shared.http import create_app
        from shared.runtime import Runtime

        overrides = {"debug": debug, "observability.metrics_port": 0, **_flag_overrides(args),
                     "storage.type": "memory"}
        self.cfg = load(overrides, env={**os.environ, **(env or {})})
        self.rt = Runtime(self.cfg, metrics=False)
        self.app = create_app(self.rt.service, self.rt.hub)
        self._log = io.StringIO()
        self._handler = logging.StreamHandler(self._log)
        self._handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
        logging.getLogger("resonate").addHandler(self._handler)
        self.rt.start()
        self._stopped = False

    @property
    def url(self) -> str:
        raise AttributeError("an inproc server has no URL: a test that needs a socket is marked `process` "
                             "and runs on a process backend")

    def post(self, body: Any, raw: bool = False) -> InprocResponse:
        if not raw:
            return self.request("POST", "/", data=json.dumps(body), headers={"Content-Type": "application/json"})
        return self.request("POST", "/", data=body, headers={"Content-Type": "application/json"})

    def request(self, method: str, path: str, *, data: Any = None, json: Any = None, headers: dict | None = None,
                timeout: float | None = None, **_: Any) -> InprocResponse:
        """One request through the test client. An iterator body is sent without a length, as a
        chunked upload reaches the app (terminated input)."""
        kw: dict[str, Any] = {"headers": headers or {}}
        if json is not None:
            kw["json"] = json
        elif isinstance(data, (bytes, str)) or data is None:
            kw["data"] = data
        else:  # an iterator of chunks
            kw["input_stream"] = io.BytesIO(b"".join(data))
            kw["environ_overrides"] = {"wsgi.input_terminated": True}
        with self.app.test_client() as c:
            return InprocResponse(c.open(path, method=method, **kw))

    def logs(self) -> str:
        return self._log.getvalue()

    def stop(self, drop: bool = True) -> int:
        if not self._stopped:
            self._stopped = True
            self.rt.stop(5)
            logging.getLogger("resonate").removeHandler(self._handler)
        return 0
