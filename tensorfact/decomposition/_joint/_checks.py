"""Validation of the matrix stacks and orthogonal matrices of the joint functions."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ... import _backend as B
from ..._validation import check_array

__all__ = ["check_orthogonal", "check_stack", "power_of_two_exponent"]


def check_stack(matrices: Any, *, name: str = "matrices",
                finite: bool = True) -> tuple[Any, Any, np.ndarray]:
    """Validate an (N, d, d) stack; return (xp, the float array, host float64 copy).

    ``finite=False`` skips the NaN/Inf test (the solver's iteration monitor
    then raises ``FloatingPointError`` on the non-finite loss).
    """
    if isinstance(matrices, (list, tuple)):
        if len(matrices) == 0:
            raise ValueError(f"{name} is empty (N=0); pass at least one d x d matrix")
        for i, m in enumerate(matrices):
            check_array(m, f"{name}[{i}]")
        xp = B.namespace(*matrices, name=name)
        try:
            matrices = xp.stack([xp.asarray(m) for m in matrices])
        except Exception as exc:
            raise ValueError(f"{name}: the matrices must all have the same shape ({exc})") from exc
    if not B.is_array(matrices) or not hasattr(matrices, "shape"):
        raise TypeError(
            f"{name} must be an array of shape (N, d, d), got {type(matrices).__name__}"
        )
    check_array(matrices, name)
    xp = B.namespace(matrices, name=name)
    shape = tuple(int(s) for s in matrices.shape)
    if len(shape) == 2:
        raise ValueError(
            f"{name} must have shape (N, d, d); got a single matrix of shape {shape} "
            "(use matrices[None] for N=1)"
        )
    if len(shape) != 3:
        raise ValueError(f"{name} must have shape (N, d, d), got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} is empty (N=0); pass at least one d x d matrix")
    if shape[1] != shape[2]:
        raise ValueError(f"{name} must hold square matrices, got shape {shape}")
    if shape[1] == 0:
        raise ValueError(f"{name} holds 0 x 0 matrices")
    X = B.as_float_array(matrices, xp, name=name)
    host = np.array(B.to_numpy(X), dtype=np.float64)  # documented host copy (small)
    if finite and not np.all(np.isfinite(host)):
        raise ValueError(f"{name} contains NaN or Inf values")
    return xp, X, host


def check_orthogonal(U: Any, d: int, *, name: str = "U") -> np.ndarray:
    """Validate a (d, d) orthogonal matrix; return a host float64 copy."""
    if not B.is_array(U) or not hasattr(U, "shape"):
        raise TypeError(f"{name} must be a (d, d) array, got {type(U).__name__}")
    check_array(U, name)  # real numbers: not complex, masked, object or string
    Un = np.array(B.to_numpy(U), dtype=np.float64)
    if Un.shape != (d, d):
        raise ValueError(f"{name} must have shape ({d}, {d}) to match the matrices, got {Un.shape}")
    if not np.all(np.isfinite(Un)):
        raise ValueError(f"{name} contains NaN or Inf values")
    dev = np.linalg.norm(Un.T @ Un - np.eye(d))
    if dev > 1e-6:
        raise ValueError(f"{name} must be orthogonal (||U^T U - I||_F = {dev:.2e})")
    return Un



def power_of_two_exponent(A: np.ndarray) -> int:
    """``e`` with ``max |A| / 2^e`` in ``[1/2, 1)``; 0 for all-zero or non-finite ``A``.

    Dividing by ``2^e`` is exact (barring subnormal entries), so a computation
    on ``A / 2^e`` gives the same bits whatever the units of ``A``.
    """
    if A.size == 0:
        return 0
    top = float(np.max(np.abs(A)))
    if not (top > 0 and math.isfinite(top)):
        return 0
    return math.frexp(top)[1]
