"""One small registry per component kind.

A component registers under a unique name with a pydantic model of its parameters
(``extra="forbid"``), so the config section that names it is validated by the component
itself: ``attack.name = "alie"`` makes ``attack.z`` legal and ``attack.boost`` an error.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, ConfigDict

T = TypeVar("T")


class NoParams(BaseModel):
    """Parameter model of a component that takes none."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class Params(BaseModel):
    """Base class for component parameter models: unknown keys are refused, types are
    strict (no ``true`` for an int) and floats finite unless a field allows inf."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)


@dataclass(frozen=True)
class Entry(Generic[T]):
    """A registered component: its name, the object, its parameter model, metadata."""

    name: str
    obj: T
    params: type[BaseModel]
    meta: dict[str, Any] = field(default_factory=dict)


class Registry(Generic[T]):
    """Name -> component for one kind (datasets, models, attacks, aggregators, ...)."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, Entry[T]] = {}

    def register(
        self, name: str, params: type[BaseModel] = NoParams, **meta: Any
    ) -> Callable[[T], T]:
        """Decorator: register ``obj`` under ``name``; a duplicate name is an error."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = Entry(name, obj, params, dict(meta))
            return obj

        return deco

    def get(self, name: str) -> Entry[T]:
        try:
            return self._entries[name]
        except KeyError:
            raise KeyError(
                f"unknown {self.kind} {name!r}; choose one of {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        return sorted(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self):
        return iter(self._entries.values())
