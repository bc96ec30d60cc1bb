"""Joint (simultaneous) triangularization of nearly commuting matrices.

Given real ``d x d`` matrices ``M_1, ..., M_N`` that are (up to noise) jointly
diagonalizable, ``M_n = V diag(lambda_n) V^{-1}``, find an orthogonal ``U``
that makes every ``U^T M_n U`` upper triangular, bound how far ``U`` is from
an exact joint triangularizer of the noise-free matrices (a posteriori, from
observable quantities only), recover the joint eigenvectors and eigenvalues,
and decompose a 3-way tensor through it (Jennrich-type CP).

Host round trip
---------------
The matrices handled here are small (``d`` is a CP rank or a matrix size of
at most a few hundred), and the algorithms need the real Schur form, sparse
Jacobians and many tiny dense solves. :func:`joint_triangularize`,
:func:`triangularization_error_bound` and :func:`joint_eigen` therefore copy
the ``(N, d, d)`` stack to the host once (``tensorfact._backend.to_numpy``),
work in float64 with NumPy/SciPy, and move the (equally small) results back
to the caller's namespace, device and dtype. :func:`cp_joint_schur` touches
the full tensor only inside the caller's namespace (compression, least
squares for the third factor); only the ``R x R x K`` core goes to the host.

The mathematics (the Gauss-Newton step on the orthogonal group, the exact
Jacobi rotation, and the derivation of the error bound) is written out in
``docs/joint.md``.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sps

from .. import _backend as B
from .._validation import check_nonneg_float, check_positive_int, check_tensor
from ..tensors.cp import CPTensor

__all__ = [
    "BoundInvalidWarning",
    "JointEigenResult",
    "JointTriangularizationResult",
    "TriangularizationErrorBound",
    "TriangularizationHistory",
    "cp_joint_schur",
    "joint_eigen",
    "joint_triangularize",
    "triangularization_error_bound",
]

logger = logging.getLogger("tensorfact.joint")

_SQRT2 = math.sqrt(2.0)


class BoundInvalidWarning(RuntimeWarning):
    """The a posteriori bound is not valid here (gap too small for the noise level)."""


# --------------------------------------------------------------------------- #
# result objects
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class TriangularizationHistory:
    """Per-iteration trace of :func:`joint_triangularize`.

    Attributes
    ----------
    loss : tuple of float
        ``L(U) = sum_n ||strictly_lower(U^T M_n U)||_F^2``; entry 0 is the
        initial point, entry ``k`` the value after iteration ``k``.
    time : tuple of float
        Seconds since the start (initialisation included), same indexing.
    """

    loss: tuple[float, ...]
    time: tuple[float, ...]

    def __len__(self) -> int:
        return len(self.loss)


@dataclass(frozen=True)
class JointTriangularizationResult:
    """Result of :func:`joint_triangularize`.

    Attributes
    ----------
    U : (d, d) array
        Orthogonal joint triangularizer (caller's namespace, device, dtype).
    T : (N, d, d) array
        ``U^T M_n U`` (nearly upper triangular).
    loss : float
        Final ``sum_n ||strictly_lower(T_n)||_F^2``.
    n_iter : int
        Iterations run (Gauss-Newton steps or Jacobi sweeps).
    converged : bool
        Whether the stopping test was met before ``max_iter``.
    history : TriangularizationHistory
        Loss and elapsed time per iteration (non-increasing loss).
    """

    U: Any
    T: Any
    loss: float
    n_iter: int
    converged: bool
    history: TriangularizationHistory


@dataclass(frozen=True)
class TriangularizationErrorBound:
    """Result of :func:`triangularization_error_bound`.

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
    """Result of :func:`joint_eigen`.

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


# --------------------------------------------------------------------------- #
# validation
# --------------------------------------------------------------------------- #
def _check_stack(matrices: Any, *, name: str = "matrices") -> tuple[Any, Any, np.ndarray]:
    """Validate an (N, d, d) stack; return (xp, original dtype, host float64 copy)."""
    if isinstance(matrices, (list, tuple)):
        if len(matrices) == 0:
            raise ValueError(f"{name} is empty (N=0); pass at least one d x d matrix")
        xp = B.namespace(*matrices)
        try:
            matrices = xp.stack([xp.asarray(m) for m in matrices])
        except Exception as exc:
            raise ValueError(f"{name}: the matrices must all have the same shape ({exc})") from exc
    if not hasattr(matrices, "shape") or not hasattr(matrices, "dtype"):
        raise TypeError(
            f"{name} must be an array of shape (N, d, d), got {type(matrices).__name__}"
        )
    xp = B.namespace(matrices)
    shape = tuple(int(s) for s in matrices.shape)
    if len(shape) == 2:
        raise ValueError(
            f"{name} must have shape (N, d, d); got a single matrix of shape {shape} "
            "(use matrices[None] for N=1)"
        )
    if len(shape) != 3:
        raise ValueError(f"{name} must have shape (N, d, d), got shape {shape}")
    if shape[0] == 0:
        raise ValueError(f"{name} is empty (N=0); pass at least one d x d matrix")
    if shape[1] != shape[2]:
        raise ValueError(f"{name} must hold square matrices, got shape {shape}")
    if shape[1] == 0:
        raise ValueError(f"{name} holds 0 x 0 matrices")
    X = B.as_float_array(matrices, xp, name=name)
    host = np.array(B.to_numpy(X), dtype=np.float64)  # documented host copy (small)
    if not np.all(np.isfinite(host)):
        raise ValueError(f"{name} contains NaN or Inf values")
    return xp, X, host


def _check_orthogonal(U: Any, d: int, *, name: str = "U") -> np.ndarray:
    if not hasattr(U, "shape"):
        raise TypeError(f"{name} must be a (d, d) array, got {type(U).__name__}")
    Un = np.array(B.to_numpy(U), dtype=np.float64)
    if Un.shape != (d, d):
        raise ValueError(f"{name} must have shape ({d}, {d}) to match the matrices, got {Un.shape}")
    if not np.all(np.isfinite(Un)):
        raise ValueError(f"{name} contains NaN or Inf values")
    dev = np.linalg.norm(Un.T @ Un - np.eye(d))
    if dev > 1e-6:
        raise ValueError(f"{name} must be orthogonal (||U^T U - I||_F = {dev:.2e})")
    return Un


# --------------------------------------------------------------------------- #
# building blocks (host, float64)
# --------------------------------------------------------------------------- #
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
    for k in range(m):
        i, j = int(il[k]), int(jl[k])
        # [T, B]_{ij} * sqrt(2) = T_ip d_jq - T_iq d_jp - d_ip T_qj + d_iq T_pj
        p = ar[ar > j]  # term 1: q = j, column (p, j), + T[i, p]
        rows.append(np.full(p.size, k))
        cols.append(lidx[p, j])
        signs.append(np.ones(p.size))
        tis.append(np.full(p.size, i))
        tjs.append(p)
        q = ar[ar < j]  # term 2: p = j, column (j, q), - T[i, q]
        rows.append(np.full(q.size, k))
        cols.append(lidx[j, q])
        signs.append(-np.ones(q.size))
        tis.append(np.full(q.size, i))
        tjs.append(q)
        q = ar[ar < i]  # term 3: p = i, column (i, q), - T[q, j]
        rows.append(np.full(q.size, k))
        cols.append(lidx[i, q])
        signs.append(-np.ones(q.size))
        tis.append(q)
        tjs.append(np.full(q.size, j))
        p = ar[ar > i]  # term 4: q = i, column (p, i), + T[p, j]
        rows.append(np.full(p.size, k))
        cols.append(lidx[p, i])
        signs.append(np.ones(p.size))
        tis.append(p)
        tjs.append(np.full(p.size, j))
    cat = np.concatenate
    if m == 0:
        e = np.zeros(0, dtype=np.int64)
        return il, jl, e, e, np.zeros(0), e, e
    return il, jl, cat(rows), cat(cols), cat(signs) / _SQRT2, cat(tis), cat(tjs)


def _lower_vec(T: np.ndarray) -> np.ndarray:
    """Stack of strictly lower entries, (N*m,) (row k of matrix n at n*m + k)."""
    il, jl = np.tril_indices(T.shape[-1], -1)
    return T[:, il, jl].reshape(-1)


def _loss(T: np.ndarray) -> float:
    return float(np.sum(np.tril(T, -1) ** 2))


def _jacobian(T: np.ndarray) -> sps.csr_matrix:
    """Sparse Jacobian (N*m, m) of ``a -> (strictly_lower([T_n, A(a)]))_n``."""
    N, d, _ = T.shape
    il, jl, row, col, sign, ti, tj = _lower_pattern(d)
    m = il.size
    vals = sign[None, :] * T[:, ti, tj]
    rows = (np.arange(N)[:, None] * m + row[None, :]).ravel()
    cols = np.broadcast_to(col, (N, col.size)).ravel()
    return sps.csr_matrix((vals.ravel(), (rows, cols)), shape=(N * m, m))


def _skew(a: np.ndarray, d: int) -> np.ndarray:
    """Skew-symmetric matrix with coordinates ``a`` in the orthonormal basis."""
    il, jl = np.tril_indices(d, -1)
    A = np.zeros((d, d))
    A[il, jl] = a / _SQRT2
    return A - A.T


#: Largest d for which the d^2 x d^2 coefficient tensors of the Gauss-Newton
#: and second-order forms are built densely (d^4 doubles: 78 MB at d = 56).
#: Above it the Gram matrix comes from the sparse Jacobian and the step is
#: plain Gauss-Newton.
_DENSE_MAX_D = 56


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


def _gradient(T: np.ndarray) -> np.ndarray:
    """``J^T r`` in the skew basis.

    ``sum_n <R_n, [T_n, A]> = <Y, A>`` with ``Y = sum_n T_n^T R_n - R_n T_n^T``
    and ``R_n = strictly_lower(T_n)``.
    """
    d = T.shape[-1]
    R = np.tril(T, -1)
    Y = np.einsum("nki,nkj->ij", T, R) - np.einsum("nik,njk->ij", R, T)
    il, jl = np.tril_indices(d, -1)
    return (Y[il, jl] - Y[jl, il]) / _SQRT2


def _dense_forms(T: np.ndarray, second_order: bool) -> tuple[np.ndarray, np.ndarray | None]:
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


def _gram(J: sps.csr_matrix) -> np.ndarray:
    G = (J.T @ J).toarray()
    return (G + G.T) / 2


def _spd_solve(G: np.ndarray, b: np.ndarray) -> np.ndarray:
    # NumPy's LAPACK rather than SciPy's: on small matrices SciPy's separate
    # OpenBLAS pool was measured 100x slower on a loaded machine
    try:
        x = np.linalg.solve(G, b)
        if np.all(np.isfinite(x)):
            return x
    except np.linalg.LinAlgError:
        pass
    return np.linalg.lstsq(G, b, rcond=None)[0]


def _expm_skew(A: np.ndarray) -> np.ndarray:
    """``expm(A)`` for real skew-symmetric ``A`` (orthogonal to working precision).

    ``1j * A`` is Hermitian: ``1j A = W diag(w) W^H`` gives
    ``expm(A) = Re(W diag(exp(-1j w)) W^H)``.
    """
    w, W = np.linalg.eigh(1j * A)
    return np.real((W * np.exp(-1j * w)[None, :]) @ W.conj().T)


# --------------------------------------------------------------------------- #
# joint_triangularize
# --------------------------------------------------------------------------- #
def joint_triangularize(
    matrices: Any,
    /,
    *,
    init: Any = "schur",
    method: str = "gauss_newton",
    max_iter: int = 100,
    tol: float = 1e-12,
    rng: None | int | np.random.Generator = None,
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
    real triangularizer exists and the iteration may stop at ``max_iter``.

    ``method="jacobi"`` sweeps over the pairs ``p < q`` and applies, for each,
    the Givens rotation that minimises the loss exactly (the loss restricted
    to one rotation angle is a trigonometric polynomial of degree 4; its
    global minimum is found on a grid and polished by Newton steps).

    Parameters
    ----------
    matrices : array of shape (N, d, d), or a sequence of (d, d) arrays
        Real matrices; any array API namespace (copied to the host once, see
        the module notes).
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

    Returns
    -------
    JointTriangularizationResult
        ``(U, T, loss, n_iter, converged, history)``, ``U`` and ``T`` in the
        caller's namespace and dtype (computed in float64 on the host).

    Raises
    ------
    ValueError
        A stack that is not (N, d, d) with square matrices, N = 0, NaN/Inf,
        bad ``method``/``init``/``max_iter``/``tol``, a non-orthogonal ``init``.
    TypeError
        Not an array, complex dtype.

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
    xp, X, M = _check_stack(matrices)
    if method not in ("gauss_newton", "jacobi"):
        raise ValueError(f"method must be 'gauss_newton' or 'jacobi', got {method!r}")
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_nonneg_float(tol, "tol")
    gen = B.check_rng(rng)
    N, d, _ = M.shape
    t0 = time.perf_counter()
    U0 = _initial_triangularizer(M, init, gen)
    if method == "gauss_newton":
        U, T, hist, times, n_iter, conv = _gauss_newton(M, U0, max_iter, tol, t0)
    else:
        U, T, hist, times, n_iter, conv = _jacobi(M, U0, max_iter, tol, t0)
    logger.info("joint_triangularize(%s): %d iterations, loss %.3e, converged=%s",
                method, n_iter, hist[-1], conv)
    dt = X.dtype
    return JointTriangularizationResult(
        U=B.from_numpy(xp, U, like=X, dtype=dt),
        T=B.from_numpy(xp, T, like=X, dtype=dt),
        loss=float(hist[-1]),
        n_iter=n_iter,
        converged=conv,
        history=TriangularizationHistory(tuple(hist), tuple(times)),
    )


def _initial_triangularizer(M: np.ndarray, init: Any, gen: np.random.Generator) -> np.ndarray:
    N, d, _ = M.shape
    if isinstance(init, str):
        if init != "schur":
            raise ValueError(f"init must be 'schur' or a (d, d) orthogonal array, got {init!r}")
        theta = gen.standard_normal(N)
        theta /= np.linalg.norm(theta)
        _, Z = B.schur(B.namespace(M), np.tensordot(theta, M, axes=1))
        return np.asarray(Z, dtype=np.float64)
    return _check_orthogonal(init, d, name="init")


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


def _use_dense(N: int, d: int) -> bool:
    """Dense ``O(N d^4)``-GEMM forms or the sparse Jacobian for the Gram matrix.

    Measured (one thread): dense is 2-5x faster for ``N >= 6`` or ``d <= 24``;
    for few large matrices the ``d^4`` terms that do not shrink with ``N``
    dominate and SciPy's sparse product wins. ``d > _DENSE_MAX_D``: sparse.
    """
    return d <= _DENSE_MAX_D and (N >= 6 or d <= 24)


def _gram_and_gradient(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Gauss-Newton Gram matrix ``J^T J`` and gradient ``J^T r``, dense or sparse."""
    N, d, _ = T.shape
    if _use_dense(N, d):
        return _dense_forms(T, False)[0], _gradient(T)
    J = _jacobian(T)
    return _gram(J), J.T @ _lower_vec(T)


def _newton_step(T: np.ndarray, second_order: bool) -> tuple[np.ndarray, float]:
    """Step ``a`` (skew coordinates) and the loss decrease its model predicts.

    Gauss-Newton solves ``G a = -J^T r``. With ``second_order`` the exact
    curvature ``S`` of the residual is added (``(G + S) a = -J^T r``, a full
    Newton step) when ``G + S`` is positive definite: at a nonzero residual,
    where plain Gauss-Newton converges only linearly, this restores quadratic
    convergence (the structured-Newton remedy of Dennis, Gay and Welsch's
    NL2SOL). ``S`` needs the dense forms (``d <= _DENSE_MAX_D``).
    """
    if second_order and T.shape[-1] <= _DENSE_MAX_D:
        g = _gradient(T)
        G, S = _dense_forms(T, True)
        step = _second_order_step(G + S, g)
        if step is not None:
            return step
    else:
        G, g = _gram_and_gradient(T)
    a = -_spd_solve(G, g)
    return a, float(a @ (G @ a))  # decrease predicted by the linear model


#: Gauss-Newton counts as converging slowly (linearly, at a nonzero residual)
#: when a step is longer than this fraction of the previous one; the next
#: steps then include the second-order term.
_SLOW_RATIO = 0.25


def _gauss_newton(M: np.ndarray, U: np.ndarray, max_iter: int, tol: float,
                  t0: float, second_order: bool = True,
                  ) -> tuple[np.ndarray, np.ndarray, list[float], list[float], int, bool]:
    N, d, _ = M.shape
    scale = float(np.sum(M**2))
    floor = tol**2 * scale
    eps = np.finfo(np.float64).eps
    T = np.einsum("ji,njk,kl->nil", U, M, U, optimize=True)
    L = _loss(T)
    hist, times = [L], [time.perf_counter() - t0]
    converged = d == 1 or L <= floor
    it = 0
    prev_norm = math.inf
    slow = False
    while not converged and it < max_iter:
        a, pred = _newton_step(T, second_order and slow)
        a_norm = float(np.linalg.norm(a))
        slow = slow or a_norm > _SLOW_RATIO * prev_norm
        prev_norm = a_norm
        if not np.isfinite(pred) or pred <= tol * L:
            converged = True
            break
        A = _skew(a, d)
        step = 1.0
        accepted = False
        for _ in range(40):
            Un = U @ _expm_skew(step * A)
            Tn = np.einsum("ji,njk,kl->nil", Un, M, Un, optimize=True)
            Ln = _loss(Tn)
            if Ln < L and Ln <= L - 1e-4 * step * pred:
                accepted = True
                break
            step /= 2
        if not accepted:
            # no representable decrease: a stationary point up to rounding errors
            converged = pred <= math.sqrt(eps) * L or L <= (1e4 * eps) ** 2 * scale
            break
        it += 1
        decrease = L - Ln
        U, T, L = Un, Tn, Ln
        hist.append(L)
        times.append(time.perf_counter() - t0)
        if L <= floor or decrease <= tol * (L + decrease):
            converged = True
    U, T = _reorthonormalize(U, T, M, hist)
    return U, T, hist, times, it, converged


def _reorthonormalize(U: np.ndarray, T: np.ndarray, M: np.ndarray,
                      hist: list[float]) -> tuple[np.ndarray, np.ndarray]:
    """Remove accumulated drift from orthogonality (rarely needed).

    Only when ``||U^T U - I||_F > 1e-13``; the last history entry is then the
    loss of the returned ``U``.
    """
    d = U.shape[0]
    if np.linalg.norm(U.T @ U - np.eye(d)) <= 1e-13:
        return U, T
    Q, Rr = np.linalg.qr(U)
    U = Q * np.where(np.diag(Rr) < 0, -1.0, 1.0)[None, :]
    T = np.einsum("ji,njk,kl->nil", U, M, U, optimize=True)
    hist[-1] = _loss(T)
    return U, T


def _jacobi(M: np.ndarray, U: np.ndarray, max_iter: int, tol: float,
            t0: float) -> tuple[np.ndarray, np.ndarray, list[float], list[float], int, bool]:
    N, d, _ = M.shape
    scale = float(np.sum(M**2))
    floor = tol**2 * scale
    U = U.copy()
    T = np.einsum("ji,njk,kl->nil", U, M, U, optimize=True)
    L = _loss(T)
    hist, times = [L], [time.perf_counter() - t0]
    converged = d == 1 or L <= floor
    grid = np.linspace(-np.pi, np.pi, 73)[:-1]
    cg, sg = np.cos(grid), np.sin(grid)
    it = 0
    while not converged and it < max_iter:
        T_prev, U_prev = T.copy(), U.copy()
        for p in range(d - 1):
            for q in range(p + 1, d):
                _jacobi_pair(T, U, p, q, cg, sg)
        Ln = _loss(T)
        if not Ln < L:
            # every rotation decreased its part of the loss; a sweep that does
            # not decrease the total is rounding noise: undo it and stop
            T, U = T_prev, U_prev
            converged = True
            break
        it += 1
        hist.append(Ln)
        times.append(time.perf_counter() - t0)
        if Ln <= floor or L - Ln <= tol * L:
            converged = True
        L = Ln
    U, T = _reorthonormalize(U, T, M, hist)
    return U, T, hist, times, it, converged


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
# a posteriori error bound
# --------------------------------------------------------------------------- #
_NOISE_NORMS = ("fro", "spectral", "total", "gaussian")


def triangularization_error_bound(
    matrices: Any,
    U: Any,
    noise_level: float,
    /,
    *,
    noise_norm: str = "fro",
    failure_probability: float = 1e-6,
    safety_factor: float | None = None,
) -> TriangularizationErrorBound:
    """A posteriori bound on the distance from ``U`` to an exact joint triangularizer.

    The observed matrices are ``M'_n = M_n + Delta_n`` where the unknown
    ``M_n`` are jointly diagonalizable with real, jointly distinct eigenvalues.
    For any orthogonal ``U`` (e.g. the output of :func:`joint_triangularize`)
    this returns a number ``beta`` computed only from ``M'``, ``U`` and the
    noise level such that ``min_{U0} ||U - U0||_F <= beta`` over the exact
    joint triangularizers ``U0`` of the ``M_n``.

    With ``T'_n = U^T M'_n U``, residual ``r = (strictly_lower(T'_n))_n``,
    Jacobian ``J: A -> (strictly_lower([T'_n, A]))_n`` on skew-symmetric
    ``A`` (orthonormal coordinates), ``gap = sigma_min(J)`` and Gauss-Newton
    step ``g = J^+ r``, the error ``x = ||A||_F`` of ``U = U0 expm(A)`` is to
    first order ``||J0^+ (r - e)||`` with ``e`` the strictly lower part of
    the rotated noise, hence at most

    ``first_order = ||g|| + noise_term``,

    ``noise_term = eta / gap`` (worst-case norms, ``eta >= ||e||``) or
    ``eps (||J^+||_F + t ||J^+||_2)`` (Gaussian, ``t`` from the failure
    probability). The returned bound is
    ``safety_factor * first_order / (1 - nonlinearity)``: the
    ``1 / (1 - nonlinearity)`` factor is the Weyl correction of the gap for
    the (estimated) change of the Jacobian between ``U`` and ``U0``, the
    safety factor a margin for the remaining second-order terms. For the
    worst-case norms it defaults to 2: noise pointing along the most
    sensitive direction makes the first-order value exact to first order, so
    second-order terms can push the error above it (measured: 1.064 times it
    at ``sigma = 1.3e-3``). For ``"gaussian"`` it defaults to 1: the
    concentration term already leaves a measured margin (true error at most
    0.61 of the bound on 993 random Gaussian-noise problems). Both are checked in the
    documentation page "Joint triangularization".
    ``certified`` is a local bound with every second-order term bounded in
    the worst case (smallest fixed point of the inequality derived there);
    it is rigorous for the exact triangularizer in whose basin ``U`` lies
    but often ``inf`` at moderate noise.

    Parameters
    ----------
    matrices : array of shape (N, d, d)
        The observed (noisy) matrices ``M'_n``.
    U : (d, d) orthogonal array
        The approximate joint triangularizer to assess.
    noise_level : float
        ``epsilon >= 0``, interpreted by ``noise_norm``.
    noise_norm : {"fro", "spectral", "total", "gaussian"}
        ``"fro"``: ``||Delta_n||_F <= epsilon`` for every n (worst case);
        ``"spectral"``: ``||Delta_n||_2 <= epsilon`` for every n (worst case);
        ``"total"``: ``sqrt(sum_n ||Delta_n||_F^2) <= epsilon`` (worst case);
        ``"gaussian"``: the entries of every ``Delta_n`` are independent
        ``N(0, epsilon^2)``; the bound then holds with probability at least
        ``1 - failure_probability`` (Gaussian concentration, see the docs)
        and is much tighter than the worst case.
    failure_probability : float in (0, 1)
        Only for ``"gaussian"``.
    safety_factor : float >= 1, optional
        Multiplies the (Weyl-corrected) first-order bound. Default: 2 for
        ``"fro"``, ``"spectral"`` and ``"total"``, 1 for ``"gaussian"``.

    Returns
    -------
    TriangularizationErrorBound
        The bound and its ingredients (residual, gap, Gauss-Newton step norm,
        noise term, nonlinearity ratio).

    Warns
    -----
    BoundInvalidWarning
        When the gap is too small compared with the noise and residual for
        the linearisation to hold (no fixed point): ``bound`` is ``inf``.

    Raises
    ------
    ValueError
        Bad stack, non-orthogonal or mis-shaped ``U``, negative
        ``noise_level``, unknown ``noise_norm``, ``failure_probability``
        outside (0, 1), ``safety_factor`` below 1.

    References
    ----------
    Colombo & Vlassis, "A posteriori error bounds for joint matrix
    decomposition problems", NeurIPS 2016.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> V = rng.standard_normal((4, 4))
    >>> M = np.stack([V @ np.diag(rng.standard_normal(4)) @ np.linalg.inv(V) for _ in range(3)])
    >>> W = rng.standard_normal(M.shape)
    >>> W /= np.linalg.norm(W, axis=(1, 2), keepdims=True)
    >>> res = joint_triangularize(M + 1e-6 * W, rng=0)
    >>> eb = triangularization_error_bound(M + 1e-6 * W, res.U, 1e-6)
    >>> 0 < eb.bound < 1e-3
    True
    """
    xp, _, Mp = _check_stack(matrices)
    N, d, _ = Mp.shape
    Un = _check_orthogonal(U, d)
    eps_in = check_nonneg_float(noise_level, "noise_level")
    if noise_norm not in _NOISE_NORMS:
        raise ValueError(f"noise_norm must be one of {_NOISE_NORMS}, got {noise_norm!r}")
    fp = float(failure_probability)
    if not 0.0 < fp < 1.0:
        raise ValueError(f"failure_probability must be in (0, 1), got {failure_probability!r}")
    if safety_factor is None:
        safety = 1.0 if noise_norm == "gaussian" else 2.0
    else:
        safety = float(safety_factor)
    if not (math.isfinite(safety) and safety >= 1.0):
        raise ValueError(f"safety_factor must be a finite number >= 1, got {safety_factor!r}")
    nan = float("nan")
    if d == 1:
        return TriangularizationErrorBound(0.0, 0.0, 0.0, 0.0, math.inf, 0.0, 0.0, 0.0,
                                           eps_in, noise_norm, 1.0)

    T = np.einsum("ji,njk,kl->nil", Un, Mp, Un, optimize=True)
    r = _lower_vec(T)
    G, Jtr = _gram_and_gradient(T)
    w, Vg = np.linalg.eigh(G)
    w = np.clip(w, 0.0, None)
    s_all = np.sqrt(w)
    smax = float(s_all[-1])
    eps = np.finfo(np.float64).eps
    if s_all[0] <= 1e4 * eps * max(smax, 1.0) * math.sqrt(w.size):
        # eigvalsh of the Gram matrix is too coarse here: use the SVD of J
        s_all = np.sort(np.linalg.svd(_jacobian(T).toarray(), compute_uv=False))
    gap = float(s_all[0])
    if gap > 0:
        g = Vg @ ((Vg.T @ Jtr) / np.where(w > 0, w, 1.0))
    else:
        g = np.zeros_like(Jtr)
    step = float(np.linalg.norm(g))
    res_norm = float(np.linalg.norm(r))
    Jg2 = float(g @ (G @ g))
    r_perp = math.sqrt(max(res_norm**2 - Jg2, 0.0))
    tau = math.sqrt(float(np.sum(np.linalg.norm(Mp, ord=2, axis=(1, 2)) ** 2)))
    m = d * (d - 1) // 2

    # noise ingredients: eps2 >= sqrt(sum ||Delta_n||_2^2), noise(s_i) >= ||J0^+ e||
    if noise_norm == "fro":
        eps2 = math.sqrt(N) * eps_in
        eta = math.sqrt(N) * eps_in
        prob = 1.0
    elif noise_norm == "spectral":
        eps2 = math.sqrt(N) * eps_in
        eta = math.sqrt(N * d) * eps_in
        prob = 1.0
    elif noise_norm == "total":
        eps2 = eps_in
        eta = eps_in
        prob = 1.0
    else:
        # two Gaussian-concentration events, each failing with prob <= fp / 2
        t = math.sqrt(2.0 * math.log(2.0 / fp))
        eps2 = eps_in * (math.sqrt(N * (4.0 * d + 1.0)) + t)
        eta = nan
        prob = 1.0 - fp

    def noise_term(delta: float) -> float:
        sh = s_all - delta
        if sh[0] <= 0:
            return math.inf
        if noise_norm == "gaussian":
            return eps_in * (math.sqrt(float(np.sum(1.0 / sh**2))) + t / float(sh[0]))
        return eta / float(sh[0])

    def f(x: float) -> tuple[float, float]:
        # certified local bound: x <= f(x) with worst-case second-order terms
        delta = 2.0 * (_SQRT2 * tau * x + eps2)
        s = gap - delta
        if s <= 0:
            return math.inf, math.inf
        val = (step * (1.0 + delta / s) + delta * r_perp / s**2 + noise_term(delta)
               + (2.0 * eps2 * x + _SQRT2 * tau * x * x) / s)
        return val, delta / gap

    # ---- first-order bound, Weyl-corrected (the returned ``bound``)
    noise0 = noise_term(0.0)
    first = step + noise0
    # estimated relative size of the second-order terms: the Jacobian moves by
    # about 2 (||[T, A]|| + eps2); ||[T, A]|| is estimated by sqrt(2) times its
    # strictly-lower part J0 a = P_{J0}(r - e - q), whose size is about
    # ||J g|| + ||P e|| (the residual orthogonal to the range does not count);
    # ||P e|| <= eta (worst case), ~ eps (sqrt(m) + t) (Gaussian, m-dim projection)
    e_proj = eta if noise_norm != "gaussian" else eps_in * (math.sqrt(m) + t)
    nonlin = (2.0 * (_SQRT2 * (math.sqrt(max(Jg2, 0.0)) + e_proj) + eps2) / gap
              if gap > 0 else math.inf)
    tiny_gap = gap <= 1e4 * eps * max(smax, 1.0)
    if not tiny_gap and nonlin < 1.0 and math.isfinite(first):
        bound = safety * first / (1.0 - nonlin)
    else:
        bound = math.inf

    # ---- certified (worst-case second-order) local bound: smallest fixed point of f
    x = 0.0
    certified = math.inf
    for _ in range(500):
        fx, _r = f(x)
        if not math.isfinite(fx):
            break
        if fx <= x * (1 + 1e-12) + 1e-300:
            certified = fx
            break
        x = fx
    if not math.isfinite(bound):
        warnings.warn(
            "triangularization_error_bound: the linearised residual operator's smallest "
            f"singular value (gap={gap:.3e}) is too small for the noise level and residual "
            f"(estimated second-order ratio {nonlin:.2f} >= 1); returning inf. The joint "
            "eigenvalues may be (nearly) repeated, the noise too large, or U too far from "
            "a triangularizer.",
            BoundInvalidWarning,
            stacklevel=2,
        )
    return TriangularizationErrorBound(
        bound=float(bound),
        first_order=float(first),
        certified=float(certified),
        residual=res_norm,
        gap=gap,
        step_norm=step,
        noise_term=float(noise0),
        nonlinearity=float(nonlin),
        noise_level=eps_in,
        noise_norm=noise_norm,
        probability=prob,
    )


# --------------------------------------------------------------------------- #
# joint eigenvectors / eigenvalues
# --------------------------------------------------------------------------- #
def joint_eigen(matrices: Any, U: Any, /) -> JointEigenResult:
    """Joint eigenvectors and eigenvalues from a joint triangularizer.

    With ``T_n = U^T M_n U`` (nearly upper triangular), the eigenvalue of
    ``M_n`` for the ``i``-th joint eigenvector is ``T_n[i, i]``; the
    eigenvector is ``U y`` with ``y`` upper triangular (``y_i = 1``,
    ``y_k = 0`` for ``k > i``), found by back-substitution where each
    unknown ``y_k`` solves the ``N`` equations
    ``(T_n[k, k] - T_n[i, i]) y_k = -sum_{l > k} T_n[k, l] y_l`` in the
    least-squares sense, so all matrices contribute.

    Parameters
    ----------
    matrices : array of shape (N, d, d)
    U : (d, d) orthogonal array
        A joint triangularizer, e.g. ``joint_triangularize(matrices).U``.

    Returns
    -------
    JointEigenResult
        ``eigenvectors`` (d, d) with unit columns and ``eigenvalues`` (N, d),
        in the caller's namespace and dtype.

    Raises
    ------
    ValueError
        Bad stack, ``U`` of the wrong shape, not orthogonal or not finite.

    Examples
    --------
    >>> import numpy as np
    >>> V = np.array([[1.0, 1.0], [0.0, 1.0]])
    >>> M = np.stack([V @ np.diag([1.0, 2.0]) @ np.linalg.inv(V)])
    >>> res = joint_eigen(M, joint_triangularize(M, rng=0).U)
    >>> np.allclose(M[0] @ res.eigenvectors, res.eigenvectors * res.eigenvalues[0])
    True
    """
    xp, X, M = _check_stack(matrices)
    N, d, _ = M.shape
    Un = _check_orthogonal(U, d)
    T = np.einsum("ji,njk,kl->nil", Un, M, Un, optimize=True)
    lam = np.einsum("nii->ni", T)
    Y = np.zeros((d, d))
    tiny = np.finfo(np.float64).tiny
    for i in range(d):
        Y[i, i] = 1.0
        for k in range(i - 1, -1, -1):
            a = T[:, k, k] - lam[:, i]  # (N,)
            rhs = -(T[:, k, k + 1:i + 1] @ Y[k + 1:i + 1, i])  # (N,)
            den = float(a @ a)
            Y[k, i] = float(a @ rhs) / den if den > tiny else 0.0
    V = Un @ Y
    V /= np.linalg.norm(V, axis=0, keepdims=True)
    return JointEigenResult(
        eigenvectors=B.from_numpy(xp, V, like=X, dtype=X.dtype),
        eigenvalues=B.from_numpy(xp, lam, like=X, dtype=X.dtype),
    )


# --------------------------------------------------------------------------- #
# CP through joint triangularization
# --------------------------------------------------------------------------- #
def cp_joint_schur(
    X: Any,
    /,
    rank: int,
    *,
    n_slices: int | None = None,
    rng: None | int | np.random.Generator = None,
) -> CPTensor:
    """CP decomposition of a 3-way tensor by joint triangularization (Jennrich-type).

    1. Choose the two largest modes ``a, b`` (the third, ``c``, indexes the
       slices) and compress them onto their leading ``R`` left singular
       vectors ``P_a, P_b`` (eigenvectors of the unfolding Gram matrices),
       giving an ``R x R x I_c`` core whose slices are
       ``G_k = A' diag(C[k]) B'^T`` with ``A' = P_a^T A``, ``B' = P_b^T B``.
    2. Form ``n_slices`` random combinations ``G_n`` of the slices and a
       random reference combination ``G_0``; the slice ratios
       ``M_n = G_n G_0^{-1} = A' D_n A'^{-1}`` are jointly diagonalizable.
    3. Jointly triangularize them (:func:`joint_triangularize`, Gauss-Newton)
       and read off ``A'`` with :func:`joint_eigen`.
    4. ``A'^{-1} G_k = diag(C[k]) B'^T``: each row ``r`` of these matrices,
       stacked over ``k``, is the rank-one matrix ``C[:, r] b'_r^T``; its
       leading singular vectors give ``b'_r``.
    5. ``A = P_a A'``, ``B = P_b B'``; the slice-mode factor is recovered by
       least squares against the full tensor.

    Parameters
    ----------
    X : array of shape (I_0, I_1, I_2)
        Dense 3-way tensor, any array API namespace.
    rank : int
        ``1 <= rank <= `` the second largest dimension.
    n_slices : int, optional
        Number of slice-ratio matrices (default ``min(I_c, 10)``, at least 2).
    rng : None, int or numpy.random.Generator
        Randomness for the slice combinations and the Schur initialisation.

    Returns
    -------
    CPTensor
        Normalised decomposition in the caller's namespace and dtype.

    Raises
    ------
    ValueError
        ``X`` not 3-way, empty, NaN/Inf, rank too large, bad ``n_slices``.
    TypeError
        Not an array, complex dtype.

    References
    ----------
    Colombo & Vlassis, "Tensor decomposition via joint matrix Schur
    decomposition", ICML 2016.
    Harshman, "Foundations of the PARAFAC procedure", 1970 (Jennrich's algorithm).

    Examples
    --------
    >>> from tensorfact.datasets import planted_cp
    >>> X, truth = planted_cp((6, 7, 8), rank=3, rng=0)
    >>> cp = cp_joint_schur(X, 3, rng=0)
    >>> cp.factor_match_score(truth) > 0.9999
    True
    """
    xp = B.namespace(X)
    X = check_tensor(X, xp, name="X", min_ndim=3)
    if X.ndim != 3:
        raise ValueError(f"X must be a 3-way tensor, got shape {tuple(X.shape)}")
    shape = tuple(int(s) for s in X.shape)
    R = check_positive_int(rank, "rank")
    order = sorted(range(3), key=lambda n: -shape[n])
    ma, mb, mc = order[0], order[1], order[2]
    if R > shape[mb]:
        raise ValueError(
            f"rank={R} is too large for cp_joint_schur: it must not exceed the second "
            f"largest dimension of X (shape {shape})"
        )
    if R > 1 and shape[mc] < 2:
        raise ValueError(
            f"cp_joint_schur needs at least 2 slices in the smallest mode for rank > 1 "
            f"(shape {shape}): with one slice the slice ratios carry no information"
        )
    if n_slices is None:
        n_slices = max(2, min(shape[mc], 10))
    else:
        n_slices = check_positive_int(n_slices, "n_slices")
    gen = B.check_rng(rng)
    dt = X.dtype
    # put the modes in (a, b, c) order
    Xp = xp.permute_dims(X, (ma, mb, mc))
    Ia, Ib, Ic = shape[ma], shape[mb], shape[mc]
    Pa = _leading_left(xp, xp.reshape(Xp, (Ia, Ib * Ic)), R)
    Pb = _leading_left(xp, xp.reshape(xp.permute_dims(Xp, (1, 0, 2)), (Ib, Ia * Ic)), R)
    # core G[r, s, k] = sum_ij Pa[i, r] Pb[j, s] X[i, j, k]
    core = B.einsum(xp, "ir,js,ijk->rsk", Pa, Pb, Xp)
    Gc = np.array(B.to_numpy(core), dtype=np.float64)  # small R x R x Ic host copy
    Ah, Bh = _jennrich_core(Gc, R, n_slices, gen)
    A = Pa @ B.from_numpy(xp, Ah, like=X, dtype=dt)
    Bm = Pb @ B.from_numpy(xp, Bh, like=X, dtype=dt)
    # third factor by least squares: C = X_(c) (B kr A) ((A^T A) * (B^T B))^{-1}
    M = B.einsum(xp, "ijk,ir,jr->kr", Xp, A, Bm)
    Gm = (xp.matrix_transpose(A) @ A) * (xp.matrix_transpose(Bm) @ Bm)
    C = B.spd_solve_right(xp, M, Gm, what="cp_joint_schur Gram matrix")
    facs = [None, None, None]
    facs[ma], facs[mb], facs[mc] = A, Bm, C
    return CPTensor(facs).normalize()


def _leading_left(xp: Any, Xm: Any, R: int) -> Any:
    """Leading R left singular vectors of a wide (I, J) matrix via its I x I Gram."""
    Gm = Xm @ xp.matrix_transpose(Xm)
    _, V = xp.linalg.eigh((Gm + xp.matrix_transpose(Gm)) / 2)
    n = int(V.shape[1])
    return xp.flip(V[:, n - R:], axis=1)


def _jennrich_core(G: np.ndarray, R: int, n_slices: int,
                   gen: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Factors A', B' (R x R) of a core G[r, s, k] = sum_t A'[r,t] B'[s,t] C[k,t]."""
    K = G.shape[2]
    if R == 1:
        Z = G[0]  # (1, K)
        return np.ones((1, 1)), np.ones((1, 1)) * np.sign(Z.sum() or 1.0)
    w0 = gen.standard_normal(K)
    W = gen.standard_normal((n_slices, K))
    G0 = G @ w0
    Gs = np.einsum("rsk,nk->nrs", G, W)
    # M_n = G_n G0^{-1}
    try:
        Ms = np.swapaxes(np.linalg.solve(G0.T[None], np.swapaxes(Gs, 1, 2)), 1, 2)
    except np.linalg.LinAlgError:
        Ms = np.stack([Gn @ np.linalg.pinv(G0) for Gn in Gs])
    if not np.all(np.isfinite(Ms)):
        Ms = np.stack([Gn @ np.linalg.pinv(G0) for Gn in Gs])
    res = joint_triangularize(Ms, rng=gen)
    Ap = np.asarray(joint_eigen(Ms, res.U).eigenvectors)
    # rows of A'^{-1} G_k are C[k, r] b'_r^T
    Z = np.linalg.lstsq(Ap, G.reshape(R, -1), rcond=None)[0].reshape(R, R, K)
    Bp = np.empty((R, R))
    for r in range(R):
        u, s, vt = np.linalg.svd(Z[r].T, full_matrices=False)  # (K, R)
        Bp[:, r] = vt[0] * s[0]
    return Ap, Bp
