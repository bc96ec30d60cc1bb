"""Kernels for sparse (COO) tensors: MTTKRP, sampled-fiber gather, CP model at nonzeros.

Every operation has a Numba kernel (NumPy arrays only, ``parallel=True``,
``cache=True``) and a pure array-API twin written against ``xp``; the public
wrappers pick the kernel for NumPy input and the twin otherwise, and the tests
check that both agree.

Race freedom of the parallel kernels:

* `mttkrp_numba` walks the nonzeros in the order sorted by the output
  mode's index, split into equal-sized chunks (load balance under skewed,
  power-law fiber lengths). A chunk owns every output row that starts and
  ends inside it and writes it with ``=``; its first and last rows, which may
  be shared with neighbouring chunks, go to per-chunk private buffers that are
  added serially afterwards.
* `gather_fibers_numba` runs two passes over the samples: the first
  finds each sample's fiber by binary search and records its length, a prefix
  sum turns lengths into disjoint output offsets, the second fills them.
* `cp_at_nonzeros_numba` uses Numba's reduction variables.

Factor matrices are passed to the Numba kernels stacked into one
``(sum_m I_m, R)`` array with row offsets, since Numba cannot iterate over a
heterogeneous Python list.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numba
import numpy as np

from .. import _backend as B

__all__ = [
    "mode_sorted",
    "mttkrp_numba",
    "mttkrp_xp",
    "gather_fibers_numba",
    "gather_fibers_xp",
    "cp_at_nonzeros_numba",
    "cp_values_numba",
    "cp_at_nonzeros_xp",
    "stack_factors",
]

#: Elements of workspace the pure-xp twins may allocate per block.
_BLOCK = 1 << 21


def stack_factors(factors: list[np.ndarray], dtype: Any) -> tuple[np.ndarray, np.ndarray]:
    """Stack NumPy factor matrices into one C-contiguous array plus row offsets."""
    F = np.ascontiguousarray(np.concatenate([np.asarray(A, dtype=dtype) for A in factors], axis=0))
    offsets = np.zeros(len(factors), dtype=np.int64)
    if len(factors) > 1:
        offsets[1:] = np.cumsum([int(A.shape[0]) for A in factors[:-1]])
    return F, offsets


# --------------------------------------------------------------------------- #
# MTTKRP
# --------------------------------------------------------------------------- #
@numba.njit(cache=True, nogil=True)
def _counting_sort(col, n_bins):  # pragma: no cover - compiled
    """Stable permutation sorting ``col`` (values in ``[0, n_bins)``) and its row pointer."""
    n = col.shape[0]
    rowptr = np.zeros(n_bins + 1, dtype=np.int64)
    for k in range(n):
        rowptr[col[k] + 1] += 1
    for i in range(n_bins):
        rowptr[i + 1] += rowptr[i]
    nxt = rowptr[:-1].copy()
    perm = np.empty(n, dtype=np.int64)
    for k in range(n):
        i = col[k]
        perm[nxt[i]] = k
        nxt[i] += 1
    return perm, rowptr


def mode_sorted(coords: np.ndarray, values: np.ndarray, mode: int, n_rows: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Entries sorted by their ``mode`` index, laid out for `mttkrp_numba`.

    Returns
    -------
    rowptr : (n_rows + 1,) int64
        Entries of output row ``i`` occupy ``rowptr[i]:rowptr[i + 1]``.
    others : (nnz, N-1) int32 or int64, C-contiguous
        The other modes' indices (increasing mode order) in that order.
    vals : (nnz,) values in that order
    """
    N = coords.shape[1]
    perm, rowptr = _counting_sort(np.ascontiguousarray(coords[:, mode]), n_rows)
    cols = [m for m in range(N) if m != mode]
    small = coords.shape[0] == 0 or int(coords.max()) < 2**31 - 1
    idt = np.int32 if small else np.int64
    others = np.empty((coords.shape[0], N - 1), dtype=idt)
    for j, m in enumerate(cols):
        others[:, j] = coords[perm, m]
    return rowptr, others, np.ascontiguousarray(values[perm])


@numba.njit(cache=True, inline="always")
def _upper_bound(a, x, lo, hi):  # pragma: no cover - compiled
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] <= x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(parallel=True, cache=True, nogil=True)
def _mttkrp_rows(rowptr, others, vals, F, offsets, n_chunks, out, head, tail, head_row,
                 tail_row):  # pragma: no cover - compiled
    nnz = vals.shape[0]
    R = F.shape[1]
    M = others.shape[1]
    n_rows = rowptr.shape[0] - 1
    for c in numba.prange(n_chunks):
        s = (c * nnz) // n_chunks
        e = ((c + 1) * nnz) // n_chunks
        head_row[c] = -1
        tail_row[c] = -1
        if s >= e:
            continue
        acc = np.empty(R, dtype=np.float64)
        tmp = np.empty(R, dtype=np.float64)
        # row containing position s: rowptr[i] <= s < rowptr[i + 1]
        i = _upper_bound(rowptr, s, 0, n_rows + 1) - 1
        first = i
        t = s
        while t < e:
            stop = min(rowptr[i + 1], e)
            for r in range(R):
                acc[r] = 0.0
            for u in range(t, stop):
                v = vals[u]
                for r in range(R):
                    tmp[r] = v
                for j in range(M):
                    row = offsets[j] + others[u, j]
                    for r in range(R):
                        tmp[r] *= F[row, r]
                for r in range(R):
                    acc[r] += tmp[r]
            if rowptr[i] >= s and rowptr[i + 1] <= e:
                for r in range(R):
                    out[i, r] = acc[r]
            elif i == first:
                head_row[c] = i
                for r in range(R):
                    head[c, r] = acc[r]
            else:
                tail_row[c] = i
                for r in range(R):
                    tail[c, r] = acc[r]
            t = stop
            i += 1
            while i < n_rows and rowptr[i + 1] <= t and t < e:
                i += 1  # skip empty rows
    # serial reduction of the rows shared between chunks
    for c in range(n_chunks):
        if head_row[c] >= 0:
            for r in range(R):
                out[head_row[c], r] += head[c, r]
        if tail_row[c] >= 0:
            for r in range(R):
                out[tail_row[c], r] += tail[c, r]


def mttkrp_numba(rowptr: np.ndarray, others: np.ndarray, vals: np.ndarray,
                 factors: list[np.ndarray], mode: int) -> np.ndarray:
    """Sparse MTTKRP for NumPy arrays (Numba, parallel, race-free).

    Parameters
    ----------
    rowptr, others, vals
        The mode-sorted layout from `mode_sorted`.
    factors : list of N (I_m, R) arrays (factors[mode] unused)
    mode : int

    Returns
    -------
    (I_mode, R) array in the factors' dtype.

    Notes
    -----
    The entries are split into equal-sized chunks (balanced under skewed row
    lengths), processed in parallel; a chunk writes the output rows that lie
    entirely inside it and keeps its first and last (possibly shared) rows in
    private buffers, added serially afterwards. Accumulation is in float64.
    """
    dtype = np.result_type(*[A.dtype for A in factors])
    others_f = [A for m, A in enumerate(factors) if m != mode]
    F, offsets = stack_factors(others_f, dtype)
    R = int(factors[0].shape[1])
    n_rows = rowptr.shape[0] - 1
    nnz = vals.shape[0]
    n_chunks = max(1, min(nnz // 8192 + 1, 16 * numba.get_num_threads()))
    out = np.zeros((n_rows, R), dtype=np.float64)
    head = np.zeros((n_chunks, R), dtype=np.float64)
    tail = np.zeros((n_chunks, R), dtype=np.float64)
    head_row = np.empty(n_chunks, dtype=np.int64)
    tail_row = np.empty(n_chunks, dtype=np.int64)
    if nnz > 0:
        _mttkrp_rows(rowptr, others, vals, F, offsets, n_chunks, out, head, tail, head_row,
                     tail_row)
    return out.astype(dtype, copy=False)


def _row_products(xp: ModuleType, factors: list[Any], rows: list[Any]) -> Any:
    """``factors[0][rows[0]] * factors[1][rows[1]] * ...`` (rows of a Khatri-Rao product)."""
    out = xp.take(factors[0], rows[0], axis=0)
    for A, i in zip(factors[1:], rows[1:]):
        out = out * xp.take(A, i, axis=0)
    return out


def mttkrp_xp(xp: ModuleType, coords: Any, values: Any, factors: list[Any], mode: int,
              n_rows: int) -> Any:
    """Sparse MTTKRP in any array namespace (blocked row products + ``scatter_add``)."""
    N = int(coords.shape[1])
    R = int(factors[0].shape[1])
    nnz = int(values.shape[0])
    others = [m for m in range(N) if m != mode]
    dtype = factors[0].dtype
    out = xp.zeros((n_rows, R), dtype=dtype, device=B.device(factors[0]))
    step = max(1, _BLOCK // max(R, 1))
    for s in range(0, nnz, step):
        e = min(nnz, s + step)
        c = coords[s:e, :]
        K = _row_products(xp, [factors[m] for m in others], [c[:, m] for m in others])
        K = K * xp.astype(values[s:e], dtype)[:, None]
        out = out + B.scatter_add(xp, n_rows, c[:, mode], K)
    return out


# --------------------------------------------------------------------------- #
# sampled fiber gather
# --------------------------------------------------------------------------- #
@numba.njit(cache=True, inline="always")
def _lower_bound(a, x, lo, hi):  # pragma: no cover - compiled
    while lo < hi:
        mid = (lo + hi) >> 1
        if a[mid] < x:
            lo = mid + 1
        else:
            hi = mid
    return lo


@numba.njit(parallel=True, cache=True, nogil=True)
def _gather_count(keys, sample_keys, lo, counts):  # pragma: no cover - compiled
    n = keys.shape[0]
    for j in numba.prange(sample_keys.shape[0]):
        x = sample_keys[j]
        a = _lower_bound(keys, x, 0, n)
        b = _lower_bound(keys, x + 1, a, n)
        lo[j] = a
        counts[j] = b - a


@numba.njit(parallel=True, cache=True, nogil=True)
def _gather_fill(perm, mode_coords, values, lo, counts, offsets, out_pos, out_idx,
                 out_val):  # pragma: no cover - compiled
    for j in numba.prange(lo.shape[0]):
        base = offsets[j]
        a = lo[j]
        for t in range(counts[j]):
            k = perm[a + t]
            out_pos[base + t] = j
            out_idx[base + t] = mode_coords[k]
            out_val[base + t] = values[k]


def gather_fibers_numba(keys: np.ndarray, perm: np.ndarray, mode_coords: np.ndarray,
                        values: np.ndarray, sample_keys: np.ndarray
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nonzeros of the fibers with the given other-mode keys (Numba, two passes).

    Parameters
    ----------
    keys : (nnz,) int64, sorted
        Other-mode linear index of each nonzero, in fiber-index order.
    perm : (nnz,) int64
        Fiber-index order (position ``t`` holds nonzero ``perm[t]``).
    mode_coords : (nnz,) int64
        ``coords[:, mode]`` in storage order.
    values : (nnz,) float
    sample_keys : (n_s,) int64

    Returns
    -------
    sample_pos, mode_idx, vals : arrays of equal length
    """
    n_s = sample_keys.shape[0]
    lo = np.empty(n_s, dtype=np.int64)
    counts = np.empty(n_s, dtype=np.int64)
    _gather_count(keys, sample_keys, lo, counts)
    offsets = np.zeros(n_s, dtype=np.int64)
    if n_s > 1:
        np.cumsum(counts[:-1], out=offsets[1:])
    total = int(offsets[-1] + counts[-1]) if n_s else 0
    out_pos = np.empty(total, dtype=np.int64)
    out_idx = np.empty(total, dtype=np.int64)
    out_val = np.empty(total, dtype=values.dtype)
    if total:
        _gather_fill(perm, mode_coords, values, lo, counts, offsets, out_pos, out_idx, out_val)
    return out_pos, out_idx, out_val


def gather_fibers_xp(xp: ModuleType, keys: Any, perm: Any, mode_coords: Any, values: Any,
                     sample_keys: Any) -> tuple[Any, Any, Any]:
    """Pure array-API twin of `gather_fibers_numba`."""
    dev = B.device(values)
    lo = xp.searchsorted(keys, sample_keys, side="left")
    hi = xp.searchsorted(keys, sample_keys, side="right")
    counts = xp.astype(hi - lo, xp.int64)
    n_s = int(sample_keys.shape[0])
    total = int(B.to_float(xp.sum(counts))) if n_s else 0
    if total == 0:
        empty = xp.zeros((0,), dtype=xp.int64, device=dev)
        return empty, empty, xp.zeros((0,), dtype=values.dtype, device=dev)
    ends = xp.cumulative_sum(counts)
    starts = ends - counts
    t = xp.arange(total, dtype=xp.int64, device=dev)
    # sample of output slot t: number of samples whose end is <= t
    pos = xp.astype(xp.searchsorted(ends, t, side="right"), xp.int64)
    src = xp.take(xp.astype(lo, xp.int64), pos) + (t - xp.take(starts, pos))
    k = xp.take(perm, src)
    return pos, xp.take(mode_coords, k), xp.take(values, k)


# --------------------------------------------------------------------------- #
# CP model at the nonzeros (for the exact residual)
# --------------------------------------------------------------------------- #
def _cp_at_nonzeros_py(coords, values, F, offsets, weights):  # pragma: no cover - compiled
    nnz = values.shape[0]
    R = F.shape[1]
    N = coords.shape[1]
    sq_diff = 0.0
    sq_model = 0.0
    for k in numba.prange(nnz):
        m_k = 0.0
        for r in range(R):
            p = np.float64(weights[r])
            for m in range(N):
                p *= F[offsets[m] + coords[k, m], r]
            m_k += p
        d = np.float64(values[k]) - m_k
        sq_diff += d * d
        sq_model += m_k * m_k
    return sq_diff, sq_model


#: threads over the nonzeros (one in-memory tensor)
_cp_at_nonzeros = numba.njit(parallel=True, cache=True, nogil=True)(_cp_at_nonzeros_py)
#: one thread (per-partition tasks that already run side by side)
cp_at_nonzeros_serial = numba.njit(cache=True, nogil=True)(_cp_at_nonzeros_py)


@numba.njit(parallel=True, cache=True, nogil=True)
def _cp_values(coords, F, offsets, weights, out):  # pragma: no cover - compiled
    R = F.shape[1]
    N = coords.shape[1]
    for k in numba.prange(coords.shape[0]):
        m_k = 0.0
        for r in range(R):
            p = weights[r]
            for m in range(N):
                p *= F[offsets[m] + coords[k, m], r]
            m_k += p
        out[k] = m_k


def cp_values_numba(coords: np.ndarray, weights: np.ndarray,
                    factors: list[np.ndarray]) -> np.ndarray:
    """CP model ``[[weights; factors]]`` at the rows of ``coords`` (float64, parallel)."""
    F, offsets = stack_factors(factors, np.float64)
    out = np.empty(coords.shape[0], dtype=np.float64)
    if coords.shape[0]:
        _cp_values(np.ascontiguousarray(coords, dtype=np.int64), F, offsets,
                   np.ascontiguousarray(weights, dtype=np.float64), out)
    return out


def cp_at_nonzeros_numba(coords: np.ndarray, values: np.ndarray, weights: np.ndarray,
                         factors: list[np.ndarray]) -> tuple[float, float]:
    """``(sum_k (x_k - m_k)^2, sum_k m_k^2)`` over the nonzeros, in float64.

    ``m_k`` is the CP model ``[[weights; factors]]`` at nonzero ``k``.
    """
    F, offsets = stack_factors(factors, np.float64)
    w = np.ascontiguousarray(weights, dtype=np.float64)
    if values.shape[0] == 0:
        return 0.0, 0.0
    a, b = _cp_at_nonzeros(coords, values, F, offsets, w)
    return float(a), float(b)


def cp_at_nonzeros_xp(xp: ModuleType, coords: Any, values: Any, weights: Any,
                      factors: list[Any]) -> tuple[float, float]:
    """Pure array-API twin of `cp_at_nonzeros_numba` (float64 where available)."""
    nnz = int(values.shape[0])
    R = int(factors[0].shape[1])
    f64 = xp.float64
    facs = [xp.astype(A, f64) for A in factors]
    w = xp.astype(weights, f64)
    step = max(1, _BLOCK // max(R, 1))
    sq_diff = 0.0
    sq_model = 0.0
    for s in range(0, nnz, step):
        e = min(nnz, s + step)
        m = _row_products(xp, facs, [coords[s:e, j] for j in range(len(facs))]) @ w
        d = xp.astype(values[s:e], f64) - m
        sq_diff += B.to_float(xp.sum(d * d))
        sq_model += B.to_float(xp.sum(m * m))
    return sq_diff, sq_model
