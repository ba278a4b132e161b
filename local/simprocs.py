"""Process and database helpers of the cloud simulation (local/cloudsim.py): Linux process
groups, parent-death signals, readiness waits, the simulated database."""
from __future__ import annotations

import ast
import ctypes
import logging
import os
import resource
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger("resonate.cloudsim")

try:
    _libc: Any = ctypes.CDLL(None, use_errno=True)  # loaded before any fork: the child only calls prctl
except OSError:  # pragma: no cover
    _libc = None


def die_with_parent(parent: int) -> None:
    """preexec_fn (in the child, before exec): SIGKILL when the thread that forked us ends (so a
    test process that dies takes its simulation with it). Fork from a long-lived thread."""
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ensure_database(url: str) -> None:
    """Create url's database when it does not exist (through the `postgres` maintenance db)."""
    import pg8000.native

    from shared.storage.postgres import parse_url

    params = parse_url(url)
    name = params["database"]
    u = urlsplit(url)
    admin = pg8000.native.Connection(**parse_url(urlunsplit((u.scheme, u.netloc, "/postgres", u.query, ""))))
    try:
        if not admin.run("SELECT 1 FROM pg_database WHERE datname = :n", n=name):
            admin.run('CREATE DATABASE "' + name.replace('"', '""') + '"')
            log.info("created database %s", name)
    finally:
        admin.close()


def defined_targets(source: Path) -> set[str]:
    """Top-level function names in the functions source (a role without one is not started)."""
    tree = ast.parse(source.read_text())
    return {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def signal_group(proc: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)  # start_new_session: the group id is the child's pid
    except (ProcessLookupError, PermissionError):
        pass


def group_running(pgid: int) -> bool:
    """Whether a process of group pgid still runs. A zombie whose threads are all gone does not
    count (its descriptors are closed); a zombie thread-group leader whose other threads are
    still exiting does (they still hold the sockets)."""
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                if int(fields[2]) != pgid:
                    continue
                if fields[0] != b"Z" or len(os.listdir(f"/proc/{entry}/task")) > 1:
                    return True
            except OSError:
                continue
    return False


def listens(pid: int, port: int) -> bool:
    """Whether process `pid` itself holds a listening TCP socket on `port`.

    A port from `free_port()` is only free when it is picked: another process (a second
    simulation, a test server) may bind it first. Then the new instance fails to bind (gunicorn
    retries for five seconds before it exits) while the other process answers every probe, and a
    readiness check that only connects would route requests to a stranger. Read from Linux's
    /proc (the listening sockets' inodes, then the process's descriptors); where /proc does not
    tell, True."""
    inodes: set[str] = set()
    readable = False
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as fh:
                rows = fh.read().splitlines()[1:]
        except OSError:
            continue
        readable = True
        for row in rows:
            f = row.split()
            if len(f) > 9 and f[3] == "0A" and int(f[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(f[9])
    if not readable:
        return True
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            link = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if link.startswith("socket:[") and link[8:-1] in inodes:
            return True
    return False


def wait_accept(port: int, proc: subprocess.Popen, timeout: float) -> None:
    """Until `proc` listens on `port` and a connection is accepted (`listens`: its own socket)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        if listens(proc.pid, port):
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    return
            except OSError:
                pass
        time.sleep(0.05)
    raise TimeoutError(f"nothing accepts on port {port}")


def raise_fd_limit() -> None:
    """Children inherit it: 1,000 SSE streams need a socket each in the router and in poll."""
    try:
        _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard if hard != resource.RLIM_INFINITY else 65536, hard))
    except (ValueError, OSError):
        pass
