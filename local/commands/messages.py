"""`resonate messages …` (alias `message`): the outbox an operator can act on.

`list` shows the queued messages (`--dead`: only those given up after
`transports.http_push.max_attempts` failed pushes); `redrive ID… | --all` clears a dead row's
mark and failure count so delivery tries it again now. With `--pubsub` the re-drive works on the
Pub/Sub dispatch shape instead: it moves the messages of the dead-letter subscription back onto
the dispatch topic (shared/delivery/pubsub_redrive.py). docs/operations.md#dead-letters.
"""
from __future__ import annotations

import argparse
from typing import Any

from local.commands.client import CliError, client_from, group, json_mode, leaf
from local.commands.output import emit, pretty, table

DEAD_SUBSCRIPTION = "resonate-dispatch-dead-pull"  # infra/stack/pubsub.py
DISPATCH_TOPIC = "resonate-dispatch"


def messages_table(ms: list[dict[str, Any]]) -> str:
    rows = [[str(m.get("id")), str(m.get("kind")), str(m.get("address")),
             str(m.get("taskId", m.get("promiseId"))) + (f" v{m['version']}" if "version" in m else ""),
             str(m.get("attempts")), "dead" if m.get("dead") else "queued"] for m in ms]
    return table(["ID", "KIND", "ADDRESS", "TASK/PROMISE", "ATTEMPTS", "STATE"], rows)


def list_(args: argparse.Namespace) -> None:
    data: dict[str, Any] = {"limit": args.limit, "dead": args.dead}
    if args.cursor is not None:
        data["cursor"] = args.cursor
    out = client_from(args).call("outbox.search", data, path="operator")
    if json_mode(args) or not isinstance(out, dict) or not isinstance(out.get("messages"), list):
        emit(args, out)
        return
    ms = out["messages"]
    text = messages_table(ms) if ms else ("no dead messages" if args.dead else "no queued messages")
    if out.get("cursor") is not None:
        text += f"\n\nmore results: --cursor {out['cursor']}"
    print(text)


def redrive(args: argparse.Namespace) -> None:
    if args.pubsub:
        return _redrive_pubsub(args)
    if args.dry_run:
        raise CliError("--dry-run goes with --pubsub (`resonate messages list --dead` lists the outbox's dead rows)")
    if bool(args.ids) == args.all:
        raise CliError("give message ids (from `resonate messages list --dead`) or --all, not both")
    ids = []
    for raw in args.ids:
        if not (raw.isascii() and raw.isdigit() and 0 < int(raw) < 2**63):
            raise CliError(f"invalid message id {raw!r}: ids are the positive numbers `messages list` shows")
        ids.append(int(raw))
    out = client_from(args).call("outbox.redrive", {"all": True} if args.all else {"ids": ids}, path="operator")
    if json_mode(args) or not isinstance(out, dict):
        emit(args, out)
        return
    done = out.get("redriven") or []
    lines = [messages_table(done) if done else "nothing re-driven"]
    if out.get("skipped"):
        lines.append("not dead (delivered, replaced or never given up): " + ", ".join(map(str, out["skipped"])))
    print("\n\n".join(lines))


def _redrive_pubsub(args: argparse.Namespace) -> None:
    if args.ids or args.all:
        raise CliError("--pubsub moves every message of the dead-letter subscription: no ids or --all")
    sub, topic = args.subscription, args.topic
    if args.project:
        sub = sub or f"projects/{args.project}/subscriptions/{DEAD_SUBSCRIPTION}"
        topic = topic or f"projects/{args.project}/topics/{DISPATCH_TOPIC}"
    if not sub or not topic:
        raise CliError("--pubsub needs --subscription and --topic (or --project for the infra/ names)")
    from shared.delivery.pubsub_redrive import RedriveError, redrive_dead_letters

    try:
        moved = redrive_dead_letters(sub, topic, dry_run=args.dry_run, limit=args.limit)
    except RedriveError as e:
        raise CliError(str(e)) from None
    if json_mode(args):
        print(pretty({"messages": moved, "dryRun": args.dry_run}))
        return
    if not moved:
        print("no dead-letter messages")
        return
    verb = "would re-publish" if args.dry_run else "re-published"
    print(table(["MESSAGE ID", "SEQ", "VERSION", "KIND", "DEAD-LETTERED AFTER"],
                [[str(m["messageId"]), str(m.get("seq", "-")), str(m.get("version", "-")), str(m.get("kind", "-")),
                  str(m.get("deliveryAttempts", "-"))] for m in moved]))
    print(f"\n{verb} {len(moved)} message(s) to {topic}")


def register(sub: Any) -> None:
    cmds = group(sub, "messages", "message", "outbox messages and dead letters")

    p = leaf(cmds, "list", "list queued outbox messages (outbox.search)", list_)
    p.add_argument("--dead", action="store_true", help="only the dead ones (given up after max_attempts)")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="page size (default 100)")
    p.add_argument("--cursor", metavar="C", help="cursor returned by the previous page")

    p = leaf(cmds, "redrive", "deliver dead messages again (outbox.redrive), or move Pub/Sub dead letters back",
             redrive)
    p.add_argument("ids", nargs="*", metavar="ID", help="message ids from `messages list --dead`")
    p.add_argument("--all", action="store_true", help="every dead message")
    g = p.add_argument_group("the Pub/Sub dispatch shape (dispatch.topic)")
    g.add_argument("--pubsub", action="store_true",
                   help="pull the dead-letter subscription and re-publish each message to the dispatch topic")
    g.add_argument("--subscription", metavar="SUB", help="projects/P/subscriptions/S of the dead-letter topic")
    g.add_argument("--topic", metavar="TOPIC", help="projects/P/topics/T: the dispatch topic")
    g.add_argument("--project", metavar="P",
                   help=f"defaults for both from infra/: {DEAD_SUBSCRIPTION} and {DISPATCH_TOPIC} in project P")
    g.add_argument("--dry-run", action="store_true", help="list the dead letters, leave them where they are")
    g.add_argument("--limit", type=int, default=1000, metavar="N", help="at most N messages (default 1000)")
