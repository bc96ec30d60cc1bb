"""Sparse tensors in coordinate (COO) format.

`SparseTensor` stores the nonzeros of an N-way tensor as an
``(nnz, N)`` integer coordinate array and an ``(nnz,)`` value array, in
canonical order (C order of the multi-index, duplicates summed). It plugs into
`tensorfact.cp_als` (exact sparse MTTKRP) and serves the sampled-fiber
access of SPALS through `SparseTensor.gather_fibers`.

Coordinates and values may live in NumPy (Numba kernels) or any array API
namespace (pure array-API code paths with the same results); the namespace of
the input is kept.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B
from .._kernels import sparse as K
from .._validation import check_array, check_choice, check_factor_shapes, check_int, check_mode
from . import _sparse_ops as _ops
from . import _sparse_ttm
from ._protocol import SparseRows

__all__ = ["SparseTensor"]

_INT64_MAX = (1 << 63) - 1


def _check_shape(shape: Any) -> tuple[int, ...]:
    try:
        dims = tuple(shape)
    except TypeError as exc:
        raise TypeError(f"shape must be a sequence of integers, got {shape!r}") from exc
    out = []
    for m, d in enumerate(dims):
        if isinstance(d, bool) or not isinstance(d, (int, np.integer)):
            raise TypeError(f"shape[{m}] must be an integer, got {d!r}")
        if int(d) < 1:
            raise ValueError(f"shape[{m}] must be >= 1, got {d}")
        out.append(int(d))
    if not out:
        raise ValueError("shape must have at least one mode")
    return tuple(out)


def _linear_index(xp: ModuleType, coords: Any, dims: Sequence[int], cols: Sequence[int]) -> Any:
    """C-order linear index of ``coords[:, cols]`` over ``dims`` (int64)."""
    if not cols:
        return xp.zeros((int(coords.shape[0]),), dtype=xp.int64, device=B.device(coords))
    lin = coords[:, cols[0]]
    for c in cols[1:]:
        lin = lin * dims[c] + coords[:, c]
    return lin


class SparseTensor:
    """An N-way sparse tensor in coordinate (COO) format.

    Parameters
    ----------
    coords : integer array of shape (nnz, N)
        One row per stored entry, one column per mode (0-based). Only the
        ``(nnz, N)`` layout is accepted (pydata ``sparse.COO`` uses
        ``(N, nnz)``; `from_pydata` transposes). NumPy arrays, any array
        API array, or nested sequences (converted with NumPy).
    values : array of shape (nnz,)
        Same namespace as ``coords``. Integer/boolean values are promoted to
        the namespace's default float.
    shape : sequence of N positive ints
    sum_duplicates : bool
        Sum entries with the same coordinates (default). With ``False`` a
        repeated coordinate raises ``ValueError`` instead.
    check : bool
        Check that coordinates are in range and values finite. ``False``
        skips these checks (for trusted input); a tensor built from bad data
        without checks gives undefined results.

    Raises
    ------
    ValueError
        Coordinates of the wrong shape, negative or ``>= shape`` (the message
        gives the first offending entry), NaN/Inf values, repeated
        coordinates with ``sum_duplicates=False``.
    TypeError
        Non-integer coordinates, complex values, mixed namespaces.

    Notes
    -----
    The stored entries are kept sorted by their C-order linear index (mode 0
    slowest), duplicates summed; explicit zeros are kept. The object is
    immutable: `coords` and `values` of NumPy tensors are
    read-only views, and no method modifies them.

    Two lazily built, cached indexes serve the kernels:

    * per mode ``n``, the permutation sorting the entries by their mode-``n``
      index (sparse MTTKRP, parallel over balanced chunks of output rows);
    * per mode ``n``, the *fiber index*: the entries sorted by the linear index
      of all the other modes (C order over the modes ``!= n``), so the fiber
      ``X[i_0, ..., :, ..., i_{N-1}]`` is located by binary search in
      ``O(log nnz)`` (`gather_fibers`).

    Examples
    --------
    >>> import numpy as np
    >>> X = SparseTensor(np.array([[0, 1, 2], [3, 0, 1], [0, 1, 2]]), np.array([1.0, 2.0, 3.0]),
    ...                  (4, 2, 3))
    >>> X.nnz, X.shape
    (2, (4, 2, 3))
    >>> X.to_dense()[0, 1, 2]
    np.float64(4.0)
    """

    __slots__ = ("_coords", "_values", "_shape", "_xp", "_cache")

    def __init__(self, coords: Any, values: Any, shape: Sequence[int], *,
                 sum_duplicates: bool = True, check: bool = True) -> None:
        dims = _check_shape(shape)
        if not B.is_array(coords):
            coords = np.asarray(coords)
        if not B.is_array(values):
            values = np.asarray(values)
        xp = B.namespace(coords, values, name="coords and values")
        B.check_real_dtype(coords, xp, name="coords")
        if not xp.isdtype(coords.dtype, "integral"):
            raise TypeError(f"coords must have an integer dtype, got {coords.dtype}")
        N = len(dims)
        if coords.ndim == 1 and int(coords.shape[0]) == 0:
            coords = xp.reshape(coords, (0, N))
        if coords.ndim != 2 or int(coords.shape[1]) != N:
            raise ValueError(
                f"coords must have shape (nnz, {N}) for a {N}-way shape {dims}, "
                f"got {tuple(coords.shape)}"
            )
        if values.ndim != 1 or int(values.shape[0]) != int(coords.shape[0]):
            raise ValueError(
                f"values must have shape ({int(coords.shape[0])},) to match coords, "
                f"got {tuple(values.shape)}"
            )
        values = B.as_float_array(values, xp, name="values")
        coords = xp.astype(coords, xp.int64)
        if check:
            _check_coords(xp, coords, dims)
            if not bool(xp.all(xp.isfinite(values))):
                bad = int(B.to_float(xp.argmax(xp.astype(~xp.isfinite(values), xp.int8))))
                raise ValueError(f"values contains NaN or Inf (first at entry {bad})")
        coords, values = _canonicalize(xp, coords, values, dims, sum_duplicates)
        self._set(xp, coords, values, dims)

    def _set(self, xp: ModuleType, coords: Any, values: Any, dims: tuple[int, ...]) -> None:
        if B.is_numpy(xp):
            coords = np.ascontiguousarray(coords)
            values = np.ascontiguousarray(values)
            coords.flags.writeable = False
            values.flags.writeable = False
        self._xp = xp
        self._coords = coords
        self._values = values
        self._shape = dims
        self._cache: dict[Any, Any] = {}

    @classmethod
    def _trusted(cls, xp: ModuleType, coords: Any, values: Any,
                 dims: tuple[int, ...]) -> SparseTensor:
        """Wrap arrays already in canonical form (sorted, unique, in range); no copy."""
        obj = cls.__new__(cls)
        obj._set(xp, coords, values, dims)
        return obj

    # ------------------------------------------------------------------ #
    # properties
    # ------------------------------------------------------------------ #
    @property
    def coords(self) -> Any:
        """``(nnz, N)`` int64 coordinates in canonical order (read-only for NumPy)."""
        return self._coords

    @property
    def values(self) -> Any:
        """``(nnz,)`` values matching `coords` (read-only for NumPy)."""
        return self._values

    @property
    def shape(self) -> tuple[int, ...]:
        """Tensor dimensions."""
        return self._shape

    @property
    def ndim(self) -> int:
        """Number of modes."""
        return len(self._shape)

    @property
    def nnz(self) -> int:
        """Number of stored entries (after summing duplicates)."""
        return int(self._values.shape[0])

    @property
    def dtype(self) -> Any:
        """Floating dtype of the values."""
        return self._values.dtype

    @property
    def density(self) -> float:
        """``nnz / prod(shape)``."""
        return self.nnz / math.prod(self._shape)

    @property
    def xp(self) -> ModuleType:
        """Array namespace of the coordinates and values."""
        return self._xp

    def __repr__(self) -> str:
        return (f"SparseTensor(shape={self._shape}, nnz={self.nnz}, dtype={self.dtype}, "
                f"namespace={self._xp.__name__})")

    # ------------------------------------------------------------------ #
    # conversions
    # ------------------------------------------------------------------ #
    @classmethod
    def from_dense(cls, X: Any, /) -> SparseTensor:
        """Nonzero entries of a dense array (any namespace), kept in its namespace."""
        check_array(X, "X", min_ndim=1)
        xp = B.namespace(X)
        X = B.as_float_array(X, xp, name="X")
        dims = tuple(int(s) for s in X.shape)
        flat = xp.reshape(X, (-1,))
        (lin,) = xp.nonzero(flat)
        lin = xp.astype(lin, xp.int64)
        vals = xp.take(flat, lin)
        cols = []
        rem = lin
        for d in reversed(dims):
            cols.append(rem % d)
            rem = rem // d
        coords = xp.stack(cols[::-1], axis=1) if lin.shape[0] else xp.zeros(
            (0, len(dims)), dtype=xp.int64, device=B.device(X))
        if not bool(xp.all(xp.isfinite(vals))):
            raise ValueError("X contains NaN or Inf")
        return cls._trusted(xp, coords, vals, dims)

    def to_dense(self) -> Any:
        """Dense array of `shape` in the tensor's namespace."""
        xp = self._xp
        total = math.prod(self._shape)
        lin = _linear_index(xp, self._coords, self._shape, list(range(self.ndim)))
        if B.is_numpy(xp):
            out = np.zeros(total, dtype=self.dtype)
            out[lin] = self._values
        else:
            # exact gather from the sorted linear indices (no scatter in the standard)
            dev = B.device(self._values)
            if self.nnz == 0:
                out = xp.zeros((total,), dtype=self.dtype, device=dev)
            else:
                grid = xp.arange(total, dtype=xp.int64, device=dev)
                pos = xp.searchsorted(lin, grid)
                pos = xp.where(pos < self.nnz, pos, xp.zeros_like(pos))
                hit = xp.take(lin, pos) == grid
                out = xp.where(hit, xp.take(self._values, pos),
                               xp.zeros((), dtype=self.dtype, device=dev))
        return xp.reshape(out, self._shape)

    @classmethod
    def from_scipy(cls, M: Any, /) -> SparseTensor:
        """A 2-way tensor from a ``scipy.sparse`` matrix or array (duplicates summed)."""
        if not hasattr(M, "tocoo"):
            raise TypeError(f"M must be a scipy.sparse matrix or array, got {type(M).__name__}")
        C = M.tocoo()
        coords = np.stack([np.asarray(C.row, dtype=np.int64), np.asarray(C.col, dtype=np.int64)],
                          axis=1)
        data = np.asarray(C.data)
        B.check_real_dtype(data, B.namespace(data), name="M")
        if data.dtype.kind == "f" and not bool(np.all(np.isfinite(data))):
            raise ValueError("M contains NaN or Inf values")
        return cls(coords, data, tuple(int(s) for s in C.shape))

    def to_scipy(self, format: str = "coo") -> Any:
        """``scipy.sparse`` array (2-way NumPy tensors only); ``format`` "coo", "csr" or "csc"."""
        import scipy.sparse as sps

        if self.ndim != 2:
            raise ValueError(f"to_scipy needs a 2-way tensor, this one has {self.ndim} modes")
        if not B.is_numpy(self._xp):
            raise TypeError("to_scipy needs NumPy-backed data; convert coords/values first")
        A = sps.coo_array((np.array(self._values), (np.array(self._coords[:, 0]),
                                                    np.array(self._coords[:, 1]))),
                          shape=self._shape)
        format = check_choice(format, "format", ("coo", "csr", "csc"))
        return A if format == "coo" else A.asformat(format)

    @classmethod
    def from_pydata(cls, S: Any, /) -> SparseTensor:
        """From a pydata ``sparse.COO`` (fill value must be 0)."""
        coords = getattr(S, "coords", None)
        data = getattr(S, "data", None)
        if coords is None or data is None or not hasattr(S, "shape"):
            raise TypeError(f"S must be a pydata sparse.COO, got {type(S).__name__}")
        fill = getattr(S, "fill_value", 0)
        if fill is not None and float(fill) != 0.0:
            raise ValueError(f"S has fill value {fill}; only fill value 0 is supported")
        c = np.asarray(coords, dtype=np.int64)
        return cls(np.ascontiguousarray(c.T), np.asarray(data), tuple(int(s) for s in S.shape))

    def to_pydata(self) -> Any:
        """Convert to a pydata ``sparse.COO`` with the same entries (NumPy tensors only)."""
        import sparse

        if not B.is_numpy(self._xp):
            raise TypeError("to_pydata needs NumPy-backed data; convert coords/values first")
        return sparse.COO(np.array(self._coords.T), np.array(self._values), shape=self._shape,
                          has_duplicates=False, sorted=True)

    def norm(self) -> Any:
        """Frobenius norm as a 0-d array in the tensor's namespace."""
        xp = self._xp
        v = self._values
        return xp.sqrt(xp.vecdot(v, v))

    def _norm_sq_float64(self) -> float:
        xp = self._xp
        v = self._values
        if v.dtype != xp.float64:
            v = xp.astype(v, xp.float64)
        with warnings.catch_warnings():  # overflow gives inf: the solvers rescale
            warnings.simplefilter("ignore", RuntimeWarning)
            return B.to_float(xp.vecdot(v, v))  # no nnz-sized temporary

    # ------------------------------------------------------------------ #
    # indexes
    # ------------------------------------------------------------------ #
    def _check_mode(self, mode: Any) -> int:
        return check_mode(mode, self.ndim)

    def _mode_layout(self, mode: int) -> tuple[Any, Any, Any]:
        """Entries sorted by their mode-``mode`` index (NumPy only, cached).

        See `tensorfact._kernels.sparse.mode_sorted`; costs ``nnz * (N-1)``
        indices plus ``nnz`` values of memory per mode.
        """
        key = ("layout", mode)
        if key not in self._cache:
            self._cache[key] = K.mode_sorted(self._coords, self._values, mode, self._shape[mode])
        return self._cache[key]

    def _fiber_index(self, mode: int) -> tuple[Any, Any]:
        """``(keys, perm)``: entries sorted by the other modes' linear index (cached)."""
        key = ("fiber", mode)
        if key not in self._cache:
            xp = self._xp
            others = [m for m in range(self.ndim) if m != mode]
            if math.prod(self._shape[m] for m in others) > _INT64_MAX:
                raise NotImplementedError(
                    "the product of the other modes' sizes exceeds int64; fiber index unavailable"
                )
            lin = _linear_index(xp, self._coords, self._shape, others)
            if mode == self.ndim - 1:
                perm = xp.arange(self.nnz, dtype=xp.int64, device=B.device(self._values))
                keys = lin
            elif B.is_numpy(xp):
                perm = np.argsort(lin, kind="stable").astype(np.int64)
                keys = lin[perm]
            else:
                perm = xp.astype(xp.argsort(lin, stable=True), xp.int64)
                keys = xp.take(lin, perm)
            self._cache[key] = (keys, perm)
        return self._cache[key]

    def _mode_column(self, mode: int) -> Any:
        key = ("col", mode)
        if key not in self._cache:
            c = self._coords[:, mode]
            self._cache[key] = np.ascontiguousarray(c) if B.is_numpy(self._xp) else c
        return self._cache[key]

    # ------------------------------------------------------------------ #
    # sampled fibers
    # ------------------------------------------------------------------ #
    def gather_fibers(self, mode: int, other_idx: Any, *, use_numba: bool | None = None
                      ) -> tuple[Any, Any, Any]:
        """Nonzeros of sampled mode-``mode`` fibers, as COO triplets.

        Parameters
        ----------
        mode : int
            The free mode of the fibers.
        other_idx : integer array of shape (n_s, N-1)
            Row ``j`` holds the indices of sample ``j`` in every mode except
            ``mode``, in increasing mode order. Repeated rows are served
            independently. A NumPy array is accepted for a tensor held in
            another namespace (moved there; sample indices are small).
        use_numba : bool, optional
            Force (``True``, NumPy only) or forbid (``False``) the Numba
            kernel; default: Numba for NumPy data.

        Returns
        -------
        sample_pos : (T,) int64
            Sample number ``j`` in ``[0, n_s)`` of each returned entry,
            non-decreasing.
        mode_idx : (T,) int64
            Index along ``mode`` of the entry; increasing within a sample.
        values : (T,) array of the tensor's dtype
            ``X[..., mode_idx, ...]`` at the sample's other indices.

        Raises
        ------
        ValueError
            ``other_idx`` of the wrong shape or with an index out of range.

        Notes
        -----
        Uses the cached fiber index of ``mode`` (built on first use,
        ``O(nnz log nnz)``); each sample then costs a binary search,
        ``O(log nnz)``, plus its fiber length. For a tensor ``X`` densified as
        ``D``, ``sum`` of the returned values with ``sample_pos == j`` placed
        at ``mode_idx`` equals the fiber ``D[i_0, ..., :, ..., i_{N-1}]``.

        Examples
        --------
        >>> import numpy as np
        >>> X = SparseTensor(np.array([[0, 0, 1], [0, 2, 1], [1, 0, 0]]),
        ...                  np.array([1.0, 2.0, 3.0]), (2, 3, 2))
        >>> pos, idx, val = X.gather_fibers(1, np.array([[0, 1], [1, 1]]))
        >>> pos.tolist(), idx.tolist(), val.tolist()
        ([0, 0], [0, 2], [1.0, 2.0])
        """
        mode = self._check_mode(mode)
        xp = self._xp
        N = self.ndim
        others = [m for m in range(N) if m != mode]
        S = self._as_index_array(other_idx, "other_idx")
        if S.ndim != 2 or int(S.shape[1]) != N - 1:
            raise ValueError(
                f"other_idx must have shape (n_samples, {N - 1}) for mode {mode} of a {N}-way "
                f"tensor, got {tuple(S.shape)}"
            )
        sub = tuple(self._shape[m] for m in others)
        _check_coords(xp, S, sub, name="other_idx", modes=others)
        lin = _linear_index(xp, S, sub, list(range(N - 1)))
        keys, perm = self._fiber_index(mode)
        col = self._mode_column(mode)
        numba_ok = B.is_numpy(xp)
        if use_numba and not numba_ok:
            raise ValueError("use_numba=True needs NumPy data")
        if numba_ok and use_numba is not False:
            return K.gather_fibers_numba(keys, perm, col, self._values,
                                         np.ascontiguousarray(lin, dtype=np.int64))
        return K.gather_fibers_xp(xp, keys, perm, col, self._values, lin)

    def _as_index_array(self, idx: Any, name: str) -> Any:
        xp = self._xp
        if not B.is_array(idx):
            idx = np.asarray(idx)
        if not B.is_numpy(xp) and B.is_numpy(B.namespace(idx)):
            if not np.issubdtype(idx.dtype, np.integer):
                raise TypeError(f"{name} must have an integer dtype, got {idx.dtype}")
            return B.from_numpy(xp, idx.astype(np.int64), like=self._values, dtype=xp.int64)
        B.namespace(self._values, idx, name=name)
        if not xp.isdtype(idx.dtype, "integral"):
            raise TypeError(f"{name} must have an integer dtype, got {idx.dtype}")
        return xp.astype(idx, xp.int64)

    # ------------------------------------------------------------------ #
    # MTTKRP and CP-ALS
    # ------------------------------------------------------------------ #
    def mttkrp(self, factors: Sequence[Any], mode: int, *, use_numba: bool | None = None) -> Any:
        """Sparse MTTKRP: ``unfold(X, mode) @ khatri_rao(factors, skip=mode)``.

        Parameters
        ----------
        factors : sequence of N arrays (I_m, R) in the tensor's namespace
            ``factors[mode]`` is ignored (only its shape is checked).
        mode : int
        use_numba : bool, optional
            Force or forbid the Numba kernel (NumPy only); default: Numba
            for NumPy data.

        Returns
        -------
        (I_mode, R) array in the factors' dtype.
        """
        mode = self._check_mode(mode)
        factors = list(factors)
        self._check_factors(factors)
        xp = self._xp
        numba_ok = B.is_numpy(xp)
        if use_numba and not numba_ok:
            raise ValueError("use_numba=True needs NumPy data")
        if numba_ok and use_numba is not False:
            rowptr, others, vals = self._mode_layout(mode)
            return K.mttkrp_numba(rowptr, others, vals, [np.asarray(A) for A in factors], mode)
        return K.mttkrp_xp(xp, self._coords, self._values, factors, mode, self._shape[mode])

    def multi_mode_dot(self, matrices: Sequence[Any], modes: Sequence[int], *,
                       transpose: bool = False) -> Any:
        """TTM chain on the nonzeros, a dense array (see `tensorfact.tenalg.multi_mode_dot`).

        Memory: the nonzeros plus the dense result; the tensor is never
        densified. Call it through ``tensorfact.tenalg.multi_mode_dot(X, ...)``,
        which checks the arguments.
        """
        return _sparse_ttm.multi_mode_dot(self, list(matrices), [int(m) for m in modes],
                                          transpose=bool(transpose))

    def _check_factors(self, factors: list[Any]) -> None:
        B.namespace(self._values, *factors, name="factors")
        check_factor_shapes(factors, self._shape)

    # ------------------------------------------------------------------ #
    # the data-format protocol (tensorfact.formats.TensorFormat)
    # ------------------------------------------------------------------ #
    @property
    def like(self) -> Any:
        """An array on the tensor's device and in its dtype (the values)."""
        return self._values

    def check_finite(self, name: str = "X") -> None:
        """Raise ``ValueError`` naming ``name`` if a stored value is NaN or Inf.

        Values are checked at construction (unless ``check=False``); this
        re-checks them.
        """
        if not bool(self._xp.all(self._xp.isfinite(self._values))):
            raise ValueError(f"{name} contains NaN or Inf values")

    def norm_sq(self) -> float:
        """``||X||_F^2`` accumulated in float64."""
        return self._norm_sq_float64()

    def max_abs(self) -> float:
        """Largest magnitude of a stored value (0 for an empty tensor)."""
        if self.nnz == 0:
            return 0.0
        v = self._values
        return max(B.to_float(self._xp.max(v)), -B.to_float(self._xp.min(v)))

    def scaled(self, factor: float) -> SparseTensor:
        """The tensor with every value multiplied by ``factor`` (same coordinates)."""
        return SparseTensor._trusted(self._xp, self._coords, self._values * factor, self._shape)

    def mode_gram(self, mode: int) -> Any:
        """``unfold(X, mode) @ unfold(X, mode).T`` computed sparsely (dense I_n x I_n)."""
        return _ops.mode_gram(self, self._check_mode(mode))

    def leading_subspace(self, mode: int, k: int, rng: Any) -> Any:
        """Leading ``k`` left singular vectors of ``unfold(X, mode)``.

        Eigenvectors of `mode_gram` for small modes; a randomised range
        finder on the compressed unfolding for large ones (NumPy data).
        """
        mode = self._check_mode(mode)
        In = self._shape[mode]
        k = check_int(k, "k", low=1, high=In, what=f"an integer in [1, {In}] (the size of mode "
                                                     f"{mode})")
        return _ops.leading_subspace(self, mode, k, B.check_rng(rng))

    def residual_norm_sq(self, weights: Any, factors: Any) -> float:
        """Exact ``||X - [[weights; factors]]||^2`` in float64, never densifying."""
        return _ops.residual_norm_sq(self, weights, list(factors))

    def sampled_fibers(self, mode: int, indices: Any) -> SparseRows:
        """The sampled mode-``mode`` fibers as `SparseRows` (see `gather_fibers`)."""
        pos, col, val = self.gather_fibers(mode, indices)
        return SparseRows(pos, col, val, self._shape[int(mode)])


def _check_coords(xp: ModuleType, coords: Any, dims: Sequence[int], *, name: str = "coords",
                  modes: Sequence[int] | None = None) -> None:
    """Raise ``ValueError`` naming the first out-of-range entry."""
    if int(coords.shape[0]) == 0:
        return
    if modes is None:
        modes = list(range(len(dims)))
    for c, d in enumerate(dims):
        col = coords[:, c]
        bad = (col < 0) | (col >= d)
        if bool(xp.any(bad)):
            k = int(B.to_float(xp.argmax(xp.astype(bad, xp.int8))))
            v = int(B.to_float(col[k]))
            what = "negative" if v < 0 else f"out of range for size {d}"
            raise ValueError(
                f"{name}[{k}, {c}] = {v} is {what} (mode {modes[c]}); "
                f"the largest index in that column is {int(B.to_float(xp.max(col)))}"
            )


def _canonicalize(xp: ModuleType, coords: Any, values: Any, dims: tuple[int, ...],
                  sum_duplicates: bool) -> tuple[Any, Any]:
    """Sort entries into C order and sum (or reject) duplicates; always returns new arrays."""
    nnz = int(coords.shape[0])
    N = len(dims)
    if nnz == 0:
        return xp.reshape(xp.asarray(coords, copy=True), (0, N)), xp.asarray(values, copy=True)
    is_np = B.is_numpy(xp)
    if math.prod(dims) <= _INT64_MAX:
        lin = _linear_index(xp, coords, dims, list(range(N)))
        if is_np:
            if nnz > 1 and bool(np.all(lin[1:] > lin[:-1])):
                return np.array(coords, copy=True), np.array(values, copy=True)
            order = np.argsort(lin, kind="stable")
            lin_s = lin[order]
        else:
            order = xp.argsort(lin, stable=True)
            lin_s = xp.take(lin, order)
        new = _new_flags(xp, [lin_s])
    else:
        # lexicographic sort, last mode fastest
        if is_np:
            order = np.lexsort(tuple(coords[:, m] for m in reversed(range(N))))
        else:
            order = xp.arange(nnz, dtype=xp.int64, device=B.device(coords))
            for m in reversed(range(N)):
                col = xp.take(coords[:, m], order)
                order = xp.take(order, xp.argsort(col, stable=True))
        new = _new_flags(xp, [xp.take(coords[:, m], order) for m in range(N)])
    c_s = xp.take(coords, order, axis=0)
    v_s = xp.take(values, order)
    n_new = int(B.to_float(xp.sum(xp.astype(new, xp.int64))))
    if n_new == nnz:
        return c_s, v_s
    if not sum_duplicates:
        k = int(B.to_float(xp.argmax(xp.astype(~new, xp.int8))))
        dup = [int(v) for v in B.to_numpy(c_s[k, :])]
        raise ValueError(f"coords contains the repeated coordinate {tuple(dup)} "
                         "and sum_duplicates=False")
    if is_np:
        starts = np.flatnonzero(new)
        return c_s[starts], np.add.reduceat(v_s, starts)
    group = xp.cumulative_sum(xp.astype(new, xp.int64)) - 1
    (starts,) = xp.nonzero(new)
    summed = B.scatter_add(xp, n_new, group, v_s)
    # singletons keep their exact value (portable scatter-adds may round)
    nxt = xp.concat([new[1:], xp.ones((1,), dtype=xp.bool, device=B.device(new))])
    single = xp.take(nxt, starts)
    return xp.take(c_s, starts, axis=0), xp.where(single, xp.take(v_s, starts), summed)


def _new_flags(xp: ModuleType, cols: list[Any]) -> Any:
    """Boolean mask: entry differs from its predecessor in some column (first entry True)."""
    n = int(cols[0].shape[0])
    dev = B.device(cols[0])
    diff = xp.zeros((n - 1,), dtype=xp.bool, device=dev)
    for c in cols:
        diff = diff | (c[1:] != c[:-1])
    return xp.concat([xp.ones((1,), dtype=xp.bool, device=dev), diff])
