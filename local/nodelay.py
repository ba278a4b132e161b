"""The gevent WSGI server both local processes (server, cloud-sim router) run."""
from __future__ import annotations

import socket

from gevent.pywsgi import WSGIServer


class NoDelayServer(WSGIServer):
    """pywsgi with TCP_NODELAY: small responses must not wait for the peer's delayed ACK."""

    def handle(self, sock: socket.socket, address: tuple) -> None:
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        super().handle(sock, address)
