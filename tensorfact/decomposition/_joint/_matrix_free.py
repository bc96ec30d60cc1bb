"""Matrix-free Gauss-Newton: products with the Jacobian, preconditioned CG, small singular values.

For large ``d`` the ``m x m`` Gauss-Newton matrix ``G = J^T J``
(``m = d(d-1)/2``) is neither formed nor factored: ``J a`` and ``J^T r`` are
products with the stack (four ``d x N d x d`` GEMMs per ``G a``, ``O(N d^3)``),
and the step solves ``G a = -J^T r`` by preconditioned conjugate gradients.

Preconditioners (``docs/joint.md`` derives both):

* ``"eigenvector"``: with the joint eigenvectors ``R`` of the nearly
  triangular ``T_n`` (upper triangular, unit diagonal, by least-squares back
  substitution) the strictly lower part of ``[T_n, A]`` is
  ``Phi(D_n Phi^{-1}(A))``, ``Phi(Y) = low(R Y R^{-1})``, ``D_n`` the
  differences of the diagonals of ``T_n``. The preconditioner is
  ``Phi diag(1 / (sum_n D_n^2 w)) Phi^T`` with ``w`` the diagonal of
  ``Phi^T Phi``: exact for the crowding of the joint eigenvalues, it leaves
  only the non-normality of ``R`` to CG.
* ``"jacobi"``: the diagonal of ``G`` (exact, ``O(N d^2)``); robust far from
  a triangularizer, where ``R`` means little.

The CG solver keeps the one that last reached its tolerance and switches when
a solve stops at its iteration cap.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.linalg as sla
import scipy.sparse.linalg as spla

__all__ = [
    "CG_MAXITER",
    "CG_RTOL",
    "CGStepper",
    "JacobianOperator",
    "least_squares_step",
    "pcg",
    "smallest_singular_values",
]

_SQRT2 = math.sqrt(2.0)

#: Relative residual at which a Gauss-Newton step's CG solve stops
#: (``||G a + g|| <= CG_RTOL ||g||``): an inexact Newton forcing term; the
#: outer iteration then converges linearly with a rate of about this size.
CG_RTOL = 0.1

#: Iteration cap of one CG solve of a Gauss-Newton step (at most ``m``).
CG_MAXITER = 500


class JacobianOperator:
    """``J``, ``J^T``, ``J^T J`` and the second-order term at one stack ``T`` (N, d, d).

    Coordinates ``a`` are those of ``_objective`` (orthonormal skew basis,
    strictly lower positions in row-major order).
    """

    def __init__(self, T: np.ndarray) -> None:
        N, d, _ = T.shape
        self.N, self.d = N, d
        self.T = T
        self.il, self.jl = np.tril_indices(d, -1)
        self.m = self.il.size
        self._Tf = T.reshape(N * d, d)  # rows of all T_n: Tf.T @ Xf = sum_n T_n^T X_n
        self._Tt = np.ascontiguousarray(T.transpose(1, 0, 2).reshape(d, N * d))  # [T_1 ... T_N]
        self._low = np.tri(d, d, -1, dtype=bool)

    # -- coordinates <-> matrices ------------------------------------------------
    def skew(self, a: np.ndarray) -> np.ndarray:
        """Skew-symmetric ``A`` with coordinates ``a``."""
        A = np.zeros((self.d, self.d))
        A[self.il, self.jl] = a / _SQRT2
        return A - A.T

    def coords(self, Y: np.ndarray) -> np.ndarray:
        """Coordinates of the skew part of ``Y``: ``<Y, B_l>`` for every basis element."""
        return (Y[self.il, self.jl] - Y[self.jl, self.il]) / _SQRT2

    # -- products ------------------------------------------------------------------
    def commutators(self, A: np.ndarray) -> np.ndarray:
        """``[T_n, A] = T_n A - A T_n`` for every ``n`` (N, d, d)."""
        N, d = self.N, self.d
        TA = (self._Tf @ A).reshape(N, d, d)
        AT = (A @ self._Tt).reshape(d, N, d).transpose(1, 0, 2)
        return TA - AT

    def adjoint(self, R: np.ndarray) -> np.ndarray:
        """``J^T r`` for residual matrices ``R`` (N, d, d; only the strictly lower part counts)."""
        N, d = self.N, self.d
        Rl = np.where(self._low, R, 0.0)
        Y = self._Tf.T @ Rl.reshape(N * d, d)
        Y -= Rl.transpose(1, 0, 2).reshape(d, N * d) @ self._Tt.T
        return self.coords(Y)

    def gram(self, a: np.ndarray) -> np.ndarray:
        """``J^T J a``."""
        return self.adjoint(self.commutators(self.skew(a)))

    def jac_norm_sq(self, a: np.ndarray) -> float:
        """``||J a||^2``."""
        C = self.commutators(self.skew(a))
        return float(np.sum(np.where(self._low, C, 0.0) ** 2))

    def gram_diagonal(self) -> np.ndarray:
        """Diagonal of ``J^T J`` in ``O(N d^2)``.

        Column ``(p, q)`` of ``J`` (``p > q``) holds, up to ``1/sqrt(2)``,
        ``T[i, p]`` at ``(i, q)`` for ``i > q, i != p``, ``T[p, p] - T[q, q]``
        at ``(p, q)``, ``-T[i, q]`` at ``(i, p)`` for ``i > p``, ``-T[q, j]``
        at ``(p, j)`` for ``j < p, j != q`` and ``T[p, j]`` at ``(q, j)``
        for ``j < q``: partial sums of squared columns and rows.
        """
        sq = self.T**2
        below = np.cumsum(sq[:, ::-1, :], axis=1)[:, ::-1, :]  # sum_{i >= i0} T[i, c]^2
        below = np.concatenate([below[:, 1:], np.zeros_like(below[:, :1])], axis=1)  # i > i0
        left = np.cumsum(sq, axis=2)
        left = np.concatenate([np.zeros_like(left[:, :, :1]), left[:, :, :-1]], axis=2)  # j < j0
        p, q = self.il, self.jl
        dg = np.einsum("nii->ni", self.T)
        v = (below[:, q, p] - sq[:, p, p] + (dg[:, p] - dg[:, q]) ** 2 + below[:, p, q]
             + left[:, q, p] - sq[:, q, q] + left[:, p, q])
        return 0.5 * np.sum(v, axis=0)

    # -- preconditioners -------------------------------------------------------------
    def jacobi_preconditioner(self) -> Callable[[np.ndarray], np.ndarray]:
        """``y -> y / diag(G)`` (a zero diagonal entry is treated as the largest one)."""
        D = self.gram_diagonal()
        top = float(np.max(D)) if D.size else 0.0
        D = np.where(D > 1e-300 + 1e-15 * top, D, max(top, 1e-300))
        inv = 1.0 / D
        return lambda y: y * inv

    def eigenvector_preconditioner(self) -> Callable[[np.ndarray], np.ndarray] | None:
        """``Phi diag(1 / (sum_n D_n^2 w)) Phi^T`` (module notes); ``None`` if ``R`` is unusable."""
        T, d = self.T, self.d
        lam = np.einsum("nii->ni", T)
        R = np.eye(d)
        for k in range(d - 2, -1, -1):
            # column i > k: sum_n (T_n[k, k] - lam_n[i]) R[k, i] = -sum_n sum_l T_n[k, l] R[l, i]
            a = T[:, k, k][:, None] - lam[:, k + 1:]
            rhs = -(T[:, k, k + 1:] @ R[k + 1:, k + 1:])
            den = np.sum(a * a, axis=0)
            R[k, k + 1:] = np.sum(a * rhs, axis=0) / np.where(den > 0, den, np.inf)
        if not np.all(np.isfinite(R)) or float(np.max(np.abs(R))) > 1e8:
            return None
        Ri = sla.solve_triangular(R, np.eye(d), check_finite=False)
        il, jl = self.il, self.jl
        delta = np.sum((lam[:, il] - lam[:, jl]) ** 2, axis=0)
        # w[(i, j)] = ||low(R e_i e_j^T R^{-1})||_F^2 = sum_{k > l} R[k, i]^2 Ri[j, l]^2
        C = np.cumsum(R**2, axis=0)  # C[k, i] = sum_{k' <= k} R[k', i]^2
        above = np.diag(C)[None, :] - C  # [l, i] = sum_{l < k <= i} R[k, i]^2
        w = ((Ri**2) @ above)[jl, il]
        s = delta * w
        top = float(np.max(s)) if s.size else 0.0
        if not (math.isfinite(top) and top > 0):
            return None
        inv = 1.0 / np.where(s > 1e-14 * top, s, 1e-14 * top)

        def apply(y: np.ndarray) -> np.ndarray:
            Y = np.zeros((d, d))
            Y[il, jl] = y
            z = (R.T @ Y @ Ri.T)[il, jl] * inv
            Y = np.zeros((d, d))
            Y[il, jl] = z
            return (R @ Y @ Ri)[il, jl]

        return apply

    def preconditioner(self, kind: str) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
        """``(kind actually used, apply)``; ``"eigenvector"`` falls back to ``"jacobi"``."""
        if kind == "eigenvector":
            P = self.eigenvector_preconditioner()
            if P is not None:
                return kind, P
        return "jacobi", self.jacobi_preconditioner()


@dataclass
class CGResult:
    """Outcome of `pcg`."""

    x: np.ndarray
    iterations: int
    converged: bool
    negative_curvature: bool
    residual_norm: float


def pcg(apply: Callable[[np.ndarray], np.ndarray], b: np.ndarray,
        precond: Callable[[np.ndarray], np.ndarray], *, rtol: float,
        maxiter: int, x0: np.ndarray | None = None) -> CGResult:
    """Preconditioned CG for ``H x = b``, stopping at ``||b - H x|| <= rtol ||b||``.

    Starts from ``x0`` (default 0). Stops early (``negative_curvature``) when
    ``p^T H p <= 0`` or the preconditioned residual loses positivity
    (rounding); ``x`` is then the last iterate.
    """
    nb = float(np.linalg.norm(b))
    if x0 is None:
        x = np.zeros_like(b)
        r = b.copy()
    else:
        x = x0.copy()
        r = b - apply(x)
    rn = float(np.linalg.norm(r))
    if nb == 0.0 or not math.isfinite(nb):
        return CGResult(np.zeros_like(b), 0, nb == 0.0, False, nb)
    target = rtol * nb
    if rn <= target:
        return CGResult(x, 0, True, False, rn)
    z = precond(r)
    rz = float(r @ z)
    if not (rz > 0 and math.isfinite(rz)):
        return CGResult(x, 0, False, True, rn)
    p = z.copy()
    for k in range(1, maxiter + 1):
        Hp = apply(p)
        pHp = float(p @ Hp)
        if not (pHp > 0 and math.isfinite(pHp)):
            return CGResult(x, k - 1, False, True, rn)
        alpha = rz / pHp
        x += alpha * p
        r -= alpha * Hp
        rn = float(np.linalg.norm(r))
        if rn <= target:
            return CGResult(x, k, True, False, rn)
        z = precond(r)
        rz_new = float(r @ z)
        if not (rz_new > 0 and math.isfinite(rz_new)):
            return CGResult(x, k, False, True, rn)
        p = z + (rz_new / rz) * p
        rz = rz_new
    return CGResult(x, maxiter, False, False, rn)


@dataclass
class CGStepper:
    """Gauss-Newton steps by preconditioned CG, choosing the preconditioner as it goes.

    The eigenvector preconditioner is tried first. A solve with it that has
    not converged after three times the iterations of the last Jacobi solve
    (or the cap) is continued from its iterate with Jacobi, and Jacobi keeps
    the following steps; the eigenvector preconditioner is tried again after
    2, 4, 8, ... steps (doubling after each failure). Far from a
    triangularizer (where ``R`` means little) this costs a few short trials;
    near one the eigenvector preconditioner takes over again.

    The second-order (Newton) variant of the direct method is not used here:
    with CG on ``G + S`` the negative curvature of ``S`` on noisy problems
    sent nearly every solve back to Gauss-Newton, doubling the cost for the
    same iterates (measured, ``docs/joint.md``).
    """

    rtol: float = CG_RTOL
    maxiter: int = CG_MAXITER
    cg_iterations: list[int] = field(default_factory=list)
    preconditioners: list[str] = field(default_factory=list)
    _jacobi_iterations: int | None = None
    _retry_in: int = 0
    _backoff: int = 2

    def __call__(self, T: np.ndarray, second_order: bool = False) -> tuple[np.ndarray, float]:
        """Step ``a`` and the loss decrease ``-2 g^T a - ||J a||^2`` its linear model predicts."""
        op = JacobianOperator(T)
        g = op.adjoint(T)
        cap = min(self.maxiter, op.m)
        used = []
        x0 = None
        its = 0
        res: CGResult | None = None
        if self._retry_in <= 0:
            P = op.eigenvector_preconditioner()
            if P is not None:
                trial = cap if self._jacobi_iterations is None else min(
                    cap, 3 * self._jacobi_iterations + 10)
                res = pcg(op.gram, -g, P, rtol=self.rtol, maxiter=trial)
                used.append("eigenvector")
                its += res.iterations
                if res.converged or res.negative_curvature:
                    self._backoff = 2
                else:
                    x0 = res.x
                    self._retry_in = self._backoff
                    self._backoff *= 2
            else:
                self._retry_in = self._backoff
        if res is None or (x0 is not None and its < cap):
            res = pcg(op.gram, -g, op.jacobi_preconditioner(), rtol=self.rtol,
                      maxiter=cap - its, x0=x0)
            used.append("jacobi")
            its += res.iterations
            self._jacobi_iterations = res.iterations
            self._retry_in -= 1
        self.cg_iterations.append(its)
        self.preconditioners.append("+".join(used))
        a = res.x
        return a, float(-2.0 * (g @ a) - op.jac_norm_sq(a))


# --------------------------------------------------------------------------- #
# the error bound's ingredients at large d
# --------------------------------------------------------------------------- #
def least_squares_step(op: JacobianOperator, *, rtol: float = 1e-10,
                       maxiter: int = 5000) -> tuple[np.ndarray, float]:
    """Gauss-Newton step ``g ~ J^+ r`` by PCG and the norm of its normal-equation residual.

    Returns ``(g, ||J^T r - J^T J g||)``; the caller turns the residual into
    an error bound ``||g - J^+ r|| <= residual / sigma_min(J)^2``.
    """
    b = op.adjoint(op.T)
    limit = min(maxiter, 4 * op.m)
    best = pcg(op.gram, b, op.preconditioner("eigenvector")[1], rtol=rtol, maxiter=limit)
    if not best.converged:
        res = pcg(op.gram, b, op.jacobi_preconditioner(), rtol=rtol, maxiter=limit)
        if res.residual_norm < best.residual_norm:
            best = res
    true_res = float(np.linalg.norm(b - op.gram(best.x)))
    return best.x, true_res


def smallest_singular_values(op: JacobianOperator, k: int, *, maxiter: int = 2000,
                             rtol: float = 1e-3, rng: np.random.Generator | None = None,
                             ) -> tuple[np.ndarray, np.ndarray]:
    """Lower and upper estimates of the ``k`` smallest singular values of ``J``.

    LOBPCG on ``J^T J`` (eigenvector preconditioner, then Jacobi if that one
    does not converge), at most ``maxiter`` iterations per preconditioner.
    For each Ritz pair ``(theta, v)`` the residual
    ``rho = ||J^T J v - theta v||`` is recomputed and an eigenvalue lies in
    ``[theta - rho, theta + rho]``; the returned lower estimates are
    ``sqrt(max(theta - rho, 0))`` and the upper ones ``sqrt(theta)`` (a
    Rayleigh quotient is never below the smallest eigenvalue), both sorted.
    LOBPCG's tolerance is absolute: it is tightened to ``rtol`` times the
    current smallest Ritz value and the run continued from its vectors until
    ``rho <= rtol * theta`` for all pairs, or the budget is spent.
    """
    m = op.m
    k = max(1, min(k, m))
    gen = rng if rng is not None else np.random.default_rng(0)

    def as_block(f: Callable[[np.ndarray], np.ndarray]) -> spla.LinearOperator:
        def matmat(X: np.ndarray) -> np.ndarray:
            X = np.asarray(X)
            if X.ndim == 1:
                return f(X)
            return np.column_stack([f(X[:, i]) for i in range(X.shape[1])])
        return spla.LinearOperator((m, m), matvec=matmat, matmat=matmat, dtype=np.float64)

    G = as_block(op.gram)
    X0 = gen.standard_normal((m, k))
    best: tuple[np.ndarray, np.ndarray] | None = None
    top_upper = math.inf
    for kind in ("eigenvector", "jacobi"):
        Pop = as_block(op.preconditioner(kind)[1])
        theta_ref = float(np.max(op.gram_diagonal())) if m else 0.0  # >= lambda_min
        left = maxiter
        while left > 0:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # non-convergence is judged from the residuals
                try:
                    w, V, hist = spla.lobpcg(G, X0, M=Pop, largest=False,
                                             tol=0.5 * rtol * max(theta_ref, 1e-300),
                                             maxiter=left, retResidualNormsHistory=True)
                except (np.linalg.LinAlgError, ValueError):
                    break
            left -= max(len(hist), 1)
            V = np.asarray(V, dtype=np.float64)
            if not (np.all(np.isfinite(np.asarray(w))) and np.all(np.isfinite(V))):
                break
            V = V / np.linalg.norm(V, axis=0, keepdims=True)
            GV = matmat_cols(op.gram, V)
            theta = np.maximum(np.sum(V * GV, axis=0), 0.0)
            rho = np.linalg.norm(GV - V * theta[None, :], axis=0)
            order = np.argsort(theta)
            theta, rho, V = theta[order], rho[order], V[:, order]
            lower = np.sqrt(np.maximum(theta - rho, 0.0))
            upper = np.sqrt(theta)
            top_upper = min(top_upper, float(upper[0]))
            if best is None or lower[0] > best[0][0]:
                best = (lower, upper)
            X0 = V
            if np.all(rho <= rtol * theta):
                return best[0], np.concatenate([[top_upper], best[1][1:]])
            if not theta[0] < 0.5 * theta_ref:
                break  # no longer improving: the other preconditioner
            theta_ref = float(theta[0])
    if best is None:
        return np.zeros(k), np.full(k, min(top_upper, math.inf))
    return best[0], np.concatenate([[top_upper], best[1][1:]])


def matmat_cols(f: Callable[[np.ndarray], np.ndarray], X: np.ndarray) -> np.ndarray:
    """``f`` applied to every column of ``X``."""
    return np.column_stack([f(X[:, i]) for i in range(X.shape[1])])
