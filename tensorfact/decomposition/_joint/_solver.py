"""``joint_triangularize``: the solver's entry point, start and final clean-up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ... import _backend as B
from ..._validation import check_nonneg_float, check_positive_int
from .._monitor import IterationMonitor, check_callback
from ._checks import check_orthogonal, check_stack
from ._gauss_newton import gauss_newton
from ._jacobi import jacobi
from ._objective import congruence, relative_error, triangularization_loss
from ._results import JointTriangularizationResult

__all__ = ["initial_triangularizer", "joint_triangularize"]

logger = logging.getLogger("tensorfact.joint")

_HINT = ("the matrices may hold NaN/Inf (check_finite=False) or entries too large to square "
         "in float64 (rescale them)")


def joint_triangularize(
    matrices: Any,
    /,
    *,
    init: Any = "schur",
    method: str = "gauss_newton",
    max_iter: int = 100,
    tol: float = 1e-12,
    rng: None | int | np.random.Generator = None,
    callback: Callable[[int, Any, float], Any] | None = None,
    verbose: bool = False,
    check_finite: bool = True,
) -> JointTriangularizationResult:
    """Orthogonal ``U`` making every ``U^T M_n U`` (nearly) upper triangular.

    Minimises ``L(U) = sum_n ||strictly_lower(U^T M_n U)||_F^2`` over the
    orthogonal group, starting from the real Schur vectors of a random linear
    combination of the matrices.

    ``method="gauss_newton"`` parametrises ``U <- U expm(A)`` with ``A``
    skew-symmetric, solves the linear least-squares problem for the
    strictly-lower residuals linearised at ``A = 0`` (a sparse Jacobian of
    size ``N d(d-1)/2 x d(d-1)/2``), and backtracks along the step until an
    Armijo decrease, so the loss never increases. Quadratic convergence for
    exactly triangularizable families, fast linear convergence with noise;
    when the steps shrink slowly (a large residual at the minimum) the exact
    second-order term of the residual is added (a Newton step, where the
    Hessian is positive definite). For a single matrix (``N = 1``) the Schur
    start is exact unless noise created complex eigenvalue pairs; then no
    real triangularizer exists, the Gauss-Newton matrix is singular (see
    Warns) and the iteration lowers the loss without bringing ``U`` closer
    to the noise-free triangularizer.

    ``method="jacobi"`` sweeps over the pairs ``p < q`` and applies, for each,
    the Givens rotation that minimises the loss exactly (the loss restricted
    to one rotation angle is a trigonometric polynomial of degree 4; its
    global minimum is found on a grid and polished by Newton steps).

    Parameters
    ----------
    matrices : array of shape (N, d, d), or a sequence of (d, d) arrays
        Real matrices; any array API namespace (copied to the host once, see
        the notes of ``tensorfact.decomposition._joint``).
    init : "schur" or (d, d) orthogonal array
        ``"schur"``: real Schur vectors of ``sum_n theta_n M_n`` with
        ``theta`` drawn from ``rng`` (unit norm). An array is used as the
        starting point.
    method : {"gauss_newton", "jacobi"}
    max_iter : int
        Maximum Gauss-Newton steps or Jacobi sweeps.
    tol : float
        Stop when the loss is below ``tol**2 * sum_n ||M_n||_F^2`` (exact
        triangularization to working precision), or when the predicted (GN)
        or achieved (Jacobi) relative decrease of the loss falls below ``tol``.
    rng : None, int or numpy.random.Generator
        Randomness for the combination used by ``init="schur"``.
    callback : callable, optional
        Called as ``callback(iteration, U, rel_error)`` after every
        iteration, ``U`` in the caller's namespace and dtype (a copy) and
        ``rel_error = sqrt(loss / sum_n ||M_n||_F^2)``; returning ``True``
        stops the run (``converged`` is then ``False``).
    verbose : bool
        Show a progress bar (tqdm) with the current relative error.
    check_finite : bool
        Reject NaN/Inf in ``matrices`` with a ``ValueError``. With ``False``
        the check is skipped; non-finite matrices then raise
        ``FloatingPointError`` at the starting point.

    Returns
    -------
    JointTriangularizationResult
        ``(U, T, loss, rel_error, n_iter, converged, history)``, ``U`` and
        ``T`` in the caller's namespace and dtype (computed in float64 on the
        host); ``history`` holds the relative error, the elapsed time and
        the loss (``history.objective``) at the start and after every
        iteration.

    Raises
    ------
    ValueError
        A stack that is not (N, d, d) with square matrices, N = 0, NaN/Inf
        (with ``check_finite=True``), bad ``method``/``init``/``max_iter``/
        ``tol``, a non-orthogonal ``init``.
    TypeError
        Not an array, complex dtype, a ``callback`` that is not callable.
    FloatingPointError
        If the loss of an iterate (or of the starting point) is not finite.

    Warns
    -----
    SingularGramWarning
        When a Gauss-Newton system is singular to working precision
        (repeated joint eigenvalues, or complex eigenvalue pairs of a single
        matrix); that step is solved with a pseudo-inverse.

    References
    ----------
    Colombo & Vlassis, "Tensor decomposition via joint matrix Schur
    decomposition", ICML 2016.
    Haardt & Nossek, "Simultaneous Schur decomposition of several nonsymmetric
    matrices to achieve automatic pairing in multidimensional harmonic
    retrieval problems", IEEE Trans. Signal Processing, 1998.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> V = rng.standard_normal((4, 4))
    >>> M = np.stack([V @ np.diag(rng.standard_normal(4)) @ np.linalg.inv(V) for _ in range(3)])
    >>> res = joint_triangularize(M, rng=0)
    >>> bool(res.converged), res.loss < 1e-24 * float(np.sum(M**2))
    (True, True)
    """
    xp, X, M = check_stack(matrices, finite=check_finite)
    if method not in ("gauss_newton", "jacobi"):
        raise ValueError(f"method must be 'gauss_newton' or 'jacobi', got {method!r}")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_nonneg_float(tol, "tol")
    gen = B.check_rng(rng)
    callback = check_callback(callback)
    dt = X.dtype

    def export(U: np.ndarray) -> Any:
        return B.from_numpy(xp, np.array(U), like=X, dtype=dt)

    solve = gauss_newton if method == "gauss_newton" else jacobi
    with IterationMonitor("joint_triangularize", max_iter=max_iter, tol=None,
                          callback=callback, verbose=verbose, logger=logger,
                          hint=_HINT) as monitor, np.errstate(over="ignore", invalid="ignore"):
        # a non-finite loss raises FloatingPointError in the monitor (and a
        # non-finite trial point fails the line search): NumPy's warnings
        # about the same values would only repeat it
        U0 = initial_triangularizer(M, init, gen)
        U, T, loss = solve(M, U0, monitor, tol=tol,
                           export=export if callback is not None else None)
        U, T, changed = _reorthonormalize(U, T, M)
        scale = float(np.sum(M**2))
        if changed:
            loss = triangularization_loss(T)
            monitor.replace_last(relative_error(loss, scale), objective=loss)
    return JointTriangularizationResult(
        U=B.from_numpy(xp, U, like=X, dtype=dt),
        T=B.from_numpy(xp, T, like=X, dtype=dt),
        loss=float(loss),
        rel_error=relative_error(loss, scale),
        n_iter=monitor.n_iter,
        converged=monitor.converged,
        history=monitor.history,
    )


def initial_triangularizer(M: np.ndarray, init: Any, gen: np.random.Generator) -> np.ndarray:
    """Starting point: Schur vectors of a random combination, or the given ``init``."""
    N, d, _ = M.shape
    if isinstance(init, str):
        if init != "schur":
            raise ValueError(f"init must be 'schur' or a (d, d) orthogonal array, got {init!r}")
        theta = gen.standard_normal(N)
        theta /= np.linalg.norm(theta)
        C = np.tensordot(theta, M, axes=1)
        if not np.all(np.isfinite(C)):
            # non-finite matrices (check_finite=False) have no Schur form; the
            # monitor raises FloatingPointError on the loss at this start
            return np.eye(d)
        _, Z = B.schur(B.namespace(M), C)
        return np.asarray(Z, dtype=np.float64)
    return check_orthogonal(init, d, name="init")


def _reorthonormalize(U: np.ndarray, T: np.ndarray,
                      M: np.ndarray) -> tuple[np.ndarray, np.ndarray, bool]:
    """Remove accumulated drift from orthogonality (rarely needed).

    Only when ``||U^T U - I||_F > 1e-13``; returns ``(U, T, changed)``.
    """
    d = U.shape[0]
    if np.linalg.norm(U.T @ U - np.eye(d)) <= 1e-13:
        return U, T, False
    Q, Rr = np.linalg.qr(U)
    U = Q * np.where(np.diag(Rr) < 0, -1.0, 1.0)[None, :]
    return U, congruence(U, M), True
