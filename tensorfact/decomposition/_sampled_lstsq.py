"""Least squares against a Khatri-Rao product on leverage-sampled rows."""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B
from .._validation import check_choice, check_positive_int
from ..formats import SparseRows
from ..tenalg._khatri_rao import _check_factors, gather_krp_rows
from ..tenalg._sampling import KRPSample, _check_threshold, sample_krp_rows

__all__ = ["SampledLstsqResult", "sampled_krp_lstsq"]

_METHODS = ("gram", "qr")


@dataclass(frozen=True)
class SampledLstsqResult:
    """Result of `tensorfact.sampled_krp_lstsq`.

    Attributes
    ----------
    coef : (m, R) array
        ``B`` minimising ``||K B^T - Y||_F`` on the sampled rows, ``K`` the
        Khatri-Rao product; in the factors' namespace, device and dtype.
    residual_sq : float
        Importance-weighted residual ``sum_j w_j ||Y_j - B K_j||^2`` over the
        sampled rows: an estimate of ``||K B^T - Y||_F^2`` (slightly
        optimistic for ``method="qr"``, which minimises it); ``inf`` where
        that square exceeds the floating-point range (``rel_error`` stays
        exact: the problem is solved in rescaled units).
    sample : KRPSample
        The rows used, their counts, probabilities and weights.
    method : str
        ``"gram"`` or ``"qr"``.
    rel_error : float
        ``sqrt(residual_sq / sum_j w_j ||Y_j||^2)``: the importance-weighted
        estimate of ``||K B^T - Y||_F / ||Y||_F`` (0 when the sampled rows
        are all zero).
    """

    coef: Any
    residual_sq: float
    sample: KRPSample
    method: str
    rel_error: float


def sampled_krp_lstsq(
    factors: Sequence[Any],
    rhs: Any,
    /,
    n_samples: int,
    *,
    rng: None | int | np.random.Generator = None,
    method: str = "qr",
    sampler: str = "product",
    deterministic_threshold: float | None = None,
    scores: Sequence[Any] | None = None,
    n_columns: int | None = None,
    check_finite: bool = True,
) -> SampledLstsqResult:
    """Solve ``min_B ||(A_0 ⊙ ... ⊙ A_{k-1}) B^T - Y||_F`` on sampled rows.

    ``K = A_0 ⊙ ... ⊙ A_{k-1}`` has ``prod_m I_m`` rows, too many to form.
    Rows are drawn by `tensorfact.sample_krp_rows` (product of the
    factors' leverage-score distributions) and only they, and the matching
    rows of ``Y``, are touched.

    * ``method="gram"`` (SPALS): ``B^T = (K^T K)^+ (K_S^T W Y_S)`` with the
      exact Gram ``K^T K = *_m A_m^T A_m`` (Hadamard product, cheap) and an
      unbiased sampled right-hand side.
    * ``method="qr"`` (CP-ARLS-LEV): the fully sampled weighted problem
      ``min ||W^(1/2) (K_S B^T - Y_S)||`` solved by thin QR of
      ``W^(1/2) K_S`` (pseudo-inverse of the triangular factor when it is
      rank deficient). Exact when ``Y = K B^T`` exactly and ``K_S`` has full
      column rank.

    Parameters
    ----------
    factors : sequence of (I_m, R) arrays
        Khatri-Rao factors, any array API namespace (one namespace/device).
    rhs : (prod I_m, m) array or callable
        ``Y`` with rows in the C order of `tensorfact.khatri_rao`; or a
        function ``rhs(indices)`` receiving the ``(n_rows, k)`` host int64
        multi-indices of the sampled rows and returning either their rows as
        an ``(n_rows, m)`` array, or a sparse ``(row, col, value)`` triplet
        of 1-D arrays (COO, ``row`` indexes the sampled rows; needs
        ``n_columns``).
    n_samples : int
        Number of random draws.
    rng : None, int or numpy.random.Generator
        Randomness for the draws (host).
    method : {"qr", "gram"}
        See above.
    sampler : {"product", "exact"}
        How rows are drawn (`tensorfact.sample_krp_rows`): from the
        product of the factors' leverage scores, or from the exact leverage
        scores of the Khatri-Rao product.
    deterministic_threshold : float, optional
        Rows with sampling probability at least this value are included
        deterministically with weight 1 (Larsen & Kolda's hybrid scheme);
        ``0`` includes every row (exact least squares, small problems only).
    scores : sequence of (I_m,) arrays, optional
        Precomputed leverage scores of the factors.
    n_columns : int, optional
        Number of columns ``m`` of ``Y``; required only when ``rhs`` returns
        COO triplets.
    check_finite : bool
        Reject NaN/Inf in the factors and the gathered rows.

    Returns
    -------
    SampledLstsqResult

    Raises
    ------
    ValueError
        Bad ``method``, ``n_samples``, threshold, factor shapes, ``rhs`` with
        the wrong number of rows, NaN/Inf, a COO ``rhs`` without ``n_columns``.
    TypeError
        ``rhs`` neither an array nor callable, or from another namespace.

    References
    ----------
    See `tensorfact.tenalg.krp_sampler` for the papers behind the samplers
    (SPALS, NeurIPS 2016; Larsen & Kolda, 2022; Bharadwaj et al., 2023).

    Examples
    --------
    >>> import numpy as np
    >>> from tensorfact import khatri_rao
    >>> gen = np.random.default_rng(0)
    >>> A, Bm = gen.standard_normal((60, 3)), gen.standard_normal((50, 3))
    >>> coef = gen.standard_normal((7, 3))
    >>> Y = khatri_rao([A, Bm]) @ coef.T
    >>> res = sampled_krp_lstsq([A, Bm], Y, 300, rng=0)
    >>> bool(np.allclose(res.coef, coef))
    True
    """
    _check_factors(factors)
    xp = B.namespace(*factors, name="factors")
    method = check_choice(method, "method", _METHODS)
    tau = _check_threshold(deterministic_threshold)
    if n_columns is not None:
        n_columns = check_positive_int(n_columns, "n_columns")
    factors = [B.as_float_array(A, xp, name=f"factors[{m}]") for m, A in enumerate(factors)]
    dt = factors[0].dtype
    for m, A in enumerate(factors):
        if A.dtype != dt:
            raise TypeError(f"factors[{m}] has dtype {A.dtype}, factors[0] has {dt}")
        if check_finite and not bool(xp.all(xp.isfinite(A))):
            raise ValueError(f"factors[{m}] contains NaN or Inf")
    n_rows_total = 1
    for A in factors:
        n_rows_total *= int(A.shape[0])
    if callable(rhs) and not hasattr(rhs, "shape"):
        get_rows = rhs
    elif hasattr(rhs, "shape"):
        B.namespace(factors[0], rhs, name="rhs")
        if rhs.ndim != 2 or int(rhs.shape[0]) != n_rows_total:
            raise ValueError(
                f"rhs must have shape ({n_rows_total}, m) to match the Khatri-Rao product, "
                f"got {tuple(rhs.shape)}"
            )
        Y = B.as_float_array(rhs, xp, name="rhs")
        if Y.dtype != dt:
            Y = xp.astype(Y, dt)

        def get_rows(idx: np.ndarray) -> Any:
            lin = np.ravel_multi_index(tuple(idx.T), tuple(int(A.shape[0]) for A in factors))
            return xp.take(Y, B.from_numpy(xp, lin.astype(np.int64), like=Y), axis=0)
    else:
        raise TypeError(f"rhs must be a 2-D array or a callable, got {type(rhs).__name__}")

    sample = sample_krp_rows(factors, n_samples, rng=rng, scores=scores, sampler=sampler,
                             deterministic_threshold=tau)
    rows = get_rows(sample.indices)
    rows = _as_rows(xp, rows, factors[0], n_columns, sample.n_rows, check_finite)
    # data of extreme magnitude: solve in units where squares stay in range (exact powers
    # of two), then scale back (coef by 2^(y - a), residual by 2^(2y))
    exps = [_pow2_exponent(xp, A) for A in factors]
    factors = [_times_pow2(A, -e) for A, e in zip(factors, exps)]
    y_exp = _pow2_exponent(xp, rows.val if isinstance(rows, SparseRows) else rows)
    if y_exp:
        if isinstance(rows, SparseRows):
            rows = SparseRows(rows.row, rows.col, _times_pow2(rows.val, -y_exp), rows.n_columns)
        else:
            rows = _times_pow2(rows, -y_exp)
    grams = [xp.matrix_transpose(A) @ A for A in factors] if method == "gram" else None
    coef, resid = solve_sampled(xp, factors, sample, rows, method, grams=grams)
    w = B.from_numpy(xp, sample.weights, like=factors[0], dtype=dt)
    yy = _weighted_sq_norm(xp, w, rows)
    if not (math.isfinite(resid) and math.isfinite(yy)
            and bool(xp.all(xp.isfinite(coef)))):
        raise FloatingPointError(
            "sampled_krp_lstsq produced a non-finite solution: the factors or rhs hold NaN/Inf "
            "(check_finite=False) or the sampled problem overflowed"
        )
    rel = math.sqrt(resid / yy) if yy > 0 else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow: refused just below
        coef = _times_pow2(coef, y_exp - sum(exps))
    if not bool(xp.all(xp.isfinite(coef))):
        raise FloatingPointError(
            "sampled_krp_lstsq: the solution's entries exceed the floating-point range of "
            f"{dt} (rhs much larger than the factors' products)"
        )
    with np.errstate(over="ignore", under="ignore"):
        resid = float(np.ldexp(resid, 2 * y_exp))  # inf where the true value exceeds float
    return SampledLstsqResult(coef, resid, sample, method, rel)


#: arrays whose largest magnitude lies in [2^-8, 2^8] are used as they are
_SAFE_EXPONENT = 8


def _pow2_exponent(xp: ModuleType, x: Any) -> int:
    """``e`` with ``max|x| / 2^e`` in ``[0.5, 1)`` when ``max|x|`` is extreme, else 0."""
    if math.prod(int(s) for s in x.shape) == 0:
        return 0
    m = max(B.to_float(xp.max(x)), -B.to_float(xp.min(x)))
    if not (m > 0 and math.isfinite(m)):
        return 0
    e = math.frexp(m)[1]
    return 0 if -_SAFE_EXPONENT <= e <= _SAFE_EXPONENT else e


def _times_pow2(x: Any, k: int) -> Any:
    """``x * 2^k`` in steps that never overflow the scalar itself (exact for normal numbers)."""
    while k > 1000:
        x, k = x * 2.0**1000, k - 1000
    while k < -1000:
        x, k = x * 2.0**-1000, k + 1000
    return x * 2.0**k if k else x


def _as_rows(xp: ModuleType, rows: Any, like: Any, n_columns: int | None, n_rows: int,
             check_finite: bool) -> Any:
    if isinstance(rows, tuple):
        if len(rows) != 3:
            raise ValueError("a sparse rhs must return a (row, col, value) triplet")
        if n_columns is None:
            raise ValueError("n_columns is required when rhs returns (row, col, value) triplets")
        parts = []
        for what, a, kinds in (("row", rows[0], "iu"), ("col", rows[1], "iu"),
                               ("value", rows[2], "biuf")):
            h = np.asarray(B.to_numpy(a) if B.is_array(a) else a)
            if h.ndim != 1 or h.dtype.kind not in kinds:
                raise TypeError(f"rhs must return 1-D (row, col, value) arrays with integer "
                                f"indices; its {what} array has shape {h.shape} and dtype "
                                f"{h.dtype}")
            parts.append(h)
        r, c, v = parts
        if r.shape[0] and (r.min() < 0 or r.max() >= n_rows):
            raise ValueError(f"rhs returned a row index out of range [0, {n_rows}) (one row per "
                             "sampled index)")
        try:
            out = SparseRows(B.from_numpy(xp, r.astype(np.int64), like=like, dtype=None),
                             B.from_numpy(xp, c.astype(np.int64), like=like, dtype=None),
                             B.from_numpy(xp, v, like=like, dtype=like.dtype), n_columns)
        except (TypeError, ValueError) as exc:
            raise type(exc)(f"rhs returned an invalid (row, col, value) triplet: {exc}") from None
        if check_finite and not bool(xp.all(xp.isfinite(out.val))):
            raise ValueError("rhs returned NaN or Inf")
        return out
    if not B.is_array(rows):
        raise TypeError(
            f"rhs must return an array of shape ({n_rows}, m) or a (row, col, value) triplet, "
            f"got {type(rows).__name__}"
        )
    B.namespace(like, rows, name="rhs")
    if rows.ndim != 2 or int(rows.shape[0]) != n_rows:
        raise ValueError(
            f"rhs must return an array of shape ({n_rows}, m), got {tuple(rows.shape)}"
        )
    rows = B.as_float_array(rows, xp, name="rhs")
    if rows.dtype != like.dtype:
        rows = xp.astype(rows, like.dtype)
    if check_finite and not bool(xp.all(xp.isfinite(rows))):
        raise ValueError("rhs returned NaN or Inf")
    return rows


def solve_sampled(xp: ModuleType, factors: Sequence[Any], sample: KRPSample, rows: Any,
                  method: str, *, grams: Sequence[Any] | None = None) -> tuple[Any, float]:
    """Solve the sampled problem; ``rows`` dense ``(n_rows, m)`` or ``SparseRows``.

    Returns ``(coef, weighted residual estimate)``.
    """
    out_rows, coef, resid = solve_sampled_rows(xp, factors, sample, rows, method, grams=grams)
    if out_rows is not None:
        coef = expand_rows(xp, rows.n_columns, out_rows, coef)
    return coef, resid


def expand_rows(xp: ModuleType, n: int, index: Any, rows: Any) -> Any:
    """The ``(n, R)`` matrix with ``rows`` at the (distinct) ``index`` and zeros elsewhere."""
    if B.is_numpy(xp):
        out = np.zeros((n, int(rows.shape[1])), dtype=rows.dtype)
        out[index] = rows
        return out
    return B.scatter_add(xp, n, index, rows)


def _distinct_rows(xp: ModuleType, col: Any, n: int) -> tuple[Any, Any]:
    """``(sorted distinct values of col, position of each entry among them)``.

    NumPy with many entries for the range ``[0, n)``: a marker array and a
    cumulative sum, ``O(len(col) + n)`` (a sort would cost
    ``O(len(col) log len(col))``); otherwise ``unique_inverse``.
    """
    m = int(col.shape[0])
    if B.is_numpy(xp) and m * math.log2(m + 2) > n:
        mark = np.zeros(n, dtype=bool)
        mark[col] = True
        pos = np.cumsum(mark, dtype=np.int64) - 1
        return np.flatnonzero(mark), pos[col]
    return xp.unique_inverse(col)


def solve_sampled_rows(xp: ModuleType, factors: Sequence[Any], sample: KRPSample, rows: Any,
                       method: str, *, grams: Sequence[Any] | None = None, K: Any = None
                       ) -> tuple[Any | None, Any, float]:
    """`solve_sampled` keeping only the solution rows that can be nonzero.

    For ``SparseRows`` the solution is zero in every row whose index the
    sampled entries never hold; returns ``(index, coef rows at index,
    residual estimate)``, with work and memory proportional to the sampled
    entries instead of the free mode's size. Dense rows give ``(None, coef,
    residual estimate)``. ``K``: the sampled Khatri-Rao rows, when the caller
    has gathered them (``factors`` then only gives dtype and device).
    """
    out_rows = None
    if isinstance(rows, SparseRows):
        out_rows, inverse = _distinct_rows(xp, rows.col, rows.n_columns)
        rows = SparseRows(rows.row, inverse, rows.val, max(int(out_rows.shape[0]), 1))
    like = factors[0]
    dt = like.dtype
    R = int(like.shape[1])
    idx = sample.indices
    if not B.is_numpy(xp):
        idx = B.from_numpy(xp, idx, like=like, dtype=None)
    if K is None:
        K = gather_krp_rows(xp, factors, idx)  # (n_rows, R)
    w = B.from_numpy(xp, sample.weights, like=like, dtype=dt)
    if method == "gram":
        if grams is None:
            grams = [xp.matrix_transpose(A) @ A for A in factors]
        G = grams[0]
        for g in grams[1:]:
            G = G * g
        Kw = K * w[:, None]
        MT = _rows_t_matmul(xp, Kw, rows)  # (m, R) = Y_S^T W K_S
        coef = B.spd_solve_right(xp, MT, G, what="Khatri-Rao Gram matrix")
        KtWK = xp.matrix_transpose(K) @ Kw
    else:
        sw = xp.sqrt(w)
        with B.linalg_guard("sampled least squares (QR)"):
            Q, Rm = xp.linalg.qr(K * sw[:, None])
        ZT = _rows_t_matmul(xp, Q * sw[:, None], rows)  # (m, R) = (Q^T W^1/2 Y)^T
        d = xp.abs(xp.linalg.diagonal(Rm))
        dmax = B.to_float(xp.max(d))
        dmin = B.to_float(xp.min(d))
        eps = B.finfo_eps(xp, dt)
        if int(K.shape[0]) >= R and dmax > 0 and dmin > max(K.shape) * eps * dmax:
            # invert the R x R triangle, then one GEMM (a solve with m right-hand
            # sides is much slower for the tall factors of large modes)
            eye = xp.eye(R, dtype=dt, device=B.device(like))
            coef = ZT @ xp.matrix_transpose(xp.linalg.solve(Rm, eye))
        else:
            warnings.warn(
                "the sampled Khatri-Rao rows are rank deficient; solving with a pseudo-inverse "
                "(increase n_samples or lower the rank)",
                B.SingularGramWarning,
                stacklevel=3,
            )
            with B.linalg_guard("sampled least squares (pseudo-inverse)"):
                coef = ZT @ xp.matrix_transpose(xp.linalg.pinv(Rm))
        MT = ZT @ Rm  # Y_S^T W K_S
        KtWK = xp.matrix_transpose(Rm) @ Rm
    # sum_j w_j ||y_j - B k_j||^2 expanded, so that only one pass over the rows is needed
    yy = _weighted_sq_norm(xp, w, rows)
    cross = B.to_float(xp.sum(coef * MT))
    quad = B.to_float(xp.sum((xp.matrix_transpose(coef) @ coef) * KtWK))
    if out_rows is not None:
        coef = coef[:int(out_rows.shape[0]), ...]  # no sampled entry: one padding row
    return out_rows, coef, max(yy - 2.0 * cross + quad, 0.0)


def _weighted_sq_norm(xp: ModuleType, w: Any, rows: Any) -> float:
    """``sum_j w_j ||y_j||^2`` for dense or COO rows."""
    if isinstance(rows, SparseRows):
        return B.to_float(xp.sum(xp.take(w, rows.row) * rows.val * rows.val))
    return B.to_float(xp.vecdot(w, xp.sum(rows * rows, axis=1)))


def _rows_t_matmul(xp: ModuleType, L: Any, rows: Any) -> Any:
    """``rows^T @ L`` for dense rows ``(n, m)`` or COO rows; returns ``(m, R)``."""
    if isinstance(rows, SparseRows):
        return B.coo_matmul(xp, rows.n_columns, rows.col, rows.row, rows.val, L)
    return xp.matrix_transpose(rows) @ L
