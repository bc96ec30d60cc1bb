"""Matricised-tensor times Khatri-Rao product (MTTKRP) for dense tensors.

``mttkrp(X, factors, n) = unfold(X, n) @ khatri_rao(factors, skip=n)``, computed
without unfolding (copying) ``X`` and without forming the Khatri-Rao product of
all the other modes.

Single mode ("two-step", Phan, Tichavský & Cichocki 2013; Hayashi et al. 2017):
the modes on one side of ``n`` form a contiguous block of the C-ordered
tensor, so ``X`` reshapes copy-free into a matrix whose columns are that block.
One GEMM contracts the block with its (partial) Khatri-Rao product; the
remaining modes are contracted from the much smaller intermediate by batched
products. The block is chosen to minimise the workspace (partial Khatri-Rao
product plus intermediate).

All modes (`mttkrp_sweep`, dimension tree, Kaya & Uçar 2018): the modes are
split into two contiguous halves; one GEMM pass over ``X`` contracts the right
half and serves every mode of the left half, a second pass contracts the
(updated) left half and serves the right half. A full CP-ALS sweep thus reads
the tensor twice whatever its order.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

from .. import _backend as B
from .._validation import check_array, check_index
from ._khatri_rao import _check_factors, _khatri_rao

__all__ = ["DimensionTree", "mttkrp", "mttkrp_sweep"]


def _check_mttkrp_args(X: Any, factors: Sequence[Any], mode: Any) -> int:
    check_array(X, "X")
    _check_factors(factors)
    B.namespace(X, *factors, name="X and factors")
    if len(factors) != X.ndim:
        raise ValueError(
            f"factors has {len(factors)} matrices but X has {X.ndim} modes"
        )
    for m, A in enumerate(factors):
        if int(A.shape[0]) != int(X.shape[m]):
            raise ValueError(
                f"factors[{m}] has {A.shape[0]} rows but mode {m} of X has size {X.shape[m]}"
            )
    return check_index(mode, "mode", X.ndim)


def mttkrp(X: Any, factors: Sequence[Any], /, mode: int) -> Any:
    """Matricised tensor times Khatri-Rao product for one mode.

    Parameters
    ----------
    X : array of shape (I_0, ..., I_{N-1}), or a data format
        Any object implementing the data-format protocol of
        `tensorfact.formats` (``SparseTensor``, ...) is dispatched to its
        own ``mttkrp(factors, mode)``.
    factors : sequence of N arrays of shape (I_m, R)
        ``factors[mode]`` is ignored (only its shape is checked).
    mode : int

    Returns
    -------
    (I_mode, R) array equal to unfold(X, mode) @ khatri_rao(factors, skip=mode).

    Notes
    -----
    Cost: one GEMM pass over ``X`` (``2 R prod(I)`` flops) plus batched
    products on an intermediate at most ``R * prod(I) / I_k`` large; no copy of
    ``X`` is made.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((4, 5, 6))
    >>> F = [rng.standard_normal((s, 3)) for s in X.shape]
    >>> from tensorfact.tenalg import unfold, khatri_rao
    >>> bool(np.allclose(mttkrp(X, F, 1), unfold(X, 1) @ khatri_rao(F, skip=1)))
    True
    """
    if not B.is_array(X) and hasattr(X, "mttkrp"):
        # a data format (SparseTensor, DaskSparseTensor, ...): its own MTTKRP
        return X.mttkrp(factors, mode)
    n = _check_mttkrp_args(X, factors, mode)
    xp = B.namespace(X, *factors, name="X and factors")
    X = B.as_float_array(X, xp, name="X")
    facs = [B.as_float_array(A, xp, name=f"factors[{m}]") for m, A in enumerate(factors)]
    # one dtype for the products (NumPy promotes by itself, torch refuses mixed GEMMs)
    dt = xp.result_type(X.dtype, *(A.dtype for A in facs))
    X = X if X.dtype == dt else xp.astype(X, dt)
    facs = [A if A.dtype == dt else xp.astype(A, dt) for A in facs]
    return _mttkrp(xp, X, facs, n)


def _plan_single(shape: tuple[int, ...], n: int, R: int) -> tuple[str, int]:
    """Choose the contiguous block contracted by the first GEMM for mode ``n``."""
    N = len(shape)
    best: tuple[int, str, int] | None = None
    for s in range(n + 1, N):  # suffix s..N-1
        krp = math.prod(shape[s:]) * R if N - s > 1 else 0
        inter = math.prod(shape[:s]) * R
        cand = (krp + inter, "suffix", s)
        if best is None or cand[0] < best[0]:
            best = cand
    for s in range(1, n + 1):  # prefix 0..s-1
        krp = math.prod(shape[:s]) * R if s > 1 else 0
        inter = math.prod(shape[s:]) * R
        cand = (krp + inter, "prefix", s)
        if best is None or cand[0] < best[0]:
            best = cand
    if best is None:  # pragma: no cover - N == 1 is rejected earlier
        raise ValueError("mttkrp needs at least two modes")
    return best[1], best[2]


def _gemm_block(xp: ModuleType, X: Any, factors: Sequence[Any], side: str, s: int) -> Any:
    """Contract a contiguous block of modes of a plain tensor with its KRP.

    Returns the intermediate in "R-first" layout: shape ``(R,) + remaining
    dims``.
    """
    shape = tuple(int(d) for d in X.shape)
    N = len(shape)
    R = int(factors[0].shape[1])
    X2 = xp.reshape(X, (math.prod(shape[:s]), math.prod(shape[s:])))
    if side == "suffix":
        block = list(range(s, N))
        K = factors[s] if len(block) == 1 else _khatri_rao(xp, [factors[m] for m in block])
        # X2 @ K rather than K^T @ X2^T: OpenBLAS's kernel for the latter degrades
        # badly (10x) when cores are contended; the transposed copy is only
        # prod(shape[:s]) * R entries
        T = X2 @ K
        return xp.reshape(xp.matrix_transpose(T), (R,) + shape[:s])
    block = list(range(s))
    K = factors[0] if len(block) == 1 else _khatri_rao(xp, [factors[m] for m in block])
    p_block, p_rest = int(X2.shape[0]), int(X2.shape[1])
    if p_rest >= 8 * p_block:
        # wide X2 (e.g. 300 x 90000): K^T @ X2 streams X2 once, result already R-first
        T = xp.matrix_transpose(K) @ X2
        return xp.reshape(T, (R,) + shape[s:])
    # square-ish X2 (e.g. 3600 x 3600): OpenBLAS is 2-4x faster on X2^T @ K
    T = xp.matrix_transpose(X2) @ K
    return xp.reshape(xp.matrix_transpose(T), (R,) + shape[s:])


def _contract_modes(xp: ModuleType, T: Any, modes: list[int], contract: Sequence[int],
                    factors: Sequence[Any]) -> tuple[Any, list[int]]:
    """Contract the listed modes of an R-first intermediate ``T``.

    ``T[r, ..., i_m, ...]`` is multiplied by ``factors[m][i_m, r]`` and summed
    over ``i_m`` with a broadcast (batched) matmul; largest mode first, so
    every step shrinks the workspace the most.
    """
    modes = list(modes)
    R = int(T.shape[0])
    order = sorted(contract, key=lambda m: -int(T.shape[1 + modes.index(m)]))
    for m in order:
        p = modes.index(m)
        dims = tuple(int(d) for d in T.shape[1:])
        a, i, b = math.prod(dims[:p]), dims[p], math.prod(dims[p + 1:])
        At = xp.matrix_transpose(factors[m])
        # one batched GEMV per component where the layout allows it (few, large calls)
        if b == 1:
            T = xp.matmul(xp.reshape(T, (R, a, i)), xp.reshape(At, (R, i, 1)))
        elif a == 1:
            T = xp.matmul(xp.reshape(At, (R, 1, i)), xp.reshape(T, (R, i, b)))
        else:
            T = xp.matmul(xp.reshape(At, (R, 1, 1, i)), xp.reshape(T, (R, a, i, b)))
        modes.pop(p)
        T = xp.reshape(T, (R,) + dims[:p] + dims[p + 1:])
    return T, modes


def _mttkrp(xp: ModuleType, X: Any, factors: Sequence[Any], n: int) -> Any:
    N = X.ndim
    if N == 2:
        return X @ factors[1] if n == 0 else xp.matrix_transpose(X) @ factors[0]
    side, s = _plan_single(tuple(int(d) for d in X.shape), n, int(factors[0].shape[1]))
    T = _gemm_block(xp, X, factors, side, s)
    modes = list(range(s)) if side == "suffix" else list(range(s, N))
    T, modes = _contract_modes(xp, T, modes, [m for m in modes if m != n], factors)
    return xp.matrix_transpose(T)


def _best_split(dims: Sequence[int]) -> int:
    best_h, best_cost = 1, None
    for h in range(1, len(dims)):
        cost = math.prod(dims[:h]) + math.prod(dims[h:])
        if best_cost is None or cost < best_cost:
            best_h, best_cost = h, cost
    return best_h


class DimensionTree:
    """Per-mode dense MTTKRP that keeps the dimension-tree partial contractions.

    ``tree.mttkrp(factors, n)`` equals ``mttkrp(X, factors, n)``. The modes
    are split recursively into two contiguous halves (Kaya & Uçar 2018); the
    intermediate serving one half (``X`` contracted with the other half's
    factors) is kept, together with references to the factors it was
    computed from, and reused for the next mode of the same half as long as
    those factor arrays are the same objects. Calling the modes in the order
    ``0, 1, ..., N-1`` with each mode's factor replaced by a new array after
    its MTTKRP (an ALS sweep) thus costs two GEMM passes over ``X`` whatever
    the number of modes; any other calling pattern gives the same values (a
    stale intermediate is never used: the factors are compared by identity,
    and arrays are never modified in place by tensorfact).

    Only the intermediates on the path to the last mode served are kept, so
    the memory is that of the recursive sweep.

    Parameters
    ----------
    xp : namespace
    X : dense array with at least two modes
    """

    def __init__(self, xp: ModuleType | None, X: Any) -> None:
        check_array(X, "X", min_ndim=2)
        if xp is None:
            xp = B.namespace(X)
        elif not isinstance(xp, ModuleType) or not hasattr(xp, "matmul"):
            raise TypeError(f"xp must be X's array namespace (or None), got {type(xp).__name__}")
        self.xp = xp
        self.X = X
        self.shape = tuple(int(d) for d in X.shape)
        # node (tuple of modes) -> (intermediate, {mode: factor it was contracted with})
        self._cache: dict[tuple[int, ...], tuple[Any, dict[int, Any]]] = {}
        self._paths = [self._path(n) for n in range(len(self.shape))]

    def _split(self, modes: tuple[int, ...]) -> int:
        return _best_split([self.shape[m] for m in modes])

    def _path(self, n: int) -> list[tuple[tuple[int, ...], tuple[int, ...], str]]:
        """Nodes from the root's child containing ``n`` to the leaf ``(n,)``.

        Each entry is ``(node, sibling, side)`` where ``side`` says whether
        ``node`` is the left (prefix) or right (suffix) half of its parent.
        """
        path = []
        modes = tuple(range(len(self.shape)))
        while len(modes) > 1:
            h = self._split(modes)
            left, right = modes[:h], modes[h:]
            if n in left:
                path.append((left, right, "left"))
                modes = left
            else:
                path.append((right, left, "right"))
                modes = right
        return path

    def mttkrp(self, factors: Sequence[Any], n: int) -> Any:
        """``unfold(X, n) @ khatri_rao(factors, skip=n)`` (``factors[n]`` unused)."""
        return self.mttkrp_unchecked(factors, _check_mttkrp_args(self.X, factors, n))

    def mttkrp_unchecked(self, factors: Sequence[Any], n: int) -> Any:
        """`mttkrp` without argument checks (solvers' hot path: valid factors, mode)."""
        xp = self.xp
        X = self.X
        if X.ndim == 2:
            return X @ factors[1] if n == 0 else xp.matrix_transpose(X) @ factors[0]
        path = self._paths[n]
        # free the intermediates off this path first, as the recursive sweep does:
        # the memory stays that of one branch and the allocator reuses it
        on_path = {node for node, _, _ in path}
        self._cache = {k: v for k, v in self._cache.items() if k in on_path}
        keep: dict[tuple[int, ...], tuple[Any, dict[int, Any]]] = {}
        T: Any = None
        parent: tuple[int, ...] = tuple(range(X.ndim))
        for depth, (node, sibling, side) in enumerate(path):
            cached = self._cache.get(node)
            used = {m: factors[m] for m in range(X.ndim) if m not in node}
            if cached is not None and all(cached[1][m] is used[m] for m in used):
                T = cached[0]
            else:
                cached = self._cache.pop(node, None)  # stale: free it before recomputing
                cached = None
                if depth == 0:
                    # one GEMM pass over X contracts the sibling half
                    T = _gemm_block(xp, X, factors, "suffix" if side == "left" else "prefix",
                                    len(node) if side == "left" else len(sibling))
                else:
                    T, _ = _contract_modes(xp, T, list(parent), list(sibling), factors)
            keep[node] = (T, used)
            parent = node
        self._cache = keep  # drop the intermediates off this path (memory of the sweep)
        R = int(factors[n].shape[1])
        return xp.matrix_transpose(xp.reshape(T, (R, self.shape[n])))


def mttkrp_sweep(X: Any, factors: Sequence[Any], update: Callable[[int, Any], Any], /
                 ) -> list[Any]:
    """Run one ALS-style sweep over all modes with a dimension tree.

    For ``n = 0, 1, ..., N-1`` in order, computes ``M_n = mttkrp(X, F, n)``
    with the *current* factors ``F`` (those already updated in this sweep
    included) and calls ``update(n, M_n)``, which returns the new factor for
    mode ``n``. Two GEMM passes over ``X`` per sweep, whatever the number of
    modes (`DimensionTree`).

    Parameters
    ----------
    X : array of shape (I_0, ..., I_{N-1})
    factors : sequence of N arrays (I_m, R); not modified
    update : callable (mode, M) -> new factor

    Returns
    -------
    list of N arrays
        The factors after the sweep (``update``'s return values).
    """
    if not B.is_array(X):
        raise TypeError(f"X must be a dense array, got {type(X).__name__}")
    _check_mttkrp_args(X, factors, 0)
    if not callable(update):
        raise TypeError(f"update must be a callable (mode, M) -> new factor, got "
                        f"{type(update).__name__}")
    xp = B.namespace(X, *factors, name="X and factors")
    tree = DimensionTree(xp, X)
    new = list(factors)
    for n in range(X.ndim):
        A = update(n, tree.mttkrp(new, n))
        want = tuple(new[n].shape)
        if not B.is_array(A):
            raise TypeError(f"update must return the new factor of mode {n}, an array of shape "
                            f"{want}, got {type(A).__name__}")
        if tuple(A.shape) != want:
            raise ValueError(f"update must return the new factor of mode {n}, an array of shape "
                             f"{want}, got shape {tuple(A.shape)}")
        new[n] = A
    return new
