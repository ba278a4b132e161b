"""Outbound auth for HTTP pushes (docs/security.md#outbound-destinations): a static bearer
token, or Google OIDC ID tokens so that workers on Cloud Run without unauthenticated access
accept the pushes.

GCP tokens come from Application Default Credentials in the spec's order: the key file named by
`GOOGLE_APPLICATION_CREDENTIALS` (service account or impersonation, through google-auth), else
the metadata server's identity endpoint. The metadata call is made here, once, with a short
timeout, rather than through `google.oauth2.id_token.fetch_id_token`: that one pings the server
and looks up the account's email before every mint (three round trips) and retries a server that
is down for about 18 s with the push thread blocked, whereas a failed push is retried anyway
(with backoff) by the outbox.

A token is cached per audience, refreshed in the background once it is in the last quarter of
its life (at most 5 min before `exp`) and no longer used in its last tenth (at most 30 s). A mint
that fails makes the push fail (the outbox keeps the row and retries it); the request is never
sent without the credentials the configuration asks for. Tokens are never logged.

Credentials go only to the origins on `transports.http_push.auth.allow` (`scheme://host[:port]`,
compared exactly after lower-casing scheme and host and dropping the scheme's default port).
A push to any other origin is sent without the header (a worker that needs it answers 401 and
the push fails like any other). The list is required with `bearer` and with `gcp` plus a fixed
audience (such a token is accepted by every service of that audience); with `gcp` and no fixed
audience each token's audience is the push URL itself, so a token sent elsewhere is only valid
there: the list is optional then (set it anyway to keep the server's identity to itself).
"""
from __future__ import annotations

import base64
import json
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol
from urllib.parse import urlencode

import urllib3

from shared.logs import q

if TYPE_CHECKING:
    from shared.config import HttpPushAuth

log = logging.getLogger("resonate.push")

REFRESH_AHEAD_S = 300.0  # start a background refresh this long before `exp` (or a quarter of the life)
MIN_VALIDITY_S = 30.0  # never send a token closer to `exp` than this (or a tenth of its life)
RETRY_REFRESH_S = 10.0  # after a failed background refresh, the next one waits this long
MAX_AUDIENCES = 1000  # cached audiences (= distinct delivery URLs when no audience is configured)
METADATA_DEFAULT_HOST = "metadata.google.internal"
IDENTITY_PATH = "/computeMetadata/v1/instance/service-accounts/default/identity"


class MintError(Exception):
    """No token could be had for this push (the message never contains a token)."""


class PushAuth(Protocol):
    header: str

    def applies_to(self, url: str) -> bool:
        """Whether a push to `url` may carry the credentials (its origin is allow-listed)."""
        ...

    def value(self, url: str) -> str:
        """The header's value for a push to `url`; raises `MintError`."""
        ...


DEFAULT_PORTS = {"http": 80, "https": 443}


def normalise_origin(entry: str) -> str:
    """`HTTPS://Workers.Example.com:443/` -> `https://workers.example.com`; ValueError when the
    entry is not `scheme://host[:port]` (no user, path, query or fragment)."""
    from urllib3.util import parse_url

    text = entry.strip()
    try:
        u = parse_url(text)
    except ValueError as e:
        raise ValueError(f"{entry!r} is not an origin: {e}") from None
    scheme = (u.scheme or "").lower()
    if scheme not in DEFAULT_PORTS or not u.host or "://" not in text:
        raise ValueError(f"{entry!r} is not an origin: expected http(s)://host[:port]")
    if u.auth or u.query is not None or u.fragment is not None or (u.path or "/") != "/":
        raise ValueError(f"{entry!r} is not an origin: only scheme://host[:port], no user, path or query")
    return _origin(scheme, u.host, u.port)


def _origin(scheme: str, host: str, port: int | None) -> str:
    host = host.lower().rstrip(".")
    return f"{scheme}://{host}" if port in (None, DEFAULT_PORTS[scheme]) else f"{scheme}://{host}:{port}"


def origin_of(url: str) -> str | None:
    """The normalised origin of a push URL (None when it does not parse)."""
    from urllib3.util import parse_url

    try:
        u = parse_url(url)
    except ValueError:
        return None
    scheme = (u.scheme or "").lower()
    if scheme not in DEFAULT_PORTS or not u.host:
        return None
    return _origin(scheme, u.host, u.port)


class Origins:
    """The allow-list of `transports.http_push.auth.allow`; empty: every origin."""

    def __init__(self, entries: tuple[str, ...] = ()) -> None:
        self._allowed = frozenset(normalise_origin(e) for e in entries)

    def __bool__(self) -> bool:
        return bool(self._allowed)

    def permits(self, url: str) -> bool:
        return not self._allowed or origin_of(url) in self._allowed


class StaticBearer:
    """`bearer` mode: the configured token, on every push."""

    def __init__(self, token: str, header: str = "Authorization", origins: Origins | None = None) -> None:
        self.header = header
        self._value = f"Bearer {token}"
        self.origins = origins or Origins()

    def applies_to(self, url: str) -> bool:
        return self.origins.permits(url)

    def value(self, url: str) -> str:
        return self._value


Minter = Callable[[str], str]  # audience -> a signed ID token (a JWT)


def metadata_minter(timeout_s: float = 10.0) -> Minter:
    """The metadata server's identity endpoint (Cloud Run, Cloud Functions, GCE). The host is
    `GCE_METADATA_HOST` (as google-auth reads it), read now rather than at import."""
    host = os.environ.get("GCE_METADATA_HOST") or os.environ.get("GCE_METADATA_ROOT") or METADATA_DEFAULT_HOST
    base = host if "://" in host else f"http://{host}"
    pool = urllib3.PoolManager(num_pools=2, maxsize=8, retries=False)
    timeout = urllib3.Timeout(connect=min(3.0, timeout_s), total=timeout_s)

    def mint(audience: str) -> str:
        # format=full adds `email`/`email_verified`, so a worker can check who pushed (as
        # google-auth asks too); Cloud Run's own check accepts both formats
        url = f"{base}{IDENTITY_PATH}?{urlencode({'audience': audience, 'format': 'full'})}"
        try:
            r = pool.request("GET", url, headers={"Metadata-Flavor": "Google"}, timeout=timeout, redirect=False)
        except Exception as e:
            raise MintError(f"metadata server unreachable: {type(e).__name__}") from None
        if r.status != 200:
            raise MintError(f"metadata server answered {r.status}")
        return r.data.decode("ascii", "replace").strip()

    return mint


def key_file_minter(timeout_s: float = 10.0) -> Minter:
    """`GOOGLE_APPLICATION_CREDENTIALS` (a service-account key or an impersonated-account
    configuration): google-auth signs the assertion and exchanges it at the file's token URI."""
    import google.auth.transport.urllib3
    import google.oauth2.id_token

    pool = urllib3.PoolManager(num_pools=4, maxsize=8, retries=False,
                               timeout=urllib3.Timeout(connect=min(3.0, timeout_s), total=timeout_s))
    request = google.auth.transport.urllib3.Request(pool)

    def mint(audience: str) -> str:
        try:
            return str(google.oauth2.id_token.fetch_id_token(request, audience))
        except Exception as e:  # google-auth's messages hold the endpoint's error text, never a token
            raise MintError(f"{type(e).__name__}: {e}") from None

    return mint


def default_minter() -> Minter:
    """Application Default Credentials, : the key file, else the metadata server."""
    return key_file_minter() if os.environ.get("GOOGLE_APPLICATION_CREDENTIALS") else metadata_minter()


def token_expiry(token: str) -> float | None:
    """`exp` of a JWT, unverified (we hold the token only to forward it; the worker checks it)."""
    try:
        seg = token.split(".")[1]
        exp = json.loads(base64.urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))["exp"]
        return float(exp)
    except Exception:
        return None


class _Cached:
    __slots__ = ("lock", "refresh_at", "refreshing", "token", "usable_until")

    def __init__(self) -> None:
        self.token = ""
        self.refresh_at = self.usable_until = 0.0
        self.lock = threading.Lock()  # one mint at a time per audience; gevent's under monkey patching
        self.refreshing = False


class GoogleIdTokens:
    """`gcp` mode: `Bearer <ID token>` for audience = the configured one, else the full URL."""

    def __init__(self, header: str = "Authorization", audience: str | None = None,
                 minter: Minter | None = None, clock: Callable[[], float] = time.time,
                 origins: Origins | None = None) -> None:
        self.header = header
        self.audience = audience or None
        self.origins = origins or Origins()
        self._mint = minter or default_minter()
        self._clock = clock
        self._cache: dict[str, _Cached] = {}
        self._lock = threading.Lock()

    def applies_to(self, url: str) -> bool:
        return self.origins.permits(url)

    def value(self, url: str) -> str:
        return f"Bearer {self.token(self.audience or url)}"

    def token(self, audience: str) -> str:
        c = self._entry(audience)
        now = self._clock()
        if now < c.usable_until:
            token = c.token
            if now >= c.refresh_at and not c.refreshing:
                c.refreshing = True
                threading.Thread(target=self._refresh, args=(audience, c), daemon=True,
                                 name="push-auth-refresh").start()
            return token
        with c.lock:  # the first push after expiry mints; the others for this audience wait for it
            if self._clock() < c.usable_until:
                return c.token
            return self._fill(audience, c)

    def _entry(self, audience: str) -> _Cached:
        with self._lock:
            c = self._cache.get(audience)
            if c is None:
                if len(self._cache) >= MAX_AUDIENCES:
                    self._evict()
                c = self._cache[audience] = _Cached()
            return c

    def _evict(self) -> None:
        now = self._clock()
        self._cache = {a: c for a, c in self._cache.items() if c.usable_until > now}
        while len(self._cache) >= MAX_AUDIENCES:  # all still valid: forget the oldest
            del self._cache[next(iter(self._cache))]

    def _fill(self, audience: str, c: _Cached) -> str:
        t0 = self._clock()
        token = self._mint(audience)
        exp = token_expiry(token)
        if not token or exp is None:
            raise MintError("the credentials returned no token with an expiry")
        life = max(0.0, exp - t0)
        c.token = token
        c.usable_until = exp - min(MIN_VALIDITY_S, life / 10)
        c.refresh_at = exp - min(REFRESH_AHEAD_S, life / 4)
        log.debug("OIDC ID token minted audience=%s expires_in_s=%d", q(audience), life)
        return token

    def _refresh(self, audience: str, c: _Cached) -> None:
        """Ahead of expiry, off the push path: pushes keep using the current token meanwhile."""
        try:
            with c.lock:
                if self._clock() >= c.refresh_at:
                    self._fill(audience, c)
        except Exception as e:
            c.refresh_at = self._clock() + RETRY_REFRESH_S
            log.warning("OIDC ID token refresh failed; the current token is used until it expires "
                        "audience=%s error=%s", q(audience), q(str(e)))
        finally:
            c.refreshing = False


def make_push_auth(cfg: HttpPushAuth | None) -> PushAuth | None:
    """The configured mode, or None (no section, or mode `none`: no header at all)."""
    if cfg is None or cfg.mode == "none":
        return None
    origins = Origins(cfg.allow)
    if cfg.mode == "bearer":
        return StaticBearer(cfg.token or "", cfg.header, origins)
    if cfg.mode == "gcp":
        return GoogleIdTokens(cfg.header, cfg.audience, origins=origins)
    raise ValueError(f"unknown push auth mode {cfg.mode!r}")
