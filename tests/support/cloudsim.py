"""The cloud simulation for tests: `local.cloudsim.CloudSim` on a fresh database cloned from the
migrated template, wrapped in an object with the `ServerProc` interface (`.url`, `.port`,
`.post`, `.rpc`, `.logs()`, `.stop()`), so helpers written for the single-process server can
target the simulated cloud too.

    with start_cloudsim(tmp_path, tick=2, env={...}) as srv:
        srv.rpc("promise.get", {"id": "p"}); srv.sim.kill("api"); srv.sim.wait_ready()

or the `cloudsim` fixture (default settings, one sim per test).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Iterator

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

    def logs(self) -> str:
        return self.sim.logs()

    def stop(self, drop: bool = True) -> int:
        self.session.close()
        self.sim.stop()
        if drop and self.pg_url is not None:
            from tests.support.pg import drop_database

            drop_database(self.pg_url)
            self.pg_url = None
        return 0

    def __enter__(self) -> "SimServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_cloudsim(workdir: Path, *, pg_url: str | None = None, tick: float = 2.0, env: dict[str, str] | None = None,
                   debug: bool = False, window_ms: int = 5000, timeout: float = 60.0, **kw: Any) -> SimServer:
    """Start a CloudSim (on a fresh clone of the migrated template unless pg_url is given).

    The sweeper's window is shortened to `window_ms` (set RESONATE_SWEEPER__WINDOW in env to
    override) so that frequent test ticks do not pile up calls that run for 65 s each; `kw`
    goes to CloudSim (api=, poll=, sweeper=, dispatch=, threads=, restart_delay=, grace=...).
    """
    from tests.support.pg import drop_database, require_postgres, template_clone_url

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


@pytest.fixture
def cloudsim(tmp_path: Path) -> Iterator[SimServer]:
    """A cloud simulation on its own database (tick 2 s, 5 s sweeper windows), stopped after the test."""
    srv = start_cloudsim(tmp_path)
    yield srv
    srv.stop()
