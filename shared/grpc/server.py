"""The gRPC listener of the local server and the container (docs/grpc.md): the four services of
the older server, `grpc.health.v1.Health` (SERVING for "" and each service until shutdown begins)
and server reflection, plaintext HTTP/2 on `server.bind`:`server.grpc_port`.

Threads: in the local server (gevent, monkey-patched) grpc is switched to its gevent mode before
anything of it exists, so its completion queue is polled on the hub's native thread pool and the
handlers run on the executor's workers, which under monkey patching are greenlets of the hub's
own thread. A handler therefore calls `service.handle` exactly as a flask request's greenlet
does (the SQLite store's commit offload, `hub.threadpool.apply`, included), and a handler waiting
on the database lets the HTTP listener run. Without monkey patching the workers are real
threads over a store that does not offload.

SO_REUSEPORT is off: a port another process holds is a startup error, not a silently shared port.
"""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from shared.grpc.stubs import SERVICES, load
from shared.service import Service

log = logging.getLogger("resonate.grpc")
WORKERS = 64  # RPCs handled at once (more wait their turn in the executor's queue)


class GrpcListener:
    """A started gRPC server; `stop` ends it."""

    def __init__(self, server: Any, health: Any, port: int) -> None:
        self.server = server
        self.health = health
        self.port = port

    def stop(self, grace_s: float) -> Any:
        """Begin stopping, without waiting: health NOT_SERVING, no new calls, calls in progress
        have `grace_s` to finish before grpc cancels them. The event is set once it has stopped."""
        self.health.enter_graceful_shutdown()
        return self.server.stop(grace_s)


def _address(bind: str, port: int) -> str:
    host = bind.strip("[]")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def start(service: Service, bind: str, port: int, max_message: int) -> GrpcListener:
    """Serve on `bind`:`port` (0: any free port; `GrpcListener.port` says which). Raises
    StubsMissing when the generated modules are not there, OSError when the port cannot be bound."""
    stubs = load()
    from shared.delivery.gcps import init_grpc_for_gevent

    init_grpc_for_gevent()  # before the first grpc object: a no-op without monkey patching
    import grpc
    from grpc_health.v1 import health, health_pb2, health_pb2_grpc
    from grpc_reflection.v1alpha import reflection

    from shared.grpc.services import register

    server = grpc.server(ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="grpc"),
                         options=[("grpc.so_reuseport", 0), ("grpc.max_receive_message_length", max_message)])
    register(server, service, stubs)
    checks = health.HealthServicer()
    for name in ("", *SERVICES):
        checks.set(name, health_pb2.HealthCheckResponse.SERVING)
    health_pb2_grpc.add_HealthServicer_to_server(checks, server)
    reflection.enable_server_reflection([*SERVICES, health.SERVICE_NAME, reflection.SERVICE_NAME], server)
    address = _address(bind, port)
    try:
        bound = server.add_insecure_port(address)
    except RuntimeError as e:  # grpc's "Failed to bind to address"
        server.stop(None)
        raise OSError(f"cannot listen on {address}: {e}") from None
    if not bound:  # older grpcio: 0 instead of an exception
        server.stop(None)
        raise OSError(f"cannot listen on {address}")
    server.start()
    return GrpcListener(server, checks, bound)
