"""The documentation: docs/configuration.md's key table is current with the configuration schema,
and every relative link in the repository's Markdown points at a file (and heading) that exists."""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import schema
from shared.config_values import env_name

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DOC = ROOT / "docs" / "configuration.md"


@pytest.mark.process  # local.config_doc imports local.cli, which monkey-patches with gevent: its own process
def test_configuration_doc_is_generated_and_current() -> None:
    r = subprocess.run([sys.executable, "-m", "local.config_doc", "--check"], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr + "\nrun `python -m local.config_doc --write` (make docs)"


def test_every_key_has_a_row_with_its_environment_name() -> None:
    """The quick form of the check above, in process (make test-fast): no key is missing."""
    rows = {m.group(1): m.group(2) for m in re.finditer(r"^\| `([a-z_.]+)` \| `(RESONATE_[A-Z_]+)` \|",
                                                        CONFIG_DOC.read_text(encoding="utf-8"), re.M)}
    assert set(rows) == set(schema().leaves)
    assert all(rows[k] == env_name(k) for k in rows)


def _markdown_files() -> list[Path]:
    skip = {".git", ".venv", "node_modules", ".pytest_cache", ".mypy_cache", ".ruff_cache"}
    return sorted(p for p in ROOT.rglob("*.md") if not skip & set(p.relative_to(ROOT).parts))


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as dashes."""
    text = re.sub(r"[`*]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    out: set[str] = set()
    seen: dict[str, int] = {}
    in_code = False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            in_code = not in_code
        elif not in_code and (m := re.match(r"#{1,6} (.+)", line)):
            s = slug(m.group(1))
            n = seen.get(s, 0)
            seen[s] = n + 1
            out.add(s if n == 0 else f"{s}-{n}")
    return out


LINK = re.compile(r"\]\(([^)\s]+)\)")


def _pending(dest: Path) -> bool:
    """examples/ arrives from its own branch; until it is merged, links into it are not checked."""
    return not (ROOT / "examples").exists() and dest.is_relative_to(ROOT / "examples")


def test_relative_links_resolve() -> None:
    broken = []
    for md in _markdown_files():
        text = re.sub(r"```.*?```", "", md.read_text(encoding="utf-8"), flags=re.S)
        for target in LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            file, _, anchor = target.partition("#")
            dest = (md.parent / file).resolve() if file else md
            if not dest.exists() and not _pending(dest):
                broken.append(f"{md.relative_to(ROOT)}: {target} (no such file)")
            elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
                broken.append(f"{md.relative_to(ROOT)}: {target} (no such heading)")
    assert not broken, "\n".join(broken)


def test_no_readme_anchor_links_in_code() -> None:
    """Code comments point into docs/, never at README anchors (the README is a short front page)."""
    hits = [f"{p.relative_to(ROOT)}: {m}" for p in [*ROOT.glob("*/**/*.py"), *ROOT.glob("*.py")]
            if ".venv" not in p.parts and "node_modules" not in p.parts
            for m in re.findall(r"README\.md#[\w-]+", p.read_text(encoding="utf-8"))]
    assert not hits, hits
