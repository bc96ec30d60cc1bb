"""Tensor times matrix (TTM) chains without unfolding copies.

``multi_mode_dot(X, [M_0, ..., M_k], modes)`` is ``X x_{m_0} M_0 ... x_{m_k} M_k``
(Kolda & Bader 2009, the n-mode product). Each product reads ``X`` through
the copy-free reshape ``(prod(s[:n]), I_n, prod(s[n+1:]))`` of a C-ordered
array and is one (batched) GEMM whose output is again C-ordered with mode
``n`` in place, so no unfolding or moved-axis copy is ever made. The products
are applied in order of decreasing shrinkage (``J_n / I_n`` ascending; ties to the
first or last mode, a single GEMM), so the largest passes run on the smallest
intermediates.

`TuckerTree` serves the Tucker solvers' products with every factor but one
(``X x_{m != n} U_m^T``), keeping the partial product of one half of the
modes between calls like `DimensionTree` does for MTTKRP: an HOOI sweep
costs two passes over ``X`` whatever the number of modes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from .. import _backend as B
from .._validation import check_array, check_int, check_mode, describe

__all__ = ["TuckerTree", "multi_mode_dot"]


def multi_mode_dot(X: Any, matrices: Sequence[Any], /, modes: Sequence[int] | None = None, *,
                   skip: int | None = None, transpose: bool = False) -> Any:
    """Chain of n-mode products ``X x_{modes[0]} matrices[0] x_{modes[1]} ...``.

    ``Y = X x_n M`` replaces mode ``n`` (size ``I_n``) by ``M.shape[0]``:
    ``Y[..., j, ...] = sum_i M[j, i] X[..., i, ...]``. The arguments follow
    TensorLy's ``multi_mode_dot``.

    Parameters
    ----------
    X : array with at least one mode, or a data format
        A dense array of any array API namespace (integers are promoted to
        the default float). An object that is not an array (a
        ``SparseTensor``) is asked for its own
        ``multi_mode_dot(matrices, modes, transpose=...)``: a sparse tensor
        contracts on its nonzeros and returns a dense array.
    matrices : sequence of 2-D arrays
        ``matrices[i]`` has shape ``(J_i, I_{modes[i]})``, or
        ``(I_{modes[i]}, J_i)`` with ``transpose=True``.
    modes : sequence of int, optional
        Distinct modes, one per matrix (negative values count from the end);
        default ``0, 1, ..., len(matrices) - 1``.
    skip : int, optional
        Index into ``matrices`` (and ``modes``) of a product to leave out.
    transpose : bool
        Multiply by the transposes (``X x_n M^T``, the projection onto the
        columns of an orthonormal ``M``).

    Returns
    -------
    array
        Dense, C-ordered, in ``X``'s namespace and floating dtype.

    Raises
    ------
    TypeError
        ``X`` or a matrix is not an array of real numbers; mixed namespaces;
        ``modes`` or ``skip`` not integers.
    ValueError
        A matrix that is not 2-D or whose size does not match its mode,
        ``modes`` of the wrong length, repeated, or out of range, ``skip``
        out of range.

    Notes
    -----
    The cost of a product is that of one GEMM over the current intermediate;
    the workspace is the products' outputs only (a C-ordered ``X`` is never
    copied; other layouts are copied once by the first reshape).

    References
    ----------
    Kolda & Bader, "Tensor decompositions and applications", SIAM Review, 2009.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.arange(24.0).reshape(2, 3, 4)
    >>> U = np.ones((5, 3))
    >>> multi_mode_dot(X, [U], modes=[1]).shape
    (2, 5, 4)
    >>> multi_mode_dot(X, [np.eye(2), U.T], transpose=True).shape
    (2, 5, 4)
    """
    if not B.is_array(X):
        own = getattr(X, "multi_mode_dot", None)
        if own is None:
            raise TypeError(f"X must be an array or a data format with multi_mode_dot, got "
                            f"{type(X).__name__}")
        mats, mds = _check_chain(X.shape, X.ndim, matrices, modes, skip, transpose)
        return own(mats, mds, transpose=transpose)
    check_array(X, "X", min_ndim=1)
    xp = B.namespace(X)
    X = B.as_float_array(X, xp, name="X")
    mats, mds = _check_chain(tuple(int(s) for s in X.shape), X.ndim, matrices, modes, skip,
                             transpose)
    if mats:
        B.namespace(X, *mats, name="X and matrices")
        for i, M in enumerate(mats):
            if M.dtype != X.dtype:
                raise TypeError(f"matrices[{i}] has dtype {M.dtype} but X has {X.dtype}")
    return ttm_chain(xp, X, mats, mds, transpose=transpose)


def _check_chain(shape: tuple[int, ...], ndim: int, matrices: Any, modes: Any, skip: Any,
                 transpose: bool) -> tuple[list[Any], list[int]]:
    """Validated ``(matrices, modes)`` with the skipped product removed."""
    if not isinstance(transpose, bool):
        raise TypeError(f"transpose must be a bool, got {describe(transpose)}")
    if isinstance(matrices, (str, bytes)) or not hasattr(matrices, "__iter__") \
            or B.is_array(matrices):
        raise TypeError(f"matrices must be a sequence of 2-D arrays, got "
                        f"{type(matrices).__name__}")
    mats = list(matrices)
    if modes is None:
        if len(mats) > ndim:
            raise ValueError(f"matrices has {len(mats)} entries but X has only {ndim} modes")
        mds = list(range(len(mats)))
    else:
        if isinstance(modes, (str, bytes)) or not hasattr(modes, "__iter__"):
            raise TypeError(f"modes must be a sequence of integers, got {describe(modes)}")
        mds = [check_mode(m, ndim, name="modes", of="X") for m in modes]
        if len(mds) != len(mats):
            raise ValueError(f"modes has {len(mds)} entries but matrices has {len(mats)}")
        if len(set(mds)) != len(mds):
            raise ValueError(f"modes must be distinct, got {list(modes)}")
    if skip is not None:
        s = check_int(skip, "skip")
        if not 0 <= s < len(mats):
            raise ValueError(f"skip={s} is out of range for {len(mats)} matrices")
        del mats[s], mds[s]
    for i, (M, m) in enumerate(zip(mats, mds)):
        check_array(M, f"matrices[{i}]", ndim=2)
        rows = int(M.shape[0] if transpose else M.shape[1])
        if rows != shape[m]:
            want = f"({shape[m]}, J)" if transpose else f"(J, {shape[m]})"
            raise ValueError(f"matrices[{i}] must have shape {want} for mode {m} of size "
                             f"{shape[m]}, got {tuple(M.shape)}")
    return mats, mds


def mode_dot(xp: ModuleType, Y: Any, M: Any, n: int) -> Any:
    """``Y x_n M`` for ``M`` of shape ``(J, I_n)``: one (batched) GEMM on a copy-free view."""
    s = tuple(int(d) for d in Y.shape)
    L, In, Rt = math.prod(s[:n]), s[n], math.prod(s[n + 1:])
    J = int(M.shape[0])
    if L == 1:
        out = M @ xp.reshape(Y, (In, Rt))
    elif Rt == 1:
        out = xp.reshape(Y, (L, In)) @ xp.matrix_transpose(M)
    else:
        out = xp.matmul(M, xp.reshape(Y, (L, In, Rt)))
    return xp.reshape(out, s[:n] + (J,) + s[n + 1:])


def ttm_chain(xp: ModuleType, X: Any, matrices: Sequence[Any], modes: Sequence[int], *,
              transpose: bool = False) -> Any:
    """`multi_mode_dot` on checked arguments, the most shrinking products first."""
    ops = []
    last = X.ndim - 1
    for M, n in zip(matrices, modes):
        Mt = xp.matrix_transpose(M) if transpose else M
        # ties go to the outer modes: one plain GEMM instead of a batch of small ones
        ops.append((int(Mt.shape[0]) / max(int(Mt.shape[1]), 1), n not in (0, last), n, Mt))
    Y = X
    for *_, n, Mt in sorted(ops, key=lambda t: t[:2]):
        Y = mode_dot(xp, Y, Mt, n)
    return Y


class TuckerTree:
    """``X x_{m != n} U_m^T`` for each mode ``n``, reusing one half's partial product.

    The modes are split into two contiguous halves at the balanced point. For
    a mode of the first half, ``X`` is first contracted with the second half's
    factors; that partial product is kept with references to the factor
    arrays it used and reused, for the next mode of the same half, as long as
    they are the same objects (tensorfact never modifies an array in place).
    The remaining products run on the small partial. An HOOI sweep over the
    modes in order, replacing each factor by a new array, thus reads ``X``
    twice.

    A data format that is not an array (``SparseTensor``) computes each
    product with all factors but one on its nonzeros (its
    ``multi_mode_dot``); nothing is kept.

    Parameters
    ----------
    xp : namespace
    X : dense array or data format with multi_mode_dot
    """

    def __init__(self, xp: ModuleType, X: Any) -> None:
        self.xp = xp
        self.X = X
        self.shape = tuple(int(d) for d in X.shape)
        N = len(self.shape)
        self._dense = B.is_array(X)
        h, best = 1, None
        for k in range(1, N):
            cost = math.prod(self.shape[:k]) + math.prod(self.shape[k:])
            if best is None or cost < best:
                h, best = k, cost
        self._halves = (tuple(range(h)), tuple(range(h, N)))
        self._partial: dict[int, tuple[Any, tuple[Any, ...]]] = {}

    def other_modes(self, factors: Sequence[Any], n: int) -> Any:
        """``X x_{m != n} factors[m]^T`` (``factors[n]`` unused), dense."""
        N = len(self.shape)
        if not self._dense:
            others = [m for m in range(N) if m != n]
            return self.X.multi_mode_dot([factors[m] for m in others], others, transpose=True)
        xp = self.xp
        side = 0 if n in self._halves[0] else 1
        other = self._halves[1 - side]
        used = tuple(factors[m] for m in other)
        hit = self._partial.get(side)
        if hit is None or len(hit[1]) != len(used) or any(a is not b for a, b in zip(hit[1], used)):
            P = ttm_chain(xp, self.X, used, other, transpose=True)
            self._partial = {side: (P, used)}  # only one partial alive at a time
        else:
            P = hit[0]
        own = [m for m in self._halves[side] if m != n]
        return ttm_chain(xp, P, [factors[m] for m in own], own, transpose=True)
