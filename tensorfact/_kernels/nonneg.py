"""The inner loop of HALS (non-negative CP): a Numba kernel and its array-API twin.

One HALS sweep over the columns of a factor ``A`` (``I x R``) minimises
``||X_(n) - A K^T||^2`` (``M = X_(n) K``, ``G = K^T K``) one column at a
time, each column exactly over ``{a >= floor}``::

    a_r <- max(floor, (M[:, r] - sum_{k != r} a_k G[k, r]) / G[r, r])

(Cichocki & Phan, 2009). The new ``a_r`` at row ``i`` reads only row ``i``
of ``A``, so the kernel runs the column sweep row by row (one row of ``A``
and ``M`` in cache, rows in parallel for large factors); the result is that
of the column-by-column sweep. Several sweeps reuse ``M`` and ``G``, which
cost far more than a sweep (Gillis & Glineur, 2012): they stop after
``max_sweeps`` or when a sweep changes ``A`` by less than ``tol`` times the
first sweep's change (squared Frobenius norms), the rule of TensorLy's
``hals_nnls``. A column with ``G[r, r] = 0`` (a zero column elsewhere) is
left as it is.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numba
import numpy as np

from .. import _backend as B

__all__ = ["hals_sweeps_numba", "hals_sweeps_xp"]


def _sweep_py(A, M, G, floor):  # pragma: no cover - compiled
    n_rows, R = A.shape
    change = 0.0
    for i in numba.prange(n_rows):
        d_i = 0.0
        for r in range(R):
            g = G[r, r]
            if g > 0:
                s = M[i, r]
                for k in range(R):
                    if k != r:
                        s -= A[i, k] * G[k, r]
                v = s / g
                if v < floor:
                    v = floor
                d = v - A[i, r]
                d_i += d * d
                A[i, r] = v
        change += d_i
    return change


#: rows in parallel (large factors)
_sweep_parallel = numba.njit(parallel=True, cache=True, nogil=True)(_sweep_py)
#: one thread (waking threads costs more than a small sweep)
_sweep_serial = numba.njit(cache=True, nogil=True)(_sweep_py)

#: multiply-adds per sweep (I R^2) below which one thread is faster
_PARALLEL_MIN = 1 << 20


def hals_sweeps_numba(A: np.ndarray, M: np.ndarray, G: np.ndarray, floor: float,
                      max_sweeps: int, tol: float) -> tuple[np.ndarray, int]:
    """HALS sweeps on a copy of ``A``; returns ``(new A, sweeps run)``."""
    A = np.array(A, order="C", copy=True)
    M = np.ascontiguousarray(M, dtype=A.dtype)
    G = np.ascontiguousarray(G, dtype=A.dtype)
    n_rows, R = A.shape
    sweep = _sweep_parallel if n_rows * R * R >= _PARALLEL_MIN else _sweep_serial
    first = 0.0
    for k in range(max_sweeps):
        change = float(sweep(A, M, G, A.dtype.type(floor)))
        if k == 0:
            first = change
        elif change <= tol * first:
            return A, k + 1
    return A, max_sweeps


def hals_sweeps_xp(xp: ModuleType, A: Any, M: Any, G: Any, floor: float, max_sweeps: int,
                   tol: float) -> tuple[Any, int]:
    """Array-API twin of `hals_sweeps_numba` (one column update per array operation).

    The diagonal of ``G`` (``R`` numbers) and each sweep's change come to the
    host.
    """
    A = xp.asarray(A, copy=True)
    R = int(A.shape[1])
    diag = [B.to_float(G[r, r]) for r in range(R)]
    first = 0.0
    for k in range(max_sweeps):
        change = xp.zeros((), dtype=A.dtype, device=B.device(A))
        for r in range(R):
            if not diag[r] > 0:
                continue
            old = A[:, r]
            num = M[:, r] - (A @ G[:, r] - old * G[r, r])
            new = xp.clip(num / G[r, r], min=floor)
            d = new - old
            change = change + xp.vecdot(d, d)
            A[:, r] = new
        c = B.to_float(change)
        if k == 0:
            first = c
        elif c <= tol * first:
            return A, k + 1
    return A, max_sweeps
