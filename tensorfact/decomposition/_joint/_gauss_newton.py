"""Gauss-Newton (and, at a large residual, Newton) steps on the orthogonal group.

``U <- U expm(A)`` with ``A`` skew-symmetric; each step solves the linearised
least-squares problem for the strictly lower residuals at ``A = 0`` (directly,
or matrix-free by preconditioned CG, ``_matrix_free``) and backtracks along
``expm(t A)`` until an Armijo decrease. Every trial point is orthonormalised
before its loss is evaluated, so the loss recorded is that of an orthogonal
matrix and never increases. The derivation is in ``docs/joint.md``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from ... import _backend as B
from .._monitor import IterationMonitor
from ._matrix_free import CGStepper
from ._objective import (
    DENSE_MAX_D,
    congruence,
    dense_forms,
    gradient,
    gram_and_gradient,
    orthonormalize,
    relative_error,
    skew,
    start_point,
    triangularization_loss,
)

__all__ = ["gauss_newton", "newton_step"]

#: Gauss-Newton counts as converging slowly (linearly, at a nonzero residual)
#: when a step is longer than this fraction of the previous one; the next
#: steps then include the second-order term.
_SLOW_RATIO = 0.25


def _second_order_step(H: np.ndarray, g: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Newton step ``-H^{-1} g`` and its model decrease, if ``H`` is positive definite.

    Where ``H`` is indefinite (a saddle region, e.g. one matrix whose noise
    created complex eigenvalue pairs) ``None``: the caller takes the
    Gauss-Newton step. Following negative curvature there was tried and
    dropped: it found lower loss for ``N = 1`` but took long excursions on
    noisy joint problems without improving the triangularizer.
    """
    try:
        C = np.linalg.cholesky(H)
    except np.linalg.LinAlgError:
        return None
    a = -np.linalg.solve(C.T, np.linalg.solve(C, g))
    if not np.all(np.isfinite(a)):
        return None
    pred = float(a @ (H @ a))
    return (a, pred) if pred > 0 else None


def newton_step(T: np.ndarray, second_order: bool) -> tuple[np.ndarray, float]:
    """Step ``a`` (skew coordinates) and the loss decrease its model predicts.

    Gauss-Newton solves ``G a = -J^T r`` (``tensorfact._backend.spd_solve``:
    Cholesky, or a pseudo-inverse with a ``SingularGramWarning`` when ``G``
    is singular, e.g. for repeated joint eigenvalues). With ``second_order``
    the exact curvature ``S`` of the residual is added (``(G + S) a = -J^T r``,
    a full Newton step) when ``G + S`` is positive definite: at a nonzero
    residual, where plain Gauss-Newton converges only linearly, this restores
    quadratic convergence (the structured-Newton remedy of Dennis, Gay and
    Welsch's NL2SOL). ``S`` needs the dense forms (``d <= DENSE_MAX_D``).
    """
    if second_order and T.shape[-1] <= DENSE_MAX_D:
        g = gradient(T)
        G, S = dense_forms(T, True)
        step = _second_order_step(G + S, g)
        if step is not None:
            return step
    else:
        G, g = gram_and_gradient(T)
    a = -B.spd_solve(np, G, g[:, None], what="joint_triangularize Gauss-Newton matrix")[:, 0]
    return a, float(a @ (G @ a))  # decrease predicted by the linear model


def gauss_newton(M: np.ndarray, U: np.ndarray, monitor: IterationMonitor, *, tol: float,
                 export: Callable[[np.ndarray], Any] | None = None,
                 second_order: bool = True,
                 matrix_free: bool = False) -> tuple[np.ndarray, np.ndarray, float]:
    """Run the iteration from ``U`` (orthonormalised first); return ``(U, T, loss)``.

    ``monitor`` receives the starting point and every accepted step (its
    ``n_iter``, ``converged`` and ``history`` describe the run); ``export``
    turns a host ``U`` into the callback's argument. ``second_order=False``
    keeps plain Gauss-Newton steps throughout. ``matrix_free=True`` solves
    each step by preconditioned CG (``_matrix_free.CGStepper``) instead of
    forming and factoring the Gauss-Newton matrix.
    """
    d = M.shape[-1]
    step_fn: Callable[[np.ndarray, bool], tuple[np.ndarray, float]]
    step_fn = CGStepper() if matrix_free else newton_step
    U = orthonormalize(U)
    eps = np.finfo(np.float64).eps
    T, L, scale, floor, done = start_point(M, U, tol, monitor)
    if done:
        return U, T, L
    prev_norm = math.inf
    slow = False
    for _ in monitor.iterations():
        a, pred = step_fn(T, second_order and slow)
        a_norm = float(np.linalg.norm(a))
        slow = slow or a_norm > _SLOW_RATIO * prev_norm
        prev_norm = a_norm
        if not np.isfinite(pred) or pred <= tol * L:
            monitor.mark_converged()
            break
        A = skew(a, d)
        step = 1.0
        accepted = False
        for _ in range(40):
            Un = orthonormalize(U @ B.expm(np, step * A, skew=True))
            Tn = congruence(Un, M)
            Ln = triangularization_loss(Tn)
            if Ln < L and Ln <= L - 1e-4 * step * pred:
                accepted = True
                break
            step /= 2
        if not accepted:
            # no representable decrease: a stationary point up to rounding errors
            if pred <= math.sqrt(eps) * L or L <= (1e4 * eps) ** 2 * scale:
                monitor.mark_converged()
            break
        decrease = L - Ln
        U, T, L = Un, Tn, Ln
        model = None if export is None else functools.partial(export, U)
        if monitor.record(relative_error(L, scale), model, objective=L,
                          converged=L <= floor or decrease <= tol * (L + decrease)):
            break
    return U, T, L
