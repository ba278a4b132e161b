"""What a request touches, read off its decoded fields: every id it reads or writes and every
delivery address it stores. Authorization (prefix tokens, poll groups; `shared.auth`) and the
outbound destination policy read these; each kind's entry in the registry (`shared.kinds`)
names its function here, and the cross-tenant test matrix is generated from that registry.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from shared.records import BRANCH, ORIGIN, PARENT, TARGET
from shared.requests import (
    CreateData,
    PromiseCreate,
    PromiseSettle,
    RegisterCallback,
    RegisterListener,
    ScheduleCreate,
    TaskCreate,
    TaskFence,
    TaskHeartbeat,
    TaskSuspend,
)
from shared.requests_locks import LockAcquire, LockRelease
from shared.requests_rest import (
    RestCallback,
    RestScheduleCreate,
    RestSubscribe,
    RestTaskClaim,
    RestTaskComplete,
    RestTaskDrop,
)

ID_TAGS = (ORIGIN, PARENT, BRANCH)  # tags whose value names another promise (a workflow's root, parent, branch)
TIMESTAMP = "{{.timestamp}}"


@dataclass(frozen=True, slots=True)
class Touched:
    """Every id a request reads or writes and every delivery address it stores.

    ids: promise, task and schedule ids, the id-valued tags a created promise carries, and the
      literal head of a schedule's promise-id template (every expansion starts with it).
    addresses: `resonate:target` values and listener addresses the request registers.
    unscoped: the request reads or changes state across every tenant (searches, debug).
    """

    ids: tuple[str, ...] = ()
    addresses: tuple[str, ...] = ()
    unscoped: bool = False


UNSCOPED = Touched(unscoped=True)


def _created(c: CreateData) -> tuple[list[str], list[str]]:
    """(ids, addresses) of a promise a request creates: its id, its id-valued tags, its target."""
    ids = [c.id, *(c.tags[t] for t in ID_TAGS if c.tags.get(t))]
    return ids, [c.tags[TARGET]] if TARGET in c.tags else []


def template_head(template: str, schedule_id: str) -> str:
    """The part of a schedule's promise-id template every firing's id starts with."""
    return template.replace("{{.id}}", schedule_id).split(TIMESTAMP, 1)[0]


def by_id(r: Any) -> Touched:
    """Kinds that name one record by `id`."""
    return Touched((r.id,))


def prefixed(r: Any) -> Touched:
    """The console's lists: every id under `prefix` (a prefix token must name its own, or a longer one)."""
    return Touched((r.prefix,))


def everything(r: Any) -> Touched:
    """Searches and debug: no id to check, every tenant's records."""
    return UNSCOPED


def created(r: PromiseCreate | TaskCreate) -> Touched:
    ids, addrs = _created(r.create)
    return Touched(tuple(ids), tuple(addrs))


def settled(r: PromiseSettle) -> Touched:
    return Touched((r.settle.id,))


def callback(r: RegisterCallback) -> Touched:
    return Touched((r.awaited, r.awaiter))


def listener(r: RegisterListener) -> Touched:
    return Touched((r.awaited,), (r.address,))


def suspend(r: TaskSuspend) -> Touched:
    return Touched((r.id, *r.awaited))


def fence(r: TaskFence) -> Touched:
    if isinstance(r.op, CreateData):
        ids, addrs = _created(r.op)
        return Touched((r.id, *ids), tuple(addrs))
    return Touched((r.id, r.op.id))


def heartbeat(r: TaskHeartbeat) -> Touched:
    # the engine skips empty ids; an empty list renews only the caller's scope (engine: Ctx.scope)
    return Touched(tuple(id for id, _ in r.tasks if id))


def schedule(r: ScheduleCreate) -> Touched:
    # the template's origin/parent/branch tags are replaced by the firing's own id (FIRE_SCHEDULE)
    return Touched((r.id, template_head(r.promise_id, r.id)), (r.promise_tags[TARGET],))


# the REST API's kinds (shared/requests_rest.py) ------------------------------------------------


def rest_callback(r: RestCallback) -> Touched:
    return Touched((r.promise, r.root), (r.address,))


def rest_subscribe(r: RestSubscribe) -> Touched:
    return Touched((r.promise,), (r.address,))


def rest_task(r: RestTaskClaim | RestTaskComplete | RestTaskDrop) -> Touched:
    """A REST task id names its root promise (and a resume's leaf); an id this server never
    handed out is checked as it stands (no prefix covers it)."""
    from shared.legacy.ids import parse

    ref = parse(r.id)
    if ref is None:
        return Touched((r.id,))
    return Touched((ref.root,) if ref.leaf is None else (ref.root, ref.leaf))


def rest_schedule(r: RestScheduleCreate) -> Touched:
    """The schedule, the head of its promise-id template, the ids its promises' tags name (a REST
    firing keeps them) and their target."""
    tags = r.promise_tags
    ids = (r.id, template_head(r.promise_id, r.id), *(tags[t] for t in ID_TAGS if tags.get(t)))
    return Touched(ids, (tags[TARGET],) if TARGET in tags else ())


def rest_lock(r: LockAcquire | LockRelease) -> Touched:
    """A lock touches its resource id (the prefix a token is confined to covers it or not)."""
    return Touched((r.resource,))


def nothing(r: Any) -> Touched:
    """Kinds confined to the caller's scope by the engine itself (a process's heartbeat of its
    tasks or its locks: only those within the caller's prefix are extended)."""
    return Touched()


def within(scope: str | None, id: str) -> bool:
    """An id a caller of this scope may see (None: unrestricted). Prefixes match as given."""
    return scope is None or id.startswith(scope)
