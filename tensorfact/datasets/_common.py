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
        if not B.is_array(like):
            raise TypeError(f"like must be an array, got {type(like).__name__}")
        xp = B.namespace(like)
        dt = dtype if dtype is not None else like.dtype
    else:
        xp = B.namespace(np.empty(0))
        dt = dtype if dtype is not None else np.float64
    dt = _floating_dtype(xp, dt, like, explicit=dtype is not None)

    def conv(a: np.ndarray, dtype: Any = dt) -> Any:
        return B.from_numpy(xp, a, like=like, dtype=dtype)

    return xp, conv


def _floating_dtype(xp: ModuleType, dt: Any, like: Any, *, explicit: bool) -> Any:
    """``dt`` as a real floating dtype of ``xp`` (``like``'s own integer dtype: the default)."""
    name = "dtype" if explicit else "like"
    try:
        probe = xp.empty((0,), dtype=dt, device=B.device(like) if like is not None else None)
    except Exception:  # the namespace's own words for an unknown dtype
        raise TypeError(f"{name}: {dt!r} is not a dtype of {xp.__name__}") from None
    if xp.isdtype(probe.dtype, "real floating"):
        return probe.dtype
    if not explicit and xp.isdtype(probe.dtype, ("integral", "bool")):
        return B.default_float(xp, B.device(like))
    raise TypeError(f"{name} must give a real floating dtype, got {probe.dtype}")
