"""String-keyed registries: labelers, arms, loss policies (and later evaluators, world generators)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from srp_megatron.errors import SRPError

T = TypeVar("T")


class Registry(Generic[T]):
    """Maps names to classes or factories; an unknown name is an error listing the known ones."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator that registers ``obj`` under ``name``."""

        def deco(obj: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} '{name}' is registered twice")
            self._entries[name] = obj
            return obj

        return deco

    def get(self, name: str) -> T:
        """The entry registered under ``name``."""
        try:
            return self._entries[name]
        except KeyError:
            raise SRPError(f"unknown {self.kind} '{name}' (known: {', '.join(sorted(self._entries))})") from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        return name in self._entries
