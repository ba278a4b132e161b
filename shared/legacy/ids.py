"""Task ids of the REST API. Its clients echo them back (claim, complete, drop) and never parse
them: `__invoke:<root>` for a run of a promise's function, `__resume:<root>:<leaf>` for a run
resumed by the settlement of `leaf`. Both name the engine task of `root` (one task per root
promise); `%` and `:` inside ids are percent-encoded so that any id round-trips."""
from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote

INVOKE, RESUME = "__invoke:", "__resume:"


def _enc(id: str) -> str:
    return id.replace("%", "%25").replace(":", "%3A")


def invoke_id(root: str) -> str:
    return INVOKE + _enc(root)


def resume_id(root: str, leaf: str) -> str:
    return f"{RESUME}{_enc(root)}:{_enc(leaf)}"


@dataclass(frozen=True, slots=True)
class TaskRef:
    root: str
    leaf: str | None  # set for a resume


def parse(task_id: str) -> TaskRef | None:
    """The root (and leaf) a REST task id names; None for an id this server never hands out."""
    if task_id.startswith(INVOKE):
        rest = task_id[len(INVOKE):]
        return TaskRef(unquote(rest), None) if rest and ":" not in rest else None
    if task_id.startswith(RESUME):
        parts = task_id[len(RESUME):].split(":")
        if len(parts) == 2 and all(parts):
            return TaskRef(unquote(parts[0]), unquote(parts[1]))
    return None
