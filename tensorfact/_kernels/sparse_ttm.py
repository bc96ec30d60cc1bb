"""Sparse tensor times a chain of matrices, on the nonzeros (the Tucker solvers' TTM).

The product of a COO tensor with matrices in the contracted modes ``C`` is a
dense array of shape ``(rows, prod_{c in C} J_c)``, one row per index of the
free (uncontracted) modes: nonzero ``x`` at ``(i_free, i_C)`` adds
``x * kron_{c in C} T_c[i_c, :]`` to its row, with ``T_c`` the ``(I_c, J_c)``
matrix of mode ``c`` (Kolda & Sun 2008, "Scalable tensor decompositions for
multi-aspect data mining"). Memory is the nonzeros plus the dense result;
the tensor is never densified.

`ttm_rows_numba` walks the nonzeros sorted by row (a row pointer) in
parallel over chunks of rows: a row belongs to exactly one chunk, so writes
never race. Each nonzero's Kronecker row is built in place in one buffer of
``prod J_c`` entries per chunk; accumulation is in float64. `ttm_rows_xp`
is the pure array-API twin (blocks of nonzeros, Kronecker rows by
broadcasting, ``scatter_add``).
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numba
import numpy as np

from .. import _backend as B

__all__ = ["ttm_rows_numba", "ttm_rows_xp"]

#: Elements of workspace the pure-xp twin may allocate per block.
_BLOCK = 1 << 21


def _ttm_rows_py(rowptr, cols, vals, F, offsets, ranks, bounds, out):  # pragma: no cover
    K = out.shape[1]
    C = cols.shape[1]
    for c in numba.prange(bounds.shape[0] - 1):
        buf = np.empty(K, dtype=np.float64)
        for i in range(bounds[c], bounds[c + 1]):
            for t in range(rowptr[i], rowptr[i + 1]):
                buf[0] = vals[t]
                size = 1
                for j in range(C):
                    r = ranks[j]
                    row = offsets[j] + cols[t, j]
                    for a in range(size - 1, -1, -1):
                        ba = buf[a]
                        for b in range(r - 1, -1, -1):
                            buf[a * r + b] = ba * F[row, b]
                    size *= r
                for k in range(K):
                    out[i, k] += buf[k]


#: threads over chunks of rows
_ttm_rows = numba.njit(parallel=True, cache=True, nogil=True)(_ttm_rows_py)
#: one thread, for small products (a parallel launch costs more than the work)
_ttm_rows_serial = numba.njit(cache=True, nogil=True)(_ttm_rows_py)
#: multiply-adds below which the serial kernel runs
_SERIAL_WORK = 1 << 20


def ttm_rows_numba(rowptr: np.ndarray, cols: np.ndarray, vals: np.ndarray,
                   mats: list[np.ndarray]) -> np.ndarray:
    """Rows of a sparse TTM chain (NumPy, Numba, parallel over rows).

    Parameters
    ----------
    rowptr : (n_rows + 1,) int64
        Nonzeros of output row ``i`` occupy ``rowptr[i]:rowptr[i + 1]``.
    cols : (nnz, C) integer array
        The contracted modes' indices of each nonzero, in that order.
    vals : (nnz,) values in that order
    mats : list of C arrays (I_c, J_c)
        The matrices, row ``i_c`` per index.

    Returns
    -------
    (n_rows, prod J_c) array in the matrices' dtype (float64 accumulation);
    column ``k`` is the C-order index over ``(j_0, ..., j_{C-1})``.
    """
    dtype = np.result_type(vals.dtype, *[M.dtype for M in mats])
    n_rows = rowptr.shape[0] - 1
    ranks = np.array([int(M.shape[1]) for M in mats], dtype=np.int64)
    K = int(np.prod(ranks)) if len(mats) else 1
    width = max([1] + [int(r) for r in ranks])
    F = np.zeros((sum(int(M.shape[0]) for M in mats) or 1, width), dtype=np.float64)
    offsets = np.zeros(max(len(mats), 1), dtype=np.int64)
    pos = 0
    for j, M in enumerate(mats):
        offsets[j] = pos
        F[pos:pos + M.shape[0], :M.shape[1]] = M
        pos += int(M.shape[0])
    out = np.zeros((n_rows, K), dtype=np.float64)
    if vals.shape[0] and n_rows:
        # chunks of about equal numbers of nonzeros, cut at row boundaries
        n_chunks = max(1, min(n_rows, 8 * numba.get_num_threads()))
        targets = np.linspace(0, rowptr[-1], n_chunks + 1)
        bounds = np.unique(np.searchsorted(rowptr, targets, side="left").clip(0, n_rows))
        bounds[0], bounds[-1] = 0, n_rows
        cols64 = np.ascontiguousarray(cols, dtype=np.int64)
        kernel = _ttm_rows_serial if vals.shape[0] * K < _SERIAL_WORK else _ttm_rows
        kernel(rowptr, cols64, np.ascontiguousarray(vals, dtype=np.float64), F, offsets,
                  ranks, bounds.astype(np.int64), out)
    return out.astype(dtype, copy=False)


def ttm_rows_xp(xp: ModuleType, rows: Any, cols: list[Any], vals: Any, mats: list[Any],
                n_rows: int) -> Any:
    """Pure array-API twin of `ttm_rows_numba` (unsorted nonzeros, ``rows`` per nonzero)."""
    K = 1
    for M in mats:
        K *= int(M.shape[1])
    dtype = vals.dtype
    out = xp.zeros((n_rows, K), dtype=dtype, device=B.device(vals))
    nnz = int(vals.shape[0])
    step = max(1, _BLOCK // max(K, 1))
    for s in range(0, nnz, step):
        e = min(nnz, s + step)
        P = vals[s:e][:, None]
        for M, c in zip(mats, cols):
            Mr = xp.take(M, c[s:e], axis=0)
            P = xp.reshape(P[:, :, None] * Mr[:, None, :], (e - s, -1))
        out = out + B.scatter_add(xp, n_rows, rows[s:e], P)
    return out
