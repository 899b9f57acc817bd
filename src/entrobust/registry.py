"""A tiny name → object registry, one per extension point (datasets, models, attacks, ...)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Generic, TypeVar, overload

from entrobust.errors import EntrobustError, UnknownNameError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to objects; a duplicate name raises, an unknown name lists the valid ones.

    >>> models: Registry[type] = Registry("model")
    >>> @models.register("tiny")
    ... class Tiny: ...
    >>> models.get("tiny") is Tiny
    True
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._help: dict[str, str] = {}

    @overload
    def register(self, name: str, obj: None = None, *, help: str = "") -> Callable[[T], T]: ...

    @overload
    def register(self, name: str, obj: T, *, help: str = "") -> T: ...

    def register(self, name: str, obj: T | None = None, *, help: str = "") -> T | Callable[[T], T]:
        """Register ``obj`` under ``name``; without ``obj`` act as a decorator."""

        def add(item: T) -> T:
            if name in self._items:
                raise EntrobustError(f"duplicate {self.kind} name {name!r}")
            self._items[name] = item
            doc = help or (getattr(item, "__doc__", None) or "").strip().split("\n")[0]
            self._help[name] = doc
            return item

        return add if obj is None else add(obj)

    def get(self, name: str) -> T:
        """Return the object registered as ``name``; raise :class:`UnknownNameError` otherwise."""
        try:
            return self._items[name]
        except KeyError:
            valid = ", ".join(sorted(self._items)) or "(none)"
            raise UnknownNameError(f"unknown {self.kind} {name!r}; valid: {valid}") from None

    def help(self, name: str) -> str:
        """One-line description of ``name``."""
        self.get(name)
        return self._help[name]

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)
