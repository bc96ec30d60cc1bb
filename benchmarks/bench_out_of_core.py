"""Benchmark: CP-ALS on a dense tensor larger than memory, read from a memory-mapped ``.npy``.

1. **The store.** If absent, a float64 ``.npy`` file of ``--shape`` is created
   in ``--dir`` (default ``benchmarks/data/``, which ignores itself in git):
   a planted rank-``--rank`` CP tensor plus Gaussian noise of relative size
   ``--noise``, written slab by slab (one mode-0 slice at a time, each drawn
   from its own seeded generator) through ``numpy.lib.format.open_memmap``,
   so it is never held in memory. Creation runs in a child process, so that
   the peak RSS reported below is the decomposition's alone; the file is
   written under a temporary name and renamed when complete.
2. **One read of the store**: the sum of squares in one pass
   (``DaskDenseTensor.norm_sq``, which also screens for NaN/Inf), the unit
   the sweeps are measured in.
3. **CP-ALS**: ``--sweeps`` sweeps of rank ``--rank`` from a random start
   (no extra passes), ``tol=0``. Per sweep: wall time (from
   ``CPALSResult.history.time``) and its ratio to one read. The MTTKRP reads
   the store once per mode, or once per half of the modes (twice per sweep)
   when the dimension-tree intermediates fit ``--tree-budget-gb``.
4. **Peak RSS** of this process (``resource.getrusage``; ``psutil``'s current
   RSS where ``resource`` is missing), checked against ``--max-rss-gb``:
   the exit status is 1 when it is exceeded.

The chunks hold the last mode whole (contiguous runs of the C-ordered file)
and as much of the first mode as fits (see :func:`chunk_shape`), sized so
that a few per thread fit ``--max-rss-gb``; ``--chunk-mb`` overrides. The
graph runs on dask's local threaded scheduler with ``--threads`` threads,
each with single-threaded BLAS (pinned with threadpoolctl).

The page cache is not dropped (that needs root): on a machine with more
memory than the store, repeated runs read from the cache; the JSON records
the store's size and the machine's memory so the reader can tell.

Real run (33 GB store, ~minutes per sweep)::

    python benchmarks/bench_out_of_core.py --shape 1600,1600,1600 --max-rss-gb 4

Smoke run::

    python benchmarks/bench_out_of_core.py --shape 40,30,20 --sweeps 2 --out /tmp/ooc.json
"""

from __future__ import annotations

import _common  # noqa: I001  (must come first: pins BLAS threads before NumPy loads)

N_BLAS_THREADS = _common.pin_threads(1)  # one BLAS thread per dask thread

import argparse  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

DEFAULT_DIR = Path(__file__).resolve().parent / "data"


# --------------------------------------------------------------------------- the store
def store_path(folder: Path, shape: tuple[int, ...], rank: int, noise: float, seed: int) -> Path:
    dims = "x".join(str(d) for d in shape)
    return folder / f"planted_{dims}_r{rank}_n{noise:g}_s{seed}.npy"


def _planted_factors(shape: tuple[int, ...], rank: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng([seed, 0])
    return [rng.standard_normal((d, rank)) for d in shape]


def create_store(path: Path, shape: tuple[int, ...], rank: int, noise: float, seed: int) -> None:
    """Write the planted tensor one mode-0 slice at a time (never all in memory)."""
    factors = _planted_factors(shape, rank, seed)
    grams = [A.T @ A for A in factors]
    model_norm = math.sqrt(float(np.sum(np.prod(grams, axis=0))))
    sigma = noise * model_norm / math.sqrt(math.prod(shape))
    trailing = factors[1:]
    tmp = path.with_name(path.name + ".partial")
    out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float64, shape=shape)
    try:
        for i in range(shape[0]):
            # slice i: sum_r A0[i, r] * (A1[:, r] o A2[:, r] o ...), built by one GEMM
            left = trailing[0] * factors[0][i][None, :]
            rest = trailing[1:]
            krp = np.ones((1, rank))
            for A in rest:
                krp = (krp[:, None, :] * A[None, :, :]).reshape(-1, rank)
            block = (left @ krp.T).reshape(shape[1:])
            if sigma > 0:
                block += sigma * np.random.default_rng([seed, 1, i]).standard_normal(shape[1:])
            out[i] = block
        out.flush()
    finally:
        del out
    os.replace(tmp, path)


def ensure_store(args: argparse.Namespace, shape: tuple[int, ...]) -> tuple[Path, float]:
    folder = Path(args.dir)
    folder.mkdir(parents=True, exist_ok=True)
    if folder.resolve() == DEFAULT_DIR:
        ignore = folder / ".gitignore"
        if not ignore.exists():
            ignore.write_text("*\n", encoding="utf-8")
    path = store_path(folder, shape, args.rank, args.noise, args.seed)
    if path.exists():
        mm = np.load(path, mmap_mode="r", allow_pickle=False)
        if mm.shape == shape and mm.dtype == np.float64:
            return path, 0.0
        raise SystemExit(f"{path} exists with shape {mm.shape} / dtype {mm.dtype}; remove it")
    t0 = time.perf_counter()
    # a child process: the parent's peak RSS must be the decomposition's alone
    cmd = [sys.executable, __file__, "--create-only", "--shape", ",".join(map(str, shape)),
           "--rank", str(args.rank), "--noise", str(args.noise), "--seed", str(args.seed),
           "--dir", str(folder)]
    subprocess.run(cmd, check=True)
    return path, time.perf_counter() - t0


# --------------------------------------------------------------------------- measurements
def peak_rss_bytes() -> tuple[int | None, str]:
    try:
        import resource

        kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
        return int(kb) * scale, "resource.getrusage ru_maxrss (peak)"
    except ImportError:  # pragma: no cover - Windows
        try:
            import psutil

            return int(psutil.Process().memory_info().rss), "psutil rss (current, not peak)"
        except ImportError:
            return None, "unavailable"


def machine_memory() -> int | None:
    try:
        import psutil

        return int(psutil.virtual_memory().total)
    except ImportError:
        try:
            return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
        except (ValueError, OSError, AttributeError):
            return None


def chunk_shape(shape: tuple[int, ...], itemsize: int, target: int, rank: int
                ) -> tuple[int, ...]:
    """Chunks of about ``target`` bytes: the last mode whole, then the first, then the middle.

    The last mode whole makes every chunk a set of contiguous runs of the
    C-ordered file (sequential reads). The first mode long keeps the
    dimension tree's reduction small: the intermediate of the trailing half
    is summed over the chunks along the leading half, which adds
    ``R / prod(chunk's leading dims)`` times the tensor's size in memory
    traffic.
    """
    elements = max(1, target // itemsize)
    chunks = [1] * len(shape)
    chunks[-1] = min(shape[-1], elements)
    left = max(1, elements // chunks[-1])
    chunks[0] = min(shape[0], max(left, 1))
    left = max(1, left // chunks[0])
    for m in range(len(shape) - 2, 0, -1):
        chunks[m] = min(shape[m], left)
        left = max(1, left // chunks[m])
    if chunks[0] < min(shape[0], 16 * rank):
        print(f"note: chunks {tuple(chunks)} are short along mode 0 for rank {rank}; the "
              "dimension tree's reduction will cost more than usual", file=sys.stderr)
    return tuple(chunks)


def tree_halves(shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """The two halves of the modes of the dimension tree (same rule as tensorfact's)."""
    best_h, best = 1, None
    for h in range(1, len(shape)):
        c = math.prod(shape[:h]) + math.prod(shape[h:])
        if best is None or c < best:
            best_h, best = h, c
    return [tuple(range(best_h)), tuple(range(best_h, len(shape)))]


def run(args: argparse.Namespace) -> int:
    import dask

    from tensorfact import cp_als
    from tensorfact.formats import DaskDenseTensor

    shape = tuple(int(s) for s in args.shape.split(","))
    path, create_s = ensure_store(args, shape)
    store_bytes = math.prod(shape) * 8
    max_rss = int(args.max_rss_gb * 2**30)
    threads = args.threads or N_THREADS_AVAILABLE
    target = (int(args.chunk_mb * 2**20) if args.chunk_mb
              else int(min(256 * 2**20, max(8 * 2**20, max_rss // (8 * threads)))))
    chunks = chunk_shape(shape, 8, target, args.rank)
    tree_budget = 0 if args.no_tree else int(args.tree_budget_gb * 2**30)
    R = args.rank
    halves = tree_halves(shape)
    fits = [tree_budget > 0 and R * math.prod(shape[m] for m in h) * 8 <= tree_budget
            for h in halves]
    reads_per_sweep = sum(1 if f else len(h) for h, f in zip(halves, fits))

    with _common.blas_limits(N_BLAS_THREADS), \
            dask.config.set(scheduler="threads", num_workers=threads):
        import dask.array as da

        DaskDenseTensor(da.ones((2, 2), chunks=1)).norm_sq()  # warm-up: imports, thread pool
        data = DaskDenseTensor.from_npy(path, chunks=chunks, memory_budget=tree_budget)
        t0 = time.perf_counter()
        data.check_finite("the store")
        norm_sq = data.norm_sq()
        read_once_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        res = cp_als(data, R, init="random", max_iter=args.sweeps, tol=0,
                     rng=np.random.default_rng(args.seed))
        total_s = time.perf_counter() - t0
    stamps = (0.0,) + tuple(res.history.time)
    sweep_s = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    median = statistics.median(sweep_s)
    peak, peak_how = peak_rss_bytes()
    within = None if peak is None else peak <= max_rss
    payload: dict[str, Any] = {
        "benchmark": "out_of_core",
        "machine": _common.machine_info(threads),
        "machine_memory_bytes": machine_memory(),
        "store": {"path": path.name, "shape": shape, "dtype": "float64", "bytes": store_bytes,
                  "planted_rank": R, "noise": args.noise, "seed": args.seed,
                  "created_s": create_s or None},
        "chunks": {"shape": chunks, "bytes": math.prod(chunks) * 8,
                   "numblocks": list(data.X.numblocks)},
        "threads": threads,
        "blas_threads_per_thread": N_BLAS_THREADS,
        "rank": R,
        "tree_budget_bytes": tree_budget,
        "tree_halves": [list(h) for h in halves],
        "tree_half_fits": fits,
        "store_reads_per_sweep": reads_per_sweep,
        "read_once_s": read_once_s,
        "read_once_gb_per_s": store_bytes / read_once_s / 1e9,
        "norm": math.sqrt(norm_sq),
        "sweep_s": sweep_s,
        "sweep_median_s": median,
        "sweep_over_read_once": median / read_once_s,
        "cp_als_total_s": total_s,
        "rel_error": res.history.rel_error,
        "peak_rss_bytes": peak,
        "peak_rss_how": peak_how,
        "max_rss_bytes": max_rss,
        "within_max_rss": within,
    }
    dims = "x".join(map(str, shape))
    out = _common.write_json(f"out_of_core_{dims}_r{R}", payload, out=args.out)
    rows = [[dims, R, f"{store_bytes / 2**30:.2f}", "x".join(map(str, chunks)), reads_per_sweep,
             read_once_s, median, median / read_once_s,
             None if peak is None else peak / 2**30, res.history.rel_error[-1]]]
    print(_common.format_table(rows, ["shape", "R", "store GiB", "chunk", "reads/sweep",
                                      "read once s", "sweep s", "sweep/read",
                                      "peak RSS GiB", "rel error"]))
    print(f"wrote {out}")
    if within is False:
        print(f"peak RSS {peak / 2**30:.2f} GiB exceeds --max-rss-gb {args.max_rss_gb}",
              file=sys.stderr)
        return 1
    return 0


try:
    N_THREADS_AVAILABLE = len(os.sched_getaffinity(0))
except AttributeError:  # pragma: no cover - non-Linux
    N_THREADS_AVAILABLE = os.cpu_count() or 1


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shape", default="800,800,800", help="comma-separated, e.g. 1600,1600,1600")
    p.add_argument("--rank", type=int, default=10, help="planted and fitted rank")
    p.add_argument("--sweeps", type=int, default=3, help="CP-ALS sweeps timed")
    p.add_argument("--noise", type=float, default=0.1, help="relative noise of the plant")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dir", default=str(DEFAULT_DIR),
                   help="folder of the store (default benchmarks/data/, git-ignored)")
    p.add_argument("--max-rss-gb", type=float, default=4.0,
                   help="memory budget: sizes the chunks; exit status 1 if the peak RSS "
                        "exceeds it")
    p.add_argument("--tree-budget-gb", type=float, default=None,
                   help="memory for the dimension-tree intermediates (default a quarter of "
                        "--max-rss-gb)")
    p.add_argument("--no-tree", action="store_true", help="one pass per mode (N per sweep)")
    p.add_argument("--chunk-mb", type=float, default=None, help="target chunk size")
    p.add_argument("--threads", type=int, default=None, help="dask threads (default: cores)")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default benchmarks/results/out_of_core_<shape>_r<R>.json)")
    p.add_argument("--create-only", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.tree_budget_gb is None:
        args.tree_budget_gb = args.max_rss_gb / 4
    if args.create_only:
        shape = tuple(int(s) for s in args.shape.split(","))
        create_store(store_path(Path(args.dir), shape, args.rank, args.noise, args.seed),
                     shape, args.rank, args.noise, args.seed)
        return 0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
