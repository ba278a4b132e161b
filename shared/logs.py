"""Log setup for the local server and the Cloud Functions (docs/operations.md#logs).

Two formats over the standard `logging` module, so every module keeps `logging.getLogger(...)`:

- text: the reference server's readable shape, `2026-04-02T05:05:32.480430Z  INFO resonate: msg`
  (RFC 3339 UTC with microseconds, level right-aligned in 5, logger name, message);
- json: one object per line with the fields Google Cloud Logging lifts out of a structured
  line (`severity`, `message`, `time`, `logging.googleapis.com/sourceLocation`, and the trace
  of the request being handled, so a function's lines group under its request in the console).

Only the standard library is imported: this runs in every function's cold start.
"""
from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from typing import Any

TEXT_LEVELS = {"WARNING": "WARN", "CRITICAL": "ERROR"}
# the words `level` accepts; `trace` has no level of its own here (nothing logs below DEBUG)
LEVELS = {"trace": logging.DEBUG, "debug": logging.DEBUG, "info": logging.INFO, "warn": logging.WARNING,
          "warning": logging.WARNING, "error": logging.ERROR, "off": logging.CRITICAL + 10}
SOURCE = "logging.googleapis.com/sourceLocation"
TRACE = "logging.googleapis.com/trace"
SPAN = "logging.googleapis.com/spanId"
SAMPLED = "logging.googleapis.com/trace_sampled"


def q(value: Any, limit: int = 200) -> str:
    """A client-supplied value as a log field: truncated, and JSON-quoted when it holds spaces,
    quotes or control characters (so a crafted id cannot forge a log line)."""
    s = value if isinstance(value, str) else str(value)
    if len(s) > limit:
        s = s[:limit] + "…"
    if not s or any(c in s for c in ' "=\\') or not s.isprintable():
        return json.dumps(s)
    return s


# what would end or forge a text line: C0 controls but tab, DEL, C1 controls, the Unicode line
# and paragraph separators (a terminal or log viewer may break lines at any of them), and lone
# surrogates (not encodable: the handler would print an error instead of the line)
_LINE_BREAKING = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f\u2028\u2029\ud800-\udfff]")


def one_line(message: str) -> str:
    """The message with every line-breaking character escaped (`\\n`, `\\u2028`, ...): the last
    guard of one-line-per-event text logs, behind `q()` at each call site."""
    if _LINE_BREAKING.search(message) is None:
        return message
    return _LINE_BREAKING.sub(lambda m: json.dumps(m.group())[1:-1], message)


def _rfc3339(created: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int((created % 1) * 1e6):06d}Z"


class TextFormatter(logging.Formatter):
    """`<time> <LEVEL> <logger>: <message>`, the traceback on the following lines."""

    def format(self, record: logging.LogRecord) -> str:
        level = TEXT_LEVELS.get(record.levelname, record.levelname)
        line = f"{_rfc3339(record.created)} {level:>5} {record.name}: {one_line(record.getMessage())}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        elif record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + self.formatStack(record.stack_info)
        return line


def trace_fields(headers: Any, project: str | None) -> dict[str, Any]:
    """Cloud Logging trace fields from `X-Cloud-Trace-Context: TRACE/SPAN;o=1` or W3C
    `traceparent: 00-TRACE-SPAN-FLAGS` (the first wins, as in Cloud Run's own request log)."""
    trace = span = None
    sampled: bool | None = None
    raw = headers.get("X-Cloud-Trace-Context")
    if raw:
        head, _, opts = raw.partition(";")
        trace, _, span_dec = head.partition("/")
        if span_dec.isdigit():
            span = "%016x" % (int(span_dec) & 0xFFFFFFFFFFFFFFFF)
        if opts.startswith("o="):
            sampled = opts[2:3] == "1"
    else:
        raw = headers.get("traceparent")
        parts = raw.split("-") if raw else []
        if len(parts) >= 4 and len(parts[1]) == 32:
            trace, span = parts[1], parts[2]
            try:
                sampled = bool(int(parts[3][:2], 16) & 1)
            except ValueError:
                pass
    trace = (trace or "").strip()
    if not trace or not all(c in "0123456789abcdefABCDEF" for c in trace):
        return {}
    out: dict[str, Any] = {TRACE: f"projects/{project}/traces/{trace}" if project else trace}
    if span:
        out[SPAN] = span
    if sampled is not None:
        out[SAMPLED] = sampled
    return out


def _request_trace(project: str | None) -> dict[str, Any]:
    """The trace of the flask request this thread (or greenlet) is handling, if any."""
    flask = sys.modules.get("flask")
    if flask is None or not flask.has_request_context():
        return {}
    try:
        return trace_fields(flask.request.headers, project)
    except Exception:  # a log line must never fail because of a strange header
        return {}


class CloudFormatter(logging.Formatter):
    """One JSON object per record with Cloud Logging's structured-log fields."""

    def __init__(self) -> None:
        super().__init__()
        self.project = (os.environ.get("GOOGLE_CLOUD_PROJECT") or os.environ.get("GCP_PROJECT")
                        or os.environ.get("GCLOUD_PROJECT") or None)

    def format(self, record: logging.LogRecord) -> str:
        message = one_line(record.getMessage())  # a viewer shows the message, not the JSON line
        entry: dict[str, Any] = {
            "severity": "DEBUG" if record.levelno < logging.INFO else record.levelname,
            "message": message,
            "time": _rfc3339(record.created),
            "logger": record.name,
            SOURCE: {"file": record.pathname, "line": record.lineno, "function": record.funcName},
        }
        stack = None
        if record.exc_info:
            stack = self.formatException(record.exc_info)
        elif record.exc_text:
            stack = record.exc_text
        if stack:  # Error Reporting reads the traceback from the message; stack_trace keeps it apart
            entry["message"] = f"{message}\n{stack}"
            entry["stack_trace"] = stack
        entry.update(_request_trace(self.project))
        return json.dumps(entry, default=str)


class ConsoleHandler(logging.StreamHandler):
    """Writes to the *current* `sys.stdout`: functions-framework swaps it per request to add the
    execution id (LOG_EXECUTION_ID), and test capture swaps it too."""

    def __init__(self) -> None:
        super().__init__(sys.stdout)

    @property
    def stream(self) -> Any:
        return sys.stdout

    @stream.setter
    def stream(self, value: Any) -> None:
        pass


def parse_level(spec: str) -> tuple[int, dict[str, int], list[str]]:
    """`info`, or a filter `warn,resonate.http=debug`: (root level, per-logger levels, bad parts)."""
    root, per, bad = logging.INFO, {}, []
    for part in (p.strip() for p in (spec or "info").split(",")):
        if not part:
            continue
        name, eq, word = part.rpartition("=") if "=" in part else ("", "", part)
        level = LEVELS.get(word.strip().lower())
        if level is None:
            bad.append(part)
        elif eq:
            per[name.strip().replace("::", ".")] = level
        else:
            root = level
    return root, per, bad


def setup_logging(level: str = "info", fmt: str = "text", warn: bool = True) -> None:
    """Install one console handler on the root logger (replacing console handlers that
    basicConfig or a framework put there; other handlers, e.g. test capture, stay). `warn`
    reports an unknown format or level word (off for a provisional setup done again later)."""
    root_level, per, bad = parse_level(level)
    handler = ConsoleHandler()
    handler.setFormatter(CloudFormatter() if fmt == "json" else TextFormatter())
    handler._resonate = True  # type: ignore[attr-defined]
    root = logging.getLogger()
    for h in list(root.handlers):  # plain StreamHandlers: basicConfig's, functions-framework's (LOG_EXECUTION_ID)
        if getattr(h, "_resonate", False) or type(h) is logging.StreamHandler:
            root.removeHandler(h)
    root.addHandler(handler)
    root.setLevel(root_level)
    for name, lg in list(logging.root.manager.loggerDict.items()):  # a dictConfig may have disabled ours
        if name.startswith("resonate") and isinstance(lg, logging.Logger):
            lg.disabled = False
    for name, lvl in per.items():
        logging.getLogger(name).setLevel(lvl)
    if warn and fmt not in ("text", "json"):
        logging.getLogger("resonate").warning("Unknown log format %s, using text", q(fmt))
    if warn and bad:
        logging.getLogger("resonate").warning("Invalid log level directive ignored directive=%s", q(",".join(bad)))
