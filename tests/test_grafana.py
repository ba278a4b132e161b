"""deploy/grafana/resonate.json queries only what the server exports: every metric name in every
panel's PromQL, and every label it groups or filters by, appears in the real `/metrics`
exposition of an in-process runtime after some traffic (docs/operations.md, Grafana dashboard)."""
from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from shared.config import load
from shared.http import create_app
from shared.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
DASHBOARD = ROOT / "deploy" / "grafana" / "resonate.json"
# labels Prometheus attaches at scrape time, and the histogram bucket label
SCRAPE_LABELS = {"job", "instance", "le"}
PROMQL_WORDS = {"sum", "max", "min", "avg", "count", "rate", "irate", "increase", "by", "without",
                "histogram_quantile", "clamp_min", "clamp_max", "label_values", "on", "ignoring"}


@pytest.fixture(scope="module")
def exported() -> Iterator[dict[str, set[str]]]:
    """Sample name -> label names, scraped from a memory-store runtime after a few requests."""
    cfg = load({"storage.type": "memory", "debug": True}, env={})
    rt = Runtime(cfg)
    app = create_app(rt.service, rt.hub)
    rt.start()
    try:
        with app.test_client() as c:
            pid = f"grafana-{uuid.uuid4().hex}"
            for kind, data in (("promise.create", {"id": pid, "timeoutAt": 2 ** 50, "param": {}, "tags": {}}),
                               ("promise.get", {"id": pid}), ("promise.get", {"id": "missing"})):
                body = {"kind": kind, "head": {"corrId": "1", "version": "2026-04-01"}, "data": data}
                assert c.post("/", json=body).status_code in (200, 404)
        assert rt.metrics is not None
        text = rt.metrics.exposition().decode()
    finally:
        rt.stop(5)
    out: dict[str, set[str]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    yield out


def _exprs(node: Any) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL) for every target of every panel, and the template variables' queries."""
    for panel in node.get("panels", []):
        for t in panel.get("targets", []):
            yield panel["title"], t["expr"]
        yield from _exprs(panel)
    for var in node.get("templating", {}).get("list", []):
        q = var.get("query")
        if isinstance(q, dict):
            yield f"variable {var['name']}", q["query"]


def _problems(expr: str, exported: dict[str, set[str]]) -> list[str]:
    out = []
    names = [n for n in re.findall(r"\b([a-z_:][a-z0-9_:]*)\b(?=\s*[{\[)]|\s*,|\s*$)", expr)
             if n.startswith("resonate_")]
    if not names:
        out.append("queries no resonate_ metric")
    labels_of = set().union(*(exported.get(n, set()) for n in names)) if names else set()
    out += [f"metric {n} is not exported" for n in names if n not in exported]
    used = set(re.findall(r"\b(?:by|without)\s*\(([^)]*)\)", expr))
    used_labels = {lab.strip() for group in used for lab in group.split(",") if lab.strip()}
    used_labels |= set(re.findall(r"[{,]\s*([a-z_]+)\s*=~?", expr))
    out += [f"label {lab} is on none of {names}" for lab in sorted(used_labels - SCRAPE_LABELS - PROMQL_WORDS)
            if lab not in labels_of]
    return out


def test_dashboard_is_valid_json_with_panels() -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dash["panels"] and all(p.get("targets") for p in dash["panels"])


def test_every_queried_metric_and_label_is_exported(exported: dict[str, set[str]]) -> None:
    dash = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    problems = [f"{title}: {p} in {expr}" for title, expr in _exprs(dash) for p in _problems(expr, exported)]
    assert not problems, "\n".join(problems)


def test_the_check_fails_on_a_metric_or_label_the_server_does_not_export(exported: dict[str, set[str]]) -> None:
    assert _problems('sum(rate(resonate_request_totals[5m]))', exported) == [
        "metric resonate_request_totals is not exported"]
    assert _problems('sum by (transport) (rate(resonate_request_total[5m]))', exported) == [
        "label transport is on none of ['resonate_request_total']"]
    assert _problems('histogram_quantile(0.99, sum by (le, kind) (rate(resonate_request_duration_seconds_bucket'
                     '{job=~"$job"}[5m])))', exported) == []
