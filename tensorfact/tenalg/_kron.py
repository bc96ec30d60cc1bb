"""Kronecker products, the Van Loan rearrangement and Kronecker-structured products.

Conventions (shared with `tensorfact.KroneckerTensor`): the N-way
Kronecker product of ``A`` (shape ``a``) and ``B`` (shape ``b``, same number of
modes) has shape ``a * b`` (elementwise) and entries
``(A ⊗ B)[i] = A[j] * B[k]`` with ``i_n = j_n * b_n + k_n`` for every mode
``n`` (Hameed et al., GKPD). For matrices this is `numpy.kron`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from types import ModuleType
from typing import Any

from .. import _backend as B
from .._validation import check_allocation, check_array, describe

__all__ = ["kron", "kron_matmul", "rearrange", "unrearrange", "group_modes", "ungroup_modes"]

Array = Any


# --------------------------------------------------------------------------- #
# kron
# --------------------------------------------------------------------------- #
def _kron2(xp: ModuleType, A: Array, Bm: Array, *, batched: bool = False) -> Array:
    """Two-array N-way Kronecker product (same ndim) by broadcasting, one result copy.

    With ``batched=True`` the leading axis (same length in both) is a batch
    axis: ``out[r] = A[r] ⊗ Bm[r]``.
    """
    a = tuple(int(s) for s in A.shape)
    b = tuple(int(s) for s in Bm.shape)
    lead: tuple[int, ...] = ()
    if batched:
        lead, a, b = a[:1], a[1:], b[1:]
    ea: list[int] = list(lead)
    eb: list[int] = list(lead)
    for n in range(len(a)):
        ea += [a[n], 1]
        eb += [1, b[n]]
    P = xp.reshape(A, tuple(ea)) * xp.reshape(Bm, tuple(eb))
    return xp.reshape(P, lead + tuple(a[n] * b[n] for n in range(len(a))))


def kron(*arrays: Array) -> Array:
    """N-way Kronecker product ``arrays[0] ⊗ arrays[1] ⊗ ... ⊗ arrays[-1]``.

    Entry ``i`` of ``A ⊗ B`` is ``A[j] * B[k]`` with ``i_n = j_n * b_n + k_n``
    for every mode ``n`` (the N-way product of GKPD). Arrays with fewer
    modes are padded with leading size-1 modes, as `numpy.kron` does, so
    for matrices the result equals ``numpy.kron``.

    Parameters
    ----------
    *arrays : arrays of one namespace
        At least one; real or integer dtypes are combined by the namespace's
        type promotion.

    Returns
    -------
    array
        Shape ``prod_s arrays[s].shape`` (elementwise, after padding).

    Raises
    ------
    ValueError
        No arrays given.
    TypeError
        Arrays from different libraries or devices.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.arange(4.0).reshape(2, 2); Bm = np.ones((3, 2))
    >>> bool(np.array_equal(kron(A, Bm), np.kron(A, Bm)))
    True
    >>> kron(np.ones((2, 3, 4)), np.ones((5, 1, 2))).shape
    (10, 3, 8)
    """
    if len(arrays) == 0:
        raise ValueError("arrays is empty: kron needs at least one array")
    for i, A in enumerate(arrays):
        if not hasattr(A, "shape") or not hasattr(A, "dtype"):
            raise TypeError(f"arrays[{i}] must be an array, got {type(A).__name__}")
        check_array(A, f"arrays[{i}]")
    xp = B.namespace(*arrays, name="arrays")
    size = 1
    for n in range(max(A.ndim for A in arrays)):
        for A in arrays:
            size *= int(A.shape[A.ndim - 1 - n]) if n < A.ndim else 1
    check_allocation(size, 8, "the Kronecker product of arrays")
    N = max(A.ndim for A in arrays)
    out = arrays[0]
    if out.ndim < N:
        out = xp.reshape(out, (1,) * (N - out.ndim) + tuple(out.shape))
    for A in arrays[1:]:
        if A.ndim < N:
            A = xp.reshape(A, (1,) * (N - A.ndim) + tuple(A.shape))
        out = _kron2(xp, out, A)
    return out


# --------------------------------------------------------------------------- #
# rearrangement
# --------------------------------------------------------------------------- #
def _as_shape_list(shapes: Any, name: str = "shapes") -> list[Any]:
    """``shapes`` as a list (of what should be shapes), or a ``TypeError`` naming it."""
    if B.is_array(shapes) or isinstance(shapes, (str, bytes)) or not hasattr(shapes, "__iter__"):
        raise TypeError(f"{name} must be a sequence of shapes (sequences of ints), got "
                        f"{describe(shapes)}")
    return list(shapes)


def _check_group_shapes(shape: tuple[int, ...], shapes: Sequence[Sequence[int]],
                        name: str = "shapes", tensor: str = "the tensor"
                        ) -> tuple[tuple[int, ...], ...]:
    """``shapes`` as tuples of positive ints multiplying to ``shape`` (``tensor`` names it)."""
    out = []
    N = len(shape)
    for s, sh in enumerate(_as_shape_list(shapes, name)):
        if isinstance(sh, (str, bytes)) or not hasattr(sh, "__iter__"):
            raise TypeError(f"{name}[{s}] must be a sequence of ints, got {describe(sh)}")
        t = tuple(sh)
        if len(t) != N:
            raise ValueError(
                f"{name}[{s}] = {t} has {len(t)} modes but {tensor} has {N} (shape {shape})"
            )
        for v in t:
            if isinstance(v, bool) or not isinstance(v, int) and not hasattr(v, "__index__"):
                raise TypeError(f"{name}[{s}] must contain integers, got {t!r}")
            if int(v) < 1:
                raise ValueError(f"{name}[{s}] = {t} must contain positive sizes")
        out.append(tuple(int(v) for v in t))
    for n in range(N):
        p = math.prod(sh[n] for sh in out)
        if p != shape[n]:
            raise ValueError(
                f"{name} do not multiply to the tensor shape in mode {n}: "
                f"{' * '.join(str(sh[n]) for sh in out)} = {p} != {shape[n]} (tensor shape {shape})"
            )
    return tuple(out)


def group_modes(W: Array, shapes: Sequence[Sequence[int]], /) -> Array:
    """Reshape ``W`` into the S-way tensor whose rank-1 terms are Kronecker products.

    With ``shapes = (shape_0, ..., shape_{S-1})`` whose elementwise product is
    ``W.shape``, returns the array ``T`` of shape
    ``(prod shape_0, ..., prod shape_{S-1})`` with
    ``T[vec(j_0), ..., vec(j_{S-1})] = W[i]``, ``i_n`` being the mixed-radix
    number with digits ``j_0[n], ..., j_{S-1}[n]``. Then
    ``kron(A_0, ..., A_{S-1})`` maps to the outer product of the C-order
    vectorisations of the ``A_s``. ``S = 2`` is `rearrange`.
    One reshape, one axis permutation and one final reshape (a copy unless
    the permutation is trivial, e.g. for vectors).

    Parameters
    ----------
    W : array
    shapes : sequence of S sequences of W.ndim positive ints

    Returns
    -------
    array of shape (prod shapes[0], ..., prod shapes[S-1])

    Raises
    ------
    ValueError
        A shape with the wrong number of modes, a non-positive size, or
        shapes whose elementwise product is not ``W.shape``.

    Examples
    --------
    >>> import numpy as np
    >>> A, Bm, C = np.ones((2, 1)), np.arange(3.0).reshape(1, 3), np.ones((2, 2))
    >>> group_modes(kron(A, Bm, C), [A.shape, Bm.shape, C.shape]).shape
    (2, 3, 4)
    """
    check_array(W, "W", min_ndim=1)
    xp = B.namespace(W)
    shape = tuple(int(s) for s in W.shape)
    shp = _check_group_shapes(shape, shapes)
    if not shp:
        raise ValueError("shapes must not be empty")
    S, N = len(shp), len(shape)
    split = tuple(shp[s][n] for n in range(N) for s in range(S))
    perm = tuple(n * S + s for s in range(S) for n in range(N))
    T = xp.reshape(W, split)
    if perm != tuple(range(len(perm))):
        T = xp.permute_dims(T, perm)
    return xp.reshape(T, tuple(math.prod(sh) for sh in shp))


def ungroup_modes(T: Array, shapes: Sequence[Sequence[int]], /) -> Array:
    """Inverse of `group_modes`: the tensor of shape ``prod_s shapes[s]``.

    Raises
    ------
    ValueError
        Inconsistent shapes, or ``T`` not of shape ``(prod shapes[0], ...)``.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.arange(24.0).reshape(4, 6)
    >>> shapes = [(2, 3), (2, 2)]
    >>> bool(np.array_equal(ungroup_modes(group_modes(W, shapes), shapes), W))
    True
    """
    check_array(T, "T", min_ndim=1)
    xp = B.namespace(T)
    shapes = _as_shape_list(shapes)
    if not shapes:
        raise ValueError("shapes must not be empty")
    first = shapes[0]
    if isinstance(first, (str, bytes)) or not hasattr(first, "__iter__"):
        raise TypeError(f"shapes[0] must be a sequence of ints, got {describe(first)}")
    N = len(tuple(first))
    ragged = [s for s, sh in enumerate(shapes)
              if not hasattr(sh, "__iter__") or len(tuple(sh)) != N]
    if ragged:
        raise ValueError(f"shapes[{ragged[0]}] = {describe(shapes[ragged[0]])} does not have "
                         f"{N} modes like shapes[0]")
    full = tuple(math.prod(int(tuple(sh)[n]) if _is_int(tuple(sh)[n]) else 0 for sh in shapes)
                 for n in range(N))
    shp = _check_group_shapes(full, shapes)
    S = len(shp)
    want = tuple(math.prod(sh) for sh in shp)
    if tuple(int(s) for s in T.shape) != want:
        raise ValueError(f"T has shape {tuple(T.shape)}, but shapes give {want}")
    grouped = tuple(shp[s][n] for s in range(S) for n in range(N))
    # grouped axis (s, n) sits at s * N + n; the interleaved order wants (n, s)
    perm = tuple(s * N + n for n in range(N) for s in range(S))
    X = xp.reshape(T, grouped)
    if perm != tuple(range(len(perm))):
        X = xp.permute_dims(X, perm)
    return xp.reshape(X, full)


def _is_int(v: Any) -> bool:
    return not isinstance(v, bool) and hasattr(v, "__index__")


def _check_sizes(value: Any, name: str, n_modes: int | None = None) -> tuple[int, ...]:
    """A shape argument: a sequence of positive integers (with ``n_modes`` entries)."""
    if B.is_array(value) and getattr(value, "ndim", 1) != 1:
        raise TypeError(f"{name} must be a sequence of ints, got {describe(value)}")
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a sequence of ints, got {describe(value)}")
    t = tuple(value)
    for v in t:
        if not _is_int(v):
            raise TypeError(f"{name} must contain integers, got {describe(value)}")
        if int(v) < 1:
            raise ValueError(f"{name} must contain positive sizes, got {describe(value)}")
    if n_modes is not None and len(t) != n_modes:
        raise ValueError(f"{name} = {tuple(int(v) for v in t)} has {len(t)} modes but W has "
                         f"{n_modes}")
    return tuple(int(v) for v in t)


def _infer_b_shape(shape: tuple[int, ...], a_shape: Sequence[int],
                   b_shape: Sequence[int] | None) -> tuple[tuple[int, ...], tuple[int, ...]]:
    a = _check_sizes(a_shape, "a_shape")
    if len(a) != len(shape):
        raise ValueError(
            f"a_shape = {a} has {len(a)} modes but W has {len(shape)} (shape {shape})"
        )
    if b_shape is None:
        for n, (i, j) in enumerate(zip(shape, a)):
            if i % j:
                raise ValueError(
                    f"a_shape[{n}] = {j} does not divide W.shape[{n}] = {i} "
                    f"(W shape {shape}, a_shape {a})"
                )
        b = tuple(i // j for i, j in zip(shape, a))
    else:
        b = _check_sizes(b_shape, "b_shape", len(shape))
        for n, (i, j, k) in enumerate(zip(shape, a, b)):
            if j * k != i:
                raise ValueError(f"a_shape and b_shape do not multiply to W's shape in mode {n}: "
                                 f"{j} * {k} != {i} (a_shape {a}, b_shape {b}, W shape {shape})")
    return a, b


def rearrange(W: Array, a_shape: Sequence[int], b_shape: Sequence[int] | None = None, /) -> Array:
    """Van Loan–Pitsianis rearrangement of an N-way array.

    Returns the matrix ``M`` of shape ``(prod a_shape, prod b_shape)`` such that
    ``rearrange(kron(A, B)) = outer(vec(A), vec(B))`` (C-order ``vec``), so
    ``||W - sum_r A_r ⊗ B_r||_F = ||M - sum_r vec(A_r) vec(B_r)^T||_F`` and the
    nearest sum of Kronecker products is a truncated SVD of ``M``.

    Parameters
    ----------
    W : array of shape a_shape * b_shape (elementwise)
    a_shape, b_shape : sequences of ints, one entry per mode of W
        ``b_shape`` defaults to ``W.shape // a_shape``.

    Returns
    -------
    array of shape (prod a_shape, prod b_shape)
        A view when no axis permutation is needed (1-way ``W``), otherwise one
        copy (a reshape, a permutation, a reshape).

    Raises
    ------
    ValueError
        The shapes do not multiply to ``W.shape``, a size is not positive, or
        the number of modes differs.

    References
    ----------
    C. F. Van Loan and N. Pitsianis, "Approximation with Kronecker products",
    in *Linear Algebra for Large Scale and Real-Time Applications*, 1993.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.arange(6.0).reshape(2, 3); Bm = np.arange(4.0).reshape(4, 1)
    >>> M = rearrange(np.kron(A, Bm), (2, 3))
    >>> bool(np.allclose(M, np.outer(A.ravel(), Bm.ravel())))
    True
    """
    check_array(W, "W")
    a, b = _infer_b_shape(tuple(int(s) for s in W.shape), a_shape, b_shape)
    return group_modes(W, (a, b))


def unrearrange(M: Array, a_shape: Sequence[int], b_shape: Sequence[int], /) -> Array:
    """Inverse of `rearrange`: the N-way array of shape ``a_shape * b_shape``.

    Examples
    --------
    >>> import numpy as np
    >>> W = np.arange(24.0).reshape(4, 6)
    >>> bool(np.array_equal(unrearrange(rearrange(W, (2, 3)), (2, 3), (2, 2)), W))
    True
    """
    check_array(M, "M", ndim=2)
    a = _check_sizes(a_shape, "a_shape")
    b = _check_sizes(b_shape, "b_shape")
    if len(a) != len(b):
        raise ValueError(f"a_shape {a} and b_shape {b} must have the same number of modes")
    want = (math.prod(a), math.prod(b))
    if tuple(int(s) for s in M.shape) != want:
        raise ValueError(f"M has shape {tuple(M.shape)} but a_shape {a} and b_shape {b} need "
                         f"{want}")
    return ungroup_modes(M, (a, b))


# --------------------------------------------------------------------------- #
# kron_matmul
# --------------------------------------------------------------------------- #
def _matmul_factors(kt: Any) -> tuple[Array, ...]:
    if hasattr(kt, "to_kronecker"):  # SeKronTensor: its flat form
        kt = kt.to_kronecker()
    facs = getattr(kt, "factors", None)
    if B.is_array(kt):
        raise TypeError("kt must be a KroneckerTensor or a sequence of (R, m_s, n_s) factor "
                        f"arrays, got a single {type(kt).__name__}; wrap the factors in a list")
    if facs is None:
        try:
            facs = tuple(kt)
        except TypeError as exc:
            raise TypeError(
                "kt must be a KroneckerTensor or a sequence of (R, m_s, n_s) factor arrays, "
                f"got {type(kt).__name__}"
            ) from exc
    facs = tuple(facs)
    if len(facs) == 0:
        raise ValueError("kt has no factors")
    R = None
    for s, F in enumerate(facs):
        check_array(F, f"kt factor {s}")
        if F.ndim != 3:
            raise ValueError(
                "kron_matmul needs a 2-way Kronecker operator: kt factor "
                f"{s} must have shape (rank, m_s, n_s), got {getattr(F, 'shape', None)}"
            )
        if R is None:
            R = int(F.shape[0])
        elif int(F.shape[0]) != R:
            raise ValueError(f"kt factor {s} has rank {F.shape[0]}, kt factor 0 has {R}")
    return facs


#: Below this trailing width a middle-mode product is done by transposing the mode
#: last (one GEMM) rather than as a batch of tiny matrix products.
_MIN_SLAB = 16

#: Two-factor first product: batched per row when its output width is at most this.
_MAX_BATCHED_WIDTH = 128


def _plan_order(batch: int, m: Sequence[int], n: Sequence[int]) -> tuple[int, ...]:
    """Order of the mode products that minimises the multiply count.

    Contracting mode ``s`` of a tensor with current size ``P`` costs
    ``P * m_s`` multiplies and changes its size to ``P * m_s / n_s``. All orders
    are tried for up to 6 factors; beyond that, modes are taken by increasing
    ``m_s / n_s`` (shrinking modes first), which is optimal for this cost model.
    """
    S = len(m)
    if S > 6:
        return tuple(sorted(range(S), key=lambda s: m[s] / n[s]))
    best, best_cost = tuple(range(S)), math.inf
    # ties go to the order that starts from the last (contiguous) mode
    for order in itertools.permutations(range(S - 1, -1, -1)):
        P = batch * math.prod(n)
        cost = 0
        for s in order:
            cost += P * m[s]
            P = P // n[s] * m[s]
        if cost < best_cost:
            best, best_cost = order, cost
    return best


def kron_matmul(x: Array, kt: Any, /, *, transpose: bool = False) -> Array:
    """Multiply row vectors by a 2-way Kronecker operator without forming it.

    With ``W = kt.to_dense()`` of shape ``(m, n)`` (``m = prod_s m_s``,
    ``n = prod_s n_s``, ``W = sum_r A_r^(0) ⊗ ... ⊗ A_r^(S-1)``), returns
    ``x @ W.T`` for ``x`` of shape ``(..., n)`` (``W`` applied to each row, the
    ``torch.nn.Linear`` convention), or ``x @ W`` for ``x`` of shape ``(..., m)``
    when ``transpose=True``.

    The rows are reshaped to ``(batch, n_0, ..., n_{S-1})`` tensors and
    multiplied by one factor per mode (mode products, as batched ``matmul``
    calls), in the order that minimises the multiply count
    (``sum_s P_s * m_s`` for the current size ``P_s``); the rank is a batch
    dimension and is summed at the end. For two square factors of size
    ``sqrt(n)`` this costs ``2 R batch n^1.5`` multiplies against
    ``batch n^2`` for the dense product. Only standard array-API operations
    are used (``reshape``, ``matmul``, ``sum``; no in-place writes), so torch
    autograd flows through it.

    Parameters
    ----------
    x : array of shape (..., n) ((..., m) with transpose=True)
    kt : KroneckerTensor, SeKronTensor or sequence of arrays
        A 2-way `KroneckerTensor` (a
        `SeKronTensor` is used through its flat form), or
        directly the factors, ``S`` arrays of shapes ``(R, m_s, n_s)``
        (convenient for layers that hold the factors as parameters).
    transpose : bool, default False
        Multiply by ``W`` instead of ``W.T``.

    Returns
    -------
    array of shape (..., m) ((..., n) with transpose=True)

    Raises
    ------
    ValueError
        ``kt`` is not 2-way, factors of different ranks, or ``x``'s last
        dimension does not match.
    TypeError
        ``x`` and the factors come from different libraries or devices.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> A, Bm = rng.standard_normal((1, 3, 4)), rng.standard_normal((1, 5, 2))
    >>> x = rng.standard_normal((7, 8))
    >>> bool(np.allclose(kron_matmul(x, [A, Bm]), x @ np.kron(A[0], Bm[0]).T))
    True
    """
    facs = _matmul_factors(kt)
    check_array(x, "x")
    xp = B.namespace(x, *facs, name="x and kt")
    if transpose:
        facs = tuple(xp.permute_dims(F, (0, 2, 1)) for F in facs)
    return _kron_matmul(xp, x, facs)


def _kron_matmul(xp: ModuleType, x: Array, facs: Sequence[Array]) -> Array:
    """``x @ W.T`` for ``W = sum_r kron_s facs[s][r]``; no validation of namespaces."""
    R = int(facs[0].shape[0])
    m = [int(F.shape[1]) for F in facs]
    n = [int(F.shape[2]) for F in facs]
    ncol = math.prod(n)
    if x.ndim < 1 or int(x.shape[-1]) != ncol:
        raise ValueError(
            f"x has shape {tuple(x.shape)}; its last dimension must be {ncol} "
            f"(= {' * '.join(map(str, n))})"
        )
    lead = tuple(int(s) for s in x.shape[:-1])
    batch = math.prod(lead)
    if batch == 0:
        return xp.zeros(lead + (math.prod(m),), dtype=x.dtype, device=B.device(x))
    order = _plan_order(batch, m, n)
    if len(facs) == 2:
        out = _kron_matmul_2(xp, xp.reshape(x, (batch, n[0], n[1])), facs, order)
        return xp.reshape(out, lead + (math.prod(m),))
    cur = list(n)
    # T has shape (R', batch, cur_0, ..., cur_{S-1}) with R' in {1, R}
    T = xp.reshape(x, (1, batch) + tuple(cur))
    rr = 1
    for s in order:
        F = facs[s]
        left = batch * math.prod(cur[:s])
        right = math.prod(cur[s + 1:])
        if right == 1:
            # mode s is last: one (batched over r) GEMM  (R', left, n_s) @ (R, n_s, m_s)
            T3 = xp.reshape(T, (rr, left, n[s]))
            Y = xp.matmul(T3, xp.permute_dims(F, (0, 2, 1)))
        elif left == 1:
            # mode s is first: (R, m_s, n_s) @ (R', n_s, right)
            T3 = xp.reshape(T, (rr, n[s], right))
            Y = xp.matmul(F, T3)
        elif right >= _MIN_SLAB:
            # slabs wide enough for BLAS: batched  (R, 1, m_s, n_s) @ (R', left, n_s, right)
            T4 = xp.reshape(T, (rr, left, n[s], right))
            Y = xp.matmul(F[:, None, :, :], T4)
        else:
            # many narrow slabs: move mode s last, one GEMM, move it back
            T4 = xp.reshape(T, (rr, left, n[s], right))
            T4 = xp.permute_dims(T4, (0, 1, 3, 2))
            T3 = xp.reshape(T4, (rr, left * right, n[s]))
            Y = xp.matmul(T3, xp.permute_dims(F, (0, 2, 1)))
            Y = xp.reshape(Y, (R, left, right, m[s]))
            Y = xp.permute_dims(Y, (0, 1, 3, 2))
        rr = R
        cur[s] = m[s]
        T = xp.reshape(Y, (R, batch) + tuple(cur))
    out = xp.reshape(T, (R, batch, math.prod(m)))
    out = out[0, ...] if R == 1 else xp.sum(out, axis=0)
    return xp.reshape(out, lead + (math.prod(m),))


def _kron_matmul_2(xp: ModuleType, X: Array, facs: Sequence[Array],
                   order: tuple[int, ...]) -> Array:
    """Two factors: the rank axis rides next to a mode and is summed inside the 2nd GEMM.

    ``X`` has shape ``(batch, n0, n1)``; returns ``(batch, m0 * m1)``. Two
    matrix products in all, whatever the rank: the first against the factor
    stacked over the rank (``R m`` outputs), the second contracting the mode
    and the rank jointly, so no rank-sized sum or extra pass over memory.
    """
    F0, F1 = facs
    R, m0, n0 = (int(d) for d in F0.shape)
    _, m1, n1 = (int(d) for d in F1.shape)
    batch = int(X.shape[0])
    if order[0] == 1:
        # T[b, j, r, k] = sum_l X[b, j, l] F1[r, k, l]
        B_cat = xp.reshape(xp.permute_dims(F1, (2, 0, 1)), (n1 * R * m1,))  # C-order copy
        B_cat = xp.reshape(B_cat, (n1, R * m1))  # contiguous operand, not a transposed view
        if R * m1 <= _MAX_BATCHED_WIDTH:
            # narrow output: one (n0 x n1) @ (n1 x R m1) product per row rather than
            # one tall GEMM with few columns (docs/kronecker.md, "Products without forming W")
            T = xp.matmul(X, B_cat)
        else:
            T = xp.reshape(X, (batch * n0, n1)) @ B_cat
        T = xp.reshape(T, (batch, n0 * R, m1))
        # Y[b, i, k] = sum_{j, r} F0[r, i, j] T[b, j, r, k]
        A_cat = xp.reshape(xp.permute_dims(F0, (1, 2, 0)), (m0, n0 * R))
        Y = xp.matmul(A_cat, T)
    else:
        # T[b, i, r, l] = sum_j F0[r, i, j] X[b, j, l]
        A_cat = xp.reshape(xp.permute_dims(F0, (1, 0, 2)), (m0 * R, n0))
        T = xp.matmul(A_cat, X)
        # Y[b, i, k] = sum_{r, l} T[b, i, r, l] F1[r, k, l]
        B_cat = xp.reshape(xp.permute_dims(F1, (0, 2, 1)), (R * n1 * m1,))  # C-order copy
        B_cat = xp.reshape(B_cat, (R * n1, m1))
        if m1 <= _MAX_BATCHED_WIDTH:
            Y = xp.matmul(xp.reshape(T, (batch, m0, R * n1)), B_cat)
        else:
            Y = xp.reshape(T, (batch * m0, R * n1)) @ B_cat
    return xp.reshape(Y, (batch, m0 * m1))
