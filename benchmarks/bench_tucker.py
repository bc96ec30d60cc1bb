"""Benchmark: Tucker HOOI in tensorfact vs TensorLy ``tucker``, and sparse Tucker at scale.

Dense case (default ``300^3``, ranks ``(20, 20, 20)``, float64): both libraries
start from the same initial factors (seeded random orthonormal matrices, a
zero core) and run the same fixed number of HOOI sweeps (tensorfact
``tol=0``, TensorLy ``tol=0``), so their iterates are the same; the final
relative errors ``||X - T|| / ||X||`` are recomputed here with one formula and
must agree.

- **time per iteration**: the median over sweeps of the wall time of one
  sweep. tensorfact's comes from ``TuckerResult.history.time``; TensorLy's from
  time stamps of the first TTM chain of every sweep (its module-level
  ``multi_mode_dot`` is wrapped and stamps the call with ``skip=0``). Both run
  ``iters + 1`` sweeps and the first ``iters`` are timed (for TensorLy the
  last one has no end stamp).
- **peak memory**: ``tracemalloc`` peak of a separate 2-sweep run beyond the
  memory held before the call (the input tensor excluded), as a fraction of
  the tensor's size.

Sparse case (default ``10^7`` nonzeros of a ``20000^3`` tensor, ranks
``(10, 10, 10)``): tensorfact's HOOI on a ``SparseTensor`` in a child process
(so its memory is its own), reporting the median time per sweep and the peak
resident memory of the child (``ru_maxrss``) beside the bytes of the
coordinates and values.

The target is at least twice TensorLy's speed per sweep on the dense case
(tensorfact reads the tensor twice per sweep and never unfolds it; TensorLy
makes one TTM chain per mode plus one for the core, with unfolding copies).

Run ``python benchmarks/bench_tucker.py`` (minutes, on an idle machine) or
``--quick`` (a small smoke run: ``40^3`` ranks 5 and ``10^4`` nonzeros).
"""

from __future__ import annotations

import _common  # noqa: I001  (must come first: pins BLAS threads before NumPy loads)

N_THREADS = _common.pin_threads()

import argparse  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import tensorfact  # noqa: E402
from tensorfact import SparseTensor, TuckerTensor, tucker  # noqa: E402


# --------------------------------------------------------------------------- data
def planted(shape: tuple[int, ...], ranks: tuple[int, ...], seed: int = 0) -> np.ndarray:
    """A Tucker tensor of the given ranks plus 10% Gaussian noise (float64, C order)."""
    g = np.random.default_rng(seed)
    facs = [np.linalg.qr(g.standard_normal((s, r)))[0] for s, r in zip(shape, ranks)]
    T = np.asarray(TuckerTensor(g.standard_normal(ranks), facs).to_dense())
    E = g.standard_normal(shape)
    T += 0.1 * np.linalg.norm(T) / np.linalg.norm(E) * E
    return np.ascontiguousarray(T)


def common_init(shape: tuple[int, ...], ranks: tuple[int, ...], seed: int = 42) -> TuckerTensor:
    g = np.random.default_rng(seed)
    facs = [np.linalg.qr(g.standard_normal((s, r)))[0] for s, r in zip(shape, ranks)]
    return TuckerTensor(np.zeros(ranks), facs)


def rel_error(X: np.ndarray, core: Any, factors: list[Any]) -> float:
    """Exact ``||X - T|| / ||X||`` of a Tucker model (densified once)."""
    T = np.asarray(TuckerTensor(np.asarray(core), [np.asarray(A) for A in factors]).to_dense())
    return float(np.linalg.norm(X - T) / np.linalg.norm(X))


# --------------------------------------------------------------------------- runners
def run_tensorfact(X: Any, init: TuckerTensor, iters: int) -> dict[str, Any]:
    res = tucker(X, init.ranks, init=init, max_iter=iters + 1, tol=0.0)
    t = (0.0,) + tuple(res.history.time)
    per = [b - a for a, b in zip(t[:-1], t[1:])][:iters]
    return {"per_iter_s": per, "n_iter": res.n_iter, "core": res.tucker.core,
            "factors": list(res.tucker.factors), "internal_rel_error": res.rel_error}


def run_tensorly(X: np.ndarray, init: TuckerTensor, iters: int) -> dict[str, Any]:
    import tensorly as tl
    import tensorly.decomposition._tucker as tlt

    tl.set_backend("numpy")
    stamps: list[float] = []
    orig = tlt.multi_mode_dot

    def hooked(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("skip") == 0:
            stamps.append(time.perf_counter())
        return orig(*args, **kwargs)

    tl_init = init.to_tensorly()
    tl_init = type(tl_init)((np.array(init.core), [A.copy() for A in init.factors]))
    tlt.multi_mode_dot = hooked
    try:
        core, factors = tlt.tucker(X, list(init.ranks), init=tl_init, n_iter_max=iters + 1,
                                   tol=0)
    finally:
        tlt.multi_mode_dot = orig
    per = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    return {"per_iter_s": per, "n_iter": iters + 1, "core": core, "factors": list(factors)}


def dense_case(shape: tuple[int, ...], ranks: tuple[int, ...], iters: int) -> dict[str, Any]:
    X = planted(shape, ranks)
    init = common_init(shape, ranks)
    case: dict[str, Any] = {"shape": list(shape), "ranks": list(ranks), "dtype": "float64",
                            "iters": iters, "tensor_bytes": X.nbytes, "results": {}}
    for lib, runner in (("tensorfact", run_tensorfact), ("tensorly", run_tensorly)):
        gc.collect()
        out = runner(X, init, iters)
        err = rel_error(X, out["core"], out["factors"])
        del out["core"], out["factors"]
        gc.collect()
        _, peak = _common.peak_memory(lambda r=runner: r(X, init, 2))
        per = out["per_iter_s"]
        case["results"][lib] = {
            "status": "ok", "time_per_iter_s": statistics.median(per),
            "min_time_per_iter_s": min(per), "per_iter_s": per, "sweeps_run": out["n_iter"],
            "final_rel_error": err, "peak_extra_bytes": peak,
            "peak_extra_frac": peak / X.nbytes,
        }
        print(f"    {lib:10s} {statistics.median(per):.4f} s/iter  err {err:.10f}  "
              f"peak {peak / X.nbytes:.2f}x tensor", flush=True)
    r = case["results"]
    case["tensorly_over_tensorfact"] = (r["tensorly"]["time_per_iter_s"]
                                        / r["tensorfact"]["time_per_iter_s"])
    ref = r["tensorfact"]["final_rel_error"]
    case["error_disagreement"] = abs(r["tensorly"]["final_rel_error"] - ref) / ref
    return case


# --------------------------------------------------------------------------- sparse
def sparse_child(shape: tuple[int, ...], ranks: tuple[int, ...], nnz: int, iters: int) -> None:
    """Child-process entry: sparse HOOI; prints one JSON line with times and peak RSS."""
    g = np.random.default_rng(0)
    coords = np.stack([g.integers(0, s, nnz) for s in shape], axis=1)
    values = g.standard_normal(nnz)
    S = SparseTensor(coords, values, shape)
    del coords, values
    gc.collect()
    rss_data = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    init = common_init(shape, ranks)
    t0 = time.perf_counter()
    res = tucker(S, ranks, init=init, max_iter=iters + 1, tol=0.0)
    total = time.perf_counter() - t0
    t = (0.0,) + tuple(res.history.time)
    per = [b - a for a, b in zip(t[:-1], t[1:])][1:]  # the first sweep compiles the kernels
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    print(json.dumps({
        "shape": list(shape), "ranks": list(ranks), "nnz": S.nnz, "iters": iters,
        "time_per_iter_s": statistics.median(per), "per_iter_s": per, "total_s": total,
        "rel_error": res.rel_error, "coo_bytes": S.nnz * (8 * len(shape) + 8),
        "peak_rss_bytes": peak, "peak_rss_before_solve_bytes": rss_data,
        "dense_tensor_bytes": 8 * math.prod(shape),
    }))


def sparse_case(shape: tuple[int, ...], ranks: tuple[int, ...], nnz: int, iters: int
                ) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--sparse-child", "x".join(map(str, shape)),
           ",".join(map(str, ranks)), str(nnz), str(iters)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    case = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"    sparse nnz={case['nnz']:.2e}: {case['time_per_iter_s']:.3f} s/iter, "
          f"peak RSS {case['peak_rss_bytes'] / 2**30:.2f} GiB "
          f"(COO {case['coo_bytes'] / 2**30:.2f} GiB)", flush=True)
    return case


# --------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="small smoke run (40^3, 10^4 nonzeros)")
    p.add_argument("--iters", type=int, default=None, help="timed sweeps (default 10; quick 2)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--sparse-child", nargs=4, default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.sparse_child:
        shape_s, ranks_s, nnz_s, iters_s = args.sparse_child
        sparse_child(tuple(int(d) for d in shape_s.split("x")),
                     tuple(int(r) for r in ranks_s.split(",")), int(nnz_s), int(iters_s))
        return 0
    if args.quick:
        dense = ((40, 40, 40), (5, 5, 5))
        sparse = ((200, 200, 200), (5, 5, 5), 10_000)
        iters = args.iters or 2
    else:
        dense = ((300, 300, 300), (20, 20, 20))
        sparse = ((20000, 20000, 20000), (10, 10, 10), 10_000_000)
        iters = args.iters or 10
    out = args.out or _common.RESULTS_DIR / ("tucker_quick.json" if args.quick else "tucker.json")

    import tensorly  # noqa: F401  (versions recorded in the JSON)

    # warm-up (imports, first-call overheads) on a tiny problem
    Xw = planted((8, 9, 10), (2, 2, 2))
    run_tensorfact(Xw, common_init(Xw.shape, (2, 2, 2)), 2)
    run_tensorly(Xw, common_init(Xw.shape, (2, 2, 2)), 2)

    payload: dict[str, Any] = {
        "benchmark": "tucker",
        "machine": _common.machine_info(N_THREADS),
        "config": {"iters": iters, "quick": args.quick,
                   "data": "Tucker tensor of the given ranks plus 10% Gaussian noise",
                   "init": "seeded random orthonormal factors, zero core (same for both)"},
        "method": {
            "time_per_iter": "median over sweeps; tensorfact from history.time, TensorLy "
                             "from time stamps of its first TTM chain of each sweep",
            "peak_memory": "tracemalloc peak of a separate 2-sweep run beyond the memory "
                           "held before the call, as a fraction of the tensor's size",
            "sparse": "child process; ru_maxrss after the solve (includes the COO data)",
        },
    }
    load0 = os.getloadavg()
    print(f"tensorfact {tensorfact.__version__}: Tucker benchmark, {N_THREADS} BLAS threads, "
          f"{iters} timed sweeps, load avg {load0[0]:.2f}", flush=True)
    with _common.blas_limits(N_THREADS):
        print(f"  dense {'x'.join(map(str, dense[0]))} ranks {dense[1]}", flush=True)
        payload["dense"] = dense_case(*dense, iters)
        payload["dense"]["load_avg_1min"] = os.getloadavg()[0]
        _common.write_json("tucker", payload, out=out)
        gc.collect()
    print(f"  sparse {'x'.join(map(str, sparse[0]))} ranks {sparse[1]} nnz {sparse[2]:.0e}",
          flush=True)
    payload["sparse"] = sparse_case(*sparse, iters)
    _common.write_json("tucker", payload, out=out)

    d = payload["dense"]
    rows = [[lib, f"{v['time_per_iter_s']:.4g}", f"{v['peak_extra_frac']:.2f}",
             f"{v['final_rel_error']:.10f}"] for lib, v in d["results"].items()]
    print()
    print(_common.format_table(rows, ["library", "s/iter", "peak/tensor", "rel error"]))
    ratio = d["tensorly_over_tensorfact"]
    print(f"TensorLy / tensorfact per sweep: {ratio:.2f} (target >= 2: "
          f"{'met' if ratio >= 2 else 'NOT met'}); relative disagreement of the final errors "
          f"{d['error_disagreement']:.1e}")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
