"""Sparse-format operations too large to sit in `SparseTensor` itself."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

import numpy as np

from .. import _backend as B
from .._kernels import sparse as K

if TYPE_CHECKING:
    from .sparse import SparseTensor

__all__ = ["leading_subspace", "mode_gram", "residual_norm_sq"]


def _compressed_unfolding(X: SparseTensor, mode: int) -> Any:
    """``unfold(X, mode)`` without its empty columns, as a SciPy CSR matrix (NumPy data)."""
    import scipy.sparse as sps

    keys, perm = X._fiber_index(mode)
    # fiber number of each entry = rank of its key among distinct keys
    new = np.empty(keys.shape[0], dtype=bool)
    if keys.shape[0]:
        new[0] = True
        np.not_equal(keys[1:], keys[:-1], out=new[1:])
    fib = np.cumsum(new) - 1
    n_fib = int(fib[-1]) + 1 if keys.shape[0] else 0
    return sps.csr_array((X.values[perm], (X.coords[perm, mode], fib)),
                         shape=(X.shape[mode], max(n_fib, 1)))


def leading_subspace(X: SparseTensor, mode: int, k: int, rng: np.random.Generator) -> Any:
    """Leading ``k`` left singular vectors of ``unfold(X, mode)``.

    Small modes: eigenvectors of the mode Gram matrix. Large modes of NumPy
    tensors: a randomised range finder with two power iterations on the
    compressed unfolding ``U`` (Halko, Martinsson & Tropp 2011): products
    ``U (U^T Q)`` cost ``O(nnz k)`` each, where the dense ``I_n x I_n`` Gram
    and its eigendecomposition would cost ``O(I_n^3)``.
    """
    xp = X.xp
    In = X.shape[mode]
    kk = min(In, k + 10)
    if In <= max(4 * kk, 512) or not B.is_numpy(xp):
        from ._dense import leading_from_gram

        return leading_from_gram(xp, mode_gram(X, mode), k)
    U = _compressed_unfolding(X, mode).astype(np.float64)
    Q = rng.standard_normal((In, kk))
    for _ in range(2):
        Q, _ = np.linalg.qr(U @ (U.T @ Q))
    Z = U.T @ Q  # (fibers, kk): Q^T U U^T Q = Z^T Z, its eigenvectors rotate Q
    lam, V = np.linalg.eigh(Z.T @ Z)
    lead = Q @ V[:, ::-1][:, :k]
    return np.ascontiguousarray(lead, dtype=X.dtype)


def mode_gram(X: SparseTensor, mode: int) -> Any:
    """``unfold(X, mode) @ unfold(X, mode).T`` computed sparsely (dense I_n x I_n)."""
    xp = X.xp
    In = X.shape[mode]
    keys, perm = X._fiber_index(mode)
    if B.is_numpy(xp):
        U = _compressed_unfolding(X, mode)
        G = (U @ U.T).toarray()
        return np.asarray(G, dtype=X.dtype)
    # pure-xp: dense column blocks of the (compressed) unfolding
    dev = B.device(X.values)
    nnz = X.nnz
    G = xp.zeros((In, In), dtype=X.dtype, device=dev)
    if nnz == 0:
        return G
    diff = xp.astype(keys[1:] != keys[:-1], xp.int64)
    fib = xp.concat([xp.zeros((1,), dtype=xp.int64, device=dev), xp.cumulative_sum(diff)])
    n_fib = int(B.to_float(fib[-1])) + 1
    rows = xp.take(X.coords[:, mode], perm)
    vals = xp.take(X.values, perm)
    step = max(1, (1 << 22) // In)
    for f0 in range(0, n_fib, step):
        f1 = min(n_fib, f0 + step)
        lo = int(B.to_float(xp.searchsorted(fib, xp.asarray(f0, device=dev))))
        hi = int(B.to_float(xp.searchsorted(fib, xp.asarray(f1, device=dev))))
        nb = f1 - f0
        flat = (fib[lo:hi] - f0) * In + rows[lo:hi]
        Ub = xp.reshape(B.scatter_add(xp, nb * In, flat, vals[lo:hi]), (nb, In))
        G = G + xp.matrix_transpose(Ub) @ Ub
    return G


def residual_norm_sq(X: SparseTensor, weights: Any, factors: list[Any]) -> float:
    """Exact ``||X - [[weights; factors]]||^2`` in float64, never densifying.

    ``||X - M||^2 = sum_k (x_k - m_k)^2 + (||M||^2 - sum_k m_k^2)`` where
    ``k`` runs over the stored entries: the first term is accurate, the
    second (the model's energy off the stored entries) is the only
    difference of large numbers; ``||M||^2`` comes from the Hadamard
    product of the factors' Gram matrices, in float64.
    """
    xp = X.xp
    if B.is_numpy(xp):
        sq_diff, sq_model = K.cp_at_nonzeros_numba(
            X.coords, X.values, np.asarray(weights), [np.asarray(A) for A in factors])
    else:
        sq_diff, sq_model = K.cp_at_nonzeros_xp(xp, X.coords, X.values, weights, factors)
    f64 = xp.float64
    w = xp.astype(weights, f64)
    H = None
    for A in factors:
        A64 = xp.astype(A, f64)
        G = xp.matrix_transpose(A64) @ A64
        H = G if H is None else H * G
    model_sq = B.to_float(xp.sum(w[:, None] * H * w[None, :]))
    if X.nnz == math.prod(X.shape):  # every entry stored: no model energy off them
        return sq_diff
    return max(sq_diff + max(model_sq - sq_model, 0.0), 0.0)
