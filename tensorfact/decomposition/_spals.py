"""SPALS: CP-ALS with leverage-score sampled least-squares updates."""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Callable
from functools import partial
from typing import Any

import numpy as np

from .. import _backend as B
from .._validation import (
    check_choice,
    check_index,
    check_nonneg_float,
    check_positive_int,
    check_rank,
    check_real,
    check_shape,
)
from ..formats import TensorFormat, as_format
from ..tenalg._sampling import _check_threshold, krp_sampler
from ..tensors.cp import CPTensor
from ._cp_als import (
    check_init,
    initial_factors,
    scaled_data,
    unit_columns,
    unscaled_model,
    zero_result,
)
from ._monitor import IterationMonitor, check_callback
from ._results import CPALSResult
from ._sampled_lstsq import expand_rows, solve_sampled_rows

__all__ = ["spals", "spals_sample_count"]

logger = logging.getLogger("tensorfact.spals")

Callback = Callable[[int, CPTensor, float], Any]

#: components larger than this times ||X|| must cancel each other: the model's
#: entries would keep fewer than half of the floating-point digits
_DEGENERATE = 1e8


def spals_sample_count(shape: tuple[int, ...], rank: int, mode: int, *, alpha: float) -> int:
    """Number of draws for the mode-``mode`` update: the SPALS rule.

    ``ceil(alpha * R^(N-1) * prod_{m != mode} log I_m)`` (``log`` floored at
    1), at least ``2 R``, at most the number of Khatri-Rao rows
    ``prod_{m != mode} I_m``.

    Examples
    --------
    >>> spals_sample_count((400, 400, 400), 10, 0, alpha=0.5)
    1795
    """
    shape = check_shape(shape, "shape", min_ndim=2)
    rank = check_positive_int(rank, "rank")
    mode = check_index(mode, "mode", len(shape))
    alpha = check_real(alpha, "alpha", low=0.0, low_open=True)
    return _sample_count(shape, rank, mode, alpha)


def _sample_count(shape: tuple[int, ...], rank: int, mode: int, alpha: float) -> int:
    N = len(shape)
    logs = math.prod(max(math.log(shape[m]), 1.0) for m in range(N) if m != mode)
    s = math.ceil(alpha * rank ** (N - 1) * logs)
    rows = math.prod(shape[m] for m in range(N) if m != mode)
    return int(min(max(s, 2 * rank), rows))


def spals(
    X: Any,
    /,
    rank: int,
    *,
    n_samples: str | int = "auto",
    alpha: float = 0.2,
    method: str = "qr",
    sampler: str = "product",
    deterministic_threshold: float | None = None,
    init: str | CPTensor = "auto",
    max_iter: int = 50,
    tol: float = 0.0,
    exact_fit_every: int | None = None,
    rng: None | int | np.random.Generator = None,
    callback: Callback | None = None,
    verbose: bool = False,
    check_finite: bool = True,
    mask: Any = None,
) -> CPALSResult:
    """CP decomposition by sampled alternating least squares (SPALS).

    CP-ALS in which every factor update is the sampled least-squares solve of
    `tensorfact.sampled_krp_lstsq`: the rows of the Khatri-Rao product
    of the other factors are drawn from the product of their leverage-score
    distributions, only the matching fibers of ``X`` are read, and the
    leverage scores of a factor are refreshed right after it is updated.
    A sweep therefore costs ``O(s (I_n R + R^2))`` per mode for ``s`` samples
    instead of ``O(R prod_m I_m)``.

    Parameters
    ----------
    X : array of shape (I_0, ..., I_{N-1}), N >= 2, or a data format
        Dense arrays may come from any array API namespace; the sampled
        fibers are gathered with ``xp.take`` on a copy-free reshape. A
        ``SparseTensor`` is read through its fiber index (``gather_fibers``);
        any `tensorfact.formats.TensorFormat` through its
        ``sampled_fibers``.
    rank : int
        Number of components.
    n_samples : "auto" or int
        Draws per mode update. ``"auto"``: the SPALS rule
        ``ceil(alpha * R^(N-1) * prod_{m != n} log I_m)`` of
        `spals_sample_count` (at least ``2 R``, at most the number of
        Khatri-Rao rows). An int is used for every mode (capped likewise).
    alpha : float
        Constant of the sample-count rule. The default 0.2 is the smallest
        value whose converged error stayed within 1.05 of exact ALS's on every
        problem of the sweep in ``benchmarks/bench_spals_samples.py`` (200³ and
        400³ rank 10, 200³ rank 20, 60⁴ rank 5, noise 0.01 and 0.1; see the
        SPALS page of the docs); larger values cost more per sweep without a
        better converged error there.
    method : {"qr", "gram"}
        ``"qr"``: sampled weighted least squares (CP-ARLS-LEV; exact on
        noise-free low-rank data). ``"gram"``: exact Gram with a sampled
        right-hand side (the SPALS estimator).
    sampler : {"product", "exact"}
        ``"product"``: rows drawn from the product of the factors' leverage
        scores (the SPALS bound). ``"exact"``: the exact leverage scores of
        the Khatri-Rao product, drawn without forming it (Bharadwaj et al.,
        2023; see `tensorfact.sample_krp_rows`).
    deterministic_threshold : float, optional
        Include Khatri-Rao rows whose sampling probability is at least this
        value deterministically (hybrid sampling, ``sampler="product"``
        only); ``None`` disables it.
    init : {"auto", "random", "svd"} or CPTensor
        Initial factors, as for `tensorfact.cp_als`. ``"auto"`` (default):
        ``"random"`` for dense data, because the SVD initialisation reads the
        whole tensor (costlier than many SPALS sweeps); ``"svd"`` for sparse
        data (a format with stored nonzeros, such as `SparseTensor` or
        `DaskSparseTensor`), because random factors spread the leverage over
        all fibers, almost all of which are empty there, so the sampled
        updates see almost no data.
    max_iter : int
        Number of sweeps at most.
    tol : float
        Stop when the (estimated) relative error changes by less than
        ``tol`` between sweeps. The estimate is noisy, so the default ``0``
        runs ``max_iter`` sweeps.
    exact_fit_every : int, optional
        Every that many sweeps (and after the last one) compute the exact
        relative error (one pass over ``X``) instead of the estimate. When
        a mode gets fewer than ``2 * rank`` sampled rows the estimate is
        meaningless (the sampled fit nearly interpolates them): a
        ``UserWarning`` is issued and the exact error is computed after
        every sweep.
    rng : None, int or numpy.random.Generator
        Randomness for the initialisation and the draws (host).
    callback : callable, optional
        ``callback(iteration, cp, rel_error)`` after every sweep; returning
        ``True`` stops the run.
    verbose : bool
        Show a progress bar (tqdm).
    check_finite : bool
        Reject NaN/Inf in ``X``.
    mask : None
        Missing data is not supported: any other value raises
        ``ValueError`` (the leverage-score sampling assumes every entry is
        observed); use ``tensorfact.cp_als(X, rank, mask=...)``.

    Returns
    -------
    CPALSResult
        As `tensorfact.cp_als`. ``history.rel_error`` holds the sampled
        estimates (the importance-weighted residual of the last mode's sampled
        problem over ``||X||``), replaced by exact values at the sweeps chosen by
        ``exact_fit_every``; ``rel_error`` is the last of them.

    Raises
    ------
    ValueError
        Bad ``rank``, ``n_samples``, ``alpha``, ``method``, ``max_iter``,
        ``tol``, ``exact_fit_every``, threshold or ``init``; NaN/Inf in ``X``;
        a ``mask``.
    TypeError
        Complex ``X``; ``init`` from another namespace or dtype.
    FloatingPointError
        If an iterate becomes non-finite, or the first sweep already gives
        degenerate components (norm above ``1e8 ||X||``, cancelling each
        other). Degenerate components in a later sweep stop the run with a
        ``RuntimeWarning`` and return the previous sweep's model.

    References
    ----------
    The algorithm is SPALS (Cheng, Peng, Liu & Perros, NeurIPS 2016), with the
    sampling analysis of Larsen & Kolda (SIAM J. Matrix Anal. Appl. 2022);
    full references under `tensorfact.tenalg.krp_sampler`.

    Examples
    --------
    >>> from tensorfact.datasets import planted_cp
    >>> X, truth = planted_cp((60, 60, 60), rank=3, rng=0)
    >>> res = spals(X, rank=3, max_iter=20, rng=0)
    >>> bool(res.cp.factor_match_score(truth) > 0.999)
    True
    """
    if mask is not None:
        raise ValueError("mask is not supported by spals: its leverage-score sampling assumes "
                         "every entry is observed; use cp_als(X, rank, mask=...) for missing "
                         "data")
    data = as_format(X, check_finite=check_finite)
    shape = data.shape
    N = len(shape)
    R = check_rank(rank, shape)
    alpha = check_real(alpha, "alpha", low=0.0, low_open=True)
    if isinstance(n_samples, str):
        if n_samples != "auto":
            raise ValueError(f"n_samples must be 'auto' or a positive int, got {n_samples!r}")
        counts = [_sample_count(shape, R, n, alpha) for n in range(N)]
    else:
        s = check_positive_int(n_samples, "n_samples")
        counts = [min(s, math.prod(shape[m] for m in range(N) if m != n)) for n in range(N)]
    method = check_choice(method, "method", ("qr", "gram"))
    tau = _check_threshold(deterministic_threshold)
    sampler = check_choice(sampler, "sampler", ("product", "exact"))
    if sampler == "exact" and tau is not None:
        raise ValueError("deterministic_threshold is not available with sampler='exact'; "
                         "pass None")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_nonneg_float(tol, "tol")
    if exact_fit_every is not None:
        exact_fit_every = check_positive_int(exact_fit_every, "exact_fit_every")
    if min(counts) < 2 * R and exact_fit_every != 1:
        # a least-squares fit on fewer than 2R rows nearly interpolates them: its
        # residual says nothing about the true error (0 for a true 0.4 at 1 sample)
        warnings.warn(
            f"n_samples={n_samples!r} gives {min(counts)} sampled rows for rank {R}, fewer "
            f"than 2 * rank = {2 * R}: too few for an error estimate; the relative error is "
            "recomputed exactly after every sweep (exact_fit_every=1)",
            UserWarning, stacklevel=2,
        )
        exact_fit_every = 1
    check_callback(callback)
    check_init(init, ("auto", "random", "svd"))
    if isinstance(init, str) and init == "auto":
        init = "svd" if hasattr(data, "nnz") else "random"
    gen = B.check_rng(rng)
    data, scale, normX2 = scaled_data(data)
    if normX2 == 0.0:
        return zero_result(data, R)
    factors = initial_factors(data, R, init, gen)
    return _sampled_als(data, factors, normX2, scale, counts, gen, method=method,
                        sampler=sampler,
                        tau=tau,
                        max_iter=max_iter, tol=tol, exact_fit_every=exact_fit_every,
                        callback=callback, verbose=verbose)


class _LoopFactors:
    """The factors of the SPALS loop, a solved sparse-data factor kept as its nonzero rows.

    Solved from the sampled fibers of sparse data, a factor is zero outside
    the rows the sampled entries hold (a few thousand of millions, at scale):
    it is kept as ``(index, rows)`` and expanded to a dense matrix only when
    one is asked for, so that an iteration costs time in the samples, not in
    the modes' sizes.
    """

    def __init__(self, xp: Any, dense: list[Any]) -> None:
        self.xp = xp
        self.n_rows = [int(A.shape[0]) for A in dense]
        self._dense: list[Any | None] = list(dense)
        self._rows: list[tuple[Any, Any] | None] = [None] * len(dense)

    def set_dense(self, n: int, A: Any) -> None:
        self._dense[n], self._rows[n] = A, None

    def set_rows(self, n: int, index: Any, A_rows: Any) -> None:
        self._dense[n], self._rows[n] = None, (index, A_rows)

    def dense(self, n: int) -> Any:
        A = self._dense[n]
        if A is None:
            index, A_rows = self._rows[n]  # type: ignore[misc]
            A = self._dense[n] = expand_rows(self.xp, self.n_rows[n], index, A_rows)
        return A

    def state(self) -> tuple[list[Any], list[Any]]:
        """The current factors (references: the setters replace, never modify)."""
        return list(self._dense), list(self._rows)

    def restore(self, state: tuple[list[Any], list[Any]]) -> None:
        self._dense, self._rows = list(state[0]), list(state[1])

    def all_dense(self) -> list[Any]:
        return [self.dense(n) for n in range(len(self.n_rows))]

    def take(self, n: int, idx: Any) -> Any:
        """Rows ``idx`` of factor ``n``."""
        xp = self.xp
        rows = self._rows[n]
        if rows is None:
            return xp.take(self._dense[n], idx, axis=0)
        index, A_rows = rows
        if int(index.shape[0]) == 0:
            return xp.zeros((int(idx.shape[0]), int(A_rows.shape[1])), dtype=A_rows.dtype,
                            device=B.device(A_rows))
        pos = xp.minimum(xp.searchsorted(index, idx), int(index.shape[0]) - 1)
        hit = xp.astype(xp.take(index, pos) == idx, A_rows.dtype)
        return xp.take(A_rows, pos, axis=0) * hit[:, None]

    def krp_rows(self, modes: list[int], idx: Any) -> Any:
        """Rows of the Khatri-Rao product of ``modes`` at sampled indices ``idx``."""
        K = self.take(modes[0], idx[:, 0])
        for c, m in enumerate(modes[1:], start=1):
            K = K * self.take(m, idx[:, c])
        return K


def _model(xp: Any, F: _LoopFactors, weights: Any, scale: float) -> CPTensor:
    return unscaled_model(xp, F.all_dense(), weights, scale)


def _sampled_als(data: TensorFormat, init_factors: list[Any], normX2: float, scale: float,
                 counts: list[int],
                 gen: np.random.Generator, *, method: str, sampler: str, tau: float | None,
                 max_iter: int,
                 tol: float, exact_fit_every: int | None, callback: Callback | None,
                 verbose: bool) -> CPALSResult:
    xp = data.xp
    N = len(data.shape)
    R = int(init_factors[0].shape[1])
    F = _LoopFactors(xp, [unit_columns(xp, A)[0] for A in init_factors])
    grams = [xp.matrix_transpose(A) @ A for A in F.all_dense()]
    rows_sampler = krp_sampler(sampler, F.all_dense(), tau=tau)
    weights = xp.ones((R,), dtype=data.dtype, device=B.device(data.like))
    monitor = IterationMonitor("spals", max_iter=max_iter, tol=tol, callback=callback,
                               verbose=verbose, logger=logger,
                               hint="try more samples (alpha), method='qr' or a lower rank")
    with monitor:
        for it in monitor.iterations():
            resid = 0.0
            before = (F.state(), weights)
            for n in range(N):
                others = [m for m in range(N) if m != n]
                sample = rows_sampler.sample(others, counts[n], gen, tau)
                rows = data.sampled_fibers(n, sample.indices)
                idx = sample.indices
                if not B.is_numpy(xp):
                    idx = B.from_numpy(xp, idx, like=data.like, dtype=None)
                K = F.krp_rows(others, idx)
                index, coef, resid = solve_sampled_rows(
                    xp, [K], sample, rows, method, grams=[grams[m] for m in others], K=K)
                A, lam = unit_columns(xp, coef)
                if not bool(xp.any(lam > 0)):
                    # the sample saw no entry: the factor keeps its direction
                    # (weight 0), Gram and scores unchanged
                    weights = lam
                    continue
                if index is not None and bool(xp.all(lam > 0)):
                    # sparse data: the solution is zero outside the rows the
                    # sampled entries hold; Gram and scores from those rows only
                    F.set_rows(n, index, A)
                    grams[n] = xp.matrix_transpose(A) @ A
                    rows_sampler.update_rows(n, F.n_rows[n], index, A, grams[n])
                else:
                    if index is not None:
                        A = expand_rows(xp, F.n_rows[n], index, A)
                    # A column the sample did not see (all-zero) keeps its previous
                    # direction with weight 0, so the leverage scores stay informative
                    # and the iteration cannot collapse to the zero model.
                    F.set_dense(n, xp.where((lam > 0)[None, :], A, F.dense(n)))
                    grams[n] = xp.matrix_transpose(F.dense(n)) @ F.dense(n)
                    rows_sampler.update(n, F.dense(n), grams[n])
                weights = lam
            largest = B.to_float(xp.max(xp.abs(weights)))
            if largest > _DEGENERATE * math.sqrt(normX2) and math.isfinite(largest):
                ratio = largest / math.sqrt(normX2)
                if monitor.n_iter == 0:
                    raise FloatingPointError(
                        f"spals diverged in its first sweep: a component of norm {ratio:.3g} "
                        "times ||X|| (components that cancel each other); try more samples "
                        "(alpha), method='qr', another init or a lower rank")
                warnings.warn(
                    f"spals stopped at sweep {it}: its components degenerated (a component "
                    f"of norm {ratio:.3g} times ||X||, cancelled by others, so the model's "
                    "entries would lose most of their digits); returning the model of the "
                    "sweep before. Try more samples (alpha), method='qr' or a lower rank",
                    RuntimeWarning, stacklevel=3)
                F.restore(before[0])
                weights = before[1]
                break
            if exact_fit_every is not None and (it % exact_fit_every == 0 or it == max_iter):
                resid = data.residual_norm_sq(weights, F.all_dense())
            rel = math.sqrt(max(resid, 0.0) / normX2)
            finite = bool(xp.all(xp.isfinite(weights)))
            if monitor.record(rel, partial(_model, xp, F, weights, scale), finite=finite):
                break
    return CPALSResult(_model(xp, F, weights, scale), monitor.n_iter,
                       monitor.converged, monitor.rel_error, monitor.history)
