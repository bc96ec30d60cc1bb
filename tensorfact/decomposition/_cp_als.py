"""CP decomposition by alternating least squares (CP-ALS)."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B
from .._validation import (
    ArgumentTypeError,
    check_choice,
    check_nonneg_float,
    check_positive_int,
    check_rank,
)
from ..formats import TensorFormat, as_format
from ..formats._scale import safe_scale
from ..tensors.cp import CPTensor
from ._monitor import ConvergenceHistory, IterationMonitor, check_callback
from ._results import CPALSResult

__all__ = ["check_als_options", "check_init", "cp_als", "hadamard_grams", "initial_factors",
           "scaled_data", "solve_mode", "unit_columns", "unscaled_model", "zero_result"]

logger = logging.getLogger("tensorfact.cp_als")

Callback = Callable[[int, CPTensor, float], Any]


def cp_als(
    X: Any,
    /,
    rank: int,
    *,
    init: str | CPTensor = "svd",
    max_iter: int = 100,
    tol: float = 1e-8,
    l2_reg: float = 0.0,
    n_init: int = 1,
    rng: None | int | np.random.Generator = None,
    callback: Callback | None = None,
    verbose: bool = False,
    check_finite: bool = True,
    mask: Any = None,
    missing: str = "weighted",
) -> CPALSResult:
    """CP decomposition by alternating least squares.

    Fits ``X ≈ sum_r w_r a_r^(0) ∘ ... ∘ a_r^(N-1)`` by cycling over the modes
    and solving each factor's linear least-squares problem exactly.

    Each sweep costs two GEMM passes over ``X`` (dimension-tree MTTKRP, see
    `tensorfact.tenalg.DimensionTree`); normal equations are solved by
    Cholesky on the cached Hadamard product of Gram matrices; the error is
    obtained from the last MTTKRP, and recomputed exactly (blockwise) when
    that cheap formula would lose precision (relative error below
    ``sqrt(100 * eps)``).

    Parameters
    ----------
    X : array of shape (I_0, ..., I_{N-1}), N >= 2, or a data format
        Any array API namespace (NumPy, CuPy, torch, ...). Integer and
        boolean input is promoted to the namespace's default float. A
        ``SparseTensor`` or any other `tensorfact.formats.TensorFormat`
        is read through the data-format protocol.
    rank : int
        Number of components, ``1 <= rank <= min_n prod_{m != n} I_m``.
    init : {"svd", "random", "joint_schur"} or CPTensor
        ``"svd"``: leading left singular vectors of ``unfold(X, n)`` (Gram
        eigenvectors for small modes, a randomised range finder with a
        Khatri-Rao test matrix for large ones; padded with random columns
        when ``rank > I_n``). ``"random"``:
        standard normal factors. ``"joint_schur"``: the joint-Schur CP of
        `tensorfact.cp_joint_schur` (3-way only). A ``CPTensor`` is used
        as given (never modified). Mode 0 is computed first, so its initial
        factor is never used.
    max_iter : int
        Maximum number of sweeps.
    tol : float
        Stop when the relative error changes by less than ``tol`` between
        sweeps; ``tol=0`` runs exactly ``max_iter`` sweeps.
    l2_reg : float
        Ridge penalty ``l2_reg * ||A_n||_F^2`` added to every factor update.
    n_init : int
        Number of runs; the first uses ``init``, later ones random
        initialisations. The run with the lowest error is returned.
    rng : None, int or numpy.random.Generator
        Randomness for random initialisations (drawn on the host).
    callback : callable, optional
        Called as ``callback(iteration, cp, rel_error)`` after every sweep;
        returning ``True`` stops the run.
    verbose : bool
        Show a progress bar (tqdm) with the current error.
    check_finite : bool
        Reject NaN/Inf in ``X`` (with ``mask``: in the observed entries).
    mask : None, boolean array, "nan" or "observed"
        Missing data (see ``docs/missing-data.md``). A boolean array of
        ``X``'s shape and namespace, ``True`` where an entry is observed
        (an integer array of 0 and 1 is accepted too); ``"nan"``: the NaN
        entries of the dense ``X`` are the missing ones; ``"observed"``:
        ``X`` is a ``SparseTensor`` whose stored entries are the observed
        ones (every other entry is missing, not zero). The fit and
        ``rel_error`` then cover the observed entries only:
        ``||P(X - X_hat)|| / ||P(X)||`` with ``P`` keeping observed entries.
        ``None`` (default): every entry is observed.
    missing : {"weighted", "em"}
        How missing entries are handled when ``mask`` is given.
        ``"weighted"``: exact weighted ALS, each factor row solving its own
        normal equations over its observed entries. ``"em"``: expectation
        maximisation, missing entries imputed from the current model before
        each sweep (TensorLy's masked ``parafac``). The default was chosen
        by the iteration counts in ``docs/missing-data.md``. Checked but
        unused without ``mask``.

    Returns
    -------
    CPALSResult
        ``(cp, n_iter, converged, rel_error, history)``; with ``mask`` the
        errors are over the observed entries.

    Raises
    ------
    ValueError
        Bad ``rank``, ``max_iter``, ``tol``, ``l2_reg``, ``n_init``,
        ``missing``, a tensor with fewer than two modes or an empty mode,
        NaN/Inf in ``X``, an ``init`` CPTensor of the wrong shape or rank;
        a ``mask`` of the wrong shape, with no observed entry, of integers
        other than 0 and 1, an array ``mask`` with a ``SparseTensor`` ``X``.
    TypeError
        Complex ``X``, ``init`` from a different namespace or dtype; a
        ``mask`` of floating dtype or from a different namespace.
    FloatingPointError
        If an iterate becomes non-finite.

    References
    ----------
    Kolda & Bader, "Tensor decompositions and applications", SIAM Review, 2009.
    Kaya & Uçar, "Parallel CANDECOMP/PARAFAC decomposition of sparse tensors
    using dimension trees", SIAM J. Sci. Comput., 2018.

    Examples
    --------
    >>> import numpy as np
    >>> from tensorfact.datasets import planted_cp
    >>> X, truth = planted_cp((20, 30, 40), rank=3, rng=0)
    >>> res = cp_als(X, rank=3, rng=0)
    >>> res.rel_error < 1e-8, res.cp.factor_match_score(truth) > 0.9999
    (True, True)

    With 70 % of the entries missing (``M`` is ``True`` where observed):

    >>> M = np.random.default_rng(0).random(X.shape) < 0.3
    >>> res = cp_als(X, rank=3, mask=M, rng=0)
    >>> res.rel_error < 1e-8, res.cp.factor_match_score(truth) > 0.9999
    (True, True)
    """
    missing = check_choice(missing, "missing", ("weighted", "em"))
    if mask is not None:
        from ._cp_masked import cp_als_masked

        return cp_als_masked(X, rank, mask=mask, missing=missing, init=init,
                             max_iter=max_iter, tol=tol, l2_reg=l2_reg, n_init=n_init, rng=rng,
                             callback=callback, verbose=verbose, check_finite=check_finite)
    data = as_format(X, check_finite=check_finite)
    R = check_rank(rank, data.shape)
    max_iter, tol, l2_reg, n_init, gen = check_als_options(max_iter, tol, l2_reg, n_init, rng,
                                                           callback, init)
    data, scale, normX2 = scaled_data(data)
    if normX2 == 0.0:
        return zero_result(data, R)
    best: CPALSResult | None = None
    for run in range(n_init):
        run_init = init if run == 0 else "random"
        factors = initial_factors(data, R, run_init, gen)
        res = _als(data, factors, normX2, scale, max_iter=max_iter, tol=tol, l2_reg=l2_reg,
                   callback=callback, verbose=verbose)
        if best is None or res.rel_error < best.rel_error:
            best = res
    return best  # type: ignore[return-value]


def check_als_options(max_iter: Any, tol: Any, l2_reg: Any, n_init: Any, rng: Any,
                      callback: Any, init: Any) -> tuple[int, float, float, int,
                                                         np.random.Generator]:
    """Check the options shared by the CP-ALS variants: ``(max_iter, tol, l2_reg, n_init, rng)``."""
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_nonneg_float(tol, "tol")
    l2_reg = check_nonneg_float(l2_reg, "l2_reg")
    n_init = check_positive_int(n_init, "n_init")
    check_callback(callback)
    gen = B.check_rng(rng)
    check_init(init, ("svd", "random", "joint_schur"))
    return max_iter, tol, l2_reg, n_init, gen


def check_init(init: Any, names: tuple[str, ...]) -> None:
    """Validate a solver's ``init``: one of the strings ``names`` or a `CPTensor`."""
    if isinstance(init, CPTensor):
        return
    if not isinstance(init, str):
        options = ", ".join(repr(n) for n in names)
        raise ArgumentTypeError(f"init must be {options} or a CPTensor, got "
                                f"{type(init).__name__}")
    check_choice(init, "init", names)


def initial_factors(data: TensorFormat, R: int, init: Any, gen: np.random.Generator
                    ) -> list[Any]:
    """Initial factor matrices for CP-ALS-type solvers (shared with SPALS)."""
    xp = data.xp
    shape = data.shape
    dt = data.dtype
    if isinstance(init, CPTensor):
        try:
            B.namespace(data.like, init.factors[0])
        except TypeError as exc:
            raise TypeError(f"init must live with X (one array library and device): {exc}"
                            ) from None
        if init.shape != shape:
            raise ValueError(f"init has shape {init.shape} but X has shape {shape}")
        if init.rank != R:
            raise ValueError(f"init has rank {init.rank} but rank={R} was requested")
        if init.dtype != dt:
            raise TypeError(f"init has dtype {init.dtype} but X has dtype {dt}")
        for n, A in enumerate(init.factors):
            if not bool(xp.all(xp.isfinite(A))):
                raise ValueError(f"init.factors[{n}] contains NaN or Inf")
        return list(init.factors)
    if init == "random":
        return [B.random_normal(xp, (s, R), gen, dtype=dt, like=data.like) for s in shape]
    if init == "joint_schur":
        if len(shape) != 3:
            raise ValueError("init='joint_schur' needs a 3-way tensor")
        from ._joint import cp_joint_schur

        to_dense = getattr(data, "to_dense", None)
        if to_dense is None:
            raise ValueError(f"init='joint_schur' needs a dense or sparse X, got "
                             f"{type(data).__name__}")
        dense = to_dense()
        return list(cp_joint_schur(dense, R, rng=gen).cp.factors)
    # "svd" (mode 0 is solved first, so its initial factor is never read)
    factors = [xp.zeros((shape[0], R), dtype=dt, device=B.device(data.like))]
    for n in range(1, len(shape)):
        k = min(R, shape[n])
        lead = data.leading_subspace(n, k, gen)
        if k < R:
            extra = B.random_normal(xp, (shape[n], R - k), gen, dtype=dt, like=data.like)
            lead = xp.concat([lead, extra], axis=1)
        factors.append(lead)
    return factors


def unit_columns(xp: ModuleType, A: Any) -> tuple[Any, Any]:
    """``(A / norms, norms)`` with the column norms of ``A`` (zero columns kept)."""
    lam = xp.linalg.vector_norm(A, axis=0)
    return A / xp.where(lam > 0, lam, xp.ones_like(lam))[None, :], lam


def solve_mode(xp: ModuleType, M: Any, grams: list[Any], n: int, ridge: Any) -> tuple[Any, Any]:
    """The ALS update of mode ``n`` from its MTTKRP ``M``: ``(unit columns, weights)``.

    Solves ``A (*_{m != n} grams[m] + ridge) = M`` (``ridge`` may be None) and
    replaces ``grams[n]`` by the Gram matrix of the new factor.
    """
    G = hadamard_grams(grams, skip=n)
    if ridge is not None:
        G = G + ridge
    A = B.spd_solve_right(xp, M, G, what=f"Gram matrix of mode {n}")
    factor, weights = unit_columns(xp, A)
    grams[n] = xp.matrix_transpose(factor) @ factor
    return factor, weights


def hadamard_grams(grams: list[Any], skip: int | None = None) -> Any:
    """Elementwise product of the Gram matrices, leaving out ``grams[skip]``."""
    H = None
    for m, G in enumerate(grams):
        if m != skip:
            H = G if H is None else H * G
    return H


def scaled_data(data: TensorFormat) -> tuple[TensorFormat, float, float]:
    """``(data, scale, ||data||^2)`` with data of extreme magnitude scaled by a power of two.

    The solvers work on ``scale * X`` (see ``tensorfact.formats._scale``) and
    divide their weights by ``scale``: results do not depend on the data's
    units, even where ``||X||^2`` would overflow or underflow.
    """
    nsq = data.norm_sq()
    data, scale = safe_scale(data, nsq)
    if scale != 1.0:
        nsq = data.norm_sq()
    return data, scale, nsq


def unscaled_model(xp: ModuleType, factors: list[Any], weights: Any, scale: float) -> CPTensor:
    """The model in the data's units from a solve on ``scale * X``.

    Usually unit-norm columns with ``weights / scale``. When those weights
    would be subnormal (data of subnormal magnitude, ``scale`` up to
    ``2^1000``), the power of two is shared out exactly between the factors
    and the weights instead, so that no entry loses precision.
    """
    w = weights / scale
    if scale == 1.0:
        return CPTensor(list(factors), weights=w)
    tiny = float(np.finfo(np.dtype(str(weights.dtype).split(".")[-1])).tiny)
    aw = xp.abs(w)
    if not bool(xp.any((aw > 0) & (aw < tiny))):
        return CPTensor(list(factors), weights=w)
    k = math.frexp(scale)[1] - 1  # scale = 2^k
    q, r = divmod(k, len(factors))
    return CPTensor([A * math.ldexp(1.0, -q) for A in factors],
                    weights=weights * math.ldexp(1.0, -r))


def zero_result(data: TensorFormat, R: int) -> CPALSResult:
    """The exact answer for an all-zero tensor: the zero model, error 0."""
    xp = data.xp
    dev = B.device(data.like)
    zero = [xp.zeros((s, R), dtype=data.dtype, device=dev) for s in data.shape]
    cp = CPTensor(zero, weights=xp.zeros((R,), dtype=data.dtype, device=dev))
    return CPALSResult(cp, 0, True, 0.0, ConvergenceHistory((), ()))


def _als(data: TensorFormat, init_factors: list[Any], normX2: float, scale: float, *,
         max_iter: int, tol: float, l2_reg: float, callback: Callback | None,
         verbose: bool) -> CPALSResult:
    xp = data.xp
    N = len(data.shape)
    R = int(init_factors[0].shape[1])
    eps = B.finfo_eps(xp, data.dtype)

    # unit columns for conditioning; the ALS iterates do not depend on this scaling
    factors = [init_factors[0]] + [unit_columns(xp, A)[0] for A in init_factors[1:]]
    grams = [xp.matrix_transpose(A) @ A for A in factors]
    ridge = l2_reg * xp.eye(R, dtype=data.dtype, device=B.device(data.like))
    weights = xp.ones((R,), dtype=data.dtype, device=B.device(data.like))
    monitor = IterationMonitor("cp_als", max_iter=max_iter, tol=tol, callback=callback,
                               verbose=verbose, logger=logger,
                               hint="the problem may be ill-posed (try l2_reg > 0 or a "
                                    "lower rank)")
    with monitor:
        for _ in monitor.iterations():
            for n in range(N):
                M = data.mttkrp(factors, n)
                factors[n], weights = solve_mode(xp, M, grams, n, ridge if l2_reg > 0 else None)
            # ||X - X_hat||^2 from the last MTTKRP: <X, X_hat> = sum(M * A_N * w)
            model_sq = B.to_float(xp.sum(weights[:, None] * hadamard_grams(grams)
                                         * weights[None, :]))
            inner = B.to_float(xp.sum(M * factors[-1] * weights[None, :]))
            resid_sq = normX2 - 2.0 * inner + model_sq
            if resid_sq < 100.0 * eps * normX2:  # cancellation: recompute exactly
                resid_sq = data.residual_norm_sq(weights, factors)
            rel = math.sqrt(max(resid_sq, 0.0) / normX2)
            if monitor.record(rel, partial(unscaled_model, xp, factors, weights, scale)):
                break
    return CPALSResult(unscaled_model(xp, factors, weights, scale), monitor.n_iter,
                       monitor.converged, monitor.rel_error, monitor.history)
