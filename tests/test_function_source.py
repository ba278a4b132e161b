"""The Cloud Functions source archive (infra/package.py): what it holds, that it is
deterministic, and that every entry point serves from an unpacked copy of it alone.

The repo is installed in the venv in editable mode, so `import shared` could silently resolve
to the checkout instead of the archive. The functions-framework script does not put its working
directory on sys.path (sys.path[0] is the venv's bin/), and the setuptools editable finder sits
at the *end* of sys.meta_path, after the normal path finder; so with PYTHONPATH = the unpacked
directory (and nothing else), the archive's packages win. Two checks prove it rather than
assume it: an interpreter started like the server (PYTHONSAFEPATH, so the cwd is not added
either) resolves `shared`, `functions` and `main` inside the unpacked directory, and a
functions-framework process serving a copy whose `shared/__init__.py` writes a marker file
writes it, from that copy.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import requests

from infra.package import ENTRY_POINTS, build_source
from tests.support.server import ROOT, free_port

pytestmark = pytest.mark.process

VENV_BIN = Path(sys.executable).parent
FF = VENV_BIN / "functions-framework"


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    return build_source(tmp_path_factory.mktemp("out"))


@pytest.fixture(scope="module")
def unpacked(archive: Path, tmp_path_factory) -> Path:
    dest = tmp_path_factory.mktemp("unpacked")
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(dest)
    return dest


def _env(src: Path, db: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESONATE_", "PYTHON"))}
    env.update({
        "PYTHONPATH": str(src),  # only the unpacked archive (see the module docstring)
        "PYTHONSAFEPATH": "1",  # no implicit cwd / script dir: nothing of the repo sneaks in
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "RESONATE_STORAGE__TYPE": "sqlite",
        "RESONATE_STORAGE__SQLITE__PATH": str(db),
        "RESONATE_SWEEPER__WINDOW": "500",
        "RESONATE_OBSERVABILITY__METRICS_PORT": "0",
        "WORKERS": "1",
        "THREADS": "4",
    })
    env.update(extra)
    return env


def test_archive_contents(archive: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        names = zf.namelist()
        reqs = zf.read("requirements.txt").decode()
        main_py = zf.read("main.py").decode()
        infos = zf.infolist()
    assert names == sorted(names)
    assert {"main.py", "requirements.txt", "shared/__init__.py", "functions/__init__.py",
            "functions/main.py", "shared/http.py", "shared/storage/sqlite.py"} <= set(names)
    for n in names:
        assert n in ("main.py", "requirements.txt") or n.startswith(("shared/", "functions/")), n
        assert n in ("main.py", "requirements.txt") or n.endswith(".py") or n.startswith("shared/console/static/"), n
        assert "__pycache__" not in n and not n.endswith((".pyc", ".pyo")), n
        assert not n.startswith(("tests/", "infra/", "local/", "bench/")), n
    # every .py file of the two packages is in, nothing more
    on_disk = {p.relative_to(ROOT).as_posix() for pkg in ("shared", "functions")
               for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts}
    grpc_api = {n for n in on_disk if n.startswith("shared/grpc/")}  # the local server's only
    # ... and the web console's files, which the api function serves at /ui
    console = {p.relative_to(ROOT).as_posix() for p in (ROOT / "shared/console/static").iterdir()}
    assert {"shared/console/static/index.html", "shared/console/static/app.js"} <= console
    assert grpc_api and set(names) - {"main.py", "requirements.txt"} == (on_disk - grpc_api) | console
    # fixed timestamps and modes
    assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {i.external_attr >> 16 for i in infos} == {0o100644}
    # the thin main.py re-exports every entry point
    for name in ENTRY_POINTS:
        assert name in main_py
    # runtime dependencies only, as pinned in pyproject.toml
    lines = [ln for ln in reqs.splitlines() if ln.strip()]
    lowered = reqs.lower()
    for banned in ("pytest", "pulumi", "hypothesis", "resonate-sdk", "psutil", "requests>=", "grpcio-tools",
                   "grpcio-health-checking", "grpcio-reflection"):
        assert banned not in lowered, banned
    assert "flask>=3.0" in lines and "functions-framework>=3.8" in lines
    assert "cloud-sql-python-connector[pg8000]==1.23.0" in lines
    assert all("#" not in ln for ln in lines)


def test_archive_is_deterministic(archive: Path, tmp_path: Path) -> None:
    first = archive.read_bytes()
    again = build_source(tmp_path / "a")
    assert again.read_bytes() == first
    # rebuilding in place leaves the file alone
    mtime = archive.stat().st_mtime_ns
    time.sleep(0.01)
    assert build_source(archive.parent) == archive
    assert archive.stat().st_mtime_ns == mtime and archive.read_bytes() == first


def test_cli_prints_the_path(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "infra.package", str(tmp_path / "cli")], cwd=ROOT,
                         capture_output=True, text=True, timeout=60, check=True).stdout.strip()
    assert out == str(tmp_path / "cli" / "function-source.zip") and Path(out).is_file()


def test_importing_package_needs_no_pulumi() -> None:
    code = ("import sys; sys.modules['pulumi'] = None; import infra.package as p; "
            "assert 'pulumi' not in [m.split('.')[0] for m in sys.modules if sys.modules[m] is not None]; "
            "print(p.ARCHIVE_NAME)")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=60, capture_output=True)


def test_imports_resolve_inside_the_unpacked_archive(unpacked: Path, tmp_path: Path) -> None:
    code = ("import shared, functions, functions.main, main, shared.storage.sqlite as s; "
            "print(shared.__file__); print(functions.main.__file__); print(main.__file__); print(s.__file__)")
    out = subprocess.run([sys.executable, "-c", code], cwd=unpacked, env=_env(unpacked, tmp_path / "x.db"),
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    paths = [Path(p).resolve() for p in out.stdout.split()]
    assert len(paths) == 4
    for p in paths:
        assert p.is_relative_to(unpacked.resolve()), p
    # control: the same interpreter without the PYTHONPATH finds the repo (editable install),
    # which is what the check above rules out
    env = _env(unpacked, tmp_path / "x.db")
    del env["PYTHONPATH"]
    ctl = subprocess.run([sys.executable, "-c", "import shared; print(shared.__file__)"], cwd=unpacked, env=env,
                         capture_output=True, text=True, timeout=60)
    if ctl.returncode == 0:  # editable install present
        assert not Path(ctl.stdout.strip()).resolve().is_relative_to(unpacked.resolve())


def _start(target: str, src: Path, db: Path, log: Path, **extra: str) -> tuple[subprocess.Popen, int]:
    port = free_port()
    cmd = [str(FF), f"--target={target}", f"--source={src / 'main.py'}", "--host", "127.0.0.1", "--port", str(port)]
    fh = open(log, "wb")
    proc = subprocess.Popen(cmd, cwd=src, env=_env(src, db, **extra), stdin=subprocess.DEVNULL, stdout=fh,
                            stderr=subprocess.STDOUT, start_new_session=True)
    fh.close()
    return proc, port


def _get(proc: subprocess.Popen, port: int, log: Path, path: str = "/health", deadline: float = 60.0) -> requests.Response:
    end = time.monotonic() + deadline
    while True:
        if proc.poll() is not None:
            pytest.fail(f"functions-framework exited with {proc.returncode}:\n{log.read_text(errors='replace')}")
        try:
            return requests.get(f"http://127.0.0.1:{port}{path}", timeout=30)
        except requests.ConnectionError:
            if time.monotonic() > end:
                pytest.fail(f"no answer on port {port}:\n{log.read_text(errors='replace')}")
            time.sleep(0.1)


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_every_entry_point_serves_from_the_unpacked_archive(unpacked: Path, tmp_path: Path) -> None:
    """api and poll hand every request to the shared flask routes, so GET /health is the health
    route (200, always). sweeper and dispatch route nothing: whatever the path, a request runs
    one sweeper window (RESONATE_SWEEPER__WINDOW=500 ms, answers 200 with its counters) or, with
    no dispatch.topic, the HTTP-push redrive (200 {"sent", "settled": true} when nothing is due)."""
    db = tmp_path / "resonate.db"
    procs = {t: _start(t, unpacked, db, tmp_path / f"{t}.log") for t in ENTRY_POINTS}
    try:
        answers = {t: _get(p, port, tmp_path / f"{t}.log") for t, (p, port) in procs.items()}
        for t, r in answers.items():
            assert r.status_code == 200, (t, r.status_code, r.text, (tmp_path / f"{t}.log").read_text())
        assert answers["dispatch"].json() == {"sent": 0, "settled": True}
        assert {"passes", "handled", "redriven"} <= answers["sweeper"].json().keys()  # one window ran
        # the api really is the shared routes: /ready checks the (SQLite) store
        p, port = procs["api"]
        assert _get(p, port, tmp_path / "api.log", "/ready").status_code == 200
        # ... and serves the web console from the archive's copy of its files
        page = _get(p, port, tmp_path / "api.log", "/ui/app.js")
        assert page.status_code == 200 and "console.promises" in page.text
    finally:
        for p, _ in procs.values():
            _stop(p)
    assert not list(unpacked.rglob("__pycache__"))  # PYTHONDONTWRITEBYTECODE: the copy stays pristine


def test_the_server_process_imports_the_archive_copy(unpacked: Path, tmp_path: Path) -> None:
    """The running functions-framework itself, not just an interpreter started like it: a copy
    whose shared/__init__.py records its own path proves which `shared` the server imported."""
    probe = tmp_path / "probe"
    shutil.copytree(unpacked, probe)
    marker = tmp_path / "marker"
    with open(probe / "shared" / "__init__.py", "a") as fh:
        fh.write("\nimport os as _os\nif _os.environ.get('PROBE_MARKER'):\n"
                 "    open(_os.environ['PROBE_MARKER'], 'a').write(__file__ + '\\n')\n")
    proc, port = _start("api", probe, tmp_path / "p.db", tmp_path / "probe.log", PROBE_MARKER=str(marker))
    try:
        assert _get(proc, port, tmp_path / "probe.log").status_code == 200
    finally:
        _stop(proc)
    written = marker.read_text().split()
    assert written and all(Path(p).resolve() == (probe / "shared" / "__init__.py").resolve() for p in written)
