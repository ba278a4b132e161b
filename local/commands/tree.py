"""`resonate tree ROOT_ID`: the call graph below a root promise.

The SDKs tag every promise of a run with `resonate:origin` (the root) and `resonate:parent` (its
caller), so one tag search returns the whole graph and the parent tags link it.
"""
from __future__ import annotations

import argparse
import base64
import binascii
import json
from typing import Any

from local.commands.client import Client, add_common, client_from, json_mode, pretty

DOTS = {"pending": " 🟡", "resolved": " 🟢", "rejected": " 🔴", "rejected_canceled": " 🔴", "rejected_timedout": " 🔴"}


def collect(client: Client, root: str) -> list[dict[str, Any]]:
    """Every promise whose origin is `root`, following the cursor page by page."""
    out: list[dict[str, Any]] = []
    cursor: str | None = None
    while True:
        data: dict[str, Any] = {"limit": 100, "tags": {"resonate:origin": root}}
        if cursor is not None:
            data["cursor"] = cursor
        page = client.call("promise.search", data)
        promises = page.get("promises") if isinstance(page, dict) else None
        out += [p for p in promises if isinstance(p, dict)] if isinstance(promises, list) else []
        cursor = page.get("cursor") if isinstance(page, dict) else None
        if not isinstance(cursor, str):
            return out


def children_of(promises: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """parent id -> children sorted by createdAt (a promise naming itself as parent is skipped)."""
    kids: dict[str, list[dict[str, Any]]] = {}
    for p in promises:
        parent = (p.get("tags") or {}).get("resonate:parent")
        if isinstance(parent, str) and parent != p.get("id"):
            kids.setdefault(parent, []).append(p)
    for lst in kids.values():
        lst.sort(key=_created_at)
    return kids


def _created_at(p: dict[str, Any]) -> int:
    at = p.get("createdAt")
    return at if isinstance(at, int) else 0


def detail(p: dict[str, Any]) -> str:
    """(sleep) for timers, (rpc f) / (run f) by scope; f from the base64 JSON of param.data."""
    tags = p.get("tags") or {}
    func = ""
    try:
        call = json.loads(base64.b64decode((p.get("param") or {}).get("data") or "", validate=True))
        if isinstance(call, dict) and isinstance(call.get("func"), str):
            func = " " + call["func"]
    except (binascii.Error, ValueError, TypeError):
        pass
    if isinstance(tags.get("resonate:timer"), str) and tags["resonate:timer"]:
        return "(sleep)"
    if tags.get("resonate:scope") == "global":
        return f"(rpc{func})"
    if tags.get("resonate:scope") == "local":
        return f"(run{func})"
    return ""


def lines(root: dict[str, Any], kids: dict[str, list[dict[str, Any]]]) -> list[str]:
    """The ASCII tree, root first; a cycle in the parent tags is cut instead of looping."""
    out: list[str] = []
    seen: set[str] = set()

    def walk(p: dict[str, Any], prefix: str, last: bool, is_root: bool) -> None:
        raw = p.get("id")
        pid = raw if isinstance(raw, str) else "<unknown>"
        connector = "" if is_root else ("└── " if last else "├── ")
        out.append(f"{prefix}{connector}{pid}{DOTS.get(str(p.get('state')), '')} {detail(p)}")
        if pid in seen:
            return
        seen.add(pid)
        below = prefix if is_root else prefix + ("    " if last else "│   ")
        children = kids.get(pid, [])
        for i, child in enumerate(children):
            walk(child, below, i == len(children) - 1, False)

    walk(root, "", True, True)
    return out


def nested(root: dict[str, Any], kids: dict[str, list[dict[str, Any]]], seen: set[str] | None = None) -> dict[str, Any]:
    """The same tree as JSON: each promise record with a `children` list (for --json)."""
    seen = set() if seen is None else seen
    pid = root.get("id")
    seen.add(pid)  # type: ignore[arg-type]
    below = [nested(c, kids, seen) for c in kids.get(pid, []) if c.get("id") not in seen]  # type: ignore[arg-type]
    return {**root, "children": below}


def tree(args: argparse.Namespace) -> None:
    promises = collect(client_from(args), args.id)
    root = next((p for p in promises if p.get("id") == args.id), {"id": args.id})
    kids = children_of(promises)
    print(pretty(nested(root, kids)) if json_mode(args) else "\n".join(lines(root, kids)))


def register(sub: Any) -> None:
    h = "print the call graph below a promise (promises tagged resonate:origin=ROOT_ID)"
    p = sub.add_parser("tree", help=h, description=h,
                       epilog="dots: 🟡 pending, 🟢 resolved, 🔴 rejected; --json prints the tree as nested records")
    add_common(p, leaf=False)
    p.set_defaults(client_handler=tree)
    p.add_argument("id", metavar="ROOT_ID", help="root promise id")
