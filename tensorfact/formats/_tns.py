"""Streaming parser of FROSTT ``.tns`` files: validated blocks of nonzeros.

One nonzero per line, ``N`` indices then the value; ``#`` comments; blank
lines ignored; ``.gz`` decompressed on the fly. The entries are yielded block
by block, so `tensorfact.datasets.read_tns` collects them and
``DaskSparseTensor.from_tns`` streams a file larger than memory into a store,
with the same checks and line-numbered error messages. Each block (about 32 MiB of text)
is parsed by NumPy's C parser and validated with vectorised checks; only a
block that fails is scanned line by line, to name the offending line.
"""

from __future__ import annotations

import gzip
import io
import os
import warnings
import zlib
from collections.abc import Callable, Iterator
from typing import IO, Any

import numpy as np

__all__ = ["TnsReader"]

_BLOCK_BYTES = 32 << 20
_MAX_EXACT = float(2**53)


def _blocks(f: IO[bytes], block_bytes: int) -> Iterator[tuple[int, bytes]]:
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


def _data_line(block: bytes, first: int, k: int) -> int:
    """Line number of the ``k``-th data line (comments and blanks skipped) of a block."""
    seen = -1
    for j, raw in enumerate(block.split(b"\n")):
        if raw.split(b"#", 1)[0].strip():
            seen += 1
            if seen == k:
                return first + j
    return first


def _line_error(path: str, line_no: int, msg: str) -> ValueError:
    return ValueError(f"{path}: line {line_no}: {msg}")


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
        if len(toks) != ncols:
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


class TnsReader:
    """Validated blocks of a ``.tns`` file, in file order.

    Parameters
    ----------
    path : path
        Plain or ``.gz`` FROSTT file.
    shape : tuple of int, optional
        Bounds checked on every index (default: none; the caller takes the
        largest index per mode).
    dtype : numpy dtype
        float32 or float64 values.
    index_base : int
        Index of the first element along a mode in the file (FROSTT: 1).
    has_values : bool, optional
        As for `tensorfact.datasets.read_tns`.
    block_bytes : int
        Bytes of text parsed per block.

    Attributes
    ----------
    ndim : int or None
        Number of modes, known after the first block.
    size : int
        Size of the file on disk (compressed size for ``.gz``).
    """

    def __init__(self, path: str | os.PathLike[str], *, shape: tuple[int, ...] | None = None,
                 dtype: Any = np.float64, index_base: int = 1, has_values: bool | None = None,
                 block_bytes: int = _BLOCK_BYTES) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no such file: {self.path}")
        if shape is not None and any(d < 1 for d in shape):
            raise ValueError(f"shape must contain positive sizes, got {shape}")
        if isinstance(index_base, bool) or not isinstance(index_base, (int, np.integer)):
            raise TypeError(f"index_base must be an integer, got {index_base!r}")
        dt = np.dtype(dtype)
        if dt not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {dt}")
        self.shape = shape
        self.dtype = dt
        self.index_base = int(index_base)
        self.has_values = has_values
        self.block_bytes = int(block_bytes)
        self.size = os.path.getsize(self.path)
        self.ndim: int | None = None

    def blocks(self, on_bytes: Callable[[int], Any] | None = None, *,
               allow_empty: bool = False) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Yield ``(coords, values)``: 0-based int64 ``(n, N)`` indices and their values.

        ``on_bytes(k)`` is called with the number of bytes of the file on
        disk consumed since the previous call (for a progress bar).

        Raises
        ------
        ValueError
            A malformed line (the message names the file and line), a value
            that does not fit the dtype, a corrupt or truncated gzip file, or
            a file without data (unless ``allow_empty``).
        """
        try:
            yield from self._blocks(on_bytes, allow_empty)
        except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
            raise ValueError(f"{self.path}: not a readable gzip file (truncated or corrupt): "
                             f"{exc}") from None

    def _blocks(self, on_bytes: Callable[[int], Any] | None, allow_empty: bool
                ) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        p = self.path
        dims = self.shape
        base = self.index_base
        ncols: int | None = None
        n_idx: int | None = None
        with open(p, "rb") as raw:
            f: IO[bytes] = gzip.GzipFile(fileobj=raw) if p.endswith(".gz") else raw  # type: ignore[assignment]
            pos = 0
            for first, block in _blocks(f, self.block_bytes):
                try:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
                        A = np.loadtxt(io.BytesIO(block), comments="#", ndmin=2,
                                       dtype=np.float64)
                except ValueError:
                    raise _locate(p, block, first, ncols, n_idx, base, dims,
                                  self.has_values) from None
                if on_bytes is not None:
                    now = raw.tell()
                    on_bytes(now - pos)
                    pos = now
                if A.shape[0] == 0:
                    continue
                if ncols is None:
                    ncols = int(A.shape[1])
                    n_idx = _n_index_columns(p, ncols, dims, self.has_values)
                    self.ndim = n_idx
                elif A.shape[1] != ncols:
                    raise _locate(p, block, first, ncols, n_idx, base, dims, self.has_values)
                nI = int(n_idx or 0)
                idx = A[:, :nI]
                ok = bool(np.all((idx == np.floor(idx)) & (idx >= base) & (idx < _MAX_EXACT)))
                if dims is not None:
                    ok = ok and bool(np.all(idx - base < np.asarray(dims, dtype=np.float64)))
                vals = A[:, nI] if ncols > nI else None
                if vals is not None:
                    ok = ok and bool(np.all(np.isfinite(vals)))
                if not ok:
                    raise _locate(p, block, first, ncols, n_idx, base, dims, self.has_values)
                if vals is None:
                    cast = np.ones(A.shape[0], dtype=self.dtype)
                else:
                    with np.errstate(over="ignore"):
                        cast = vals.astype(self.dtype)
                    if not bool(np.all(np.isfinite(cast))):
                        k = int(np.argmin(np.isfinite(cast)))
                        raise _line_error(p, _data_line(block, first, k),
                                          f"value {float(vals[k])!r} does not fit in "
                                          f"{self.dtype}; read with dtype=np.float64")
                yield idx.astype(np.int64) - base, cast
        if ncols is None and not allow_empty:
            raise ValueError(f"{p}: no data lines found (pass shape= to read an empty tensor)")
