"""The published REST-era clients' own store suites, unmodified, against a fresh server each.

resonate-sdk 0.1.31 (`tests/test_promise_storage.py`: the 324 transition cases of the durable
promise table through `RemotePromiseStore`) and 0.6.7 (`tests/test_store_promise.py`,
`test_store_schedules.py`, `test_store_task.py` through `RemoteStore` and the SSE listener) run
from their PyPI sdists in venvs of their own (`make sdk-legacy`, tests/legacy/install.sh) as
subprocesses, pointed at a server started for that suite alone: the suites use fixed ids
(`id0`…`id323`, `tid0`…, `sid0`…) and test_store_task reads the first message of group `default`.
Each runs only its remote half (`-k`); the exit code and the number of passed tests are checked.
"""
from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.server import ROOT, ServerProc, process_backends, start_legacy_server

pytestmark = pytest.mark.process

LEGACY = ROOT / "tests" / "legacy" / ".venv"  # tests/legacy/install.sh: <version>/ (venvs), sdist/
# 0.6.7 retries connection errors, 500s and non-JSON 2xx forever: a hang becomes a failure here
SUITE_TIMEOUT = 300
HANG_DUMP = 60  # pytest's faulthandler prints every thread's stack when one test runs this long
TAIL = 150  # lines of the suite's output and of the server log shown on failure


@dataclass(frozen=True)
class Suite:
    version: str
    file: str
    select: str  # the `-k` expression of the remote half
    passed: int  # how many tests that half has
    witness: str | None  # a promise the suite leaves on the server: proof it talked to this one

    @property
    def name(self) -> str:
        return f"{self.version}-{Path(self.file).stem}"


SUITES = [
    # 0.1.31 parametrises with [LocalPromiseStore, RemotePromiseStore] when RESONATE_STORE_URL is set
    Suite("0.1.31", "tests/test_promise_storage.py", "store1", 324, "id323"),
    Suite("0.6.7", "tests/test_store_promise.py", "RemoteStore", 324, "id323"),
    Suite("0.6.7", "tests/test_store_schedules.py", "RemoteStore", 3, None),  # schedules deleted in teardown
    Suite("0.6.7", "tests/test_store_task.py", "RemoteStore", 15, "tid14"),
]


def toolchain(version: str) -> tuple[Path, Path]:
    """The release's venv python and unpacked sdist, or a failure saying how to install them."""
    python = LEGACY / version / "bin" / "python"
    src = LEGACY / "sdist" / f"resonate_sdk-{version}"
    if not (python.exists() and (src / "tests").is_dir() and (LEGACY / version / ".install-stamp").exists()):
        pytest.fail(f"resonate-sdk {version} is not installed under {LEGACY}: run `make sdk-legacy` "
                    "(bash tests/legacy/install.sh)")
    return python, src


def client_env(suite: Suite, srv: ServerProc, poll_port: int) -> dict[str, str]:
    """This environment without what would steer the client or its pytest elsewhere (RESONATE_*,
    PYTEST_*, this venv's PYTHONPATH), plus the variables that point the suite at `srv`."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("RESONATE_", "PYTEST_")) and k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    if suite.version == "0.1.31":
        return {**env, "PYTHONPATH": "src", "RESONATE_STORE_URL": srv.url}
    return {**env, "RESONATE_HOST": "http://127.0.0.1", "RESONATE_PORT_STORE": str(srv.port),
            "RESONATE_PORT_MESSAGE_SOURCE": str(poll_port)}


def run_suite(suite: Suite, srv: ServerProc, poll_port: int, out: Path) -> tuple[int | None, str]:
    """Run the suite to the end or the timeout; (exit code or None when it hung, its output)."""
    python, src = toolchain(suite.version)
    cmd = [str(python), "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", f"faulthandler_timeout={HANG_DUMP}",
           suite.file, "-k", suite.select]
    with open(out, "wb") as fh:
        proc = subprocess.Popen(cmd, cwd=src, env=client_env(suite, srv, poll_port), stdout=fh,
                                stderr=subprocess.STDOUT)
        try:
            code: int | None = proc.wait(timeout=SUITE_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            code = None
    return code, out.read_text(errors="replace")


def tail(text: str, n: int = TAIL) -> str:
    return "\n".join(text.splitlines()[-n:])


def passed(output: str) -> int:
    """The `N passed` of pytest's summary line (the last line that has one)."""
    counts = re.findall(r"\b(\d+) passed\b", output)
    return int(counts[-1]) if counts else 0


@pytest.mark.parametrize("backend", process_backends())
@pytest.mark.parametrize("suite", SUITES, ids=lambda s: s.name)
def test_published_suite(suite: Suite, backend: str, tmp_path: Path) -> None:
    srv, poll_port = start_legacy_server(backend, tmp_path / "server")
    try:
        code, output = run_suite(suite, srv, poll_port, tmp_path / "suite.out")
        witness = srv.request("GET", f"/promises/{suite.witness}").status_code if suite.witness else 200
    finally:
        srv.stop()
    ran = f"hung: killed after {SUITE_TIMEOUT} s" if code is None else f"exit code {code}"
    report = (f"resonate-sdk {suite.version} {suite.file} -k {suite.select} on {backend}: {ran}, "
              f"{passed(output)} passed of {suite.passed}\n--- the suite's output (tail) ---\n{tail(output)}\n"
              f"--- server log (tail) ---\n{tail(srv.logs())}")
    assert code == 0 and passed(output) == suite.passed, report
    assert witness == 200, f"promise {suite.witness} is not on the server: the suite talked to another one\n{report}"
