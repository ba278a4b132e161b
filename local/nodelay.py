"""The gevent WSGI server both local processes (server, cloud-sim router) run."""
from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

from gevent.pywsgi import WSGIHandler, WSGIServer

MAX_HEADER_LINE = 65536  # as http.client, whose parser pywsgi uses by default
MAX_HEADERS = 100


class RequestHeaders:
    """A request's header fields, read straight off the connection.

    pywsgi parses headers with `http.client.parse_headers`, i.e. the `email` package's feed
    parser: about 0.3 ms of CPU per request, a third of the server's own time for a typical SDK
    request (measured with py-spy under bench figure (h)). This reads the same lines with the same
    bounds (100 fields, 64 KiB per line, ISO-8859-1) and offers what pywsgi reads of its
    `MessageClass`: `status` (non-empty rejects the request with 400), `get`/`getheader` (first
    field of that name, case-insensitive), `del`, `typeheader` and `headers` (the field lines).
    A line that is neither a field nor a continuation is refused rather than guessed at."""

    __slots__ = ("fields", "status")

    def __init__(self, rfile: Any) -> None:
        self.status = ""
        self.fields: list[tuple[str, str]] = []
        fields = self.fields
        while True:
            raw = rfile.readline(MAX_HEADER_LINE + 1)
            if len(raw) > MAX_HEADER_LINE:
                self.status = "Line too long"
                return
            if raw in (b"\r\n", b"\n", b""):
                return
            line = raw.decode("iso-8859-1").rstrip("\r\n")
            if line[:1] in (" ", "\t"):  # obsolete line folding: part of the previous field
                if not fields:
                    self.status = "Continuation line without a field"
                    return
                name, value = fields[-1]
                fields[-1] = (name, f"{value} {line.strip()}")
                continue
            name, sep, value = line.partition(":")
            if not sep or not name or name != name.strip():
                self.status = "Malformed header line"
                return
            if len(fields) >= MAX_HEADERS:
                self.status = f"More than {MAX_HEADERS} header fields"
                return
            fields.append((name, value.strip(" \t")))

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for k, v in self.fields:
            if k.lower() == name:
                return v
        return default

    getheader = get

    def __delitem__(self, name: str) -> None:
        name = name.lower()
        self.fields = [(k, v) for k, v in self.fields if k.lower() != name]

    @property
    def typeheader(self) -> str | None:
        return self.get("content-type")

    @property
    def headers(self) -> Iterator[str]:
        for k, v in self.fields:
            yield f"{k}: {v}\r\n"


class OneSendHandler(WSGIHandler):
    """pywsgi's handler, writing a response's head and its first body bytes together, and
    reading request headers with `RequestHeaders`."""

    def MessageClass(self, rfile: Any, *_: Any) -> RequestHeaders:
        return RequestHeaders(rfile)

    def _write_with_headers(self, data: bytes) -> None:
        """The status line, the headers and the first body bytes in one send (pywsgi sends the
        headers alone first): one segment instead of two for every small response (and for an
        SSE stream's first event), so the client reads it whole in one wake-up."""
        if len(data) > 65536:  # not worth the copy
            return super()._write_with_headers(data)
        self.headers_sent = True
        self.finalize_headers()  # decides Content-Length or chunked
        towrite = bytearray(b"HTTP/1.1 ")
        towrite += self.status
        towrite += b"\r\n"
        for header, value in self.response_headers:
            towrite += header
            towrite += b": "
            towrite += value
            towrite += b"\r\n"
        towrite += b"\r\n"
        if data and self.response_use_chunked:
            towrite += b"%x\r\n" % len(data)
            towrite += data
            towrite += b"\r\n"
        else:
            towrite += data
        self._sendall(towrite)


class NoDelayServer(WSGIServer):
    """pywsgi with TCP_NODELAY: small responses must not wait for the peer's delayed ACK."""

    handler_class = OneSendHandler

    def handle(self, sock: socket.socket, address: tuple) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().handle(sock, address)
