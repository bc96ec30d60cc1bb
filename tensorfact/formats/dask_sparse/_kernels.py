"""Per-partition Numba kernels (serial; the Dask tasks run them in parallel).

Each kernel works on one memory-mapped partition and releases the GIL, so
the partitions of a threaded Dask scheduler run concurrently; a kernel never
starts threads of its own (no nested parallelism inside Dask workers).
Factor matrices arrive stacked into one float64 ``(sum_m I_m, R)`` array with
row offsets (`tensorfact._kernels.sparse.stack_factors`).
"""

from __future__ import annotations

import numba
import numpy as np

from ..._kernels.sparse import cp_at_nonzeros_serial

__all__ = ["coo_mttkrp", "cp_residual_terms", "fenced_search"]


@numba.njit(cache=True, nogil=True)
def _row_range(coords, mode):  # pragma: no cover - compiled
    lo = coords[0, mode]
    hi = lo
    for k in range(1, coords.shape[0]):
        i = coords[k, mode]
        if i < lo:
            lo = i
        elif i > hi:
            hi = i
    return lo, hi


@numba.njit(cache=True, nogil=True)
def _coo_mttkrp(coords, vals, F, offsets, mode, lo, out):  # pragma: no cover - compiled
    nnz = vals.shape[0]
    N = coords.shape[1]
    R = F.shape[1]
    tmp = np.empty(R, dtype=np.float64)
    for k in range(nnz):
        v = np.float64(vals[k])
        for r in range(R):
            tmp[r] = v
        for m in range(N):
            if m == mode:
                continue
            row = offsets[m] + coords[k, m]
            for r in range(R):
                tmp[r] *= F[row, r]
        i = coords[k, mode] - lo
        for r in range(R):
            out[i, r] += tmp[r]


def coo_mttkrp(coords: np.ndarray, vals: np.ndarray, F: np.ndarray, offsets: np.ndarray,
               mode: int) -> tuple[int, np.ndarray]:
    """MTTKRP of one partition into a private block of the rows it touches.

    Parameters
    ----------
    coords : (nnz, N) int32/int64
    vals : (nnz,) float
    F, offsets
        All N factors stacked (float64) and their row offsets.
    mode : int

    Returns
    -------
    lo : int
        First output row of the block.
    block : (hi - lo + 1, R) float64
        Rows ``lo..hi`` of the partition's MTTKRP (``hi`` the largest
        mode-``mode`` index in the partition), accumulated in float64 in
        storage order.
    """
    lo, hi = _row_range(coords, mode)
    out = np.zeros((int(hi) - int(lo) + 1, F.shape[1]), dtype=np.float64)
    _coo_mttkrp(coords, vals, F, offsets, mode, lo, out)
    return int(lo), out


def cp_residual_terms(coords: np.ndarray, values: np.ndarray, F: np.ndarray,
                      offsets: np.ndarray, weights: np.ndarray) -> tuple[float, float]:
    """``(sum_k (x_k - m_k)^2, sum_k m_k^2)`` over one partition, in float64.

    ``m_k`` is the CP model (``weights``, stacked float64 factors) at entry ``k``.
    """
    a, b = cp_at_nonzeros_serial(coords, values, F, offsets, weights)
    return float(a), float(b)


@numba.njit(cache=True, nogil=True)
def _search_range(keys, v, start, end, strict):  # pragma: no cover - compiled
    """First position in ``[start, end)`` whose key is ``>= v`` (strict) or ``> v``."""
    lo, hi = start, end
    while lo < hi:
        m = (lo + hi) >> 1
        if keys[m] < v or (not strict and keys[m] == v):
            lo = m + 1
        else:
            hi = m
    return lo


@numba.njit(cache=True, nogil=True)
def _fenced_search(keys, fence, stride, q, lo, hi):  # pragma: no cover - compiled
    n = keys.shape[0]
    for t in range(q.shape[0]):
        v = q[t]
        for side in range(2):
            strict = side == 0  # left: first key >= v; right: first key > v
            # fence[a - 1] (below v) bounds the answer from below, fence[a]
            # (not below v) from above: one block of the file is searched
            a = _search_range(fence, v, 0, fence.shape[0], strict)
            start = 0 if a == 0 else (a - 1) * stride
            end = min(n, a * stride)
            pos = _search_range(keys, v, start, end, strict)
            if side == 0:
                lo[t] = pos
            else:
                hi[t] = pos


def fenced_search(keys: np.ndarray, fence: np.ndarray, stride: int, q: np.ndarray
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``np.searchsorted(keys, q, "left")`` and ``"right"``, through a fence.

    ``fence = keys[::stride]`` (in memory): each search reads one block of
    about ``stride`` keys of ``keys`` (a memory-mapped file) instead of the
    scattered pages of a binary search over all of it.
    """
    lo = np.empty(q.shape[0], dtype=np.int64)
    hi = np.empty(q.shape[0], dtype=np.int64)
    if q.shape[0]:
        _fenced_search(keys, fence, stride, q, lo, hi)
    return lo, hi
