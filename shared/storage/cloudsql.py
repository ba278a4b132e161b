"""Connections to a Cloud SQL instance through the official Cloud SQL Python Connector (pg8000
for Postgres, PyMySQL for MySQL).

Why the connector: it reaches the instance's server-side proxy (port 3307) over mutual TLS with
an ephemeral client certificate from the SQL Admin API, so a function needs neither the
`/cloudsql` unix socket nor hand-managed server certificates, and IAM database login works.

Why `NativeConnection`: the connector hands back a `pg8000.dbapi.Connection` (`%s` params, an
implicit BEGIN on its cursors) while the Postgres adapter speaks `pg8000.native` (`:name` params,
autocommit). Both are pg8000 `CoreConnection`s, so a thin adapter swaps the query API only.

Importing the connector costs about half a second (aiohttp, dnspython, grpc), so it happens on
the first connection of a process that has an instance configured, never at module import.
"""
from __future__ import annotations

import atexit
import os
import threading
from collections import defaultdict
from collections.abc import Callable
from typing import Any

import pg8000.native

from shared.config import CLOUDSQL_INSTANCE, CLOUDSQL_IP_TYPES

__all__ = ["INSTANCE_RE", "IP_TYPES", "NativeConnection", "close_connectors", "connector_factory"]

# project:region:instance; legacy domain-scoped projects ("example.com:project") have one more colon
INSTANCE_RE = CLOUDSQL_INSTANCE
IP_TYPES = CLOUDSQL_IP_TYPES
CONNECT_TIMEOUT_S = 10.0

_lock = threading.Lock()
_connectors: dict[tuple[str | None, int], tuple[Any, Any]] = {}  # (endpoint, id(creds)) -> (creds, Connector)
_pid = 0


class NativeConnection:
    """What the Postgres adapter uses of `pg8000.native.Connection` (run, prepare, close, _usock,
    notifications), over the connector's `pg8000.dbapi.Connection`. Other attributes (notices,
    parameter_statuses, ...) are read from and written to the underlying connection."""

    __slots__ = ("_context", "_core")

    def __init__(self, core: Any) -> None:
        self._core = core
        self._context: Any = None

    def run(self, sql: str, stream: Any = None, types: dict[str, int] | None = None, **params: Any) -> Any:
        """pg8000.native semantics: simple query without params, else one unnamed extended query."""
        if not params and stream is None:
            self._context = self._core.execute_simple(sql)
        else:
            statement, make_vals = pg8000.native.to_statement(sql)
            oids = () if types is None else make_vals(defaultdict[str, int | None](lambda: None, types))
            self._context = self._core.execute_unnamed(statement, make_vals(params), oids=oids, stream=stream)
        return self._context.rows

    def prepare(self, sql: str) -> pg8000.native.PreparedStatement:
        return pg8000.native.PreparedStatement(self._core, sql)

    def close(self) -> None:
        self._core.close()

    @property
    def _usock(self) -> Any:
        """The TLS socket to the instance (select() on it to wait for NOTIFY)."""
        return self._core._usock

    @property
    def notifications(self) -> Any:
        """pg8000's deque of (pid, channel, payload), filled while a query's replies are read."""
        return self._core.notifications

    @notifications.setter
    def notifications(self, value: Any) -> None:  # listen() swaps in an unbounded deque
        self._core.notifications = value

    @property
    def columns(self) -> Any:
        return None if self._context is None else self._context.columns

    @property
    def row_count(self) -> int | None:
        return None if self._context is None else self._context.row_count

    def __getattr__(self, name: str) -> Any:
        return getattr(self._core, name)

    def __setattr__(self, name: str, value: Any) -> None:
        if name in NativeConnection.__slots__ or name == "notifications":
            object.__setattr__(self, name, value)
        else:
            setattr(self._core, name, value)


def _connector(sqladmin_api_endpoint: str | None, credentials: Any) -> Any:
    """The process's Connector for these options, made on first use. It holds only a key pair and
    a certificate cache, so sharing it across stores is safe and saves Admin API calls. A forked
    child makes its own: the parent's event-loop thread does not exist there."""
    global _pid
    key = (sqladmin_api_endpoint, id(credentials))
    with _lock:
        if _pid != os.getpid():
            _connectors.clear()
            _pid = os.getpid()
        entry = _connectors.get(key)
        if entry is None:
            from google.cloud.sql.connector import Connector

            # lazy refresh: serverless CPU is throttled between requests, so a background
            # refresh could not run on time (the connector's own advice for Cloud Run/Functions)
            entry = _connectors[key] = (credentials, Connector(
                refresh_strategy="lazy", sqladmin_api_endpoint=sqladmin_api_endpoint, credentials=credentials))
            if len(_connectors) == 1:
                atexit.register(close_connectors)  # closes its HTTP session: no warnings at exit
        return entry[1]


def close_connectors() -> None:
    """Close every Connector of this process (tests; a process may also just exit)."""
    with _lock:
        entries = list(_connectors.values())
        _connectors.clear()
    for _, c in entries:
        try:
            c.close()
        except Exception:
            pass


class _Dialer:
    """Opens one connection to the instance per call (what `PostgresStore(connect=...)` takes)."""

    def __init__(self, instance: str, user: str, password: str | None, database: str, ip_type: str,
                 iam_auth: bool, timeout: float, application_name: str,
                 sqladmin_api_endpoint: str | None, credentials: Any, driver: str = "pg8000",
                 extra: dict[str, Any] | None = None) -> None:
        if not INSTANCE_RE.fullmatch(instance):
            raise ValueError(f"Cloud SQL instance connection name must be project:region:instance, got {instance!r}")
        if ip_type not in IP_TYPES:
            raise ValueError(f"Cloud SQL ip_type must be one of {', '.join(IP_TYPES)}, got {ip_type!r}")
        self.instance, self.ip_type, self.timeout = instance, ip_type, timeout
        self.endpoint, self.credentials = sqladmin_api_endpoint, credentials
        self.where = f"Cloud SQL instance {instance} ({ip_type} IP)"  # PostgresStore's error messages
        # ssl_context=False: the tunnel is already mutual TLS, so no SSLRequest inside it (the
        # Cloud SQL Auth Proxy's sslmode=disable)
        self.driver = driver
        self.kwargs: dict[str, Any] = {"user": user, "password": password, "db": database,
                                       "ip_type": ip_type, "enable_iam_auth": iam_auth, "timeout": timeout}
        if driver == "pg8000":
            self.kwargs.update(application_name=application_name, ssl_context=False)
        self.kwargs.update(extra or {})  # PyMySQL: charset, autocommit, client flags (MySQLStore's)

    def __call__(self) -> Any:
        """A pg8000.native-like connection (pg8000), or the PyMySQL connection itself (pymysql)."""
        wrap = NativeConnection if self.driver == "pg8000" else (lambda c: c)
        connector = _connector(self.endpoint, self.credentials)
        loop = getattr(connector, "_loop", None)
        if loop is None:  # a connector without its own loop: no deadline available
            return wrap(connector.connect(self.instance, self.driver, **self.kwargs))
        import asyncio

        # Connector.connect() waits without a deadline; bound the Admin API calls and the dial
        fut = asyncio.run_coroutine_threadsafe(connector.connect_async(self.instance, self.driver, **self.kwargs),
                                               loop)
        try:
            core = fut.result(self.timeout)
        except TimeoutError:
            fut.cancel()
            raise TimeoutError(f"no connection to {self.where} within {self.timeout:g}s") from None
        return wrap(core)


def connector_factory(instance: str, user: str = "postgres", password: str | None = None,
                      database: str = "postgres", ip_type: str = "private", iam_auth: bool = False, *,
                      timeout: float = CONNECT_TIMEOUT_S, application_name: str = "resonate",
                      sqladmin_api_endpoint: str | None = None,
                      credentials: Any = None, driver: str = "pg8000",
                      extra: dict[str, Any] | None = None) -> Callable[[], Any]:
    """A zero-argument callable opening connections to `instance` ("project:region:instance")
    through the process's shared Connector: pg8000.native-like ones (`driver="pg8000"`, Postgres)
    or PyMySQL ones (`driver="pymysql"`, MySQL; `extra`: more PyMySQL arguments).
    `credentials=None` means Application Default Credentials; `sqladmin_api_endpoint` is for
    tests and private endpoints."""
    return _Dialer(instance, user, password, database, ip_type, iam_auth, timeout, application_name,
                   sqladmin_api_endpoint, credentials, driver, extra)
