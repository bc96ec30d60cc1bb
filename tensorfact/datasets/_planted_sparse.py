"""Planted sparse tensors with a known low-rank CP signal and power-law-skewed modes."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _backend as B
from .._kernels.sparse import cp_values_numba
from .._validation import check_allocation, check_nonneg_float, check_positive_int, check_shape
from ..formats import SparseTensor
from ..tensors.cp import CPTensor
from ._common import add_relative_noise, output_converter

__all__ = ["planted_sparse_cp"]

def sparse_support_factors(gen: np.random.Generator, dims: tuple[int, ...], R: int, nnz: int,
                           marg: list[np.ndarray]) -> list[np.ndarray]:
    """Unit-norm factor columns supported on ``~(nnz / R)^(1/N)`` rows drawn from ``marg``.

    The planted model of ``exact=True``: component ``r`` is nonzero only on the
    product of its columns' supports, so the tensor has about ``nnz`` nonzeros
    and is exactly of rank ``R`` on them.
    """
    N = len(dims)
    k = [min(d, max(1, round((nnz / R) ** (1.0 / N)))) for d in dims]
    factors = []
    for m, d in enumerate(dims):
        A = np.zeros((d, R))
        for r in range(R):
            rows = gen.choice(d, size=k[m], replace=False, p=marg[m])
            col = gen.standard_normal(k[m])
            A[rows, r] = col / np.linalg.norm(col)
        factors.append(A)
    return factors


def _zipf_marginal(gen: np.random.Generator, n: int, skew: float) -> np.ndarray:
    """Probabilities ``p_i ∝ (1 + rank_i)^(-skew)`` over a random ranking of ``range(n)``."""
    w = np.arange(1, n + 1, dtype=np.float64) ** (-skew)
    p = np.empty(n)
    p[gen.permutation(n)] = w / w.sum()
    return p


def _draw(gen: np.random.Generator, p: np.ndarray, size: int) -> np.ndarray:
    """``size`` i.i.d. draws from ``p``: multinomial counts, repeated, then shuffled.

    Equivalent in distribution to inverse-CDF sampling, but sequential in memory
    (no binary search per draw), which matters at 10^7 draws.
    """
    counts = gen.multinomial(size, p / p.sum())
    out = np.repeat(np.arange(p.shape[0], dtype=np.int64), counts)
    gen.shuffle(out)
    return out


def planted_sparse_cp(
    shape: Sequence[int],
    rank: int,
    nnz: int,
    *,
    noise: float = 0.0,
    skew: float = 1.0,
    exact: bool = False,
    rng: None | int | np.random.Generator = None,
    dtype: Any = None,
    like: Any = None,
) -> tuple[SparseTensor, CPTensor]:
    """A sparse tensor carrying a planted low-rank CP signal.

    Two constructions, chosen by ``exact``:

    ``exact=False`` (observed entries, like review data): ``nnz`` distinct
    positions are drawn with independent power-law marginals per mode
    (``P(i) ∝ (1 + rank_i)^(-skew)`` over a random ranking of the indices, so a
    few "users"/"items" hold most entries) and the values are the planted CP
    model (Gaussian unit-norm factor columns, weights in ``[1, 2]``) evaluated
    there. Unstored entries are zeros of the tensor, so the tensor is *not*
    exactly of low rank: ``truth`` is the signal, not an exact decomposition.

    ``exact=True`` (an exactly low-rank sparse tensor): every factor column is
    sparse, its support drawn without replacement with the same power-law
    weights, with about ``k = round((nnz / rank)^(1/N))`` nonzeros per column.
    The tensor is the full CP model, stored on the union of the components'
    supports, so with ``noise=0`` it *equals* ``truth`` (a CP model of rank
    ``rank`` whose only nonzeros are the stored entries); its ``nnz`` is at
    most, and usually close to, the requested ``nnz``. This is the setting in
    which a solver can recover the plant to machine precision.

    Parameters
    ----------
    shape : sequence of int
        At least two modes.
    rank : int
    nnz : int
        Number of stored entries (``exact=True``: target, see above).
    noise : float
        Relative Gaussian noise on the stored values:
        ``||values - signal|| / ||signal|| = noise`` over the stored entries.
    skew : float
        Power-law exponent of the mode marginals; 0 gives uniform positions.
    exact : bool
        Choose the construction (see above).
    rng : None, int or numpy.random.Generator
    dtype : dtype, optional
        Floating dtype (default float64, or ``like``'s dtype).
    like : array, optional
        Create the arrays in this array's namespace and on its device (data
        are generated on the host, then moved).

    Returns
    -------
    X : SparseTensor
    truth : CPTensor
        The planted signal.

    Raises
    ------
    ValueError
        Bad sizes, or ``nnz`` larger than the positions the skewed marginals
        can realistically fill (``exact=False``).

    Examples
    --------
    >>> X, truth = planted_sparse_cp((50, 40, 30), rank=3, nnz=2000, rng=0)
    >>> X.nnz, X.shape
    (2000, (50, 40, 30))
    >>> Y, plant = planted_sparse_cp((50, 40, 30), rank=3, nnz=2000, exact=True, rng=0)
    >>> import numpy as np
    >>> bool(np.allclose(Y.to_dense(), plant.to_dense()))
    True
    """
    dims = check_shape(shape, min_ndim=2)
    R = check_positive_int(rank, "rank")
    nnz = check_positive_int(nnz, "nnz")
    noise = check_nonneg_float(noise, "noise")
    skew = check_nonneg_float(skew, "skew")
    total = math.prod(dims)
    if nnz > total:
        raise ValueError(f"nnz={nnz} exceeds the number of entries {total} of shape {dims}")
    check_allocation(R * (sum(dims) + 1), 8, f"rank={R} planted factors")
    check_allocation(nnz * (len(dims) + 1), 8, f"nnz={nnz} planted entries")
    gen = B.check_rng(rng)
    xp, conv = output_converter(like, dtype)
    marg = [_zipf_marginal(gen, d, skew) for d in dims]
    weights = 1.0 + gen.random(R)
    if exact:
        factors = sparse_support_factors(gen, dims, R, nnz, marg)
        parts = []
        for r in range(R):
            sup = [np.flatnonzero(A[:, r]) for A in factors]
            grid = np.meshgrid(*sup, indexing="ij")
            parts.append(np.stack([g.ravel() for g in grid], axis=1))
        allc = np.concatenate(parts, axis=0)
        lin = _sorted_unique(np.ravel_multi_index(tuple(allc.T), dims))
        coords = np.stack(np.unravel_index(lin, dims), axis=1).astype(np.int64)
    else:
        factors = []
        for d in dims:
            A = gen.standard_normal((d, R))
            factors.append(A / np.linalg.norm(A, axis=0))
        coords = _distinct_positions(gen, marg, dims, nnz)
    vals = add_relative_noise(gen, cp_values_numba(coords, weights, factors), noise)
    X = SparseTensor._trusted(xp, conv(coords, xp.int64), conv(vals), tuple(dims))
    truth = CPTensor([conv(A) for A in factors], weights=conv(weights))
    return X, truth


def _sorted_unique(a: np.ndarray) -> np.ndarray:
    """Sort-based ``numpy.unique`` (NumPy's hash-based one is slow on 10^7 int64)."""
    a = np.sort(a)
    if a.shape[0] < 2:
        return a
    keep = np.empty(a.shape[0], dtype=bool)
    keep[0] = True
    np.not_equal(a[1:], a[:-1], out=keep[1:])
    return a[keep]


def _distinct_positions(gen: np.random.Generator, marg: list[np.ndarray], dims: tuple[int, ...],
                        nnz: int) -> np.ndarray:
    """``nnz`` distinct multi-indices drawn from the product of ``marg``, C-order sorted."""
    strides = np.ones(len(dims), dtype=np.int64)
    for m in range(len(dims) - 2, -1, -1):
        strides[m] = strides[m + 1] * dims[m + 1]
    if math.prod(dims) > (1 << 62):
        raise ValueError(f"shape {dims} has too many entries for int64 linear indices")
    have = np.empty(0, dtype=np.int64)
    yield_rate = 1.0  # fraction of fresh draws that land on new positions
    for _ in range(10):
        need = nnz - have.shape[0]
        if need <= 0 or yield_rate < 0.005:  # done, or the marginals are saturated
            break
        n_draw = min(int(need / yield_rate * 1.1) + 64, 4 * nnz + 64)
        lin = np.zeros(n_draw, dtype=np.int64)
        for m, p in enumerate(marg):
            lin += _draw(gen, p, n_draw) * strides[m]
        before = have.shape[0]
        have = _sorted_unique(np.concatenate([have, lin]))
        yield_rate = (have.shape[0] - before) / n_draw
    if have.shape[0] < nnz:
        raise ValueError(
            f"could not draw nnz={nnz} distinct positions with skew-weighted marginals over "
            f"shape {dims}; lower nnz or skew"
        )
    if have.shape[0] > nnz:
        have = np.sort(gen.choice(have, size=nnz, replace=False))
    return np.stack(np.unravel_index(have, dims), axis=1).astype(np.int64)
