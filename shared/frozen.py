"""`@frozen`: an immutable record class, typed like a frozen dataclass, built without generating code.

On Python 3.12 `@dataclass(frozen=True, slots=True)` compiles four to six methods per class with
`exec` (about 1 ms a class): the 30-odd request types of `shared.requests` cost a cold start
(`make bench`, figure (f)) some 30 ms before the first request is answered. `@frozen` gives
the same behaviour that code relies on (a positional/keyword `__init__` over the annotated fields
in order, `__slots__`, assignment refused with `FrozenInstanceError`, `__eq__`, `__hash__`,
`__repr__`, `__match_args__`) from shared functions, in microseconds per class; the type checker
sees a frozen dataclass (`dataclass_transform`). Fields have no defaults; `ClassVar` annotations
are class attributes, not fields.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import FrozenInstanceError
from typing import Any, dataclass_transform

_set = object.__setattr__


def _is_classvar(annotation: Any) -> bool:
    text = annotation if isinstance(annotation, str) else repr(annotation)
    return text.startswith(("ClassVar", "typing.ClassVar"))


def _fields_of(cls: type) -> tuple[str, ...]:
    """The fields of `cls`: its bases' `@frozen` fields, then its own annotated names in order."""
    inherited: tuple[str, ...] = ()
    for base in reversed(cls.__mro__[1:]):
        inherited += tuple(f for f in getattr(base, "__record_fields__", ()) if f not in inherited)
    own = [name for name, ann in inspect.get_annotations(cls).items()
           if not _is_classvar(ann) and name not in inherited]
    for name in own:
        if name in cls.__dict__:
            raise TypeError(f"@frozen {cls.__name__}.{name}: fields take no default")
    return inherited + tuple(own)


def _make_init(cls_name: str, fields: tuple[str, ...]) -> Callable[..., None]:
    count = len(fields)
    index = {name: i for i, name in enumerate(fields)}

    def bind(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
        if len(args) > count:
            raise TypeError(f"{cls_name}() takes {count} arguments but {len(args)} were given")
        values: list[Any] = [*args, *([_MISSING] * (count - len(args)))]
        for name, value in kwargs.items():
            i = index.get(name)
            if i is None:
                raise TypeError(f"{cls_name}() got an unexpected keyword argument {name!r}")
            if values[i] is not _MISSING:
                raise TypeError(f"{cls_name}() got multiple values for argument {name!r}")
            values[i] = value
        missing = [fields[i] for i, v in enumerate(values) if v is _MISSING]
        if missing:
            raise TypeError(f"{cls_name}() missing required arguments: {', '.join(map(repr, missing))}")
        return tuple(values)

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        if kwargs or len(args) != count:
            args = bind(args, kwargs)
        for name, value in zip(fields, args, strict=True):
            _set(self, name, value)

    return __init__


_MISSING = object()


def _values(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, name) for name in self.__record_fields__)


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _values(self) == _values(other)


def _hash(self: Any) -> int:
    return hash(_values(self))


def _repr(self: Any) -> str:
    inner = ", ".join(f"{name}={getattr(self, name)!r}" for name in self.__record_fields__)
    return f"{self.__class__.__qualname__}({inner})"


def _refuse_set(self: Any, name: str, value: Any) -> None:
    raise FrozenInstanceError(f"cannot assign to field {name!r}")


def _refuse_del(self: Any, name: str) -> None:
    raise FrozenInstanceError(f"cannot delete field {name!r}")


@dataclass_transform(frozen_default=True)
def frozen[T: type](cls: T) -> T:
    """The record class of `cls` (a new class with `__slots__` for its fields)."""
    fields = _fields_of(cls)
    own = tuple(f for f in fields if f not in getattr(cls, "__record_fields__", ()))
    ns = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
    ns.update(__slots__=own, __record_fields__=fields, __match_args__=fields,
              __init__=_make_init(cls.__name__, fields), __eq__=_eq, __hash__=_hash, __repr__=_repr,
              __setattr__=_refuse_set, __delattr__=_refuse_del)
    built = type(cls)(cls.__name__, cls.__bases__, ns)
    built.__qualname__ = cls.__qualname__
    return built
