"""Frozen result objects returned by the solvers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from .._validation import check_int, check_nonneg_float, check_real
from ..tensors.cp import CPTensor
from ..tensors.tucker import TuckerTensor
from ._monitor import ConvergenceHistory

__all__ = ["ConvergenceHistory", "CPALSResult", "CPAPRResult", "TuckerResult"]


def _model_checked(name: str, model_type: type, extra: Callable[[Any], None] | None = None
                   ) -> Callable[[type], type]:
    """Class decorator: ``__post_init__`` checks the model type, `_check_common`, then ``extra``."""

    def deco(cls: type) -> type:
        def __post_init__(self: Any) -> None:
            model = getattr(self, name)
            if not isinstance(model, model_type):
                raise TypeError(f"{name} must be a {model_type.__name__}, got "
                                f"{type(model).__name__}")
            _check_common(self)
            if extra is not None:
                extra(self)

        cls.__post_init__ = __post_init__  # type: ignore[attr-defined]
        return cls

    return deco


@dataclass(frozen=True)
@_model_checked("cp", CPTensor)
class CPALSResult:
    """Result of `tensorfact.cp_als`, `tensorfact.spals` and `tensorfact.nonnegative_cp`.

    Attributes
    ----------
    cp : CPTensor
        The fitted decomposition (unit-norm factor columns, weights in ``cp.weights``).
    n_iter : int
        Number of iterations (full sweeps) run.
    converged : bool
        Whether the stopping tolerance was met before ``max_iter``.
    rel_error : float
        Final relative reconstruction error.
    history : ConvergenceHistory
        Relative error and elapsed time of every iteration.
    """

    cp: CPTensor
    n_iter: int
    converged: bool
    rel_error: float
    history: ConvergenceHistory


@dataclass(frozen=True)
@_model_checked("tucker", TuckerTensor)
class TuckerResult:
    """Result of `tensorfact.tucker` (HOOI) and `tensorfact.hosvd`.

    Attributes
    ----------
    tucker : TuckerTensor
        The fitted decomposition, with orthonormal factor columns (for data
        of subnormal magnitude, orthogonal columns whose norm is a power of
        two that keeps the core's entries normal).
    n_iter : int
        HOOI sweeps run; 0 for the direct `tensorfact.hosvd`.
    converged : bool
        The error changed by less than ``tol`` before ``max_iter`` sweeps
        (always ``True`` for `tensorfact.hosvd`).
    rel_error : float
        ``||X - T|| / ||X||`` of the returned model.
    history : ConvergenceHistory
        Error and elapsed time after each sweep (empty for `tensorfact.hosvd`).
    """

    tucker: TuckerTensor
    n_iter: int
    converged: bool
    rel_error: float
    history: ConvergenceHistory


def _check_apr(res: Any) -> None:
    object.__setattr__(res, "log_likelihood",
                       check_real(res.log_likelihood, "log_likelihood", allow_inf=True))
    object.__setattr__(res, "kkt_violation", check_nonneg_float(res.kkt_violation, "kkt_violation"))


@dataclass(frozen=True)
@_model_checked("cp", CPTensor, _check_apr)
class CPAPRResult:
    """Result of `tensorfact.cp_apr` (Poisson CP).

    Attributes
    ----------
    cp : CPTensor
        The fitted non-negative model: factor columns of unit 1-norm, the
        component sizes in ``cp.weights``, sorted by decreasing weight.
    n_iter : int
        Number of outer iterations run.
    converged : bool
        Whether every mode's subproblem met the KKT tolerance ``tol`` before
        its first update in the last outer iteration.
    log_likelihood : float
        Final Poisson log-likelihood ``sum(x log m) - sum(m)`` (without the
        ``-sum(log x!)`` term, which does not depend on the model).
    kkt_violation : float
        Largest KKT violation ``|min(A, 1 - Phi)|`` of the last outer
        iteration (the stopping criterion).
    rel_error : float
        Final relative Frobenius error ``||X - M|| / ||X||`` (for reference;
        CP-APR does not minimise it).
    history : ConvergenceHistory
        Per outer iteration: ``rel_error``, ``time`` and ``objective``
        (the log-likelihood).
    """

    cp: CPTensor
    n_iter: int
    converged: bool
    log_likelihood: float
    kkt_violation: float
    rel_error: float
    history: ConvergenceHistory



def _check_common(res: CPALSResult | TuckerResult | CPAPRResult) -> None:
    """The checks shared by the result classes (counts, flags, error, history)."""
    object.__setattr__(res, "n_iter", check_int(res.n_iter, "n_iter", low=0,
                                                what="a non-negative integer"))
    if not isinstance(res.converged, (bool, np.bool_)):
        raise TypeError(f"converged must be a bool, got {type(res.converged).__name__}")
    object.__setattr__(res, "converged", bool(res.converged))
    object.__setattr__(res, "rel_error", check_nonneg_float(res.rel_error, "rel_error"))
    if not isinstance(res.history, ConvergenceHistory):
        raise TypeError(f"history must be a ConvergenceHistory, got "
                        f"{type(res.history).__name__}")
