"""Planted sparse tensors written to disk partition by partition (``DaskSparseTensor`` stores)."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _backend as B
from .._kernels.sparse import cp_values_numba
from .._validation import check_nonneg_float, check_positive_int, check_shape
from ..tensors.cp import CPTensor
from ._common import add_relative_noise
from ._planted_sparse import (
    _distinct_positions,
    _sorted_unique,
    _zipf_marginal,
    sparse_support_factors,
)

if TYPE_CHECKING:
    from ..formats.dask_sparse import DaskSparseTensor

__all__ = ["planted_sparse_store"]

#: local linear keys of a partition (rows of mode 0 times the other modes) stay below this
_KEY_MAX = 1 << 62


def _row_ranges(weight: np.ndarray, target: float, max_rows: int) -> list[tuple[int, int]]:
    """Consecutive mode-0 row ranges of about ``target`` total ``weight``, at most ``max_rows``."""
    n = weight.shape[0]
    cum = np.cumsum(weight)
    out = []
    a = 0
    while a < n:
        base = cum[a - 1] if a else 0.0
        b = int(np.searchsorted(cum, base + target, side="left")) + 1
        b = max(a + 1, min(b, a + max_rows, n))
        out.append((a, b))
        a = b
    return out


def planted_sparse_store(
    store: str | os.PathLike[str],
    shape: Sequence[int],
    rank: int,
    nnz: int,
    *,
    noise: float = 0.0,
    skew: float = 1.0,
    exact: bool = False,
    rng: None | int | np.random.Generator = None,
    dtype: Any = np.float64,
    partition_nnz: int = 1 << 23,
    progress: bool = False,
) -> tuple[DaskSparseTensor, CPTensor]:
    """A planted sparse CP tensor written as a store, one partition at a time.

    The on-disk sibling of `planted_sparse_cp`, for tensors too large
    for memory (e.g. ``2 * 10**8`` nonzeros with the Amazon review tensor's
    shape ``(4821207, 1774269, 1805187)``). Mode 0 is cut into row ranges,
    one per partition; each partition draws its own coordinates inside its
    rows (so no duplicate crosses partitions), evaluates the planted CP
    model there (plus noise) and is written before the next one is drawn.
    Peak memory: the factor matrices plus about one partition.

    ``exact=False`` (observed entries): positions drawn with independent
    power-law marginals per mode, as `planted_sparse_cp`; the number of
    entries of each partition is multinomial with the mode-0 mass of its
    rows, and each partition's positions are distinct. ``exact=True``: sparse
    factor columns (about ``(nnz / rank)^(1/N)`` nonzeros each) and the
    tensor stored on the union of the components' supports, so with
    ``noise=0`` it equals the plant; ``nnz`` is then a target.

    Parameters
    ----------
    store : path
        A new (or empty) directory.
    shape : sequence of int
        At least two modes.
    rank : int
    nnz : int
        Number of stored entries (``exact=True``: target).
    noise : float
        Relative Gaussian noise on the stored values (over all entries:
        each partition gets ``noise`` times its own signal norm).
    skew : float
        Power-law exponent of the mode marginals; 0 gives uniform positions.
    exact : bool
        Choose the construction (see above).
    rng : None, int or numpy.random.Generator
    dtype : dtype
        float32 or float64 values (and factors of ``truth``).
    partition_nnz : int
        Target number of nonzeros per partition.
    progress : bool
        Show tqdm progress bars.

    Returns
    -------
    X : DaskSparseTensor
        The store, opened.
    truth : CPTensor
        The planted signal (NumPy).

    Raises
    ------
    ValueError
        Bad sizes, a non-empty ``store``, or an ``nnz`` the skewed marginals
        cannot fill with distinct positions.

    Examples
    --------
    >>> import os, tempfile
    >>> X, truth = planted_sparse_store(os.path.join(tempfile.mkdtemp(), "s"), (50, 40, 30),
    ...                                 rank=3, nnz=2000, rng=0, partition_nnz=500)
    >>> X.nnz, X.shape, truth.rank
    (2000, (50, 40, 30), 3)
    """
    from tqdm.auto import tqdm

    from ..formats.dask_sparse import DaskSparseTensor
    from ..formats.dask_sparse._convert import StoreWriter

    dims = check_shape(shape, min_ndim=2)
    R = check_positive_int(rank, "rank")
    nnz = check_positive_int(nnz, "nnz")
    noise = check_nonneg_float(noise, "noise")
    skew = check_nonneg_float(skew, "skew")
    target = check_positive_int(partition_nnz, "partition_nnz")
    if nnz > math.prod(dims):
        raise ValueError(f"nnz={nnz} exceeds the number of entries {math.prod(dims)} of "
                         f"shape {dims}")
    gen = B.check_rng(rng)
    N = len(dims)
    rest = math.prod(dims[1:])
    if rest > _KEY_MAX:
        raise ValueError(f"shape {dims}: the modes after the first have more than 2**62 "
                         "index combinations")
    max_rows = max(1, _KEY_MAX // rest)
    marg = [_zipf_marginal(gen, d, skew) for d in dims]
    weights = 1.0 + gen.random(R)
    if exact:
        factors = sparse_support_factors(gen, dims, R, nnz, marg)
        sup = [[np.flatnonzero(A[:, r]) for r in range(R)] for A in factors]
        per_row = np.zeros(dims[0])
        for r in range(R):
            per_row[sup[0][r]] += math.prod(len(sup[m][r]) for m in range(1, N))
        ranges = _row_ranges(per_row, target, max_rows)
        counts = None
    else:
        factors = []
        for d in dims:
            A = gen.standard_normal((d, R))
            factors.append(A / np.linalg.norm(A, axis=0))
        ranges = _row_ranges(marg[0], target / nnz, max_rows)
        mass = np.array([marg[0][a:b].sum() for a, b in ranges])
        counts = gen.multinomial(nnz, mass / mass.sum())
    with StoreWriter(store, dims, dtype, partition_nnz=target, progress=progress) as writer:
        for j, (a, b) in enumerate(tqdm(ranges, desc="partitions", disable=not progress,
                                        leave=False)):
            sub = (b - a,) + dims[1:]
            if counts is None:
                grids = []
                for r in range(R):
                    s0 = sup[0][r]
                    s0 = s0[(s0 >= a) & (s0 < b)] - a
                    if s0.shape[0]:
                        g = np.meshgrid(s0, *[sup[m][r] for m in range(1, N)], indexing="ij")
                        grids.append(np.ravel_multi_index(tuple(x.ravel() for x in g), sub))
                if not grids:
                    continue
                lin = _sorted_unique(np.concatenate(grids))
                coords = np.stack(np.unravel_index(lin, sub), axis=1).astype(np.int64)
            else:
                if counts[j] == 0:
                    continue
                sub_marg = [marg[0][a:b] / marg[0][a:b].sum()] + marg[1:]
                coords = _distinct_positions(gen, sub_marg, sub, int(counts[j]))
            coords[:, 0] += a
            vals = add_relative_noise(gen, cp_values_numba(coords, weights, factors), noise)
            writer.add_partition(coords, vals.astype(dtype))
        writer.finish()
    dt = np.dtype(dtype)
    truth = CPTensor([A.astype(dt) for A in factors], weights=weights.astype(dt))
    return DaskSparseTensor(store), truth
