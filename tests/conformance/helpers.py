"""Shared constants and helpers for the conformance scenarios of docs/protocol.md"""
from __future__ import annotations

import json
import socket
import threading
import time as _time
from typing import Any

import requests

from tests.support.envelope import check_reply, envelope
from tests.support.server import ServerProc
from tests.support.wait import FLOOR, wait_until  # noqa: F401 (wait_until: re-exported to the scenarios)

T = 1_000_000
A = "poll://any@g"
R = 30_000

SNAP_KEYS = {"promises", "promiseTimeouts", "callbacks", "listeners", "tasks", "taskTimeouts", "messages"}


# --------------------------------------------------------------------------- RPC helpers

def ok(rs: ServerProc, kind: str, data: Any, time: int | None = T) -> Any:
    status, out = rs.rpc(kind, data, time=time)
    assert status == 200, (kind, data, status, out)
    return out


def call(rs: ServerProc, kind: str, data: Any, time: int | None = T, corr: str | None = None,
         **head: Any) -> tuple[requests.Response, dict]:
    """Post one envelope with a chosen corrId; return the HTTP response and the parsed body."""
    env = envelope(kind, data, corr=corr, time=time, **head)
    r = rs.post(env)
    body = r.json()
    check_reply(body, kind, env["head"]["corrId"], r.status_code)
    return r, body


def tags(target: str | None = A, **extra: str) -> dict[str, str]:
    out = {k.replace("__", ":"): v for k, v in extra.items()}
    if target is not None:
        out["resonate:target"] = target
    return out


def create(rs: ServerProc, id: str, timeout: int = T + 60_000, tags: dict | None = None,
           param: dict | None = None, time: int | None = T) -> dict:
    data: dict[str, Any] = {"id": id, "timeoutAt": timeout}
    if tags is not None:
        data["tags"] = tags
    if param is not None:
        data["param"] = param
    return ok(rs, "promise.create", data, time=time)["promise"]


def get(rs: ServerProc, id: str, time: int | None = T) -> dict:
    return ok(rs, "promise.get", {"id": id}, time=time)["promise"]


def settle(rs: ServerProc, id: str, state: str = "resolved", value: dict | None = None,
           time: int | None = T) -> dict:
    data: dict[str, Any] = {"id": id, "state": state}
    if value is not None:
        data["value"] = value
    return ok(rs, "promise.settle", data, time=time)["promise"]


def create_action(id: str, timeout: int = T + 600_000, tags: dict | None = None, param: dict | None = None) -> dict:
    data: dict[str, Any] = {"id": id, "timeoutAt": timeout}
    if tags is not None:
        data["tags"] = tags
    if param is not None:
        data["param"] = param
    return {"kind": "promise.create", "head": {}, "data": data}


def settle_action(id: str, state: str = "resolved", value: dict | None = None) -> dict:
    data: dict[str, Any] = {"id": id, "state": state}
    if value is not None:
        data["value"] = value
    return {"kind": "promise.settle", "head": {}, "data": data}


def cb_action(awaited: str, awaiter: str) -> dict:
    return {"kind": "promise.register_callback", "head": {}, "data": {"awaited": awaited, "awaiter": awaiter}}


def task_create(rs: ServerProc, id: str, pid: str = "w", ttl: int = 60_000, timeout: int = T + 600_000,
                tags: dict | None = None, time: int | None = T) -> dict:
    """task.create with a target (A unless tags given); asserts 200, returns data."""
    return ok(rs, "task.create", {"pid": pid, "ttl": ttl,
                                  "action": create_action(id, timeout, tags if tags is not None else {"resonate:target": A})},
              time=time)


def acquire(rs: ServerProc, id: str, version: int, pid: str = "w", ttl: int = 60_000,
            time: int | None = T) -> tuple[int, Any]:
    return rs.rpc("task.acquire", {"id": id, "version": version, "pid": pid, "ttl": ttl}, time=time)


def suspend(rs: ServerProc, id: str, version: int, awaited: list[str], time: int | None = T) -> tuple[int, Any]:
    return rs.rpc("task.suspend", {"id": id, "version": version,
                                   "actions": [cb_action(a, id) for a in awaited]}, time=time)


def fulfill(rs: ServerProc, id: str, version: int, state: str = "resolved", value: dict | None = None,
            time: int | None = T) -> tuple[int, Any]:
    return rs.rpc("task.fulfill", {"id": id, "version": version, "action": settle_action(id, state, value)}, time=time)


def task_get(rs: ServerProc, id: str, time: int | None = T) -> dict:
    return ok(rs, "task.get", {"id": id}, time=time)["task"]


def snap(rs: ServerProc) -> dict:
    s = ok(rs, "debug.snap", {}, time=None)
    assert isinstance(s, dict), s
    return s


def tick(rs: ServerProc, t: int) -> Any:
    return ok(rs, "debug.tick", {"time": t}, time=t)


def execute(id: str, version: int, address: str = A) -> dict:
    """A queued execute as listed in debug.snap (its head is {})."""
    return {"address": address, "message": {"kind": "execute", "head": {}, "data": {"task": {"id": id, "version": version}}}}


def unblock(promise: dict, address: str) -> dict:
    return {"address": address, "message": {"kind": "unblock", "head": {}, "data": {"promise": promise}}}


def find(items: list[dict], id: str, key: str = "id") -> dict | None:
    hits = [x for x in items if x.get(key) == id]
    assert len(hits) <= 1, hits
    return hits[0] if hits else None


def unordered(items: list[Any]) -> list[Any]:
    return sorted(items, key=lambda x: json.dumps(x, sort_keys=True))


def same(a: list[Any], b: list[Any]) -> bool:
    return unordered(a) == unordered(b)


def messages_for(s: dict, task_id: str) -> list[dict]:
    return [m for m in s["messages"] if m["message"]["kind"] == "execute"
            and m["message"]["data"]["task"]["id"] == task_id]


def now_ms() -> int:
    return int(_time.time() * 1000)



# --------------------------------------------------------------------------- SSE client

class SseClient:
    """GET /poll/{group}/{id} with requests(stream=True); a thread collects the raw (de-chunked) bytes."""

    def __init__(self, base_url: str, group: str, id: str, timeout: float = 5.0) -> None:
        self.url = f"{base_url}/poll/{group}/{id}"
        self.resp = requests.get(self.url, stream=True, timeout=(timeout, None),
                                 headers={"Accept": "text/event-stream"})
        self.status = self.resp.status_code
        self.buf = bytearray()
        self.cond = threading.Condition()
        self.ended = False
        self.error: BaseException | None = None
        self._sock = self._find_sock()
        self._thread: threading.Thread | None = None
        if self.status == 200:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()

    def _find_sock(self) -> socket.socket | None:
        raw = self.resp.raw
        for getter in (lambda: raw._connection.sock,
                       lambda: raw._fp.fp.raw._sock):
            try:
                s = getter()
                if isinstance(s, socket.socket):
                    return s
            except Exception:
                pass
        return None

    def _run(self) -> None:
        try:
            while True:
                chunk = self.resp.raw.read1(65536)
                if not chunk:
                    break
                with self.cond:
                    self.buf += chunk
                    self.cond.notify_all()
        except BaseException as e:
            self.error = e
        finally:
            with self.cond:
                self.ended = True
                self.cond.notify_all()

    # -- reading

    def raw(self) -> bytes:
        with self.cond:
            return bytes(self.buf)

    def blocks(self) -> list[bytes]:
        """Complete SSE events (text between blank-line terminators)."""
        data = self.raw()
        parts = data.split(b"\n\n")
        return [p for p in parts[:-1]]

    def messages(self) -> list[dict]:
        out = []
        for b in self.blocks():
            if b.startswith(b"data: "):
                out.append(json.loads(b[len(b"data: "):].decode()))
        return out

    def comments(self) -> list[bytes]:
        return [b for b in self.blocks() if b.startswith(b":")]

    def wait_messages(self, n: int, timeout: float) -> list[dict]:
        """At least n messages (or the stream's end); waits at least FLOOR seconds for them."""
        deadline = _time.monotonic() + max(timeout, FLOOR)
        with self.cond:
            while True:
                msgs = self.messages_unlocked()
                if len(msgs) >= n or self.ended:
                    return msgs
                left = deadline - _time.monotonic()
                if left <= 0:
                    return msgs
                self.cond.wait(left)

    def messages_unlocked(self) -> list[dict]:
        parts = bytes(self.buf).split(b"\n\n")[:-1]
        return [json.loads(p[len(b"data: "):].decode()) for p in parts if p.startswith(b"data: ")]

    def assert_framing(self) -> None:
        """Byte rules: LF only, one `data: ` line of compact single-line JSON per event,
        events end with a blank line, comments start with ':'; no event:/id:/retry: fields."""
        data = self.raw()
        assert b"\r" not in data, data[:500]
        for block in data.split(b"\n\n")[:-1]:
            assert block, f"empty event block (three or more consecutive LFs) in {data[:500]!r}"
            lines = block.split(b"\n")
            if lines[0].startswith(b":"):
                assert all(line.startswith(b":") for line in lines), block
                continue
            assert len(lines) == 1, f"event must be exactly one data: line, got {block!r}"
            line = lines[0]
            assert line.startswith(b"data: "), block
            json.loads(line[len(b"data: "):].decode())

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        try:
            self.resp.close()
        except Exception:
            pass
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> SseClient:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
