"""Benchmark: non-negative CP by HALS, tensorfact vs TensorLy ``non_negative_parafac_hals``.

Both start from the same non-negative initial factors (seeded uniform, unit
weights) and run the same fixed number of sweeps (``tol=0``) with the same
inner-loop rule (at most 5 column sweeps per mode, TensorLy's defaults), so
their iterates agree up to rounding; the final relative errors are
recomputed here with one exact formula.

Measured per case (shape x rank):

- **time per iteration**: the median over sweeps of the wall time of one
  sweep. tensorfact's come from ``CPALSResult.history.time``; TensorLy's from
  time stamps of its mode-0 MTTKRP call
  (``tensorly.decomposition._nn_cp.unfolding_dot_khatri_rao``, wrapped for
  the run). Both run ``iters + 1`` sweeps and the first ``iters`` are timed.
  With ``tol=0`` TensorLy computes no error in its loop; tensorfact does
  (from the last MTTKRP, cheap).
- **peak memory**: ``tracemalloc`` peak of a separate 2-sweep run beyond the
  memory held before the call (the input tensor excluded), as a fraction of
  the tensor's size.
- **final relative error** ``||X - M|| / ||X||`` of each library's model.

TensorLy unfolds the tensor and forms the Khatri-Rao product of the other
factors for every mode's MTTKRP; tensorfact's sweep is two GEMM passes over
the tensor (dimension tree). Target: TensorLy/tensorfact time per iteration
``>= 2`` on ``300^3``, rank 10, float64.

Run ``python benchmarks/bench_nonneg.py`` (300^3, minutes) or ``--quick``
(a tiny smoke run that checks the script, not the speed).
"""

from __future__ import annotations

import _common  # noqa: I001  (must come first: pins BLAS threads before NumPy loads)

N_THREADS = _common.pin_threads()

import argparse  # noqa: E402
import gc  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from collections.abc import Iterator  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402
from bench_cp_als import rel_error  # noqa: E402

import tensorfact  # noqa: E402
from tensorfact import CPTensor, nonnegative_cp  # noqa: E402

FULL_SHAPES = [(300, 300, 300)]
QUICK_SHAPES = [(30, 31, 32)]
LIBS = ("tensorfact", "tensorly")


def planted_nonneg(shape: tuple[int, ...], R: int, seed: int = 0) -> np.ndarray:
    """A non-negative rank-``R`` tensor plus 10% non-negative uniform noise."""
    g = np.random.default_rng(seed)
    X = np.asarray(CPTensor([g.uniform(size=(s, R)) for s in shape]).to_dense())
    E = g.uniform(size=shape)
    return np.ascontiguousarray(X + 0.1 * np.linalg.norm(X) * E / np.linalg.norm(E))


def run_tensorfact(X: np.ndarray, init: CPTensor, iters: int) -> dict[str, Any]:
    res = nonnegative_cp(X, init.rank, init=init, max_iter=iters + 1, tol=0.0)
    t = (0.0,) + tuple(res.history.time)
    return {"per_iter_s": [b - a for a, b in zip(t[:-1], t[1:])][:iters],
            "weights": np.asarray(res.cp.weights),
            "factors": [np.asarray(A) for A in res.cp.factors]}


@contextmanager
def _sweep_stamps(module: Any) -> Iterator[list[float]]:
    """Time stamps of the mode-0 MTTKRP calls ``module`` makes (one per sweep)."""
    stamps: list[float] = []
    mttkrp = module.unfolding_dot_khatri_rao

    def stamped(tensor: Any, cp: Any, mode: int) -> Any:
        stamps.extend([time.perf_counter()] if mode == 0 else [])
        return mttkrp(tensor, cp, mode)

    module.unfolding_dot_khatri_rao = stamped
    try:
        yield stamps
    finally:
        module.unfolding_dot_khatri_rao = mttkrp


def run_tensorly(X: np.ndarray, init: CPTensor, iters: int) -> dict[str, Any]:
    import tensorly as tl
    import tensorly.decomposition._nn_cp as nncp
    from tensorly.decomposition import non_negative_parafac_hals

    tl.set_backend("numpy")
    start = tl.cp_tensor.CPTensor((np.asarray(init.weights).copy(),
                                   [A.copy() for A in init.factors]))
    with _sweep_stamps(nncp) as t:
        w, f = non_negative_parafac_hals(X, init.rank, n_iter_max=iters + 1, init=start, tol=0)
    return {"per_iter_s": list(np.diff(t)), "weights": np.asarray(w),
            "factors": [np.asarray(A) for A in f]}


RUNNERS = {"tensorfact": run_tensorfact, "tensorly": run_tensorly}


def run_case(shape: tuple[int, ...], R: int, iters: int, rounds: int) -> dict[str, Any]:
    X = planted_nonneg(shape, R)
    g = np.random.default_rng(42)
    init = CPTensor([g.uniform(size=(s, R)) for s in shape], weights=np.ones(R))
    case: dict[str, Any] = {"shape": list(shape), "rank": R, "dtype": "float64",
                            "iters": iters, "rounds": rounds, "tensor_bytes": X.nbytes,
                            "results": {}}
    for lib in LIBS:
        gc.collect()
        out = RUNNERS[lib](X, init, iters)
        err = rel_error(X, out["weights"], out["factors"])
        gc.collect()
        _, peak = _common.peak_memory(lambda: RUNNERS[lib](X, init, 2))  # noqa: B023
        case["results"][lib] = {"per_iter_s": out["per_iter_s"], "final_rel_error": err,
                                "peak_extra_bytes": peak, "peak_extra_frac": peak / X.nbytes}
    for _ in range(rounds - 1):  # libraries interleaved: a busy machine slows both alike
        for lib in LIBS:
            gc.collect()
            case["results"][lib]["per_iter_s"] += RUNNERS[lib](X, init, iters)["per_iter_s"]
    for lib in LIBS:
        r = case["results"][lib]
        r["time_per_iter_s"] = statistics.median(r["per_iter_s"])
        r["min_time_per_iter_s"] = min(r["per_iter_s"])
        print(f"    {lib:10s} {r['time_per_iter_s']:.4f} s/iter  err "
              f"{r['final_rel_error']:.6e}  peak {r['peak_extra_frac']:.2f}x tensor", flush=True)
    ours, peer = (case["results"][lib] for lib in LIBS)
    case["tensorly_over_tensorfact"] = peer["time_per_iter_s"] / ours["time_per_iter_s"]
    case["error_disagreement"] = abs(peer["final_rel_error"] / ours["final_rel_error"] - 1.0)
    return case


HEADER = ["shape", "R", "tf s/it", "TL s/it", "TL/tf", "tf mem", "TL mem", "err tf", "err TL"]


def table_rows(cases: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for c in cases:
        tf_, tl_ = c["results"]["tensorfact"], c["results"]["tensorly"]
        rows.append(["x".join(map(str, c["shape"])), c["rank"], f"{tf_['time_per_iter_s']:.4g}",
                     f"{tl_['time_per_iter_s']:.4g}", f"{c['tensorly_over_tensorfact']:.2f}",
                     f"{tf_['peak_extra_frac']:.2f}", f"{tl_['peak_extra_frac']:.2f}",
                     f"{tf_['final_rel_error']:.6e}", f"{tl_['final_rel_error']:.6e}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--iters", type=int, default=None, help="timed sweeps per run (default 10)")
    p.add_argument("--quick", action="store_true",
                   help="a tiny 30x31x32 smoke run, 3 sweeps (checks the script, not the speed)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the timing runs, libraries interleaved (busy machines)")
    p.add_argument("--shapes", default=None, help="e.g. '300x300x300,200x200x200'")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default benchmarks/results/nonneg.json; --quick writes "
                        "nonneg_quick.json)")
    args = p.parse_args(argv)
    shapes = QUICK_SHAPES if args.quick else FULL_SHAPES
    if args.shapes:
        shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    iters = args.iters or (3 if args.quick else 10)
    out = args.out or _common.RESULTS_DIR / ("nonneg_quick.json" if args.quick else "nonneg.json")

    import tensorly  # noqa: F401  (version recorded in the JSON)

    Xw = planted_nonneg((8, 9, 10), 2)  # warm-up: imports, Numba compilation
    initw = CPTensor([np.ones((s, 2)) + np.eye(s, 2) for s in Xw.shape])
    for runner in RUNNERS.values():
        runner(Xw, initw, 2)

    payload: dict[str, Any] = {
        "benchmark": "nonneg",
        "machine": _common.machine_info(N_THREADS),
        "config": {"iters": iters, "rounds": args.rounds, "quick": args.quick,
                   "memory_run_sweeps": 2,
                   "data": "non-negative rank-R CP (uniform factors) + 10% uniform noise",
                   "init": "seeded uniform factors, unit weights (same for both)",
                   "inner": "at most 5 column sweeps per mode, inner tol 1e-8 (both)"},
        "method": {"time_per_iter": "median over sweeps; tensorfact from history.time, "
                                    "TensorLy from time stamps of its mode-0 MTTKRP",
                   "peak_memory": "tracemalloc peak of a 2-sweep run beyond the memory held "
                                  "before the call, as a fraction of the tensor's size"},
        "cases": [],
    }
    print(f"tensorfact {tensorfact.__version__}, non-negative CP (HALS): {iters} timed sweeps "
          f"on {N_THREADS} BLAS threads, 1-minute load {os.getloadavg()[0]:.2f}", flush=True)
    with _common.blas_limits(N_THREADS):
        for shape in shapes:
            print(f"  case {'x'.join(map(str, shape))} R={args.rank}", flush=True)
            case = run_case(tuple(shape), args.rank, iters, args.rounds)
            case["load_avg_1min"] = os.getloadavg()[0]
            payload["cases"].append(case)
            _common.write_json("nonneg", payload, out=out)
    print()
    print(_common.format_table(table_rows(payload["cases"]), HEADER))
    for c in payload["cases"]:
        if tuple(c["shape"]) == (300, 300, 300) and c["rank"] == 10:
            ratio = c["tensorly_over_tensorfact"]
            print(f"  [{'PASS' if ratio >= 2.0 else 'FAIL'}] 300^3 R=10 TensorLy/tensorfact "
                  f"time per iteration: {ratio:.2f} (target >= 2)")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
