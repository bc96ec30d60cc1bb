"""Unfolding (matricisation) and folding of dense tensors."""

from __future__ import annotations

from typing import Any

from .. import _backend as B
from .._validation import check_array, check_int, check_shape

__all__ = ["unfold", "fold"]


def _check_mode(mode: Any, ndim: int) -> int:
    m = check_int(mode, "mode")
    if not -ndim <= m < ndim:
        raise ValueError(f"mode={m} is out of range for a tensor with {ndim} modes")
    return m % ndim


def unfold(X: Any, /, mode: int) -> Any:
    """Mode-``mode`` unfolding of ``X`` as an ``(I_mode, prod(other dims))`` matrix.

    Ordering: the remaining modes keep their order and are flattened in
    C (row-major) order, the last one varying fastest. This is TensorLy's
    convention, so ``unfold(X, n) == tensorly.unfold(X, n)`` and
    ``unfold(cp.to_dense(), n) == A_n @ khatri_rao(others).T``.
    Mode 0 is a view; other modes copy (that is inherent to the layout;
    `tensorfact.mttkrp` never unfolds).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(24.0).reshape(2, 3, 4)
    >>> unfold(X, 1).shape
    (3, 8)
    """
    check_array(X, "X", min_ndim=1)
    xp = B.namespace(X)
    n = _check_mode(mode, X.ndim)
    moved = xp.moveaxis(X, n, 0)
    return xp.reshape(moved, (X.shape[n], -1))


def fold(M: Any, /, mode: int, shape: tuple[int, ...]) -> Any:
    """Inverse of `unfold`: ``fold(unfold(X, n), n, X.shape) == X``.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(24.0).reshape(2, 3, 4)
    >>> bool((fold(unfold(X, 2), 2, X.shape) == X).all())
    True
    """
    check_array(M, "M", ndim=2)
    xp = B.namespace(M)
    shape = check_shape(shape, "shape")
    n = _check_mode(mode, len(shape))
    if M.ndim != 2 or M.shape[0] != shape[n] or M.shape[0] * M.shape[1] != _prod(shape):
        raise ValueError(
            f"M of shape {tuple(M.shape)} is not a mode-{n} unfolding of a tensor of shape {shape}"
        )
    full = (shape[n],) + shape[:n] + shape[n + 1:]
    return xp.moveaxis(xp.reshape(M, full), 0, n)


def _prod(shape: tuple[int, ...]) -> int:
    p = 1
    for s in shape:
        p *= s
    return p
