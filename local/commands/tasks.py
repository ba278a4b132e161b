"""`resonate tasks …` (alias `task`): drive a task by hand as a worker would.

Useful to inspect or unstick work: claim a pending task, fence or complete it, release it back,
halt and continue it. Nested actions are passed through as JSON exactly as given.
"""
from __future__ import annotations

import argparse
from typing import Any

from local.commands.client import group, leaf
from local.commands.output import send
from local.commands.values import json_flag, parse_duration, timeout_at

STATES = "pending, acquired, suspended, halted, fulfilled"



def get(args: argparse.Namespace) -> None:
    send(args, "task.get", {"id": args.id})


def create(args: argparse.Namespace) -> None:
    ttl = parse_duration(args.ttl)
    action: dict[str, Any] = {"id": args.id, "timeoutAt": timeout_at(args.timeout)}
    if args.param is not None:  # [quirk] as the reference: no base64 helper here
        action["param"] = json_flag(args.param, "--param")
    if args.tags is not None:
        action["tags"] = json_flag(args.tags, "--tags")
    send(args, "task.create", {"pid": args.pid, "ttl": ttl,
                                "action": {"kind": "promise.create", "head": {}, "data": action}})


def claim(args: argparse.Namespace) -> None:
    ttl = parse_duration(args.ttl)
    send(args, "task.acquire", {"id": args.id, "pid": args.pid, "version": args.version, "ttl": ttl})


def fence(args: argparse.Namespace) -> None:
    action = json_flag(args.action, "--action")
    send(args, "task.fence", {"id": args.id, "version": args.version, "action": action})


def heartbeat(args: argparse.Namespace) -> None:
    send(args, "task.heartbeat", {"pid": args.pid, "tasks": json_flag(args.tasks, "--tasks")})


def suspend(args: argparse.Namespace) -> None:
    actions = json_flag(args.actions, "--actions")
    send(args, "task.suspend", {"id": args.id, "version": args.version, "actions": actions})


def complete(args: argparse.Namespace) -> None:
    action = json_flag(args.action, "--action")
    send(args, "task.fulfill", {"id": args.id, "version": args.version, "action": action})


def release(args: argparse.Namespace) -> None:
    send(args, "task.release", {"id": args.id, "version": args.version})


def halt(args: argparse.Namespace) -> None:
    send(args, "task.halt", {"id": args.id})


def continue_(args: argparse.Namespace) -> None:
    send(args, "task.continue", {"id": args.id})


def search(args: argparse.Namespace) -> None:
    data: dict[str, Any] = {"limit": args.limit}
    if args.state is not None:
        data["state"] = args.state
    if args.cursor is not None:
        data["cursor"] = args.cursor
    send(args, "task.search", data)


def _id(p: argparse.ArgumentParser) -> None:
    p.add_argument("id", metavar="ID", help="task id (the id of its promise)")


def _version(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", type=int, required=True, metavar="N", help="the task version (fencing token)")


def register(sub: Any) -> None:
    cmds = group(sub, "tasks", "task", "task operations")

    _id(leaf(cmds, "get", "get a task by id", get))

    p = leaf(cmds, "create", "create a promise with its task, acquired by PID (task.create)", create)
    p.add_argument("id", metavar="ID", help="promise id")
    p.add_argument("--pid", required=True, metavar="P", help="process id that holds the lease")
    p.add_argument("--ttl", required=True, metavar="DUR", help="lease duration, e.g. 15s")
    p.add_argument("--timeout", required=True, metavar="DUR", help="promise timeout, e.g. 1h")
    p.add_argument("--param", metavar="JSON", help="promise param as JSON (sent as given: no base64 helper)")
    p.add_argument("--tags", metavar="JSON",
                   help='promise tags as a JSON object; must contain resonate:target, '
                        'e.g. \'{"resonate:target":"poll://any@default"}\'')

    p = leaf(cmds, "claim", "acquire a pending task (task.acquire)", claim)
    _id(p)
    p.add_argument("--pid", required=True, metavar="P", help="process id that will hold the lease")
    _version(p)
    p.add_argument("--ttl", required=True, metavar="DUR", help="lease duration, e.g. 15s")

    p = leaf(cmds, "fence", "run promise.create/settle under the task's lease (task.fence)", fence)
    _id(p)
    _version(p)
    p.add_argument("--action", required=True, metavar="JSON",
                   help='inner request, e.g. \'{"kind":"promise.create","head":{},"data":{"id":"c","timeoutAt":0}}\'')

    p = leaf(cmds, "heartbeat", "renew the leases PID holds (task.heartbeat)", heartbeat)
    p.add_argument("--pid", required=True, metavar="P", help="process id")
    p.add_argument("--tasks", required=True, metavar="JSON", help='tasks to renew, e.g. \'[{"id":"a","version":1}]\'')

    p = leaf(cmds, "suspend", "suspend a task until the promises it awaits settle (task.suspend)", suspend)
    _id(p)
    _version(p)
    p.add_argument("--actions", required=True, metavar="JSON",
                   help='promise.register_callback requests, e.g. '
                        '\'[{"kind":"promise.register_callback","head":{},"data":{"awaited":"b","awaiter":"a"}}]\'')

    p = leaf(cmds, "complete", "settle the task's promise and fulfil the task (task.fulfill)", complete)
    _id(p)
    _version(p)
    p.add_argument("--action", required=True, metavar="JSON",
                   help='settle request, e.g. '
                        '\'{"kind":"promise.settle","head":{},"data":{"id":"a","state":"resolved"}}\'')

    p = leaf(cmds, "release", "give an acquired task back; it is dispatched again (task.release)", release)
    _id(p)
    _version(p)

    _id(leaf(cmds, "halt", "halt a task: no more dispatch until continued", halt))
    _id(leaf(cmds, "continue", "continue a halted task", continue_))

    p = leaf(cmds, "search", "search tasks by state, ordered by id", search)
    p.add_argument("--state", metavar="S", help=f"one of {STATES}")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="page size (default 100)")
    p.add_argument("--cursor", metavar="C", help="cursor returned by the previous page")
