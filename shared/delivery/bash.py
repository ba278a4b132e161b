"""The built-in `bash://` executor (docs/protocol.md#4-addresses; docs/transports.md): the server runs a
task itself. DANGEROUS: whoever may create a promise chooses what runs. Off by default; when on,
only commands on `transports.bash_exec.allow` run.

Unlike the reference, which hands `param.data` to `bash -c`, the script here is ONE command
line split like a shell would split it (quotes honoured) but never given to a shell: no
expansion, no `;`, `&&`, pipes or redirections, so nothing but the allowed program runs. Its
first word must equal an allow-list entry: a program name (found on the server's PATH) or an
exact path (e.g. a script the operator installed). Anything else rejects the promise with a WARN.

Per execute message (the server acts as its own worker):
1. `task.acquire` at the message's version, pid `bash-exec-<random>`, ttl `tasks.lease_timeout`;
   not acquired: another worker has it, done.
2. Decode `param.data` (base64, UTF-8), check the allow-list; failure rejects the promise.
3. Run it (stdin closed, the server's working directory, an environment of PATH, HOME, LANG and
   `RESONATE_PROMISE_ID`/`_CREATED_AT`/`_TIMEOUT_AT`, never the server's secrets), heartbeating
   every max(lease/3, 1 s); killed when the promise's timeout passes.
4. Exit 0: fulfil `resolved` with the trimmed stdout as plain text; non-zero: `rejected` with the
   trimmed stderr (or `exit code N`); spawn failure: `rejected` with the error; killed (signal,
   timeout): nothing, the lease expires and the task is dispatched again.
Only local execution: `bash://docker/...` and `bash://tensorlake/...` are dropped with a WARN.
"""
from __future__ import annotations

import base64
import binascii
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from shared.clock import Clock
from shared.kinds import decode
from shared.logs import q
from shared.protocol import Reject
from shared.requests import Request

log = logging.getLogger("resonate.bash_exec")

MAX_RUNNING = 8  # scripts at once; further messages wait in the pool's queue (not yet acquired)
LOCAL = ("bash://", "bash://bash")
ENV_PASSED = ("PATH", "HOME", "LANG", "LC_ALL", "TZ")


class TaskRunner(Protocol):
    """What the executor needs of the core (`Service`): run an operation as the server's own worker."""

    @property
    def clock(self) -> Clock: ...
    def execute(self, req: Request, now: int) -> tuple[int, Any]: ...


class NotAllowed(Exception):
    """The command line is not on the allow-list (or not a command line at all)."""


def command(script: str, allow: tuple[str, ...]) -> list[str]:
    """The argv to execute for `script`, or NotAllowed. Allowed names resolve on PATH now."""
    try:
        argv = shlex.split(script, comments=False, posix=True)
    except ValueError as e:
        raise NotAllowed(f"cannot split the command line: {e}") from None
    if not argv:
        raise NotAllowed("empty command line")
    if argv[0] not in allow:
        raise NotAllowed(f"command {argv[0]!r} is not on transports.bash_exec.allow")
    if "/" not in argv[0]:
        path = shutil.which(argv[0])
        if path is None:
            raise NotAllowed(f"allowed command {argv[0]!r} was not found on PATH")
        argv[0] = path
    return argv


class BashExec:
    """The `bash` transport: `send(address, body, done)` like HttpPush; done(ok) reports whether
    the message was handled (the task acquired, or taken by someone else), not the script's end."""

    def __init__(self, service: TaskRunner, allow: tuple[str, ...], lease_ms: int) -> None:
        self.service = service
        self.allow = tuple(allow)
        self.lease_ms = lease_ms
        self._executor = ThreadPoolExecutor(max_workers=MAX_RUNNING, thread_name_prefix="bash-exec")
        self._stopped = threading.Event()
        self._running: dict[subprocess.Popen[bytes], str] = {}  # process -> the program it runs
        self._lock = threading.Lock()
        log.warning("Bash exec transport enabled (local only; allowed commands: %s) - any client that may "
                    "create a promise can run these", ", ".join(self.allow) or "none")

    def send(self, address: str, body: bytes, done: Callable[[bool], None]) -> None:
        if address.lower() not in LOCAL:
            log.warning("bash-exec: cannot parse address (only local bash:// is supported) address=%s", q(address))
            done(True)  # dropped, as the reference drops what it cannot parse
            return
        try:
            msg = json.loads(body)
            task = msg["data"]["task"]
            tid, version = str(task["id"]), int(task["version"])
        except (ValueError, KeyError, TypeError):
            done(True)  # an unblock (or anything but an execute): nothing to run
            return
        try:
            self._executor.submit(self._run, tid, version, done)
        except RuntimeError:  # shutting down: the row stays queued
            done(False)

    # ---- one task ---------------------------------------------------------------------------

    def _call(self, kind: str, data: dict[str, Any]) -> tuple[int, Any]:
        """One operation as the server's own worker (no inbound auth: this is the server)."""
        try:
            return self.service.execute(decode(kind, data), self.service.clock.now())
        except Reject as e:
            return e.status, e.message
        except Exception as e:
            log.warning("bash-exec: %s failed: %s", kind, q(str(e)))
            return 500, str(e)

    def _run(self, tid: str, version: int, done: Callable[[bool], None]) -> None:
        pid = f"bash-exec-{secrets.randbits(64)}"
        status, data = self._call("task.acquire", {"id": tid, "version": version, "pid": pid, "ttl": self.lease_ms})
        done(status < 500)  # 404/409: not ours to run; 5xx: the message is tried again
        if status != 200:
            return
        task, promise = data["task"], data["promise"]

        def fulfil(state: str, text: str) -> None:
            self._fulfil(tid, task["version"], state, text)

        try:
            script = base64.b64decode((promise.get("param") or {}).get("data") or "", validate=True).decode()
            if not script:
                raise ValueError("empty")
        except (ValueError, binascii.Error, UnicodeDecodeError):
            fulfil("rejected", "param.data is missing or not valid base64/utf-8")
            return
        try:
            argv = command(script, self.allow)
        except NotAllowed as e:
            log.warning("bash-exec: refused to run task %s: %s", q(tid), q(str(e)))
            fulfil("rejected", f"bash-exec: refused: {e}")
            return
        left_ms = promise["timeoutAt"] - self.service.clock.now()
        if left_ms <= 0:
            return  # the promise timed out meanwhile: its timer settles it
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(pid, tid, task["version"], stop), daemon=True)
        beat.start()
        try:
            outcome = self._execute(argv, promise, left_ms / 1000)
        finally:
            stop.set()
        if outcome is not None:
            fulfil(*outcome)

    def _execute(self, argv: list[str], promise: dict[str, Any], timeout_s: float) -> tuple[str, str] | None:
        """(state, text) to fulfil with, or None when the process was killed."""
        env = {k: os.environ[k] for k in ENV_PASSED if k in os.environ}
        env.update(RESONATE_PROMISE_ID=promise["id"], RESONATE_PROMISE_CREATED_AT=str(promise["createdAt"]),
                   RESONATE_PROMISE_TIMEOUT_AT=str(promise["timeoutAt"]))
        try:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                    env=env, start_new_session=True)
        except OSError as e:
            return "rejected", f"bash-exec: cannot start {argv[0]}: {e}"
        with self._lock:
            self._running[proc] = argv[0]
        try:
            out, err = proc.communicate(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            log.warning("bash-exec: killed %s (pid %d): the promise %s timed out", q(argv[0]), proc.pid,
                        q(promise["id"]))
            _kill_group(proc)
            return None
        finally:
            with self._lock:
                self._running.pop(proc, None)
        if self._stopped.is_set():
            return None  # killed by close(): settle nothing, the task is dispatched again
        if proc.returncode < 0:
            log.warning("bash-exec: %s was killed by signal %d; the task will be dispatched again",
                        q(argv[0]), -proc.returncode)
            return None
        if proc.returncode == 0:
            return "resolved", out.decode(errors="replace").strip()
        text = err.decode(errors="replace").strip()
        return "rejected", text or f"exit code {proc.returncode}"

    def _fulfil(self, tid: str, version: int, state: str, text: str) -> None:
        action = {"kind": "promise.settle", "head": {}, "data": {"id": tid, "state": state, "value": {"data": text}}}
        status, data = self._call("task.fulfill", {"id": tid, "version": version, "action": action})
        if status != 200:  # e.g. the promise timed out meanwhile (409): the reference fails silently too
            log.info("bash-exec: fulfilling task %s answered %d: %s", q(tid), status, q(data))

    def _heartbeat(self, pid: str, tid: str, version: int, stop: threading.Event) -> None:
        every = max(self.lease_ms / 3000, 1.0)
        while not stop.wait(every) and not self._stopped.is_set():
            self._call("task.heartbeat", {"pid": pid, "tasks": [{"id": tid, "version": version}]})

    def close(self) -> None:
        """Shutdown: programs still running are killed (no orphans outlive the server); their
        tasks are dispatched again once their leases end."""
        self._stopped.set()
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            running = list(self._running.items())
        for proc, program in running:
            log.warning("bash-exec: shutting down, killing %s (pid %d)", q(program), proc.pid)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except (ProcessLookupError, PermissionError):
                pass


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        proc.kill()
    proc.communicate()
