"""Frozen result objects returned by the solvers."""

from __future__ import annotations

from dataclasses import dataclass

from ..tensors.cp import CPTensor
from ._monitor import ConvergenceHistory

__all__ = ["ConvergenceHistory", "CPALSResult"]


@dataclass(frozen=True)
class CPALSResult:
    """Result of :func:`tensorfact.cp_als` and :func:`tensorfact.spals`.

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
