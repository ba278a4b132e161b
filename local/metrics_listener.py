"""The local server's Prometheus listener: `GET /metrics` on `observability.metrics_port`
(docs/operations.md#metrics).

A second gevent pywsgi server in the same event loop rather than prometheus_client's
`start_http_server`: that one runs a threading HTTP server (greenlets under monkey patching, but
outside the server's shutdown), and answers every path with the metrics, where the reference
answers 404. This one is stopped with the API listener and serves exactly one route.
"""
from __future__ import annotations

import logging

from gevent.pywsgi import WSGIServer

from shared.metrics import Metrics

log = logging.getLogger("resonate")


def start(metrics: Metrics, port: int, bind: str = "0.0.0.0") -> WSGIServer | None:
    """Listen on bind:port, `bind` being the API's `server.bind` (the reference always uses
    0.0.0.0: a server bound to loopback would still expose its metrics to the network). A port
    that cannot be bound is not fatal: the error is logged and the server runs without metrics."""
    server = WSGIServer((bind.strip("[]"), port), metrics.wsgi_app(), log=None, error_log=log)
    try:
        server.start()
    except OSError as e:
        log.error("Failed to bind metrics port port=%d bind=%s error=%s", port, bind, e)
        return None
    log.info("Metrics server listening port=%d bind=%s", port, bind)
    return server
