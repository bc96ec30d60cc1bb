"""Argument checks shared by the public functions.

Every check raises ``ValueError`` or ``TypeError`` with a message that names
the offending argument and says what was wrong. None uses ``assert``.
"""

from __future__ import annotations

import math
import numbers
import os
import warnings
from pathlib import Path
from types import ModuleType
from typing import Any

from . import _backend as B

__all__ = [
    "ArgumentTypeError",
    "check_tensor",
    "check_rank",
    "check_int",
    "check_positive_int",
    "check_real",
    "check_nonneg_float",
    "check_choice",
    "check_array",
    "check_finite",
    "check_int_sequence",
    "check_shape",
    "check_array_sequence",
    "check_factor_dtypes",
    "check_path",
]


class ArgumentTypeError(TypeError, ValueError):
    """An argument of the wrong type where a number or an option is meant.

    A ``TypeError`` (``1.5`` or ``True`` is no integer, ``"0.5"`` no number)
    that is also a ``ValueError``, so that code catching ``ValueError`` for a
    bad option value keeps working whatever the kind of mistake.
    """


def describe(value: Any, limit: int = 60) -> str:
    """A short description of ``value`` for error messages (arrays by shape and dtype)."""
    if hasattr(value, "shape") and hasattr(value, "dtype") and getattr(value, "ndim", 0) > 0:
        return f"{type(value).__name__} of shape {tuple(value.shape)} and dtype {value.dtype}"
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_int(value: Any, name: str, *, low: int | None = None, high: int | None = None,
              what: str = "an integer") -> int:
    """``value`` as an ``int``: a Python or NumPy integer (never a bool or a float).

    Raises
    ------
    ArgumentTypeError
        ``value`` is not an integer (``True``, ``1.5``, ``2.0``, ``"2"``, ``None``).
    ValueError
        ``value`` outside ``[low, high]``.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ArgumentTypeError(f"{name} must be {what}, got {describe(value)}")
    v = int(value)
    if (low is not None and v < low) or (high is not None and v > high):
        raise ValueError(f"{name} must be {what}, got {v}")
    return v


def check_real(value: Any, name: str, *, low: float | None = None, high: float | None = None,
               low_open: bool = False, high_open: bool = False, allow_inf: bool = False,
               what: str | None = None) -> float:
    """``value`` as a ``float``: a Python or NumPy real number (ints too, never a bool).

    NaN is refused, and infinities unless ``allow_inf``; ``low``/``high``
    bound the value (excluded with ``low_open``/``high_open``).

    Raises
    ------
    ArgumentTypeError
        ``value`` is not a real number (``True``, ``"0.5"``, ``1j``, ``None``, a list).
    ValueError
        NaN, an infinity, or a value out of range.
    """
    if what is None:
        lo = "" if low is None else f"{'>' if low_open else '>='} {low:g}"
        hi = "" if high is None else f"{'<' if high_open else '<='} {high:g}"
        bounds = " and ".join(b for b in (lo, hi) if b)
        what = "a finite number" + (f" {bounds}" if bounds else "")
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ArgumentTypeError(f"{name} must be {what}, got {describe(value)}")
    v = float(value)
    bad = math.isnan(v) or (math.isinf(v) and not allow_inf)
    if low is not None:
        bad = bad or v < low or (low_open and v == low)
    if high is not None:
        bad = bad or v > high or (high_open and v == high)
    if bad:
        raise ValueError(f"{name} must be {what}, got {value!r}")
    return v


def check_choice(value: Any, name: str, choices: tuple[str, ...]) -> str:
    """``value`` if it is one of the strings ``choices``.

    Raises
    ------
    ArgumentTypeError
        ``value`` is not a string.
    ValueError
        A string not in ``choices``.
    """
    options = ", ".join(repr(c) for c in choices)
    if not isinstance(value, str):
        raise ArgumentTypeError(f"{name} must be one of {options}, got {describe(value)}")
    if value not in choices:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return str(value)


def check_array(x: Any, name: str, *, ndim: int | None = None, min_ndim: int | None = None
                ) -> Any:
    """``x`` if it is an array of real numbers (bool, integer or real floating dtype).

    Nothing is converted or scanned: the check costs O(1) whatever the size,
    for the building blocks that let NaN propagate like NumPy does.

    Raises
    ------
    TypeError
        Not an array (a list, a scalar, ``None``), a masked array, a complex,
        string, object or other non-numeric dtype.
    ValueError
        Not ``ndim`` modes, or fewer than ``min_ndim``.
    """
    if not B.is_array(x) or not hasattr(x, "shape") or not hasattr(x, "ndim"):
        raise TypeError(f"{name} must be an array, got {type(x).__name__}")
    B.check_real_dtype(x, B.namespace(x), name=name)
    if ndim is not None and x.ndim != ndim:
        raise ValueError(f"{name} must have {ndim} mode{'s' if ndim != 1 else ''}, "
                         f"got shape {tuple(x.shape)}")
    if min_ndim is not None and x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} modes, got shape "
                         f"{tuple(x.shape)}")
    return x


def check_tensor(X: Any, xp: ModuleType, *, name: str = "X", min_ndim: int = 2,
                 finite: bool = True) -> Any:
    """Validate a dense tensor and return it with a real floating dtype.

    Raises
    ------
    TypeError
        ``X`` is not an array, or has a complex / non-numeric dtype.
    ValueError
        Fewer than ``min_ndim`` modes, an empty mode, or NaN/Inf values
        when ``finite`` is true.
    """
    if not hasattr(X, "shape") or not hasattr(X, "dtype"):
        raise TypeError(f"{name} must be an array, got {type(X).__name__}")
    if X.ndim < min_ndim:
        raise ValueError(
            f"{name} must have at least {min_ndim} modes, got shape {tuple(X.shape)}"
        )
    if any(int(s) == 0 for s in X.shape):
        raise ValueError(f"{name} has an empty mode: shape {tuple(X.shape)}")
    X = B.as_float_array(X, xp, name=name)
    if finite:
        check_finite(X, xp, name=name)
    return X


def check_finite(X: Any, xp: ModuleType, *, name: str = "X") -> None:
    """Raise ``ValueError`` if ``X`` holds NaN or Inf.

    Floating arrays are first screened by their sum of squares (one BLAS dot
    over a flat view, no workspace): NaN and Inf propagate into it, so a
    finite sum proves the array finite. Only when the sum is not finite
    (NaN/Inf present, or squares overflowing) is the elementwise test run,
    which allocates a boolean mask of the array's size.
    """
    if xp.isdtype(X.dtype, "real floating") and X.ndim > 0:
        flat = xp.reshape(X, (-1,))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # overflow: inconclusive
            total = B.to_float(xp.vecdot(flat, flat))
        if math.isfinite(total):
            return
    if not bool(xp.all(xp.isfinite(X))):
        raise ValueError(
            f"{name} contains NaN or Inf values; clean the data or pass check_finite=False"
        )


def check_path(value: Any, name: str) -> Path:
    """``value`` as a `pathlib.Path`: a ``str``, ``bytes`` or ``os.PathLike`` naming a file.

    Nothing on disk is looked at (whether the path must exist is the caller's
    business).

    Raises
    ------
    ArgumentTypeError
        ``value`` is not path-like (``None``, a number, a list).
    ValueError
        An empty path.
    """
    if not isinstance(value, (str, bytes, os.PathLike)):
        raise ArgumentTypeError(f"{name} must be a path (str or os.PathLike), got "
                                f"{describe(value)}")
    try:
        text = os.fsdecode(os.fspath(value))
    except TypeError as exc:  # an os.PathLike whose __fspath__ returns no path
        raise ArgumentTypeError(f"{name} must be a path (str or os.PathLike), got "
                                f"{describe(value)}") from exc
    if not text:
        raise ValueError(f"{name} must be a non-empty path")
    return Path(text)


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` as an ``int`` if it is an integer >= 1 (see `check_int`)."""
    return check_int(value, name, low=1, what="a positive integer")


def check_rank(rank: Any, shape: tuple[int, ...], *, name: str = "rank") -> int:
    """Validate a CP rank against a tensor shape.

    The rank must be a positive integer no larger than
    ``min_n prod_{m != n} I_m``, an upper bound on the rank of any tensor of
    that shape (each unfolding has at most that many independent columns).
    """
    r = check_positive_int(rank, name)
    total = math.prod(shape)
    max_rank = min(total // s for s in shape)
    if r > max_rank:
        raise ValueError(
            f"{name}={r} exceeds the maximal rank {max_rank} of a tensor of shape {shape} "
            "(min over modes of the product of the other dimensions)"
        )
    return r


def check_nonneg_float(value: Any, name: str) -> float:
    """Return ``value`` as a float if it is a finite number >= 0 (see `check_real`)."""
    return check_real(value, name, low=0.0, what="a finite non-negative number")


def check_int_sequence(value: Any, name: str, *, length: int | None = None,
                       positive: bool = True) -> tuple[int, ...]:
    """Return ``value`` as a tuple of ints, checking length and positivity."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise TypeError(f"{name} must be a sequence of integers, got {describe(value)}")
    try:
        seq = tuple(value)
    except TypeError as exc:
        raise TypeError(f"{name} must be a sequence of integers, got {describe(value)}") from exc
    out = []
    for v in seq:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral):
            raise TypeError(f"{name} must contain integers, got {describe(v)} in "
                            f"{describe(value)}")
        if positive and int(v) < 1:
            raise ValueError(f"{name} must contain positive integers, got {describe(value)}")
        out.append(int(v))
    if length is not None and len(out) != length:
        raise ValueError(f"{name} must have length {length}, got {len(out)} ({value!r})")
    return tuple(out)


def check_shape(value: Any, name: str = "shape", *, min_ndim: int = 1) -> tuple[int, ...]:
    """Return ``value`` as a tuple of positive ints with at least ``min_ndim`` entries."""
    dims = check_int_sequence(value, name)
    if len(dims) < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} modes, got {dims}")
    return dims


def check_array_sequence(value: Any, name: str, *, what: str = "arrays") -> tuple[Any, ...]:
    """Return ``value`` as a non-empty tuple (``what`` describes the items in messages).

    Raises
    ------
    TypeError
        ``value`` is not iterable.
    ValueError
        ``value`` is empty.
    """
    try:
        seq = tuple(value)
    except TypeError as exc:
        raise TypeError(f"{name} must be a sequence of {what}, got {type(value).__name__}") from exc
    if len(seq) == 0:
        raise ValueError(f"{name} must contain at least one array")
    return seq


def check_factor_dtypes(factors: Any, xp: ModuleType, *, name: str = "factors") -> Any:
    """Return the dtype shared by all ``factors``, which must be real floating.

    Raises
    ------
    TypeError
        A factor with a non-floating dtype, or a dtype other than ``factors[0]``'s;
        the message names the first such factor.
    """
    dt = factors[0].dtype
    for i, A in enumerate(factors):
        B.check_real_dtype(A, xp, name=f"{name}[{i}]")
        if not xp.isdtype(A.dtype, "real floating"):
            raise TypeError(f"{name}[{i}] has dtype {A.dtype}; expected real floating")
        if A.dtype != dt:
            raise TypeError(
                f"{name}[{i}] has dtype {A.dtype} but {name}[0] has {dt}; use one dtype"
            )
    return dt


def physical_memory_bytes() -> int:
    """Physical memory of this machine in bytes (2**63 - 1 where unknown)."""
    try:
        import os

        return int(os.sysconf("SC_PHYS_PAGES")) * int(os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return (1 << 63) - 1


def check_allocation(n_elements: int, itemsize: int, what: str) -> None:
    """Refuse, before allocating, an array larger than this machine's memory.

    Raises ``ValueError`` giving the size (instead of a ``MemoryError`` or an
    out-of-memory kill part-way through).
    """
    size = int(n_elements) * int(itemsize)
    limit = physical_memory_bytes()
    if size > limit:
        raise ValueError(
            f"{what} would need {size / 2**30:,.1f} GiB ({n_elements:,} elements), more than "
            f"this machine's {limit / 2**30:,.1f} GiB of memory"
        )


def check_index(value: Any, name: str, n: int) -> int:
    """An integer (Python or NumPy, not bool) in ``[-n, n)``, returned in ``[0, n)``."""
    v = check_int(value, name)
    if not -n <= v < n:
        raise ValueError(f"{name}={v} is out of range for {n} entries")
    return v % n


def check_factor_shapes(factors: Any, shape: tuple[int, ...], *, name: str = "factors") -> int:
    """Check ``factors`` against a tensor ``shape``: one ``(I_m, R)`` matrix per mode; return R."""
    if len(factors) != len(shape):
        raise ValueError(f"{name} has {len(factors)} matrices but X has {len(shape)} modes")
    R = None
    for m, A in enumerate(factors):
        if getattr(A, "ndim", None) != 2 or int(A.shape[0]) != shape[m]:
            raise ValueError(
                f"{name}[{m}] must have shape ({shape[m]}, R), got {tuple(getattr(A, 'shape', ()))}"
            )
        if R is None:
            R = int(A.shape[1])
        elif int(A.shape[1]) != R:
            raise ValueError(f"all {name} must have the same number of columns")
    return int(R or 0)


def check_mode(value: Any, ndim: int, *, name: str = "mode", of: str = "a tensor") -> int:
    """A mode index of an ``ndim``-way tensor (negative counts from the end), in ``[0, ndim)``.

    ``of`` names the tensor in the message (an argument's name, such as ``"X"``).
    """
    v = check_int(value, name)
    if not -ndim <= v < ndim:
        raise ValueError(f"{name}={v} is out of range for {of} with {ndim} modes")
    return v % ndim
