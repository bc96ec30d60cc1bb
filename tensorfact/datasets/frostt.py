"""FROSTT ``.tns`` files: read and write sparse tensors.

The FROSTT text format (Smith et al., "FROSTT: The Formidable Repository of
Open Sparse Tensors and Tools", 2017) stores one nonzero per line: the
``N`` 1-based indices followed by the value, separated by whitespace. Lines
starting with ``#`` are comments (a ``#`` later on a line starts a trailing
comment); blank lines are ignored. Files ending in ``.gz`` are read and
written through `gzip`.

Reading is streaming: the file is consumed in blocks of about 32 MiB, each
parsed by NumPy's C text parser (`numpy.loadtxt`) and validated with
vectorised checks. Only when a block fails does a line-by-line pass over that
block run, to name the offending line.
"""

from __future__ import annotations

import gzip
import os
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from .._validation import check_int, check_positive_int, check_shape
from ..formats import SparseTensor
from ..formats._tns import TnsReader

__all__ = ["read_tns", "write_tns"]

_BLOCK_BYTES = 32 << 20


def _check_index_base(index_base: Any) -> int:
    """``index_base`` as a non-negative ``int``."""
    base = check_int(index_base, "index_base")
    if base < 0:
        raise ValueError(f"index_base must be >= 0, got {base}")
    return base


def _check_path(path: Any) -> str:
    """``path`` as a ``str`` (from a ``str``, ``bytes`` or path-like object)."""
    try:
        p = os.fspath(path)
    except TypeError:
        raise TypeError(f"path must be a str or path-like object, got {type(path).__name__}"
                        ) from None
    return os.fsdecode(p)


def _open(path: str | os.PathLike[str], mode: str) -> IO[bytes]:
    p = os.fspath(path)
    if p.endswith(".gz"):
        return gzip.open(p, mode + "b")  # type: ignore[return-value]
    return open(p, mode + "b")


def read_tns(path: str | os.PathLike[str], /, *, shape: Sequence[int] | None = None,
             dtype: Any = np.float64, index_base: int = 1, has_values: bool | None = None,
             block_bytes: int = _BLOCK_BYTES) -> SparseTensor:
    """Read a FROSTT ``.tns`` file (optionally gzip-compressed) into a `SparseTensor`.

    Parameters
    ----------
    path : str or path-like
        ``.tns`` text file; a name ending in ``.gz`` is decompressed on the fly.
    shape : sequence of int, optional
        Tensor shape; default: the largest index in each mode. An index
        beyond a given ``shape`` is an error.
    dtype : dtype
        Value dtype (float32 or float64).
    index_base : int
        Index of the first element along a mode in the file (FROSTT: 1).
    has_values : bool, optional
        Whether the last column holds values. Default: with ``shape`` given,
        decided by the column count (``N`` columns: no values, ``N + 1``:
        values); without ``shape``, ``True`` (the FROSTT convention). Entries
        without a value are 1.0.
    block_bytes : int
        Bytes parsed per block (memory/speed trade-off).

    Returns
    -------
    SparseTensor
        NumPy-backed, duplicates summed.

    Raises
    ------
    ValueError
        A malformed line (wrong number of columns, non-numeric entry,
        non-integer index, index below ``index_base`` or beyond ``shape``,
        non-finite value) -- the message gives the file name and line
        number -- or a file without data.

    Examples
    --------
    >>> import os, tempfile
    >>> d = tempfile.mkdtemp(); p = os.path.join(d, "t.tns")
    >>> with open(p, "w") as f:
    ...     _ = f.writelines(["# a 2 x 3 x 2 tensor", chr(10), "1 1 1 1.5", chr(10), "2 3 2 -2"])
    >>> X = read_tns(p)
    >>> X.shape, X.nnz
    ((2, 3, 2), 2)
    """
    p = _check_path(path)
    dims = check_shape(shape, "shape") if shape is not None else None
    index_base = _check_index_base(index_base)
    try:
        dt = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from None
    if has_values is not None and not isinstance(has_values, (bool, np.bool_)):
        raise TypeError(f"has_values must be True, False or None, got {has_values!r}")
    block_bytes = check_positive_int(block_bytes, "block_bytes")
    reader = TnsReader(p, shape=dims, dtype=dt, index_base=index_base,
                       has_values=None if has_values is None else bool(has_values),
                       block_bytes=block_bytes)
    idx_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    for coords_block, values_block in reader.blocks(allow_empty=dims is not None):
        idx_parts.append(coords_block)
        val_parts.append(values_block)
    if not idx_parts:  # an empty tensor of a known shape
        known = dims if dims is not None else ()
        return SparseTensor(np.zeros((0, len(known)), dtype=np.int64),
                            np.zeros(0, dtype=reader.dtype), known)
    coords = np.concatenate(idx_parts, axis=0) if len(idx_parts) > 1 else idx_parts[0]
    values = np.concatenate(val_parts) if len(val_parts) > 1 else val_parts[0]
    if dims is None:
        dims = tuple(int(v) + 1 for v in coords.max(axis=0))
    # indices and values were validated by the reader
    return SparseTensor(coords, values, dims, check=False)


def write_tns(path: str | os.PathLike[str], X: SparseTensor, /, *, index_base: int = 1,
              header: str | None = None) -> None:
    """Write a `SparseTensor` as a FROSTT ``.tns`` file (gzip if the name ends ``.gz``).

    Values are written with 17 significant digits, so `read_tns` gives
    back the same float64 numbers.

    Parameters
    ----------
    path : str or path-like
    X : SparseTensor
        NumPy-backed (other namespaces are copied to the host).
    index_base : int
        Index written for the first element along a mode (FROSTT: 1).
    header : str, optional
        Comment written at the top (each line prefixed with ``#``).
    """
    path = _check_path(path)
    if not isinstance(X, SparseTensor):
        raise TypeError(f"X must be a SparseTensor, got {type(X).__name__}")
    index_base = _check_index_base(index_base)
    if header is not None and not isinstance(header, str):
        raise TypeError(f"header must be a str or None, got {type(header).__name__}")
    from .. import _backend as B

    coords = B.to_numpy(X.coords) + int(index_base)
    values = B.to_numpy(X.values).astype(np.float64)
    N = X.ndim
    fmt = " ".join(["%d"] * N) + " %.17g\n"
    step = 1 << 17
    with _open(path, "w") as f:
        if header:
            for line in header.splitlines():
                f.write(f"# {line}\n".encode())
        for s in range(0, X.nnz, step):
            cols = [coords[s:s + step, m].tolist() for m in range(N)]
            cols.append(values[s:s + step].tolist())
            f.write("".join(fmt % row for row in zip(*cols)).encode())
