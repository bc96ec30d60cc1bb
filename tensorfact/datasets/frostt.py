"""FROSTT ``.tns`` files: read and write sparse tensors.

The FROSTT text format (Smith et al., "FROSTT: The Formidable Repository of
Open Sparse Tensors and Tools", 2017) stores one nonzero per line: the
``N`` 1-based indices followed by the value, separated by whitespace. Lines
starting with ``#`` are comments (a ``#`` later on a line starts a trailing
comment); blank lines are ignored. Files ending in ``.gz`` are read and
written through :mod:`gzip`.

Reading is streaming: the file is consumed in blocks of about 32 MiB, each
parsed by NumPy's C text parser (:func:`numpy.loadtxt`) and validated with
vectorised checks. Only when a block fails does a line-by-line pass over that
block run, to name the offending line.
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
import zlib
from collections.abc import Sequence
from typing import IO, Any

import numpy as np

from .._validation import check_shape
from ..formats import SparseTensor

__all__ = ["read_tns", "write_tns"]

_BLOCK_BYTES = 32 << 20
_MAX_EXACT = float(2**53)


def _open(path: str | os.PathLike[str], mode: str) -> IO[bytes]:
    p = os.fspath(path)
    if p.endswith(".gz"):
        return gzip.open(p, mode + "b")  # type: ignore[return-value]
    return open(p, mode + "b")


def _blocks(f: IO[bytes], block_bytes: int) -> Any:
    """Yield ``(first_line_number, bytes)`` blocks that end at a line boundary."""
    line_no = 1
    rest = b""
    while True:
        chunk = f.read(block_bytes)
        if not chunk:
            if rest:
                yield line_no, rest
            return
        buf = rest + chunk
        cut = buf.rfind(b"\n")
        if cut < 0:
            rest = buf
            continue
        block, rest = buf[:cut + 1], buf[cut + 1:]
        yield line_no, block
        line_no += block.count(b"\n")


def _line_error(path: str, line_no: int, msg: str) -> ValueError:
    return ValueError(f"{path}: line {line_no}: {msg}")


def _locate(path: str, block: bytes, first: int, ncols: int | None, n_idx: int | None,
            index_base: int, shape: tuple[int, ...] | None,
            has_values: bool | None) -> ValueError:
    """Find the first bad line in ``block`` (error path only: a Python loop)."""
    for k, raw in enumerate(block.split(b"\n")):
        line = raw.split(b"#", 1)[0].strip()
        if not line:
            continue
        ln = first + k
        toks = line.split()
        if ncols is None:  # the first data line of the file fixes the column count
            ncols = len(toks)
            try:
                n_idx = _n_index_columns(path, ncols, shape, has_values)
            except ValueError as exc:
                return exc
        if ncols is not None and len(toks) != ncols:
            return _line_error(path, ln, f"expected {ncols} columns, found {len(toks)}: "
                                         f"{raw.decode(errors='replace').strip()!r}")
        try:
            nums = [float(t) for t in toks]
        except ValueError:
            return _line_error(path, ln, f"non-numeric entry in "
                                         f"{raw.decode(errors='replace').strip()!r}")
        m = n_idx if n_idx is not None else len(nums)
        for c, v in enumerate(nums[:m]):
            if v != v or abs(v) >= _MAX_EXACT or v != int(v):
                return _line_error(path, ln, f"index in column {c + 1} is not an integer: "
                                             f"{toks[c].decode(errors='replace')}")
            if int(v) < index_base:
                return _line_error(path, ln, f"index in column {c + 1} is {int(v)}, "
                                             f"smaller than index_base={index_base}")
            if shape is not None and int(v) - index_base >= shape[c]:
                return _line_error(path, ln, f"index in column {c + 1} is {int(v)}, beyond "
                                             f"shape[{c}]={shape[c]}")
        for v in nums[m:]:
            if not np.isfinite(v):
                return _line_error(path, ln, f"value is not finite: {toks[-1].decode()}")
    last = first + block.count(b"\n")
    return ValueError(f"{path}: malformed data between lines {first} and {last}")


def read_tns(path: str | os.PathLike[str], /, *, shape: Sequence[int] | None = None,
             dtype: Any = np.float64, index_base: int = 1, has_values: bool | None = None,
             block_bytes: int = _BLOCK_BYTES) -> SparseTensor:
    """Read a FROSTT ``.tns`` file (optionally gzip-compressed) into a :class:`SparseTensor`.

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
    p = os.fspath(path)
    dims = check_shape(shape, "shape") if shape is not None else None
    if isinstance(index_base, bool) or not isinstance(index_base, (int, np.integer)):
        raise TypeError(f"index_base must be an integer, got {index_base!r}")
    dt = np.dtype(dtype)
    if dt not in (np.float32, np.float64):
        raise TypeError(f"dtype must be float32 or float64, got {dt}")
    try:
        parts = _read_blocks(p, block_bytes, dt, index_base, dims, has_values)
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        raise ValueError(f"{p}: not a readable gzip file (truncated or corrupt): {exc}") from None
    idx_parts, val_parts, ncols, n_idx = parts
    if ncols is None or n_idx is None:
        if dims is not None:  # an empty tensor of a known shape
            return SparseTensor(np.zeros((0, len(dims)), dtype=np.int64), np.zeros(0, dtype=dt),
                                dims)
        raise ValueError(f"{p}: no data lines found (pass shape= to read an empty tensor)")
    coords = np.concatenate(idx_parts, axis=0) if len(idx_parts) > 1 else idx_parts[0]
    values = np.concatenate(val_parts) if len(val_parts) > 1 else val_parts[0]
    if dims is None:
        dims = tuple(int(v) + 1 for v in coords.max(axis=0))
    # indices and values were validated above
    return SparseTensor(coords, values, dims, check=False)


def _read_blocks(p: str, block_bytes: int, dt: np.dtype, index_base: int,
                 dims: tuple[int, ...] | None, has_values: bool | None
                 ) -> tuple[list[np.ndarray], list[np.ndarray], int | None, int | None]:
    ncols: int | None = None
    n_idx: int | None = None
    idx_parts: list[np.ndarray] = []
    val_parts: list[np.ndarray] = []
    with _open(p, "r") as f:
        for first, block in _blocks(f, block_bytes):
            try:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
                    A = np.loadtxt(io.BytesIO(block), comments="#", ndmin=2, dtype=np.float64)
            except ValueError:
                raise _locate(p, block, first, ncols, n_idx, index_base, dims, has_values) from None
            if A.shape[0] == 0:
                continue
            if ncols is None:
                ncols = int(A.shape[1])
                n_idx = _n_index_columns(p, ncols, dims, has_values)
            elif A.shape[1] != ncols:
                raise _locate(p, block, first, ncols, n_idx, index_base, dims, has_values)
            nI = int(n_idx or 0)
            idx = A[:, :nI]
            ok = bool(np.all((idx == np.floor(idx)) & (idx >= index_base) & (idx < _MAX_EXACT)))
            if dims is not None:
                ok = ok and bool(np.all(idx - index_base < np.asarray(dims, dtype=np.float64)))
            vals = A[:, nI] if ncols > nI else None
            if vals is not None:
                ok = ok and bool(np.all(np.isfinite(vals)))
            if not ok:
                raise _locate(p, block, first, ncols, n_idx, index_base, dims, has_values)
            idx_parts.append(idx.astype(np.int64) - index_base)
            if vals is None:
                val_parts.append(np.ones(A.shape[0], dtype=dt))
                continue
            with np.errstate(over="ignore"):
                cast = vals.astype(dt)
            if not bool(np.all(np.isfinite(cast))):
                k = int(np.argmin(np.isfinite(cast)))
                raise _line_error(p, _data_line(block, first, k),
                                  f"value {float(vals[k])!r} does not fit in {dt}; read with "
                                  "dtype=np.float64")
            val_parts.append(cast)
    return idx_parts, val_parts, ncols, n_idx


def _data_line(block: bytes, first: int, k: int) -> int:
    """Line number of the ``k``-th data line (comments and blanks skipped) of a block."""
    seen = -1
    for j, raw in enumerate(block.split(b"\n")):
        if raw.split(b"#", 1)[0].strip():
            seen += 1
            if seen == k:
                return first + j
    return first


def _n_index_columns(path: str, ncols: int, dims: tuple[int, ...] | None,
                     has_values: bool | None) -> int:
    if dims is not None:
        N = len(dims)
        allowed = {N + 1} if has_values else ({N} if has_values is False else {N, N + 1})
        if ncols not in allowed:
            raise ValueError(
                f"{path}: line 1 of the data has {ncols} columns; a {N}-way tensor needs "
                + " or ".join(str(a) for a in sorted(allowed))
            )
        return N
    if has_values is False:
        return ncols
    if ncols < 2:
        raise ValueError(f"{path}: data lines have {ncols} column; expected indices and a value")
    return ncols - 1


def write_tns(path: str | os.PathLike[str], X: SparseTensor, /, *, index_base: int = 1,
              header: str | None = None) -> None:
    """Write a :class:`SparseTensor` as a FROSTT ``.tns`` file (gzip if the name ends ``.gz``).

    Values are written with 17 significant digits, so :func:`read_tns` gives
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
    if not isinstance(X, SparseTensor):
        raise TypeError(f"X must be a SparseTensor, got {type(X).__name__}")
    if isinstance(index_base, bool) or not isinstance(index_base, (int, np.integer)):
        raise TypeError(f"index_base must be an integer, got {index_base!r}")
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
