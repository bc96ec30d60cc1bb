"""Turning a solver's input into a data format."""

from __future__ import annotations

from typing import Any

from .. import _backend as B
from .._validation import check_tensor
from ._dense import DenseTensor
from ._protocol import TensorFormat

__all__ = ["as_format"]


def as_format(X: Any, /, *, check_finite: bool = True, name: str = "X") -> TensorFormat:
    """The data-format view of a solver's input.

    Parameters
    ----------
    X : array or TensorFormat
        A dense array of any array API namespace (validated: real floating
        after promotion, at least two modes, no empty mode), a
        ``dask.array.Array`` (wrapped in a ``DaskDenseTensor``, read chunk by
        chunk) or an object implementing `TensorFormat`
        (``SparseTensor``, ...), returned as it is.
    check_finite : bool
        Reject NaN/Inf in ``X`` (``ValueError``).
    name : str
        The argument's name in error messages.

    Returns
    -------
    TensorFormat

    Raises
    ------
    TypeError
        ``X`` is neither an array nor a data format; complex dtype.
    ValueError
        Fewer than two modes, an empty mode, NaN/Inf with ``check_finite``.

    Examples
    --------
    >>> import numpy as np
    >>> fmt = as_format(np.ones((2, 3, 4)))
    >>> fmt.shape, fmt.norm_sq()
    ((2, 3, 4), 24.0)
    """
    if isinstance(X, TensorFormat):
        if len(X.shape) < 2:
            raise ValueError(f"{name} must have at least 2 modes, got shape {X.shape}")
        if check_finite:
            X.check_finite(name)
        return X
    if B.is_dask_array(X):
        from ._dask_dense import DaskDenseTensor

        data = DaskDenseTensor(X, name=name)
        if check_finite:
            data.check_finite(name)
        return data
    if not B.is_array(X):
        raise TypeError(
            f"{name} must be an array or a tensorfact data format (SparseTensor, ...), "
            f"got {type(X).__name__}"
        )
    xp = B.namespace(X)
    return DenseTensor(check_tensor(X, xp, name=name, finite=check_finite), xp)
