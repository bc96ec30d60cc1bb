"""``joint_triangularize``: the solver's entry point, start and final clean-up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import numpy as np

from ... import _backend as B
from ..._validation import check_nonneg_float, check_positive_int
from .._monitor import ConvergenceHistory, IterationMonitor, check_callback
from ._checks import check_orthogonal, check_stack, power_of_two_exponent
from ._gauss_newton import gauss_newton
from ._jacobi import jacobi
from ._objective import relative_error
from ._results import JointTriangularizationResult

__all__ = ["MATRIX_FREE_MIN_D", "METHODS", "initial_triangularizer", "joint_triangularize",
           "resolve_method"]

logger = logging.getLogger("tensorfact.joint")

_HINT = "the matrices may hold NaN/Inf (check_finite=False)"

METHODS = ("auto", "gauss_newton", "gauss_newton_cg", "jacobi")

#: ``method="auto"`` uses ``"gauss_newton_cg"`` from this matrix size on and
#: ``"gauss_newton"`` below it (measured crossover, ``docs/joint.md``).
MATRIX_FREE_MIN_D = 20


def resolve_method(method: str, d: int) -> str:
    """The method ``method="auto"`` stands for at size ``d`` (others unchanged)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if method == "auto":
        return "gauss_newton_cg" if d >= MATRIX_FREE_MIN_D else "gauss_newton"
    return method


def joint_triangularize(
    matrices: Any,
    /,
    *,
    init: Any = "schur",
    method: str = "auto",
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
    Armijo decrease, so the loss never increases. Each step forms and
    factors the ``m x m`` Gauss-Newton matrix (``m = d(d-1)/2``, cost
    ``O(d^6)``): the method for small ``d``. Quadratic convergence for
    exactly triangularizable families, fast linear convergence with noise;
    when the steps shrink slowly (a large residual at the minimum) the exact
    second-order term of the residual is added (a Newton step, where the
    Hessian is positive definite). For a single matrix (``N = 1``) the Schur
    start is exact unless noise created complex eigenvalue pairs; then no
    real triangularizer exists, the Gauss-Newton matrix is singular (see
    Warns) and the iteration lowers the loss without bringing ``U`` closer
    to the noise-free triangularizer.

    ``method="gauss_newton_cg"`` takes the same Gauss-Newton steps without
    forming the Gauss-Newton matrix: ``J a`` and ``J^T r`` are products with
    the stack (``O(N d^3)`` each), and the step solves ``J^T J a = -J^T r``
    by preconditioned conjugate gradients to a relative residual of 0.1
    (at most 500 iterations), with the same Armijo backtracking. The
    preconditioner is built from the joint eigenvectors of the current
    triangular forms (or is the diagonal of ``J^T J`` where those do not
    help). Memory ``O(N d^2)``; for ``d = 150``, ``N = 3`` a run takes
    seconds where the direct method does not finish.

    ``method="jacobi"`` sweeps over the pairs ``p < q`` and applies, for each,
    the Givens rotation that minimises the loss exactly (the loss restricted
    to one rotation angle is a trigonometric polynomial of degree 4; its
    global minimum is found on a grid and polished by Newton steps).

    ``method="auto"`` (default) is ``"gauss_newton"`` for ``d < 20`` and
    ``"gauss_newton_cg"`` from ``d = 20`` on (the measured crossover, see the
    documentation page "Joint triangularization").

    Every iterate is orthonormalised (QR) before its loss is evaluated, so
    ``history.objective`` holds the loss of exactly the orthogonal matrices
    visited and never increases. The iteration runs on the matrices divided
    by a power of two that brings their largest entry into ``[1/2, 1)``:
    ``U`` does not depend on their units (``2^-1000 M`` and ``2^1000 M``
    give the same ``U``).

    Parameters
    ----------
    matrices : array of shape (N, d, d), or a sequence of (d, d) arrays
        Real matrices; any array API namespace (copied to the host once, see
        the notes of ``tensorfact.decomposition._joint``).
    init : "schur" or (d, d) orthogonal array
        ``"schur"``: real Schur vectors of ``sum_n theta_n M_n`` with
        ``theta`` drawn from ``rng`` (unit norm). An array is used as the
        starting point.
    method : {"auto", "gauss_newton", "gauss_newton_cg", "jacobi"}
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
        iteration. ``loss`` and ``history.objective`` are in the units of
        the matrices squared: ``inf`` (or 0) where that leaves the float64
        range (entries beyond about ``1e154``), ``rel_error`` is exact.

    Raises
    ------
    ValueError
        A stack that is not (N, d, d) with square matrices, N = 0, NaN/Inf
        (with ``check_finite=True``), bad ``method``/``init``/``max_iter``/
        ``tol``, a non-orthogonal ``init``.
    TypeError
        Not an array, complex dtype, a ``callback`` that is not callable.
    FloatingPointError
        If the loss of an iterate (or of the starting point) is not finite
        (NaN/Inf let through with ``check_finite=False``).

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
    method = resolve_method(method, M.shape[-1])
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_nonneg_float(tol, "tol")
    gen = B.check_rng(rng)
    callback = check_callback(callback)
    dt = X.dtype

    def export(U: np.ndarray) -> Any:
        return B.from_numpy(xp, np.array(U), like=X, dtype=dt)

    # the iteration runs on M / 2^e with max |entry| in [1/2, 1): exact, so U
    # and every relative quantity do not depend on the matrices' units, and
    # no square overflows or underflows
    e = power_of_two_exponent(M)
    Ms = np.ldexp(M, -e)
    export_fn = export if callback is not None else None
    with IterationMonitor("joint_triangularize", max_iter=max_iter, tol=None,
                          callback=callback, verbose=verbose, logger=logger,
                          hint=_HINT) as monitor, np.errstate(over="ignore", invalid="ignore"):
        # a non-finite loss raises FloatingPointError in the monitor (and a
        # non-finite trial point fails the line search): NumPy's warnings
        # about the same values would only repeat it
        U0 = initial_triangularizer(Ms, init, gen)
        if method == "jacobi":
            U, T, loss = jacobi(Ms, U0, monitor, tol=tol, export=export_fn)
        else:
            U, T, loss = gauss_newton(Ms, U0, monitor, tol=tol, export=export_fn,
                                      matrix_free=method == "gauss_newton_cg")
        scale = float(np.sum(Ms**2))
        rel = relative_error(loss, scale)
    hist = monitor.history
    with np.errstate(over="ignore", under="ignore"):
        # back to the caller's units: the loss scales with 4^e (inf or 0 when
        # that leaves the float64 range; rel_error is unaffected)
        objective = tuple(float(v) for v in np.ldexp(np.asarray(hist.objective or ()), 2 * e))
        loss_out = float(np.ldexp(loss, 2 * e))
        T_out = np.ldexp(T, e)
    return JointTriangularizationResult(
        U=B.from_numpy(xp, U, like=X, dtype=dt),
        T=B.from_numpy(xp, T_out, like=X, dtype=dt),
        loss=loss_out,
        rel_error=rel,
        n_iter=monitor.n_iter,
        converged=monitor.converged,
        history=ConvergenceHistory(hist.rel_error, hist.time, objective),
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

