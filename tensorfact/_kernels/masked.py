"""Kernels for CP on observed entries: per-row weighted least squares, model values.

Weighted (exact) ALS solves, for every row ``i`` of the factor of mode ``n``,
its own ``R x R`` normal equations over the observed entries of slice ``i``:
``G_i = sum_e k_e k_e^T`` and ``b_i = sum_e x_e k_e``, where ``k_e`` is the
Khatri-Rao row of entry ``e`` (the product of the other factors' rows at its
indices). `row_solve_numba` walks the entries sorted by their mode-``n``
index (`mode_layout`), one output row per parallel iteration (rows are
disjoint, so there is nothing to reduce), accumulates ``G_i`` in float64 and
solves it by Cholesky in place: memory ``O(R^2)`` per thread whatever the
number of rows. `row_solve_xp` is its array-API twin (blocked outer
products, ``scatter_add``, batched Cholesky) and applies the same rule:

* ``H_i = G_i + (R eps max(diag G_i) + l2_reg) I``; if a Cholesky pivot of
  ``H_i`` squared falls below ``100 R eps max(diag G_i)`` (a row its
  observations do not determine: fewer than ``R`` of them, or degenerate
  Khatri-Rao rows) the row is solved with the ridge
  ``sqrt(eps) trace(G_i) / R + l2_reg`` instead;
* a row with no observed entry (or only zero Khatri-Rao rows) is zero.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numba
import numpy as np

from .. import _backend as B
from .sparse import _cp_values, _row_products, cp_values_numba, mttkrp_numba, stack_factors

__all__ = ["cp_values", "cp_values_xp", "mode_layout", "mttkrp_sorted", "row_solve_numba",
           "row_solve_xp"]

#: Elements of workspace the pure-xp twins may allocate per block.
_BLOCK = 1 << 21


def mode_layout(coords: np.ndarray, mode: int, n_rows: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(perm, rowptr, others)``: entries sorted by their ``mode`` index.

    ``perm`` is the stable sorting permutation (the values in that order are
    ``values[perm]``), entries of row ``i`` occupy ``rowptr[i]:rowptr[i + 1]``,
    and ``others`` holds the other modes' indices (increasing mode order) in
    sorted order; ``perm`` and ``others`` are int32 when they fit.
    """
    col = coords[:, mode]
    perm = np.argsort(col, kind="stable")
    if coords.shape[0] < 2**31 - 1:
        perm = perm.astype(np.int32)
    rowptr = np.zeros(n_rows + 1, dtype=np.int64)
    np.cumsum(np.bincount(col, minlength=n_rows), out=rowptr[1:])
    cols = [m for m in range(coords.shape[1]) if m != mode]
    small = coords.shape[0] == 0 or int(coords.max()) < 2**31 - 1
    others = np.empty((coords.shape[0], len(cols)), dtype=np.int32 if small else np.int64)
    for j, m in enumerate(cols):  # column by column: no (n_obs, N) temporary
        others[:, j] = coords[perm, m]
    return perm, rowptr, others


@numba.njit(cache=True, nogil=True, inline="always")
def _cholesky_solve(G, b, delta, floor, L, y, x):  # pragma: no cover - compiled
    """Solve ``(G + delta I) x = b`` by Cholesky; False if a pivot^2 is <= ``floor``."""
    R = G.shape[0]
    for j in range(R):
        s = G[j, j] + delta
        for k in range(j):
            s -= L[j, k] * L[j, k]
        if not (s > floor):
            return False
        d = math.sqrt(s)
        L[j, j] = d
        for i in range(j + 1, R):
            t = G[i, j]
            for k in range(j):
                t -= L[i, k] * L[j, k]
            L[i, j] = t / d
    for i in range(R):
        t = b[i]
        for k in range(i):
            t -= L[i, k] * y[k]
        y[i] = t / L[i, i]
    for i in range(R - 1, -1, -1):
        t = y[i]
        for k in range(i + 1, R):
            t -= L[k, i] * x[k]
        x[i] = t / L[i, i]
    return True


@numba.njit(cache=True, nogil=True, inline="always")
def _krp_row(others, u, F, offsets, k):  # pragma: no cover - compiled
    """``k = *_j F[offsets[j] + others[u, j], :]``: the Khatri-Rao row of entry ``u``."""
    for r in range(k.shape[0]):
        k[r] = 1.0
    for j in range(others.shape[1]):
        row = offsets[j] + others[u, j]
        for r in range(k.shape[0]):
            k[r] *= F[row, r]


@numba.njit(cache=True, nogil=True)
def _mttkrp_by_rows(rowptr, others, vals, F, offsets, out):  # pragma: no cover - compiled
    k = np.empty(F.shape[1], dtype=np.float64)
    for i in range(rowptr.shape[0] - 1):
        for r in range(F.shape[1]):
            out[i, r] = 0.0
        for u in range(rowptr[i], rowptr[i + 1]):
            _krp_row(others, u, F, offsets, k)
            v = np.float64(vals[u])
            for r in range(F.shape[1]):
                out[i, r] += v * k[r]


def _row_solves_py(rowptr, others, vals, F, offsets, l2_reg, eps, out,
                   ridged):  # pragma: no cover - compiled
    n_rows = rowptr.shape[0] - 1
    R = F.shape[1]
    for i in numba.prange(n_rows):
        s = rowptr[i]
        e = rowptr[i + 1]
        ridged[i] = 0
        for r in range(R):
            out[i, r] = 0.0
        if s == e:
            continue
        G = np.zeros((R, R), dtype=np.float64)
        b = np.zeros(R, dtype=np.float64)
        k = np.empty(R, dtype=np.float64)
        for u in range(s, e):
            _krp_row(others, u, F, offsets, k)
            v = np.float64(vals[u])
            for r in range(R):
                b[r] += v * k[r]
                for q in range(r + 1):
                    G[r, q] += k[r] * k[q]
        gmax = 0.0
        trace = 0.0
        for r in range(R):
            gmax = max(gmax, G[r, r])
            trace += G[r, r]
            for q in range(r):
                G[q, r] = G[r, q]
        if not (gmax > 0.0):
            continue
        L = np.zeros((R, R), dtype=np.float64)
        y = np.empty(R, dtype=np.float64)
        x = np.empty(R, dtype=np.float64)
        if not _cholesky_solve(G, b, R * eps * gmax + l2_reg, 100.0 * R * eps * gmax, L, y, x):
            ridged[i] = 1
            if not _cholesky_solve(G, b, math.sqrt(eps) * trace / R + l2_reg, 0.0, L, y, x):
                for r in range(R):
                    x[r] = math.nan  # non-finite data: reported by the caller
        for r in range(R):
            out[i, r] = x[r]


#: threads over the rows (large problems)
_row_solves = numba.njit(parallel=True, cache=True, nogil=True)(_row_solves_py)
#: one thread: below about a million multiply-adds waking threads costs more than it saves
_row_solves_serial = numba.njit(cache=True, nogil=True)(_row_solves_py)
_PARALLEL_MIN = 1 << 20


def row_solve_numba(perm_layout: tuple[np.ndarray, np.ndarray, np.ndarray], values: np.ndarray,
                    factors: list[np.ndarray], mode: int, *, l2_reg: float = 0.0
                    ) -> tuple[np.ndarray, int]:
    """Per-row weighted least squares of the factor of ``mode`` (Numba, parallel over rows).

    Parameters
    ----------
    perm_layout : the `mode_layout` of the observed coordinates for ``mode``
    values : (n_obs,) observed values in storage order
    factors : list of N (I_m, R) arrays (``factors[mode]`` unused)
    mode : int
    l2_reg : float
        Ridge added to every row's normal equations.

    Returns
    -------
    ((I_mode, R) array in the factors' dtype, number of rows solved with the fallback ridge)
    """
    perm, rowptr, others = perm_layout
    dtype = np.result_type(*[A.dtype for A in factors])
    F, offsets = stack_factors([A for m, A in enumerate(factors) if m != mode], np.float64)
    R = int(factors[0].shape[1])
    n_rows = rowptr.shape[0] - 1
    out = np.empty((n_rows, R), dtype=np.float64)
    ridged = np.empty(n_rows, dtype=np.int8)
    eps = float(np.finfo(dtype).eps)
    kernel = _row_solves if values.shape[0] * R * R >= _PARALLEL_MIN else _row_solves_serial
    kernel(rowptr, others, np.ascontiguousarray(values[perm]), F, offsets, float(l2_reg), eps,
           out, ridged)
    return out.astype(dtype, copy=False), int(ridged.sum())


def mttkrp_sorted(perm_layout: tuple[np.ndarray, np.ndarray, np.ndarray], values: np.ndarray,
                  factors: list[np.ndarray], mode: int) -> np.ndarray:
    """Sparse MTTKRP on a `mode_layout`, values in storage order (``mttkrp_numba``'s result).

    Below about a million multiply-adds one thread walks the rows in order;
    larger problems go to ``mttkrp_numba`` (parallel over balanced chunks).
    """
    perm, rowptr, others = perm_layout
    vals = np.ascontiguousarray(values[perm])
    R = int(factors[0].shape[1])
    if vals.shape[0] * R * len(factors) >= _PARALLEL_MIN:
        return mttkrp_numba(rowptr, others, vals, factors, mode)
    dtype = np.result_type(*[A.dtype for A in factors])
    F, offsets = stack_factors([A for m, A in enumerate(factors) if m != mode], np.float64)
    out = np.empty((rowptr.shape[0] - 1, R), dtype=np.float64)
    _mttkrp_by_rows(rowptr, others, vals, F, offsets, out)
    return out.astype(dtype, copy=False)


def row_solve_xp(xp: ModuleType, coords: Any, values: Any, factors: list[Any], mode: int, *,
                 l2_reg: float = 0.0) -> tuple[Any, int]:
    """Array-API twin of `row_solve_numba` (same ridge rule), on the coordinates as stored."""
    N = int(coords.shape[1])
    R = int(factors[0].shape[1])
    n_rows = int(factors[mode].shape[0])
    dt = factors[0].dtype
    dev = B.device(factors[0])
    others = [m for m in range(N) if m != mode]
    G = xp.zeros((n_rows, R * R), dtype=dt, device=dev)
    b = xp.zeros((n_rows, R), dtype=dt, device=dev)
    n_obs = int(values.shape[0])
    step = max(1, _BLOCK // max(R * R, 1))
    for s in range(0, n_obs, step):
        e = min(n_obs, s + step)
        c = coords[s:e, :]
        K = _row_products(xp, [factors[m] for m in others], [c[:, m] for m in others])
        idx = c[:, mode]
        b = b + B.scatter_add(xp, n_rows, idx, K * xp.astype(values[s:e], dt)[:, None])
        outer = xp.reshape(K[:, :, None] * K[:, None, :], (e - s, R * R))
        G = G + B.scatter_add(xp, n_rows, idx, outer)
    G = xp.reshape(G, (n_rows, R, R))
    diag = xp.linalg.diagonal(G)
    gmax = xp.max(diag, axis=1)
    trace = xp.sum(diag, axis=1)
    empty = ~(gmax > 0)
    eps = B.finfo_eps(xp, dt)
    eye = xp.eye(R, dtype=dt, device=dev)
    delta = xp.where(empty, xp.ones_like(gmax), R * eps * gmax + l2_reg)
    L = _batched_cholesky(xp, G + delta[:, None, None] * eye)
    if L is None:
        bad = ~empty
    else:
        d2 = xp.linalg.diagonal(L) ** 2
        bad = ~(xp.min(d2, axis=1) > 100.0 * R * eps * gmax) & ~empty
    n_bad = int(B.to_float(xp.sum(xp.astype(bad, dt))))
    if n_bad:
        delta = xp.where(bad, math.sqrt(eps) * trace / R + l2_reg, delta)
    x = xp.linalg.solve(G + delta[:, None, None] * eye, b[:, :, None])[:, :, 0]
    return xp.where(empty[:, None], xp.zeros_like(x), x), n_bad


def _batched_cholesky(xp: ModuleType, H: Any) -> Any:
    """``cholesky(H)`` for a stack, or None when a matrix of it is not positive definite."""
    try:
        L = xp.linalg.cholesky(H)
    except Exception:
        return None
    if not bool(xp.all(xp.isfinite(L))):  # torch and CuPy report failure with NaN
        return None
    return L


#: `cp_values_numba`'s loop on one thread, for small problems
_cp_values_serial = numba.njit(cache=True, nogil=True)(_cp_values.py_func)


def cp_values(coords: np.ndarray, weights: np.ndarray, factors: list[np.ndarray]) -> np.ndarray:
    """``cp_values_numba`` (float64), on one thread below about a million multiply-adds."""
    N = len(factors)
    R = int(factors[0].shape[1])
    if coords.shape[0] * R * N >= _PARALLEL_MIN:
        return cp_values_numba(coords, weights, factors)
    F, offsets = stack_factors(factors, np.float64)
    out = np.empty(coords.shape[0], dtype=np.float64)
    _cp_values_serial(np.ascontiguousarray(coords, dtype=np.int64), F, offsets,
                      np.ascontiguousarray(weights, dtype=np.float64), out)
    return out


def cp_values_xp(xp: ModuleType, coords: Any, weights: Any, factors: list[Any]) -> Any:
    """CP model ``[[weights; factors]]`` at the rows of ``coords`` (twin of ``cp_values_numba``)."""
    n = int(coords.shape[0])
    R = int(factors[0].shape[1])
    step = max(1, _BLOCK // max(R, 1))
    parts = []
    for s in range(0, n, step):
        e = min(n, s + step)
        K = _row_products(xp, factors, [coords[s:e, m] for m in range(len(factors))])
        parts.append(K @ weights)
    if not parts:
        return xp.zeros((0,), dtype=weights.dtype, device=B.device(weights))
    return parts[0] if len(parts) == 1 else xp.concat(parts)
