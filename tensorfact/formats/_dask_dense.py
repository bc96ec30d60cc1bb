"""Chunked dense tensors (``dask.array.Array``) as a data format.

The tensor stays in its chunks: on disk (zarr, a memory-mapped ``.npy``,
HDF5) or on the workers of a cluster. The factor matrices are small and stay
in the driver, in the chunks' namespace (NumPy, or CuPy for CuPy chunks).
Every protocol call builds one graph, a map over the chunks followed by a
tree reduction (``split_every``), and runs it with one `dask.compute`
on whatever scheduler is active: local threads by default, a
``distributed.Client`` when one is current. tensorfact never creates a client.

Passes over the store (every chunk read once per pass):

=========================  ================================================
``check_finite``,          one pass for both (the sum of squares screens
``norm_sq``                for NaN/Inf), then cached
``mttkrp``                 one pass per call, so ``N`` per ALS sweep; with
                           a ``memory_budget`` that holds a half's
                           dimension-tree intermediate, one pass per half
                           and sweep (two per sweep)
``mode_gram``              one pass, over mode-``n`` columns of chunks
``leading_subspace``       Gram eigenvectors (one pass) for small modes;
                           range finder otherwise: two passes, or three
                           when the chunks split the mode
``residual_norm_sq``       one pass (exact blockwise reconstruction)
``sampled_fibers``         only the chunks holding a sampled fiber
=========================  ================================================
"""

from __future__ import annotations

import math
import os
import warnings
from functools import partial
from types import ModuleType
from typing import Any

import dask
import dask.array as da
import numpy as np

from .. import _backend as B
from .._validation import check_nonneg_float, check_positive_int
from ..tenalg._mttkrp import _best_split, _contract_modes, _gemm_block, _mttkrp
from ._dense import _BLOCK_BUDGET, DenseTensor, leading_from_gram

__all__ = ["DaskDenseTensor"]


class DaskDenseTensor:
    """A chunked ``dask.array.Array`` seen through the data-format protocol.

    The MTTKRP of mode ``n`` is computed chunk by chunk: every chunk gives
    the exact dense MTTKRP of its block against the row blocks of the other
    factors (`tensorfact.tenalg.mttkrp`'s two-step kernel), the
    contributions of the chunks that share a mode-``n`` slab are summed by a
    tree reduction, and the slabs are concatenated. Each call reads every
    chunk once, so an ALS sweep reads the store ``N`` times. With a
    ``memory_budget`` the dimension tree of Kaya & Uçar (2018) is used
    across the chunks: the modes are split into two halves, and the
    intermediate serving a half (the tensor contracted with the other half's
    factors, ``R * prod(half's dims)`` entries) is computed in one pass and
    kept in the driver while the other half's factors are unchanged; an ALS
    sweep then reads the store twice when both intermediates fit.

    The intermediate of a half is summed over the chunks along the other
    half, which moves ``R / prod(c_m)`` times the tensor's size through
    memory for chunks of ``c_m`` along the other half's modes: chunks long
    along the leading modes suit the tree (with the last mode whole, a chunk
    of a C-ordered file is also a set of contiguous runs).

    The other members: norm and NaN screen in one pass (cached); the mode
    Gram over mode-``n`` columns of chunks (rechunked so that a task holds
    about one original chunk); the range finder's power step in one pass
    when the chunks span the mode, else in two through ``unfold(X)^T Q``
    kept in the driver; the exact
    residual by blockwise reconstruction; sampled fibers read from the
    chunks the samples hit, grouped by chunk. The array is assumed not to
    change while it is in use (results are cached). An array made by
    `dask.array.from_array` of an in-memory NumPy array carries that
    array in every graph: on a cluster, persist it or read it from a store
    (`from_npy`, zarr, HDF5).

    Parameters
    ----------
    X : dask.array.Array
        At least two modes, known chunk sizes, NumPy or CuPy chunks.
        Integer and boolean data are promoted (lazily) to the default float,
        float16 to float32; complex data is rejected.
    memory_budget : int
        Bytes of driver memory the MTTKRP may keep between modes for a
        dimension-tree intermediate (assembling one briefly takes up to twice
        that). ``0`` (default): no intermediate, one pass per MTTKRP.
    split_every : int, optional
        Fan-in of the tree reductions (dask's default when ``None``).
    name : str
        The argument's name in error messages.

    Raises
    ------
    TypeError
        ``X`` is not a dask array, has complex dtype or chunks of an
        unsupported library.
    ValueError
        Fewer than two modes, an empty mode, unknown chunk sizes, bad
        ``memory_budget`` or ``split_every``.

    References
    ----------
    Kaya & Uçar, "Parallel CANDECOMP/PARAFAC decomposition of sparse tensors
    using dimension trees", SIAM J. Sci. Comput., 2018.

    Examples
    --------
    >>> import dask.array as da
    >>> import numpy as np
    >>> X = da.from_array(np.arange(24.0).reshape(2, 3, 4), chunks=(1, 2, 3))
    >>> data = DaskDenseTensor(X)
    >>> data.shape, data.norm_sq()
    ((2, 3, 4), 4324.0)
    >>> F = [np.ones((s, 2)) for s in data.shape]
    >>> data.mttkrp(F, 1)[:, 0]
    array([ 60.,  92., 124.])
    """

    def __init__(self, X: Any, /, *, memory_budget: float = 0, split_every: int | None = None,
                 name: str = "X") -> None:
        if not B.is_dask_array(X):
            raise TypeError(f"{name} must be a dask array, got {type(X).__name__}")
        try:
            xp = B.namespace(X._meta)
        except TypeError as exc:
            raise TypeError(
                f"{name} has chunks of type {type(X._meta).__name__}; DaskDenseTensor needs "
                "NumPy or CuPy chunks"
            ) from exc
        if X.ndim < 2:
            raise ValueError(f"{name} must have at least 2 modes, got shape {tuple(X.shape)}")
        if any(math.isnan(s) for s in X.shape):
            raise ValueError(f"{name} has unknown chunk sizes; call {name}.compute_chunk_sizes() "
                             "first")
        if any(int(s) == 0 for s in X.shape):
            raise ValueError(f"{name} has an empty mode: shape {tuple(X.shape)}")
        self.X = _as_float(X, xp, name)
        self.xp: ModuleType = xp
        self.shape = tuple(int(s) for s in X.shape)
        self.dtype = self.X.dtype
        self.like = self.X._meta
        self.chunks: tuple[tuple[int, ...], ...] = tuple(
            tuple(int(c) for c in cs) for cs in self.X.chunks)
        self.memory_budget = int(check_nonneg_float(memory_budget, "memory_budget"))
        if split_every is not None:
            split_every = check_positive_int(split_every, "split_every")
            if split_every < 2:
                raise ValueError(f"split_every must be at least 2, got {split_every}")
        self.split_every = split_every
        self._norm_finite: tuple[float, bool] | None = None
        # (modes of a dimension-tree half, its intermediate, the factors it was built from)
        self._partial_cache: tuple[tuple[int, ...], Any, dict[int, Any]] | None = None
        self._delayed_chunks: Any = None

    @classmethod
    def from_npy(cls, path: str | os.PathLike[str], /, *, chunks: Any = "auto",
                 memory_budget: float = 0, split_every: int | None = None) -> DaskDenseTensor:
        """A ``.npy`` file read chunk by chunk through a memory map.

        The graph holds the file's path, not its data: each task maps the
        file and copies its chunk, so the array works on a cluster whose
        workers see the same path, and nothing is read before a protocol
        call. The file is read with ``allow_pickle=False``.

        Parameters
        ----------
        path : str or os.PathLike
            A ``.npy`` file of a real numeric dtype.
        chunks : dask chunk specification
            As for `dask.array.from_array` (``"auto"``: dask's default
            chunk size).
        memory_budget, split_every : see DaskDenseTensor

        Returns
        -------
        DaskDenseTensor

        Examples
        --------
        >>> import os, tempfile
        >>> import numpy as np
        >>> path = os.path.join(tempfile.mkdtemp(), "x.npy")
        >>> np.save(path, np.ones((4, 5, 6)))
        >>> data = DaskDenseTensor.from_npy(path, chunks=(2, 5, 3))
        >>> data.X.numblocks, data.norm_sq()
        ((2, 1, 2), 120.0)
        """
        source = _NpyFile(path)
        X = da.from_array(source, chunks=chunks, lock=False, asarray=False,
                          meta=np.empty((0,) * len(source.shape), dtype=source.dtype))
        return cls(X, memory_budget=memory_budget, split_every=split_every, name="path")

    def __repr__(self) -> str:
        return (f"DaskDenseTensor(shape={self.shape}, dtype={self.dtype}, "
                f"numblocks={self.X.numblocks})")

    # ------------------------------------------------------------------ #
    # norm and NaN screen: one pass
    # ------------------------------------------------------------------ #
    def _norm_and_finite(self) -> tuple[float, bool]:
        if self._norm_finite is None:
            totals = self._per_chunk(_chunk_norm_finite, width=2)
            (totals,) = dask.compute(totals)
            totals = B.to_numpy(totals)
            self._norm_finite = (float(totals[0]), float(totals[1]) == 0.0)
        return self._norm_finite

    def check_finite(self, name: str = "X") -> None:
        """Raise ``ValueError`` naming ``name`` if ``X`` holds NaN or Inf (one pass)."""
        if not self._norm_and_finite()[1]:
            raise ValueError(
                f"{name} contains NaN or Inf values; clean the data or pass check_finite=False"
            )

    def norm_sq(self) -> float:
        """``||X||_F^2`` (the pass is shared with `check_finite`)."""
        return self._norm_and_finite()[0]

    def max_abs(self) -> float:
        """``max |X|`` (one pass)."""
        (m,) = dask.compute(da.max(da.abs(self.X), split_every=self.split_every))
        return B.to_float(m)

    def scaled(self, factor: float) -> DaskDenseTensor:
        """A ``DaskDenseTensor`` of ``factor * X`` (lazy: each pass multiplies its chunks)."""
        return DaskDenseTensor(self.X * factor, memory_budget=self.memory_budget,
                               split_every=self.split_every)

    # ------------------------------------------------------------------ #
    # MTTKRP
    # ------------------------------------------------------------------ #
    def mttkrp(self, factors: Any, mode: int, /) -> Any:
        """``unfold(X, mode) @ khatri_rao(factors, skip=mode)``, chunk by chunk.

        ``factors[mode]`` is not read. One pass over the chunks, or none when
        the dimension-tree intermediate of ``mode``'s half is kept (see
        ``memory_budget``).
        """
        n = self._check_mode(mode)
        factors = self._check_factors(factors, n)
        N = len(self.shape)
        R = int(factors[(n + 1) % N].shape[1])
        half = self._half(n) if N >= 3 else None
        if half is None or not self._fits(half, R):
            return self.xp.matrix_transpose(self._compute_partial(factors, (n,)))
        used = {m: factors[m] for m in range(N) if m not in half}
        cached = self._partial_cache
        if (cached is not None and cached[0] == half
                and all(cached[2][m] is used[m] for m in used)):
            T = cached[1]
        else:
            self._partial_cache = None  # release the old intermediate first
            T = self._compute_partial(factors, half)
            self._partial_cache = (half, T, used)
        if len(half) > 1:
            T, _ = _contract_modes(self.xp, T, list(half), [m for m in half if m != n], factors)
        return self.xp.matrix_transpose(self.xp.reshape(T, (R, self.shape[n])))

    def _half(self, n: int) -> tuple[int, ...]:
        """The dimension-tree half (contiguous modes) holding mode ``n``."""
        N = len(self.shape)
        h = _best_split(self.shape)
        return tuple(range(h)) if n < h else tuple(range(h, N))

    def _fits(self, half: tuple[int, ...], R: int) -> bool:
        size = R * math.prod(self.shape[m] for m in half) * self.X.dtype.itemsize
        return self.memory_budget > 0 and size <= self.memory_budget

    def _compute_partial(self, factors: list[Any], kept: tuple[int, ...]) -> Any:
        """``X`` contracted with the factors of the modes not in ``kept``: ``(R,) + kept dims``.

        ``kept`` is one mode (the MTTKRP, two-step kernel per chunk) or a
        contiguous prefix or suffix of the modes (one GEMM per chunk).
        """
        N = len(self.shape)
        idx = tuple(range(N))
        contracted = [m for m in range(N) if m not in kept]
        args: list[Any] = [self.X, idx]
        for m in contracted:
            args += [self._factor_blocks(factors[m], m), (m, N)]
        parts = da.blockwise(partial(_chunk_partial, kept=kept), (N,) + idx, *args,
                             adjust_chunks={m: 1 for m in contracted}, dtype=self.dtype,
                             meta=self._empty(N + 1), concatenate=True)
        total = parts.sum(axis=tuple(1 + m for m in contracted), split_every=self.split_every)
        (T,) = dask.compute(total)
        return T

    # ------------------------------------------------------------------ #
    # Gram matrix and leading subspace
    # ------------------------------------------------------------------ #
    def mode_gram(self, mode: int) -> Any:
        """``unfold(X, mode) @ unfold(X, mode).T``, one pass over mode-``mode`` columns."""
        n = self._check_mode(mode)
        In = self.shape[n]
        cols = self._columns(n)
        N = len(self.shape)
        idx = tuple(range(N))
        parts = da.blockwise(partial(_chunk_gram, mode=n), idx + (N,), cols, idx,
                             adjust_chunks={m: 1 for m in range(N) if m != n},
                             new_axes={N: In}, dtype=self.dtype, meta=self._empty(N + 1))
        total = parts.sum(axis=tuple(m for m in range(N) if m != n),
                          split_every=self.split_every)
        (G,) = dask.compute(total)
        return G

    def leading_subspace(self, mode: int, k: int, rng: np.random.Generator) -> Any:
        """Leading ``k`` left singular vectors of ``unfold(X, mode)``.

        As `DenseTensor.leading_subspace` (same draws from ``rng``):
        Gram eigenvectors for small modes (``I_mode <= 3 (k + 10)``, one
        pass), otherwise a randomised range finder with a Khatri-Rao test
        matrix (one MTTKRP pass) and one power step (one pass when the
        chunks span the mode, else two keeping ``unfold(X)^T Q``, ``k + 10``
        times the product of the other dimensions, in the driver),
        orthonormalised in the driver between them.
        """
        n = self._check_mode(mode)
        xp = self.xp
        In = self.shape[n]
        kk = min(In, k + 10)
        if In <= 3 * kk:
            return leading_from_gram(xp, self.mode_gram(n), k)
        omega = [B.random_normal(xp, (d, kk), rng, dtype=self.dtype, like=self.like)
                 for d in self.shape]
        Y = xp.matrix_transpose(self._compute_partial(omega, (n,)))
        Q, _ = xp.linalg.qr(Y)
        Y = self._power_step(n, Q)
        U, _, _ = xp.linalg.svd(Y, full_matrices=False)
        return U[:, :k]

    def _power_step(self, n: int, Q: Any) -> Any:
        """``unfold(X) @ (unfold(X)^T @ Q)``.

        Chunks spanning mode ``n`` whole: one pass, each chunk doing both
        products. Otherwise two passes (two computes): ``Z = unfold(X)^T @ Q``
        (summed over the mode-``n`` chunks, kept in the driver: ``k`` times
        the product of the other dimensions), then ``unfold(X) @ Z``.
        """
        N = len(self.shape)
        idx = tuple(range(N))
        k = int(Q.shape[1])
        others = tuple(m for m in range(N) if m != n)
        Qd = da.from_array(Q, chunks=(self.chunks[n], (k,)))
        if len(self.chunks[n]) == 1:
            parts = da.blockwise(partial(_chunk_power_step, mode=n), idx + (N,), self.X, idx,
                                 Qd, (n, N), adjust_chunks={m: 1 for m in others},
                                 dtype=self.dtype, meta=self._empty(N + 1), concatenate=True)
            (Y,) = dask.compute(parts.sum(axis=others, split_every=self.split_every))
            return Y
        parts = da.blockwise(partial(_chunk_transposed_product, mode=n), idx + (N,), self.X,
                             idx, Qd, (n, N), adjust_chunks={n: 1}, dtype=self.dtype,
                             meta=self._empty(N + 1), concatenate=True)
        (Z,) = dask.compute(parts.sum(axis=n, split_every=self.split_every))
        Zd = da.from_array(Z, chunks=tuple(self.chunks[m] for m in others) + ((k,),))
        parts = da.blockwise(partial(_chunk_product, mode=n), idx + (N,), self.X, idx,
                             Zd, others + (N,), adjust_chunks={m: 1 for m in others},
                             dtype=self.dtype, meta=self._empty(N + 1), concatenate=True)
        (Y,) = dask.compute(parts.sum(axis=others, split_every=self.split_every))
        return Y

    def _columns(self, n: int) -> Any:
        """``X`` rechunked to whole mode-``n`` columns, a task about one original chunk."""
        if len(self.chunks[n]) == 1:
            return self.X
        itemsize = self.X.dtype.itemsize
        largest = math.prod(max(c) for c in self.chunks) * itemsize
        limit = max(largest, self.shape[n] * itemsize)
        spec = {m: (-1 if m == n else "auto") for m in range(len(self.shape))}
        return self.X.rechunk(spec, block_size_limit=limit)

    # ------------------------------------------------------------------ #
    # exact residual
    # ------------------------------------------------------------------ #
    def residual_norm_sq(self, weights: Any, factors: Any) -> float:
        """Exact ``||X - [[weights; factors]]||^2``, each chunk reconstructed in blocks."""
        N = len(self.shape)
        factors = self._check_factors(factors, None)
        idx = tuple(range(N))
        args: list[Any] = [self.X, idx]
        for m in range(N):
            args += [self._factor_blocks(factors[m], m), (m, N + 1)]
        parts = da.blockwise(partial(_chunk_residual, weights=weights), idx + (N,), *args,
                             adjust_chunks={m: 1 for m in range(N)}, new_axes={N: 1},
                             dtype=self.dtype, meta=self._empty(N + 1), concatenate=True)
        total = parts.sum(split_every=self.split_every)
        (value,) = dask.compute(total)
        return B.to_float(value)

    # ------------------------------------------------------------------ #
    # sampled fibers
    # ------------------------------------------------------------------ #
    def sampled_fibers(self, mode: int, indices: Any) -> Any:
        """Mode-``mode`` fibers at the sampled indices of the other modes.

        ``indices`` is a host ``(n_samples, N-1)`` integer array (the other
        modes in increasing order); returns ``(n_samples, I_mode)``. The
        samples are grouped by the chunks they fall in; only those chunks
        are read, each by one task that gathers its samples' fiber pieces.
        """
        n = self._check_mode(mode)
        xp = self.xp
        N = len(self.shape)
        In = self.shape[n]
        others = [m for m in range(N) if m != n]
        idx = np.asarray(indices)
        if idx.ndim != 2 or idx.shape[1] != N - 1:
            raise ValueError(f"indices must have shape (n_samples, {N - 1}), got {idx.shape}")
        s = int(idx.shape[0])
        if s == 0:
            return xp.zeros((0, In), dtype=self.dtype, device=B.device(self.like))
        idx = idx.astype(np.int64, copy=False)
        for j, m in enumerate(others):
            if idx[:, j].min() < 0 or idx[:, j].max() >= self.shape[m]:
                raise ValueError(f"indices[:, {j}] is out of range for mode {m} of size "
                                 f"{self.shape[m]}")
        # block number and offset inside the block, for every sample and other mode
        blocks = np.empty_like(idx)
        local = np.empty_like(idx)
        for j, m in enumerate(others):
            starts = np.concatenate([[0], np.cumsum(self.chunks[m])[:-1]])
            blocks[:, j] = np.searchsorted(starts, idx[:, j], side="right") - 1
            local[:, j] = idx[:, j] - starts[blocks[:, j]]
        order = np.lexsort(blocks.T[::-1])
        sb = blocks[order]
        cut = np.flatnonzero(np.any(sb[1:] != sb[:-1], axis=1)) + 1
        bounds = np.concatenate([[0], cut, [s]])
        if self._delayed_chunks is None:
            self._delayed_chunks = self.X.to_delayed()
        chunks = self._delayed_chunks
        groups = []
        for g0, g1 in zip(bounds[:-1], bounds[1:]):
            rows = order[g0:g1]
            where = list(sb[g0])
            pieces = []
            for b in range(len(self.chunks[n])):
                key = tuple(where[:n]) + (b,) + tuple(where[n:])
                pieces.append(dask.delayed(_chunk_fibers)(chunks[key], n, local[rows]))
            groups.append(dask.delayed(_concat_rows)(pieces))
        parts = dask.compute(*groups)
        fibers_t = xp.concat(list(parts), axis=1)  # (I_mode, n_samples), grouped
        inverse = np.empty(s, dtype=np.int64)
        inverse[order] = np.arange(s, dtype=np.int64)
        inverse_x = B.from_numpy(xp, inverse, like=self.like, dtype=None)
        # rows in sample order, C-ordered (s, I_mode) like DenseTensor's gather, so
        # the sampled solve does the same arithmetic on both formats
        return xp.take(xp.matrix_transpose(fibers_t), inverse_x, axis=0)

    # ------------------------------------------------------------------ #
    # helpers
    # ------------------------------------------------------------------ #
    def _check_mode(self, mode: Any) -> int:
        N = len(self.shape)
        if isinstance(mode, bool) or not isinstance(mode, (int, np.integer)):
            raise TypeError(f"mode must be an integer, got {mode!r}")
        if not -N <= int(mode) < N:
            raise ValueError(f"mode={mode} is out of range for a tensor with {N} modes")
        return int(mode) % N

    def _check_factors(self, factors: Any, skip: int | None) -> list[Any]:
        factors = list(factors)
        N = len(self.shape)
        if len(factors) != N:
            raise ValueError(f"factors has {len(factors)} matrices but X has {N} modes")
        R = None
        for m, A in enumerate(factors):
            if m == skip:
                continue
            if getattr(A, "ndim", None) != 2 or int(A.shape[0]) != self.shape[m]:
                raise ValueError(f"factors[{m}] must have shape ({self.shape[m]}, rank), got "
                                 f"{getattr(A, 'shape', type(A).__name__)}")
            if R is None:
                R = int(A.shape[1])
            elif int(A.shape[1]) != R:
                raise ValueError(f"factors[{m}] has {A.shape[1]} columns, expected {R}")
        return factors

    def _factor_blocks(self, A: Any, m: int) -> Any:
        """A factor as a dask array split like mode ``m`` (one key holds the matrix)."""
        return da.from_array(A, chunks=(self.chunks[m], (int(A.shape[1]),)))

    def _empty(self, ndim: int) -> Any:
        return self.xp.zeros((0,) * ndim, dtype=self.dtype, device=B.device(self.like))

    def _per_chunk(self, func: Any, *, width: int) -> Any:
        """Sum over the chunks of ``func(chunk)``, a ``(width,)`` vector per chunk."""
        N = len(self.shape)
        idx = tuple(range(N))
        parts = da.blockwise(func, idx + (N,), self.X, idx,
                             adjust_chunks={m: 1 for m in range(N)}, new_axes={N: width},
                             dtype=self.dtype, meta=self._empty(N + 1))
        return parts.sum(axis=idx, split_every=self.split_every)


# --------------------------------------------------------------------------- #
# per-chunk tasks (module level: they travel to the workers by reference)
# --------------------------------------------------------------------------- #
def _chunk_partial(block: Any, *factor_blocks: Any, kept: tuple[int, ...]) -> Any:
    """One chunk's contribution to a partial contraction, shaped ``(R,) + block dims``.

    The modes not in ``kept`` are contracted with ``factor_blocks`` (their
    row blocks, in mode order) and left as axes of length 1.
    """
    xp = B.namespace(block)
    N = block.ndim
    dims = tuple(int(d) for d in block.shape)
    R = int(factor_blocks[0].shape[1])
    given = iter(factor_blocks)
    factors = [xp.zeros((dims[m], R), dtype=block.dtype, device=B.device(block)) if m in kept
               else next(given) for m in range(N)]
    if len(kept) == 1:
        T = xp.matrix_transpose(_mttkrp(xp, block, factors, kept[0]))
    elif kept[0] == 0:
        T = _gemm_block(xp, block, factors, "suffix", len(kept))
    else:
        T = _gemm_block(xp, block, factors, "prefix", kept[0])
    return xp.reshape(T, (R,) + tuple(dims[m] if m in kept else 1 for m in range(N)))


def _chunk_norm_finite(block: Any) -> Any:
    """``[sum of squares, 1 if the chunk holds NaN/Inf else 0]``, shaped for the reduction."""
    xp = B.namespace(block)
    data = DenseTensor(block, xp)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # overflow: inconclusive
        sq = data.norm_sq()
    bad = 0.0
    if not math.isfinite(sq):
        bad = 0.0 if bool(xp.all(xp.isfinite(block))) else 1.0
    out = B.from_numpy(xp, np.array([sq, bad]), like=block)
    return xp.reshape(out, (1,) * block.ndim + (2,))


def _chunk_gram(block: Any, *, mode: int) -> Any:
    """The Gram matrix of a whole mode-``mode`` column block."""
    xp = B.namespace(block)
    G = DenseTensor(block, xp).mode_gram(mode)
    In = int(G.shape[0])
    return xp.reshape(G, tuple(In if m == mode else 1 for m in range(block.ndim)) + (In,))


def _chunk_power_step(block: Any, Q: Any, *, mode: int) -> Any:
    """``unfold(block) @ (unfold(block)^T @ Q)`` of a whole mode-``mode`` column block."""
    xp = B.namespace(block)
    Y = DenseTensor(block, xp)._power_step(mode, Q)
    In, k = int(Y.shape[0]), int(Y.shape[1])
    return xp.reshape(Y, tuple(In if m == mode else 1 for m in range(block.ndim)) + (k,))


def _as_three_way(xp: ModuleType, block: Any, mode: int) -> Any:
    """The block as ``(modes before, mode, modes after)`` (copy-free when contiguous)."""
    dims = tuple(int(d) for d in block.shape)
    return xp.reshape(block, (math.prod(dims[:mode]), dims[mode], math.prod(dims[mode + 1:])))


def _chunk_transposed_product(block: Any, Q: Any, *, mode: int) -> Any:
    """``unfold(block)^T @ Q_block``, shaped as the block with ``1`` at ``mode``, then ``k``."""
    xp = B.namespace(block)
    X3 = _as_three_way(xp, block, mode)
    k = int(Q.shape[1])
    Z = xp.matmul(xp.matrix_transpose(Q), X3)  # (L, k, Rt)
    Z = xp.permute_dims(Z, (0, 2, 1))  # (L, Rt, k)
    dims = tuple(int(d) for d in block.shape)
    return xp.reshape(Z, dims[:mode] + (1,) + dims[mode + 1:] + (k,))


def _chunk_product(block: Any, Z: Any, *, mode: int) -> Any:
    """``unfold(block) @ Z_block`` (``Z_block``: the other dims, then ``k``), shaped for the sum."""
    xp = B.namespace(block)
    X3 = _as_three_way(xp, block, mode)
    L, c, Rt = (int(d) for d in X3.shape)
    k = int(Z.shape[-1])
    Z3 = xp.reshape(Z, (L, Rt, k))
    step = max(1, _BLOCK_BUDGET // max(1, c * k))
    Y = None
    for l0 in range(0, L, step):
        l1 = min(L, l0 + step)
        part = xp.sum(xp.matmul(X3[l0:l1, ...], Z3[l0:l1, ...]), axis=0)
        Y = part if Y is None else Y + part
    return xp.reshape(Y, tuple(c if m == mode else 1 for m in range(block.ndim)) + (k,))


def _chunk_residual(block: Any, *factor_blocks: Any, weights: Any) -> Any:
    """``||block - [[weights; factor row blocks]]||^2``, shaped for the reduction."""
    xp = B.namespace(block)
    value = DenseTensor(block, xp).residual_norm_sq(weights, list(factor_blocks))
    out = B.from_numpy(xp, np.array([value]), like=block)
    return xp.reshape(out, (1,) * (block.ndim + 1))


def _chunk_fibers(block: Any, mode: int, local: np.ndarray) -> Any:
    """The pieces of the sampled mode-``mode`` fibers in one chunk, ``(c_mode, samples)``."""
    return B.namespace(block).matrix_transpose(DenseTensor(block).sampled_fibers(mode, local))


def _concat_rows(pieces: list[Any]) -> Any:
    """The fiber pieces of consecutive chunks along the free mode, joined."""
    if len(pieces) == 1:
        return pieces[0]
    return B.namespace(pieces[0]).concat(pieces, axis=0)


def _as_float(X: Any, xp: ModuleType, name: str) -> Any:
    """``X`` with a real floating dtype (a lazy ``astype`` where needed).

    The chunks' type (``X._meta``) is checked as an array is: masked chunks
    (whose masks would be ignored), complex and non-numeric dtypes are refused.
    """
    B.check_real_dtype(X._meta, xp, name=name)
    dt = X.dtype
    if xp.isdtype(dt, "real floating"):
        return X if dt in (np.float32, np.float64) else X.astype(np.float32)
    if xp.isdtype(dt, "bool") or xp.isdtype(dt, "integral"):
        return X.astype(B.default_float(xp))
    raise TypeError(f"{name} has unsupported dtype {dt}; expected a real numeric dtype")


class _NpyFile:
    """A ``.npy`` file sliced through a memory map; pickles as its path."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = os.fspath(path)
        mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
        self.shape = tuple(int(s) for s in mm.shape)
        self.dtype = mm.dtype
        self.ndim = len(self.shape)
        del mm
        stat = os.stat(self.path)
        self._token = (self.path, stat.st_size, stat.st_mtime_ns)

    def __getitem__(self, index: Any) -> np.ndarray:
        mm = np.load(self.path, mmap_mode="r", allow_pickle=False)
        return np.array(mm[index])

    def __dask_tokenize__(self) -> Any:
        return ("tensorfact-npy",) + self._token + (self.shape, str(self.dtype))
