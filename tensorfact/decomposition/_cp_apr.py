"""Poisson CP of count tensors: CP alternating Poisson regression (CP-APR, MU).

Chi & Kolda (2012): maximise the Poisson log-likelihood of a non-negative
CP model by alternating over the modes; each mode's subproblem (the other
factors held, their weights shifted into this mode) is solved approximately by
multiplicative updates, with "scooching" of inadmissible zeros between outer
iterations. The update order, scooching and stopping rule follow pyttb's
``cp_apr(algorithm="mu")``; the per-nonzero work runs in
`tensorfact._kernels.poisson` (Numba for NumPy data, array-API twins
otherwise).
"""

from __future__ import annotations

import logging
import math
import warnings
from abc import ABC, abstractmethod
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B
from .._kernels import poisson as KP
from .._kernels.sparse import mode_sorted
from .._validation import (
    check_nonneg_float,
    check_positive_int,
    check_rank,
    check_real,
    check_tensor,
)
from ..formats import as_format
from ..formats.sparse import SparseTensor
from ..tensors.cp import CPTensor
from ._cp_als import Callback, check_init, initial_factors
from ._monitor import ConvergenceHistory, IterationMonitor, check_callback
from ._results import CPAPRResult

__all__ = ["cp_apr", "count_tensor"]

logger = logging.getLogger("tensorfact.cp_apr")


def cp_apr(
    S: Any,
    /,
    rank: int,
    *,
    init: str | CPTensor = "random",
    max_iter: int = 1000,
    max_inner_iter: int = 10,
    tol: float = 1e-4,
    kappa: float = 0.01,
    kappa_tol: float = 1e-10,
    epsilon: float = 1e-10,
    rng: None | int | np.random.Generator = None,
    callback: Callback | None = None,
    verbose: bool = False,
) -> CPAPRResult:
    """Non-negative CP of count data by alternating Poisson regression (CP-APR).

    Maximises the Poisson log-likelihood ``sum_i x_i log m_i - m_i`` of a
    non-negative CP model ``M = [[w; A_0, ..., A_{N-1}]]`` by the
    multiplicative updates of Chi & Kolda (2012), the algorithm of pyttb's
    ``cp_apr(algorithm="mu")``: for each mode ``n``, shift the weights into
    ``A_n`` and repeat up to ``max_inner_iter`` times
    ``A_n <- A_n * Phi_n`` with
    ``Phi_n = (X_(n) / max(A_n Pi_n^T, epsilon)) Pi_n`` (``Pi_n`` the
    Khatri-Rao product of the other factors, needed only at the nonzeros),
    stopping when the KKT violation ``max |min(A_n, 1 - Phi_n)|`` is below
    ``tol``; then normalise the columns to unit 1-norm. Entries of ``A_n``
    below ``kappa_tol`` whose ``Phi_n`` is positive (inadmissible zeros) are
    raised by ``kappa`` before the next outer iteration.

    Each MU step costs one pass over the nonzeros (``O(nnz R)``), building
    ``Pi_n`` costs ``O(nnz R (N - 1))`` per mode; nothing is densified.

    Parameters
    ----------
    S : SparseTensor or array of shape (I_0, ..., I_{N-1}), N >= 2
        Non-negative counts. A dense array (any array API namespace) is
        converted with `SparseTensor.from_dense`. Values should be
        integers: the Poisson model is defined for counts (non-integer
        values are accepted with a ``UserWarning``; the updates are then
        those of the KL-divergence fit).
    rank : int
        Number of components.
    init : "random" or CPTensor
        ``"random"``: factors uniform on ``[0, 1)`` drawn from ``rng``. A
        ``CPTensor`` with non-negative factors and weights is used as given
        (never modified).
    max_iter : int
        Maximum number of outer iterations.
    max_inner_iter : int
        Maximum number of multiplicative updates per mode and outer iteration.
    tol : float
        Stop when every mode's KKT violation is below ``tol`` before its
        first update (pyttb's ``stoptol``); ``tol=0`` runs ``max_iter``
        outer iterations of ``max_inner_iter`` updates each.
    kappa : float
        Offset added to inadmissible zeros (pyttb's ``kappa``).
    kappa_tol : float
        Entries below it count as zero for the scooching (``kappatol``).
    epsilon : float
        Lower bound of the model value in the divisions (``epsDivZero``).
    rng : None, int or numpy.random.Generator
        Randomness of ``init="random"`` (drawn on the host).
    callback : callable, optional
        ``callback(iteration, cp, rel_error)`` after every outer iteration;
        returning ``True`` stops the run.
    verbose : bool
        Show a progress bar (tqdm).

    Returns
    -------
    CPAPRResult
        ``(cp, n_iter, converged, log_likelihood, kkt_violation, rel_error,
        history)``; ``history.objective`` holds the log-likelihood of every
        outer iteration.

    Raises
    ------
    ValueError
        Negative values, NaN/Inf or fewer than two modes in ``S``; bad
        ``rank``, ``max_iter``, ``max_inner_iter``, ``tol``, ``kappa``,
        ``kappa_tol`` or ``epsilon``; an ``init`` of the wrong shape or rank
        or with negative entries.
    TypeError
        ``S`` neither a SparseTensor nor an array; complex ``S``; ``init``
        of another namespace or dtype.
    FloatingPointError
        If the log-likelihood becomes non-finite.

    Warns
    -----
    UserWarning
        ``S`` holds non-integer values.

    References
    ----------
    Chi & Kolda, "On tensors, sparsity, and nonnegative factorizations",
    SIAM J. Matrix Anal. Appl. 33(4), 2012.

    Examples
    --------
    >>> import numpy as np
    >>> gen = np.random.default_rng(0)
    >>> truth = CPTensor([gen.random((s, 2)) for s in (20, 30, 40)], weights=np.array([9e3, 6e3]))
    >>> counts = gen.poisson(truth.to_dense())
    >>> res = cp_apr(counts, 2, rng=0)
    >>> bool(res.cp.factor_match_score(truth) > 0.9)
    True
    >>> res.history.objective[-1] == res.log_likelihood
    True
    """
    data = count_tensor(S, "S")
    shape = data.shape
    R = check_rank(rank, shape)
    max_iter = check_positive_int(max_iter, "max_iter")
    max_inner_iter = check_positive_int(max_inner_iter, "max_inner_iter")
    tol = check_nonneg_float(tol, "tol")
    kappa = check_nonneg_float(kappa, "kappa")
    kappa_tol = check_nonneg_float(kappa_tol, "kappa_tol")
    epsilon = check_real(epsilon, "epsilon", low=0.0, what="a finite positive number")
    if epsilon <= 0.0:
        raise ValueError(f"epsilon must be a finite positive number, got {epsilon}")
    check_callback(callback)
    gen = B.check_rng(rng)
    check_init(init, ("random",))
    weights, factors = _initial_model(data, R, init, gen)
    if data.nnz == 0 or B.to_float(data.xp.max(data.values)) == 0.0:
        return _zero_result(data, R)
    engine: _Engine = _NumbaEngine(data) if B.is_numpy(data.xp) else _XpEngine(data)
    return _mu(data, engine, weights, factors, max_iter=max_iter, max_inner_iter=max_inner_iter,
               tol=tol, kappa=kappa, kappa_tol=kappa_tol, epsilon=epsilon, callback=callback,
               verbose=verbose)


def count_tensor(S: Any, name: str = "S") -> SparseTensor:
    """``S`` as a `SparseTensor` of non-negative finite values, at least 2-way.

    Dense arrays are converted; non-integer values give a ``UserWarning``.
    """
    if isinstance(S, SparseTensor):
        if S.ndim < 2:
            raise ValueError(f"{name} must have at least 2 modes, got shape {S.shape}")
        S.check_finite(name)
        data = S
    elif B.is_array(S):
        xp = B.namespace(S)
        data = SparseTensor.from_dense(check_tensor(S, xp, name=name))
    else:
        raise TypeError(f"{name} must be a SparseTensor or an array of counts, got "
                        f"{type(S).__name__}")
    xp = data.xp
    v = data.values
    if data.nnz:
        low = B.to_float(xp.min(v))
        if low < 0.0:
            raise ValueError(f"{name} contains negative values (smallest {low:.6g}); the "
                             "Poisson model needs non-negative counts")
        if not bool(xp.all(v == xp.floor(v))):
            warnings.warn(f"{name} has non-integer values: the Poisson likelihood is defined "
                          "for counts (cp_apr then fits the generalised KL divergence)",
                          UserWarning, stacklevel=3)
    return data


def _initial_model(data: SparseTensor, R: int, init: Any, gen: np.random.Generator
                   ) -> tuple[Any, list[Any]]:
    """``(weights, factors)``: validated copies of ``init`` or uniform random factors."""
    xp = data.xp
    if isinstance(init, CPTensor):
        # shape, rank, dtype, namespace, finiteness
        factors = initial_factors(as_format(data, check_finite=False), R, init, gen)
        for n, A in enumerate(factors):
            if bool(xp.any(A < 0)):
                raise ValueError(f"init.factors[{n}] has negative entries; cp_apr needs a "
                                 "non-negative initial model")
        w = init.weights
        if not bool(xp.all(xp.isfinite(w))) or bool(xp.any(w < 0)):
            raise ValueError("init.weights must be finite and non-negative")
        return w, list(factors)
    factors = [B.from_numpy(xp, gen.random((s, R)), like=data.like, dtype=data.dtype)
               for s in data.shape]
    return xp.ones((R,), dtype=data.dtype, device=B.device(data.like)), factors


def _zero_result(data: SparseTensor, R: int) -> CPAPRResult:
    """The maximum-likelihood model of an all-zero tensor: zero, log-likelihood 0."""
    xp = data.xp
    dev = B.device(data.like)
    cp = CPTensor([xp.zeros((s, R), dtype=data.dtype, device=dev) for s in data.shape],
                  weights=xp.zeros((R,), dtype=data.dtype, device=dev))
    return CPAPRResult(cp, 0, True, 0.0, 0.0, 0.0, ConvergenceHistory((), (), ()))


# --------------------------------------------------------------------------- #
# the per-nonzero work: Numba (NumPy data) or the array-API twins
# --------------------------------------------------------------------------- #
class _Engine(ABC):
    """Per-mode operations on the nonzeros; factors in the engine's namespace and dtype."""

    xp: ModuleType

    @abstractmethod
    def krp(self, factors: list[Any], n: int) -> Any: ...

    @abstractmethod
    def mu_step(self, n: int, Pi: Any, Bm: Any, epsilon: float) -> tuple[Any, Any, float]: ...

    @abstractmethod
    def fit(self, n: int, Pi: Any, Bm: Any, epsilon: float, inv_scale: float
            ) -> tuple[float, float]: ...

    def inner(self, n: int, Pi: Any, Bm: Any, epsilon: float, max_steps: int, tol: float
              ) -> tuple[Any, Any, float, bool]:
        """Up to ``max_steps`` MU steps, stopping when the KKT violation is below ``tol``.

        Returns the factor, the last ``Phi``, the last KKT violation and
        whether any update was made.
        """
        updated = False
        for _ in range(max_steps):
            B_new, Phi, kkt = self.mu_step(n, Pi, Bm, epsilon)
            if kkt < tol:
                break
            updated = True
            Bm = B_new
        return Bm, Phi, kkt, updated

    def cast(self, A: Any) -> Any:
        return A


class _NumbaEngine(_Engine):
    """NumPy data: mode-sorted layouts (built once per run), float64 Numba kernels."""

    def __init__(self, data: SparseTensor) -> None:
        import numba

        self.xp = np
        self.layouts = [mode_sorted(np.asarray(data.coords), np.asarray(data.values), n, s)
                        for n, s in enumerate(data.shape)]
        n_chunks = 8 * numba.get_num_threads()
        self.bounds = [KP.row_chunks(rp, max(1, min(n_chunks, rp.shape[0] - 1)))
                       for rp, _, _ in self.layouts]
        self.vals = [np.ascontiguousarray(v, dtype=np.float64) for _, _, v in self.layouts]

    def krp(self, factors: list[Any], n: int) -> Any:
        others = [A for m, A in enumerate(factors) if m != n]
        return KP.krp_at_nonzeros_numba(self.layouts[n][1], others)

    def mu_step(self, n: int, Pi: Any, Bm: Any, epsilon: float) -> tuple[Any, Any, float]:
        return KP.mu_step_numba(self.layouts[n][0], self.vals[n], Pi, Bm, epsilon,
                                self.bounds[n])

    def inner(self, n: int, Pi: Any, Bm: Any, epsilon: float, max_steps: int, tol: float
              ) -> tuple[Any, Any, float, bool]:
        """`_Engine.inner` with the steps after the first fused row by row.

        The first step alone settles the common early exit (a converged mode).
        Steps 2 to ``max_steps`` then run in one kernel call that records each
        step's KKT violation; when one of them is below ``tol``, the rows are
        re-run up to that step (same values to the bit), so the iterates are
        those of the step-by-step loop.
        """
        rowptr, vals, bounds = self.layouts[n][0], self.vals[n], self.bounds[n]
        B1, Phi, kkt = KP.mu_step_numba(rowptr, vals, Pi, Bm, epsilon, bounds)
        if kkt < tol:
            return Bm, Phi, kkt, False
        if max_steps == 1:
            return B1, Phi, kkt, True
        B_out, Phi, hist = KP.mu_steps_numba(rowptr, vals, Pi, B1, epsilon, bounds,
                                             max_steps - 1, True)
        below = np.flatnonzero(hist < tol)
        if below.size == 0:
            return B_out, Phi, float(hist[-1]), True
        j = int(below[0])  # stop at step j + 2: j more updates, then its Phi
        B_out, Phi, _ = KP.mu_steps_numba(rowptr, vals, Pi, B1, epsilon, bounds, j + 1, False)
        return B_out, Phi, float(hist[j]), True

    def fit(self, n: int, Pi: Any, Bm: Any, epsilon: float, inv_scale: float
            ) -> tuple[float, float]:
        return KP.poisson_fit_numba(self.layouts[n][0], self.vals[n], Pi, Bm, epsilon,
                                    inv_scale)

    def cast(self, A: Any) -> Any:
        return np.array(A, dtype=np.float64)


class _XpEngine(_Engine):
    """Any other namespace: nonzeros in storage order, gathers and ``scatter_add``."""

    def __init__(self, data: SparseTensor) -> None:
        self.xp = data.xp
        self.coords = data.coords
        self.vals = data.values
        self.N = data.ndim

    def krp(self, factors: list[Any], n: int) -> Any:
        cols = [m for m in range(self.N) if m != n]
        others = self.xp.stack([self.coords[:, m] for m in cols], axis=1)
        return KP.krp_at_nonzeros_xp(self.xp, others, [factors[m] for m in cols])

    def mu_step(self, n: int, Pi: Any, Bm: Any, epsilon: float) -> tuple[Any, Any, float]:
        return KP.mu_step_xp(self.xp, self.coords[:, n], self.vals, Pi, Bm, epsilon)

    def fit(self, n: int, Pi: Any, Bm: Any, epsilon: float, inv_scale: float
            ) -> tuple[float, float]:
        return KP.poisson_fit_xp(self.xp, self.coords[:, n], self.vals, Pi, Bm, epsilon,
                                 inv_scale)


# --------------------------------------------------------------------------- #
# the MU iteration
# --------------------------------------------------------------------------- #
def _column_sums(xp: ModuleType, A: Any) -> Any:
    return xp.sum(A, axis=0)


def _unit_l1(xp: ModuleType, A: Any) -> tuple[Any, Any]:
    """``(A / column sums, column sums)``; zero columns are kept (sum 0)."""
    s = _column_sums(xp, A)
    return A / xp.where(s > 0, s, xp.ones_like(s))[None, :], s


def _model(data: SparseTensor, xp: ModuleType, weights: Any, factors: list[Any],
           sort: bool = False) -> CPTensor:
    """The model in the data's namespace and dtype (components by decreasing weight)."""
    w, facs = weights, list(factors)
    if sort:
        order = xp.argsort(-w, stable=True)
        w = xp.take(w, order)
        facs = [xp.take(A, order, axis=1) for A in facs]
    if xp is not data.xp:  # NumPy engine: float64 work arrays, data in another dtype
        return CPTensor([np.asarray(A, dtype=data.dtype) for A in facs],
                        weights=np.asarray(w, dtype=data.dtype))
    return CPTensor([xp.astype(A, data.dtype) for A in facs], weights=xp.astype(w, data.dtype))


def _mu(data: SparseTensor, engine: _Engine, weights: Any, factors: list[Any], *,
        max_iter: int, max_inner_iter: int, tol: float, kappa: float, kappa_tol: float,
        epsilon: float, callback: Callback | None, verbose: bool) -> CPAPRResult:
    xp = engine.xp
    N = len(factors)
    # the Frobenius error on X * 2^-e with 2^e ~ max(X): finite for data near over- or underflow
    top = B.to_float(data.xp.max(data.values))
    inv = math.ldexp(1.0, min(-math.frexp(top)[1], 1000))
    normX2 = B.to_float(data.xp.sum((data.values * inv) ** 2))
    # unit 1-norm columns, the sizes in the weights (every mode's update keeps this form)
    lam = engine.cast(weights)
    A: list[Any] = []
    for F in factors:
        An, s = _unit_l1(xp, engine.cast(F))
        A.append(An)
        lam = lam * s
    Phi: list[Any] = [None] * N
    kkt_modes = [0.0] * N
    monitor = IterationMonitor("cp_apr", max_iter=max_iter, tol=None, callback=callback,
                               verbose=verbose, logger=logger,
                               hint="try a larger epsilon or another init")
    kkt = math.inf
    loglik = -math.inf
    with monitor:
        for it in monitor.iterations():
            converged = True
            for n in range(N):
                if it > 1:  # scooch inadmissible zeros: A tiny where the gradient says grow
                    V = (Phi[n] > 0) & (A[n] < kappa_tol)
                    if bool(xp.any(V)):
                        A[n] = xp.where(V, A[n] + kappa, A[n])
                Bm = A[n] * lam[None, :]  # the weights shifted into mode n
                Pi = engine.krp(A, n)
                Bm, Phi[n], kkt_modes[n], updated = engine.inner(n, Pi, Bm, epsilon,
                                                                 max_inner_iter, tol)
                converged = converged and not updated
                A[n], lam = _unit_l1(xp, Bm)
            kkt = max(kkt_modes)
            # log-likelihood and <X, M> from the last mode's Pi (its factor still holds lam)
            xlogm, xm = engine.fit(N - 1, Pi, Bm, epsilon, inv)
            sizes = lam
            gram = None
            for n in range(N):
                G = xp.matrix_transpose(A[n]) @ A[n]
                gram = G if gram is None else gram * G
                sizes = sizes * _column_sums(xp, A[n])
            loglik = xlogm - B.to_float(xp.sum(sizes))
            lam_s = lam * inv
            model_sq = B.to_float(xp.sum(lam_s[:, None] * gram * lam_s[None, :]))
            rel = math.sqrt(max(normX2 - 2.0 * xm + model_sq, 0.0) / normX2)
            if monitor.record(rel, partial(_model, data, xp, lam, list(A)), objective=loglik,
                              converged=converged):
                break
    return CPAPRResult(_model(data, xp, lam, A, sort=True), monitor.n_iter, monitor.converged,
                       loglik, kkt, monitor.rel_error, monitor.history)
