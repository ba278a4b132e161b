"""Google Cloud Pub/Sub transport (`gcps://project/topic`, docs/protocol.md#4-addresses).

Each message is published once to `projects/<project>/topics/<topic>`: `data` = the same JSON an
SSE or HTTP worker receives, no attributes, no ordering key. The topic must exist (the server
never creates topics). Credentials are Application Default Credentials; with
`PUBSUB_EMULATOR_HOST` set the client talks to that emulator instead (anonymous).

`send(address, body, done)` mirrors `HttpPush.send`: `done(True)` only once Pub/Sub confirmed
the publish, so the delivery layer deletes the outbox row only then (at-least-once); `done(False)`
on an error or after `timeout` ms and the row is re-driven with backoff. At most `concurrency`
publishes are in flight (a pool of that many threads, each waiting on one publish).

google-cloud-pubsub (and grpc) is imported on the first publish, never when the transport is
off: it costs a Cloud Function cold start about 0.2 s.
"""
from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from shared.delivery.destinations import project_refusal
from shared.logs import q
from shared.protocol import parse_address

if TYPE_CHECKING:
    from shared.metrics import Metrics

log = logging.getLogger("resonate.gcps")

# what the client's default publish retry retries (google.pubsub_v1 transports/base.py), within our timeout
_RETRYABLE = ("Aborted", "Cancelled", "DeadlineExceeded", "InternalServerError", "ResourceExhausted",
              "ServiceUnavailable", "Unknown")


def topic_path(address: str) -> str | None:
    """`gcps://p/t` -> `projects/p/topics/t` (the host is the project; the whole rest the topic)."""
    addr = parse_address(address)
    if addr is None or addr.scheme != "gcps":
        return None
    return f"projects/{addr.group}/topics/{addr.id}"


_grpc_ready = False


def init_grpc_for_gevent() -> None:
    """The local server runs on gevent: let grpc cooperate with its loop. Call before creating
    any grpc channel (any google-cloud client) in a monkey-patched process; idempotent."""
    global _grpc_ready
    if _grpc_ready:
        return
    _grpc_ready = True
    try:
        from gevent import monkey
    except ImportError:
        return
    if monkey.is_module_patched("socket"):
        import grpc.experimental.gevent as grpc_gevent

        grpc_gevent.init_gevent()


class PubSubPublish:
    """The `gcps` transport: one PublisherClient for every topic, created on first use."""

    def __init__(self, concurrency: int = 256, timeout_ms: int = 10000, metrics: Metrics | None = None,
                 allow_projects: tuple[str, ...] = ()) -> None:
        self.metrics = metrics
        self.allow_projects = tuple(allow_projects)  # non-empty: the only projects published to
        self.timeout = timeout_ms / 1000
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="gcps")
        self._client: Any = None
        self._retry: Any = None
        self._lock = threading.Lock()
        log.info("GCP Pub/Sub transport enabled concurrency=%d timeout_ms=%d", concurrency, timeout_ms)

    def send(self, address: str, body: bytes, done: Callable[[bool], None]) -> None:
        topic = topic_path(address)
        if topic is None:  # the delivery layer parsed it already; defensive
            log.warning("GCP Pub/Sub delivery failed: not a gcps address %s", q(address))
            self._result("error", done, False)
            return
        why = project_refusal(self.allow_projects, topic.split("/")[1])
        if why is not None:  # registered before the list changed: never published, fails like an error
            log.warning("GCP Pub/Sub delivery refused by the outbound destination policy address=%s reason=%s",
                        q(address), q(why))
            self._result("error", done, False)
            return
        try:
            self._executor.submit(self._publish, topic, body, done)
        except RuntimeError:  # the pool was shut down (stopping): the row stays queued for a retry
            log.warning("GCP Pub/Sub dispatcher gone, message dropped")
            self._result("dropped", done, False)

    def _publisher(self) -> Any:
        with self._lock:
            if self._client is None:
                init_grpc_for_gevent()
                from google.api_core import exceptions, retry
                from google.cloud import pubsub_v1

                kinds = tuple(getattr(exceptions, n) for n in _RETRYABLE)
                self._retry = retry.Retry(predicate=retry.if_exception_type(*kinds), initial=0.1, maximum=2.0,
                                          multiplier=2.0, timeout=self.timeout)
                self._client = pubsub_v1.PublisherClient()
            return self._client

    def _publish(self, topic: str, body: bytes, done: Callable[[bool], None]) -> None:
        try:
            client = self._publisher()
        except Exception as e:
            log.warning("Failed to get GCP Pub/Sub publisher topic=%s error=%s", q(topic), q(str(e)))
            self._result("error", done, False)
            return
        try:
            future = client.publish(topic, body, retry=self._retry, timeout=self.timeout)
            message_id = future.result(timeout=self.timeout + 1)
        except TimeoutError:
            log.warning("GCP Pub/Sub publish timed out topic=%s timeout_ms=%d", q(topic), int(self.timeout * 1000))
            self._result("error", done, False)
            return
        except Exception as e:
            kind = "timed out" if type(e).__name__ in ("DeadlineExceeded", "RetryError") else "failed"
            if kind == "timed out":
                log.warning("GCP Pub/Sub publish timed out topic=%s error=%s", q(topic), q(_short(e)))
            else:
                log.warning("GCP Pub/Sub delivery failed topic=%s error=%s", q(topic), q(_short(e)))
            self._result("error", done, False)
            return
        log.debug("GCP Pub/Sub delivery succeeded topic=%s message_id=%s", q(topic), message_id)
        self._result("success", done, True)

    def _result(self, status: str, done: Callable[[bool], None], ok: bool) -> None:
        if self.metrics is not None:
            self.metrics.push_result(status)
        done(ok)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            try:
                client.stop()  # flushes nothing new (each send waited for its publish); frees the channel
            except Exception:
                pass


def _short(e: BaseException) -> str:
    """An exception on one line (grpc errors carry multi-line debug strings)."""
    return f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
