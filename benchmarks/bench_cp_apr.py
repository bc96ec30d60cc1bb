"""Benchmark: Poisson CP (CP-APR, multiplicative updates) in tensorfact vs pyttb ``cp_apr``.

Both libraries factor the same sparse count tensor from the same initial
model and run the same fixed number of outer iterations (tensorfact
``tol=0``, pyttb ``stoptol=0``; 10 inner MU steps per mode, the default of
both). The data are Poisson counts of a planted non-negative CP model with
skewed (Zipf-like) factor columns, drawn as a multinomial sample: each event
picks a component by its weight, then one index per mode from that
component's column, and the events at the same coordinates are summed. The
final log-likelihoods must agree (same iterates up to rounding).

Measured:

- **time per outer iteration**: median over iterations. tensorfact:
  ``CPAPRResult.history.time`` (which includes its per-iteration
  log-likelihood, pyttb computes it only at the end); pyttb: its
  ``output["times"]``.
- **one-off costs** of tensorfact, excluded from the per-iteration time:
  Numba compilation (first call in a fresh cache) and the per-mode index build.
- **peak memory** (tracemalloc) of a one-iteration tensorfact run beyond the
  data.

Run ``python benchmarks/bench_cp_apr.py`` (10^6 nonzeros; pyttb needs several
seconds per outer iteration there) or ``--quick`` (2 * 10^4 nonzeros, seconds).
Results: ``benchmarks/results/cp_apr.json``.
"""

from __future__ import annotations

import _common  # noqa: I001  (must come first: pins BLAS threads before NumPy loads)

N_THREADS = _common.pin_threads()

import argparse  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

import tensorfact  # noqa: E402
from tensorfact import CPTensor, SparseTensor, cp_apr  # noqa: E402


def poisson_counts(shape: tuple[int, ...], rank: int, nnz: int, *, skew: float, seed: int
                   ) -> SparseTensor:
    """A sparse count tensor with about ``nnz`` nonzeros, sampled from a planted CP model."""
    gen = np.random.default_rng(seed)
    weights = np.linspace(1.0, 0.3, rank)
    weights /= weights.sum()
    cols = []
    for s in shape:
        ranks = np.arange(1, s + 1, dtype=np.float64)
        A = np.empty((s, rank))
        for r in range(rank):
            A[:, r] = gen.permutation(ranks ** -skew)
        cols.append(A / A.sum(axis=0))
    n_events = nnz  # a few coincide (summed), so slightly fewer nonzeros
    comp = gen.choice(rank, size=n_events, p=weights)
    coords = np.empty((n_events, len(shape)), dtype=np.int64)
    for m, A in enumerate(cols):
        for r in range(rank):
            sel = comp == r
            coords[sel, m] = gen.choice(shape[m], size=int(sel.sum()), p=A[:, r])
    return SparseTensor(coords, np.ones(n_events), shape)  # duplicates summed: counts


def run_tensorfact(X: SparseTensor, init: CPTensor, iters: int) -> dict[str, Any]:
    res = cp_apr(X, init.rank, init=init, max_iter=iters, tol=0.0)
    t = np.asarray(res.history.time)
    per = np.concatenate([t[:1], np.diff(t)]).tolist()
    return {"per_iter_s": per, "log_likelihood": res.log_likelihood,
            "kkt_violation": res.kkt_violation}


def run_pyttb(X: SparseTensor, init: CPTensor, iters: int) -> dict[str, Any]:
    import pyttb as ttb

    S = ttb.sptensor(np.array(X.coords), np.array(X.values)[:, None], X.shape)
    kinit = ttb.ktensor([np.array(A) for A in init.factors], np.array(init.weights))
    _, _, out = ttb.cp_apr(S, init.rank, init=kinit, maxiters=iters, stoptol=0.0, printitn=0)
    t = np.asarray(out["times"])
    per = np.concatenate([t[:1], np.diff(t)]).tolist()
    return {"per_iter_s": per, "log_likelihood": float(out["obj"]),
            "kkt_violation": float(out["kktViolations"][-1])}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2e4 nonzeros (seconds)")
    ap.add_argument("--nnz", type=int, default=None)
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--iters", type=int, default=None, help="timed outer iterations")
    ap.add_argument("--skew", type=float, default=0.8)
    ap.add_argument("--no-pyttb", action="store_true")
    args = ap.parse_args(argv)
    nnz = args.nnz or (20_000 if args.quick else 1_000_000)
    iters = args.iters or 3
    scale = (nnz / 1e6) ** (1 / 3)
    shape = tuple(max(20, int(s * scale)) for s in (4000, 3000, 2000))
    R = args.rank

    # Numba compilation (or cache load) on a tiny tensor, excluded from the timings
    t0 = time.perf_counter()
    tiny = poisson_counts((5, 6, 7), 2, 50, skew=0.5, seed=0)
    cp_apr(tiny, 2, rng=0, max_iter=2)
    compile_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    X = poisson_counts(shape, R, nnz, skew=args.skew, seed=0)
    gen_s = time.perf_counter() - t0
    gen = np.random.default_rng(42)
    init = CPTensor([gen.random((s, R)) for s in shape], weights=np.ones(R))
    t0 = time.perf_counter()
    cp_apr(X, R, init=init, max_iter=1, max_inner_iter=1, tol=0.0)
    one_step_s = time.perf_counter() - t0  # index build + one MU step per mode

    out: dict[str, Any] = {
        "machine": _common.machine_info(N_THREADS),
        "case": {"shape": list(shape), "nnz": X.nnz, "rank": R, "skew": args.skew,
                 "iters": iters, "max_inner_iter": 10, "dtype": "float64",
                 "total_count": float(np.sum(X.values))},
        "tensorfact": {"numba_compile_or_cache_load_s": compile_s, "generate_s": gen_s,
                       "index_build_plus_one_step_s": one_step_s},
    }
    with _common.blas_limits(N_THREADS):
        tf_run = run_tensorfact(X, init, iters)
    out["tensorfact"].update(tf_run)
    out["tensorfact"]["time_per_iter_s"] = statistics.median(tf_run["per_iter_s"])
    _, peak = _common.peak_memory(lambda: cp_apr(X, R, init=init, max_iter=1, tol=0.0))
    out["tensorfact"]["peak_extra_bytes_one_iter"] = peak

    if not args.no_pyttb:
        with _common.blas_limits(N_THREADS):
            py_run = run_pyttb(X, init, iters)
        out["pyttb"] = dict(py_run, time_per_iter_s=statistics.median(py_run["per_iter_s"]))
        out["pyttb_over_tensorfact"] = (out["pyttb"]["time_per_iter_s"]
                                        / out["tensorfact"]["time_per_iter_s"])
        ll_tf, ll_py = tf_run["log_likelihood"], py_run["log_likelihood"]
        out["log_likelihood_rel_diff"] = abs(ll_tf - ll_py) / abs(ll_py)
        if out["log_likelihood_rel_diff"] > 1e-6:
            raise RuntimeError(f"log-likelihoods differ: tensorfact {ll_tf!r}, pyttb {ll_py!r}")

    name = "cp_apr_quick" if args.quick else "cp_apr"
    path = _common.write_json(name, out)
    header = ["nnz", "shape", "R", "tf s/it", "pyttb s/it", "pyttb/tf", "loglik tf",
              "loglik rel diff", "tf compile s"]
    py = out.get("pyttb", {})
    row = [X.nnz, "x".join(map(str, shape)), R, out["tensorfact"]["time_per_iter_s"],
           py.get("time_per_iter_s"), out.get("pyttb_over_tensorfact"),
           f"{tf_run['log_likelihood']:.10g}", out.get("log_likelihood_rel_diff"), compile_s]
    print(f"tensorfact {tensorfact.__version__}, {N_THREADS} threads")
    print(_common.format_table([row], header))
    print()
    print(_common.format_table([row], header, markdown=True))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
