"""The gevent WSGI server both local processes (server, cloud-sim router) run."""
from __future__ import annotations

import socket

from gevent.pywsgi import WSGIHandler, WSGIServer


class OneSendHandler(WSGIHandler):
    """pywsgi's handler, writing a response's head and its first body bytes together."""

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
