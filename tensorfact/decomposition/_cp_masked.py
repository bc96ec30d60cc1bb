"""CP-ALS with missing data: exact weighted ALS and EM imputation on the observed entries.

Both methods work on the observed entries as coordinates (a `SparseTensor`
of the observed values), so memory and time per sweep are ``O(n_obs R)``
(weighted ALS: ``O(n_obs R^2)``) whatever the fraction missing; a dense
``X`` with a mask is never filled in.

* Weighted ALS (`tensorfact._kernels.masked.row_solve_numba`): each factor
  row solves its own normal equations over its observed entries.
* EM: the sweep is the ALS sweep on the tensor completed by the model of the
  previous sweep, ``Z = P(X) + (1 - P)(M)``. Its MTTKRP splits into the
  model's MTTKRP, a product of small matrices
  (``A_prev diag(w_prev) *_{m != n} A_prev_m^T A_m``), plus the sparse
  MTTKRP of the residual ``P(X - M)`` at the observed entries: the same
  iterates as filling a dense tensor (TensorLy's masked ``parafac``) without
  forming it.
"""

from __future__ import annotations

import logging
import math
import warnings
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B
from .._kernels.masked import (
    cp_values,
    cp_values_xp,
    mode_layout,
    mttkrp_sorted,
    row_solve_numba,
    row_solve_xp,
)
from .._kernels.sparse import mttkrp_xp
from .._validation import ArgumentTypeError, check_rank, check_tensor, describe
from ..formats import SparseTensor, TensorFormat
from ..tensors.cp import CPTensor
from ._cp_als import (
    Callback,
    check_als_options,
    hadamard_grams,
    initial_factors,
    scaled_data,
    solve_mode,
    unit_columns,
    unscaled_model,
    zero_result,
)
from ._monitor import IterationMonitor
from ._results import CPALSResult

__all__ = ["cp_als_masked", "observed_entries"]

logger = logging.getLogger("tensorfact.cp_als")


def cp_als_masked(X: Any, rank: Any, *, mask: Any, missing: str, init: Any, max_iter: Any,
                  tol: Any, l2_reg: Any, n_init: Any, rng: Any, callback: Callback | None,
                  verbose: bool, check_finite: bool) -> CPALSResult:
    """`cp_als` with ``mask`` given (the arguments are `cp_als`'s)."""
    obs: Any = observed_entries(X, mask, check_finite=check_finite)
    R = check_rank(rank, obs.shape)
    max_iter, tol, l2_reg, n_init, gen = check_als_options(max_iter, tol, l2_reg, n_init, rng,
                                                           callback, init)
    _warn_unobserved_slices(obs)
    obs, scale, normX2 = scaled_data(obs)
    if normX2 == 0.0:
        return zero_result(obs, R)
    solver: _Observed | None = None
    best: CPALSResult | None = None
    for run in range(n_init):
        run_init = init if run == 0 else "random"
        factors = initial_factors(obs, R, run_init, gen)
        if solver is None:  # after the SVD's temporaries are gone: a lower peak of memory
            solver = _Observed(obs)
        opts = dict(max_iter=max_iter, tol=tol, l2_reg=l2_reg, callback=callback,
                    verbose=verbose)
        if missing == "weighted":
            res = _weighted_als(solver, factors, normX2, scale, **opts)
        else:
            weights = (run_init.weights * scale if isinstance(run_init, CPTensor)
                       else obs.xp.ones((R,), dtype=obs.dtype, device=B.device(obs.like)))
            res = _em_als(solver, factors, weights, normX2, scale, **opts)
        if best is None or res.rel_error < best.rel_error:
            best = res
    return best  # type: ignore[return-value]


# --------------------------------------------------------------------------- #
# the observed entries
# --------------------------------------------------------------------------- #
def observed_entries(X: Any, mask: Any, *, check_finite: bool = True) -> SparseTensor:
    """The observed entries of ``X`` under ``mask`` as a `SparseTensor` (``X`` untouched).

    See `tensorfact.cp_als` for the meaning of ``mask``. Values at missing
    entries are never read (they may be NaN or Inf).
    """
    if isinstance(X, SparseTensor):
        if not (isinstance(mask, str) and mask == "observed"):
            raise ValueError(f"mask must be 'observed' when X is a SparseTensor (its stored "
                             f"entries are the observed ones), got {describe(mask)}")
        if X.nnz == 0:
            raise ValueError("mask='observed' needs at least one stored entry in X: nothing "
                             "is observed")
        if check_finite:
            X.check_finite("X")
        return X
    if isinstance(X, TensorFormat) or B.is_dask_array(X):
        raise ValueError(f"mask is supported for dense arrays and SparseTensor, not "
                         f"{type(X).__name__}")
    if not B.is_array(X):
        raise TypeError(f"X must be an array or a SparseTensor, got {type(X).__name__}")
    xp = B.namespace(X)
    X = check_tensor(X, xp, finite=False)
    if isinstance(mask, str):
        if mask == "observed":
            raise ValueError("mask='observed' needs X as a SparseTensor of the observed "
                             "entries; for a dense X pass a boolean mask or mask='nan'")
        if mask != "nan":
            raise ValueError(f"mask must be a boolean array, 'nan' or 'observed', got {mask!r}")
        M = ~xp.isnan(X)
    else:
        M = _check_mask(mask, X, xp)
    shape = tuple(int(s) for s in X.shape)
    idx = xp.nonzero(xp.reshape(M, (-1,)))[0]
    if int(idx.shape[0]) == 0:
        raise ValueError("mask has no observed entry (all False" +
                         (", X is all NaN)" if isinstance(mask, str) else ")"))
    values = xp.take(xp.reshape(X, (-1,)), idx)
    if check_finite and not bool(xp.all(xp.isfinite(values))):
        what = "Inf" if isinstance(mask, str) else "NaN or Inf"
        raise ValueError(f"X contains {what} at observed entries; clean the data, mark them "
                         "missing in mask, or pass check_finite=False")
    idx = xp.astype(idx, xp.int64)
    cols = []
    stride = math.prod(shape)
    for s in shape:
        stride //= s
        cols.append((idx // stride) % s)
    # increasing linear indices: already the canonical layout (sorted, unique), no re-sort
    return SparseTensor._trusted(xp, xp.stack(cols, axis=1), values, shape)


def _check_mask(mask: Any, X: Any, xp: ModuleType) -> Any:
    if not B.is_array(mask):
        raise ArgumentTypeError(f"mask must be a boolean array of X's shape, 'nan' or "
                                f"'observed', got {describe(mask)}")
    B.namespace(X, mask, name="X and mask")
    if tuple(mask.shape) != tuple(X.shape):
        raise ValueError(f"mask has shape {tuple(mask.shape)} but X has shape "
                         f"{tuple(X.shape)}")
    if xp.isdtype(mask.dtype, "bool"):
        return mask
    if xp.isdtype(mask.dtype, "integral"):
        if not bool(xp.all((mask == 0) | (mask == 1))):
            raise ValueError("mask of integer dtype must hold only 0 (missing) and 1 "
                             "(observed)")
        return mask != 0
    raise TypeError(f"mask must be boolean (True = observed) or integer 0/1, got dtype "
                    f"{mask.dtype}")


def _warn_unobserved_slices(obs: SparseTensor) -> None:
    xp = obs.xp
    for n, size in enumerate(obs.shape):
        if B.is_numpy(xp):
            counts = np.bincount(np.asarray(obs.coords[:, n]), minlength=size)
        else:
            ones = xp.ones((obs.nnz,), dtype=obs.dtype, device=B.device(obs.like))
            counts = B.to_numpy(B.scatter_add(xp, size, obs.coords[:, n], ones))
        empty = int(np.sum(counts == 0))
        if empty:
            warnings.warn(f"mask leaves {empty} of the {size} indices of mode {n} without an "
                          "observed entry: nothing determines their factor rows (zero with "
                          "missing='weighted', the initial guess's continuation with "
                          "missing='em')", RuntimeWarning, stacklevel=4)


class _Observed:
    """The observed entries with the per-mode layouts the kernels use (built once)."""

    def __init__(self, obs: SparseTensor) -> None:
        self.xp = obs.xp
        self.shape = obs.shape
        self.coords = obs.coords
        self.values = obs.values
        self.numba = B.is_numpy(obs.xp)
        self.layouts = []
        if self.numba:
            coords = np.asarray(obs.coords)
            self.layouts = [mode_layout(coords, n, s) for n, s in enumerate(obs.shape)]

    def row_solve(self, factors: list[Any], n: int, l2_reg: float) -> Any:
        if self.numba:
            return row_solve_numba(self.layouts[n], self.values, factors, n, l2_reg=l2_reg)[0]
        return row_solve_xp(self.xp, self.coords, self.values, factors, n, l2_reg=l2_reg)[0]

    def model_values(self, weights: Any, factors: list[Any]) -> Any:
        if self.numba:
            return cp_values(self.coords, weights, factors)
        return cp_values_xp(self.xp, self.coords, weights, factors)

    def residual(self, weights: Any, factors: list[Any]) -> tuple[Any, float]:
        """``(x - m at the observed entries, sum of its squares)``."""
        r = self.values - self.model_values(weights, factors)
        return r, B.to_float(self.xp.vecdot(r, r))

    def mttkrp(self, r: Any, factors: list[Any], n: int) -> Any:
        if self.numba:
            return mttkrp_sorted(self.layouts[n], r, factors, n)
        return mttkrp_xp(self.xp, self.coords, r, factors, n, self.shape[n])


def _monitor(callback: Callback | None, max_iter: int, tol: float, verbose: bool
             ) -> IterationMonitor:
    return IterationMonitor("cp_als", max_iter=max_iter, tol=tol, callback=callback,
                            verbose=verbose, logger=logger,
                            hint="the problem may be ill-posed (try l2_reg > 0, a lower rank, "
                                 "or fewer missing entries)")


def _weighted_als(data: _Observed, init_factors: list[Any], normX2: float, scale: float, *,
                  max_iter: int, tol: float, l2_reg: float, callback: Callback | None,
                  verbose: bool) -> CPALSResult:
    xp = data.xp
    factors = [init_factors[0]] + [unit_columns(xp, A)[0] for A in init_factors[1:]]
    monitor = _monitor(callback, max_iter, tol, verbose)
    with monitor:
        for _ in monitor.iterations():
            for n in range(len(factors)):
                factors[n], weights = unit_columns(xp, data.row_solve(factors, n, l2_reg))
            resid_sq = data.residual(weights, factors)[1]
            rel = math.sqrt(resid_sq / normX2)
            if monitor.record(rel, partial(unscaled_model, xp, factors, weights, scale)):
                break
    return CPALSResult(unscaled_model(xp, factors, weights, scale), monitor.n_iter,
                       monitor.converged, monitor.rel_error, monitor.history)


def _em_als(data: _Observed, init_factors: list[Any], init_weights: Any, normX2: float,
            scale: float, *, max_iter: int, tol: float, l2_reg: float,
            callback: Callback | None, verbose: bool) -> CPALSResult:
    xp = data.xp
    R = int(init_factors[0].shape[1])
    ridge = (l2_reg * xp.eye(R, dtype=init_factors[0].dtype, device=B.device(init_factors[0]))
             if l2_reg > 0 else None)
    # the model completing the data in the coming sweep: the initial guess as given
    prev, prev_w = list(init_factors), init_weights
    r = data.residual(prev_w, prev)[0]
    factors = [init_factors[0]] + [unit_columns(xp, A)[0] for A in init_factors[1:]]
    grams = [xp.matrix_transpose(A) @ A for A in factors]
    monitor = _monitor(callback, max_iter, tol, verbose)
    with monitor:
        for _ in monitor.iterations():
            for n in range(len(factors)):
                # MTTKRP of the completed tensor: the model's part + the residual's part
                cross = [xp.matrix_transpose(P) @ A for P, A in zip(prev, factors)]
                M = (prev[n] * prev_w[None, :]) @ hadamard_grams(cross, skip=n)
                M = M + data.mttkrp(r, factors, n)
                factors[n], weights = solve_mode(xp, M, grams, n, ridge)
            prev, prev_w = list(factors), weights
            r, resid_sq = data.residual(weights, factors)
            rel = math.sqrt(resid_sq / normX2)
            if monitor.record(rel, partial(unscaled_model, xp, factors, weights, scale)):
                break
    return CPALSResult(unscaled_model(xp, factors, weights, scale), monitor.n_iter,
                       monitor.converged, monitor.rel_error, monitor.history)
