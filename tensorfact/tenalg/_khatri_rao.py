"""Khatri-Rao (column-wise Kronecker) products."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import _backend as B
from .._validation import check_allocation, check_array, check_index

__all__ = ["gather_krp_rows", "khatri_rao", "krp_rows"]


def _check_factors(factors: Sequence[Any], name: str = "factors") -> int:
    """Validate a sequence of matrices with a common number of columns; return it."""
    if B.is_array(factors) or isinstance(factors, (str, bytes)) or not hasattr(factors,
                                                                               "__len__"):
        raise TypeError(f"{name} must be a list or tuple of 2-D arrays, got "
                        f"{type(factors).__name__}")
    if len(factors) == 0:
        raise ValueError(f"{name} must contain at least one matrix")
    R = None
    for i, A in enumerate(factors):
        check_array(A, f"{name}[{i}]")
        if A.ndim != 2:
            raise ValueError(f"{name}[{i}] must be a 2-D matrix, got shape {tuple(A.shape)}")
        if R is None:
            R = int(A.shape[1])
        elif int(A.shape[1]) != R:
            raise ValueError(
                f"all matrices in {name} must have the same number of columns: "
                f"{name}[0] has {R}, {name}[{i}] has {A.shape[1]}"
            )
    return int(R)  # type: ignore[arg-type]


def khatri_rao(factors: Sequence[Any], /, *, weights: Any = None, skip: int | None = None) -> Any:
    """Column-wise Kronecker product ``A_0 ⊙ A_1 ⊙ ... ⊙ A_{k-1}``.

    Row ``(i_0, ..., i_{k-1})`` (C order, ``i_{k-1}`` fastest) of the result is
    ``prod_m A_m[i_m, :]``, so that ``unfold(X, n) = A_n @ khatri_rao(others).T``
    for ``X`` a CP tensor; this matches ``tensorly.tenalg.khatri_rao``.

    Parameters
    ----------
    factors : sequence of (I_m, R) arrays
    weights : (R,) array, optional
        Multiplies the columns of the result.
    skip : int, optional
        Index of a factor to leave out (negative values count from the end).

    Returns
    -------
    (prod I_m, R) array

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[1.0, 2.0], [3.0, 4.0]]); Bm = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])
    >>> khatri_rao([A, Bm]).shape
    (6, 2)
    """
    if not isinstance(factors, (list, tuple)):
        raise TypeError(
            f"factors must be a list or tuple of matrices, got {type(factors).__name__}"
        )
    if skip is not None:
        skip = check_index(skip, "skip", len(factors))
    mats = [A for i, A in enumerate(factors) if i != skip]
    R = _check_factors(mats)
    if weights is not None:
        check_array(weights, "weights")
    xp = B.namespace(*mats, weights, name="factors" if weights is None else "factors and weights")
    if weights is not None and tuple(weights.shape) != (R,):
        raise ValueError(f"weights must have shape ({R},), got {tuple(weights.shape)}")
    check_allocation(math.prod(int(A.shape[0]) for A in mats) * R,
                     int(getattr(mats[0].dtype, "itemsize", 8)), "factors: the Khatri-Rao product")
    return _khatri_rao(xp, mats, weights)


def _khatri_rao(xp: Any, mats: Sequence[Any], weights: Any = None) -> Any:
    """`khatri_rao` of checked matrices (hot paths: no validation, ``xp`` given)."""
    R = int(mats[0].shape[1])
    out = mats[0]
    if weights is not None:
        out = out * weights[None, :]
    for A in mats[1:]:
        out = xp.reshape(out[:, None, :] * A[None, :, :], (-1, R))
    return out


def krp_rows(factors: Sequence[Any], rows: Any, /) -> Any:
    """Selected rows of ``khatri_rao(factors)`` without forming the product.

    Parameters
    ----------
    factors : sequence of (I_m, R) arrays
    rows : integer array of shape (n,) (linear row indices in C order) or
        (n, k) (one column of per-factor indices per factor)

    Returns
    -------
    (n, R) array whose row j is prod_m A_m[i_m(j), :].

    Raises
    ------
    TypeError
        ``rows`` not an integer array, factors that are not matrices of
        real numbers, or arrays from different namespaces.
    ValueError
        ``rows`` of the wrong shape, or an index out of range (negative, or
        beyond the number of rows of the product or of a factor).
    """
    _check_factors(factors)
    check_array(rows, "rows")
    xp = B.namespace(*factors, rows, name="factors and rows")
    if not xp.isdtype(rows.dtype, "integral"):
        raise TypeError(f"rows must have an integer dtype, got {rows.dtype}")
    dims = [int(A.shape[0]) for A in factors]
    if 0 in dims and int(rows.shape[0]) > 0:
        raise ValueError(f"factors[{dims.index(0)}] has no rows: no row of the Khatri-Rao "
                         "product can be selected")
    if rows.ndim == 1:
        bounds = [math.prod(dims)]
    elif rows.ndim == 2 and rows.shape[1] == len(factors):
        bounds = dims
    else:
        raise ValueError(
            f"rows must be 1-D linear indices or (n, {len(factors)}) multi-indices, "
            f"got shape {tuple(rows.shape)}"
        )
    if int(rows.shape[0]) > 0:
        for m, d in enumerate(bounds):
            col = rows if rows.ndim == 1 else rows[:, m]
            lo, hi = int(B.to_float(xp.min(col))), int(B.to_float(xp.max(col)))
            if lo < 0 or hi >= d:
                where = "" if rows.ndim == 1 else f" (column {m})"
                raise ValueError(f"rows{where} holds index {lo if lo < 0 else hi}, out of range "
                                 f"[0, {d})")
    if xp.isdtype(rows.dtype, "unsigned integer"):
        rows = xp.astype(rows, xp.int64)
    return gather_krp_rows(xp, factors, rows)


def gather_krp_rows(xp: Any, factors: Sequence[Any], rows: Any) -> Any:
    """`krp_rows` without validation (``rows`` signed integers, in range)."""
    dims = [int(A.shape[0]) for A in factors]
    if rows.ndim == 1:
        idx = []
        rem = rows
        for d in reversed(dims):
            idx.append(rem % d)
            rem = rem // d
        idx = idx[::-1]
    else:
        idx = [rows[:, m] for m in range(len(factors))]
    out = xp.take(factors[0], idx[0], axis=0)
    for A, i in zip(factors[1:], idx[1:]):
        out = out * xp.take(A, i, axis=0)
    return out


def _krp_size(dims: Sequence[int], R: int) -> int:
    return math.prod(dims) * R
