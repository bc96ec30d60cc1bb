"""Frozen result objects returned by the solvers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import check_int, check_nonneg_float
from ..tensors.cp import CPTensor
from ._monitor import ConvergenceHistory

__all__ = ["ConvergenceHistory", "CPALSResult"]


@dataclass(frozen=True)
class CPALSResult:
    """Result of `tensorfact.cp_als` and `tensorfact.spals`.

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

    def __post_init__(self) -> None:
        if not isinstance(self.cp, CPTensor):
            raise TypeError(f"cp must be a CPTensor, got {type(self.cp).__name__}")
        object.__setattr__(self, "n_iter", check_int(self.n_iter, "n_iter", low=0,
                                                     what="a non-negative integer"))
        if not isinstance(self.converged, (bool, np.bool_)):
            raise TypeError(f"converged must be a bool, got {type(self.converged).__name__}")
        object.__setattr__(self, "converged", bool(self.converged))
        object.__setattr__(self, "rel_error", check_nonneg_float(self.rel_error, "rel_error"))
        if not isinstance(self.history, ConvergenceHistory):
            raise TypeError(f"history must be a ConvergenceHistory, got "
                            f"{type(self.history).__name__}")
