"""The curl commands of the older server's README (its December 2023 README, quoted in
docs/legacy-api.md#a-walk-through-with-curl), run as written with the real `curl` under bash against a server.

Two texts: the README's three commands (create, resolve, reject; the payloads are base64-encoded
by the shell, `$(echo -n '…' | base64)`), and the spec's condensed quote of the first two with
`<base64>` replaced by a real base64 string. The only edits: the port of the server under test
replaces 8001, and the README's reject command loses the blank after its line-continuation
backslash (`\\ ` at the end of a line ends the command in every POSIX shell, so as printed it
cannot reach any server). The status code is read through a `.curlrc` (`-w`), leaving the command
text alone. The README's "resolve or reject" are alternatives: after a resolve, the reject with
its own key is refused (403 already resolved, docs/legacy-api.md#idempotency-keys-and-strict) and changes nothing.
"""
from __future__ import annotations

import base64
import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.support.server import ServerProc

pytestmark = pytest.mark.process

# seed 003 (the older server's README, Dec 2023), "Getting Started", steps 2 and 3
README_CREATE = """curl -X POST \\
  -H "Idempotency-Key: foo_create" \\
  -d '{
    "param": {
      "data": "'$(echo -n 'Durable Promise Created' | base64)'"
    },
    "timeout": 2524608000000
  }' \\
  http://localhost:8001/promises/foo/create"""
README_RESOLVE = """curl -X POST \\
  -H "Idempotency-Key: foo_resolve" \\
  -d '{
    "value": {
      "data": "'$(echo -n 'Durable Promise Resolved' | base64)'"
    }
  }' \\
  http://localhost:8001/promises/foo/resolve"""
README_REJECT = """curl -X POST \\
  -H "Idempotency-Key: foo_reject" \\<BLANK>
  -d '{
    "value": {
      "data": "'$(echo -n 'Durable Promise Rejected' | base64)'"
    }
  }' \\
  http://localhost:8001/promises/foo/reject""".replace("<BLANK>", " ")  # as printed; `as_run` drops it

# the condensed quote of the first two (docs/legacy-api.md#a-walk-through-with-curl)
SPEC_CREATE = """curl -X POST -H "Idempotency-Key: foo_create" \\
  -d '{"param": {"data": "<base64>"}, "timeout": 2524608000000}' \\
  http://localhost:8001/promises/foo/create"""
SPEC_RESOLVE = """curl -X POST -H "Idempotency-Key: foo_resolve" -d '{"value": {"data": "<base64>"}}' \\
  http://localhost:8001/promises/foo/resolve"""

TIMEOUT = 2524608000000


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def as_run(command: str, srv: ServerProc) -> str:
    """The command with the server's port for 8001 and no blanks at line ends."""
    return "\n".join(line.rstrip() for line in command.splitlines()).replace("localhost:8001", f"localhost:{srv.port}")


def curl(command: str, srv: ServerProc, home: Path) -> tuple[int, dict[str, Any]]:
    """Run one command under bash; (HTTP status, JSON body)."""
    assert shutil.which("curl"), "the curl binary is needed"
    home.mkdir(exist_ok=True)
    (home / ".curlrc").write_text('-sS\n-w "\\n%{http_code}"\n')  # silent, and the status on a last line
    out = subprocess.run(["bash", "-c", as_run(command, srv)], capture_output=True, text=True, timeout=60,
                         env={"PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": str(home), "CURL_HOME": str(home)})
    assert out.returncode == 0, f"{command}\nexit {out.returncode}: {out.stderr}{out.stdout}"
    body, _, status = out.stdout.rpartition("\n")
    return int(status), json.loads(body)


def data(value: dict[str, Any]) -> str:
    return base64.b64decode(value["data"]).decode()


def check_created(status: int, p: dict[str, Any], text: str) -> None:
    assert status == 201, p
    assert (p["id"], p["state"], p["timeout"], data(p["param"])) == ("foo", "PENDING", TIMEOUT, text)
    assert p["idempotencyKeyForCreate"] == "foo_create"
    assert p.get("idempotencyKeyForComplete") is None and "completedOn" not in p


def check_completed(status: int, p: dict[str, Any], state: str, key: str, text: str) -> None:
    assert status == 201, p
    assert (p["id"], p["state"], data(p["value"])) == ("foo", state, text)
    assert (p["idempotencyKeyForCreate"], p["idempotencyKeyForComplete"]) == ("foo_create", key)
    assert p["completedOn"] >= p["createdOn"]


def test_readme_create_resolve_then_reject(process_rs: ServerProc, tmp_path: Path) -> None:
    check_created(*curl(README_CREATE, process_rs, tmp_path), "Durable Promise Created")
    status, resolved = curl(README_RESOLVE, process_rs, tmp_path)
    check_completed(status, resolved, "RESOLVED", "foo_resolve", "Durable Promise Resolved")
    assert data(resolved["param"]) == "Durable Promise Created"
    # the commands again are retries: the same promise, 200, nothing changed
    assert curl(README_CREATE, process_rs, tmp_path) == (200, resolved)
    assert curl(README_RESOLVE, process_rs, tmp_path) == (200, resolved)
    # rejecting with another key: 403 already resolved, and nothing changed
    status, err = curl(README_REJECT, process_rs, tmp_path)
    assert status == 403 and err["error"]["code"] == 4030, err
    got = process_rs.request("GET", "/promises/foo")
    assert (got.status_code, got.json()) == (200, resolved)


def test_readme_create_reject(process_rs: ServerProc, tmp_path: Path) -> None:
    check_created(*curl(README_CREATE, process_rs, tmp_path), "Durable Promise Created")
    status, rejected = curl(README_REJECT, process_rs, tmp_path)
    check_completed(status, rejected, "REJECTED", "foo_reject", "Durable Promise Rejected")
    assert curl(README_REJECT, process_rs, tmp_path) == (200, rejected)
    status, err = curl(README_RESOLVE, process_rs, tmp_path)
    assert status == 403 and err["error"]["code"] == 4031, err


def test_spec_quote(process_rs: ServerProc, tmp_path: Path) -> None:
    create = SPEC_CREATE.replace("<base64>", b64("Durable Promise Created"))
    resolve = SPEC_RESOLVE.replace("<base64>", b64("Durable Promise Resolved"))
    check_created(*curl(create, process_rs, tmp_path), "Durable Promise Created")
    status, resolved = curl(resolve, process_rs, tmp_path)
    check_completed(status, resolved, "RESOLVED", "foo_resolve", "Durable Promise Resolved")
    assert curl(create, process_rs, tmp_path) == (200, resolved)
