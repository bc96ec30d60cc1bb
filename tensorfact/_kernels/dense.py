"""Gathering sampled fibers of a dense tensor: a Numba kernel and its array-API twin.

A mode-``n`` fiber of a C-ordered tensor viewed as ``(L, I_n, Rt)`` is the
strided vector ``X3[l, :, t]``. Reading ``s`` sampled fibers one after the
other touches ``s I_n`` scattered cache lines in an order the hardware cannot
predict. The kernel sorts the samples by ``(l, t)`` and, for every index
``i`` along the fiber, reads ``X3[l_k, i, t_k]`` for the sorted samples: the
addresses then increase monotonically, rows ``i`` are shared out between
threads, and the output is written as ``(I_n, s)`` (its transpose is the
usual ``(s, I_n)`` row block).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numba
import numpy as np

from .. import _backend as B

__all__ = ["gather_dense_fibers_numba", "gather_dense_fibers_xp"]


@numba.njit(parallel=True, cache=True, nogil=True)
def _gather_sorted(X3, lo, hi, order, outT):  # pragma: no cover - compiled
    In = X3.shape[1]
    s = order.shape[0]
    for i in numba.prange(In):
        for q in range(s):
            k = order[q]
            outT[i, k] = X3[lo[k], i, hi[k]]


def gather_dense_fibers_numba(X3: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Fibers ``X3[lo[k], :, hi[k]]`` as the rows of an ``(s, I_n)`` array.

    ``X3`` must be a C-contiguous NumPy array ``(L, I_n, Rt)``; ``lo`` and
    ``hi`` int64 index vectors. Returns the transpose of a C-ordered
    ``(I_n, s)`` array (a view; no copy).
    """
    order = np.lexsort((hi, lo)).astype(np.int64)
    outT = np.empty((X3.shape[1], lo.shape[0]), dtype=X3.dtype)
    if lo.shape[0]:
        _gather_sorted(X3, lo, hi, order, outT)
    return outT.T


def gather_dense_fibers_xp(xp: ModuleType, X3: Any, lo: np.ndarray, hi: np.ndarray) -> Any:
    """Array-API twin of :func:`gather_dense_fibers_numba` (``xp.take`` on a flat view)."""
    L, In, Rt = (int(d) for d in X3.shape)
    if Rt == 1:
        return xp.take(xp.reshape(X3, (L, In)), B.from_numpy(xp, lo, like=X3, dtype=None),
                       axis=0)
    if L == 1:
        cols = xp.take(xp.reshape(X3, (In, Rt)), B.from_numpy(xp, hi, like=X3, dtype=None),
                       axis=1)
        return xp.matrix_transpose(cols)
    base = lo * (In * Rt) + hi
    flat_idx = (base[:, None] + np.arange(In, dtype=np.int64)[None, :] * Rt).reshape(-1)
    vals = xp.take(xp.reshape(X3, (-1,)), B.from_numpy(xp, flat_idx, like=X3, dtype=None))
    return xp.reshape(vals, (lo.shape[0], In))
