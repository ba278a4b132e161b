"""A minimal SSE client for tests: a reader thread parses `data:` events into a queue."""
from __future__ import annotations

import http.client
import json
import queue
import socket
import threading
from typing import Any
from urllib.parse import urlsplit

from tests.support.wait import FLOOR


class SSE:
    def __init__(self, url: str, timeout: float = 10, headers: dict[str, str] | None = None) -> None:
        u = urlsplit(url)
        self.conn = http.client.HTTPConnection(u.hostname, u.port, timeout=timeout)
        self.conn.request("GET", u.path, headers={"Accept": "text/event-stream", **(headers or {})})
        # a stream's answer says `Connection: close`, which hands the socket to the response
        # (conn.sock is None then): keep it, to set its timeout and to hang up
        self.sock = sock = self.conn.sock
        self.resp = self.conn.getresponse()
        self.status = self.resp.status
        self.headers = dict(self.resp.getheaders())
        self.events: queue.Queue[dict[str, Any]] = queue.Queue()
        self.raw = bytearray()
        self.comments = 0
        self.body = b""
        if self.status == 200:
            sock.settimeout(None)
            threading.Thread(target=self._read, daemon=True).start()
        else:
            self.body = self.resp.read()

    def _read(self) -> None:
        buf = b""
        try:
            while True:
                chunk = self.resp.read1(65536)
                if not chunk:
                    return
                self.raw += chunk
                buf += chunk
                while b"\n\n" in buf:
                    event, buf = buf.split(b"\n\n", 1)
                    if event.startswith(b"data: "):
                        self.events.put(json.loads(event[6:]))
                    elif event.startswith(b":"):
                        self.comments += 1
        except Exception:
            pass

    def next(self, timeout: float = FLOOR) -> dict[str, Any]:
        """The next event; waits at least FLOOR seconds (tests/support/wait.py) for it."""
        return self.events.get(timeout=max(timeout, FLOOR))

    def close(self) -> None:
        try:
            if self.sock is not None:
                self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.conn.close()
        self.resp.close()


def bearer_stream(url: str, token: str | None, timeout: float = 10) -> SSE:
    """`GET url` as a worker with `Authorization: Bearer <token>` (none when token is None)."""
    return SSE(url, timeout, headers={"Authorization": f"Bearer {token}"} if token is not None else None)


def refusal(s: SSE) -> tuple[int, bytes, str]:
    """(status, body, media type) of a refused stream (a 200 stream is closed first)."""
    if s.status == 200:
        s.close()
    return s.status, s.body, s.headers.get("Content-Type", "").split(";")[0]
