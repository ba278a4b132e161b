"""The client side of the protocol for the CLI: one envelope per command over HTTP (docs/cli.md).

Errors are raised as `CliError(message)`; `run` turns them into the reference's `Error: <message>`
on stderr and exit status 1, so every command shares the same outcome handling.
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import urllib3

PROTOCOL_VERSION = "2026-04-01"
DEFAULT_SERVER = "http://localhost:8001"
SERVER_ENV = "RESONATE_URL"  # the SDKs' variable; the server ignores it (docs/operations.md#configuration)
TOKEN_ENV = "RESONATE_TOKEN"

_seq = itertools.count(1)


class CliError(Exception):
    """A failure reported as `Error: <message>` on stderr with exit status 1."""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def corr_id() -> str:
    """`cli-<unix-ms>-<n>`: unique per request of this process, recognisable in server logs."""
    return f"cli-{now_ms()}-{next(_seq)}"


def compact(value: Any) -> str:
    """JSON as the reference renders it inline: compact, keys sorted, non-ASCII kept."""
    return json.dumps(value, separators=(",", ":"), sort_keys=True, ensure_ascii=False)


def pretty(value: Any) -> str:
    """JSON as the reference prints response data: two-space indent, keys sorted."""
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False)


def _short_reason(err: BaseException) -> str:
    """The useful part of a urllib3 error (its text starts with an object repr)."""
    reason = getattr(err, "reason", None) or err
    text = str(reason)
    marker = "Failed to establish a new connection: "
    return text.split(marker, 1)[1] if marker in text else text


class Client:
    """POSTs envelopes to `<server>/`; the token travels as head.auth and as a bearer header."""

    def __init__(self, server: str, token: str | None, timeout: float = 60.0) -> None:
        self.url = server.rstrip("/") + "/"
        self.token = token
        self.http = urllib3.PoolManager(timeout=urllib3.Timeout(connect=10.0, read=timeout), retries=False)

    def envelope(self, kind: str, data: Any) -> dict[str, Any]:
        head: dict[str, Any] = {"corrId": corr_id(), "version": PROTOCOL_VERSION}
        if self.token is not None:
            head["auth"] = self.token
        return {"kind": kind, "head": head, "data": data}

    def call(self, kind: str, data: Any, path: str = "") -> Any:
        """Send one request (to `<server>/<path>`: `operator` for the operators' kinds); return the
        response data on a 2xx envelope status, else raise."""
        headers = {"Content-Type": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        body = json.dumps(self.envelope(kind, data)).encode()
        url = self.url + path
        try:
            resp = self.http.request("POST", url, body=body, headers=headers)
        except (urllib3.exceptions.HTTPError, ValueError, OSError) as e:
            raise CliError(f"Connection error: error sending request for url ({url}): {_short_reason(e)}") from e
        try:
            envelope = json.loads(resp.data)
        except ValueError as e:  # also bad UTF-8
            raise CliError(f"Failed to parse response: {e}") from e
        head = envelope.get("head") if isinstance(envelope, dict) else None
        status = head.get("status") if isinstance(head, dict) else None
        if not isinstance(status, int) or isinstance(status, bool):
            status = 0
        out = envelope.get("data") if isinstance(envelope, dict) else None
        if 200 <= status < 300:
            return out
        raise CliError(compact(out))


def add_common(p: argparse.ArgumentParser, leaf: bool) -> None:
    """-S/-T/--json/-o on a command parser; `leaf` parsers leave values unset unless given,
    so the flags work anywhere after the command name (`promises -S X get 1` or `promises get 1 -S X`)."""
    d: dict[str, Any] = {"default": argparse.SUPPRESS} if leaf else {"default": None}
    g = p.add_argument_group("connection and output")
    g.add_argument("-S", "--server", metavar="URL", **d,
                   help=f"server base URL (default: ${SERVER_ENV}, else {DEFAULT_SERVER})")
    g.add_argument("-T", "--token", metavar="TOKEN", **d,
                   help=f"JWT, sent as head.auth and Authorization: Bearer (default: ${TOKEN_ENV})")
    g.add_argument("--json", dest="output", action="store_const", const="json", **d,
                   help="print the response data as pretty JSON (the reference CLI's output)")
    g.add_argument("-o", "--output", dest="output", choices=("table", "json"), **d,
                   help="output format: table (default, readable) or json")


def client_from(args: argparse.Namespace) -> Client:
    server = getattr(args, "server", None) or os.environ.get(SERVER_ENV) or DEFAULT_SERVER
    token = getattr(args, "token", None) or os.environ.get(TOKEN_ENV) or None
    return Client(server, token)


def json_mode(args: argparse.Namespace) -> bool:
    return getattr(args, "output", None) == "json"


def run(handler: Callable[[argparse.Namespace], None], args: argparse.Namespace) -> int:
    """Run one command handler; map CliError to the reference's stderr line and exit 1."""
    try:
        handler(args)
    except CliError as e:
        sys.stdout.flush()
        print(f"Error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:  # `resonate promises search | head`: quiet, as other CLIs
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the final flush must not fail
        return 0
    return 0


Handler = Callable[[argparse.Namespace], None]


def group(sub: Any, name: str, alias: str, help: str) -> Any:
    """A command with subcommands (`promises`, alias `promise`); returns its subparsers."""
    p = sub.add_parser(name, aliases=[alias], help=help, description=f"{help} (alias: {alias})")
    add_common(p, leaf=False)
    return p.add_subparsers(dest="subcommand", required=True, metavar="SUBCOMMAND")


def leaf(sub: Any, name: str, help: str, handler: Handler, description: str | None = None) -> argparse.ArgumentParser:
    """One subcommand; the handler runs with the parsed namespace (see `run`)."""
    p = sub.add_parser(name, help=help, description=description or help)
    add_common(p, leaf=True)
    p.set_defaults(client_handler=handler)
    return p
