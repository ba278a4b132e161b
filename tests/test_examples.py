"""examples/: every example runs to completion against a real server, as a newcomer runs it.

One SQLite server process for the module; each example is started with the command its
README gives (the Python ones with this interpreter, which has resonate-sdk 0.8.1; the
TypeScript ones with the Node 22 of tests/sdk/install_ts.sh, from a copy of the example folder
whose node_modules is the SDK tests' installation, so CI never calls npm per example). The test
checks the exit status and the last line (`done: …`). The human-in-the-loop example is
answered the way its README says, with `resonate promises resolve` (`python -m local`).

Also here: the pins in the examples match the versions the suite tests, and `resonate --version`
is the installed package's version.
"""
from __future__ import annotations

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import version as dist_version
from pathlib import Path

import pytest

from tests.sdk.harness import NODE22, TS_DIR, TS_SDK_VERSION, check_ts_toolchain
from tests.support.server import ROOT, ServerProc, start_server

EXAMPLES = ROOT / "examples"
RUN_TIMEOUT = 45.0  # seconds for one example; the slowest (cron) needs about 6


def approve(line: str, url: str) -> None:
    """The human of examples/python/human-in-the-loop: run the CLI command the example printed."""
    m = re.search(r"resonate promises resolve (\S+) --value '([^']+)'", line)
    if m is None:
        return
    cli = subprocess.run([sys.executable, "-m", "local", "promises", "resolve", m[1], "--value", m[2]],
                         cwd=ROOT, env={**os.environ, "RESONATE_URL": url}, capture_output=True, text=True,
                         timeout=30)
    assert cli.returncode == 0, cli.stderr
    assert "state:     resolved" in cli.stdout, cli.stdout


@dataclass(frozen=True)
class Example:
    path: str  # under examples/
    done: str  # the last line, as a regular expression
    on_line: Callable[[str, str], None] | None = None  # called with each output line and the server URL

    @property
    def lang(self) -> str:
        return self.path.split("/", 1)[0]


CASES = [
    Example("python/nested-steps", r"done: checkout-\w+ total = 9\.35"),
    Example("python/rpc-worker", r"done: Hello, newcomer! \(from worker-\w+ in group workers\)"),
    Example("python/durable-sleep", r"done: reminder-\w+ woke up after 3\.\d s"),
    Example("python/human-in-the-loop",
            r"done: review-\w+ published 'Release notes: a first draft' \(approved by alice\)", approve),
    Example("python/cron-schedule", r"done: 3 runs of schedule ticker-\w+, schedule deleted"),
    Example("typescript/nested-steps", r"done: checkout-\w+ total = 9\.35"),
    Example("typescript/rpc-worker", r"done: Hello, newcomer! \(from worker-\w+ in group workers\)"),
]


@pytest.fixture(scope="module")
def examples_server(tmp_path_factory) -> ServerProc:
    srv = start_server("sqlite", tmp_path_factory.mktemp("examples"), debug=False)
    yield srv
    srv.stop()


def command(example: Example, tmp_path: Path) -> tuple[list[str], Path]:
    """The README's command and the folder it runs in."""
    src = EXAMPLES / example.path
    if example.lang == "python":
        return [sys.executable, "-u", "main.py"], src
    err = check_ts_toolchain()
    if err:
        pytest.fail(f"TypeScript SDK toolchain not installed: {err}", pytrace=False)
    work = tmp_path / src.name
    shutil.copytree(src, work)
    (work / "node_modules").symlink_to(TS_DIR / "node_modules", target_is_directory=True)
    return [str(NODE22), "main.mjs"], work


@pytest.mark.process  # a server process and the examples' own processes
@pytest.mark.parametrize("example", CASES, ids=[c.path for c in CASES])
def test_example_runs_to_completion(example: Example, examples_server: ServerProc, tmp_path):
    cmd, cwd = command(example, tmp_path)
    env = {**os.environ, "RESONATE_URL": examples_server.url, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: queue.Queue[str | None] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    out: list[str] = []
    deadline = time.monotonic() + RUN_TIMEOUT
    try:
        while True:
            try:
                line = lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                pytest.fail(f"{example.path} did not finish within {RUN_TIMEOUT:.0f} s:\n" + "\n".join(out))
            if line is None:
                break
            out.append(line)
            if example.on_line is not None:
                example.on_line(line, examples_server.url)
        code = proc.wait(timeout=15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "\n".join(out)
    assert code == 0, f"{example.path} exited with {code}:\n{text}"
    assert out and re.fullmatch(example.done, out[-1]), f"{example.path}: unexpected last line:\n{text}"


def test_every_example_is_tested_and_documented():
    found = {str(p.parent.relative_to(EXAMPLES)) for p in EXAMPLES.glob("*/*/main.*")}
    assert found == {c.path for c in CASES}
    index = (EXAMPLES / "README.md").read_text()
    for case in CASES:
        assert (EXAMPLES / case.path / "README.md").exists(), case.path
        assert f"]({case.path})" in index, f"{case.path} missing from examples/README.md"


def test_examples_pin_the_sdk_versions_the_suite_tests():
    with open(ROOT / "pyproject.toml", "rb") as f:
        extra = tomllib.load(f)["project"]["optional-dependencies"]["test"]
    py_pin = next(d for d in extra if d.startswith("resonate-sdk=="))
    for case in CASES:
        folder = EXAMPLES / case.path
        if case.lang == "python":
            reqs = [line.split("#")[0].strip() for line in (folder / "requirements.txt").read_text().splitlines()]
            assert py_pin in reqs, case.path
            for source in folder.glob("*.py"):
                text = source.read_text()
                assert "from resonate import Resonate" not in text.replace("not `from resonate import", ""), source
                if "Resonate(" in text:
                    assert "from resonate.resonate import Resonate  # resonate-sdk 0.8.1" in text, source
        else:
            pkg = json.loads((folder / "package.json").read_text())
            assert pkg["dependencies"] == {"@resonatehq/sdk": TS_SDK_VERSION}, case.path


def test_version_is_the_installed_package_version():
    from local.commands import version

    assert version() == dist_version("resonate-gcp")
    r = subprocess.run([sys.executable, "-m", "local", "--version"], cwd=ROOT, capture_output=True, text=True,
                       timeout=60)
    assert (r.returncode, r.stdout) == (0, f"resonate {dist_version('resonate-gcp')}\n")


@pytest.mark.process  # reads the log of the examples' server process
def test_startup_banner_names_the_url_the_storage_and_the_sdk_lines(examples_server: ServerProc):
    url = f"http://localhost:{examples_server.port}"
    logs = examples_server.logs()
    assert f"INFO resonate: Ready url={url} storage=sqlite path={examples_server.db}\n" in logs, logs
    assert f'from resonate.resonate import Resonate; resonate = Resonate(url="{url}")\n' in logs, logs
    assert f'const resonate = new Resonate({{ url: "{url}" }})\n' in logs, logs
