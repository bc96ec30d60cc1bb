"""The sweep that chose SPALS's default sample-count constant ``alpha``.

For each planted problem (shape, rank, noise) exact CP-ALS and SPALS at
several ``alpha`` start from the same random initialisation. CP-ALS runs to
convergence (change of the relative error below 1e-7, at most 300 sweeps);
SPALS runs a fixed number of sweeps (its estimate is noisy, so it has no
tolerance test by default). Reported per alpha: median time per iteration
(one BLAS and one Numba thread), the speed-up per iteration over CP-ALS, and
the final relative error recomputed exactly, as a ratio to CP-ALS's converged
error. The default is the smallest alpha whose error ratio stays within 1.05
on every problem.

    python benchmarks/bench_spals_samples.py [--quick]
"""

import _common  # noqa: I001  (must precede numpy)

N_THREADS = _common.pin_threads(1)

import argparse  # noqa: E402
import statistics  # noqa: E402

import numba  # noqa: E402
import numpy as np  # noqa: E402

import tensorfact as tf  # noqa: E402

ALPHAS = (0.05, 0.1, 0.2, 0.5, 1.0)
FULL = [((200, 200, 200), 10), ((400, 400, 400), 10), ((200, 200, 200), 20),
        ((60, 60, 60, 60), 5)]
QUICK = [((60, 60, 60), 5)]


def exact_error(X, cp):
    return float(np.sqrt(tf.as_format(X).residual_norm_sq(cp.weights, list(cp.factors))
                         / np.sum(X * X)))


def per_iter(history):
    t = np.asarray(history.time)
    return float(np.median(np.diff(np.concatenate([[0.0], t]))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="one small problem")
    ap.add_argument("--sweeps", type=int, default=40, help="SPALS sweeps (default 40)")
    args = ap.parse_args()
    numba.set_num_threads(N_THREADS)
    rows = []
    with _common.blas_limits(N_THREADS):
        for shape, R in (QUICK if args.quick else FULL):
            for noise in (0.01, 0.1):
                X, _ = tf.datasets.planted_cp(shape, R, noise=noise, rng=0)
                gen = np.random.default_rng(1)
                init = tf.CPTensor([gen.standard_normal((s, R)) for s in shape])
                als = tf.cp_als(X, R, init=init, tol=1e-7, max_iter=300)
                # ALS from a random start can stall in a swamp: the reference is the
                # better of it and ALS from its default (SVD) start
                als_svd = tf.cp_als(X, R, tol=1e-7, max_iter=300)
                e_als = min(exact_error(X, als.cp), exact_error(X, als_svd.cp))
                t_als = per_iter(als.history)
                for alpha in ALPHAS:
                    tf.spals(X, R, init=init, alpha=alpha, max_iter=2, rng=0)  # warm (JIT)
                    sp = tf.spals(X, R, init=init, alpha=alpha, max_iter=args.sweeps, rng=0)
                    e = exact_error(X, sp.cp)
                    t = per_iter(sp.history)
                    row = {"shape": list(shape), "rank": R, "noise": noise, "alpha": alpha,
                           "n_samples": [tf.spals_sample_count(shape, R, n, alpha=alpha)
                                         for n in range(len(shape))],
                           "als_iters": als.n_iter, "als_s_per_iter": t_als,
                           "als_error": e_als, "spals_s_per_iter": t, "spals_error": e,
                           "speedup": t_als / t, "error_ratio": e / e_als}
                    rows.append(row)
                    print(f"{shape} R={R} noise={noise} alpha={alpha}: {t * 1e3:.1f} ms/it "
                          f"({row['speedup']:.1f}x ALS), error {e:.4f} vs ALS {e_als:.4f} "
                          f"({row['error_ratio']:.3f})", flush=True)
    chosen = next((a for a in ALPHAS
                   if all(r["error_ratio"] <= 1.05 for r in rows if r["alpha"] == a)), None)
    summary = []
    for a in ALPHAS:
        sel = [r for r in rows if r["alpha"] == a]
        summary.append([a, f"{statistics.median(r['speedup'] for r in sel):.1f}",
                        f"{min(r['speedup'] for r in sel):.1f}",
                        f"{max(r['error_ratio'] for r in sel):.3f}"])
    table = _common.format_table(summary, ["alpha", "median speed-up", "min speed-up",
                                           "worst error ratio"], markdown=True)
    print(table)
    print(f"smallest alpha within 1.05 of the converged ALS error everywhere: {chosen}")
    _common.write_json("spals_samples_quick" if args.quick else "spals_samples", {
        "rows": rows, "chosen_alpha": chosen, "sweeps": args.sweeps, "table": table,
        "machine": _common.machine_info(N_THREADS)})


if __name__ == "__main__":
    main()
