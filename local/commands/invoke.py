"""`resonate invoke ID -f FUNC [--arg V]...`: start a function on a worker group.

It creates one promise whose param is what the SDKs expect of a remote call (base64 of
`{"func", "args", "version"}`) and whose `resonate:target` makes the server dispatch it.
"""
from __future__ import annotations

import argparse
from typing import Any

from local.commands.client import CliError, add_common, client_from, compact, now_ms
from local.commands.output import emit
from local.commands.values import b64, loads, parse_duration


def _args(args: argparse.Namespace) -> list[Any]:
    """`--json-args` gives the whole array; else each `--arg` is JSON, falling back to a string."""
    if args.json_args is not None:
        try:
            value = loads(args.json_args)
        except ValueError as e:
            raise CliError(f"Failed to parse --json-args: {e}") from e
        if not isinstance(value, list):
            raise CliError(f"Failed to parse --json-args: expected an array, got {compact(value)}")
        return value
    out: list[Any] = []
    for raw in args.arg:
        try:
            out.append(loads(raw))
        except ValueError:
            out.append(raw)
    return out


def invoke(args: argparse.Namespace) -> None:
    if args.version <= 0:
        raise CliError("version must be greater than 0")
    delay = parse_duration(args.delay) if args.delay is not None else 0
    timeout = parse_duration(args.timeout)
    call = {"func": args.func, "args": _args(args), "version": args.version}
    tags = {"resonate:target": args.target}
    if delay > 0:
        tags["resonate:delay"] = str(now_ms() + delay)
    data = {"id": args.id, "timeoutAt": now_ms() + timeout + delay,
            "param": {"headers": {}, "data": b64(compact(call))}, "tags": tags}
    emit(args, client_from(args).call("promise.create", data))


def register(sub: Any) -> None:
    h = "invoke a function via a durable promise that a worker group executes"
    p = sub.add_parser("invoke", help=h, description=h,
                       epilog="example: resonate invoke hello-cli --func workflow --arg world (docs/cli.md)")
    add_common(p, leaf=False)
    p.set_defaults(client_handler=invoke)
    p.add_argument("id", metavar="ID", help="promise id (the invocation's id)")
    p.add_argument("-f", "--func", required=True, metavar="NAME", help="registered function name")
    p.add_argument("--arg", action="append", default=[], metavar="V",
                   help="an argument, repeatable; parsed as JSON, else taken as a string (--arg 5 is the number 5)")
    p.add_argument("--json-args", metavar="JSON", help="all arguments as one JSON array (instead of --arg)")
    p.add_argument("--version", type=int, default=1, metavar="N", help="function version (default 1)")
    p.add_argument("-t", "--timeout", default="1h", metavar="DUR", help="promise timeout (default 1h)")
    p.add_argument("--target", default="poll://any@default", metavar="ADDR",
                   help="worker group address (default poll://any@default)")
    p.add_argument("--delay", metavar="DUR", help="dispatch no earlier than this from now, e.g. 5m")
