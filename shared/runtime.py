"""Assembles the core from configuration: store, metrics, service, SSE hub, delivery, timer loop.

Every collaborator is built here and handed to the constructors that need it; nothing registers
itself. A new transport: implement `shared.delivery.sender.Transport` and add it to
`optional_transports` under its scheme. A new store: implement `shared.storage.base.Store`/`Tx`
(and `OutboxClaims` if several processes may share it) and open it in `open_store`.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from shared.config import Config
from shared.delivery.destinations import Policy
from shared.delivery.hub import PollHub
from shared.delivery.outbox import ClaimStrategy, Delivery
from shared.delivery.push import HttpPush
from shared.delivery.push_auth import make_push_auth
from shared.delivery.sender import Sender, Transport
from shared.metrics import Metrics
from shared.retention import Retention, RetentionLoop
from shared.service import EffectsHook, Service
from shared.storage.base import OutboxClaims, Store
from shared.timers import TimerLoop

if TYPE_CHECKING:
    from shared.delivery.bash import TaskRunner
    from shared.delivery.registry import ReceiverRegistry
    from shared.otlp import OtlpExporter
    from shared.sweeper import SweeperWaker
    from shared.tracing import Tracer

log = logging.getLogger("resonate")


def open_store(cfg: Config, offload: Callable | None = None) -> Store:
    if cfg.storage.type == "memory":
        from shared.storage.memory import MemoryStore

        return MemoryStore()
    if cfg.storage.type == "postgres":
        from shared.storage.postgres import PostgresStore, parse_url

        pg = cfg.storage.postgres
        if not pg.instance:
            return PostgresStore(pg.url or "", pg.pool_size)
        from shared.storage.cloudsql import connector_factory

        url = pg.url or "postgres://postgres@/postgres"  # Cloud SQL: the URL only names user and database
        p = parse_url(url)
        dial = connector_factory(pg.instance, p["user"], p["password"], p["database"], pg.ip_type, pg.iam_auth)
        return PostgresStore(url, pg.pool_size, connect=dial)
    if cfg.storage.type == "mysql":
        from shared.storage.mysql import MySQLStore

        my = cfg.storage.mysql
        if not my.instance:
            return MySQLStore(my.url or "", my.pool_size)
        from shared.storage.cloudsql import connector_factory
        from shared.storage.mysql import connector_kwargs
        from shared.storage.mysql import parse_url as parse_mysql_url

        url = my.url or "mysql://root@/resonate"  # Cloud SQL: the URL only names user and database
        p = parse_mysql_url(url)
        dial = connector_factory(my.instance, p["user"], p["password"] or None, p["database"], my.ip_type,
                                 my.iam_auth, driver="pymysql", extra=connector_kwargs())
        return MySQLStore(url, my.pool_size, connect=dial)
    from shared.storage.sqlite import SqliteStore

    return SqliteStore(cfg.storage.sqlite.path, offload=offload)


class Runtime:
    """Everything one server process runs, wired in one place. `start()` launches the background loops.

    Who hears what: after each commit the service hands its effects to its metrics, then to
    `subscribers` in order (delivery sends the queued messages, the timer loop re-plans its
    sleep, the sweeper waker calls a sweeper for a near deadline). The poll hub tells delivery
    when a worker connects or its buffer drains, and, on a shared database, asks the receiver
    registry before admitting a connection and tells it when one ends."""

    def __init__(self, cfg: Config, offload: Callable | None = None, background: bool = True,
                 metrics: bool = True) -> None:
        """`metrics=False` skips collecting altogether (a local server whose metrics port is 0)."""
        self.cfg = cfg
        t = cfg.transports
        self.store = open_store(cfg, offload)
        self.hub = (PollHub(t.http_poll.max_connections, t.http_poll.buffer_size, t.http_poll.max_connections_per_token)
                    if t.http_poll.enabled else None)
        self.metrics = Metrics(self.store, self.hub) if metrics or cfg.observability.otlp_endpoint else None
        self.exporter = self._exporter()  # None unless observability.otlp_endpoint is set
        self.tracer = self._tracer()  # None unless that, and observability.trace_sample_ratio > 0
        self.service = Service(self.store, cfg, metrics=self.metrics)
        self.service.tracer = self.tracer
        self.push = (HttpPush(t.http_push.concurrency, t.http_push.connect_timeout, t.http_push.request_timeout,
                              metrics=self.metrics, auth=make_push_auth(t.http_push.auth),
                              policy=Policy.from_config(t.http_push))
                     if t.http_push.enabled else None)
        self.sender = Sender(self.hub, self.push, optional_transports(cfg, self.service, self.metrics),
                             cfg.server_url, self.metrics, self.tracer)
        shared_db = self.store.outbox_claims()  # None: this process is the outbox's only sender
        self.registry = self._registry(shared_db)
        self.delivery = Delivery(self.store, self.sender, self._claims(shared_db), self.metrics,
                                 cfg.messages.redrive_interval, background)
        self.timers = TimerLoop(self.service, cfg.timeouts.max_sleep) if background else None
        # retention (shared/retention.py): its own slow loop here, one budgeted pass per sweeper call
        # in the cloud; never on the timer loop, whose sleep it must not shorten
        rc = cfg.retention
        self.retention = Retention(self.store, self.service.clock, rc.settled_after, rc.batch_size,
                                   self.metrics.retention if self.metrics is not None else None)
        self.retention_loop = (RetentionLoop(self.retention, rc.interval, lambda: self.service.debug_session)
                               if background and rc.settled_after > 0 else None)
        self.waker = self._waker(cfg.sweeper.url) if cfg.sweeper.url and not background else None  # serverless
        # after each commit, in this order (the service's own metrics come first of all)
        subscribers: list[EffectsHook] = [self.delivery.on_effects]  # send what the commit queued
        if self.timers is not None:
            subscribers.append(self.timers.on_effects)  # an earlier deadline wakes the loop
        if self.waker is not None:
            subscribers.append(self.waker.on_effects)  # a near deadline and no sweeper: call one
        self.service.subscribe(subscribers)
        # the console's workers view: every process's streams when they share a database, else ours
        if self.registry is not None and shared_db is not None:
            self.service.presence = shared_db.receivers
        elif self.hub is not None:
            self.service.presence = self.hub.receivers
        # poll hub events
        if self.hub is not None:
            self.hub.on_connect.append(self.delivery.on_connect)
            self.hub.on_drained.append(self.delivery.on_connect)
            if self.registry is not None:
                self.hub.admit = self.registry.admit
                self.hub.on_disconnect.append(self.registry.on_disconnect)

    def _exporter(self) -> OtlpExporter | None:
        """The OTLP metrics export: imported (and protobuf with it) only when an endpoint is set."""
        ob = self.cfg.observability
        if not ob.otlp_endpoint or self.metrics is None:
            return None
        from shared.otlp import OtlpExporter, metrics_url

        return OtlpExporter(self.metrics, metrics_url(ob.otlp_endpoint) or "", ob.otlp_interval / 1000)

    def _tracer(self) -> Tracer | None:
        """Traces (shared/tracing.py), to the same endpoint under the same resource attributes as
        the metrics: imported only when an endpoint is set and the sample ratio is above 0."""
        ob = self.cfg.observability
        if not ob.otlp_endpoint or ob.trace_sample_ratio <= 0:
            return None
        from shared.otlp import resource_attributes
        from shared.tracing import Tracer, traces_url

        attrs = self.exporter.attributes if self.exporter is not None else resource_attributes()
        return Tracer(traces_url(ob.otlp_endpoint) or "", ob.trace_sample_ratio, ob.otlp_interval / 1000, dict(attrs))

    def _registry(self, shared_db: OutboxClaims | None) -> ReceiverRegistry | None:
        """Processes sharing the database record which worker ids they hold SSE streams for."""
        if shared_db is None or self.hub is None:
            return None
        from shared.delivery.registry import ReceiverRegistry

        return ReceiverRegistry(shared_db, self.hub)

    def _claims(self, shared_db: OutboxClaims | None) -> ClaimStrategy:
        """Who may send a row: this process alone (memory, SQLite), or whoever claims it in the
        shared database (Postgres: other processes may share it)."""
        cfg, t = self.cfg, self.cfg.transports
        if shared_db is None:
            from shared.delivery.inprocess import InProcessClaims

            return InProcessClaims(self.store, self.hub, self.service, cfg.messages.batch_size,
                                   t.http_push.max_attempts)
        from shared.delivery.cluster import DatabaseClaims

        publisher = None
        if cfg.dispatch.topic:  # the cloud: http(s) pushes go through Pub/Sub and the dispatch function
            from shared.delivery.pubsub_dispatch import Publisher

            publisher = Publisher(cfg.dispatch.topic, tracer=self.tracer)
        return DatabaseClaims(shared_db, self.hub, self.registry, publisher, cfg.messages.batch_size,
                              t.http_push.request_timeout / 1000, t.http_push.max_attempts,
                              claim_at_commit=self.push is not None)

    def _waker(self, url: str) -> SweeperWaker:
        """Serverless (no timer loop): a commit with a near deadline calls a sweeper if none runs."""
        from shared.sweeper import SweeperWaker

        sw = self.cfg.sweeper
        auth = None
        if sw.auth == "gcp":  # the deployed sweeper admits run.invoker callers only: an ID token for its URL
            from shared.delivery.push_auth import GoogleIdTokens

            auth = GoogleIdTokens(audience=url)
        return SweeperWaker(self.store, self.service.clock, url, sw.window, sw.window / 1000 + 30, auth)

    def start(self) -> None:
        self.delivery.start()
        if self.timers is not None:
            self.timers.start()
        if self.retention_loop is not None:
            self.retention_loop.start()
        if self.exporter is not None:  # a process that keeps its CPU: a timer too (functions: per request)
            self.exporter.start()
        if self.tracer is not None:
            self.tracer.start()

    def close_streams(self) -> None:
        """End every open stream: the workers' SSE polls and the console's live streams."""
        if self.hub is not None:
            self.hub.close_all()
        self.service.close_streams()

    def stop(self, timeout_s: float = 10.0) -> None:
        self.close_streams()
        if self.timers is not None:
            self.timers.stop(timeout_s)
        if self.retention_loop is not None:
            self.retention_loop.stop(timeout_s)
        self.delivery.stop(timeout_s)
        if self.exporter is not None:  # the final totals, before the store (outbox depth) closes
            self.exporter.stop()
        if self.tracer is not None:  # the spans left (deliveries ended with the delivery's stop)
            self.tracer.stop()
        self.sender.close()
        self.store.close()


def optional_transports(cfg: Config, service: TaskRunner, metrics: Metrics | None) -> dict[str, Transport]:
    """gcps and bash, each imported only when enabled (cold starts)."""
    t = cfg.transports
    out: dict[str, Transport] = {}
    if t.gcps.enabled:
        from shared.delivery.gcps import PubSubPublish

        out["gcps"] = PubSubPublish(t.gcps.concurrency, t.gcps.timeout, metrics=metrics,
                                    allow_projects=t.gcps.allow_projects)
    if t.bash_exec.enabled:
        from shared.delivery.bash import BashExec

        out["bash"] = BashExec(service, t.bash_exec.allow, cfg.tasks.lease_timeout)
    return out
