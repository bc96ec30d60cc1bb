"""Immutability shared by the factorised-tensor classes."""

from __future__ import annotations

from typing import Any

__all__ = ["Frozen"]


class Frozen:
    """Base of slotted, immutable classes: fields are set once, by `_set_fields`."""

    __slots__ = ()

    def _set_fields(self, **fields: Any) -> None:
        for name, value in fields.items():
            object.__setattr__(self, name, value)

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")

    def __delattr__(self, name: str) -> None:
        raise AttributeError(f"{type(self).__name__} is immutable")
