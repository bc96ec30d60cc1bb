"""Benchmark: exact sparse CP-ALS in tensorfact vs pyttb ``cp_als`` on an ``sptensor``.

Both libraries factor the same planted sparse tensor (``planted_sparse_cp``:
power-law-skewed modes like review data, relative noise 0.1) from the same
initial factors and run the same fixed number of ALS sweeps (tensorfact
``tol=0``, pyttb ``stoptol=0``). Their final relative errors are recomputed here
with one exact formula and must agree (same iterates up to rounding).

Measured:

- **time per iteration**: median over sweeps of the wall time of one sweep.
  tensorfact: ``CPALSResult.history.time``; pyttb: its ``sptensor.mttkrp``
  is wrapped to time-stamp the start of every sweep (the mode-0 MTTKRP).
  Both run ``iters + 1`` sweeps; the first ``iters`` are timed for pyttb
  (the last one has no end stamp), all of them for tensorfact.
- **one-off costs** of tensorfact, reported separately and excluded from the
  per-iteration time: Numba compilation (first call in a fresh cache) and the
  per-mode index build (counting sort by each mode's index).
- **peak memory** (tracemalloc) of a one-sweep tensorfact run beyond the data,
  and the memory of its cached mode-sorted layouts.
- optionally (``--tns``) the time to write and read the tensor as a FROSTT
  ``.tns`` file.

Run ``python benchmarks/bench_sparse_als.py`` (10^7 nonzeros, several minutes:
pyttb needs about a minute per sweep there) or ``--quick`` (2 * 10^5).
"""

from __future__ import annotations

import _common  # noqa: I001  (must come first: pins BLAS threads before NumPy loads)

N_THREADS = _common.pin_threads()

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import tensorfact  # noqa: E402
from tensorfact import CPTensor, SparseTensor, cp_als  # noqa: E402
from tensorfact.datasets import planted_sparse_cp, read_tns, write_tns  # noqa: E402


def rel_error(X: SparseTensor, weights: np.ndarray, factors: list[np.ndarray]) -> float:
    op = X
    return float(np.sqrt(op.residual_norm_sq(weights, factors) / op.norm_sq()))


def run_tensorfact(X: SparseTensor, init: CPTensor, iters: int) -> dict[str, Any]:
    res = cp_als(X, init.rank, init=init, max_iter=iters + 1, tol=0)
    t = np.asarray(res.history.time)
    per = np.concatenate([t[:1], np.diff(t)])[:iters + 1].tolist()
    return {"per_iter_s": per, "weights": np.asarray(res.cp.weights),
            "factors": [np.asarray(A) for A in res.cp.factors]}


def run_pyttb(X: SparseTensor, init: CPTensor, iters: int) -> dict[str, Any]:
    import pyttb as ttb

    S = ttb.sptensor(np.array(X.coords), np.array(X.values)[:, None], X.shape)
    stamps: list[float] = []
    orig = ttb.sptensor.mttkrp

    def hooked(self: Any, U: Any, n: int) -> Any:
        if int(n) == 0:
            stamps.append(time.perf_counter())
        return orig(self, U, n)

    kinit = ttb.ktensor([np.asfortranarray(A) for A in init.factors], np.asarray(init.weights))
    ttb.sptensor.mttkrp = hooked  # type: ignore[method-assign]
    try:
        M, _, _ = ttb.cp_als(S, init.rank, stoptol=0.0, maxiters=iters + 1, init=kinit,
                             printitn=0, fixsigns=False)
    finally:
        ttb.sptensor.mttkrp = orig  # type: ignore[method-assign]
    per = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    return {"per_iter_s": per, "weights": np.asarray(M.weights),
            "factors": [np.asarray(A) for A in M.factor_matrices]}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2e5 nonzeros (seconds)")
    ap.add_argument("--nnz", type=int, default=None)
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--iters", type=int, default=None, help="timed sweeps")
    ap.add_argument("--skew", type=float, default=1.0)
    ap.add_argument("--no-pyttb", action="store_true")
    ap.add_argument("--tns", action="store_true", help="also time .tns write/read")
    args = ap.parse_args(argv)
    nnz = args.nnz or (200_000 if args.quick else 10_000_000)
    iters = args.iters or (3 if args.quick else 2)
    scale = (nnz / 1e7) ** (1 / 3)
    shape = tuple(max(50, int(s * scale)) for s in (20000, 15000, 10000))
    R = args.rank

    # Numba compilation (or cache load) on a tiny tensor, excluded from the timings
    t0 = time.perf_counter()
    tiny, _ = planted_sparse_cp((5, 6, 7), 2, nnz=50, rng=0)
    cp_als(tiny, 2, init="random", rng=0, max_iter=2)
    tiny.gather_fibers(0, np.zeros((1, 2), dtype=np.int64))
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    X, _ = planted_sparse_cp(shape, R, nnz=nnz, noise=0.1, skew=args.skew, rng=0)
    gen_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    layouts = [X._mode_layout(n) for n in range(X.ndim)]
    index_s = time.perf_counter() - t0
    layout_bytes = sum(a.nbytes for lay in layouts for a in lay)
    gen = np.random.default_rng(42)
    init = CPTensor([gen.standard_normal((s, R)) for s in shape], weights=np.ones(R))

    out: dict[str, Any] = {
        "machine": _common.machine_info(N_THREADS),
        "case": {"shape": list(shape), "nnz": X.nnz, "rank": R, "skew": args.skew,
                 "noise": 0.1, "iters": iters, "dtype": "float64"},
        "tensorfact": {"numba_compile_or_cache_load_s": compile_s, "index_build_s": index_s,
                       "layout_bytes": layout_bytes, "generate_s": gen_s},
    }
    with _common.blas_limits(N_THREADS):
        tf_run = run_tensorfact(X, init, iters)
    out["tensorfact"]["per_iter_s"] = tf_run["per_iter_s"]
    out["tensorfact"]["time_per_iter_s"] = statistics.median(tf_run["per_iter_s"])
    out["tensorfact"]["rel_error"] = rel_error(X, tf_run["weights"], tf_run["factors"])
    _, peak = _common.peak_memory(lambda: cp_als(X, R, init=init, max_iter=1, tol=0))
    out["tensorfact"]["peak_extra_bytes_one_sweep"] = peak

    if not args.no_pyttb:
        with _common.blas_limits(N_THREADS):
            py_run = run_pyttb(X, init, iters)
        out["pyttb"] = {"per_iter_s": py_run["per_iter_s"],
                        "time_per_iter_s": statistics.median(py_run["per_iter_s"]),
                        "rel_error": rel_error(X, py_run["weights"], py_run["factors"])}
        out["pyttb_over_tensorfact"] = (out["pyttb"]["time_per_iter_s"]
                                        / out["tensorfact"]["time_per_iter_s"])

    if args.tns:
        with tempfile.TemporaryDirectory() as d:
            p = os.path.join(d, "x.tns")
            t0 = time.perf_counter()
            write_tns(p, X)
            w_s = time.perf_counter() - t0
            size = os.path.getsize(p)
            t0 = time.perf_counter()
            Y = read_tns(p, shape=X.shape)
            r_s = time.perf_counter() - t0
            if Y.nnz != X.nnz:
                raise RuntimeError("read_tns round trip lost entries")
        out["tns"] = {"write_s": w_s, "read_s": r_s, "file_bytes": size}

    name = "sparse_als_quick" if args.quick else "sparse_als"
    path = _common.write_json(name, out)
    header = ["nnz", "shape", "R", "tf ms/it", "pyttb ms/it", "pyttb/tf", "err tf", "err pyttb",
              "tf index s", "tf compile s"]
    py = out.get("pyttb", {})
    row = [X.nnz, "x".join(map(str, shape)), R, 1e3 * out["tensorfact"]["time_per_iter_s"],
           1e3 * py["time_per_iter_s"] if py else None,
           out.get("pyttb_over_tensorfact"), f"{out['tensorfact']['rel_error']:.8f}",
           f"{py['rel_error']:.8f}" if py else None, index_s, compile_s]
    print(f"tensorfact {tensorfact.__version__}, {N_THREADS} threads")
    print(_common.format_table([row], header))
    print()
    print(_common.format_table([row], header, markdown=True))
    if "tns" in out:
        t = out["tns"]
        print(f".tns: write {t['write_s']:.2f} s, read {t['read_s']:.2f} s, "
              f"{t['file_bytes'] / 2**20:.0f} MiB")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
