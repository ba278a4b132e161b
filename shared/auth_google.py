"""Google OIDC identity tokens as inbound credentials (this server's extension to inbound
auth, docs/protocol.md#27-authentication-and-authorization).

Service-to-service calls in Google Cloud carry identity tokens minted by Google for a service
account (`google.oauth2.id_token.fetch_id_token(request, audience)`, Cloud Run's metadata
server, Cloud Scheduler/Pub/Sub OIDC push). They cannot carry our `role`/`prefix` claims, so a
token is accepted only when Google signed it (certificates from `certs_url`), its `aud` is the
configured audience and its verified `email` (or `sub`, the account's unique id) is on the
allow-list; such a caller gets full access (role admin). Imported only when configured.
"""
from __future__ import annotations

import json
import re
import threading
import time
from base64 import urlsafe_b64decode
from collections.abc import Mapping
from typing import Any

from google.auth import transport

from shared.auth import LEEWAY_S, Invalid, Unavailable

GOOGLE_ISSUERS = ("accounts.google.com", "https://accounts.google.com")
DEFAULT_TTL_S = 300.0  # when the certificate answer says nothing about caching
_MAX_AGE = re.compile(r"max-age=(\d+)")


class _Answer:
    """What google.auth's transport contract reads from a response."""

    def __init__(self, status: int, headers: Mapping[str, str], data: bytes) -> None:
        self.status, self.headers, self.data = status, dict(headers), data


class CachedFetch(transport.Request):
    """A `google.auth.transport.Request` that keeps 200 answers for their `max-age`: google-auth
    fetches the certificates on every verification otherwise (one HTTP call per request)."""

    def __init__(self, timeout_s: float = 10.0) -> None:
        self.timeout_s = timeout_s
        self._cache: dict[str, tuple[float, _Answer]] = {}
        self._lock = threading.Lock()
        self._http: Any = None

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None,
                 timeout: float | None = None, **kwargs: Any) -> _Answer:
        hit = self._cache.get(url) if method == "GET" else None
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        import urllib3

        with self._lock:
            if self._http is None:
                self._http = urllib3.PoolManager(retries=False)
        try:
            r = self._http.request(method, url, body=body, headers=headers, timeout=timeout or self.timeout_s)
        except urllib3.exceptions.HTTPError as e:
            from google.auth.exceptions import TransportError

            raise TransportError(str(e)) from None
        answer = _Answer(r.status, r.headers, r.data)
        if method == "GET" and r.status == 200:
            m = _MAX_AGE.search(r.headers.get("Cache-Control", ""))
            ttl = float(m.group(1)) if m else DEFAULT_TTL_S
            self._cache[url] = (time.monotonic() + ttl, answer)
        return answer


class GoogleVerifier:
    def __init__(self, audience: str, accounts: tuple[str, ...], certs_url: str) -> None:
        self.audience = audience
        self.accounts = frozenset(accounts)
        self.certs_url = certs_url
        self.fetch = CachedFetch()

    @staticmethod
    def claims_issuer(token: str) -> bool:
        """Whether the (unverified) payload says Google issued it: such tokens go to `verify`,
        every other one to the configured key."""
        try:
            seg = token.split(".")[1]
            payload = json.loads(urlsafe_b64decode(seg + "=" * (-len(seg) % 4)))
        except (IndexError, ValueError):
            return False
        return isinstance(payload, dict) and payload.get("iss") in GOOGLE_ISSUERS

    def verify(self, token: str) -> dict[str, Any]:
        """The claims (with role admin) of an allowed Google identity token; Invalid otherwise."""
        from google.auth.exceptions import TransportError
        from google.oauth2 import id_token

        try:
            claims = dict(id_token.verify_token(token, self.fetch, audience=self.audience,
                                                certs_url=self.certs_url, clock_skew_in_seconds=LEEWAY_S))
        except TransportError as e:
            raise Unavailable(f"Google certificates: {e}") from None
        except Exception as e:  # google-auth raises ValueError subclasses, PyJWT its own (JWKS answers)
            raise Invalid(f"Google identity token: {type(e).__name__}: {e}") from None
        if claims.get("iss") not in GOOGLE_ISSUERS:
            raise Invalid("Google identity token: unexpected issuer")
        email = claims.get("email") if claims.get("email_verified") is True else None
        if email not in self.accounts and claims.get("sub") not in self.accounts:
            raise Invalid("Google identity token: service account not allowed")
        return {**claims, "role": "admin"}
