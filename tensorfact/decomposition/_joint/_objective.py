"""The triangularization loss, its residual Jacobian, gradient and Gram forms.

Everything here works on host float64 NumPy arrays ``T`` of shape
``(N, d, d)`` (the rotated matrices ``U^T M_n U``). The skew-symmetric
directions ``A`` are written in the orthonormal basis
``B_l = (e_p e_q^T - e_q e_p^T) / sqrt(2)``, ``(p, q)`` the strictly lower
positions in row-major order (``m = d(d-1)/2`` coordinates).
"""

from __future__ import annotations

import functools
import math
from typing import Any

import numpy as np
import scipy.sparse as sps

__all__ = [
    "DENSE_MAX_D",
    "congruence",
    "dense_forms",
    "gradient",
    "gram",
    "gram_and_gradient",
    "jacobian",
    "lower_vec",
    "orthonormalize",
    "relative_error",
    "skew",
    "triangularization_loss",
    "use_dense",
]

_SQRT2 = math.sqrt(2.0)

#: Largest d for which the d^2 x d^2 coefficient tensors of the Gauss-Newton
#: and second-order forms are built densely (d^4 doubles: 78 MB at d = 56).
#: Above it the Gram matrix comes from the sparse Jacobian and the step is
#: plain Gauss-Newton.
DENSE_MAX_D = 56


def congruence(U: np.ndarray, M: np.ndarray) -> np.ndarray:
    """``U^T M_n U`` for every matrix of the stack ``M``."""
    return np.einsum("ji,njk,kl->nil", U, M, U, optimize=True)


def orthonormalize(U: np.ndarray) -> np.ndarray:
    """Q factor of ``U`` whose R factor has a nonnegative diagonal.

    ``U`` itself to rounding when ``U`` is orthogonal: removes the drift from
    orthogonality that products of rotations accumulate.
    """
    Q, R = np.linalg.qr(U)
    return Q * np.where(np.diag(R) < 0, -1.0, 1.0)[None, :]


def relative_error(loss_value: float, scale: float) -> float:
    """``sqrt(loss / scale)`` with ``scale = sum_n ||M_n||_F^2``.

    0 for all-zero matrices; NaN when ``scale`` is not finite (NaN/Inf in the
    matrices, or entries too large to square in float64), so that the
    iteration monitor raises ``FloatingPointError``.
    """
    if not math.isfinite(scale):
        return math.nan
    if scale == 0.0:
        return 0.0 if loss_value == 0.0 else math.nan
    return math.sqrt(loss_value / scale)


@functools.lru_cache(maxsize=64)
def _lower_pattern(d: int) -> tuple[np.ndarray, ...]:
    """Index arrays of the strictly lower triangle and the Jacobian sparsity pattern.

    Returns ``(il, jl, row, col, sign, ti, tj)``: the ``m = d(d-1)/2`` strictly
    lower positions ``(il[k], jl[k])`` (row-major), and for the Jacobian
    ``J[k, l] = d strictly_lower([T, B_l])_k`` with the orthonormal skew basis
    ``B_l = (e_p e_q^T - e_q e_p^T) / sqrt(2)``, ``(p, q) = (il[l], jl[l])``,
    the nonzeros ``J[row, col] += sign * T[ti, tj] / sqrt(2)``.
    """
    il, jl = np.tril_indices(d, -1)
    m = il.size
    lidx = -np.ones((d, d), dtype=np.int64)
    lidx[il, jl] = np.arange(m)
    rows, cols, signs, tis, tjs = [], [], [], [], []
    ar = np.arange(d)

    def term(k: int, idx: np.ndarray, col: np.ndarray, sign: float, ti: Any, tj: Any) -> None:
        # entries J[k, col] += sign * T[ti, tj] over the free index ``idx``
        rows.append(np.full(idx.size, k))
        cols.append(col)
        signs.append(np.full(idx.size, sign))
        tis.append(np.broadcast_to(ti, idx.shape))
        tjs.append(np.broadcast_to(tj, idx.shape))

    for k in range(m):
        i, j = int(il[k]), int(jl[k])
        # [T, B]_{ij} * sqrt(2) = T_ip d_jq - T_iq d_jp - d_ip T_qj + d_iq T_pj
        p = ar[ar > j]  # term 1: q = j, column (p, j), + T[i, p]
        term(k, p, lidx[p, j], 1.0, i, p)
        q = ar[ar < j]  # term 2: p = j, column (j, q), - T[i, q]
        term(k, q, lidx[j, q], -1.0, i, q)
        q = ar[ar < i]  # term 3: p = i, column (i, q), - T[q, j]
        term(k, q, lidx[i, q], -1.0, q, j)
        p = ar[ar > i]  # term 4: q = i, column (p, i), + T[p, j]
        term(k, p, lidx[p, i], 1.0, p, j)
    cat = np.concatenate
    if m == 0:
        e = np.zeros(0, dtype=np.int64)
        return il, jl, e, e, np.zeros(0), e, e
    return il, jl, cat(rows), cat(cols), cat(signs) / _SQRT2, cat(tis), cat(tjs)


def lower_vec(T: np.ndarray) -> np.ndarray:
    """Stack of strictly lower entries, (N*m,) (row k of matrix n at n*m + k)."""
    il, jl = np.tril_indices(T.shape[-1], -1)
    return T[:, il, jl].reshape(-1)


def triangularization_loss(T: np.ndarray) -> float:
    """``sum_n ||strictly_lower(T_n)||_F^2``."""
    return float(np.sum(np.tril(T, -1) ** 2))


def jacobian(T: np.ndarray) -> sps.csr_matrix:
    """Sparse Jacobian (N*m, m) of ``a -> (strictly_lower([T_n, A(a)]))_n``."""
    N, d, _ = T.shape
    il, jl, row, col, sign, ti, tj = _lower_pattern(d)
    m = il.size
    vals = sign[None, :] * T[:, ti, tj]
    rows = (np.arange(N)[:, None] * m + row[None, :]).ravel()
    cols = np.broadcast_to(col, (N, col.size)).ravel()
    return sps.csr_matrix((vals.ravel(), (rows, cols)), shape=(N * m, m))


def skew(a: np.ndarray, d: int) -> np.ndarray:
    """Skew-symmetric matrix with coordinates ``a`` in the orthonormal basis."""
    il, jl = np.tril_indices(d, -1)
    A = np.zeros((d, d))
    A[il, jl] = a / _SQRT2
    return A - A.T


@functools.lru_cache(maxsize=64)
def _skew_index(d: int) -> tuple[np.ndarray, np.ndarray]:
    """Flat positions ``p*d + q`` and ``q*d + p`` of the skew basis ``B_l``."""
    il, jl = np.tril_indices(d, -1)
    return il * d + jl, jl * d + il


def _project_skew(M4: np.ndarray, d: int) -> np.ndarray:
    """Restrict a bilinear form on ``vec(A)`` (``(d*d, d*d)``) to the skew basis."""
    x, y = _skew_index(d)
    Mf = M4.reshape(d * d, d * d)
    H = 0.5 * (Mf[np.ix_(x, x)] - Mf[np.ix_(x, y)] - Mf[np.ix_(y, x)] + Mf[np.ix_(y, y)])
    return (H + H.T) / 2


def gradient(T: np.ndarray) -> np.ndarray:
    """``J^T r`` in the skew basis.

    ``sum_n <R_n, [T_n, A]> = <Y, A>`` with ``Y = sum_n T_n^T R_n - R_n T_n^T``
    and ``R_n = strictly_lower(T_n)``.
    """
    d = T.shape[-1]
    R = np.tril(T, -1)
    Y = np.einsum("nki,nkj->ij", T, R) - np.einsum("nik,njk->ij", R, T)
    il, jl = np.tril_indices(d, -1)
    return (Y[il, jl] - Y[jl, il]) / _SQRT2


def dense_forms(T: np.ndarray, second_order: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Gauss-Newton Gram ``G = J^T J`` and the second-order term ``S``, dense.

    In the skew basis, ``a^T G a = sum_n ||strictly_lower([T_n, A])||_F^2`` and
    ``a^T S a = sum_n <R_n, T_n A^2 - 2 A T_n A + A^2 T_n>`` (the curvature
    of the residual, ``e^{-A} T e^{A} = T + [T, A] + [[T, A], A] / 2 + ...``),
    so the exact Hessian of the loss at ``A = 0`` is ``2 (G + S)``.

    Both are assembled as bilinear forms on ``vec(A)`` (``A[a, b]`` at flat
    index ``a*d + b``, ``M4[a, b, c, e]`` the coefficient of
    ``A[a, b] A[c, e]``) from ``N x d^2`` GEMMs and prefix sums, then
    restricted to skew ``A``: ``O(N d^4)`` flops, no sparse products.
    """
    N, d, _ = T.shape
    eye = np.eye(d)
    low = np.tri(d, d, -1)  # low[i, j] = 1 for i > j
    Tf = T.reshape(N, d * d)
    # ||low([T, A])||^2 with [T, A]_ij = sum_k T_ik A_kj - A_ik T_kj:
    # (1) T A part: A[k, j] A[k', j] sum_{i > j} T_ik T_ik'
    rows = np.einsum("nik,nil->ikl", T, T)  # sum_n outer(T[i, :], T[i, :])
    W1 = np.cumsum(rows[::-1], axis=0)[::-1]  # W1[j] = sum_{i >= j} rows[i]
    W1 = np.concatenate([W1[1:], np.zeros((1, d, d))])  # sum_{i > j}
    M4 = np.einsum("jkl,jm->kjlm", W1, eye)
    # (2) A T part: A[i, k] A[i, k'] sum_{j < i} T_kj T_k'j
    cols = np.einsum("nkj,nlj->jkl", T, T)
    W3 = np.cumsum(cols, axis=0)
    W3 = np.concatenate([np.zeros((1, d, d)), W3[:-1]])  # sum_{j < i}
    M4 += np.einsum("ikl,im->ikml", W3, eye)
    # (3) cross: -2 sum_{i > j} T_ik A_kj A_ik' T_k'j
    O = (Tf.T @ Tf).reshape(d, d, d, d)  # O[i, k, l, j] = sum_n T[i, k] T[l, j]
    O *= -2.0 * low[:, None, None, :]
    M4 += O.transpose(1, 3, 0, 2)  # -> [k, j, i, l]
    G = _project_skew(M4, d)
    if not second_order:
        return G, None
    R = np.tril(T, -1)
    Rf = R.reshape(N, d * d)
    # tr(R^T T A A) + tr(R^T A A T) = sum P[c, a] A[a, b] A[b, c]
    P = np.einsum("nba,nbc->ca", R, T) + np.einsum("nab,ncb->ca", T, R)
    S4 = np.einsum("ca,bm->abmc", P, eye)
    # -2 tr(R^T A T A) = -2 sum R[a, b] A[a, c] T[c, e] A[e, b]
    O = (Rf.T @ Tf).reshape(d, d, d, d)  # [a, b, c, e]
    S4 += -2.0 * O.transpose(0, 2, 3, 1)  # -> [a, c, e, b]
    return G, _project_skew(S4, d)


def gram(J: sps.csr_matrix) -> np.ndarray:
    """``J^T J`` as a dense symmetric array."""
    G = (J.T @ J).toarray()
    return (G + G.T) / 2


def use_dense(N: int, d: int) -> bool:
    """Dense ``O(N d^4)``-GEMM forms or the sparse Jacobian for the Gram matrix.

    Measured (one thread): dense is 2-5x faster for ``N >= 6`` or ``d <= 24``;
    for few large matrices the ``d^4`` terms that do not shrink with ``N``
    dominate and SciPy's sparse product wins. ``d > DENSE_MAX_D``: sparse.
    """
    return d <= DENSE_MAX_D and (N >= 6 or d <= 24)


def gram_and_gradient(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Newton Gram matrix ``J^T J`` and gradient ``J^T r``, dense or sparse."""
    N, d, _ = T.shape
    if use_dense(N, d):
        return dense_forms(T, False)[0], gradient(T)
    J = jacobian(T)
    return gram(J), J.T @ lower_vec(T)



def start_point(M: np.ndarray, U: np.ndarray, tol: float, monitor: Any
                ) -> tuple[np.ndarray, float, float, float, bool]:
    """Record the loss of the starting ``U``: ``(T, L, scale, floor, done)``.

    ``scale = sum_n ||M_n||^2``, ``floor = tol^2 scale``; ``done`` (and the
    monitor marked converged) when ``d = 1`` or the start is already below
    the floor.
    """
    scale = float(np.sum(M**2))
    floor = tol**2 * scale
    T = congruence(U, M)
    L = triangularization_loss(T)
    monitor.start(relative_error(L, scale), objective=L)
    done = M.shape[1] == 1 or L <= floor
    if done:
        monitor.mark_converged()
    return T, L, scale, floor, done
