"""The data-format protocol: everything a solver may ask of a tensor.

CP-ALS, SPALS and every later solver reach their data only through these
operations, so a new storage format (a chunked Dask array, a partitioned
sparse store on disk) plugs into every solver by implementing one class:

========================  ===================================================
``xp``, ``shape``,        array namespace, dimensions, floating dtype, and an
``dtype``, ``like``       array on the data's device (new arrays go beside it)
``norm_sq()``             ``||X||_F^2`` as a Python float
``mttkrp(factors, n)``    ``unfold(X, n) @ khatri_rao(factors, skip=n)``;
                          formats may keep partial results between
                          consecutive modes (dense: the dimension tree)
``mode_gram(n)``          ``unfold(X, n) @ unfold(X, n).T`` (``I_n x I_n``)
``leading_subspace``      leading left singular vectors of ``unfold(X, n)``
``(n, k, rng)``           (SVD initialisation)
``residual_norm_sq``      exact ``||X - [[weights; factors]]||_F^2``
``(weights, factors)``
``sampled_fibers``        the mode-``n`` fibers at sampled indices of the other
``(n, indices)``          modes: a dense ``(n_samples, I_n)`` array or
                          `SparseRows`
``check_finite(name)``    raise ``ValueError`` naming ``name`` on NaN/Inf
========================  ===================================================

Optionally, ``max_abs()`` and ``scaled(factor)`` (a format of
``factor * X``) let the solvers bring data of extreme magnitude into the
floating-point range exactly (``tensorfact.formats._scale``); a format
without them is used in its own units.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from .. import _backend as B
from .._validation import check_array, check_positive_int

__all__ = ["SparseRows", "TensorFormat"]


@runtime_checkable
class TensorFormat(Protocol):
    """What a solver needs from a data tensor (see the module docstring)."""

    xp: ModuleType
    shape: tuple[int, ...]
    dtype: Any
    like: Any

    def norm_sq(self) -> float: ...

    def mttkrp(self, factors: Any, mode: int, /) -> Any: ...

    def mode_gram(self, mode: int) -> Any: ...

    def leading_subspace(self, mode: int, k: int, rng: Any) -> Any: ...

    def residual_norm_sq(self, weights: Any, factors: Any) -> float: ...

    def sampled_fibers(self, mode: int, indices: Any) -> Any: ...

    def check_finite(self, name: str = "X") -> None: ...


class SparseRows:
    """Sampled fibers in coordinate form: ``rows[row[t], col[t]] += val[t]``.

    Returned by `TensorFormat.sampled_fibers` for sparse formats: ``row``
    is the sample number, ``col`` the index along the free mode, ``val`` the
    entry; ``n_columns`` is the size of the free mode.

    Parameters
    ----------
    row, col : 1-D integer arrays
        Sample numbers (``>= 0``) and column indices (in ``[0, n_columns)``).
    val : 1-D array of real numbers
        The entries, as many as ``row`` and ``col``.
    n_columns : int
        Size of the free mode.

    Raises
    ------
    TypeError
        Arguments that are not arrays, non-integer indices, non-numeric
        values, mixed namespaces; ``n_columns`` not an integer.
    ValueError
        Arrays that are not 1-D or differ in length, an index out of range,
        ``n_columns < 1``.
    """

    __slots__ = ("row", "col", "val", "n_columns")

    def __init__(self, row: Any, col: Any, val: Any, n_columns: int) -> None:
        n_columns = check_positive_int(n_columns, "n_columns")
        for name, a in (("row", row), ("col", col), ("val", val)):
            check_array(a, name, ndim=1)
        xp = B.namespace(row, col, val)
        for name, a in (("row", row), ("col", col)):
            if not xp.isdtype(a.dtype, "integral"):
                raise TypeError(f"{name} must have an integer dtype, got {a.dtype}")
        n = int(row.shape[0])
        if int(col.shape[0]) != n or int(val.shape[0]) != n:
            raise ValueError(f"row, col and val must have one length, got {n}, "
                             f"{int(col.shape[0])} and {int(val.shape[0])}")
        if n:
            if B.to_float(xp.min(row)) < 0:
                raise ValueError(f"row holds a negative index {int(B.to_float(xp.min(row)))}")
            lo, hi = B.to_float(xp.min(col)), B.to_float(xp.max(col))
            if lo < 0 or hi >= n_columns:
                raise ValueError(f"col holds index {int(lo if lo < 0 else hi)}, out of range "
                                 f"[0, n_columns={n_columns})")
        self.row, self.col, self.val, self.n_columns = row, col, val, n_columns
