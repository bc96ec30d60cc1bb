"""Benchmark: dense CP-ALS in tensorfact vs TensorLy ``parafac`` vs pyttb ``cp_als``.

All three libraries start from the same initial factors (one seeded random
CP model per case, converted to each library's type) and run the same fixed
number of ALS sweeps (tensorfact ``tol=0``, TensorLy ``tol=0``, pyttb
``stoptol=0``); their final relative errors are recomputed here with one exact
formula and must agree (same iterates, up to rounding).

Measured per case (shape x rank x dtype):

- **time per iteration**: the median over iterations of the wall time of one
  sweep. For tensorfact the per-iteration times come from
  ``CPALSResult.history.time``. For the peers, their MTTKRP routine is wrapped
  (TensorLy: ``tensorly.decomposition._cp.unfolding_dot_khatri_rao``; pyttb:
  ``pyttb.tensor.mttkrp``) to time-stamp the start of every sweep (the
  mode-0 MTTKRP). All three run ``iters + 1`` sweeps and the first ``iters``
  are timed (for the peers the last one has no end stamp). Setup work (norms,
  copies of the initialisation) is excluded for all three. With ``tol=0``
  TensorLy computes no error in its loop; tensorfact and pyttb do (from the
  last MTTKRP, cheap).
- **peak memory**: ``tracemalloc`` peak of a separate 2-sweep run, beyond
  the memory held before the call (so the input tensor is excluded), reported
  as a fraction of the tensor's size.
- **final relative error** ``||X - M|| / ||X||`` of each library's result.
- **GEMM floor**: the time of two plain GEMM passes over the tensor,
  ``A^T @ X2`` and ``B^T @ X2^T`` with ``X2`` the copy-free ``(P, Q)`` reshape
  at the balanced split and ``A, B`` of ``R`` columns: what a dimension-tree
  sweep cannot beat. Median of 3.

TensorLy forms the full Khatri-Rao product of all modes but one (and pyttb does
so for the last mode); where that product would exceed ``--krp-budget-gb`` the
peer is skipped and the reason recorded. pyttb runs in float64 only: its
``cp_als`` keeps float64 Gram matrices and solves, so a float32 tensor would
be upcast (copied) at every MTTKRP.

Run ``python benchmarks/bench_cp_als.py`` (full, minutes) or with ``--quick``.
"""

from __future__ import annotations

import _common  # noqa: I001  (must come first: pins BLAS threads before NumPy loads)

N_THREADS = _common.pin_threads()

import argparse  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import tensorfact  # noqa: E402
from tensorfact import CPTensor, cp_als  # noqa: E402
from tensorfact.datasets import planted_cp  # noqa: E402
from tensorfact.formats import DenseTensor  # noqa: E402

FULL_SHAPES = [(300, 300, 300), (60, 60, 60, 60), (10000, 10000, 2)]
FULL_RANKS = [10, 50]
FULL_DTYPES = ["float64", "float32"]
LIBS = ("tensorfact", "tensorly", "pyttb")


# --------------------------------------------------------------------------- helpers
def _split(shape: tuple[int, ...]) -> int:
    """Balanced split point h (same rule as tensorfact's dimension tree)."""
    best_h, best = 1, None
    for h in range(1, len(shape)):
        c = math.prod(shape[:h]) + math.prod(shape[h:])
        if best is None or c < best:
            best_h, best = h, c
    return best_h


def krp_rows_tensorly(shape: tuple[int, ...]) -> int:
    """Rows of the largest Khatri-Rao product TensorLy's parafac forms."""
    return max(math.prod(shape) // s for s in shape)


def krp_rows_pyttb(shape: tuple[int, ...]) -> int:
    """Rows of the largest Khatri-Rao product pyttb's tensor.mttkrp forms."""
    N = len(shape)
    rows = [math.prod(shape[1:]), math.prod(shape[:-1])]
    for n in range(1, N - 1):
        rows += [math.prod(shape[n + 1:]), math.prod(shape[:n])]
    return max(rows)


def rel_error(X: np.ndarray, weights: np.ndarray, factors: list[np.ndarray]) -> float:
    """Exact ``||X - [[w; A]]|| / ||X||`` (blocked, no dense reconstruction)."""
    factors = [np.ascontiguousarray(A, dtype=X.dtype) for A in factors]
    weights = np.asarray(weights, dtype=X.dtype)
    op = DenseTensor(X)
    return math.sqrt(max(op.residual_norm_sq(weights, factors), 0.0) / op.norm_sq())


def gemm_floor(X: np.ndarray, R: int, repeat: int = 3) -> dict[str, Any]:
    """Time two plain GEMM passes over ``X`` (the dimension-tree floor).

    Each pass is timed in both orientations (``A^T @ X2`` and ``X2^T @ A``;
    ``B^T @ X2^T`` and ``X2 @ B``) and the faster one is kept, so the floor is
    the best this BLAS does, not one particular call.
    """
    shape = X.shape
    h = _split(shape)
    P, Q = math.prod(shape[:h]), math.prod(shape[h:])
    X2 = X.reshape(P, Q)
    gen = np.random.default_rng(1)
    A = gen.standard_normal((P, R)).astype(X.dtype)
    Bm = gen.standard_normal((Q, R)).astype(X.dtype)
    variants = {
        "prefix A^T @ X2": lambda: A.T @ X2,
        "prefix X2^T @ A": lambda: X2.T @ A,
        "suffix B^T @ X2^T": lambda: Bm.T @ X2.T,
        "suffix X2 @ B": lambda: X2 @ Bm,
    }
    times = {}
    for name, fn in variants.items():
        fn()  # warm-up
        times[name] = _common.time_call(fn, repeat=repeat)["median_s"]
    prefix = min(times["prefix A^T @ X2"], times["prefix X2^T @ A"])
    suffix = min(times["suffix B^T @ X2^T"], times["suffix X2 @ B"])
    return {"P": P, "Q": Q, "median_s": prefix + suffix, "variants_median_s": times}


# --------------------------------------------------------------------------- runners
def run_tensorfact(X: np.ndarray, init: CPTensor, iters: int) -> dict[str, Any]:
    # iters + 1 sweeps like the peers (same final iterate); the first `iters` are timed
    res = cp_als(X, rank=init.rank, init=init, max_iter=iters + 1, tol=0.0)
    t = (0.0,) + tuple(res.history.time)
    per = [b - a for a, b in zip(t[:-1], t[1:])][:iters]
    return {
        "per_iter_s": per,
        "n_iter": res.n_iter,
        "weights": np.asarray(res.cp.weights),
        "factors": [np.asarray(A) for A in res.cp.factors],
        "internal_rel_error": res.rel_error,
    }


def run_tensorly(X: np.ndarray, init: CPTensor, iters: int) -> dict[str, Any]:
    import tensorly as tl
    import tensorly.decomposition._cp as tlcp
    from tensorly.cp_tensor import CPTensor as TLCPTensor
    from tensorly.decomposition import parafac

    tl.set_backend("numpy")
    stamps: list[float] = []
    orig = tlcp.unfolding_dot_khatri_rao

    def hooked(tensor: Any, cp: Any, mode: int) -> Any:
        if mode == 0:
            stamps.append(time.perf_counter())
        return orig(tensor, cp, mode)

    tl_init = TLCPTensor((np.asarray(init.weights).copy(), [A.copy() for A in init.factors]))
    tlcp.unfolding_dot_khatri_rao = hooked
    try:
        cp = parafac(X, init.rank, n_iter_max=iters + 1, init=tl_init, tol=0,
                     normalize_factors=False)
    finally:
        tlcp.unfolding_dot_khatri_rao = orig
    w, f = cp
    per = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    return {"per_iter_s": per, "n_iter": iters + 1, "weights": np.asarray(w),
            "factors": [np.asarray(A) for A in f]}


def run_pyttb(Xt: Any, init: CPTensor, iters: int) -> dict[str, Any]:
    import pyttb as ttb

    stamps: list[float] = []
    orig = ttb.tensor.mttkrp  # instances are slotted: wrap the class method for this run

    def hooked(self: Any, U: Any, n: int) -> Any:
        if int(n) == 0:
            stamps.append(time.perf_counter())
        return orig(self, U, n)

    kinit = ttb.ktensor([np.asfortranarray(A) for A in init.factors], np.asarray(init.weights))
    ttb.tensor.mttkrp = hooked  # type: ignore[method-assign]
    try:
        M, _, _ = ttb.cp_als(Xt, init.rank, stoptol=0.0, maxiters=iters + 1, init=kinit,
                             printitn=0, fixsigns=False)
    finally:
        ttb.tensor.mttkrp = orig  # type: ignore[method-assign]
    per = [b - a for a, b in zip(stamps[:-1], stamps[1:])]
    return {"per_iter_s": per, "n_iter": iters + 1, "weights": np.asarray(M.weights),
            "factors": [np.asarray(A) for A in M.factor_matrices]}


# --------------------------------------------------------------------------- one case
def run_case(shape: tuple[int, ...], R: int, dtype: str, iters: int, budget: float,
             mem_iters: int, rounds: int = 1) -> dict[str, Any]:
    X, _ = planted_cp(shape, R, noise=0.1, rng=0, dtype=np.dtype(dtype))
    X = np.ascontiguousarray(X)
    itemsize = X.dtype.itemsize
    gen = np.random.default_rng(42)
    init = CPTensor([gen.standard_normal((s, R)).astype(dtype) for s in shape],
                    weights=np.ones(R, dtype=dtype))
    case: dict[str, Any] = {
        "shape": list(shape), "rank": R, "dtype": dtype, "iters": iters,
        "tensor_bytes": X.nbytes, "results": {},
    }
    skip: dict[str, str | None] = {"tensorfact": None, "tensorly": None, "pyttb": None}
    for lib, rows in (("tensorly", krp_rows_tensorly(shape)), ("pyttb", krp_rows_pyttb(shape))):
        krp_bytes = rows * R * itemsize
        # TensorLy's peak is about twice its Khatri-Rao product (17.5 GB seen for 8 GB)
        if krp_bytes > budget or krp_bytes > 0.25 * _mem_available():
            skip[lib] = (f"skipped: would form a {rows:.0e} x {R} Khatri-Rao product "
                         f"({krp_bytes / 1e9:.0f} GB)")
    if dtype != "float64" and skip["pyttb"] is None:
        skip["pyttb"] = "skipped: pyttb cp_als is float64-only (float64 Gram/solve arrays)"

    for lib in LIBS:
        if skip[lib] is not None:
            case["results"][lib] = {"status": skip[lib]}
            continue
        if lib == "pyttb":
            import pyttb as ttb

            data = ttb.tensor(X, copy=True)  # pyttb's own (Fortran-order) layout
        else:
            data = X
        runner = {"tensorfact": run_tensorfact, "tensorly": run_tensorly,
                  "pyttb": run_pyttb}[lib]
        gc.collect()
        out = runner(data, init, iters)
        err = rel_error(X, out["weights"], out["factors"])
        n_final = out["n_iter"]
        del out["weights"], out["factors"]
        gc.collect()
        _, peak = _common.peak_memory(lambda: runner(data, init, mem_iters))  # noqa: B023
        gc.collect()
        per = out["per_iter_s"]
        case["results"][lib] = {
            "status": "ok",
            "time_per_iter_s": statistics.median(per),
            "min_time_per_iter_s": min(per),
            "per_iter_s": per,
            "sweeps_run": n_final,
            "final_rel_error": err,
            "peak_extra_bytes": peak,
            "peak_extra_frac": peak / X.nbytes,
        }
        if lib == "pyttb":
            del data
        print(f"    {lib:10s} {statistics.median(per):.4f} s/iter  err {err:.6e}  "
              f"peak {peak / X.nbytes:.2f}x tensor", flush=True)

    floors = [gemm_floor(X, R)]
    # extra rounds, libraries interleaved, so that a busy machine slows all alike
    for _ in range(rounds - 1):
        for lib in LIBS:
            res_lib = case["results"][lib]
            if res_lib["status"] != "ok":
                continue
            if lib == "pyttb":
                import pyttb as ttb

                data_r = ttb.tensor(X, copy=True)
            else:
                data_r = X
            run_r = {"tensorfact": run_tensorfact, "tensorly": run_tensorly,
                     "pyttb": run_pyttb}[lib]
            gc.collect()
            res_lib["per_iter_s"] = res_lib["per_iter_s"] + run_r(data_r, init, iters)["per_iter_s"]
            del data_r
        floors.append(gemm_floor(X, R))
    for lib in LIBS:
        res_lib = case["results"][lib]
        if res_lib["status"] == "ok":
            res_lib["time_per_iter_s"] = statistics.median(res_lib["per_iter_s"])
            res_lib["min_time_per_iter_s"] = min(res_lib["per_iter_s"])
    case["rounds"] = rounds
    case["gemm_floor"] = dict(floors[0])
    case["gemm_floor"]["median_s"] = statistics.median(f["median_s"] for f in floors)
    case["gemm_floor"]["round_medians_s"] = [f["median_s"] for f in floors]
    r = case["results"]
    tf = r["tensorfact"]["time_per_iter_s"]
    ratios: dict[str, float | None] = {}
    for lib in ("tensorly", "pyttb"):
        ratios[f"{lib}_over_tensorfact"] = (
            r[lib]["time_per_iter_s"] / tf if r[lib]["status"] == "ok" else None)
    ratios["tensorfact_over_gemm_floor"] = tf / case["gemm_floor"]["median_s"]
    case["ratios"] = ratios
    # agreement of the final errors (same init, same number of sweeps)
    ref = r["tensorfact"]["final_rel_error"]
    case["max_error_disagreement"] = max(
        [abs(v["final_rel_error"] - ref) / ref for k, v in r.items()
         if k != "tensorfact" and v["status"] == "ok"], default=0.0)
    return case


def _mem_available() -> float:
    """Bytes of memory available now (Linux ``MemAvailable``; inf elsewhere)."""
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return float(line.split()[1]) * 1024
    except OSError:
        pass
    return math.inf


def _git_state() -> str:
    import subprocess

    root = Path(__file__).resolve().parent.parent
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root,
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "tensorfact"], cwd=root,
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (tensorfact/ has uncommitted changes)" if dirty else "")


# --------------------------------------------------------------------------- reporting
HEADER = ["shape", "R", "dtype", "tf s/it", "TL s/it", "pyttb s/it", "TL/tf", "pyttb/tf",
          "GEMMx2 s", "tf/GEMMx2", "tf mem", "TL mem", "pyttb mem", "err tf", "err TL",
          "err pyttb"]


def table_rows(cases: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for c in cases:
        r = c["results"]

        def get(lib: str, key: str, fmt: str, r: dict[str, Any] = r) -> str:
            v = r[lib]
            if v["status"] != "ok":
                return "skip"
            return format(v[key], fmt)

        def ratio(key: str, c: dict[str, Any] = c) -> str:
            v = c["ratios"][key]
            return "-" if v is None else f"{v:.2f}"

        rows.append([
            "x".join(map(str, c["shape"])), c["rank"], c["dtype"],
            get("tensorfact", "time_per_iter_s", ".4g"), get("tensorly", "time_per_iter_s", ".4g"),
            get("pyttb", "time_per_iter_s", ".4g"),
            ratio("tensorly_over_tensorfact"), ratio("pyttb_over_tensorfact"),
            f"{c['gemm_floor']['median_s']:.4g}", ratio("tensorfact_over_gemm_floor"),
            get("tensorfact", "peak_extra_frac", ".2f"), get("tensorly", "peak_extra_frac", ".2f"),
            get("pyttb", "peak_extra_frac", ".2f"),
            get("tensorfact", "final_rel_error", ".6f"), get("tensorly", "final_rel_error", ".6f"),
            get("pyttb", "final_rel_error", ".6f"),
        ])
    return rows


def skip_notes(cases: list[dict[str, Any]]) -> list[str]:
    notes = []
    for c in cases:
        for lib, v in c["results"].items():
            if v["status"] != "ok":
                notes.append(f"{'x'.join(map(str, c['shape']))} R={c['rank']} {c['dtype']} "
                             f"{lib}: {v['status']}")
    return notes


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true",
                   help="only 300^3 and 60^4, rank 10, float64, 3 sweeps")
    p.add_argument("--iters", type=int, default=None, help="timed sweeps per run (default 10)")
    p.add_argument("--krp-budget-gb", type=float, default=6.0,
                   help="skip a peer whose Khatri-Rao product would exceed this (GB)")
    p.add_argument("--shapes", default=None,
                   help="subset, e.g. '300x300x300,60x60x60x60'")
    p.add_argument("--ranks", default=None, help="subset, e.g. '10,50'")
    p.add_argument("--dtypes", default=None, help="subset, e.g. 'float64'")
    p.add_argument("--out", type=Path, default=None,
                   help="JSON path (default benchmarks/results/cp_als.json; "
                        "--quick writes cp_als_quick.json)")
    p.add_argument("--rounds", type=int, default=1,
                   help="repeat the timing runs this many times, libraries interleaved "
                        "(for busy machines); medians over all sweeps")
    p.add_argument("--table-from", type=Path, default=None, metavar="JSON",
                   help="only print the tables of a saved result file")
    args = p.parse_args(argv)
    if args.table_from is not None:
        import json

        saved = json.loads(args.table_from.read_text(encoding="utf-8"))
        print_tables(saved["cases"])
        return 0

    shapes, ranks, dtypes = FULL_SHAPES, FULL_RANKS, FULL_DTYPES
    iters = args.iters or 10
    if args.quick:
        shapes, ranks, dtypes = FULL_SHAPES[:2], [10], ["float64"]
        iters = args.iters or 3
    if args.shapes:
        shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    if args.ranks:
        ranks = [int(r) for r in args.ranks.split(",")]
    if args.dtypes:
        dtypes = args.dtypes.split(",")
    out = args.out or _common.RESULTS_DIR / ("cp_als_quick.json" if args.quick else "cp_als.json")

    import pyttb  # noqa: F401  (versions recorded in the JSON)
    import tensorly  # noqa: F401

    # warm-up (imports, first-call overheads) on a tiny problem
    Xw, _ = planted_cp((8, 9, 10), 2, rng=0)
    initw = CPTensor([np.ones((s, 2)) + np.eye(s, 2) for s in Xw.shape])
    import pyttb as ttb

    run_tensorfact(Xw, initw, 2)
    run_tensorly(Xw, initw, 2)
    run_pyttb(ttb.tensor(Xw), initw, 2)

    payload: dict[str, Any] = {
        "benchmark": "cp_als",
        "machine": _common.machine_info(N_THREADS),
        "config": {"iters": iters, "rounds": args.rounds, "memory_run_sweeps": 2,
                   "quick": args.quick,
                   "krp_budget_gb": args.krp_budget_gb, "data": "planted_cp(noise=0.1, rng=0)",
                   "init": "seeded standard normal factors, unit weights (same for all)"},
        "method": {
            "time_per_iter": "median over sweeps; tensorfact from history.time, peers from "
                             "time stamps of their mode-0 MTTKRP call (iters + 1 sweeps run)",
            "peak_memory": "tracemalloc peak of a separate 2-sweep run beyond the memory held "
                           "before the call (input tensor excluded), as a fraction of its size",
            "gemm_floor": "median of 3 of each pass at the balanced split X2 = (P, Q): "
                          "min(A^T @ X2, X2^T @ A) + min(B^T @ X2^T, X2 @ B)",
        },
        "cases": [],
    }
    payload["machine"]["git"] = _git_state()
    load0 = os.getloadavg()
    print(f"tensorfact {tensorfact.__version__}: CP-ALS benchmark, {N_THREADS} BLAS threads, "
          f"{iters} timed sweeps, load avg {load0[0]:.2f}", flush=True)
    with _common.blas_limits(N_THREADS):
        for shape in shapes:
            for R in ranks:
                for dt in dtypes:
                    print(f"  case {'x'.join(map(str, shape))} R={R} {dt}", flush=True)
                    case = run_case(tuple(shape), R, dt, iters,
                                    args.krp_budget_gb * 1e9, mem_iters=2,
                                    rounds=args.rounds)
                    case["load_avg_1min"] = os.getloadavg()[0]
                    payload["cases"].append(case)
                    _common.write_json("cp_als", payload, out=out)
                    gc.collect()

    print()
    print_tables(payload["cases"])
    print(f"\nwrote {out}")
    return 0


def print_tables(cases: list[dict[str, Any]]) -> None:
    """Print the plain-text table, the skips, the error agreement and a markdown table."""
    print(_common.format_table(table_rows(cases), HEADER))
    for n in skip_notes(cases):
        print("  " + n)
    worst = max(c["max_error_disagreement"] for c in cases)
    print(f"largest relative disagreement of the final errors (peers vs tensorfact, same "
          f"init, same number of sweeps): {worst:.2e}")
    print()
    for line in check_targets(cases):
        print(line)
    print("\nmarkdown:\n")
    print(_common.format_table(table_rows(cases), HEADER, markdown=True))


def check_targets(cases: list[dict[str, Any]]) -> list[str]:
    """Performance targets (speed against the peers, memory), checked on the measured cases."""
    def find(shape: tuple[int, ...], R: int, dtype: str) -> dict[str, Any] | None:
        for c in cases:
            if tuple(c["shape"]) == shape and c["rank"] == R and c["dtype"] == dtype:
                return c
        return None

    out = []

    def check(label: str, value: float | None, target: float, higher: bool) -> None:
        if value is None:
            out.append(f"  [n/a ] {label}: not measured")
            return
        ok = value >= target if higher else value <= target
        sign = ">=" if higher else "<="
        out.append(f"  [{'PASS' if ok else 'FAIL'}] {label}: {value:.2f} (target {sign} {target})")

    def ratio(c: dict[str, Any] | None, key: str) -> float | None:
        return None if c is None else c["ratios"].get(key)

    out.append("targets:")
    c300 = find((300, 300, 300), 10, "float64")
    c60 = find((60, 60, 60, 60), 10, "float64")
    check("300^3 R=10 f64 TensorLy/tensorfact time per iteration",
          ratio(c300, "tensorly_over_tensorfact"), 3.0, True)
    check("300^3 R=10 f64 pyttb/tensorfact time per iteration",
          ratio(c300, "pyttb_over_tensorfact"), 2.0, True)
    check("60^4 R=10 f64 TensorLy/tensorfact time per iteration",
          ratio(c60, "tensorly_over_tensorfact"), 4.0, True)
    mem = [c["results"]["tensorfact"]["peak_extra_frac"] for c in cases
           if tuple(c["shape"]) == (300, 300, 300)
           and c["results"]["tensorfact"]["status"] == "ok"]
    check("300^3 tensorfact extra peak memory / tensor size (worst case)",
          max(mem) if mem else None, 0.5, False)
    big = [c for c in cases if tuple(c["shape"]) == (10000, 10000, 2) and c["rank"] == 50]
    if big:
        for c in big:
            st = c["results"]["tensorfact"]["status"]
            out.append(f"  [{'PASS' if st == 'ok' else 'FAIL'}] 10000x10000x2 R=50 {c['dtype']} "
                       f"tensorfact runs: {st}")
    else:
        out.append("  [n/a ] 10000x10000x2 R=50: not measured")
    gem = [c["ratios"]["tensorfact_over_gemm_floor"] for c in cases]
    check("tensorfact time per iteration / two plain GEMM passes (worst case)",
          max(gem) if gem else None, 2.0, False)
    return out


if __name__ == "__main__":
    sys.exit(main())
