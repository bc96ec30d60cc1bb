"""Test helpers: namespace-aware assertions, backend enumeration, reference linear algebra.

Used by tensorfact's own test-suite; importable by downstream projects too.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np

from . import _backend as B

__all__ = ["assert_close", "available_backends", "expm", "lstsq", "rtol_for"]


def rtol_for(dtype: Any, xp: Any = None, factor: float = 4.0) -> float:
    """Default relative tolerance for ``dtype``: ``factor * sqrt(eps)``."""
    if xp is None:
        eps = float(np.finfo(dtype).eps)
    else:
        eps = B.finfo_eps(xp, dtype)
    return factor * eps ** 0.5


def assert_close(actual: Any, desired: Any, *, rtol: float | None = None, atol: float = 0.0,
                 xp: Any = None, check_dtype: bool = True, check_shape: bool = True,
                 check_namespace: bool = True, err_msg: str = "") -> None:
    """Assert ``actual`` matches ``desired`` in namespace, dtype, shape and values.

    ``desired`` may be an array of the same namespace or a NumPy array (then
    only values and shape are compared). ``rtol`` defaults to
    ``4 * sqrt(eps)`` of ``actual``'s dtype. Values are compared on the host
    (``numpy.testing.assert_allclose``) after the structural checks.
    """
    xa = B.namespace(actual)
    if check_namespace and xp is not None and xa is not xp:
        raise AssertionError(f"namespace {xa.__name__} != expected {xp.__name__}")
    if not isinstance(desired, np.ndarray) or B.is_numpy(xa):
        xd = B.namespace(desired)
        if check_namespace and xd is not xa:
            raise AssertionError(f"namespaces differ: {xa.__name__} vs {xd.__name__}")
        if check_dtype and actual.dtype != desired.dtype:
            raise AssertionError(f"dtype {actual.dtype} != {desired.dtype}")
    if check_shape and tuple(actual.shape) != tuple(desired.shape):
        raise AssertionError(f"shape {tuple(actual.shape)} != {tuple(desired.shape)}")
    if rtol is None:
        rtol = rtol_for(actual.dtype, xa)
    np.testing.assert_allclose(B.to_numpy(actual), B.to_numpy(desired), rtol=rtol, atol=atol,
                               err_msg=err_msg)


def available_backends() -> list[str]:
    """Names of the array libraries importable here (numpy always)."""
    names = ["numpy"]
    for mod in ("array_api_strict", "torch"):
        try:
            importlib.import_module(mod)
            names.append(mod)
        except ImportError:
            pass
    try:
        cupy = importlib.import_module("cupy")
        if cupy.cuda.runtime.getDeviceCount() > 0:
            names.append("cupy")
    except Exception:
        pass
    return names


def lstsq(xp: Any, A: Any, Y: Any) -> Any:
    """Least-squares solution of ``A X = Y`` (LAPACK ``gelsd``, else a pseudo-inverse)."""
    if B.is_numpy(xp):
        import scipy.linalg as sla

        return sla.lstsq(A, Y, check_finite=False, lapack_driver="gelsd")[0]
    if B.is_torch(xp):
        import torch

        if A.device.type == "cpu":
            return torch.linalg.lstsq(A, Y, driver="gelsd").solution
        return torch.linalg.pinv(A) @ Y
    return xp.linalg.pinv(A) @ Y


def expm(xp: Any, A: Any) -> Any:
    """Matrix exponential (the library's own ``_backend.expm``)."""
    return B.expm(xp, A)
