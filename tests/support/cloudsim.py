"""The cloud simulation for tests: `local.cloudsim.CloudSim` on a fresh database cloned from the
migrated template, wrapped in an object with the `ServerProc` interface (`.url`, `.port`,
`.post`, `.rpc`, `.logs()`, `.stop()`), so helpers written for the single-process server can
target the simulated cloud too.

    with start_cloudsim(tmp_path, tick=2, env={...}) as srv:
        srv.rpc("promise.get", {"id": "p"}); srv.sim.kill("api"); srv.sim.wait_ready()

or the `cloudsim` fixture (default settings, one sim per test). `start_pubsub_cloudsim` wires
HTTP pushes through the real Pub/Sub emulator (dispatch topic, push subscription, dead letters).
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from local.cloudsim import CloudSim
from tests.support.server import ServerProc, free_port


class SimServer(ServerProc):
    """A running CloudSim behind the ServerProc interface; `.sim` is the CloudSim itself."""

    def __init__(self, sim: CloudSim, log: Path, pg_url: str | None) -> None:
        self.sim = sim
        self.backend = "cloudsim"
        self.port = sim.port
        self.proc = None  # type: ignore[assignment]  # many processes: see sim.instances / sim.router
        self.log = log
        self.db = None
        self.pg_url = pg_url  # the cloned database this sim owns (dropped at stop)
        self.session = requests.Session()
        self.cleanup: list[Callable[[], None]] = []  # run at stop (e.g. the Pub/Sub relay)
        # start_pubsub_cloudsim: the OIDC relay, the dispatch topic, its push and dead-letter subscriptions
        self.relay: Any = None
        self.topic = self.subscription = self.dead_subscription = ""

    def logs(self) -> str:
        return self.sim.logs()

    def stop(self, drop: bool = True) -> int:
        self.session.close()
        self.sim.stop()
        while self.cleanup:
            self.cleanup.pop()()
        if drop and self.pg_url is not None:
            from tests.support.pg import drop_database

            drop_database(self.pg_url)
            self.pg_url = None
        return 0

    def __enter__(self) -> SimServer:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_cloudsim(workdir: Path, *, pg_url: str | None = None, tick: float = 2.0, env: dict[str, str] | None = None,
                   debug: bool = False, window_ms: int = 5000, timeout: float = 60.0, **kw: Any) -> SimServer:
    """Start a CloudSim (on a fresh clone of the migrated template unless pg_url is given).

    The sweeper's window is shortened to `window_ms` (set RESONATE_SWEEPER__WINDOW in env to
    override) so that frequent test ticks do not pile up calls that run for 65 s each; `kw`
    goes to CloudSim (api=, sweeper=, dispatch=, threads=, restart_delay=, grace=, load_balancer= and poll=, private=...).
    """
    from tests.support import marks
    from tests.support.pg import drop_database, require_postgres, template_clone_url

    marks.require(marks.PROCESS, "starts the cloud simulation")
    marks.require(marks.CLOUDSIM, "starts the cloud simulation")
    require_postgres()
    owned = pg_url is None
    url = pg_url or template_clone_url()
    workdir.mkdir(parents=True, exist_ok=True)
    kw.setdefault("grace", 1.0)
    sim = CloudSim(url, free_port(), tick=tick, env={"RESONATE_SWEEPER__WINDOW": str(window_ms), **(env or {})},
                   debug=debug, log_dir=workdir / "cloudsim", create_db=False, **kw)
    try:
        sim.start(timeout)
    except BaseException:
        if owned:
            drop_database(url)
        raise
    return SimServer(sim, workdir / "cloudsim", url if owned else None)


DISPATCH_AUDIENCE = "https://dispatch.resonate.test"


def start_pubsub_cloudsim(workdir: Path, emu: Any, *, max_attempts: int = 5, ack_deadline_s: int = 60,
                          env: dict[str, str] | None = None, **kw: Any) -> SimServer:
    """A cloud simulation whose HTTP pushes go through the real Pub/Sub emulator `emu`
    (tests.support.pubsub.Emulator), wired as in GCP: a dispatch topic the functions publish to
    (`dispatch.*` set), a dead-letter topic with a pull subscription to inspect it
    (`.dead_subscription`), and a push subscription with a dead-letter policy whose endpoint is
    an OIDC relay (`.relay`, tests.support.pubsub_relay) in front of the dispatch function: the
    emulator sends no token, the relay adds one signed by a key the functions trust through
    `dispatch.certs_url`. `kw` goes to start_cloudsim."""
    import uuid

    from google.cloud import pubsub_v1

    from tests.support.pubsub_relay import OidcRelay

    relay = OidcRelay(DISPATCH_AUDIENCE).start()
    suffix = uuid.uuid4().hex[:8]
    try:
        topic = emu.create_topic(f"dispatch-{suffix}")
        dead_topic = emu.create_topic(f"dispatch-dead-{suffix}")
        dead_sub = emu.create_pull_subscription(f"dispatch-dead-{suffix}", f"dispatch-dead-pull-{suffix}")
        srv = start_cloudsim(workdir, env={
            **emu.env(), "RESONATE_DISPATCH__TOPIC": topic, "RESONATE_DISPATCH__AUDIENCE": DISPATCH_AUDIENCE,
            "RESONATE_DISPATCH__SERVICE_ACCOUNTS": relay.email, "RESONATE_DISPATCH__CERTS_URL": relay.certs_url,
            "RESONATE_DISPATCH__MAX_ATTEMPTS": str(max_attempts), **(env or {})}, **kw)
    except BaseException:
        relay.stop()
        raise
    srv.cleanup.append(relay.stop)
    relay.target = srv.sim.service_url("dispatch")
    sub = emu.subscription_path(f"dispatch-push-{suffix}")
    with pubsub_v1.SubscriberClient() as client:  # real Pub/Sub: push_config.oidc_token names the pusher
        client.create_subscription(request={
            "name": sub, "topic": topic, "ack_deadline_seconds": ack_deadline_s,
            "push_config": {"push_endpoint": relay.push_url,
                            "oidc_token": {"service_account_email": relay.email, "audience": DISPATCH_AUDIENCE}},
            "dead_letter_policy": {"dead_letter_topic": dead_topic, "max_delivery_attempts": max_attempts}},
            timeout=30)
    srv.relay, srv.topic, srv.subscription, srv.dead_subscription = relay, topic, sub, dead_sub
    return srv


@pytest.fixture
def cloudsim(tmp_path: Path) -> Iterator[SimServer]:
    """A cloud simulation on its own database (tick 2 s, 5 s sweeper windows), stopped after the test."""
    srv = start_cloudsim(tmp_path)
    yield srv
    srv.stop()
