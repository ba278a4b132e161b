"""Test selection: `process` (real processes or sockets), `postgres` and `mysql` (a database server);
`cloudsim` (starts a cloud simulation: under pytest-xdist they all run on one worker, one at a
time, as two simulations side by side on a loaded 2-core machine disturbed each other).

They are set at collection time (module `pytestmark`, marks on backend params, or the hook in
tests/conftest.py from the fixtures a test uses), so `make test-fast` (`-m "not process and not
postgres and not mysql"`) deselects instead of skipping. A helper that starts a server process or creates a
database calls `require()`: a test that does so without the mark fails at once, naming the
mark it needs, so test-fast never silently grows a subprocess or a database.
"""
from __future__ import annotations

from typing import Any

import pytest

PROCESS = "process"
CLOUDSIM = "cloudsim"
POSTGRES = "postgres"
MYSQL = "mysql"
_item: Any = None  # the test being set up or run (tests/conftest.py keeps it current)


def set_current(item: Any) -> None:
    global _item
    _item = item


def require(mark: str, what: str) -> None:
    if _item is not None and _item.get_closest_marker(mark) is None:
        raise RuntimeError(f"{_item.nodeid} {what} but is not marked `{mark}`: add `pytestmark = "
                           f"pytest.mark.{mark}` to its module (or the mark to the test) so that "
                           f"`make test-fast` deselects it")


BACKEND_MARKS = {"inproc": [], "memory": [pytest.mark.process], "sqlite": [pytest.mark.process],
                 "postgres": [pytest.mark.process, pytest.mark.postgres],
                 "mysql": [pytest.mark.process, pytest.mark.mysql],
                 "cloudsim": [pytest.mark.process, pytest.mark.postgres, pytest.mark.cloudsim]}


def param(backend: str, value: Any = None, id: str | None = None) -> Any:
    """A server backend as a pytest param (its value `backend` unless given) with the marks it needs."""
    return pytest.param(backend if value is None else value, marks=BACKEND_MARKS[backend], id=id or backend)
