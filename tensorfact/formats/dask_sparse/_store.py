"""On-disk layout of a partitioned sparse tensor: ``meta.json`` plus ``.npy`` files.

A store is a directory::

    meta.json
    primary-00000-coords.npy   (nnz_p, N) index dtype, canonical order
    primary-00000-values.npy   (nnz_p,)   value dtype
    ...
    mode1-00000-keys.npy       (nnz_p,)   int64, other modes' linear index, sorted
    mode1-00000-index.npy      (nnz_p,)   index dtype, the mode-1 index
    mode1-00000-values.npy     (nnz_p,)   value dtype
    ...

*Primary partitions* hold the nonzeros in canonical order (C order of the
multi-index, duplicates summed), cut into consecutive key ranges; ``first``
and ``last`` in ``meta.json`` are the multi-indices of a partition's first and
last entry. The *fiber index* of mode ``n`` holds the same nonzeros ordered by
the linear index of the other modes (C order over the modes ``!= n``; ties in
canonical order, so the mode-``n`` index increases along a fiber), cut into
key ranges that never split a fiber; ``first`` and ``last`` are the first and
last key of a partition. A mode whose other dimensions have more than
``2**63 - 1`` index combinations has no fiber index (``null``).

``meta.json`` records, for every file, its name, size in bytes and CRC-32.
Opening a store checks that every file exists with its recorded size (a
truncated or missing file raises an error naming it); every read checks the
size and the ``.npy`` header again, and `verify_checksums` compares the
CRC-32 of every file. Files are read with ``numpy.load(..., mmap_mode="r",
allow_pickle=False)``; nothing is ever unpickled.
"""

from __future__ import annotations

import json
import math
import os
import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..._validation import check_path

__all__ = [
    "FORMAT",
    "VERSION",
    "ArrayRef",
    "Partition",
    "StoreMeta",
    "fiber_key_fits",
    "index_dtype_for",
    "read_meta",
    "save_array",
    "verify_checksums",
    "write_meta",
]

FORMAT = "tensorfact-dask-sparse"
VERSION = 1
META = "meta.json"
_INT64_MAX = (1 << 63) - 1
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*\.npy$")
_VALUE_DTYPES = ("float32", "float64")
_INDEX_DTYPES = ("int32", "int64")
#: fields of a partition's files: primary, and per-mode fiber index
PRIMARY_FIELDS = ("coords", "values")
FIBER_FIELDS = ("keys", "index", "values")


def index_dtype_for(shape: tuple[int, ...]) -> np.dtype:
    """The smallest integer dtype (int32 or int64) holding every index of ``shape``."""
    return np.dtype(np.int32 if max(shape) <= (1 << 31) - 1 else np.int64)


def fiber_key_fits(shape: tuple[int, ...], mode: int) -> bool:
    """Whether the other modes' linear index of ``mode`` fits in int64."""
    return math.prod(s for m, s in enumerate(shape) if m != mode) <= _INT64_MAX


@dataclass(frozen=True)
class ArrayRef:
    """One ``.npy`` file of a store, with what it must contain.

    Attributes
    ----------
    path : str
        Absolute path of the file.
    nbytes : int
        Size of the file (header included).
    crc32 : int
        CRC-32 of the whole file.
    shape : tuple of int
    dtype : str
    """

    path: str
    nbytes: int
    crc32: int
    shape: tuple[int, ...]
    dtype: str

    @property
    def data_nbytes(self) -> int:
        """Bytes of array data (the file without its header)."""
        return math.prod(self.shape) * np.dtype(self.dtype).itemsize

    def check_size(self) -> None:
        """Raise if the file is missing or does not have its recorded size."""
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            raise FileNotFoundError(f"partition file {self.path} is missing") from None
        if size != self.nbytes:
            what = "truncated" if size < self.nbytes else "longer than recorded"
            raise ValueError(
                f"partition file {self.path} is {what}: {size} bytes, meta.json records "
                f"{self.nbytes}; the store is damaged (rebuild it)"
            )

    def open(self) -> np.ndarray:
        """The array, memory-mapped read-only, after checking size and header."""
        self.check_size()
        try:
            arr = np.load(self.path, mmap_mode="r", allow_pickle=False)
        except (ValueError, OSError) as exc:
            raise ValueError(f"partition file {self.path} cannot be read: {exc}") from None
        if tuple(arr.shape) != self.shape or arr.dtype != np.dtype(self.dtype):
            raise ValueError(
                f"partition file {self.path} holds a {arr.dtype} array of shape "
                f"{tuple(arr.shape)}, meta.json records {self.dtype} {self.shape}"
            )
        return np.asarray(arr)


@dataclass(frozen=True)
class Partition:
    """One key range of a store: its nonzero count, key bounds and files.

    ``first``/``last``: multi-indices (primary partitions) or 1-tuples of
    keys (fiber index) of the first and last entry.
    """

    nnz: int
    first: tuple[int, ...]
    last: tuple[int, ...]
    arrays: Mapping[str, ArrayRef]


@dataclass(frozen=True)
class StoreMeta:
    """The validated contents of ``meta.json``."""

    root: str
    shape: tuple[int, ...]
    dtype: str
    index_dtype: str
    nnz: int
    primary: tuple[Partition, ...]
    fibers: tuple[tuple[Partition, ...] | None, ...]

    def all_arrays(self) -> list[ArrayRef]:
        """Every file of the store."""
        parts = list(self.primary)
        for f in self.fibers:
            parts.extend(f or ())
        return [a for p in parts for a in p.arrays.values()]


def _expected(kind: str, field: str, nnz: int, N: int, dtype: str, index_dtype: str
              ) -> tuple[tuple[int, ...], str]:
    if kind == "primary":
        return ((nnz, N), index_dtype) if field == "coords" else ((nnz,), dtype)
    return ((nnz,), {"keys": "int64", "index": index_dtype, "values": dtype}[field])


# --------------------------------------------------------------------------- #
# writing
# --------------------------------------------------------------------------- #
def file_crc32(path: str | os.PathLike[str]) -> int:
    """CRC-32 of a file, read in 16 MiB blocks."""
    crc = 0
    with open(path, "rb") as f:
        while True:
            block = f.read(16 << 20)
            if not block:
                return crc
            crc = zlib.crc32(block, crc)


def save_array(root: str | os.PathLike[str], name: str, arr: np.ndarray) -> dict[str, Any]:
    """Write ``arr`` as ``root/name`` (``.npy``, no pickle); return its file record."""
    path = Path(root) / name
    np.save(path, np.ascontiguousarray(arr), allow_pickle=False)
    return {"name": name, "bytes": path.stat().st_size, "crc32": file_crc32(path)}


def write_meta(root: str | os.PathLike[str], meta: dict[str, Any]) -> None:
    """Write ``meta.json`` atomically (the last step of building a store)."""
    path = Path(root) / META
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=1))
    os.replace(tmp, path)


# --------------------------------------------------------------------------- #
# reading and validation
# --------------------------------------------------------------------------- #
class _Bad(ValueError):
    pass


def _int(x: Any, what: str, *, lo: int = 0) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or x < lo:
        raise _Bad(f"{what} must be an integer >= {lo}, got {x!r}")
    return x


def _ints(x: Any, what: str, n: int) -> tuple[int, ...]:
    if not isinstance(x, list) or len(x) != n:
        raise _Bad(f"{what} must be a list of {n} integers, got {x!r}")
    return tuple(_int(v, what) for v in x)


def _partitions(root: Path, raw: Any, kind: str, N: int, nnz: int, dtype: str,
                index_dtype: str, bound: tuple[int, ...], check_sizes: bool
                ) -> tuple[Partition, ...]:
    fields = PRIMARY_FIELDS if kind == "primary" else FIBER_FIELDS
    n_key = N if kind == "primary" else 1
    if not isinstance(raw, list):
        raise _Bad(f"{kind} partitions must be a list")
    out = []
    total = 0
    prev: tuple[int, ...] | None = None
    for p, entry in enumerate(raw):
        where = f"{kind} partition {p}"
        if not isinstance(entry, dict):
            raise _Bad(f"{where} must be an object")
        n = _int(entry.get("nnz"), f"{where}: nnz", lo=1)
        first = _ints(entry.get("first"), f"{where}: first", n_key)
        last = _ints(entry.get("last"), f"{where}: last", n_key)
        if not first <= last or any(v >= b for v, b in zip(last, bound)):
            raise _Bad(f"{where}: key range {list(first)}..{list(last)} is invalid "
                       f"for bounds {list(bound)}")
        if prev is not None and not prev < first:
            raise _Bad(f"{where}: key range overlaps the previous partition's")
        prev = last
        files = entry.get("files")
        if not isinstance(files, dict) or sorted(files) != sorted(fields):
            raise _Bad(f"{where}: files must name {list(fields)}")
        arrays = {}
        for field in fields:
            rec = files[field]
            if not isinstance(rec, dict) or not isinstance(rec.get("name"), str) \
                    or not _NAME.match(rec["name"]):
                raise _Bad(f"{where}: {field} needs a plain .npy file name, got {rec!r}")
            shape, dt = _expected(kind, field, n, N, dtype, index_dtype)
            ref = ArrayRef(str(root / rec["name"]), _int(rec.get("bytes"), f"{where}: bytes"),
                           _int(rec.get("crc32"), f"{where}: crc32"), shape, dt)
            if check_sizes:
                ref.check_size()
            arrays[field] = ref
        out.append(Partition(n, first, last, arrays))
        total += n
    if total != nnz:
        raise _Bad(f"{kind} partitions hold {total} nonzeros, nnz is {nnz}")
    return tuple(out)


def read_meta(root: str | os.PathLike[str], *, check_sizes: bool = True) -> StoreMeta:
    """Read and validate ``root/meta.json``.

    Parameters
    ----------
    root : path
        The store directory.
    check_sizes : bool
        Check that every partition file exists with its recorded size.

    Returns
    -------
    StoreMeta

    Raises
    ------
    FileNotFoundError
        No store at ``root``, or a missing partition file (named).
    ValueError
        Malformed ``meta.json`` (the message says what), an unknown format
        version, a partition file of the wrong size (named).
    """
    rootp = check_path(root, "store").resolve()  # the public functions' name for it
    path = rootp / META
    if not path.is_file():
        raise FileNotFoundError(f"{root} is not a sparse tensor store: no {META}")
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path} is not valid JSON: {exc}") from None
    try:
        if not isinstance(raw, dict) or raw.get("format") != FORMAT:
            raise _Bad(f"format must be {FORMAT!r}")
        if raw.get("version") != VERSION:
            raise _Bad(f"unsupported version {raw.get('version')!r} (this reader: {VERSION})")
        shape_raw = raw.get("shape")
        if not isinstance(shape_raw, list) or len(shape_raw) < 2:
            raise _Bad(f"shape must list at least 2 sizes, got {shape_raw!r}")
        shape = tuple(_int(s, "shape", lo=1) for s in shape_raw)
        dtype = raw.get("dtype")
        if dtype not in _VALUE_DTYPES:
            raise _Bad(f"dtype must be one of {_VALUE_DTYPES}, got {dtype!r}")
        index_dtype = raw.get("index_dtype")
        if index_dtype not in _INDEX_DTYPES or (
                index_dtype == "int32" and max(shape) > np.iinfo(np.int32).max):
            raise _Bad(f"index_dtype {index_dtype!r} cannot hold the indices of {shape}")
        nnz = _int(raw.get("nnz"), "nnz")
        N = len(shape)
        primary = _partitions(rootp, raw.get("primary"), "primary", N, nnz, dtype, index_dtype,
                              shape, check_sizes)
        fib_raw = raw.get("fibers")
        if not isinstance(fib_raw, list) or len(fib_raw) != N:
            raise _Bad(f"fibers must be a list of {N} entries")
        fibers: list[tuple[Partition, ...] | None] = []
        for n, f in enumerate(fib_raw):
            if f is None:
                if fiber_key_fits(shape, n):
                    raise _Bad(f"the fiber index of mode {n} is missing")
                fibers.append(None)
                continue
            kmax = math.prod(s for m, s in enumerate(shape) if m != n)
            fibers.append(_partitions(rootp, f, f"mode-{n} fiber", N, nnz, dtype,
                                      index_dtype, (kmax,), check_sizes))
    except _Bad as exc:
        raise ValueError(f"{path}: {exc}") from None
    return StoreMeta(str(rootp), shape, dtype, index_dtype, nnz, primary, tuple(fibers))


def verify_checksums(meta: StoreMeta) -> None:
    """Compare every file's CRC-32 with ``meta.json`` (reads the whole store).

    Raises
    ------
    FileNotFoundError, ValueError
        Naming the first missing, truncated or corrupted file.
    """
    for ref in meta.all_arrays():
        ref.check_size()
        if file_crc32(ref.path) != ref.crc32:
            raise ValueError(f"partition file {ref.path} is corrupted: its CRC-32 differs "
                             "from meta.json's")
