"""Building blocks of the Tucker solvers: argument checks, leading subspaces, exact residual."""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B
from .._validation import ArgumentTypeError, check_choice, check_int, check_mode, describe
from ..formats import DenseTensor, TensorFormat
from ..formats._dense import leading_from_gram
from ..tenalg._ttm import ttm_chain
from ..tensors.tucker import TuckerTensor

__all__ = ["check_init", "check_mode_order", "check_ranks", "dense_residual_sq",
           "leading_left", "random_orthonormal"]

#: Unfoldings up to this many entries are copied and given to an exact SVD; larger
#: ones use the eigenvectors of their Gram matrix (computed without copies).
_SVD_ENTRIES = 1 << 22
#: Oversampling and power iterations of the randomised range finder.
_OVERSAMPLE = 10
_POWER_ITERS = 2
#: Elements of workspace per block of the exact residual.
_RESIDUAL_BUDGET = 1 << 22


def check_ranks(ranks: Any, shape: tuple[int, ...], *, name: str = "ranks") -> tuple[int, ...]:
    """Multilinear ranks: an int (every mode) or one int per mode, ``1 <= R_n <= I_n``.

    Also ``R_n <= prod_{m != n} R_m`` (the mode-``n`` unfolding of a core of
    these ranks has no more independent rows).
    """
    N = len(shape)
    if isinstance(ranks, (str, bytes)) or not (hasattr(ranks, "__iter__")
                                               or isinstance(ranks, (int, np.integer))):
        raise ArgumentTypeError(f"{name} must be an integer or a sequence of {N} integers, "
                                f"got {describe(ranks)}")
    if isinstance(ranks, (int, np.integer)) and not isinstance(ranks, bool):
        seq = [ranks] * N
    else:
        if isinstance(ranks, bool):
            raise ArgumentTypeError(f"{name} must be an integer or a sequence of {N} integers, "
                                    f"got {ranks!r}")
        seq = list(ranks)
        if len(seq) != N:
            raise ValueError(f"{name} must have length {N} (one per mode of X), got {len(seq)}")
    out = tuple(check_int(r, f"{name}[{n}]", low=1, what="a positive integer")
                for n, r in enumerate(seq))
    for n, (r, s) in enumerate(zip(out, shape)):
        if r > s:
            raise ValueError(f"{name}[{n}]={r} exceeds the size {s} of mode {n} of X")
    for n, r in enumerate(out):
        rest = math.prod(out) // r
        if r > rest:
            raise ValueError(f"{name}[{n}]={r} exceeds the product {rest} of the other ranks "
                             f"(no core has more independent mode-{n} fibers)")
    return out


def check_mode_order(order: Any, N: int) -> tuple[int, ...]:
    """A permutation of the modes (negative values count from the end); default ``0..N-1``."""
    if order is None:
        return tuple(range(N))
    if isinstance(order, (str, bytes)) or not hasattr(order, "__iter__"):
        raise ArgumentTypeError(f"mode_order must be a sequence of mode indices, got "
                                f"{describe(order)}")
    modes = tuple(check_mode(m, N, name="mode_order") for m in order)
    if sorted(modes) != list(range(N)):
        raise ValueError(f"mode_order must list every mode of X once, got {list(order)}")
    return modes


def check_init(init: Any, data: TensorFormat, ranks: tuple[int, ...]) -> Any:
    """``init``: ``"hosvd"``, ``"random"`` or a matching `TuckerTensor` (checked)."""
    if not isinstance(init, TuckerTensor):
        if not isinstance(init, str):
            raise ArgumentTypeError(f"init must be 'hosvd', 'random' or a TuckerTensor, got "
                                    f"{type(init).__name__}")
        return check_choice(init, "init", ("hosvd", "random"))
    try:
        B.namespace(data.like, init.core)
    except TypeError as exc:
        raise TypeError(f"init must live with X (one array library and device): {exc}"
                        ) from None
    if init.shape != data.shape:
        raise ValueError(f"init has shape {init.shape} but X has shape {data.shape}")
    if init.ranks != ranks:
        raise ValueError(f"init has ranks {init.ranks} but ranks={ranks} was requested")
    if init.dtype != data.dtype:
        raise TypeError(f"init has dtype {init.dtype} but X has dtype {data.dtype}")
    xp = data.xp
    for n, A in enumerate(init.factors):
        if not bool(xp.all(xp.isfinite(A))):
            raise ValueError(f"init.factors[{n}] contains NaN or Inf")
    return init


def random_orthonormal(xp: ModuleType, rows: int, cols: int, gen: np.random.Generator, *,
                       dtype: Any, like: Any) -> Any:
    """An ``(rows, cols)`` matrix with orthonormal columns (QR of host Gaussian draws)."""
    Q, _ = np.linalg.qr(gen.standard_normal((rows, cols)))
    return B.from_numpy(xp, Q, like=like, dtype=dtype)


def _unfold_matmul(xp: ModuleType, Y: Any, n: int, W: Any) -> Any:
    """``unfold(Y, n) @ W`` for ``W`` of shape ``(prod others, l)``, without unfolding ``Y``."""
    s = tuple(int(d) for d in Y.shape)
    L, In, Rt = math.prod(s[:n]), s[n], math.prod(s[n + 1:])
    Y3 = xp.reshape(Y, (L, In, Rt))
    W3 = xp.reshape(W, (L, Rt, int(W.shape[1])))
    return xp.sum(xp.matmul(Y3, W3), axis=0)


def _unfold_t_matmul(xp: ModuleType, Y: Any, n: int, Q: Any) -> Any:
    """``unfold(Y, n).T @ Q`` as a ``(prod others, l)`` array, without unfolding ``Y``."""
    s = tuple(int(d) for d in Y.shape)
    L, In, Rt = math.prod(s[:n]), s[n], math.prod(s[n + 1:])
    Z = xp.matmul(xp.matrix_transpose(xp.reshape(Y, (L, In, Rt))), Q)  # (L, Rt, l)
    return xp.reshape(Z, (L * Rt, int(Q.shape[1])))


def leading_left(xp: ModuleType, Y: Any, n: int, k: int, svd: str,
                 gen: np.random.Generator) -> Any:
    """Leading ``k`` left singular vectors of ``unfold(Y, n)`` for a dense ``Y``.

    ``svd="exact"``: an SVD of the unfolding when it has fewer columns than
    rows, else the eigenvectors of its ``I_n x I_n`` Gram matrix (from the
    copied unfolding when it has at most ``2^22`` entries, in blocks on
    copy-free views otherwise). ``svd="randomized"``: the range
    finder of Halko, Martinsson & Tropp (2011) with ``k + 10`` Gaussian test
    vectors (drawn on the host) and two power iterations, each followed by a
    QR; exact when the sketch would not be smaller than the unfolding.
    """
    s = tuple(int(d) for d in Y.shape)
    In = s[n]
    K = math.prod(s) // In
    ell = min(k + _OVERSAMPLE, In, K)
    if svd == "randomized" and ell < min(In, K):
        with B.linalg_guard("leading subspace (randomised range finder)"):
            Om = B.random_normal(xp, (K, ell), gen, dtype=Y.dtype, like=Y)
            Q, _ = xp.linalg.qr(_unfold_matmul(xp, Y, n, Om))
            for _ in range(_POWER_ITERS):
                Z, _ = xp.linalg.qr(_unfold_t_matmul(xp, Y, n, Q))
                Q, _ = xp.linalg.qr(_unfold_matmul(xp, Y, n, Z))
            Bt = _unfold_t_matmul(xp, Y, n, Q)  # (K, ell) = (Q^T Y_(n))^T
            _, _, Vh = B.thin_svd(xp, Bt)  # Bt = W s Vh  =>  Q^T Y_(n) = Vh^T s W^T
            return Q @ xp.matrix_transpose(Vh[:k, :])
    if K < In:
        M = xp.reshape(xp.moveaxis(Y, n, 0), (In, K))
        with B.linalg_guard("leading subspace (SVD)"):
            U, _, _ = B.thin_svd(xp, M)
        if int(U.shape[1]) >= k:
            return U[:, :k]
    # the ``In x In`` Gram matrix and its eigenvectors: one GEMM and a small
    # symmetric eigensolver (an SVD of the unfolding in the HOOI loop cost 3.7x
    # the whole rest of a sweep on 300^3, ranks 20, measured)
    if In * K <= _SVD_ENTRIES:
        M = xp.reshape(xp.moveaxis(Y, n, 0), (In, K))
        return leading_from_gram(xp, M @ xp.matrix_transpose(M), k)
    return leading_from_gram(xp, DenseTensor(Y).mode_gram(n), k)


def dense_residual_sq(xp: ModuleType, X: Any, core: Any, factors: list[Any]) -> float:
    """Exact ``||X - core x factors||^2`` in blocks of mode-0 slices (no tensor-sized temporary)."""
    s = tuple(int(d) for d in X.shape)
    step = max(1, _RESIDUAL_BUDGET // max(math.prod(s[1:]), 1))
    rest = list(factors[1:])
    modes = list(range(len(s)))
    total = 0.0
    for i0 in range(0, s[0], step):
        i1 = min(s[0], i0 + step)
        T = ttm_chain(xp, core, [factors[0][i0:i1, :]] + rest, modes)
        D = xp.reshape(X[i0:i1, ...] - T, (-1,))
        total += B.to_float(xp.vecdot(D, D))
    return total

