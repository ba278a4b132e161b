"""`resonate schedules …` (alias `schedule`): cron schedules that create promises."""
from __future__ import annotations

import argparse
from typing import Any

from local.commands.client import group, leaf
from local.commands.output import send
from local.commands.values import encode_data, json_flag, parse_duration


def get(args: argparse.Namespace) -> None:
    send(args, "schedule.get", {"id": args.id})


def create(args: argparse.Namespace) -> None:
    data: dict[str, Any] = {"id": args.id, "cron": args.cron, "promiseId": args.promise_id,
                            "promiseTimeout": parse_duration(args.promise_timeout)}
    if args.promise_param is not None:
        data["promiseParam"] = encode_data(json_flag(args.promise_param, "--promise-param"))
    if args.promise_tags is not None:
        data["promiseTags"] = json_flag(args.promise_tags, "--promise-tags")
    send(args, "schedule.create", data)


def delete(args: argparse.Namespace) -> None:
    send(args, "schedule.delete", {"id": args.id})


def search(args: argparse.Namespace) -> None:
    data: dict[str, Any] = {"limit": args.limit}
    if args.tags is not None:
        data["tags"] = json_flag(args.tags, "--tags")
    if args.cursor is not None:
        data["cursor"] = args.cursor
    send(args, "schedule.search", data)


def register(sub: Any) -> None:
    cmds = group(sub, "schedules", "schedule", "schedule operations")

    p = leaf(cmds, "get", "get a schedule by id", get)
    p.add_argument("id", metavar="ID", help="schedule id")

    p = leaf(cmds, "create", "create a schedule (returns the existing one if the id is taken)", create)
    p.add_argument("id", metavar="ID", help="schedule id")
    p.add_argument("--cron", required=True, metavar="EXPR",
                   help='cron expression, 5 fields (or 6/7 with seconds), e.g. "0 * * * *"')
    p.add_argument("--promise-id", required=True, metavar="TEMPLATE",
                   help="id of each promise; {{.id}} and {{.timestamp}} are replaced, e.g. {{.id}}-{{.timestamp}}")
    p.add_argument("--promise-timeout", required=True, metavar="DUR", help="timeout of each promise, e.g. 1h")
    p.add_argument("--promise-param", metavar="JSON", help='param of each promise as JSON (data is base64-encoded)')
    p.add_argument("--promise-tags", metavar="JSON",
                   help="tags of each promise as a JSON object; must contain resonate:target")

    p = leaf(cmds, "delete", "delete a schedule (promises it created stay)", delete)
    p.add_argument("id", metavar="ID", help="schedule id")

    p = leaf(cmds, "search", "search schedules by promise tags, ordered by id", search)
    p.add_argument("--tags", metavar="JSON", help="JSON object matched against each schedule's promiseTags")
    p.add_argument("--limit", type=int, default=10, metavar="N", help="page size (default 10)")
    p.add_argument("--cursor", metavar="C", help="cursor returned by the previous page")
