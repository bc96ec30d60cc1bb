"""Gathering sampled fibers of a dense tensor: a Numba kernel and its array-API twin.

A mode-``n`` fiber of a C-ordered tensor viewed as ``(L, I_n, Rt)`` is the
strided vector ``X3[l, :, t]``: a constant-stride stream the hardware
prefetcher follows. The kernel reads the fibers in the memory order of their
starts (samples sorted by ``(l, t)``, so that neighbouring fibers share cache
lines and pages) straight from the flat array into the ``(s, I_n)`` output,
without the ``s I_n`` index array of ``xp.take``; threads are used only for
large gathers (below about 4M entries waking them costs more than it saves).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numba
import numpy as np

from .. import _backend as B

__all__ = ["gather_dense_fibers_numba", "gather_dense_fibers_xp"]


@numba.njit(cache=True, nogil=True)
def _gather_serial(flat, base, Rt, In, order, out):  # pragma: no cover - compiled
    for q in range(order.shape[0]):
        k = order[q]
        b = base[k]
        for i in range(In):
            out[k, i] = flat[b + i * Rt]


@numba.njit(parallel=True, cache=True, nogil=True)
def _gather_parallel(flat, base, Rt, In, order, out):  # pragma: no cover - compiled
    for q in numba.prange(order.shape[0]):
        k = order[q]
        b = base[k]
        for i in range(In):
            out[k, i] = flat[b + i * Rt]


#: entries gathered below which waking threads costs more than it saves
_PARALLEL_MIN = 1 << 22


def gather_dense_fibers_numba(X3: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
    """Fibers ``X3[lo[k], :, hi[k]]`` as the rows of an ``(s, I_n)`` array.

    ``X3`` must be a C-contiguous NumPy array ``(L, I_n, Rt)``; ``lo`` and
    ``hi`` int64 index vectors.
    """
    L, In, Rt = X3.shape
    order = np.lexsort((hi, lo)).astype(np.int64)
    base = (lo * (In * Rt) + hi).astype(np.int64)
    out = np.empty((lo.shape[0], In), dtype=X3.dtype)
    if lo.shape[0]:
        kernel = _gather_parallel if out.size >= _PARALLEL_MIN else _gather_serial
        kernel(X3.reshape(-1), base, Rt, In, order, out)
    return out


def gather_dense_fibers_xp(xp: ModuleType, X3: Any, lo: np.ndarray, hi: np.ndarray) -> Any:
    """Array-API twin of `gather_dense_fibers_numba` (``xp.take`` on a flat view)."""
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
