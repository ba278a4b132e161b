"""A push target for tests: a tiny HTTP server on a loopback address that records every request
(path, headers, body) and answers with a fixed status (optionally a redirect)."""
from __future__ import annotations

import json
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Request:
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        cap: Capture = self.server.capture  # type: ignore[attr-defined]
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        try:
            body = json.loads(raw)
        except ValueError:
            body = raw
        with cap.lock:
            cap.requests.append(Request(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
        self.send_response(cap.status)
        if cap.location is not None:
            self.send_header("Location", cap.location)
        self.send_header("Content-Length", "0")
        self.end_headers()


class Capture:
    """`Capture(status=500).start()`; `.url(path)`, `.requests`, `.count`, `.stop()`."""

    def __init__(self, status: int = 200, host: str = "127.0.0.1", port: int = 0, location: str | None = None) -> None:
        self.status = status
        self.location = location
        self.requests: list[Request] = []
        self.lock = threading.Lock()
        self._srv = ThreadingHTTPServer((host, port), _Handler)
        self._srv.daemon_threads = True
        self._srv.capture = self  # type: ignore[attr-defined]
        self.host, self.port = self._srv.server_address[:2]

    def start(self) -> Capture:
        threading.Thread(target=self._srv.serve_forever, daemon=True).start()
        return self

    def url(self, path: str = "/", host: str | None = None) -> str:
        return f"http://{host or self.host}:{self.port}{path}"

    @property
    def count(self) -> int:
        with self.lock:
            return len(self.requests)

    def stop(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
