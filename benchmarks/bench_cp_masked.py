"""Benchmark: CP with missing data, tensorfact (weighted ALS, EM) vs TensorLy's masked ``parafac``.

Planted rank-5 CP tensors of 100^3 (``planted_cp``, noise-free and with noise
0.01) with 50% and 90% of the entries missing uniformly at random. All
methods start from the same seeded random CP model. TensorLy's first sweep
reads the missing entries as passed, tensorfact's EM completes them with the
initial model first: TensorLy is therefore passed ``X`` with the missing
entries set to the initial model's values, which makes its iterates those of
tensorfact's ``missing="em"`` (checked: the final errors are reported side
by side).

Measured per case and method:

- **sweeps to target**: the first sweep whose relative error over the
  observed entries, ``||P(X - M)|| / ||P(X)||``, is at or below the target:
  ``1e-6`` noise-free, ``1.1 x`` the planted model's own observed error
  (the noise floor) with noise. Deterministic (``--iterations-only`` runs
  only this and the factor match scores, no timing).
- **time to target**: wall time from the start of the solve to the end of
  that sweep, median of ``--repeat`` runs. tensorfact stops through its
  callback (it receives the observed error at no cost). TensorLy's callback
  computes the observed error at the observed entries (``O(n_obs R)``, a
  Numba kernel) and that time is subtracted; TensorLy runs with a tiny
  positive ``tol`` (``1e-300``) because it only hands an error to a callback
  when ``tol`` is non-zero (its per-sweep error then costs one extra norm of
  the completed tensor, which it has formed anyway).
- **factor match score** against the planted model at the target sweep.
- **peak memory**: ``tracemalloc`` peak of a separate 3-sweep run beyond the
  memory held before it, as a fraction of the dense tensor's size.

Run ``python benchmarks/bench_cp_masked.py`` (full, minutes) or ``--quick``
(30^3, rank 3, a smoke test). Writes ``benchmarks/results/cp_masked.json``
(``cp_masked_quick.json`` with ``--quick``).
"""

from __future__ import annotations

import _common  # noqa: I001  (must come first: pins BLAS threads before NumPy loads)

N_THREADS = _common.pin_threads()

import argparse  # noqa: E402
import gc  # noqa: E402
import math  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import tensorfact  # noqa: E402
from tensorfact import CPTensor, cp_als  # noqa: E402
from tensorfact._kernels.sparse import cp_values_numba  # noqa: E402
from tensorfact.datasets import planted_cp  # noqa: E402

METHODS = ("tf_weighted", "tf_em", "tensorly")


class _Stop(Exception):
    pass


def observed_rel(coords: np.ndarray, x: np.ndarray, weights: Any, factors: Any) -> float:
    m = cp_values_numba(coords, np.asarray(weights, dtype=np.float64),
                        [np.asarray(A) for A in factors])
    return float(np.linalg.norm(x - m) / np.linalg.norm(x))


def run_tensorfact(X: np.ndarray, M: np.ndarray, init: CPTensor, missing: str, target: float,
                   max_iter: int) -> dict[str, Any]:
    t0 = time.perf_counter()
    res = cp_als(X, init.rank, mask=M, missing=missing, init=init, max_iter=max_iter, tol=0.0,
                 callback=lambda it, cp, err: err <= target)
    elapsed = time.perf_counter() - t0
    errs = res.history.rel_error
    reached = errs[-1] <= target
    return {"reached": reached, "sweeps": res.n_iter if reached else None,
            "time_s": elapsed if reached else None, "final_rel_error": errs[-1],
            "cp": res.cp}


def run_tensorly(X: np.ndarray, M: np.ndarray, init: CPTensor, target: float, max_iter: int,
                 coords: np.ndarray, x: np.ndarray) -> dict[str, Any]:
    import tensorly as tl
    from tensorly.decomposition import parafac

    tl.set_backend("numpy")
    Xf = np.where(M, X, init.to_dense())
    state: dict[str, Any] = {"overhead": 0.0, "calls": 0, "err": math.inf, "cp": init}

    def callback(cp: Any, _err: Any) -> bool:
        state["calls"] += 1
        if state["calls"] == 1:  # TensorLy calls it once before the first sweep
            return False
        c0 = time.perf_counter()
        w, f = cp
        state["err"] = observed_rel(coords, x, w, f)
        state["cp"] = cp
        state["overhead"] += time.perf_counter() - c0
        return state["err"] <= target

    t0 = time.perf_counter()
    parafac(Xf, init.rank, init=(np.asarray(init.weights).copy(),
                                 [A.copy() for A in init.factors]),
            mask=M, n_iter_max=max_iter, tol=1e-300, callback=callback)
    elapsed = time.perf_counter() - t0 - state["overhead"]
    reached = state["err"] <= target
    w, f = state["cp"]
    return {"reached": reached, "sweeps": state["calls"] - 1 if reached else None,
            "time_s": elapsed if reached else None, "final_rel_error": state["err"],
            "cp": CPTensor([np.asarray(A) for A in f], weights=np.asarray(w))}


def svd_init(Z: np.ndarray, R: int) -> CPTensor:
    """Leading ``R`` left singular vectors of every unfolding of the zero-filled data, unit weights.

    The subspaces of ``cp_als``'s default ``init="svd"``; mode 0 is included
    because EM's first completion (and TensorLy's) reads the whole initial model.
    """
    factors = []
    for n in range(Z.ndim):
        U = np.linalg.svd(np.moveaxis(Z, n, 0).reshape(Z.shape[n], -1), full_matrices=False)[0]
        factors.append(np.ascontiguousarray(U[:, :R]))
    return CPTensor(factors, weights=np.ones(R))


def run_case(shape: tuple[int, ...], R: int, frac: float, noise: float, *, max_iter: int,
             repeat: int, iterations_only: bool) -> dict[str, Any]:
    X, truth = planted_cp(shape, R, noise=noise, rng=0)
    M = np.random.default_rng(1).random(shape) >= frac
    coords = np.argwhere(M).astype(np.int64)
    x = X[M]
    floor = observed_rel(coords, x, truth.weights, truth.factors)
    target = 1e-6 if noise == 0 else 1.1 * floor
    init = svd_init(np.where(M, X, 0.0), R)
    case: dict[str, Any] = {"shape": list(shape), "rank": R, "frac_missing": frac,
                            "noise": noise, "n_observed": int(M.sum()),
                            "observed_noise_floor": floor, "target_rel_error": target,
                            "results": {}}
    methods = METHODS[:2] if iterations_only else METHODS
    for name in methods:
        runs = []
        for _ in range(1 if iterations_only else repeat):
            gc.collect()
            if name == "tensorly":
                out = run_tensorly(X, M, init, target, max_iter, coords, x)
            else:
                out = run_tensorfact(X, M, init, name[3:], target, max_iter)
            runs.append(out)
        out = runs[0]
        entry: dict[str, Any] = {
            "reached_target": out["reached"], "sweeps_to_target": out["sweeps"],
            "final_rel_error": out["final_rel_error"],
            "factor_match_score": float(out["cp"].factor_match_score(truth)),
        }
        if not iterations_only:
            times = [r["time_s"] for r in runs if r["time_s"] is not None]
            entry["time_to_target_s"] = statistics.median(times) if times else None
            entry["times_s"] = times
            if name == "tensorly":
                fn = (lambda: run_tensorly(X, M, init, 0.0, 3, coords, x))  # noqa: E731
            else:
                fn = (lambda n=name: run_tensorfact(X, M, init, n[3:], 0.0, 3))  # noqa: E731
            _, peak = _common.peak_memory(fn)
            entry["peak_extra_frac"] = peak / X.nbytes
        case["results"][name] = entry
        t = entry.get("time_to_target_s")
        print(f"    {name:12s} sweeps {entry['sweeps_to_target']}  "
              f"time {'-' if t is None else f'{t:.3f} s'}  "
              f"fms {entry['factor_match_score']:.4f}", flush=True)
    if not iterations_only:
        tl_t = case["results"]["tensorly"].get("time_to_target_s")
        for name in METHODS[:2]:
            t = case["results"][name].get("time_to_target_s")
            case["results"][name]["tensorly_over_this"] = (
                tl_t / t if (tl_t is not None and t) else None)
    return case


HEADER = ["shape", "R", "missing", "noise", "target", "method", "sweeps", "time s",
          "TL/this", "FMS", "mem"]


def table_rows(cases: list[dict[str, Any]]) -> list[list[Any]]:
    rows = []
    for c in cases:
        for name, r in c["results"].items():
            t = r.get("time_to_target_s")
            ratio = r.get("tensorly_over_this")
            mem = r.get("peak_extra_frac")
            rows.append(["x".join(map(str, c["shape"])), c["rank"], f"{c['frac_missing']:.0%}",
                         c["noise"], f"{c['target_rel_error']:.3g}", name,
                         "-" if r["sweeps_to_target"] is None else r["sweeps_to_target"],
                         "-" if t is None else f"{t:.3g}",
                         "-" if ratio is None else f"{ratio:.1f}",
                         f"{r['factor_match_score']:.4f}",
                         "-" if mem is None else f"{mem:.2f}"])
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="30^3, rank 3: a smoke test")
    p.add_argument("--iterations-only", action="store_true",
                   help="sweeps to target and factor match scores of tensorfact's methods "
                        "only (no timing, no peer)")
    p.add_argument("--repeat", type=int, default=3, help="timed runs per method (median)")
    p.add_argument("--max-iter", type=int, default=2000, help="sweeps at most")
    p.add_argument("--out", type=Path, default=None, help="JSON path")
    args = p.parse_args(argv)

    shape, R = ((30, 30, 30), 3) if args.quick else ((100, 100, 100), 5)
    grid = [(frac, noise) for noise in (0.0, 0.01) for frac in (0.5, 0.9)]
    name = "cp_masked" + ("_quick" if args.quick else "") + (
        "_iterations" if args.iterations_only else "")
    out = args.out or _common.RESULTS_DIR / f"{name}.json"

    # warm-up: Numba compilation and first-call overheads
    Xw, _ = planted_cp((8, 9, 10), 2, rng=0)
    Mw = np.random.default_rng(0).random(Xw.shape) > 0.5
    initw = CPTensor([np.ones((s, 2)) + np.eye(s, 2) for s in Xw.shape])
    for missing in ("weighted", "em"):
        run_tensorfact(Xw, Mw, initw, missing, 0.0, 2)
    if not args.iterations_only:
        import tensorly  # noqa: F401  (version recorded in the JSON)

        run_tensorly(Xw, Mw, initw, 0.0, 2, np.argwhere(Mw), Xw[Mw])

    payload: dict[str, Any] = {
        "benchmark": "cp_masked",
        "machine": _common.machine_info(N_THREADS),
        "config": {"shape": list(shape), "rank": R, "grid": grid, "repeat": args.repeat,
                   "max_iter": args.max_iter, "iterations_only": args.iterations_only,
                   "data": "planted_cp(noise, rng=0); mask: uniform, rng=1",
                   "init": "leading left singular vectors of the zero-filled unfoldings, "
                           "unit weights (same for all)"},
        "cases": [],
    }
    load0 = os.getloadavg()
    print(f"tensorfact {tensorfact.__version__}: CP with missing data, {N_THREADS} threads, "
          f"load avg {load0[0]:.2f}", flush=True)
    with _common.blas_limits(N_THREADS):
        for frac, noise in grid:
            print(f"  case {'x'.join(map(str, shape))} R={R} missing {frac:.0%} noise {noise}",
                  flush=True)
            case = run_case(shape, R, frac, noise, max_iter=args.max_iter, repeat=args.repeat,
                            iterations_only=args.iterations_only)
            case["load_avg_1min"] = os.getloadavg()[0]
            payload["cases"].append(case)
            _common.write_json(name, payload, out=out)
    print()
    print(_common.format_table(table_rows(payload["cases"]), HEADER))
    if not args.iterations_only and not args.quick:
        ok = all(c["results"][m].get("tensorly_over_this") is not None
                 and c["results"][m]["tensorly_over_this"] >= 5.0
                 for c in payload["cases"] if c["frac_missing"] == 0.9 for m in ("tf_weighted",))
        print(f"\ntarget: at 90% missing, weighted ALS at least 5x faster to the target than "
              f"TensorLy: {'PASS' if ok else 'FAIL'}")
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
