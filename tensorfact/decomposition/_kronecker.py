"""Nearest sums of Kronecker products (Van Loan–Pitsianis, GKPD) and factor-shape search."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B
from .._validation import (
    check_array,
    check_finite,
    check_int,
    check_positive_int,
    check_real,
    check_shape,
    check_tensor,
)
from ..formats._scale import scaled_array
from ..tenalg._kron import _infer_b_shape, group_modes
from ..tensors.kronecker import KroneckerTensor

__all__ = [
    "NearestKroneckerResult",
    "KroneckerShape",
    "nearest_kronecker",
    "gkpd",
    "kronecker_shapes",
]

Array = Any


@dataclass(frozen=True)
class NearestKroneckerResult:
    """Result of `tensorfact.nearest_kronecker`.

    Attributes
    ----------
    kt : KroneckerTensor
        The best rank-``rank`` sum of Kronecker products, 2 factors of shapes
        ``a_shape`` and ``b_shape``; term ``r`` is
        ``sqrt(s_r) U_r ⊗ sqrt(s_r) V_r`` (the singular value split evenly).
    singular_values : array
        Singular values of the rearranged matrix, descending, in ``W``'s
        namespace: all ``min(prod a_shape, prod b_shape)`` of them for
        ``method="svd"``, the ``rank + n_oversamples`` leading estimates for
        ``method="randomized"``.
    errors : tuple of float
        ``errors[r]`` is the Frobenius error of the best rank-``r``
        approximation, for ``r = 0 .. len(singular_values)``: the tail
        ``sqrt(sum_{i>=r} s_i^2)`` for the exact SVD;
        ``sqrt(||W||^2 - sum_{i<r} s_i^2)`` for the randomized one.
    norm : float
        ``||W||_F``.
    a_shape, b_shape : tuple of int
        Factor shapes (one entry per mode of ``W``).
    method : str
        ``"svd"`` or ``"randomized"``.
    error : float
        ``||W - kt.to_dense()||_F``, the error at the result's own rank
        (``errors[rank]``).
    rel_error : float
        ``error / ||W||_F`` (0 for a zero ``W``).

    Notes
    -----
    The error of any other rank is read off the singular values by
    `error_at` and `rel_error_at` (no recomputation).
    """

    kt: KroneckerTensor
    singular_values: Any
    errors: tuple[float, ...]
    norm: float
    a_shape: tuple[int, ...]
    b_shape: tuple[int, ...]
    method: str
    error: float
    rel_error: float

    @property
    def rank(self) -> int:
        """Rank of `kt`."""
        return self.kt.rank

    @property
    def max_rank(self) -> int:
        """Largest rank whose error is known (the Kronecker rank bound for the exact SVD)."""
        return len(self.errors) - 1

    def error_at(self, rank: int) -> float:
        """Frobenius error of the best rank-``rank`` approximation, ``0 <= rank <= max_rank``.

        No recomputation: read off the singular values.

        Raises
        ------
        ValueError
            ``rank`` is not an integer in ``0 .. max_rank``.
        """
        if isinstance(rank, bool) or not isinstance(rank, numbers.Integral) or rank < 0:
            raise ValueError(f"rank must be a non-negative integer, got {rank!r}")
        if rank > self.max_rank:
            raise ValueError(
                f"rank={rank} exceeds the largest rank with a known error, {self.max_rank}"
            )
        return self.errors[int(rank)]

    def rel_error_at(self, rank: int) -> float:
        """``error_at(rank) / ||W||_F`` (0 for a zero ``W``)."""
        return _relative(self.error_at(rank), self.norm)


def _relative(error: float, norm: float) -> float:
    """``error / norm``, 0 for a zero tensor."""
    return error / norm if norm > 0 else 0.0


def _check_float_tensor(W: Any, name: str = "W") -> tuple[ModuleType, Any]:
    """``(namespace, W)`` for an array of real numbers with non-empty modes.

    Integers and booleans are promoted to the default float (DESIGN.md), half
    precision (float16 / bfloat16, which have no SVD) to float32.
    """
    check_array(W, name, min_ndim=1)
    xp = B.namespace(W)
    return xp, check_tensor(W, xp, name=name, min_ndim=1, finite=False)


def _sign_fix(xp: ModuleType, U: Array, Vh: Array) -> tuple[Array, Array]:
    """Make the largest-magnitude entry of each column of U positive (flip V alike)."""
    idx = xp.argmax(xp.abs(U), axis=0)
    picked = xp.take_along_axis(U, idx[None, :], axis=0)[0, :]
    sgn = xp.where(picked < 0, -xp.ones_like(picked), xp.ones_like(picked))
    return U * sgn[None, :], Vh * sgn[:, None]


def _randomized_svd(xp: ModuleType, M: Array, k: int, n_oversamples: int, n_iter: int,
                    gen: np.random.Generator) -> tuple[Array, Array, Array]:
    """Halko–Martinsson–Tropp randomized SVD with QR-stabilised power iterations."""
    p, q = int(M.shape[0]), int(M.shape[1])
    ell = min(k + n_oversamples, p, q)
    Omega = B.random_normal(xp, (q, ell), gen, dtype=M.dtype, like=M)
    Q, _ = xp.linalg.qr(M @ Omega)
    Mt = xp.matrix_transpose(M)
    for _ in range(n_iter):
        Z, _ = xp.linalg.qr(Mt @ Q)
        Q, _ = xp.linalg.qr(M @ Z)
    Bsmall = xp.matrix_transpose(Q) @ M
    Ub, s, Vh = B.thin_svd(xp, Bsmall)
    return Q @ Ub, s, Vh


def nearest_kronecker(
    W: Array,
    /,
    a_shape: Sequence[int],
    b_shape: Sequence[int] | None = None,
    *,
    rank: int = 1,
    method: str = "svd",
    n_oversamples: int = 10,
    n_iter: int = 4,
    rng: None | int | np.random.Generator = None,
    check_finite: bool = True,
) -> NearestKroneckerResult:
    """Best rank-``rank`` sum of Kronecker products ``sum_r A_r ⊗ B_r`` to ``W`` (GKPD).

    Minimises ``||W - sum_{r<R} A_r ⊗ B_r||_F`` over ``A_r`` of shape
    ``a_shape`` and ``B_r`` of shape ``b_shape`` (N-way Kronecker product,
    ``i_n = j_n * b_n + k_n``). The Van Loan rearrangement
    (`rearrange`) maps every ``A ⊗ B`` to the rank-one matrix
    ``vec(A) vec(B)^T`` isometrically, so by Eckart–Young the optimum is the
    truncated SVD of ``M = rearrange(W, a_shape, b_shape)``, and the error of
    rank ``r`` is ``sqrt(sum_{i>=r} s_i^2)``: every rank's error comes from
    one SVD (`NearestKroneckerResult.error_at`).

    Parameters
    ----------
    W : array, N >= 1 modes, real numbers
        Integers and booleans are promoted to the default float, half
        precision (float16, bfloat16) is decomposed in float32.
    a_shape : sequence of N ints
        Shape of the first factor.
    b_shape : sequence of N ints, optional
        Shape of the second factor; defaults to ``W.shape // a_shape`` (every
        ``a_shape[n]`` must divide ``W.shape[n]``).
    rank : int, default 1
        Number of Kronecker terms, ``1 <= rank <= min(prod a_shape, prod b_shape)``.
    method : {"svd", "randomized"}
        ``"svd"``: exact thin SVD of ``M`` (all singular values, so the error
        of every rank is exact). ``"randomized"``: Halko–Martinsson–Tropp
        range finder with ``rank + n_oversamples`` columns and ``n_iter``
        power iterations, for large layers; errors from ``||W||_F`` minus the
        captured energy.
    n_oversamples, n_iter : int >= 0
        Randomized SVD parameters (checked, but not used, by ``"svd"``).
    rng : None, int or numpy.random.Generator
        Seed for the randomized sketch (drawn on the host, SPEC 7).
    check_finite : bool, default True
        Reject NaN/Inf in ``W``.

    Returns
    -------
    NearestKroneckerResult
        ``.kt`` (a 2-factor `KroneckerTensor` in ``W``'s
        namespace and dtype), ``.singular_values``, ``.errors``, ``.error``
        and ``.rel_error`` (at ``rank``), ``.error_at(r)`` and
        ``.rel_error_at(r)`` (any rank ``r``).

    Raises
    ------
    TypeError
        ``W`` is not an array of real numbers (complex, masked, object or
        string dtype), or a shape or option that must be an integer is not.
    ValueError
        Shapes that do not multiply to ``W.shape`` or have the wrong length,
        non-positive sizes, ``rank`` out of range, unknown ``method``, or
        non-finite ``W``.

    References
    ----------
    C. F. Van Loan and N. Pitsianis, "Approximation with Kronecker products",
    1993. M. G. A. Hameed, M. S. Tahaei, A. Mosleh, V. Partovi Nia,
    "Convolutional Neural Network Compression through Generalized Kronecker
    Product Decomposition", AAAI 2022. N. Halko, P.-G. Martinsson,
    J. A. Tropp, "Finding structure with randomness", SIAM Review, 2011.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A, Bm = rng.standard_normal((2, 3)), rng.standard_normal((4, 5))
    >>> res = nearest_kronecker(np.kron(A, Bm), (2, 3))
    >>> res.kt.shape, res.b_shape, res.error < 1e-12
    ((8, 15), (4, 5), True)
    >>> round(res.rel_error_at(0), 12)  # rank 0: the zero tensor
    1.0
    >>> bool(np.allclose(res.kt.to_dense(), np.kron(A, Bm)))
    True
    """
    xp, W = _check_float_tensor(W)
    shape = tuple(int(d) for d in W.shape)
    a, b = _infer_b_shape(shape, a_shape, b_shape)
    if method not in ("svd", "randomized"):
        raise ValueError(f"method must be 'svd' or 'randomized', got {method!r}")
    R = check_positive_int(rank, "rank")
    pa, pb = math.prod(a), math.prod(b)
    M = group_modes(W, (a, b))  # validates the shapes
    if R > min(pa, pb):
        raise ValueError(
            f"rank={R} exceeds the maximal Kronecker rank min(prod a_shape, prod b_shape) = "
            f"min({pa}, {pb}) = {min(pa, pb)}"
        )
    n_over = check_int(n_oversamples, "n_oversamples", low=0, what="an integer >= 0")
    n_it = check_int(n_iter, "n_iter", low=0, what="an integer >= 0")
    if check_finite:
        _finite(W, xp)
    # solve for scale * W (a power of two, 1 for ordinary data): the squares stay finite
    _, scale, norm_sq = scaled_array(W, xp)
    if scale != 1.0:
        M = M * scale
    if method == "svd":
        U, s, Vh = B.thin_svd(xp, M)
        s_host = B.to_numpy(s).astype(np.float64)
        scaled_errors = np.append(np.sqrt(np.cumsum((s_host**2)[::-1])[::-1]), 0.0)
    else:
        U, s, Vh = _randomized_svd(xp, M, R, n_over, n_it, B.check_rng(rng))
        s_host = B.to_numpy(s).astype(np.float64)
        captured = np.concatenate([[0.0], np.cumsum(s_host**2)])
        scaled_errors = np.sqrt(np.clip(norm_sq - captured, 0.0, None))
    errors = tuple(float(e) / scale for e in scaled_errors)
    U = U[:, :R]
    Vh = Vh[:R, :]
    U, Vh = _sign_fix(xp, U, Vh)
    root = xp.sqrt(s[:R]) / math.sqrt(scale)
    A = xp.reshape(xp.matrix_transpose(U * root[None, :]), (R,) + a)
    Bf = xp.reshape(Vh * root[:, None], (R,) + b)
    kt = KroneckerTensor([A, Bf])
    # the relative error from the scaled values: exact even where the data is subnormal
    rel_error = _relative(float(scaled_errors[R]), math.sqrt(norm_sq))
    return NearestKroneckerResult(
        kt=kt, singular_values=s / scale, errors=errors, norm=math.sqrt(norm_sq) / scale,
        a_shape=a, b_shape=b, method=method, error=errors[R], rel_error=rel_error,
    )


def _finite(W: Any, xp: ModuleType) -> None:
    check_finite(W, xp, name="W")


#: Alias of `nearest_kronecker` (the Generalized Kronecker Product Decomposition).
gkpd = nearest_kronecker


# --------------------------------------------------------------------------- #
# factor-shape search
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class KroneckerShape:
    """One candidate factorisation returned by `tensorfact.kronecker_shapes`.

    Attributes
    ----------
    shapes : tuple of tuple of int
        ``n_factors`` factor shapes whose elementwise product is the tensor shape.
    n_params : int
        Parameters of a rank-``rank`` `KroneckerTensor`
        with these factor shapes, ``rank * sum_s prod(shapes[s])``.
    compression_ratio : float
        ``prod(shape) / n_params``.
    """

    shapes: tuple[tuple[int, ...], ...]
    n_params: int
    compression_ratio: float


def _skew(shapes: tuple[tuple[int, ...], ...]) -> float:
    """How far the factors are from hypercubes: sum of |log size - mean log size| per factor."""
    total = 0.0
    for sh in shapes:
        logs = [math.log(d) for d in sh]
        mean = sum(logs) / len(logs)
        total += sum(abs(v - mean) for v in logs)
    return round(total, 12)


def _ordered_factorisations(n: int, k: int) -> list[tuple[int, ...]]:
    """All ordered k-tuples of positive integers whose product is n."""
    if k == 1:
        return [(n,)]
    out = []
    for d in range(1, n + 1):
        if n % d == 0:
            for rest in _ordered_factorisations(n // d, k - 1):
                out.append((d,) + rest)
    return out


def kronecker_shapes(
    shape: Sequence[int],
    /,
    *,
    n_factors: int = 2,
    rank: int = 1,
    compression: float | None = None,
    allow_trivial: bool = False,
    max_candidates: int | None = 20,
    max_enumerate: int = 2_000_000,
) -> list[KroneckerShape]:
    """Enumerate the factor shapes of a Kronecker decomposition of a tensor shape.

    Every mode ``I_n`` is split into ``n_factors`` ordered divisors
    ``I_n = d_0 * ... * d_{S-1}`` independently, and every combination across
    modes is a candidate, with its parameter count at ``rank`` and its
    compression ratio.

    Parameters
    ----------
    shape : sequence of ints
        Tensor shape (e.g. ``(out_features, in_features)`` or
        ``(out_channels, in_channels, kh, kw)``).
    n_factors : int, default 2
        Number of Kronecker factors S.
    rank : int, default 1
        Number of Kronecker terms used for the parameter count.
    compression : float, optional
        Target compression ratio, finite and positive. If given, candidates are sorted by
        ``|log(ratio / compression)|`` (closest first); otherwise by
        decreasing compression ratio. Ties are broken in favour of squarer
        factors (smallest ``sum_s sum_n |log d_sn - mean_n log d_sn|``): a
        ``(1, 64) ⊗ (64, 1)`` split is an outer product of vectors (matrix
        rank 1) while ``(8, 8) ⊗ (8, 8)`` with the same parameter count can
        reach full rank.
    allow_trivial : bool, default False
        Keep candidates in which a factor is all ones (a scalar factor).
    max_candidates : int >= 1 or None, default 20
        Return at most this many (``None``: all).
    max_enumerate : int >= 1, default 2_000_000
        Refuse (``ValueError``) to enumerate more combinations than this.

    Returns
    -------
    list of KroneckerShape

    Raises
    ------
    ValueError
        An empty shape, non-positive sizes, ``n_factors < 1``, ``compression``
        not finite and positive, ``max_candidates`` or ``max_enumerate`` below
        1, or too many combinations.
    TypeError
        A size or integer option that is not an integer, ``compression`` not
        a number.

    Examples
    --------
    >>> c = kronecker_shapes((64, 64), max_candidates=1)[0]
    >>> c.shapes, c.n_params, c.compression_ratio
    (((8, 8), (8, 8)), 128, 32.0)
    >>> best = kronecker_shapes((768, 3072), compression=200.0, max_candidates=1)[0]
    >>> best.shapes, best.n_params, round(best.compression_ratio, 1)
    (((8, 24), (96, 128)), 12480, 189.0)
    """
    shp = check_shape(shape, "shape")
    S = check_positive_int(n_factors, "n_factors")
    R = check_positive_int(rank, "rank")
    if compression is not None:
        compression = check_real(compression, "compression", low=0.0, low_open=True)
    if max_candidates is not None:
        max_candidates = check_positive_int(max_candidates, "max_candidates")
    max_enumerate = check_positive_int(max_enumerate, "max_enumerate")
    per_mode = [_ordered_factorisations(i, S) for i in shp]
    total = math.prod(len(p) for p in per_mode)
    if total > max_enumerate:
        raise ValueError(
            f"{total} candidate factorisations exceed max_enumerate={max_enumerate}; "
            "use fewer factors or raise max_enumerate"
        )
    size = math.prod(shp)
    cands = []
    for combo in itertools.product(*per_mode):
        shapes = tuple(tuple(combo[n][s] for n in range(len(shp))) for s in range(S))
        sizes = [math.prod(sh) for sh in shapes]
        if not allow_trivial and S > 1 and min(sizes) == 1:
            continue
        n_params = R * sum(sizes)
        cands.append((shapes, n_params, size / n_params, _skew(shapes)))
    if compression is not None:
        target = compression
        cands.sort(key=lambda c: (round(abs(math.log(c[2] / target)), 12), c[3], c[0]))
    else:
        cands.sort(key=lambda c: (-c[2], c[3], c[0]))
    if max_candidates is not None:
        cands = cands[:max_candidates]
    return [KroneckerShape(shapes=c[0], n_params=c[1], compression_ratio=c[2]) for c in cands]
