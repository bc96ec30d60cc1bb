"""Non-negative CP decomposition: HALS and multiplicative updates."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B
from .._kernels.nonneg import hals_sweeps_numba, hals_sweeps_xp
from .._validation import check_choice, check_nonneg_float, check_positive_int, check_rank
from ..formats import TensorFormat, as_format
from ..tensors.cp import CPTensor
from . import _cp_als as als
from ._monitor import IterationMonitor, check_callback
from ._results import CPALSResult

__all__ = ["nonnegative_cp"]

logger = logging.getLogger("tensorfact.nonnegative_cp")

Callback = Callable[[int, CPTensor, float], Any]


def nonnegative_cp(
    X: Any,
    /,
    rank: int,
    *,
    method: str = "hals",
    init: str | CPTensor = "svd",
    max_iter: int = 100,
    tol: float = 1e-8,
    inner_max_iter: int = 5,
    inner_tol: float = 1e-8,
    rng: None | int | np.random.Generator = None,
    callback: Callback | None = None,
    verbose: bool = False,
    check_finite: bool = True,
) -> CPALSResult:
    """Non-negative CP decomposition by HALS or multiplicative updates.

    Fits ``X ≈ sum_r w_r a_r^(0) ∘ ... ∘ a_r^(N-1)`` with every factor entry
    and weight ``>= 0``, for data ``X >= 0``. Each sweep visits the modes in
    order; mode ``n`` asks the data for its MTTKRP ``M`` (dense: the
    dimension tree, two GEMM passes over ``X`` per sweep; sparse: one pass
    over the nonzeros per mode) and uses the Hadamard product ``G`` of the
    other factors' Gram matrices:

    - ``method="hals"`` (hierarchical ALS, Cichocki & Phan 2009): column by
      column, ``a_r <- max(eps, (M[:, r] - sum_{k != r} a_k G[k, r]) /
      G[r, r])``, the exact minimiser over that column; up to
      ``inner_max_iter`` sweeps over the columns reuse ``M`` and ``G``
      (Gillis & Glineur 2012). The error never increases.
    - ``method="mu"`` (Lee & Seung multiplicative updates):
      ``A <- A * max(M, eps) / max(A G, eps)``, one update per mode.

    ``eps`` is relative to the data's scale (machine epsilon times the
    largest entry of the update's solution), so results do not depend on
    the data's units. The relative error comes from the last MTTKRP,
    ``||X||^2 - 2 <M, A> + sum(G * A^T A)``, and is recomputed exactly when
    that formula would lose precision.

    Parameters
    ----------
    X : array of shape (I_0, ..., I_{N-1}), N >= 2, or a data format
        Non-negative data: an array of any array API namespace (integers and
        booleans are promoted to the default float), a ``SparseTensor`` or
        any `tensorfact.formats.TensorFormat`. Dense, Dask dense and sparse
        data are screened for negative entries (one pass); formats that keep
        their entries elsewhere (a partitioned store) are trusted.
    rank : int
        Number of components, ``1 <= rank <= min_n prod_{m != n} I_m``.
    method : {"hals", "mu"}
        Hierarchical ALS (default) or multiplicative updates.
    init : {"svd", "random"} or CPTensor
        ``"svd"``: absolute values of the leading left singular vectors of
        ``unfold(X, n)`` for modes ``1, ..., N-1`` (random columns where
        ``rank > I_n``); mode 0, updated first, starts from its MTTKRP with
        those factors. ``"random"``: absolute values of standard normal
        factors. Either is scaled by the multiple that fits ``X`` best and
        floored at ``sqrt(eps)`` times its largest entry (multiplicative
        updates cannot leave zero). A non-negative ``CPTensor`` is used as
        given (its weights included; never modified).
    max_iter : int
        Most sweeps over the modes.
    tol : float
        The run has converged once two consecutive sweeps' relative errors
        differ by less than ``tol`` (``tol=0``: ``max_iter`` sweeps).
    inner_max_iter : int
        HALS: most column sweeps per mode and outer sweep (ignored by "mu").
    inner_tol : float
        HALS: stop a mode's column sweeps when one changes the factor by less
        than ``inner_tol`` times the first one (squared norms).
    rng : None, int or numpy.random.Generator
        Seed or generator of the random draws of ``init`` (made on the host).
    callback : callable, optional
        ``callback(iteration, cp, rel_error)`` runs after each sweep; a
        ``True`` return value ends the run.
    verbose : bool
        Display a tqdm progress bar with the relative error.
    check_finite : bool
        Refuse ``X`` holding NaN or Inf.

    Returns
    -------
    CPALSResult
        ``(cp, n_iter, converged, rel_error, history)``; ``cp`` has unit-norm
        non-negative factor columns and non-negative weights.

    Raises
    ------
    ValueError
        Negative entries in ``X``; bad ``rank``, ``method``, ``max_iter``,
        ``tol``, ``inner_max_iter``, ``inner_tol``; a tensor with fewer than
        two modes or an empty mode; NaN/Inf in ``X``; an ``init`` CPTensor
        with negative entries, the wrong shape or rank.
    TypeError
        Complex ``X``, ``init`` from a different namespace or dtype.
    FloatingPointError
        If an iterate becomes non-finite.

    References
    ----------
    Cichocki & Phan, "Fast local algorithms for large scale nonnegative
    matrix and tensor factorizations", IEICE Trans. Fundamentals, 2009.
    Gillis & Glineur, "Accelerated multiplicative updates and hierarchical
    ALS algorithms for nonnegative matrix factorization", Neural
    Computation, 2012.
    Lee & Seung, "Algorithms for non-negative matrix factorization", NIPS,
    2001.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorfact import CPTensor
    >>> g = np.random.default_rng(0)
    >>> truth = CPTensor([g.uniform(size=(s, 3)) for s in (20, 30, 40)])
    >>> res = nonnegative_cp(truth.to_dense(), 3, init="random", rng=0, max_iter=500)
    >>> bool(res.rel_error < 1e-4), bool(res.cp.factor_match_score(truth) > 0.99)
    (True, True)
    """
    data = as_format(X, check_finite=check_finite)
    R = check_rank(rank, data.shape)
    method = check_choice(method, "method", ("hals", "mu"))
    als.check_init(init, ("svd", "random"))
    max_iter, inner_max_iter = (check_positive_int(max_iter, "max_iter"),
                                check_positive_int(inner_max_iter, "inner_max_iter"))
    tol, inner_tol = check_nonneg_float(tol, "tol"), check_nonneg_float(inner_tol, "inner_tol")
    gen = B.check_rng(rng)
    check_callback(callback)
    _check_nonnegative(data)

    data, scale, normX2 = als.scaled_data(data)
    if normX2 == 0.0:
        return als.zero_result(data, R)
    factors = _initial_factors(data, R, init, gen, scale)
    update: Callable[..., Any]
    if method == "hals":
        update = partial(_hals_update, max_sweeps=inner_max_iter, tol=inner_tol)
    else:
        update = _mu_update
    return _iterate(data, factors, normX2, scale, update, fit_scale=isinstance(init, str),
                    max_iter=max_iter, tol=tol, callback=callback, verbose=verbose)


# --------------------------------------------------------------------------- checks, init
def _check_nonnegative(data: TensorFormat, name: str = "X") -> None:
    """``ValueError`` naming ``name`` when the data has a negative entry.

    Dense and sparse formats (and any format holding its entries as ``X`` or
    ``values``) are screened by one reduction; other formats are trusted.
    """
    xp = data.xp
    entries = getattr(data, "values", None)
    if entries is None:
        entries = getattr(data, "X", None)
    if entries is None or math.prod(int(s) for s in entries.shape) == 0:
        return
    low = B.to_float(xp.min(entries))
    if low < 0:
        raise ValueError(f"{name} has negative entries (smallest {low:.6g}); "
                         f"nonnegative_cp needs {name} >= 0")


def _initial_factors(data: TensorFormat, R: int, init: Any, gen: np.random.Generator,
                     scale: float) -> list[Any]:
    """Non-negative initial factors (the model's scale in factor 0)."""
    xp = data.xp
    if isinstance(init, CPTensor):
        factors = als.initial_factors(data, R, init, gen)  # validated: shape, rank, dtype, finite
        for n, A in enumerate(factors):
            if bool(xp.any(A < 0)):
                raise ValueError(f"init.factors[{n}] has negative entries; nonnegative_cp "
                                 "needs a non-negative init")
        w = xp.asarray(init.weights, dtype=data.dtype)
        if bool(xp.any(w < 0)):
            raise ValueError("init.weights has negative entries; nonnegative_cp needs a "
                             "non-negative init")
        return [factors[0] * (w * scale)[None, :]] + list(factors[1:])
    factors = [xp.abs(A) for A in als.initial_factors(data, R, init, gen)]
    if init == "svd":  # mode 0 was left for the first update: start it from its MTTKRP
        factors[0] = xp.abs(data.mttkrp(factors, 0))
    floor = math.sqrt(B.finfo_eps(xp, data.dtype))
    return [xp.clip(A, min=floor * B.to_float(xp.max(A))) for A in factors]


# --------------------------------------------------------------------------- updates
def _hals_update(xp: ModuleType, A: Any, M: Any, G: Any, eps: float, *, max_sweeps: int,
                 tol: float) -> Any:
    big = B.to_float(xp.max(M)) / max(B.to_float(xp.max(xp.linalg.diagonal(G))), 1e-300)
    floor = eps * big if big > 0 and math.isfinite(big) else 0.0
    if B.is_numpy(xp):
        return hals_sweeps_numba(A, M, G, floor, max_sweeps, tol)[0]
    return hals_sweeps_xp(xp, A, M, G, floor, max_sweeps, tol)[0]


def _mu_update(xp: ModuleType, A: Any, M: Any, G: Any, eps: float) -> Any:
    top = B.to_float(xp.max(M))
    delta = eps * top if top > 0 else float(np.finfo(np.float32).tiny)
    return A * xp.clip(M, min=delta) / xp.clip(A @ G, min=delta)


def _best_multiple(xp: ModuleType, A: Any, M: Any, G: Any) -> Any:
    """``c A`` with the ``c > 0`` that minimises ``||X - c [[A; K]]||`` (``M = X_(n) K``)."""
    num = B.to_float(xp.sum(M * A))
    den = B.to_float(xp.sum(G * (xp.matrix_transpose(A) @ A)))
    c = num / den if den > 0 else 0.0
    return A * c if c > 0 and math.isfinite(c) else A


# --------------------------------------------------------------------------- solver loop
def _iterate(data: TensorFormat, init_factors: list[Any], normX2: float, scale: float,
             update: Callable[..., Any], *, fit_scale: bool, max_iter: int, tol: float,
             callback: Callback | None, verbose: bool) -> CPALSResult:
    xp = data.xp
    N = len(data.shape)
    eps = B.finfo_eps(xp, data.dtype)

    # unit columns for modes 1..N-1, their norms moved to mode 0 (the same model)
    factors = list(init_factors)
    for n in range(1, N):
        factors[n], lam = als.unit_columns(xp, factors[n])
        factors[0] = factors[0] * lam[None, :]
    factors[0], weights = als.unit_columns(xp, factors[0])
    grams = [xp.matrix_transpose(A) @ A for A in factors]
    monitor = IterationMonitor("nonnegative_cp", max_iter=max_iter, tol=tol, callback=callback,
                               verbose=verbose, logger=logger,
                               hint="the problem may be ill-posed (try a lower rank)")
    with monitor:
        for _ in monitor.iterations():
            for n in range(N):
                M = data.mttkrp(factors, n)
                G = als.hadamard_grams(grams, skip=n)
                A = factors[n] * weights[None, :]
                if fit_scale:  # string init: first bring the model to the data's scale
                    A, fit_scale = _best_multiple(xp, A, M, G), False
                A = update(xp, A, M, G, eps)
                factors[n], weights = als.unit_columns(xp, A)
                grams[n] = xp.matrix_transpose(factors[n]) @ factors[n]
            rel = _relative_error(data, normX2, M, A, G, weights, factors, eps)
            if monitor.record(rel, partial(als.unscaled_model, xp, factors, weights, scale)):
                break
    return CPALSResult(als.unscaled_model(xp, factors, weights, scale), monitor.n_iter,
                       monitor.converged, monitor.rel_error, monitor.history)


def _relative_error(data: TensorFormat, normX2: float, M: Any, A: Any, G: Any, weights: Any,
                    factors: list[Any], eps: float) -> float:
    """``||X - model|| / ||X||`` from the last mode's ``M``, ``A`` (weights in) and ``G``.

    ``||X - model||^2 = ||X||^2 - 2 <M, A> + sum(G * A^T A)``; recomputed
    exactly (`TensorFormat.residual_norm_sq`) below ``100 eps ||X||^2``,
    where that difference would cancel.
    """
    xp = data.xp
    inner = B.to_float(xp.sum(M * A))
    model_sq = B.to_float(xp.sum(G * (xp.matrix_transpose(A) @ A)))
    resid_sq = normX2 - 2.0 * inner + model_sq
    if resid_sq < 100.0 * eps * normX2:
        resid_sq = data.residual_norm_sq(weights, factors)
    return math.sqrt(max(resid_sq, 0.0) / normX2)
