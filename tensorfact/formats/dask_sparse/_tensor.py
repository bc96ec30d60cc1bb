"""``DaskSparseTensor``: a sparse tensor whose nonzeros live in partitions on disk."""

from __future__ import annotations

import math
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from ... import _backend as B
from ..._kernels.sparse import stack_factors
from ..._validation import check_factor_shapes, check_mode, check_positive_int, check_shape
from .._dense import leading_from_gram
from .._protocol import SparseRows
from ..sparse import SparseTensor
from . import _graph as G
from . import _store as S
from . import _tasks as T
from ._convert import convert_sparse, convert_tns, linear_index

__all__ = ["DaskSparseTensor"]

#: default target number of nonzeros per partition
PARTITION_NNZ = 1 << 23


class DaskSparseTensor:
    """A sparse tensor stored in partitions on disk, computed on with Dask.

    The nonzeros live in a *store* (a directory of ``.npy`` files and a
    ``meta.json``, see `tensorfact.formats.dask_sparse`): primary
    partitions in canonical order for the passes over all nonzeros, and per
    mode a fiber index for sampled-fiber access. Every operation of the
    `tensorfact.formats.TensorFormat` protocol is a Dask graph with
    one task per partition (Numba kernels on the memory-mapped files) and a
    tree reduction, computed by ``dask.compute`` on whatever scheduler is
    active: the local threaded scheduler by default, a
    ``distributed.Client`` when one is the default (the library never
    creates one). The factor matrices are sent to the tasks once per call
    (scattered to the workers when a client is active). So `cp_als`
    and `spals` accept a ``DaskSparseTensor`` as they are, out of core.

    Open a store with ``DaskSparseTensor(store)`` (or `from_store`);
    build one with `from_tns`, `from_sparse` or
    `tensorfact.datasets.planted_sparse_store`.

    Parameters
    ----------
    store : path
        The store directory.
    verify : bool
        Also compare every file's CRC-32 with ``meta.json`` (reads the whole
        store). File sizes are always checked.

    Attributes
    ----------
    xp : namespace
        NumPy (``array_api_compat.numpy``): factors and results are NumPy arrays.
    shape : tuple of int
    dtype : numpy dtype
    like : numpy array
        An empty array of `dtype` (NumPy, host).
    store : pathlib.Path
        The store directory (absolute).

    Raises
    ------
    FileNotFoundError
        No store at ``store``, or a missing partition file (named).
    ValueError
        Malformed ``meta.json``, a truncated partition file (named), a
        checksum mismatch with ``verify``.

    Notes
    -----
    Memory: one partition per running task plus, for `mttkrp`, a
    float64 block of the output rows a partition touches. The store must be
    reachable under the same path from every Dask worker. `bytes_read`
    counts the bytes of array data the tasks read (the slices touched; the
    page cache may read more from disk).

    Examples
    --------
    >>> import tempfile, os, numpy as np
    >>> from tensorfact.formats import SparseTensor
    >>> S = SparseTensor([[0, 1, 2], [1, 0, 1], [2, 2, 0]], [1.0, 2.0, 3.0], (3, 3, 3))
    >>> X = DaskSparseTensor.from_sparse(S, os.path.join(tempfile.mkdtemp(), "t"), 2)
    >>> X.shape, X.nnz, X.npartitions
    ((3, 3, 3), 3, 2)
    >>> X.norm_sq()
    14.0
    >>> bool(np.array_equal(X.to_sparse().to_dense(), S.to_dense()))
    True
    """

    #: largest mode size for which `mode_gram` forms the ``I_n x I_n`` Gram
    MAX_GRAM_SIZE = 4096

    def __init__(self, store: str | os.PathLike[str], /, *, verify: bool = False) -> None:
        meta = S.read_meta(store)
        if verify:
            S.verify_checksums(meta)
        self._meta = meta
        self.store = Path(meta.root)
        self.shape: tuple[int, ...] = meta.shape
        self.dtype = np.dtype(meta.dtype)
        self.like = np.empty((0,), dtype=self.dtype)
        self.xp: ModuleType = B.namespace(self.like)
        self._lock = threading.Lock()
        self._bytes = 0
        self._norm_sq: float | None = None
        self._finite = False

    # ------------------------------------------------------------------ #
    # construction
    # ------------------------------------------------------------------ #
    @classmethod
    def from_store(cls, store: str | os.PathLike[str], /, *, verify: bool = False
                   ) -> DaskSparseTensor:
        """Open an existing store (same as the constructor)."""
        return cls(store, verify=verify)

    @classmethod
    def from_tns(cls, path: str | os.PathLike[str], store: str | os.PathLike[str], /, *,
                 partition_nnz: int = PARTITION_NNZ, index_base: int = 1,
                 shape: Sequence[int] | None = None, dtype: Any = np.float64,
                 has_values: bool | None = None, progress: bool = False) -> DaskSparseTensor:
        """Convert a FROSTT ``.tns`` file (plain or ``.gz``) into a new store, streaming.

        The file is parsed in blocks (the grammar, checks and line-numbered
        errors of `tensorfact.datasets.read_tns`), spilled to the
        store's temporary folder, and bucket-sorted by key range into
        partitions of about ``partition_nnz`` nonzeros (duplicates summed in
        file order); the fiber index of every mode is built the same way. The
        tensor is never held in memory: peak memory is about one bucket.

        Parameters
        ----------
        path : path
            The ``.tns`` file.
        store : path
            A new (or empty) directory for the store.
        partition_nnz : int
            Target nonzeros per partition.
        index_base : int
            Index of the first element along a mode in the file (FROSTT: 1).
        shape : sequence of int, optional
            Tensor shape; default: the largest index in each mode.
        dtype : dtype
            float32 or float64 values.
        has_values : bool, optional
            As for `tensorfact.datasets.read_tns`.
        progress : bool
            Show tqdm progress bars.

        Returns
        -------
        DaskSparseTensor

        Raises
        ------
        ValueError
            A malformed line (file name and line number in the message), a
            file without data, a non-empty ``store``.
        FileNotFoundError
            No file at ``path``.
        """
        nnz_target = check_positive_int(partition_nnz, "partition_nnz")
        dims = None if shape is None else check_shape(shape, min_ndim=2)
        convert_tns(path, store, partition_nnz=nnz_target, shape=dims, dtype=dtype,
                    index_base=index_base, has_values=has_values, progress=progress)
        return cls(store)

    @classmethod
    def from_sparse(cls, X: SparseTensor, store: str | os.PathLike[str], /,
                    npartitions: int = 1, *, progress: bool = False) -> DaskSparseTensor:
        """Write an in-memory `SparseTensor` as a new store of ``npartitions`` partitions.

        Data of another namespace is copied to the host. The fiber indexes
        get about as many partitions (a fiber is never split).
        """
        if not isinstance(X, SparseTensor):
            raise TypeError(f"X must be a SparseTensor, got {type(X).__name__}")
        if X.ndim < 2:
            raise ValueError(f"X must have at least 2 modes, got shape {X.shape}")
        nparts = check_positive_int(npartitions, "npartitions")
        convert_sparse(B.to_numpy(X.coords), B.to_numpy(X.values), X.shape, store, nparts,
                       progress=progress)
        return cls(store)

    def to_sparse(self) -> SparseTensor:
        """All nonzeros in memory as a `SparseTensor` (small tensors only)."""
        N = self.ndim
        coords = [np.asarray(p.arrays["coords"].open(), dtype=np.int64) for p in self._primary]
        values = [np.array(p.arrays["values"].open()) for p in self._primary]
        self._count(sum(r.data_nbytes for p in self._primary for r in p.arrays.values()))
        c = np.concatenate(coords) if coords else np.zeros((0, N), dtype=np.int64)
        v = np.concatenate(values) if values else np.zeros(0, dtype=self.dtype)
        return SparseTensor._trusted(self.xp, c, v, self.shape)

    def verify(self) -> None:
        """Compare every file's CRC-32 with ``meta.json`` (reads the whole store).

        Raises
        ------
        FileNotFoundError, ValueError
            Naming the first missing, truncated or corrupted file.
        """
        S.verify_checksums(self._meta)

    # ------------------------------------------------------------------ #
    # properties
    # ------------------------------------------------------------------ #
    @property
    def _primary(self) -> tuple[S.Partition, ...]:
        return self._meta.primary

    @property
    def ndim(self) -> int:
        """Number of modes."""
        return len(self.shape)

    @property
    def nnz(self) -> int:
        """Number of stored nonzeros."""
        return self._meta.nnz

    @property
    def npartitions(self) -> int:
        """Number of primary partitions."""
        return len(self._primary)

    @property
    def store_nbytes(self) -> int:
        """Size of the store's files: primary partitions and fiber indexes."""
        return sum(r.nbytes for r in self._meta.all_arrays())

    @property
    def primary_nbytes(self) -> int:
        """Array bytes of the primary partitions (one full pass over the nonzeros)."""
        return sum(r.data_nbytes for p in self._primary for r in p.arrays.values())

    @property
    def bytes_read(self) -> int:
        """Bytes of array data read from the store since the last `reset_bytes_read`."""
        return self._bytes

    def reset_bytes_read(self) -> int:
        """Set `bytes_read` to 0; return its previous value."""
        with self._lock:
            old, self._bytes = self._bytes, 0
        return old

    def _count(self, nbytes: int) -> None:
        with self._lock:
            self._bytes += int(nbytes)

    def __repr__(self) -> str:
        return (f"DaskSparseTensor(shape={self.shape}, nnz={self.nnz}, dtype={self.dtype}, "
                f"npartitions={self.npartitions}, store={str(self.store)!r})")

    # ------------------------------------------------------------------ #
    # helpers
    # ------------------------------------------------------------------ #
    def _check_mode(self, mode: Any) -> int:
        return check_mode(mode, self.ndim)

    def _check_factors(self, factors: Any) -> list[np.ndarray]:
        factors = list(factors)
        B.namespace(self.like, *factors)
        check_factor_shapes(factors, tuple(self.shape))
        return [np.asarray(A) for A in factors]

    def _fibers(self, mode: int) -> tuple[S.Partition, ...]:
        parts = self._meta.fibers[mode]
        if parts is None:
            raise NotImplementedError(
                f"the product of the sizes of the modes other than {mode} exceeds int64; "
                "this store has no fiber index for that mode"
            )
        return parts

    def _reduce(self, tasks: list[Any], combine: Any) -> tuple[Any, ...]:
        """Compute per-partition tasks and their tree reduction; count the bytes read."""
        (out,) = G.compute(G.tree_reduce(tasks, combine))
        self._count(out[-1])
        return tuple(out[:-1])

    # ------------------------------------------------------------------ #
    # the data-format protocol (tensorfact.formats.TensorFormat)
    # ------------------------------------------------------------------ #
    def check_finite(self, name: str = "X") -> None:
        """Raise ``ValueError`` naming ``name`` if a stored value is NaN or Inf.

        One pass over the values the first time; the answer is kept (the
        store is immutable).
        """
        if self._finite or self.nnz == 0:
            return
        (ok,) = self._reduce([G.task(T.all_finite, p) for p in self._primary], T.both_finite)
        if not ok:
            raise ValueError(f"{name} contains NaN or Inf values")
        self._finite = True

    def norm_sq(self) -> float:
        """``||X||_F^2``: per-partition float64 sums (computed once, then kept)."""
        if self._norm_sq is None:
            if self.nnz == 0:
                self._norm_sq = 0.0
            else:
                (total,) = self._reduce([G.task(T.norm_sq, p) for p in self._primary],
                                        T.add_scalars)
                self._norm_sq = float(total)
        return self._norm_sq

    def mttkrp(self, factors: Sequence[Any], mode: int, /) -> np.ndarray:
        """Exact sparse MTTKRP ``unfold(X, mode) @ khatri_rao(factors, skip=mode)``.

        One task per primary partition accumulates (float64, Numba) into a
        private block of the output rows it touches; the blocks are added in
        a tree reduction.

        Returns
        -------
        (I_mode, R) array in the factors' dtype.
        """
        mode = self._check_mode(mode)
        facs = self._check_factors(factors)
        dtype = np.result_type(*[A.dtype for A in facs])
        R = int(facs[0].shape[1])
        out = np.zeros((self.shape[mode], R), dtype=np.float64)
        if self.nnz:
            # the mode's own factor is not read: left out of the stacked copy
            F, offsets = stack_factors([A[:0] if m == mode else A for m, A in enumerate(facs)],
                                       np.float64)
            if G.shared_memory():
                # tasks add into one output: memory of one block per running task
                args = (G.share(F, None), offsets, mode, G.share(out, None),
                        G.share(threading.Lock(), None))
                self._reduce([G.task(T.mttkrp_into, p, *args) for p in self._primary],
                             T.add_scalars)
            else:
                shared = G.share(F, G.active_client())
                lo, block = self._reduce(
                    [G.task(T.mttkrp, p, shared, offsets, mode) for p in self._primary],
                    T.add_row_blocks)
                out[lo:lo + block.shape[0]] = block
        return out.astype(dtype, copy=False)

    def mode_gram(self, mode: int) -> np.ndarray:
        """``unfold(X, mode) @ unfold(X, mode).T`` (dense ``I_n x I_n``), from the fiber index.

        Raises
        ------
        ValueError
            ``I_mode > MAX_GRAM_SIZE``: the Gram matrix would be too large
            (use ``init="random"`` in the solvers).
        """
        mode = self._check_mode(mode)
        In = self.shape[mode]
        if In > self.MAX_GRAM_SIZE:
            raise ValueError(
                f"mode {mode} has {In} indices: its {In} x {In} Gram matrix (used by the SVD "
                f"initialisation) is too large for a DaskSparseTensor (limit "
                f"{self.MAX_GRAM_SIZE}); use init='random'"
            )
        if self.nnz == 0:
            return np.zeros((In, In), dtype=self.dtype)
        (gram,) = self._reduce([G.task(T.gram, p, In) for p in self._fibers(mode)],
                               T.add_arrays)
        return np.asarray(gram, dtype=self.dtype)

    def leading_subspace(self, mode: int, k: int, rng: Any) -> np.ndarray:
        """Leading ``k`` left singular vectors of ``unfold(X, mode)`` (approximately).

        Modes up to `MAX_GRAM_SIZE` rows: eigenvectors of `mode_gram`.
        Larger modes: a randomised range finder with a Khatri-Rao-structured
        Gaussian test matrix, i.e. one MTTKRP with random factors (one pass
        over the store), orthonormalised; no power step (it would need the
        transposed unfolding, as large as the store). The sketch lies in the
        range of the unfolding, so its rows vanish where the mode has no data:
        a data-driven start for ALS and SPALS on very sparse tensors.
        """
        mode = int(mode)
        In = self.shape[mode]
        if In <= self.MAX_GRAM_SIZE:
            return leading_from_gram(self.xp, self.mode_gram(mode), k)
        gen = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        kk = min(In, int(k) + 10)
        omega = [gen.standard_normal((d, kk)) for d in self.shape]
        Q, _ = np.linalg.qr(self.mttkrp(omega, mode))
        return np.ascontiguousarray(Q[:, :int(k)], dtype=self.dtype)

    def residual_norm_sq(self, weights: Any, factors: Any) -> float:
        """Exact ``||X - [[weights; factors]]||^2`` in float64, never densifying.

        ``||X - M||^2 = sum_k (x_k - m_k)^2 + (||M||^2 - sum_k m_k^2)`` over
        the stored entries ``k`` (per-partition sums); ``||M||^2`` comes from
        the Hadamard product of the factors' Gram matrices.
        """
        facs = self._check_factors(factors)
        w = np.asarray(weights, dtype=np.float64)
        R = int(facs[0].shape[1])
        if w.shape != (R,):
            raise ValueError(f"weights must have shape ({R},), got {w.shape}")
        F, offsets = stack_factors(facs, np.float64)
        sq_diff = sq_model = 0.0
        if self.nnz:
            shared = G.share(F, G.active_client())
            sq_diff, sq_model = self._reduce(
                [G.task(T.residual_terms, p, shared, offsets, w) for p in self._primary],
                T.add_scalars)
        H = np.ones((R, R))
        for A in facs:
            A64 = np.asarray(A, dtype=np.float64)
            H = H * (A64.T @ A64)
        model_sq = float(np.sum(w[:, None] * H * w[None, :]))
        if self.nnz == math.prod(self.shape):  # every entry stored: no model energy off them
            return float(sq_diff)
        return max(sq_diff + max(model_sq - sq_model, 0.0), 0.0)

    def sampled_fibers(self, mode: int, indices: Any) -> SparseRows:
        """The mode-``mode`` fibers at sampled indices of the other modes.

        Each sample's key (the other modes' linear index) is routed to the
        fiber-index partition whose key range holds it (binary search in the
        partition bounds of ``meta.json``); only the partitions hit are
        opened, and in each only the keys probed by a binary search and the
        fibers' slices are read.

        Parameters
        ----------
        mode : int
        indices : integer array of shape (n_samples, N-1)
            Row ``j``: the indices of sample ``j`` in every mode except
            ``mode``, in increasing mode order (host array; another
            namespace's array is copied to the host).

        Returns
        -------
        SparseRows
            Sample number, mode index and value of every entry, samples in
            order and the entries of a fiber in increasing mode index (the
            order of `SparseTensor.gather_fibers`).

        Raises
        ------
        ValueError
            ``indices`` of the wrong shape or out of range.
        """
        mode = self._check_mode(mode)
        N = self.ndim
        others = [m for m in range(N) if m != mode]
        idx = B.to_numpy(indices) if B.is_array(indices) else np.asarray(indices)
        if not np.issubdtype(idx.dtype, np.integer):
            raise TypeError(f"other_idx must have an integer dtype, got {idx.dtype}")
        if idx.ndim != 2 or idx.shape[1] != N - 1:
            raise ValueError(
                f"other_idx must have shape (n_samples, {N - 1}) for mode {mode} of a {N}-way "
                f"tensor, got {tuple(idx.shape)}"
            )
        sub = tuple(self.shape[m] for m in others)
        _check_indices(idx, sub, others)
        keys = linear_index(idx.astype(np.int64), sub, list(range(N - 1)))
        empty = SparseRows(np.zeros(0, np.int64), np.zeros(0, np.int64),
                           np.zeros(0, self.dtype), self.shape[mode])
        if self.nnz == 0 or keys.shape[0] == 0:
            return empty
        parts = self._fibers(mode)
        first = np.array([p.first[0] for p in parts], dtype=np.int64)
        last = np.array([p.last[0] for p in parts], dtype=np.int64)
        where = np.searchsorted(first, keys, side="right") - 1
        hit = where >= 0
        hit[hit] = keys[hit] <= last[where[hit]]
        tasks = []
        for p in np.unique(where[hit]):
            ids = np.flatnonzero(hit & (where == p))
            tasks.append(G.task(T.fibers, parts[int(p)], keys[ids], ids))
        if not tasks:
            return empty
        results = G.compute(*tasks)
        self._count(sum(r[3] for r in results))
        pos = np.concatenate([r[0] for r in results])
        col = np.concatenate([r[1] for r in results])
        val = np.concatenate([r[2] for r in results])
        if pos.shape[0] > 1 and not bool(np.all(pos[1:] >= pos[:-1])):
            # samples not in key order (the solvers' are: then the partitions'
            # results, in partition order, are already in sample order)
            order = np.argsort(pos, kind="stable")
            pos, col, val = pos[order], col[order], val[order]
        return SparseRows(pos, col, val, self.shape[mode])


def _check_indices(idx: np.ndarray, dims: tuple[int, ...], modes: list[int]) -> None:
    """Raise ``ValueError`` naming the first out-of-range sample index."""
    for c, d in enumerate(dims):
        col = idx[:, c]
        bad = (col < 0) | (col >= d)
        if bool(np.any(bad)):
            k = int(np.argmax(bad))
            v = int(col[k])
            what = "negative" if v < 0 else f"out of range for size {d}"
            raise ValueError(
                f"other_idx[{k}, {c}] = {v} is {what} (mode {modes[c]}); "
                f"the largest index in that column is {int(col.max())}"
            )
