"""Frozen records: what `@dataclass(frozen=True)` gave nsnet's plain data, without its start-up cost.

dataclasses writes every class's methods as source text and compiles them when the class is
defined, and imports inspect to do so: for nsnet's ~40 classes that was a quarter of a CNI ADD's
95 ms (python -X importtime, cProfile). A container runtime starts the plugin afresh for every
container, so here the methods are generic and shared, and defining a class costs one dict.

A record takes its fields, in order, from its class annotations (a base record's first) and its
defaults from the class attributes; it compares, hashes and prints like a frozen dataclass, and
`replace` copies one with some fields changed.
"""

from __future__ import annotations

TYPE_CHECKING = False  # typing's import is a tenth of a CNI VERSION
if TYPE_CHECKING:
    from typing import Any, TypeVar

    T = TypeVar("T")

__all__ = ["record", "replace", "values"]

_REQUIRED = object()  # a field without a default


def record(cls: type[T]) -> type[T]:
    fields: dict[str, Any] = {}
    for base in reversed(cls.__mro__[1:]):
        fields.update(getattr(base, "__record_fields__", {}))
    for name in cls.__dict__.get("__annotations__", {}):
        fields[name] = cls.__dict__.get(name, _REQUIRED)
    required_after_default = [n for i, n in enumerate(fields) if fields[n] is _REQUIRED
                              and any(fields[m] is not _REQUIRED for m in list(fields)[:i])]
    if required_after_default:
        raise TypeError(f"{cls.__name__}: field {required_after_default[0]!r} without a default follows one with")
    cls.__record_fields__ = fields
    cls.__match_args__ = tuple(fields)
    cls.__init__ = _init
    cls.__setattr__ = cls.__delattr__ = _frozen
    cls.__eq__, cls.__hash__, cls.__repr__ = _eq, _hash, _repr
    return cls


def replace(item: T, **changes: Any) -> T:
    """A copy of the record `item` with the given fields changed."""
    unknown = set(changes) - set(item.__record_fields__)
    if unknown:
        raise TypeError(f"{type(item).__name__} has no field {sorted(unknown)[0]!r}")
    return type(item)(**{**{n: getattr(item, n) for n in item.__record_fields__}, **changes})


def values(item: Any) -> dict[str, Any]:
    """The record's fields and their values, in order."""
    return {n: getattr(item, n) for n in item.__record_fields__}


def _init(self: Any, *args: Any, **kwargs: Any) -> None:
    fields = self.__record_fields__
    if len(args) > len(fields):
        raise TypeError(f"{type(self).__name__}() takes {len(fields)} arguments, {len(args)} given")
    given = dict(zip(fields, args))
    for name, value in kwargs.items():
        if name not in fields or name in given:
            raise TypeError(f"{type(self).__name__}() got {'an unexpected' if name not in fields else 'a repeated'}"
                            f" argument {name!r}")
        given[name] = value
    for name, default in fields.items():
        value = given.get(name, default)
        if value is _REQUIRED:
            raise TypeError(f"{type(self).__name__}() is missing the argument {name!r}")
        object.__setattr__(self, name, value)


def _frozen(self: Any, name: str, *value: Any) -> None:
    raise AttributeError(f"cannot change field {name!r}: {type(self).__name__} is frozen")


def _key(self: Any) -> tuple[Any, ...]:
    return tuple(getattr(self, n) for n in self.__record_fields__)


def _eq(self: Any, other: object) -> bool:
    if other.__class__ is not self.__class__:
        return NotImplemented
    return _key(self) == _key(other)


def _hash(self: Any) -> int:
    return hash(_key(self))


def _repr(self: Any) -> str:
    return f"{type(self).__qualname__}({', '.join(f'{n}={getattr(self, n)!r}' for n in self.__record_fields__)})"
