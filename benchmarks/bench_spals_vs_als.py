"""SPALS with its defaults against exact CP-ALS on a dense 400^3 tensor.

Planted rank 10, relative noise 0.1, float64; both from the same random start
(and CP-ALS also from its SVD start, in case the random one stalls in a
swamp). Reported: median time per sweep (one BLAS and one Numba thread), the
speed-up per sweep, and the converged relative errors, recomputed exactly
from the returned models. CP-ALS stops when its error changes by less than
1e-7; SPALS, whose estimate is noisy, runs a fixed number of sweeps.

    python benchmarks/bench_spals_vs_als.py [--n 400] [--sweeps 60]
"""

import _common  # noqa: I001  (must precede numpy)

N_THREADS = _common.pin_threads(1)

import argparse  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import tensorfact as tf  # noqa: E402


def exact_error(X, cp):
    return float(np.sqrt(tf.as_format(X).residual_norm_sq(cp.weights, list(cp.factors))
                         / np.sum(X * X)))


def per_sweep(history):
    t = np.asarray(history.time)
    return float(np.median(np.diff(np.concatenate([[0.0], t]))[1:]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="size of each mode (default 400)")
    ap.add_argument("--rank", type=int, default=10, help="planted and fitted rank (default 10)")
    ap.add_argument("--sweeps", type=int, default=60, help="SPALS sweeps (default 60)")
    args = ap.parse_args()
    numba.set_num_threads(N_THREADS)
    n, R = args.n, args.rank
    X, _ = tf.datasets.planted_cp((n, n, n), R, noise=0.1, rng=0)
    gen = np.random.default_rng(1)
    init = tf.CPTensor([gen.standard_normal((n, R)) for _ in range(3)])
    out = {"shape": [n, n, n], "rank": R, "noise": 0.1}
    with _common.blas_limits(N_THREADS):
        tf.spals(X, R, init=init, max_iter=2, rng=0)  # compile the kernels
        als = tf.cp_als(X, R, init=init, tol=1e-7, max_iter=300)
        als_svd = tf.cp_als(X, R, tol=1e-7, max_iter=300)
        sp = tf.spals(X, R, init=init, max_iter=args.sweeps, rng=0)
    out.update(
        als_s_per_sweep=per_sweep(als.history), als_sweeps=als.n_iter,
        als_error=exact_error(X, als.cp), als_svd_error=exact_error(X, als_svd.cp),
        als_svd_sweeps=als_svd.n_iter,
        spals_s_per_sweep=per_sweep(sp.history), spals_sweeps=sp.n_iter,
        spals_error=exact_error(X, sp.cp),
        spals_samples=[tf.spals_sample_count((n, n, n), R, m, alpha=0.2) for m in range(3)],
    )
    out["speedup_per_sweep"] = out["als_s_per_sweep"] / out["spals_s_per_sweep"]
    best_als = min(out["als_error"], out["als_svd_error"])
    out["error_ratio"] = out["spals_error"] / best_als
    for k, v in out.items():
        print(f"{k:20s} {v}")
    print(f"check: SPALS speed-up per sweep >= 10x: {out['speedup_per_sweep']:.1f}x "
          f"{'PASS' if out['speedup_per_sweep'] >= 10 else 'FAIL'}")
    print(f"check: SPALS converged error within 1.3x of CP-ALS's: {out['error_ratio']:.3f} "
          f"{'PASS' if out['error_ratio'] <= 1.3 else 'FAIL'}")
    _common.write_json(f"spals_vs_als_{n}", {**out, "machine": _common.machine_info(N_THREADS)})


if __name__ == "__main__":
    main()
