"""Building stores without holding the tensor in memory: an external bucket sort.

Every ordering of a store (the primary C order, and per mode the fiber order
by the other modes' linear index) is produced the same way:

1. a counting pass builds a histogram of the sort key over at most ``2**20``
   equal-width bins, from which the key ranges of buckets of about
   ``partition_nnz`` entries are cut at bin edges;
2. a scatter pass appends every entry to its bucket's temporary files (raw
   binary, in input order);
3. each bucket is read back, sorted in memory (stably, so duplicates are
   summed in input order and ties keep the canonical order) and written as
   one partition.

Peak memory is one bucket plus one streamed chunk. The primary order of a
tensor whose multi-index does not fit in int64 (e.g. the Amazon review
tensor's shape) is sorted on several int64 *words*, each the linear index of
a run of consecutive modes; buckets are cut on the first word.
"""

from __future__ import annotations

import math
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np

from ..._validation import check_path
from . import _store as S

__all__ = ["StoreWriter", "iter_chunks", "sort_into_partitions"]

#: histogram bins per ordering (8 MiB of int64 counts)
_HIST_BINS = 1 << 20
#: entries per streamed chunk
_CHUNK = 1 << 22
_WORD_MAX = 1 << 62


def _progress(enabled: bool, **kwargs: Any) -> Any:
    from tqdm.auto import tqdm

    return tqdm(disable=not enabled, leave=False, **kwargs)


def word_groups(dims: tuple[int, ...]) -> list[list[int]]:
    """Runs of consecutive modes whose index products fit in ``2**62``."""
    groups: list[list[int]] = [[0]]
    prod = dims[0]
    for m in range(1, len(dims)):
        if prod * dims[m] <= _WORD_MAX:
            groups[-1].append(m)
            prod *= dims[m]
        else:
            groups.append([m])
            prod = dims[m]
    return groups


def linear_index(coords: np.ndarray, dims: tuple[int, ...], cols: list[int]) -> np.ndarray:
    """C-order linear index (int64) of ``coords[:, cols]`` over ``dims``."""
    lin = np.asarray(coords[:, cols[0]], dtype=np.int64).copy()
    for c in cols[1:]:
        lin *= dims[c]
        lin += coords[:, c]
    return lin


def _words(coords: np.ndarray, dims: tuple[int, ...]) -> list[np.ndarray]:
    return [linear_index(coords, dims, g) for g in word_groups(dims)]


def _strictly_increasing(words: list[np.ndarray]) -> bool:
    gt = words[0][1:] > words[0][:-1]
    eq = words[0][1:] == words[0][:-1]
    for w in words[1:]:
        gt |= eq & (w[1:] > w[:-1])
        eq &= w[1:] == w[:-1]
    return bool(np.all(gt))


def iter_chunks(n: int, chunk: int = _CHUNK) -> Iterator[slice]:
    """Consecutive slices of at most ``chunk`` entries covering ``range(n)``."""
    for s in range(0, n, chunk):
        yield slice(s, min(n, s + chunk))


class _Histogram:
    """Counts of int64 keys in ``[0, kmax)`` over equal-width bins."""

    def __init__(self, kmax: int) -> None:
        self.width = max(1, -(-kmax // _HIST_BINS))
        self.nbins = max(1, -(-kmax // self.width))
        self.counts = np.zeros(self.nbins, dtype=np.int64)

    def add(self, keys: np.ndarray) -> None:
        if keys.shape[0]:
            self.counts += np.bincount(keys // self.width, minlength=self.nbins)

    def bounds(self, target: int) -> np.ndarray:
        """Lower key bound of each bucket (about ``target`` entries each)."""
        cum = np.cumsum(self.counts)
        edges = [0]
        base = 0
        while True:
            i = int(np.searchsorted(cum, base + target, side="left"))
            if i >= self.nbins - 1:
                break
            edges.append(i + 1)
            base = int(cum[i])
        return np.asarray(edges, dtype=np.int64) * self.width


class _Buckets:
    """Append-only raw files, one set per bucket, in a temporary directory."""

    def __init__(self, tmp: Path, name: str, bounds: np.ndarray) -> None:
        self.dir = tmp / name
        self.dir.mkdir(parents=True, exist_ok=False)
        self.bounds = bounds
        self.counts = np.zeros(bounds.shape[0], dtype=np.int64)
        self.layout: dict[str, tuple[np.dtype, tuple[int, ...]]] = {}

    def _path(self, b: int, field: str) -> Path:
        return self.dir / f"{b:05d}.{field}"

    def add(self, keys: np.ndarray, arrays: dict[str, np.ndarray]) -> None:
        if not self.layout:
            self.layout = {f: (a.dtype, a.shape[1:]) for f, a in arrays.items()}
        if keys.shape[0] == 0:
            return
        if self.bounds.shape[0] == 1:
            groups = [(0, slice(None))]
            order = None
        else:
            which = np.searchsorted(self.bounds, keys, side="right") - 1
            order = np.argsort(which, kind="stable")
            bs = which[order]
            cuts = np.flatnonzero(bs[1:] != bs[:-1]) + 1
            starts = np.concatenate([[0], cuts])
            ends = np.concatenate([cuts, [bs.shape[0]]])
            groups = [(int(bs[s]), slice(int(s), int(e))) for s, e in zip(starts, ends)]
        for b, sl in groups:
            for f, a in arrays.items():
                part = a[sl] if order is None else a[order[sl]]
                with open(self._path(b, f), "ab") as fh:
                    np.ascontiguousarray(part, dtype=self.layout[f][0]).tofile(fh)
            self.counts[b] += (sl.stop - sl.start) if order is not None else keys.shape[0]

    def read(self, b: int, sl: slice | None = None) -> dict[str, np.ndarray]:
        n = int(self.counts[b])
        start, stop = (0, n) if sl is None else (sl.start, sl.stop)
        out = {}
        for f, (dt, tail) in self.layout.items():
            width = math.prod(tail)
            a = np.fromfile(self._path(b, f), dtype=dt, count=(stop - start) * width,
                            offset=start * width * dt.itemsize)
            out[f] = a.reshape((stop - start,) + tail)
        return out

    def remove(self, b: int) -> None:
        for f in self.layout:
            self._path(b, f).unlink(missing_ok=True)


class StoreWriter:
    """Write a store partition by partition; `finish` adds the fiber indexes.

    Use as a context manager: on an exception everything written is removed.

    Parameters
    ----------
    root : path
        A directory that does not exist yet or is empty.
    shape : tuple of int or None
        The dimensions; ``None`` until `set_shape` (when they are
        known only after a pass over the input).
    dtype : numpy dtype
        float32 or float64 values.
    partition_nnz : int
        Target number of nonzeros per fiber-index partition.
    progress : bool
        Show tqdm progress bars.
    """

    def __init__(self, root: str | os.PathLike[str], shape: tuple[int, ...] | None, dtype: Any,
                 *, partition_nnz: int, progress: bool = False) -> None:
        try:
            self.dtype = np.dtype(dtype)
        except TypeError as exc:  # 'bogus', 3: NumPy's words would not name the argument
            raise TypeError(f"dtype must be float32 or float64, got {dtype!r}") from exc
        if self.dtype not in (np.float32, np.float64):
            raise TypeError(f"dtype must be float32 or float64, got {self.dtype}")
        self.root = check_path(root, "store")  # the public functions' name for it
        if self.root.exists() and (not self.root.is_dir() or any(self.root.iterdir())):
            raise ValueError(f"store {root} already exists and is not an empty directory; "
                             "choose a new path")
        self._created = not self.root.exists()
        self.root.mkdir(parents=True, exist_ok=True)
        self.partition_nnz = int(partition_nnz)
        self.progress = progress
        self.tmp = self.root / "_tmp"
        self.primary: list[dict[str, Any]] = []
        self._written: list[Path] = []
        self._last: tuple[int, ...] | None = None
        self._shape: tuple[int, ...] | None = None
        if shape is not None:
            self.set_shape(shape)

    @property
    def shape(self) -> tuple[int, ...]:
        """The tensor's dimensions (set on construction or by `set_shape`)."""
        if self._shape is None:  # pragma: no cover - internal misuse
            raise RuntimeError("StoreWriter.set_shape was not called")
        return self._shape

    def set_shape(self, shape: tuple[int, ...]) -> None:
        """Fix the dimensions (before the first partition)."""
        self._shape = tuple(int(s) for s in shape)
        self.index_dtype = S.index_dtype_for(self._shape)

    def __enter__(self) -> StoreWriter:
        return self

    def __exit__(self, exc_type: Any, *rest: Any) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if exc_type is not None:
            for p in self._written + [self.root / S.META]:
                p.unlink(missing_ok=True)
            if self._created:
                try:
                    self.root.rmdir()
                except OSError:
                    pass

    def _save(self, name: str, arr: np.ndarray) -> dict[str, Any]:
        self._written.append(self.root / name)
        return S.save_array(self.root, name, arr)

    @property
    def nnz(self) -> int:
        """Nonzeros written so far."""
        return sum(p["nnz"] for p in self.primary)

    def add_partition(self, coords: np.ndarray, values: np.ndarray) -> None:
        """Append a primary partition: entries in canonical order, after the previous ones.

        Raises
        ------
        ValueError
            Entries not strictly increasing in C order (or not after the
            previous partition's), or out of range.
        """
        n = int(values.shape[0])
        if n == 0:
            return
        coords = np.asarray(coords)
        if coords.shape != (n, len(self.shape)):
            raise ValueError(f"coords must have shape ({n}, {len(self.shape)}), "
                             f"got {coords.shape}")
        if coords.min() < 0 or np.any(coords.max(axis=0) >= np.asarray(self.shape)):
            raise ValueError(f"coords out of range for shape {self.shape}")
        first = tuple(int(v) for v in coords[0])
        last = tuple(int(v) for v in coords[-1])
        if (self._last is not None and not first > self._last) or (
                n > 1 and not _strictly_increasing(_words(coords, self.shape))):
            raise ValueError("partition entries must be unique and in C order, after the "
                             "previous partition's")
        p = len(self.primary)
        files = {
            "coords": self._save(f"primary-{p:05d}-coords.npy",
                                 coords.astype(self.index_dtype, copy=False)),
            "values": self._save(f"primary-{p:05d}-values.npy",
                                 values.astype(self.dtype, copy=False)),
        }
        self.primary.append({"nnz": n, "first": list(first), "last": list(last),
                             "files": files})
        self._last = last

    def _primary_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        N = len(self.shape)
        for rec in self.primary:
            n = rec["nnz"]
            c = np.load(self.root / rec["files"]["coords"]["name"], mmap_mode="r",
                        allow_pickle=False)
            v = np.load(self.root / rec["files"]["values"]["name"], mmap_mode="r",
                        allow_pickle=False)
            if c.shape != (n, N):  # pragma: no cover - written just above
                raise ValueError(f"partition file {rec['files']['coords']['name']} changed")
            for sl in iter_chunks(n):
                yield np.asarray(c[sl], dtype=np.int64), np.asarray(v[sl])

    def finish(self) -> None:
        """Build every mode's fiber index from the primary partitions; write ``meta.json``."""
        shape = self.shape
        N = len(shape)
        modes = [n for n in range(N) if S.fiber_key_fits(shape, n)]
        others = {n: [m for m in range(N) if m != n] for n in modes}
        hists = {n: _Histogram(math.prod(shape[m] for m in others[n])) for n in modes}
        with _progress(self.progress, total=self.nnz, desc="fiber keys", unit="nz") as bar:
            for c, v in self._primary_chunks():
                for n in modes:
                    hists[n].add(linear_index(c, shape, others[n]))
                bar.update(v.shape[0])
        buckets = {n: _Buckets(self.tmp, f"mode{n}", hists[n].bounds(self.partition_nnz))
                   for n in modes}
        with _progress(self.progress, total=self.nnz, desc="fiber scatter", unit="nz") as bar:
            for c, v in self._primary_chunks():
                for n in modes:
                    keys = linear_index(c, shape, others[n])
                    buckets[n].add(keys, {"keys": keys,
                                          "index": c[:, n].astype(self.index_dtype),
                                          "values": v})
                bar.update(v.shape[0])
        fibers: list[list[dict[str, Any]] | None] = [None] * N
        total = sum(int(np.count_nonzero(buckets[n].counts)) for n in modes)
        with _progress(self.progress, total=total, desc="fiber sort", unit="part") as bar:
            for n in modes:
                parts: list[dict[str, Any]] = []
                fibers[n] = parts
                bk = buckets[n]
                for b in range(bk.counts.shape[0]):
                    if bk.counts[b] == 0:
                        continue
                    d = bk.read(b)
                    order = np.argsort(d["keys"], kind="stable")
                    keys = d["keys"][order]
                    p = len(parts)
                    files = {f: self._save(f"mode{n}-{p:05d}-{f}.npy",
                                           keys if f == "keys" else d[f][order])
                             for f in S.FIBER_FIELDS}
                    parts.append({"nnz": int(keys.shape[0]), "first": [int(keys[0])],
                                      "last": [int(keys[-1])], "files": files})
                    bk.remove(b)
                    bar.update(1)
        S.write_meta(self.root, {
            "format": S.FORMAT, "version": S.VERSION, "shape": list(shape),
            "dtype": self.dtype.name, "index_dtype": self.index_dtype.name, "nnz": self.nnz,
            "primary": self.primary, "fibers": fibers,
        })
        self._written.append(self.root / S.META)


def sort_into_partitions(writer: StoreWriter, chunks: Callable[[], Iterator[tuple[Any, Any]]],
                         count: int) -> None:
    """Canonical primary partitions of unsorted entries (duplicates summed).

    Parameters
    ----------
    writer : StoreWriter
        Receives the partitions in order.
    chunks : callable
        Returns a fresh iterator of ``(coords, values)`` chunks (int64
        ``(n, N)`` coordinates in range); called twice (histogram, scatter).
    count : int
        Total number of entries (for the progress bar).
    """
    dims = writer.shape
    groups = word_groups(dims)
    g0 = groups[0]
    hist = _Histogram(math.prod(dims[m] for m in g0))
    for c, _ in chunks():
        hist.add(linear_index(c, dims, g0))
    buckets = _Buckets(writer.tmp, "primary", hist.bounds(writer.partition_nnz))
    with _progress(writer.progress, total=count, desc="scatter", unit="nz") as bar:
        for c, v in chunks():
            buckets.add(linear_index(c, dims, g0), {"coords": c, "values": v})
            bar.update(v.shape[0])
    with _progress(writer.progress, total=int(np.count_nonzero(buckets.counts)), desc="sort",
                   unit="part") as bar:
        for b in range(buckets.counts.shape[0]):
            if buckets.counts[b] == 0:
                continue
            d = buckets.read(b)
            c, v = d["coords"], d["values"]
            words = _words(c, dims)
            if len(words) == 1:
                order = np.argsort(words[0], kind="stable")
            else:
                order = np.lexsort(tuple(reversed(words)))
            new = np.ones(order.shape[0], dtype=bool)
            if order.shape[0] > 1:
                ws = [w[order] for w in words]
                new[1:] = ws[0][1:] != ws[0][:-1]
                for w in ws[1:]:
                    new[1:] |= w[1:] != w[:-1]
            starts = np.flatnonzero(new)
            c_s = c[order]
            v_s = v[order]
            if starts.shape[0] < order.shape[0]:
                c_s, v_s = c_s[starts], np.add.reduceat(v_s, starts)
            writer.add_partition(c_s, v_s)
            buckets.remove(b)
            bar.update(1)


def convert_tns(path: str | os.PathLike[str], root: str | os.PathLike[str], *,
                partition_nnz: int, shape: tuple[int, ...] | None, dtype: Any,
                index_base: int, has_values: bool | None, progress: bool) -> None:
    """Stream a FROSTT ``.tns`` file into a new store at ``root``.

    One parsing pass spills the validated entries (int64 coordinates and
    values, raw binary) into the store's temporary folder while taking the
    largest index per mode (the shape, unless given); the spill is then
    bucket-sorted into primary partitions and deleted, and
    `StoreWriter.finish` adds the fiber indexes.
    """
    from .._tns import TnsReader

    reader = TnsReader(path, shape=shape, dtype=dtype, index_base=index_base,
                       has_values=has_values)
    with StoreWriter(root, shape, dtype, partition_nnz=partition_nnz,
                     progress=progress) as writer:
        spill = _Buckets(writer.tmp, "spill", np.zeros(1, dtype=np.int64))
        maxes: np.ndarray | None = None
        with _progress(progress, total=reader.size, desc="parse", unit="B",
                       unit_scale=True) as bar:
            for c, v in reader.blocks(bar.update):
                m = c.max(axis=0)
                maxes = m if maxes is None else np.maximum(maxes, m)
                spill.add(np.zeros(c.shape[0], dtype=np.int64), {"coords": c, "values": v})
        if maxes is None:  # pragma: no cover - the reader raises on a file without data
            raise ValueError(f"{path}: no data lines found")
        if shape is None:
            writer.set_shape(tuple(int(x) + 1 for x in maxes))
        elif len(shape) != maxes.shape[0]:  # pragma: no cover - checked by the reader
            raise ValueError(f"shape {shape} does not match the file's {maxes.shape[0]} modes")
        n_raw = int(spill.counts[0])

        def chunks() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            for sl in iter_chunks(n_raw):
                d = spill.read(0, sl)
                yield d["coords"], d["values"]

        sort_into_partitions(writer, chunks, n_raw)
        spill.remove(0)
        writer.finish()


def convert_sparse(coords: np.ndarray, values: np.ndarray, shape: tuple[int, ...],
                   root: str | os.PathLike[str], npartitions: int, *,
                   progress: bool = False) -> None:
    """Write canonical in-memory COO arrays as a new store of ``npartitions`` partitions."""
    nnz = int(values.shape[0])
    nparts = max(1, min(int(npartitions), nnz))
    with StoreWriter(root, shape, values.dtype, partition_nnz=max(1, -(-nnz // nparts)),
                     progress=progress) as writer:
        cuts = np.linspace(0, nnz, nparts + 1).round().astype(np.int64)
        for a, b in zip(cuts[:-1], cuts[1:]):
            writer.add_partition(coords[a:b], values[a:b])
        writer.finish()
