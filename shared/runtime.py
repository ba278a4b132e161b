"""Assembles the core from configuration: store, metrics, service, SSE hub, delivery, timer loop."""
from __future__ import annotations

import logging
from typing import Any, Callable

from shared.config import Config
from shared.delivery.destinations import Policy
from shared.delivery.hub import PollHub
from shared.delivery.outbox import Delivery
from shared.delivery.push import HttpPush
from shared.delivery.push_auth import make_push_auth
from shared.metrics import Metrics
from shared.service import Service
from shared.storage.base import Store
from shared.timers import TimerLoop

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
    from shared.storage.sqlite import SqliteStore

    return SqliteStore(cfg.storage.sqlite.path, offload=offload)


class Runtime:
    """Everything one server process runs. `start()` launches the background loops."""

    def __init__(self, cfg: Config, offload: Callable | None = None, background: bool = True,
                 metrics: bool = True) -> None:
        """`metrics=False` skips collecting altogether (a local server whose metrics port is 0)."""
        self.cfg = cfg
        self.store = open_store(cfg, offload)
        t = cfg.transports
        self.hub = (PollHub(t.http_poll.max_connections, t.http_poll.buffer_size, t.http_poll.max_connections_per_token)
                    if t.http_poll.enabled else None)
        self.metrics = Metrics(self.store, self.hub) if metrics else None
        self.service = Service(self.store, cfg, metrics=self.metrics)
        self.push = (HttpPush(t.http_push.concurrency, t.http_push.connect_timeout, t.http_push.request_timeout,
                              metrics=self.metrics, auth=make_push_auth(t.http_push.auth),
                              policy=Policy.from_config(t.http_push))
                     if t.http_push.enabled else None)
        if cfg.storage.type == "postgres":  # other processes may share the database: claim rows there
            from shared.delivery.cluster import ClusterDelivery

            publisher = None
            if cfg.dispatch.topic:  # the cloud: http(s) pushes go through Pub/Sub and the dispatch function
                from shared.delivery.pubsub_dispatch import Publisher

                publisher = Publisher(cfg.dispatch.topic)
            self.delivery: Delivery = ClusterDelivery(
                self.service, self.hub, self.push, cfg.server_url, cfg.messages.redrive_interval,
                cfg.messages.batch_size, t.http_push.request_timeout / 1000, background, metrics=self.metrics,
                publisher=publisher, max_attempts=t.http_push.max_attempts)
        else:
            self.delivery = Delivery(self.service, self.hub, self.push, cfg.server_url, cfg.messages.redrive_interval,
                                     cfg.messages.batch_size, background, metrics=self.metrics,
                                     max_attempts=t.http_push.max_attempts)
        self.delivery.transports = self._optional_transports(cfg)
        self.timers = TimerLoop(self.service, cfg.timeouts.max_sleep) if background else None
        if cfg.sweeper.url and not background:  # serverless: no timer loop, wake a sweeper instead
            from shared.sweeper import SweeperWaker

            SweeperWaker(self.service, cfg.sweeper.url, cfg.sweeper.window, cfg.sweeper.window / 1000 + 30)

    def _optional_transports(self, cfg: Config) -> dict[str, Any]:
        """gcps and bash, each imported only when enabled (cold starts)."""
        t = cfg.transports
        out: dict[str, Any] = {}
        if t.gcps.enabled:
            from shared.delivery.gcps import PubSubPublish

            out["gcps"] = PubSubPublish(t.gcps.concurrency, t.gcps.timeout, metrics=self.metrics,
                                        allow_projects=t.gcps.allow_projects)
        if t.bash_exec.enabled:
            from shared.delivery.bash import BashExec

            out["bash"] = BashExec(self.service, t.bash_exec.allow, cfg.tasks.lease_timeout)
        return out

    def start(self) -> None:
        self.delivery.start()
        if self.timers is not None:
            self.timers.start()

    def stop(self, timeout_s: float = 10.0) -> None:
        if self.hub is not None:
            self.hub.close_all()
        if self.timers is not None:
            self.timers.stop(timeout_s)
        self.delivery.stop(timeout_s)
        for transport in self.delivery.transports.values():
            transport.close()
        if self.push is not None:
            self.push.close()
        self.store.close()
