"""HTTP push transport (§8.4.2): POST the message JSON to the address, bounded concurrency,
with the optional outbound auth header of §8.3.4 (`shared.delivery.push_auth`)."""
from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Callable

import urllib3

if TYPE_CHECKING:
    from shared.delivery.push_auth import PushAuth
    from shared.metrics import Metrics

log = logging.getLogger("resonate.push")


class HttpPush:
    def __init__(self, concurrency: int = 256, connect_timeout_ms: int = 10000, request_timeout_ms: int = 180000,
                 metrics: Metrics | None = None, auth: PushAuth | None = None) -> None:
        self.metrics = metrics
        self.auth = auth
        self._pool = urllib3.PoolManager(num_pools=64, maxsize=concurrency, retries=False)
        self._timeout = urllib3.Timeout(connect=connect_timeout_ms / 1000, total=request_timeout_ms / 1000)
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="push")

    def send(self, url: str, body: bytes, done: Callable[[bool], None]) -> None:
        try:
            self._executor.submit(self._post, url, body, done)
        except RuntimeError:  # the pool was shut down (stopping): the row stays queued for a retry
            log.warning("HTTP push dispatcher gone, message dropped")
            if self.metrics is not None:
                self.metrics.push_result("dropped")
            done(False)

    def _post(self, url: str, body: bytes, done: Callable[[bool], None]) -> None:
        ok = False
        headers = {"Content-Type": "application/json"}
        if self.auth is not None:
            try:  # on the push thread: a mint (rare, cached) never holds up the request that queued it
                headers[self.auth.header] = self.auth.value(url)
            except Exception as e:  # never sent without the configured credentials: retried later
                log.warning("OIDC ID token mint failed; push not sent, retried later url=%s error=%s", url, e)
                if self.metrics is not None:
                    self.metrics.push_result("error")
                done(False)
                return
        try:
            r = self._pool.request("POST", url, body=body, headers=headers, timeout=self._timeout, redirect=False)
            ok = 200 <= r.status < 300
            if not ok:
                log.warning("push to %s answered %s", url, r.status)
        except Exception as e:
            log.warning("push to %s failed: %s", url, e)
        if self.metrics is not None:
            self.metrics.push_result("success" if ok else "error")
        done(ok)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._pool.clear()
