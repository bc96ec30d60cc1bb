"""``SparseTensor.multi_mode_dot``: a TTM chain computed on the nonzeros."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _backend as B
from .._kernels import sparse as K
from .._kernels.sparse_ttm import ttm_rows_numba, ttm_rows_xp
from .._validation import check_allocation

if TYPE_CHECKING:
    from .sparse import SparseTensor

__all__ = ["multi_mode_dot"]


def multi_mode_dot(X: SparseTensor, matrices: list[Any], modes: list[int], *,
                   transpose: bool) -> Any:
    """``X x_{modes[0]} matrices[0] ...`` as a dense array, from the nonzeros.

    Arguments are checked by `tensorfact.tenalg.multi_mode_dot`. The result
    is computed as rows over the free modes (C order) times the Kronecker
    product of the contracted modes' columns, then reshaped and its axes
    moved into mode order. With one free mode ``n`` the nonzeros are read in
    the tensor's cached mode-``n`` layout (Numba, parallel over rows).
    """
    xp = X.xp
    B.namespace(X.like, *matrices, name="X and matrices")
    for i, M in enumerate(matrices):
        if M.dtype != X.dtype:
            raise TypeError(f"matrices[{i}] has dtype {M.dtype} but X has {X.dtype}")
    dims = X.shape
    N = len(dims)
    by_mode = {m: (M if transpose else xp.matrix_transpose(M)) for M, m in zip(matrices, modes)}
    contracted = sorted(by_mode)
    free = [m for m in range(N) if m not in by_mode]
    mats = [by_mode[m] for m in contracted]
    n_rows = math.prod(dims[m] for m in free)
    out_dims = tuple(int(by_mode[m].shape[1]) for m in contracted)
    check_allocation(n_rows * math.prod(out_dims), 8, "the dense result of multi_mode_dot")
    if B.is_numpy(xp):
        rowptr, cols, vals = _sorted_rows(X, free, contracted)
        rows = ttm_rows_numba(rowptr, cols, vals, [np.asarray(M) for M in mats])
    else:
        coords = X.coords
        lin = xp.zeros((X.nnz,), dtype=xp.int64, device=B.device(X.like))
        for m in free:
            lin = lin * dims[m] + coords[:, m]
        rows = ttm_rows_xp(xp, lin, [coords[:, m] for m in contracted], X.values, mats, n_rows)
    Y = xp.reshape(rows, tuple(dims[m] for m in free) + out_dims)
    order = free + contracted  # axis k of Y is mode order[k]
    perm = tuple(order.index(m) for m in range(N))
    if perm != tuple(range(N)):
        Y = xp.permute_dims(Y, perm)
    return Y


def _sorted_rows(X: SparseTensor, free: list[int], contracted: list[int]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(rowptr, contracted coords, values)`` sorted by the free modes' linear index."""
    if len(free) == 1:
        return X._mode_layout(free[0])  # cached; others in increasing mode order
    coords = X.coords
    if not free:
        rowptr = np.array([0, X.nnz], dtype=np.int64)
        return rowptr, np.ascontiguousarray(coords), np.asarray(X.values)
    lin = np.zeros(X.nnz, dtype=np.int64)
    for m in free:
        lin = lin * X.shape[m] + coords[:, m]
    n_rows = math.prod(X.shape[m] for m in free)
    perm, rowptr = K._counting_sort(lin, n_rows)
    cols = np.ascontiguousarray(coords[perm][:, contracted])
    return rowptr, cols, np.ascontiguousarray(X.values[perm])
