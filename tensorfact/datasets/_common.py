"""What the planted-problem generators share: relative noise and the output namespace."""

from __future__ import annotations

from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B

__all__ = ["add_relative_noise", "output_converter"]


def add_relative_noise(gen: np.random.Generator, x: np.ndarray, noise: float) -> np.ndarray:
    """``x + noise * ||x|| / ||E|| * E`` for standard normal ``E`` of ``x``'s shape.

    The added noise has Frobenius norm exactly ``noise * ||x||``; with
    ``noise = 0`` nothing is drawn and ``x`` is returned.
    """
    if noise <= 0:
        return x
    E = gen.standard_normal(x.shape)
    return x + noise * np.linalg.norm(x) / np.linalg.norm(E) * E


def output_converter(like: Any, dtype: Any) -> tuple[ModuleType, Callable[..., Any]]:
    """The namespace of ``like`` (NumPy without it) and a function moving NumPy arrays there.

    ``conv(a)`` puts ``a`` on ``like``'s device in ``dtype`` (default: ``like``'s
    dtype, or float64 without ``like``); ``conv(a, other_dtype)`` overrides it.
    """
    if like is not None:
        xp = B.namespace(like)
        dt = dtype if dtype is not None else like.dtype
    else:
        xp = B.namespace(np.empty(0))
        dt = dtype if dtype is not None else np.float64

    def conv(a: np.ndarray, dtype: Any = dt) -> Any:
        return B.from_numpy(xp, a, like=like, dtype=dtype)

    return xp, conv
