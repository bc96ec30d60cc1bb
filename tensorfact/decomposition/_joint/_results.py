"""Result objects and warnings of the joint-triangularization functions."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ...tensors.cp import CPTensor
from .._monitor import ConvergenceHistory

__all__ = [
    "BoundInvalidWarning",
    "JointEigenResult",
    "JointSchurCPResult",
    "JointTriangularizationResult",
    "TriangularizationErrorBound",
]


class BoundInvalidWarning(RuntimeWarning):
    """The a posteriori bound is not valid here (gap too small for the noise level)."""


@dataclass(frozen=True)
class JointTriangularizationResult:
    """Result of `tensorfact.joint_triangularize`.

    Attributes
    ----------
    U : (d, d) array
        Orthogonal joint triangularizer (caller's namespace, device, dtype).
    T : (N, d, d) array
        ``U^T M_n U`` (nearly upper triangular).
    loss : float
        Final ``sum_n ||strictly_lower(T_n)||_F^2``.
    rel_error : float
        ``sqrt(loss / sum_n ||M_n||_F^2)``, the relative size of the strictly
        lower parts (0 for all-zero matrices).
    n_iter : int
        Iterations run (Gauss-Newton steps or Jacobi sweeps).
    converged : bool
        Whether the stopping test was met before ``max_iter`` (``False`` when
        the callback stopped the run).
    history : ConvergenceHistory
        ``rel_error``, elapsed ``time`` and the loss (``objective``) at the
        starting point (entry 0) and after every iteration (entry ``k``);
        the loss never increases.
    """

    U: Any
    T: Any
    loss: float
    rel_error: float
    n_iter: int
    converged: bool
    history: ConvergenceHistory


@dataclass(frozen=True)
class TriangularizationErrorBound:
    """Result of `tensorfact.triangularization_error_bound`.

    Attributes
    ----------
    bound : float
        Upper bound on ``min_{U0} ||U - U0||_F`` over exact joint
        triangularizers ``U0`` of the noise-free matrices; ``inf`` when the
        bound is not valid (gap too small for the noise level).
    first_order : float
        The first-order part alone, ``||J^+ r|| + noise_term``;
        ``bound = safety_factor * first_order / (1 - nonlinearity)``.
    certified : float
        Local bound with every second-order term bounded in the worst case
        (smallest fixed point of the inequality derived in the docs); often
        ``inf`` at moderate noise because the worst-case constants are large.
    residual : float
        ``||r||`` with ``r = (strictly_lower(U^T M'_n U))_n``.
    gap : float
        Smallest singular value of the linearised residual operator
        ``J: A -> (strictly_lower([U^T M'_n U, A]))_n`` on skew-symmetric
        ``A`` (the joint eigenvalue gap).
    step_norm : float
        Norm of the Gauss-Newton step ``||J^+ r||`` (zero at a stationary point).
    noise_term : float
        First-order contribution of the noise, ``eta / gap`` (worst case) or
        its Gaussian high-probability analogue.
    nonlinearity : float
        Estimated relative size of the second-order terms,
        ``2 (sqrt(2) (||J g|| + ||P e||) + eps2) / gap`` (``P``: projection on
        the range of ``J``); ``bound`` is finite only when it is below 1.
    noise_level : float
        The ``noise_level`` passed in.
    noise_norm : str
        Its meaning (``"fro"``, ``"spectral"``, ``"total"`` or ``"gaussian"``).
    probability : float
        Probability with which the bound holds: 1.0 for the worst-case norms,
        ``1 - failure_probability`` for ``"gaussian"``.
    """

    bound: float
    first_order: float
    certified: float
    residual: float
    gap: float
    step_norm: float
    noise_term: float
    nonlinearity: float
    noise_level: float
    noise_norm: str
    probability: float


@dataclass(frozen=True)
class JointEigenResult:
    """Result of `tensorfact.joint_eigen`.

    Attributes
    ----------
    eigenvectors : (d, d) array
        Unit-norm joint eigenvectors ``V`` (columns), ordered like the
        diagonal of the triangular forms.
    eigenvalues : (N, d) array
        ``eigenvalues[n, i]``: eigenvalue of ``M_n`` for ``eigenvectors[:, i]``.
    """

    eigenvectors: Any
    eigenvalues: Any




@dataclass(frozen=True)
class JointSchurCPResult:
    """Result of `tensorfact.cp_joint_schur`.

    Attributes
    ----------
    cp : CPTensor
        Normalised decomposition in the caller's namespace and dtype.
    rel_error : float
        Exact relative error ``||X - cp.to_dense()||_F / ||X||_F`` against the
        input tensor (0 for an all-zero tensor).
    triangularization : JointTriangularizationResult
        The joint triangularization of the slice-ratio matrices (host NumPy
        float64 arrays, ``R x R``); for ``rank=1`` the trivial one of the
        ``1 x 1`` core slices.
    """

    cp: CPTensor
    rel_error: float
    triangularization: JointTriangularizationResult
