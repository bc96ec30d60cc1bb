"""Immutability shared by the factorised-tensor classes."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

__all__ = ["FactorPair", "Frozen"]


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


class FactorPair(Frozen):
    """Base of the factorised tensors that unpack as ``(head, factors)`` like TensorLy's.

    The head is the CP weights or the Tucker core (`_head`); the factor
    matrices, one per mode with ``I_n`` rows, are in ``_factors``.
    """

    __slots__ = ()
    _factors: tuple[Any, ...]

    def _head(self) -> Any:
        raise NotImplementedError

    @property
    def factors(self) -> tuple[Any, ...]:
        """Tuple of the N factor matrices, ``factors[n]`` with ``I_n`` rows."""
        return self._factors

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the represented tensor."""
        return tuple(int(A.shape[0]) for A in self._factors)

    @property
    def ndim(self) -> int:
        """Number of modes."""
        return len(self._factors)

    @property
    def dtype(self) -> Any:
        """Floating dtype of the arrays (one for all, checked on construction)."""
        return self._factors[0].dtype

    def __iter__(self) -> Iterator[Any]:
        yield self._head()
        yield list(self._factors)

    def __len__(self) -> int:
        return 2

    def __getitem__(self, i: int) -> Any:
        return (self._head(), list(self._factors))[i]
