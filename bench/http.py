"""A minimal asyncio HTTP/1.1 keep-alive client and SSE reader, cheap enough to be a load generator.

Only what the bench needs: one request in flight per connection, responses framed by
Content-Length (what the server sends for every non-streaming route), and an SSE reader that
undoes chunked transfer encoding and timestamps each `data:` event on arrival.
"""
from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from typing import Any

VERSION = "2026-04-01"


def envelope(kind: str, data: dict[str, Any], corr: str = "b") -> bytes:
    return json.dumps({"kind": kind, "head": {"corrId": corr, "version": VERSION}, "data": data},
                      separators=(",", ":")).encode()


def post_bytes(body: bytes) -> bytes:
    return (b"POST / HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\nContent-Length: "
            + str(len(body)).encode() + b"\r\n\r\n" + body)


GET_HEALTH = b"GET /health HTTP/1.1\r\nHost: bench\r\n\r\n"


class HttpError(Exception):
    pass


class Conn(asyncio.Protocol):
    """One keep-alive connection; `await conn.request(raw)` returns (status, body)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.fut: asyncio.Future | None = None
        self.closed = False

    @classmethod
    async def open(cls, host: str, port: int) -> Conn:
        loop = asyncio.get_running_loop()
        _, conn = await loop.create_connection(cls, host, port)
        return conn

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.fut is not None and not self.fut.done():
            self.fut.set_exception(HttpError(f"connection lost: {exc}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.fut is None or self.fut.done():
            return
        end = self.buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head = bytes(self.buf[:end]).lower()
        i = head.find(b"content-length:")
        if i < 0:
            self.fut.set_exception(HttpError("response without content-length: " + head[:200].decode()))
            return
        j = head.find(b"\r\n", i)
        length = int(head[i + 15:j if j > 0 else None])
        if len(self.buf) < end + 4 + length:
            return
        status = int(head[9:12])
        body = bytes(self.buf[end + 4:end + 4 + length])
        del self.buf[:end + 4 + length]
        self.fut.set_result((status, body))

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.closed:
            raise HttpError("connection closed")
        self.fut = asyncio.get_running_loop().create_future()
        self.transport.write(raw)  # type: ignore[union-attr]
        return await self.fut

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


class SSE:
    """An SSE stream on GET /poll/{group}/{id}; calls on_event(message, arrival_wall_ms, arrival_perf)."""

    def __init__(self, host: str, port: int, path: str, on_event: Callable[[dict, float, float], None]) -> None:
        self.host, self.port, self.path, self.on_event = host, port, path, on_event
        self.task: asyncio.Task | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.connected = asyncio.Event()

    async def start(self) -> None:
        self.task = asyncio.create_task(self._run())
        await asyncio.wait_for(self.connected.wait(), 10)

    async def _run(self) -> None:
        reader, self.writer = await asyncio.open_connection(self.host, self.port)
        self.writer.write(f"GET {self.path} HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        if not head.startswith(b"HTTP/1.1 200"):
            raise HttpError("SSE connect failed: " + head.decode(errors="replace"))
        chunked = b"transfer-encoding: chunked" in head.lower()
        self.connected.set()  # the server registers the stream before it writes any byte
        raw = bytearray()   # transport bytes (chunk-framed)
        body = bytearray()  # de-chunked SSE text
        while True:
            data = await reader.read(65536)
            if not data:
                return
            wall, perf = time.time() * 1000, time.perf_counter()
            if chunked:
                raw += data
                while True:
                    nl = raw.find(b"\r\n")
                    if nl < 0:
                        break
                    size = int(raw[:nl].split(b";")[0], 16)
                    if len(raw) < nl + 2 + size + 2:
                        break
                    body += raw[nl + 2:nl + 2 + size]
                    del raw[:nl + 2 + size + 2]
                    if size == 0:
                        return
            else:
                body += data
            while True:
                k = body.find(b"\n\n")
                if k < 0:
                    break
                event = bytes(body[:k])
                del body[:k + 2]
                if event.startswith(b"data: "):
                    self.on_event(json.loads(event[6:]), wall, perf)

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):
                pass
