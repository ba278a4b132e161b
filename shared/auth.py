"""Inbound authentication and authorization (docs/protocol.md#27-authentication-and-authorization;
the model: docs/security.md).

One `Authenticator` per `[auth]` section: it verifies JWTs against the configured public key
(or none, unsigned mode), or Google OIDC identity tokens (`shared.auth_google`), and applies the
`role`/`prefix`/`groups` claim rules to everything a decoded request touches (`shared.scope`:
every id, id-valued tag and delivery address), before any transaction opens, so a refused
request never reads or changes state. PyJWT and cryptography are imported
only when an Authenticator is built: with auth off a cold start never loads them.
"""
from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from shared.logs import q
from shared.protocol import parse_address
from shared.scope import Touched

if TYPE_CHECKING:
    from shared.config import Auth, Config

log = logging.getLogger("resonate.auth")
startup = logging.getLogger("resonate")  # every startup line comes from this one logger

Refusal = tuple[int, str]  # (status, message): 401 Unauthorized | 403 Forbidden | 503
UNAUTHORIZED: Refusal = (401, "Unauthorized")
FORBIDDEN: Refusal = (403, "Forbidden")
LEEWAY_S = 60  # on `exp`, `nbf` and `iat` (clock skew between the issuer and this server)

# the header algorithms the key's family admits; unsigned mode: any the reference's JWT
# library knows (so `"alg":"none"` is still refused)
FAMILY_ALGS = {
    "RSA": ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512"),
    "EC": ("ES256", "ES384"),
    "Ed25519": ("EdDSA",),
}
KNOWN_ALGS = frozenset(("HS256", "HS384", "HS512", *(a for algs in FAMILY_ALGS.values() for a in algs)))

class AuthError(Exception):
    """The `[auth]` section names a key that cannot be used: the server must not start."""


class Invalid(Exception):
    """A token that does not authenticate (the message is logged, never sent)."""


class Unavailable(Exception):
    """A token that could not be checked now (Google's certificates unreachable): 503, retry."""


Claims = Mapping[str, Any]


NO_ID = "\x00"  # a prefix no id starts with (ids never contain NUL): the scope of a token without one


def is_admin(claims: Claims) -> bool:
    role = claims.get("role")
    return isinstance(role, str) and role.lower() == "admin"


def unrestricted(claims: Claims) -> bool:
    """Role admin (any case) or prefix "": every id and every group."""
    role = claims.get("role")
    return (isinstance(role, str) and role.lower() == "admin") or claims.get("prefix") == ""


def scope_of(claims: Claims) -> str | None:
    """The id prefix a caller is confined to; None when unrestricted. A token without a string
    prefix is refused before anything runs; its scope still covers nothing, should it be asked."""
    if unrestricted(claims):
        return None
    prefix = claims.get("prefix")
    return prefix if isinstance(prefix, str) else NO_ID


def may_use_group(claims: Claims, group: str) -> bool:
    """Whether a caller may poll a worker group or address it (`poll://…@group`): role admin and
    prefix "" any group; else the `groups` claim (names; an entry ending in `*` is a prefix),
    or, without that claim, a group whose name starts with the token's prefix."""
    if unrestricted(claims):
        return True
    if "groups" not in claims:
        prefix = claims.get("prefix")  # not a string: no group (the scope's sentinel is a character)
        return isinstance(prefix, str) and group.startswith(prefix)
    groups = claims["groups"]
    if not isinstance(groups, list):
        return False
    return any(isinstance(g, str) and (group.startswith(g[:-1]) if g.endswith("*") else group == g)
               for g in groups)


def principal_of(claims: Claims) -> str:
    """Who holds a connection: the token's subject; else its role admin, its prefix or its groups
    (tokens of one tenant without subjects are one principal: they may take over each other's
    worker ids and share one connection cap)."""
    sub = claims.get("sub")
    if isinstance(sub, str) and sub:
        return "sub:" + sub
    if unrestricted(claims):
        return "admin"
    prefix = claims.get("prefix")
    if isinstance(prefix, str):
        return "prefix:" + prefix
    return "groups:" + json.dumps(claims.get("groups"), sort_keys=True, default=str)


def forbidden(claims: Claims, touched: Touched) -> str | None:
    """The claim rules (`role`, `prefix`, `groups`; docs/security.md) on verified claims and
    everything a request touches (`shared.scope`): None when allowed, else why not (the WARN
    line's text)."""
    role = claims.get("role")
    if isinstance(role, str) and role.lower() == "admin":
        return None
    if "prefix" not in claims:
        return "no prefix claim in token"
    prefix = claims["prefix"]
    if prefix is None:
        return "null prefix claim"
    if not isinstance(prefix, str):
        return "prefix claim has unexpected type"
    if prefix == "":
        return None
    if touched.unscoped:
        return "operation spans every prefix"
    if not all(id.startswith(prefix) for id in touched.ids):
        return "resource ID does not match prefix"
    for addr in touched.addresses:
        a = parse_address(addr)
        if a is not None and a.scheme == "poll" and not may_use_group(claims, a.group):
            return "address group not permitted"
    return None


def outside(claims: Claims, touched: Touched) -> str:
    """The first id (or address) of a request its token does not cover, for the log line."""
    scope = scope_of(claims)
    if scope is None or touched.unscoped:
        return ""
    for id in touched.ids:
        if not id.startswith(scope):
            return id
    return next((a for a in touched.addresses if (p := parse_address(a)) is not None and p.scheme == "poll"
                 and not may_use_group(claims, p.group)), "")


# Where a Resonate credential is read (docs/security.md#private-deployments), and nowhere else:
# `POST /` the envelope's `head.auth` (its HTTP headers are not read), every other route
# `Authorization: Bearer`. A private Cloud Run service (`public=false`) checks the caller's
# Google identity itself, taken from `X-Serverless-Authorization` when that header is present
# (else from `Authorization`), and forwards the header with the token's signature removed: it is
# never a Resonate credential, present or not, valid-looking or not.
CREDENTIAL_HEADER = "Authorization"
INVOKER_HEADER = "X-Serverless-Authorization"


class HeaderLookup(Protocol):
    """A request's headers: werkzeug's (case-insensitive) `Headers`, or a dict."""

    def get(self, key: str) -> str | None: ...


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer <token>` header (scheme case-insensitive)."""
    if header and header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


def header_credential(headers: HeaderLookup) -> str | None:
    """The Resonate token of a route other than `POST /`: `Authorization: Bearer` only (never
    `X-Serverless-Authorization`, the invoker check's header)."""
    return bearer(headers.get(CREDENTIAL_HEADER))


def _invoker_note(headers: HeaderLookup | None) -> str:
    """A hint for the refusal's log line when the only credential-looking header is Cloud Run's."""
    if headers is not None and headers.get(INVOKER_HEADER) and not headers.get(CREDENTIAL_HEADER):
        return " note=" + q("X-Serverless-Authorization is Cloud Run's invoker check, never a Resonate credential")
    return ""


def _load_key(path: str) -> tuple[Any, str]:
    """(public key object, key type) of a PEM file; AuthError says why it cannot be used."""
    from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        with open(path, "rb") as f:
            pem = f.read()
    except OSError as e:
        raise AuthError(f"Failed to read public key file '{path}': {e}") from None
    try:
        key = load_pem_public_key(pem)
    except ValueError:
        key = None
    if isinstance(key, rsa.RSAPublicKey):
        return key, "RSA"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in ("secp256r1", "secp384r1"):
        return key, "EC"
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key, "Ed25519"
    raise AuthError(f"Unsupported or invalid public key in '{path}'. "
                    "Supported types: RSA, EC (P-256/P-384), Ed25519.")


class Authenticator:
    """Verifies tokens and applies the claim rules for one `[auth]` configuration."""

    def __init__(self, cfg: Auth) -> None:
        import jwt  # PyJWT: only when auth is on

        self._jwt = jwt
        self.cfg = cfg
        self.key: Any = None
        self.key_type: str | None = None
        self.algorithms: frozenset[str] = frozenset()
        if cfg.publickey == "none":
            self.algorithms = KNOWN_ALGS
        elif cfg.publickey is not None:
            self.key, self.key_type = _load_key(cfg.publickey)
            self.algorithms = frozenset(FAMILY_ALGS[self.key_type])
        self.google: Any = None
        if cfg.google_audience is not None:
            from shared.auth_google import GoogleVerifier

            self.google = GoogleVerifier(cfg.google_audience, cfg.google_service_accounts, cfg.google_certs_url)

    def verify(self, token: str) -> dict[str, Any]:
        """The claims of a token that authenticates; Invalid or Unavailable otherwise."""
        jwt = self._jwt
        try:
            header = jwt.get_unverified_header(token)
            if self.google is not None and self.google.claims_issuer(token):
                return self.google.verify(token)
            alg = header.get("alg")
            if not self.algorithms:
                raise Invalid("not a Google identity token (no public key configured)")
            if not isinstance(alg, str) or alg not in self.algorithms:
                raise Invalid(f"algorithm {alg!r} is not accepted for this key")
            cfg = self.cfg
            options: Any = {"verify_signature": self.key is not None, "verify_exp": True, "verify_nbf": True,
                            "verify_iat": True, "verify_aud": cfg.aud is not None,
                            "verify_iss": cfg.iss is not None, "verify_sub": False, "verify_jti": False,
                            "require": ["exp"]}
            claims = jwt.decode(token, self.key, algorithms=[alg], options=options, audience=cfg.aud,
                                issuer=cfg.iss, leeway=LEEWAY_S)
        except jwt.PyJWTError as e:
            raise Invalid(f"{type(e).__name__}: {e}") from None
        role = claims.get("role")
        if role is not None and not isinstance(role, str):  # the reference's claims type: 401
            raise Invalid("invalid type: role claim is not a string")
        return claims

    def _authenticate(self, token: str | None, what: str) -> dict[str, Any] | Refusal:
        """The claims, or the refusal (logged)."""
        if not token:
            log.warning("Auth rejected: no token provided %s", what)
            return UNAUTHORIZED
        try:
            return self.verify(token)
        except Invalid as e:
            log.warning("Auth rejected: token verification failed %s error=%s", what, q(str(e)))
            return UNAUTHORIZED
        except Unavailable as e:
            log.error("Auth unavailable: token could not be checked %s error=%s", what, q(str(e)))
            return 503, "Service unavailable: token could not be checked"

    def authenticate(self, token: str | None, kind: str) -> dict[str, Any] | Refusal:
        """Step 3 of the request pipeline (docs/protocol.md#24-request-pipeline) for `POST /` (token
        from `head.auth` only: the request's HTTP headers, `Authorization` included, are not
        read): the claims, or the refusal."""
        return self._authenticate(token, f"kind={q(kind)}")

    def authorize(self, claims: Claims, kind: str, touched: Touched, admin_only: bool = False) -> Refusal | None:
        """The claim rules on everything a decoded request touches: None to go on, else 403.
        `admin_only`: the kind's entry reserves it to role admin here (the console's actions)."""
        why = forbidden(claims, touched) if not admin_only or is_admin(claims) else "action needs role admin"
        if why is None:
            return None
        log.warning("Auth forbidden: %s kind=%s prefix=%s resource_id=%s", why, q(kind),
                    q(claims.get("prefix")), q(outside(claims, touched)))
        return FORBIDDEN

    def check_poll(self, headers: HeaderLookup, group: str) -> Refusal | str:
        """`GET /poll/{group}/{id}` (token from `Authorization: Bearer`, `header_credential`): the
        principal that may hold the stream, or the refusal (401 no valid token, 403 a group it is
        not entitled to)."""
        claims = self._authenticate(header_credential(headers), "endpoint=poll" + _invoker_note(headers))
        if isinstance(claims, tuple):
            return claims
        if not may_use_group(claims, group):
            log.warning("Auth forbidden: group not permitted endpoint=poll group=%s prefix=%s", q(group),
                        q(claims.get("prefix")))
            return FORBIDDEN
        return principal_of(claims)

    def check_admin(self, headers: HeaderLookup, endpoint: str) -> Refusal | None:
        """An operator route (`/metrics` on the API port): a valid token with role admin, from
        `Authorization: Bearer` (`header_credential`)."""
        claims = self._authenticate(header_credential(headers), f"endpoint={endpoint}" + _invoker_note(headers))
        if isinstance(claims, tuple):
            return claims
        role = claims.get("role")
        if isinstance(role, str) and role.lower() == "admin":
            return None
        log.warning("Auth forbidden: operator route needs role admin endpoint=%s", endpoint)
        return FORBIDDEN


_built: dict[Auth, Authenticator] = {}
_lock = threading.Lock()


def authenticator(cfg: Auth) -> Authenticator:
    """The Authenticator of a configuration, built (key loaded) once per process."""
    with _lock:
        a = _built.get(cfg)
        if a is None:
            a = _built[cfg] = Authenticator(cfg)
        return a


def log_startup(cfg: Config) -> None:
    """The auth line of the startup sequence (docs/operations.md#logs), and the key's check:
    AuthError stops the server before it listens."""
    auth = cfg.auth
    if auth is None:
        startup.info("Auth disabled — all requests accepted")
        return
    a = authenticator(auth)
    if auth.publickey == "none":
        startup.warning("Auth enabled — unsigned mode (no signature verification)")
    elif auth.publickey is not None:
        startup.info("Loaded public key path=%s key_type=%s", q(auth.publickey), a.key_type)
        startup.info("Auth enabled key=%s", q(auth.publickey))
    if auth.iss is not None:
        startup.info("Auth issuer configured issuer=%s", q(auth.iss))
    if auth.aud is not None:
        startup.info("Auth audience configured audience=%s", q(auth.aud))
    if auth.google_audience is not None:
        startup.info("Auth accepts Google identity tokens audience=%s service_accounts=%d",
                     q(auth.google_audience), len(auth.google_service_accounts))
