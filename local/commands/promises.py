"""`resonate promises …` (alias `promise`): one promise.* request per subcommand."""
from __future__ import annotations

import argparse
from typing import Any

from local.commands.client import CliError, client_from, group, json_mode, leaf, pretty
from local.commands.output import send
from local.commands.values import encode_data, json_flag, parse_duration, timeout_at

STATES = "pending, resolved, rejected, rejected_canceled, rejected_timedout"



def get(args: argparse.Namespace) -> None:
    send(args, "promise.get", {"id": args.id})


def create(args: argparse.Namespace) -> None:
    data: dict[str, Any] = {"id": args.id, "timeoutAt": timeout_at(args.timeout)}
    if args.param is not None:
        data["param"] = encode_data(json_flag(args.param, "--param"))
    if args.tags is not None:
        data["tags"] = json_flag(args.tags, "--tags")
    send(args, "promise.create", data)


def _settle(state: str) -> Any:
    def handler(args: argparse.Namespace) -> None:
        data: dict[str, Any] = {"id": args.id, "state": state}
        if args.value is not None:
            data["value"] = encode_data(json_flag(args.value, "--value"))
        send(args, "promise.settle", data)
    return handler


def search(args: argparse.Namespace) -> None:
    data: dict[str, Any] = {"limit": args.limit}
    if args.state is not None:
        data["state"] = args.state
    if args.cursor is not None:
        data["cursor"] = args.cursor
    if args.tags is not None:
        data["tags"] = json_flag(args.tags, "--tags")
    send(args, "promise.search", data)


def register_callback(args: argparse.Namespace) -> None:
    send(args, "promise.register_callback", {"awaited": args.awaited, "awaiter": args.awaiter})


def register_listener(args: argparse.Namespace) -> None:
    send(args, "promise.register_listener", {"awaited": args.awaited, "address": args.address})


def purge(args: argparse.Namespace) -> None:
    """`promise.purge` until the server reports nothing left (each request works for a bounded
    time, `more` asks for another); prints the totals."""
    if not args.older_than:
        raise CliError("--older-than needs a duration, e.g. 30d")
    older_than = parse_duration(args.older_than)
    client = client_from(args)
    workflows = promises = 0
    while True:
        out = client.call("promise.purge", {"olderThan": older_than, "dryRun": args.dry_run}, path="operator")
        workflows += out["workflows"]
        promises += out["promises"]
        if not out.get("more"):
            break
    totals = {"workflows": workflows, "promises": promises, "dryRun": args.dry_run}
    if json_mode(args):
        print(pretty(totals))
    else:
        verb = "would delete" if args.dry_run else "deleted"
        print(f"{verb} {workflows} workflows ({promises} promises) settled more than {args.older_than} ago")


def register(sub: Any) -> None:
    cmds = group(sub, "promises", "promise", "promise operations")

    p = leaf(cmds, "get", "get a promise by id", get)
    p.add_argument("id", metavar="ID", help="promise id")

    p = leaf(cmds, "create", "create a promise (returns the existing one if the id is taken)", create)
    p.add_argument("id", metavar="ID", help="promise id")
    p.add_argument("--timeout", required=True, metavar="DUR", help="time until it times out, e.g. 30s, 1h30m")
    p.add_argument("--param", metavar="JSON",
                   help='param as JSON, e.g. \'{"headers":{"k":"v"},"data":"hello"}\' (data is base64-encoded)')
    p.add_argument("--tags", metavar="JSON", help='tags as a JSON object of strings, e.g. \'{"env":"dev"}\'')

    for name, state, verb in (("resolve", "resolved", "resolve"), ("reject", "rejected", "reject"),
                              ("cancel", "rejected_canceled", "cancel")):
        p = leaf(cmds, name, f"{verb} a pending promise (state {state})", _settle(state))
        p.add_argument("id", metavar="ID", help="promise id")
        p.add_argument("--value", metavar="JSON", help='value as JSON, e.g. \'{"data":"ok"}\' (data is base64-encoded)')

    p = leaf(cmds, "search", "search promises by state and tags, ordered by id", search)
    p.add_argument("--state", metavar="S", help=f"one of {STATES}")
    p.add_argument("--tags", metavar="JSON", help="JSON object; every pair must match")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="page size (default 100)")
    p.add_argument("--cursor", metavar="C", help="cursor returned by the previous page")

    p = leaf(cmds, "purge", "delete finished workflows settled longer ago than --older-than (role admin)", purge,
             description="delete every workflow (the promises sharing one resonate:origin) whose promises are all "
                         "settled, the last longer ago than --older-than, with their tasks, callbacks, listeners "
                         "and queued messages; a deleted id may be created again, as new (docs/operations.md"
                         "#retention)")
    p.add_argument("--older-than", required=True, metavar="DUR", help="e.g. 30d, 12h, 90m")
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted, delete nothing")

    p = leaf(cmds, "register-callback", "make task AWAITER wait for promise AWAITED", register_callback)
    p.add_argument("awaited", metavar="AWAITED", help="awaited promise id")
    p.add_argument("awaiter", metavar="AWAITER", help="awaiter promise id (has a task)")

    p = leaf(cmds, "register-listener", "subscribe ADDRESS to AWAITED's settlement", register_listener)
    p.add_argument("awaited", metavar="AWAITED", help="awaited promise id")
    p.add_argument("address", metavar="ADDRESS", help="listener address, e.g. poll://uni@group/w1 or http://host/hook")
