"""The work done on one partition, as plain functions (the Dask tasks).

Every task opens its partition's files (memory-mapped, size and header
checked) and returns its result with, as the last element, the number of
bytes of array data it read; the combiners add partial results and byte
counts. Tasks are module-level functions so that distributed workers import
them by name.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

from . import _kernels as K
from ._store import Partition

__all__ = [
    "add_arrays",
    "add_row_blocks",
    "add_scalars",
    "all_finite",
    "both_finite",
    "fibers",
    "gram",
    "mttkrp",
    "norm_sq",
    "residual_terms",
]


def norm_sq(part: Partition) -> tuple[float, int]:
    """``sum(values**2)`` in float64, and bytes read."""
    ref = part.arrays["values"]
    v = ref.open()
    if v.dtype != np.float64:
        v = v.astype(np.float64)
    return float(np.dot(v, v)), ref.data_nbytes


def all_finite(part: Partition) -> tuple[bool, int]:
    """Whether every value is finite, and bytes read."""
    ref = part.arrays["values"]
    return bool(np.all(np.isfinite(ref.open()))), ref.data_nbytes


def mttkrp(part: Partition, F: np.ndarray, offsets: np.ndarray, mode: int
           ) -> tuple[int, np.ndarray, int]:
    """``(lo, block, bytes)``: the partition's MTTKRP rows ``lo..`` (float64)."""
    c, v = part.arrays["coords"], part.arrays["values"]
    lo, block = K.coo_mttkrp(c.open(), v.open(), F, offsets, mode)
    return lo, block, c.data_nbytes + v.data_nbytes


def mttkrp_into(part: Partition, F: np.ndarray, offsets: np.ndarray, mode: int,
                out: np.ndarray, lock: Any) -> tuple[int]:
    """Add the partition's MTTKRP into the shared ``out`` (under ``lock``); ``(bytes,)``.

    For schedulers whose tasks share the caller's memory (threads, synchronous):
    no partial result outlives its task.
    """
    lo, block, nbytes = mttkrp(part, F, offsets, mode)
    with lock:
        out[lo:lo + block.shape[0]] += block
    return (nbytes,)


def residual_terms(part: Partition, F: np.ndarray, offsets: np.ndarray, weights: np.ndarray
                   ) -> tuple[float, float, int]:
    """``(sum (x - m)^2, sum m^2, bytes)`` over the partition's entries."""
    c, v = part.arrays["coords"], part.arrays["values"]
    a, b = K.cp_residual_terms(c.open(), v.open(), F, offsets, weights)
    return a, b, c.data_nbytes + v.data_nbytes


def gram(part: Partition, n_rows: int) -> tuple[np.ndarray, int]:
    """``U U^T`` (float64) for the fibers of one fiber-index partition, and bytes read.

    Fibers never cross partitions, so the partitions' Gram matrices add up
    to the mode Gram.
    """
    import scipy.sparse as sps

    keys = part.arrays["keys"].open()
    idx = part.arrays["index"].open()
    vals = part.arrays["values"].open()
    new = np.empty(keys.shape[0], dtype=bool)
    new[0] = True
    np.not_equal(keys[1:], keys[:-1], out=new[1:])
    fib = np.cumsum(new) - 1
    U = sps.csr_array((np.asarray(vals, dtype=np.float64), (idx, fib)),
                      shape=(n_rows, int(fib[-1]) + 1))
    G = np.asarray((U @ U.T).toarray(), dtype=np.float64)
    return G, sum(r.data_nbytes for r in part.arrays.values())


#: one key in this many of a fiber index is kept in memory (the fence): a search
#: then reads one block of ``FENCE_STRIDE`` keys (32 KiB) of the file, not the
#: ``log2(nnz)`` scattered pages of a binary search over all of it
FENCE_STRIDE = 4096

_FENCES: dict[tuple[str, int, int], np.ndarray] = {}


def _fence(ref: Any, keys: np.ndarray) -> np.ndarray:
    """Every `FENCE_STRIDE`-th key of a fiber-index file, read once per process.

    Kept per file version (path, size, modification time): a store rebuilt
    at the same place gets new fences.
    """
    st = os.stat(ref.path)
    key = (str(ref.path), st.st_size, st.st_mtime_ns)
    fence = _FENCES.get(key)
    if fence is None:
        fence = _FENCES[key] = np.array(keys[::FENCE_STRIDE])
    return fence


def fibers(part: Partition, sample_keys: np.ndarray, sample_ids: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """The entries of the fibers with the given keys in one fiber-index partition.

    Returns ``(sample_id, mode_index, value, bytes)`` per entry, samples in
    the given order and each fiber's entries in increasing mode index. Only
    the keys probed by the binary searches and the fibers' slices are read:
    the byte count is ``2 ceil(log2(nnz + 1))`` probes of 8 bytes per sample
    plus the index and value bytes of the returned entries.
    """
    kref, iref, vref = part.arrays["keys"], part.arrays["index"], part.arrays["values"]
    keys = kref.open()
    lo, hi = K.fenced_search(keys, _fence(kref, keys), FENCE_STRIDE,
                             np.ascontiguousarray(sample_keys, dtype=keys.dtype))
    counts = (hi - lo).astype(np.int64)
    total = int(counts.sum())
    probes = 2 * math.ceil(math.log2(part.nnz + 1)) * int(sample_keys.shape[0]) * 8
    if total == 0:
        return (np.zeros(0, np.int64), np.zeros(0, np.int64),
                np.zeros(0, np.dtype(vref.dtype)), probes)
    starts = np.cumsum(counts) - counts
    src = np.repeat(lo.astype(np.int64) - starts, counts) + np.arange(total, dtype=np.int64)
    idx = np.asarray(iref.open()[src], dtype=np.int64)
    val = np.asarray(vref.open()[src])
    nbytes = probes + total * (np.dtype(iref.dtype).itemsize + np.dtype(vref.dtype).itemsize)
    return np.repeat(sample_ids, counts), idx, val, nbytes


# --------------------------------------------------------------------------- #
# combiners (tree reduction)
# --------------------------------------------------------------------------- #
def add_scalars(*parts: tuple[Any, ...]) -> tuple[Any, ...]:
    """Elementwise sum of equal-length tuples of numbers."""
    return tuple(sum(col) for col in zip(*parts))


def both_finite(*parts: tuple[bool, int]) -> tuple[bool, int]:
    """``(all flags, total bytes)``."""
    return all(p[0] for p in parts), sum(p[1] for p in parts)


def add_arrays(*parts: tuple[np.ndarray, int]) -> tuple[np.ndarray, int]:
    """Sum of ``(array, bytes)`` pairs."""
    out = parts[0][0].copy()
    for a, _ in parts[1:]:
        out += a
    return out, sum(p[1] for p in parts)


def add_row_blocks(*parts: tuple[int, np.ndarray, int]) -> tuple[int, np.ndarray, int]:
    """Sum of row blocks ``(lo, block, bytes)`` over the union of their row ranges."""
    lo = min(p[0] for p in parts)
    hi = max(p[0] + p[1].shape[0] for p in parts)
    out = np.zeros((hi - lo, parts[0][1].shape[1]), dtype=np.float64)
    for s, block, _ in parts:
        out[s - lo:s - lo + block.shape[0]] += block
    return lo, out, sum(p[2] for p in parts)
