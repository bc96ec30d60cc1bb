"""Jacobi sweeps: exact Givens rotations over all planes ``(p, q)``.

After each sweep ``U`` is orthonormalised and ``T = U^T M U`` recomputed, so
the loss recorded is that of the orthogonal ``U`` returned.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .._monitor import IterationMonitor
from ._objective import (
    congruence,
    orthonormalize,
    relative_error,
    start_point,
    triangularization_loss,
)

__all__ = ["jacobi"]


def jacobi(M: np.ndarray, U: np.ndarray, monitor: IterationMonitor, *, tol: float,
           export: Callable[[np.ndarray], Any] | None = None,
           ) -> tuple[np.ndarray, np.ndarray, float]:
    """Run Jacobi sweeps from ``U`` (not modified, orthonormalised first); return ``(U, T, loss)``.

    ``monitor`` receives the starting point and every sweep that decreased
    the loss; ``export`` turns a host ``U`` into the callback's argument.
    """
    d = M.shape[-1]
    U = orthonormalize(U)
    T, L, scale, floor, done = start_point(M, U, tol, monitor)
    if done:
        return U, T, L
    grid = np.linspace(-np.pi, np.pi, 73)[:-1]
    cg, sg = np.cos(grid), np.sin(grid)
    for _ in monitor.iterations():
        T_prev, U_prev = T.copy(), U.copy()
        for p in range(d - 1):
            for q in range(p + 1, d):
                _jacobi_pair(T, U, p, q, cg, sg)
        U = orthonormalize(U)
        T = congruence(U, M)
        Ln = triangularization_loss(T)
        if not Ln < L:
            # every rotation decreased its part of the loss; a sweep that does
            # not decrease the total is rounding noise: undo it and stop
            T, U = T_prev, U_prev
            monitor.mark_converged()
            break
        converged = Ln <= floor or L - Ln <= tol * L
        L = Ln
        model = None if export is None else functools.partial(export, U)
        if monitor.record(relative_error(L, scale), model, objective=L, converged=converged):
            break
    return U, T, L


def _jacobi_pair(T: np.ndarray, U: np.ndarray, p: int, q: int, cg: np.ndarray,
                 sg: np.ndarray) -> None:
    """Apply (in place) the Givens rotation in plane (p, q) minimising the loss.

    With ``G[:, p] = c e_p - s e_q``, ``G[:, q] = s e_p + c e_q`` and
    ``phi = 2 theta``, the loss entries that depend on the angle are
    ``(q, j)`` and ``(i, p)`` for ``p < i, j < q`` plus the block entry
    ``(q, p)``; the others move in rotated pairs whose sum of squares is
    unchanged. Their sum is
    ``k0 + k1 cos + k2 sin + (alpha + beta cos + gamma sin)^2`` in ``phi``.
    """
    mid = slice(p + 1, q)
    # (q, j) -> s T[p, j] + c T[q, j];  (i, p) -> c T[i, p] - s T[i, q]
    x1, y1 = T[:, q, mid], T[:, p, mid]  # entry = c*x1 + s*y1
    x2, y2 = T[:, mid, p], -T[:, mid, q]  # entry = c*x2 + s*y2
    h00 = float(np.sum(x1 * x1) + np.sum(x2 * x2))
    h11 = float(np.sum(y1 * y1) + np.sum(y2 * y2))
    h01 = float(np.sum(x1 * y1) + np.sum(x2 * y2))
    k1 = (h00 - h11) / 2
    k2 = h01
    b00, b01, b10, b11 = T[:, p, p], T[:, p, q], T[:, q, p], T[:, q, q]
    al = (b10 - b01) / 2
    be = (b10 + b01) / 2
    ga = (b00 - b11) / 2
    sbb, sgg = float(be @ be), float(ga @ ga)
    sab, sag, sbg = float(al @ be), float(al @ ga), float(be @ ga)

    def f(c: Any, s: Any) -> Any:
        return (k1 * c + k2 * s + 2 * sab * c + 2 * sag * s + sbb * c * c + sgg * s * s
                + 2 * sbg * c * s)

    vals = f(cg, sg)
    k = int(np.argmin(vals))
    # the expanded form above locates the global basin; it cancels badly near
    # convergence, so the minimiser is polished and checked with the entries
    # themselves (functions of theta = phi / 2)
    pT, qT = T[:, p, mid], T[:, q, mid]  # e1 = s pT + c qT
    Tp_, Tq_ = T[:, mid, p], T[:, mid, q]  # e2 = c Tp_ - s Tq_
    dbd = b00 - b11

    def direct(th: float) -> tuple[float, float, float]:
        c, s = math.cos(th), math.sin(th)
        e1 = s * pT + c * qT
        e2 = c * Tp_ - s * Tq_
        e3 = c * c * b10 - s * s * b01 + c * s * dbd
        d1 = c * pT - s * qT
        d2 = -s * Tp_ - c * Tq_
        d3 = -2 * c * s * (b10 + b01) + (c * c - s * s) * dbd
        dd3 = -2 * (c * c - s * s) * (b10 + b01) - 4 * c * s * dbd
        fv = float(np.sum(e1 * e1) + np.sum(e2 * e2) + e3 @ e3)
        g = 2 * float(np.sum(e1 * d1) + np.sum(e2 * d2) + e3 @ d3)
        h = 2 * float(np.sum(d1 * d1 - e1 * e1) + np.sum(d2 * d2 - e2 * e2)
                      + d3 @ d3 + e3 @ dd3)
        return fv, g, h

    f0, g0, h0 = direct(0.0)
    phi_k = float(np.arctan2(sg[k], cg[k]))
    th = phi_k / 2 if abs(phi_k) > 0.2 and vals[k] < f(1.0, 0.0) else 0.0
    fth, g, h = (f0, g0, h0) if th == 0.0 else direct(th)
    for _ in range(8):  # Newton polish
        if h <= 0:
            break
        step = g / h
        tn = th - step
        fn, gn, hn = direct(tn)
        if fn > fth:
            break
        th, fth, g, h = tn, fn, gn, hn
        if abs(step) < 1e-16:
            break
    if not fth < f0:
        return
    theta = th
    c, s = math.cos(theta), math.sin(theta)
    # T <- G^T T G, U <- U G
    Tp, Tq = T[:, p, :].copy(), T[:, q, :].copy()
    T[:, p, :] = c * Tp - s * Tq
    T[:, q, :] = s * Tp + c * Tq
    Tp, Tq = T[:, :, p].copy(), T[:, :, q].copy()
    T[:, :, p] = c * Tp - s * Tq
    T[:, :, q] = s * Tp + c * Tq
    Up, Uq = U[:, p].copy(), U[:, q].copy()
    U[:, p] = c * Up - s * Uq
    U[:, q] = s * Up + c * Uq


# --------------------------------------------------------------------------- #
