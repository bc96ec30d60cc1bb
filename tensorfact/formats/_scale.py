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
from typing import Any

import numpy as np

__all__ = ["safe_scale"]


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
    try:
        lo, hi = _window(data.dtype)
    except TypeError:  # a dtype NumPy does not know (e.g. bfloat16): leave it
        return data, 1.0
    nrm = math.sqrt(norm_sq) if math.isfinite(norm_sq) else math.inf
    if lo <= nrm <= hi:
        return data, 1.0
    if not (hasattr(data, "max_abs") and hasattr(data, "scaled")):
        return data, 1.0
    m = float(data.max_abs())
    if not (m > 0 and math.isfinite(m)):  # the zero tensor (or non-finite data)
        return data, 1.0
    # 2^-e with m = f 2^e, f in [0.5, 1); capped so the factor itself is finite when
    # m is subnormal (the data then lands near 2^-74, well inside the safe window)
    factor = math.ldexp(1.0, min(-math.frexp(m)[1], 1000))
    return data.scaled(factor), factor
