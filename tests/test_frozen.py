"""`shared.frozen.frozen`: the request types behave as frozen, slotted dataclasses would."""
from __future__ import annotations

from dataclasses import FrozenInstanceError
from typing import ClassVar

import pytest

from shared import requests as rq
from shared import requests_console as rc
from shared import requests_locks as rl
from shared import requests_outbox as ro
from shared import requests_rest as rr
from shared.frozen import frozen
from shared.kinds import KINDS


class Base:
    __slots__ = ()
    kind: ClassVar[str]


@frozen
class Pair(Base):
    kind: ClassVar[str] = "pair"
    a: str
    b: int


@frozen
class Triple(Pair):
    c: tuple[int, ...]


def test_init_positional_and_keyword() -> None:
    assert Pair("x", 1) == Pair(a="x", b=1) == Pair("x", b=1)
    assert (Pair("x", 1).a, Pair("x", 1).b) == ("x", 1)
    assert Pair.kind == "pair" and Pair.__match_args__ == ("a", "b")


@pytest.mark.parametrize("args,kwargs,message", [
    (("x",), {}, "missing required arguments: 'b'"),
    (("x", 1, 2), {}, "takes 2 arguments but 3 were given"),
    (("x",), {"a": "y", "b": 1}, "multiple values for argument 'a'"),
    ((), {"a": "x", "b": 1, "kind": "k"}, "unexpected keyword argument 'kind'"),
])
def test_bad_arguments_are_type_errors(args, kwargs, message) -> None:
    with pytest.raises(TypeError, match=message):
        Pair(*args, **kwargs)


def test_frozen_slotted_equal_hashable() -> None:
    p = Pair("x", 1)
    with pytest.raises(FrozenInstanceError):
        p.a = "y"  # type: ignore[misc]
    with pytest.raises(FrozenInstanceError):
        del p.a  # type: ignore[misc]
    assert not hasattr(p, "__dict__")
    assert p != Pair("x", 2) and p != ("x", 1)
    assert hash(p) == hash(Pair("x", 1)) and len({p, Pair("x", 1)}) == 1
    assert repr(p) == "Pair(a='x', b=1)"


def test_inherited_fields_come_first() -> None:
    t = Triple("x", 1, (2, 3))
    assert (t.a, t.b, t.c) == ("x", 1, (2, 3)) and t != Pair("x", 1)
    assert repr(t) == "Triple(a='x', b=1, c=(2, 3))" and Triple.kind == "pair"


def test_a_default_is_refused() -> None:
    with pytest.raises(TypeError, match="take no default"):
        @frozen
        class WithDefault:
            a: int = 0


def test_every_request_type_is_a_frozen_record() -> None:
    classes = [c for module in (rq, rr, rl, ro, rc) for c in vars(module).values()]
    for entry in KINDS.values():
        cls = next(c for c in classes if isinstance(c, type) and getattr(c, "kind", None) == entry.name
                   and issubclass(c, rq.Request))
        assert cls.__slots__ == cls.__record_fields__ and "__dict__" not in dir(cls), cls  # type: ignore[attr-defined]
        assert cls.__setattr__ is not object.__setattr__, cls
