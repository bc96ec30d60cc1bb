"""Dense arrays (any array API namespace) as a data format."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B
from .._kernels.dense import gather_dense_fibers_numba, gather_dense_fibers_xp
from .._validation import check_finite as _check_finite
from .._validation import check_index, check_int
from ..tenalg._khatri_rao import gather_krp_rows
from ..tenalg._mttkrp import DimensionTree, _mttkrp
from ._scale import sum_of_squares

__all__ = ["DenseTensor", "leading_from_gram"]

#: Elements of workspace that blocked loops (Gram, residual) may allocate.
_BLOCK_BUDGET = 1 << 22
#: Elements of workspace per block of the exact residual.
_RESIDUAL_BUDGET = 1 << 18


def leading_from_gram(xp: ModuleType, G: Any, k: int) -> Any:
    """Leading ``k`` eigenvectors of a symmetric ``G``, largest first."""
    In = int(G.shape[0])
    with B.linalg_guard("leading subspace (Gram eigendecomposition)"):
        _, V = xp.linalg.eigh(G)
    return xp.flip(V[:, In - min(k, In):], axis=1)


class DenseTensor:
    """A dense array seen through the data-format protocol.

    MTTKRP uses a `tensorfact.tenalg.DimensionTree` (two GEMM passes
    over ``X`` per ALS sweep, the partial contractions kept between
    consecutive modes); Gram matrices, the power step of the range finder and
    the exact residual run in blocks of bounded workspace on copy-free views
    of ``X``; sampled fibers are gathered in memory order.

    Parameters
    ----------
    X : array
        An array of any array API namespace with at least two modes;
        floating arrays are not copied (integers and booleans are promoted
        to the default float). NaN/Inf are not screened here
        (`check_finite`); `as_format` also refuses empty modes.
    xp : namespace, optional
        ``X``'s namespace (looked up when omitted).

    Raises
    ------
    TypeError
        ``X`` is not an array or not of real numbers; ``xp`` is not ``X``'s
        namespace.
    ValueError
        Fewer than two modes.
    """

    def __init__(self, X: Any, xp: ModuleType | None = None) -> None:
        if not B.is_array(X):
            raise TypeError(f"X must be an array, got {type(X).__name__}")
        own = B.namespace(X)
        if xp is not None and xp is not own and getattr(xp, "__name__", None) != own.__name__:
            raise TypeError(f"xp must be X's namespace {own.__name__}, got {xp!r}")
        self.xp = own if xp is None else xp
        if X.ndim < 2:
            raise ValueError(f"X must have at least 2 modes, got shape {tuple(X.shape)}")
        X = B.as_float_array(X, self.xp, name="X")
        self.X = X
        self.shape = tuple(int(s) for s in X.shape)
        self.dtype = X.dtype
        self.like = X
        self._tree = DimensionTree(self.xp, X)
        self._norm_sq: float | None = None

    def to_dense(self) -> Any:
        """The array itself."""
        return self.X

    def check_finite(self, name: str = "X") -> None:
        """Raise ``ValueError`` naming ``name`` if ``X`` holds NaN or Inf."""
        _check_finite(self.X, self.xp, name=name)

    def norm_sq(self) -> float:
        """``||X||_F^2`` (one pass, computed once and kept)."""
        if self._norm_sq is None:  # overflow gives inf: the solvers rescale
            self._norm_sq = sum_of_squares(self.X, self.xp)
        return self._norm_sq

    def max_abs(self) -> float:
        """``max |X|`` (two reductions, no temporary of the tensor's size)."""
        return max(B.to_float(self.xp.max(self.X)), -B.to_float(self.xp.min(self.X)))

    def scaled(self, factor: float) -> DenseTensor:
        """A ``DenseTensor`` of ``factor * X`` (a copy of the tensor)."""
        return DenseTensor(self.X * factor, self.xp)

    def mttkrp(self, factors: Any, mode: int, /) -> Any:
        """MTTKRP of ``mode``, reusing the dimension-tree partial of the last call."""
        # the solvers' hot path: factors are theirs (checked once), the mode is checked here
        return self._tree.mttkrp_unchecked(factors, check_index(mode, "mode", len(self.shape)))

    def mode_gram(self, mode: int) -> Any:
        """``unfold(X, mode) @ unfold(X, mode).T`` without copying ``X``."""
        xp = self.xp
        s = self.shape
        mode = check_index(mode, "mode", len(s))
        L, In, Rt = math.prod(s[:mode]), s[mode], math.prod(s[mode + 1:])
        if L == 1:
            X2 = xp.reshape(self.X, (In, Rt))
            return X2 @ xp.matrix_transpose(X2)
        if Rt == 1:
            X2 = xp.reshape(self.X, (L, In))
            return xp.matrix_transpose(X2) @ X2
        X3 = xp.reshape(self.X, (L, In, Rt))
        step = max(1, _BLOCK_BUDGET // (In * In))
        G = None
        for l0 in range(0, L, step):
            Xl = X3[l0:min(L, l0 + step), ...]
            part = xp.sum(xp.matmul(Xl, xp.matrix_transpose(Xl)), axis=0)
            G = part if G is None else G + part
        return G

    def leading_subspace(self, mode: int, k: int, rng: np.random.Generator) -> Any:
        """Leading ``k`` left singular vectors of ``unfold(X, mode)``, copy-free.

        Small modes (``I_mode <= 3 (k + 10)``): eigenvectors of the Gram matrix
        (cost ``I_mode * prod(I)``). Large modes: randomised range finder
        (Halko, Martinsson & Tropp 2011) with a Khatri-Rao-structured Gaussian
        test matrix (one MTTKRP) and one power iteration, cost
        ``~3 (k + 10) prod(I)``; the unfolding is never formed.
        """
        xp = self.xp
        s = self.shape
        mode = check_index(mode, "mode", len(s))
        In = s[mode]
        k = check_int(k, "k", low=1, high=In, what=f"an integer in [1, {In}] (the size of mode "
                                                     f"{mode})")
        rng = B.check_rng(rng)
        kk = min(In, k + 10)
        if In <= 3 * kk:
            return leading_from_gram(xp, self.mode_gram(mode), k)
        omega = [B.random_normal(xp, (d, kk), rng, dtype=self.dtype, like=self.X) for d in s]
        Y = _mttkrp(xp, self.X, omega, mode)
        with B.linalg_guard("leading subspace (randomised range finder)"):
            Q, _ = xp.linalg.qr(Y)
            Y = self._power_step(mode, Q)
            U, _, _ = xp.linalg.svd(Y, full_matrices=False)
        return U[:, :k]

    def _power_step(self, mode: int, Q: Any) -> Any:
        """``unfold(X) @ (unfold(X)^T @ Q)`` with GEMMs on copy-free views of ``X``."""
        xp = self.xp
        s = self.shape
        In, k = s[mode], int(Q.shape[1])
        L, Rt = math.prod(s[:mode]), math.prod(s[mode + 1:])
        if L == 1:
            X2 = xp.reshape(self.X, (In, Rt))
            return X2 @ xp.matrix_transpose(xp.matrix_transpose(Q) @ X2)
        if Rt == 1:
            X2 = xp.reshape(self.X, (L, In))
            return xp.matrix_transpose(X2) @ (X2 @ Q)
        if Rt <= 8:
            # few trailing entries: contract mode `mode` with Q (x) I_Rt in one GEMM,
            # (Rt times the minimal flops, but BLAS-3 instead of L tiny products)
            X2 = xp.reshape(self.X, (L, In * Rt))
            eye = xp.eye(Rt, dtype=self.dtype, device=B.device(self.X))
            QI = xp.reshape(Q[:, None, :, None] * eye[None, :, None, :], (In * Rt, k * Rt))
            Z = X2 @ QI  # (L, k*Rt): Z[l, (j, t)]
            W = xp.matrix_transpose(X2) @ Z  # (In*Rt, k*Rt)
            W4 = xp.reshape(W, (In, Rt, k, Rt))
            Y = None
            for t in range(Rt):
                part = W4[:, t, :, t]
                Y = part if Y is None else Y + part
            return Y
        X3 = xp.reshape(self.X, (L, In, Rt))
        Z = xp.matmul(xp.matrix_transpose(Q), X3)  # (L, k, Rt)
        step = max(1, _BLOCK_BUDGET // (In * k))
        Y = None
        for l0 in range(0, L, step):
            l1 = min(L, l0 + step)
            part = xp.sum(xp.matmul(X3[l0:l1, ...], xp.matrix_transpose(Z[l0:l1, ...])), axis=0)
            Y = part if Y is None else Y + part
        return Y

    def residual_norm_sq(self, weights: Any, factors: Any) -> float:
        """Exact ``||X - [[weights; factors]]||^2``, reconstructed in row blocks."""
        xp = self.xp
        s = self.shape
        P, In = math.prod(s[:-1]), s[-1]
        R = int(factors[0].shape[1])
        X2 = xp.reshape(self.X, (P, In))
        last_t = xp.matrix_transpose(factors[-1] * weights[None, :])
        # blocks of a few MB: the temporaries stay in cache and are reused by the
        # allocator (tens of MB per block cost a page fault per 4 KB, 6x slower)
        step = max(1, _RESIDUAL_BUDGET // (R + In))
        total = 0.0
        for p0 in range(0, P, step):
            p1 = min(P, p0 + step)
            rows = xp.arange(p0, p1, device=B.device(self.X))
            K = gather_krp_rows(xp, factors[:-1], rows)
            diff = X2[p0:p1, ...] - K @ last_t
            total += B.to_float(xp.sum(diff * diff))
        return total

    def sampled_fibers(self, mode: int, indices: Any) -> Any:
        """Mode-``mode`` fibers at the sampled indices of the other modes.

        ``indices`` is a host ``(n_samples, N-1)`` integer array (the other
        modes in increasing order); returns ``(n_samples, I_mode)``. NumPy
        tensors in C order use the memory-order Numba gather
        (`tensorfact._kernels.dense`), others ``xp.take``.
        """
        s = self.shape
        mode = check_index(mode, "mode", len(s))
        L, In, Rt = math.prod(s[:mode]), s[mode], math.prod(s[mode + 1:])
        idx = _check_indices(indices, tuple(d for m, d in enumerate(s) if m != mode))
        # linear index over the modes before and after ``mode``
        lo = np.zeros(idx.shape[0], dtype=np.int64)
        for j, m in enumerate(range(mode)):
            lo = lo * s[m] + idx[:, j]
        hi = np.zeros(idx.shape[0], dtype=np.int64)
        for j, m in enumerate(range(mode + 1, len(s)), start=mode):
            hi = hi * s[m] + idx[:, j]
        X3 = self.xp.reshape(self.X, (L, In, Rt))
        if B.is_numpy(self.xp) and X3.flags.c_contiguous:
            return gather_dense_fibers_numba(X3, lo, hi)
        return gather_dense_fibers_xp(self.xp, X3, lo, hi)


def _check_indices(indices: Any, dims: tuple[int, ...]) -> np.ndarray:
    """Host sample indices of the other modes, ``(n, len(dims))`` int64, checked in range."""
    idx = np.asarray(B.to_numpy(indices) if B.is_array(indices) else indices)
    if idx.dtype.kind not in "iu":
        raise TypeError(f"indices must be an integer array, got dtype {idx.dtype}")
    if idx.ndim != 2 or idx.shape[1] != len(dims):
        raise ValueError(f"indices must have shape (n_samples, {len(dims)}), got {idx.shape}")
    if idx.shape[0] and (np.any(idx < 0) or np.any(idx >= np.asarray(dims))):
        raise ValueError(f"indices holds an index out of range for the other modes' sizes {dims}")
    return idx.astype(np.int64, copy=False)
