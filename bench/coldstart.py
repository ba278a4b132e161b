"""(f) Cold start per Cloud Function: import + first request in a fresh interpreter (bench.coldchild).

Every target that functions/main.py decorates with `functions_framework.*` is measured `reps`
times against one Postgres database, the targets taking turns; the run with the median total is
reported. Baseline: the wall time of `python -c pass` (interpreter start, same interpreter and
environment).

Bytecode: the children read and write .pyc files under a cache directory of their own
(PYTHONPYCACHEPREFIX), filled by one untimed warm-up run, so the figure neither depends on the
caller's PYTHONDONTWRITEBYTECODE nor on whether the sources changed since the last run.
`without_project_pyc` makes a copy of that cache without the project's own modules (shared/,
functions/): a deploy that ships no compiled bytecode for them.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.http import envelope

ROOT = Path(__file__).resolve().parents[1]
SOURCE = "functions/main.py"
PROJECT_PACKAGES = ("shared", "functions")
DAY_MS = 24 * 3600 * 1000


def targets(source: Path = ROOT / SOURCE) -> list[str]:
    """Top-level functions of `source` decorated with functions_framework.<anything>, in file order."""
    tree = ast.parse(source.read_text())
    return [node.name for node in tree.body if isinstance(node, ast.FunctionDef)
            and any("functions_framework" in ast.unparse(d) for d in node.decorator_list)]


def request_for(target: str) -> dict[str, Any]:
    """The first request each target gets (unknown targets: POST / with an empty body)."""
    if target == "api":
        data = {"id": f"cold-{time.time_ns():x}", "timeoutAt": int(time.time() * 1000) + DAY_MS,
                "param": {}, "tags": {}}
        return {"method": "POST", "path": "/", "body": envelope("promise.create", data).decode()}
    if target == "poll":
        return {"method": "GET", "path": f"/poll/g/cold-{time.time_ns():x}"}
    return {"method": "POST", "path": "/", "body": ""}  # sweeper, dispatch, anything else


def child_env(pycache: Path, pg_url: str | None = None, write_pyc: bool = True) -> dict[str, str]:
    """The caller's environment minus RESONATE_*, with the bench's bytecode cache and the store's settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("RESONATE_") and k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(pycache)
    if not write_pyc:
        env["PYTHONDONTWRITEBYTECODE"] = "1"
    if pg_url is not None:
        env.update({"RESONATE_STORAGE__TYPE": "postgres", "RESONATE_STORAGE__POSTGRES__URL": pg_url})
    return env


def interpreter_start_ms(pycache: Path) -> float:
    """Wall time of `python -c pass`, spawn to exit."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], cwd=ROOT, env=child_env(pycache), check=True)
    return (time.perf_counter() - t0) * 1000


def cold_start_once(target: str, pg_url: str, pycache: Path, write_pyc: bool = True,
                    timeout_s: float = 90.0) -> dict[str, Any]:
    """One fresh interpreter: import, first request; adds total_ms and spawn_ms (spawn to first response)."""
    spec = {"target": target, "source": SOURCE, **request_for(target)}
    t_spawn = time.time()
    p = subprocess.run([sys.executable, "-m", "bench.coldchild", json.dumps(spec)], cwd=ROOT,
                       env=child_env(pycache, pg_url, write_pyc), capture_output=True, text=True, timeout=timeout_s)
    if p.returncode != 0 or not p.stdout.strip():
        raise RuntimeError(f"cold start of {target} failed ({p.returncode}): {p.stderr[-2000:]}")
    r = json.loads(p.stdout.strip().splitlines()[-1])
    r["total_ms"] = r["import_ms"] + r["first_ms"]
    r["spawn_ms"] = (r["done_wall"] - t_spawn) * 1000
    return r


def median_run(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The run with the median total, plus every total (`totals_ms`, ascending)."""
    runs = sorted(runs, key=lambda r: r["total_ms"])
    return {**runs[len(runs) // 2], "totals_ms": [r["total_ms"] for r in runs]}


@dataclass
class Case:
    """What one row measures: `target` against urls[i] in rep i, with the bytecode cache `pycache`."""
    label: str
    target: str
    urls: list[str]
    pycache: Path
    write_pyc: bool = True


def run_cases(cases: list[Case], reps: int, pycache: Path) -> tuple[dict[str, dict[str, Any] | str], float]:
    """Rep 1 of every case, then rep 2, ... (a burst of load elsewhere hits every case alike), each
    round starting with one `python -c pass`. Returns, per label, the median run (median_run) or the
    error text of a case that failed, and the median interpreter start in ms."""
    runs: dict[str, list[dict[str, Any]]] = {c.label: [] for c in cases}
    failed: dict[str, str] = {}
    interp: list[float] = []
    for i in range(reps):
        interp.append(interpreter_start_ms(pycache))
        for c in cases:
            if c.label not in failed:
                try:
                    runs[c.label].append(cold_start_once(c.target, c.urls[i], c.pycache, c.write_pyc))
                except Exception as e:  # a broken function is a result; the other rows still count
                    failed[c.label] = str(e)
    return {c.label: failed.get(c.label) or median_run(runs[c.label]) for c in cases}, statistics.median(interp)


def without_project_pyc(pycache: Path, dest: Path) -> Path:
    """A copy of the (warm) cache `pycache` without the bytecode of shared/ and functions/."""
    shutil.copytree(pycache, dest, dirs_exist_ok=True)
    for pkg in PROJECT_PACKAGES:
        shutil.rmtree(dest / (ROOT / pkg).relative_to("/"), ignore_errors=True)
    return dest
