"""Readable output for the client commands (the default); `--json` prints the reference's output.

Rendering goes by the shape of the response data, not by command, so every kind that answers
`{promise}`, `{promises, cursor}`, `{task, promise, preload}`, … looks the same wherever it comes from.
"""
from __future__ import annotations

import base64
import binascii
import json
from datetime import UTC, datetime, timedelta
from typing import Any

from local.commands.client import client_from, compact, json_mode, pretty

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_WIDE = 60  # cells of free-form columns (tags, params) are cut here; ids never are


def iso(ms: Any) -> str:
    """Epoch ms -> `2025-01-31T12:00:00.000Z`; anything else (absent, out of range) as is."""
    if not isinstance(ms, int) or isinstance(ms, bool):
        return "-" if ms is None else str(ms)
    try:
        t = _EPOCH + timedelta(milliseconds=ms)
    except OverflowError:
        return str(ms)
    return t.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def when(ms: Any) -> str:
    return "-" if ms is None else f"{iso(ms)} ({ms})"


def cut(text: str, width: int = _WIDE) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"


def tags_text(tags: Any) -> str:
    if not isinstance(tags, dict) or not tags:
        return "-"
    return ", ".join(f"{k}={v}" for k, v in sorted(tags.items()))


def decoded(data: Any) -> str:
    """A Value's `data` shown as text when it is base64 of UTF-8 (what SDKs and the CLI write)."""
    if not isinstance(data, str):
        return compact(data)
    try:
        text = base64.b64decode(data, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return repr(data)
    return text if text.isprintable() else json.dumps(text, ensure_ascii=False)


def value_text(v: Any) -> str:
    if not isinstance(v, dict) or not v:
        return "-"
    parts = []
    if "data" in v:
        parts.append(decoded(v["data"]))
    if v.get("headers"):
        parts.append(f"headers {compact(v['headers'])}")
    return "; ".join(parts) or "-"


def table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns separated by two spaces; the last column is not padded."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    lines = []
    for row in [headers, *rows]:
        cells = [c.ljust(widths[i]) if i < len(row) - 1 else c for i, c in enumerate(row)]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def kv(pairs: list[tuple[str, Any]]) -> str:
    width = max(len(k) for k, _ in pairs)
    return "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in pairs)


def promise_block(p: dict[str, Any]) -> str:
    pairs: list[tuple[str, Any]] = [("id", p.get("id")), ("state", p.get("state")),
                                    ("timeoutAt", when(p.get("timeoutAt"))), ("createdAt", when(p.get("createdAt")))]
    if "settledAt" in p:
        pairs.append(("settledAt", when(p.get("settledAt"))))
    pairs += [("tags", tags_text(p.get("tags"))), ("param", value_text(p.get("param"))),
              ("value", value_text(p.get("value")))]
    return kv(pairs)


def task_block(t: dict[str, Any]) -> str:
    pairs: list[tuple[str, Any]] = [("id", t.get("id")), ("state", t.get("state")), ("version", t.get("version")),
                                    ("resumes", t.get("resumes"))]
    if "pid" in t:
        pairs += [("pid", t.get("pid")), ("ttl", f"{t.get('ttl')} ms")]
    return kv(pairs)


def schedule_block(s: dict[str, Any]) -> str:
    return kv([("id", s.get("id")), ("cron", s.get("cron")), ("promiseId", s.get("promiseId")),
               ("promiseTimeout", f"{s.get('promiseTimeout')} ms"), ("promiseTags", tags_text(s.get("promiseTags"))),
               ("promiseParam", value_text(s.get("promiseParam"))), ("createdAt", when(s.get("createdAt"))),
               ("nextRunAt", when(s.get("nextRunAt"))), ("lastRunAt", when(s.get("lastRunAt")))])


def promises_table(ps: list[dict[str, Any]]) -> str:
    return table(["ID", "STATE", "TIMEOUT", "TAGS"],
                 [[str(p.get("id")), str(p.get("state")), iso(p.get("timeoutAt")), cut(tags_text(p.get("tags")))]
                  for p in ps])


def tasks_table(ts: list[dict[str, Any]]) -> str:
    return table(["ID", "STATE", "VERSION", "RESUMES", "PID", "TTL"],
                 [[str(t.get("id")), str(t.get("state")), str(t.get("version")), str(t.get("resumes")),
                   str(t.get("pid", "-")), str(t.get("ttl", "-"))] for t in ts])


def schedules_table(ss: list[dict[str, Any]]) -> str:
    return table(["ID", "CRON", "PROMISE ID", "NEXT RUN", "TAGS"],
                 [[str(s.get("id")), str(s.get("cron")), str(s.get("promiseId")), iso(s.get("nextRunAt")),
                   cut(tags_text(s.get("promiseTags")))] for s in ss])


def _page(rows: str, count: int, noun: str, cursor: Any) -> str:
    out = rows if count else f"no {noun}"
    if cursor is not None:
        out += f"\n\nmore results: --cursor {cursor}"
    return out


def _preload(pre: Any) -> str:
    ids = [str(p.get("id")) for p in pre if isinstance(p, dict)] if isinstance(pre, list) else []
    return f"preload: {', '.join(ids) if ids else '-'}"


def readable(data: Any) -> str:
    """Render any response data; shapes not known here fall back to pretty JSON."""
    if not isinstance(data, dict):
        return pretty(data)
    if data == {}:
        return "OK"
    if isinstance(data.get("promises"), list):
        return _page(promises_table(data["promises"]), len(data["promises"]), "promises", data.get("cursor"))
    if isinstance(data.get("tasks"), list):
        return _page(tasks_table(data["tasks"]), len(data["tasks"]), "tasks", data.get("cursor"))
    if isinstance(data.get("schedules"), list):
        return _page(schedules_table(data["schedules"]), len(data["schedules"]), "schedules", data.get("cursor"))
    if isinstance(data.get("schedule"), dict):
        return schedule_block(data["schedule"])
    if isinstance(data.get("task"), dict) and len(data) == 1:
        return task_block(data["task"])
    if isinstance(data.get("task"), dict):
        parts = ["task\n" + _indent(task_block(data["task"]))]
        if isinstance(data.get("promise"), dict):
            parts.append("promise\n" + _indent(promise_block(data["promise"])))
        if "preload" in data:
            parts.append(_preload(data["preload"]))
        return "\n".join(parts)
    if isinstance(data.get("promise"), dict):
        return promise_block(data["promise"])
    if isinstance(data.get("action"), dict):  # task.fence: the inner response envelope
        inner = data["action"]
        status = (inner.get("head") or {}).get("status") if isinstance(inner.get("head"), dict) else None
        lines = [f"action: {inner.get('kind')} -> {status}"]
        body = inner.get("data")
        lines.append(_indent(readable(body)) if isinstance(body, dict) else _indent(compact(body)))
        if "preload" in data:
            lines.append(_preload(data["preload"]))
        return "\n".join(lines)
    return pretty(data)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())


def emit(args: Any, data: Any) -> None:
    """Print response data: pretty JSON with --json (exactly the reference), else readable."""
    print(pretty(data) if json_mode(args) else readable(data))


def send(args: Any, kind: str, data: dict[str, Any]) -> None:
    """One request from the command's flags, its answer printed (table or --json)."""
    emit(args, client_from(args).call(kind, data))
