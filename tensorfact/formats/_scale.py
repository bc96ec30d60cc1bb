"""Keeping a solver's arithmetic inside the floating-point range whatever the data's units.

Sums of squares of data around ``2^±512`` (float64) overflow or underflow, so
the norm, the error and every Gram matrix would depend on the data's units.
`safe_scale` multiplies such data by a power of two (an exact operation)
that brings its largest magnitude near 1, so the solver's iterates are the
same, bit for bit up to that power of two, as for data in ordinary units; the
solver divides its weights by the returned scale at the end. Data whose norm
is already in a safe window is used as it is (no copy, no extra pass).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B

__all__ = ["safe_scale", "scale_factor", "scaled_array", "sum_of_squares", "unscaled_product"]


def _window(dtype: Any) -> tuple[float, float]:
    """Norms in ``[lo, hi]`` need no scaling: squares and products stay normal numbers."""
    info = np.finfo(np.dtype(str(dtype).split(".")[-1]))
    return 2.0 ** (info.minexp // 4), 2.0 ** (info.maxexp // 4)


def safe_scale(data: Any, norm_sq: float) -> tuple[Any, float]:
    """``(data scaled by a power of two, the power)`` when ``||data||`` is extreme.

    Parameters
    ----------
    data : TensorFormat
        A data format; formats with ``max_abs()`` and ``scaled(factor)``
        (``DenseTensor``, ``SparseTensor``) are rescaled when needed, others
        are used as they are.
    norm_sq : float
        ``data.norm_sq()`` (already computed by the caller).

    Returns
    -------
    (TensorFormat, float)
        The format to solve on and the factor it was multiplied by (1.0 when
        nothing was done).
    """
    if not (hasattr(data, "max_abs") and hasattr(data, "scaled")):
        return data, 1.0
    factor = scale_factor(data.dtype, norm_sq, data.max_abs)
    return (data, 1.0) if factor == 1.0 else (data.scaled(factor), factor)


def scale_factor(dtype: Any, norm_sq: float, max_abs: Callable[[], float]) -> float:
    """The power of two that brings data of norm ``sqrt(norm_sq)`` near 1, or 1.0.

    1.0 when the norm lies in the dtype's safe window (``max_abs`` is then
    not called), for the zero tensor, non-finite data and dtypes NumPy does
    not know (e.g. bfloat16).
    """
    try:
        lo, hi = _window(dtype)
    except TypeError:  # a dtype NumPy does not know (e.g. bfloat16): leave it
        return 1.0
    nrm = math.sqrt(norm_sq) if math.isfinite(norm_sq) else math.inf
    if lo <= nrm <= hi:
        return 1.0
    m = float(max_abs())
    if not (m > 0 and math.isfinite(m)):  # the zero tensor (or non-finite data)
        return 1.0
    # 2^-e with m = f 2^e, f in [0.5, 1); capped so the factor itself is finite when
    # m is subnormal (the data then lands near 2^-74, well inside the safe window)
    return math.ldexp(1.0, min(-math.frexp(m)[1], 1000))


def sum_of_squares(X: Any, xp: ModuleType) -> float:
    """``||X||_F^2`` as a Python float (one pass; inf where the squares overflow)."""
    flat = xp.reshape(X, (-1,))
    with warnings.catch_warnings():  # overflow gives inf: the callers rescale
        warnings.simplefilter("ignore", RuntimeWarning)
        return B.to_float(xp.vecdot(flat, flat))


def scaled_array(X: Any, xp: ModuleType) -> tuple[Any, float, float]:
    """``(scale * X, scale, ||scale * X||_F^2)`` for a plain array, as `safe_scale` does.

    ``scale`` is a power of two (1.0 for data of ordinary magnitude, with no
    copy): sums of squares, singular values squared and errors computed on
    the result are finite and accurate; divide them by ``scale`` (or
    ``scale**2``) for the data's units.
    """
    nsq = sum_of_squares(X, xp)
    factor = scale_factor(X.dtype, nsq, lambda: B.to_float(xp.max(xp.abs(X))))
    if factor == 1.0:
        return X, 1.0, nsq
    Xs = X * factor
    return Xs, factor, sum_of_squares(Xs, xp)


def unscaled_product(xp: ModuleType, arrays: list[Any], scale: float) -> list[Any]:
    """Arrays whose (Kronecker or outer) product is that of ``arrays`` divided by ``scale``.

    ``scale`` is a power of two from `safe_scale` or `scaled_array`. Usually
    only the last array is divided; where that would make entries subnormal
    (data of subnormal magnitude), the power of two is shared out between all
    the arrays instead (exact), so that no entry loses precision.
    """
    last = arrays[-1] / scale
    if scale <= 1.0:
        return arrays[:-1] + [last]
    tiny = float(np.finfo(np.dtype(str(last.dtype).split(".")[-1])).tiny)
    size = xp.abs(last)
    if not bool(xp.any((size > 0) & (size < tiny))):
        return arrays[:-1] + [last]
    k = math.frexp(scale)[1] - 1  # scale = 2^k
    q = k // len(arrays)
    return ([A * math.ldexp(1.0, -q) for A in arrays[:-1]]
            + [arrays[-1] * math.ldexp(1.0, -(k - q * (len(arrays) - 1)))])
