"""HTTP push transport (docs/protocol.md#4-addresses): POST the message JSON to the address, bounded concurrency,
with the optional outbound auth header (`shared.delivery.push_auth`).

Every connection a push opens goes through the outbound destination policy
(`shared.delivery.destinations`): the host is resolved when the connection is made, every
address it resolves to is checked, and only an allowed one is dialled (the Host header, TLS SNI
and the certificate check still use the URL's host name). A host whose addresses are all refused
fails the push like any other failure. Redirects are never followed.
"""
from __future__ import annotations

import logging
import socket
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import urllib3
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError
from urllib3.util.connection import allowed_gai_family
from urllib3.util.timeout import _DEFAULT_TIMEOUT

from shared.delivery.destinations import DestinationRefused, Policy, resolve
from shared.logs import q

if TYPE_CHECKING:
    from shared.delivery.push_auth import PushAuth
    from shared.metrics import Metrics

log = logging.getLogger("resonate.push")


def _guarded_conn(self: Any) -> socket.socket:
    """`HTTPConnection._new_conn` with the policy between resolving and connecting."""
    policy: Policy = self.policy
    host = self._dns_host
    try:
        infos = resolve(host, self.port, allowed_gai_family())
    except socket.gaierror as e:
        raise NameResolutionError(self.host, self, e) from e
    allowed, refused = [], None
    for info in infos:
        why = policy.refusal(host, info[4][0])
        if why is None:
            allowed.append(info)
        elif refused is None:
            refused = why
    if not allowed:
        raise DestinationRefused(f"host {host!r} {refused}")
    err: OSError | None = None
    for af, socktype, proto, _, sa in allowed:
        sock = None
        try:
            sock = socket.socket(af, socktype, proto)
            for opt in self.socket_options or ():
                sock.setsockopt(*opt)
            if self.timeout is not _DEFAULT_TIMEOUT:
                sock.settimeout(self.timeout)
            if self.source_address:
                sock.bind(self.source_address)
            sock.connect(sa)
            sys.audit("http.client.connect", self, self.host, self.port)
            return sock
        except OSError as e:
            err = e
            if sock is not None:
                sock.close()
    assert err is not None
    if isinstance(err, TimeoutError):
        raise ConnectTimeoutError(self, f"Connection to {self.host} timed out. (connect timeout={self.timeout})")
    raise NewConnectionError(self, f"Failed to establish a new connection: {err}")


def guarded_pool_manager(policy: Policy, **kw: Any) -> urllib3.PoolManager:
    """A PoolManager whose connections obey `policy` (per instance: the policy is a class
    attribute of connection classes made for it)."""
    conns = {name: type(f"Guarded{base.__name__}", (base,), {"policy": policy, "_new_conn": _guarded_conn})
             for name, base in (("http", HTTPConnection), ("https", HTTPSConnection))}
    pm = urllib3.PoolManager(**kw)
    pm.pool_classes_by_scheme = {
        "http": type("GuardedHTTPConnectionPool", (HTTPConnectionPool,), {"ConnectionCls": conns["http"]}),
        "https": type("GuardedHTTPSConnectionPool", (HTTPSConnectionPool,), {"ConnectionCls": conns["https"]}),
    }
    return pm


class HttpPush:
    def __init__(self, concurrency: int = 256, connect_timeout_ms: int = 10000, request_timeout_ms: int = 180000,
                 metrics: Metrics | None = None, auth: PushAuth | None = None, policy: Policy | None = None) -> None:
        self.metrics = metrics
        self.auth = auth
        self.policy = policy or Policy()  # the fixed ranges (metadata, link-local) are refused even so
        self._pool = guarded_pool_manager(self.policy, num_pools=64, maxsize=concurrency, retries=False)
        self._timeout = urllib3.Timeout(connect=connect_timeout_ms / 1000, total=request_timeout_ms / 1000)
        self._executor = ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="push")

    def send(self, url: str, body: bytes, done: Callable[[bool], None], trace: dict[str, str] | None = None) -> None:
        """`trace`: W3C trace-context headers to send (the row's deliver span, shared/tracing.py)."""
        try:
            self._executor.submit(self._post, url, body, done, trace)
        except RuntimeError:  # the pool was shut down (stopping): the row stays queued for a retry
            log.warning("HTTP push dispatcher gone, message dropped")
            if self.metrics is not None:
                self.metrics.push_result("dropped")
            done(False)

    def _post(self, url: str, body: bytes, done: Callable[[bool], None], trace: dict[str, str] | None = None) -> None:
        ok = False
        headers = {"Content-Type": "application/json", **trace} if trace else {"Content-Type": "application/json"}
        if self.auth is not None and self.auth.applies_to(url):  # credentials only to allow-listed origins
            try:  # on the push thread: a mint (rare, cached) never holds up the request that queued it
                headers[self.auth.header] = self.auth.value(url)
            except Exception as e:  # never sent without the configured credentials: retried later
                log.warning("OIDC ID token mint failed; push not sent, retried later url=%s error=%s", q(url), e)
                if self.metrics is not None:
                    self.metrics.push_result("error")
                done(False)
                return
        try:
            r = self._pool.request("POST", url, body=body, headers=headers, timeout=self._timeout, redirect=False)
            ok = 200 <= r.status < 300
            if not ok:
                log.warning("push to %s answered %s", q(url), r.status)
        except DestinationRefused as e:
            log.warning("push refused by the outbound destination policy url=%s reason=%s", q(url), q(str(e)))
        except Exception as e:
            log.warning("push to %s failed: %s", q(url), e)
        if self.metrics is not None:
            self.metrics.push_result("success" if ok else "error")
        done(ok)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
        self._pool.clear()
