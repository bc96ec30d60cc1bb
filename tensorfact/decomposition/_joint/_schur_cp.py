"""Joint eigenvectors from a triangularizer, and CP through joint triangularization."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from ... import _backend as B
from ..._validation import check_int, check_positive_int, check_tensor
from ...tensors.cp import CPTensor
from .._cp_als import unscaled_model
from ._checks import check_orthogonal, check_stack, power_of_two_exponent
from ._objective import congruence
from ._results import JointEigenResult, JointSchurCPResult, JointTriangularizationResult
from ._solver import joint_triangularize

__all__ = ["cp_joint_schur", "joint_eigen"]

#: Entries of X reconstructed at a time when measuring the exact error of the
#: CP model (bounds the workspace of the residual to 2**22 entries).
_RESIDUAL_BLOCK = 2**22


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
        A joint triangularizer, e.g. ``tensorfact.joint_triangularize(matrices).U``.

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
    >>> from tensorfact import joint_triangularize
    >>> res = joint_eigen(M, joint_triangularize(M, rng=0).U)
    >>> np.allclose(M[0] @ res.eigenvectors, res.eigenvectors * res.eigenvalues[0])
    True
    """
    xp, X, M = check_stack(matrices)
    N, d, _ = M.shape
    Un = check_orthogonal(U, d)
    # on M / 2^e (max |entry| in [1/2, 1), exact): no square overflows or underflows,
    # the eigenvectors do not depend on the units, the eigenvalues are scaled back
    e = power_of_two_exponent(M)
    T = congruence(Un, np.ldexp(M, -e))
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
        eigenvalues=B.from_numpy(xp, np.ldexp(lam, e), like=X, dtype=X.dtype),
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
) -> JointSchurCPResult:
    """CP decomposition of a 3-way tensor by joint triangularization (Jennrich-type).

    1. Choose the two largest modes ``a, b`` (the third, ``c``, indexes the
       slices) and compress them onto their leading ``R`` left singular
       vectors ``P_a, P_b`` (eigenvectors of the unfolding Gram matrices),
       giving an ``R x R x I_c`` core whose slices are
       ``G_k = A' diag(C[k]) B'^T`` with ``A' = P_a^T A``, ``B' = P_b^T B``.
    2. Form ``n_slices`` random combinations ``G_n`` of the slices and a
       random reference combination ``G_0``; the slice ratios
       ``M_n = G_n G_0^{-1} = A' D_n A'^{-1}`` are jointly diagonalizable.
    3. Jointly triangularize them (`tensorfact.joint_triangularize`,
       Gauss-Newton) and read off ``A'`` with `tensorfact.joint_eigen`.
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
    n_slices : int >= 2, optional
        Number of slice-ratio matrices (default ``min(I_c, 10)``, at least 2).
    rng : None, int or numpy.random.Generator
        Randomness for the slice combinations and the Schur initialisation.

    Returns
    -------
    JointSchurCPResult
        ``(cp, rel_error, triangularization)``: the normalised
        decomposition in the caller's namespace and dtype, its exact relative
        error ``||X - cp.to_dense()||_F / ||X||_F`` (computed blockwise over
        the slice mode, never forming the full model) and the joint
        triangularization of the slice ratios.

    Raises
    ------
    ValueError
        ``X`` not 3-way, empty, NaN/Inf, rank too large, bad ``n_slices``.
    TypeError
        Not an array, complex dtype.
    FloatingPointError
        If an eigenvalue or singular value solver fails on ``X``'s unfoldings
        or slice ratios (its ``LinAlgError`` is not passed on).

    Notes
    -----
    ``X`` is divided by the power of two that brings its largest entry into
    ``[1/2, 1)`` before anything is computed (exact), and the weights are
    multiplied back at the end: the factors and ``rel_error`` do not depend
    on ``X``'s units (``2^-1000 X`` and ``2^1000 X`` give the same factors).

    References
    ----------
    Colombo & Vlassis, "Tensor decomposition via joint matrix Schur
    decomposition", ICML 2016.
    Harshman, "Foundations of the PARAFAC procedure", 1970 (Jennrich's algorithm).

    Examples
    --------
    >>> from tensorfact.datasets import planted_cp
    >>> X, truth = planted_cp((6, 7, 8), rank=3, rng=0)
    >>> res = cp_joint_schur(X, 3, rng=0)
    >>> res.cp.factor_match_score(truth) > 0.9999, res.rel_error < 1e-10
    (True, True)
    """
    xp = B.namespace(X, name="X")
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
        n_slices = check_int(n_slices, "n_slices", low=2, what="an integer >= 2")
    gen = B.check_rng(rng)
    dt = X.dtype
    # work on X / 2^e with max |entry| in [1/2, 1) (exact): no Gram matrix
    # overflows or underflows, and the factors do not depend on X's units;
    # the weights are scaled back at the end
    top = B.to_float(xp.max(xp.abs(X)))
    e = math.frexp(top)[1] if top > 0 and math.isfinite(top) else 0
    if e != 0:
        X = _times_power_of_two(X, -e)
    # put the modes in (a, b, c) order
    Xp = xp.permute_dims(X, (ma, mb, mc))
    Ia, Ib, Ic = shape[ma], shape[mb], shape[mc]
    with B.linalg_guard("cp_joint_schur: leading singular vectors of X's unfoldings"):
        Pa = _leading_left(xp, xp.reshape(Xp, (Ia, Ib * Ic)), R)
        Pb = _leading_left(xp, xp.reshape(xp.permute_dims(Xp, (1, 0, 2)), (Ib, Ia * Ic)), R)
    # core G[r, s, k] = sum_ij Pa[i, r] Pb[j, s] X[i, j, k]
    core = B.einsum(xp, "ir,js,ijk->rsk", Pa, Pb, Xp)
    Gc = np.array(B.to_numpy(core), dtype=np.float64)  # small R x R x Ic host copy
    with B.linalg_guard("cp_joint_schur: joint eigenvectors of X's slice ratios"):
        Ah, Bh, tri = _jennrich_core(Gc, R, n_slices, gen)
    A = Pa @ B.from_numpy(xp, Ah, like=X, dtype=dt)
    Bm = Pb @ B.from_numpy(xp, Bh, like=X, dtype=dt)
    # third factor by least squares: C = X_(c) (B kr A) ((A^T A) * (B^T B))^{-1}
    M = B.einsum(xp, "ijk,ir,jr->kr", Xp, A, Bm)
    Gm = (xp.matrix_transpose(A) @ A) * (xp.matrix_transpose(Bm) @ Bm)
    C = B.spd_solve_right(xp, M, Gm, what="cp_joint_schur Gram matrix")
    facs = [None, None, None]
    facs[ma], facs[mb], facs[mc] = A, Bm, C
    cp = CPTensor(facs).normalize()
    w = cp.weights
    rel = _relative_residual(xp, Xp, cp.factors[ma] * w[None, :], cp.factors[mb],
                             cp.factors[mc])
    if e < 0:  # small data: subnormal weights would lose bits, unscaled_model shares 2^e out
        k = min(-e, 1000)
        cp = unscaled_model(xp, list(cp.factors), _times_power_of_two(w, e + k),
                            math.ldexp(1.0, k))
    elif e > 0:
        cp = CPTensor(list(cp.factors), weights=_times_power_of_two(w, e))
    return JointSchurCPResult(cp=cp, rel_error=rel, triangularization=tri)


def _times_power_of_two(x: Any, k: int) -> Any:
    """``x * 2^k`` in two exact factors (``2^k`` alone may not be representable)."""
    k1 = k // 2
    return (x * math.ldexp(1.0, k1)) * math.ldexp(1.0, k - k1)


def _relative_residual(xp: Any, X: Any, A: Any, Bm: Any, C: Any) -> float:
    """``||X - [[A, B, C]]||_F / ||X||_F`` for a 3-way ``X``, blockwise over mode 2."""
    Ia, Ib, Ic = (int(s) for s in X.shape)
    step = max(1, _RESIDUAL_BLOCK // max(Ia * Ib, 1))
    res_sq = 0.0
    norm_sq = 0.0
    for k0 in range(0, Ic, step):
        k1 = min(k0 + step, Ic)
        Xk = X[:, :, k0:k1]
        Dk = Xk - B.einsum(xp, "ir,jr,kr->ijk", A, Bm, C[k0:k1, :])
        res_sq += B.to_float(xp.sum(Dk * Dk))
        norm_sq += B.to_float(xp.sum(Xk * Xk))
    if norm_sq == 0.0:
        return 0.0 if res_sq == 0.0 else math.inf
    return math.sqrt(res_sq / norm_sq)


def _leading_left(xp: Any, Xm: Any, R: int) -> Any:
    """Leading R left singular vectors of a wide (I, J) matrix via its I x I Gram."""
    Gm = Xm @ xp.matrix_transpose(Xm)
    _, V = xp.linalg.eigh((Gm + xp.matrix_transpose(Gm)) / 2)
    n = int(V.shape[1])
    return xp.flip(V[:, n - R:], axis=1)


def _jennrich_core(G: np.ndarray, R: int, n_slices: int, gen: np.random.Generator,
                   ) -> tuple[np.ndarray, np.ndarray, JointTriangularizationResult]:
    """Factors A', B' (R x R) of a core G[r, s, k] = sum_t A'[r,t] B'[s,t] C[k,t].

    Also returns the joint triangularization of the slice ratios (for
    ``R = 1`` the trivial one of the ``1 x 1`` core slices, no random draws).
    """
    K = G.shape[2]
    if R == 1:
        Z = G[0]  # (1, K)
        tri = joint_triangularize(np.moveaxis(G, 2, 0), init=np.eye(1))
        return np.ones((1, 1)), np.ones((1, 1)) * np.sign(Z.sum() or 1.0), tri
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
    return Ap, Bp, res
