"""Exact leverage sampling vs the SPALS product sampler at equal sample counts.

The least-squares problem of one ALS update, ``min_A ||X_(0) - A K^T||`` with
``K = B ⊙ C`` (``B``, ``C`` the planted factors of a 200^3 rank-50 tensor,
perturbed like an ALS iterate), is solved on rows drawn by each sampler; the
excess residual ``(r(A_s) - r(A*)) / r(A*)`` of the sampled solution over the
exact optimum ``A*`` is computed exactly (no row is formed) and summarised
over seeds.

    python benchmarks/bench_exact_sampler.py [--quick]
"""

import _common  # noqa: I001  (must precede numpy)

N_THREADS = _common.pin_threads()

import argparse  # noqa: E402
import statistics  # noqa: E402

import numpy as np  # noqa: E402

import tensorfact as tf  # noqa: E402


def excess_residual(X, factors, A, M, H, normX2, r_opt):
    """``(||X_(0) - A K^T|| - r_opt) / r_opt`` from the MTTKRP ``M`` and Gram ``H``."""
    r2 = normX2 - 2.0 * float(np.sum(A * M)) + float(np.sum((A.T @ A) * H))
    return (np.sqrt(max(r2, 0.0)) - r_opt) / r_opt


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small problem, few seeds")
    ap.add_argument("--seeds", type=int, default=10, help="seeds per sample count (default 10)")
    args = ap.parse_args()
    n, R = (60, 10) if args.quick else (200, 50)
    seeds = 3 if args.quick else args.seeds
    counts = [2 * R, 4 * R, 10 * R, 20 * R, 40 * R]
    X, truth = tf.datasets.planted_cp((n, n, n), R, noise=0.1, collinearity=0.5, rng=0)
    gen = np.random.default_rng(1)
    B, C = (F + 0.3 * gen.standard_normal(F.shape) * np.abs(F).mean()
            for F in truth.factors[1:])
    factors = [B, C]
    M = tf.mttkrp(X, [truth.factors[0], B, C], 0)
    H = (B.T @ B) * (C.T @ C)
    A_opt = np.linalg.solve(H, M.T).T
    normX2 = float(np.sum(X * X))
    r_opt = np.sqrt(normX2 - 2 * np.sum(A_opt * M) + np.sum((A_opt.T @ A_opt) * H))
    X0 = X.reshape(n, n * n)

    def rhs(idx):
        return X0[:, idx[:, 0] * n + idx[:, 1]].T

    rows = []
    with _common.blas_limits(N_THREADS):
        for s in counts:
            row = {"n_samples": s}
            for sampler in ("product", "exact"):
                ex = []
                for seed in range(seeds):
                    res = tf.sampled_krp_lstsq(factors, rhs, s, rng=seed, sampler=sampler,
                                               n_columns=n)
                    ex.append(excess_residual(X, factors, res.coef, M, H, normX2, r_opt))
                row[f"{sampler}_median"] = statistics.median(ex)
                row[f"{sampler}_max"] = max(ex)
                row[f"{sampler}_all"] = ex
            row["median_ratio_product_over_exact"] = row["product_median"] / row["exact_median"]
            rows.append(row)
            print(f"s={s:6d}  excess residual median: product {row['product_median']:.3e}  "
                  f"exact {row['exact_median']:.3e}  (product/exact "
                  f"{row['median_ratio_product_over_exact']:.2f}x)", flush=True)
    wins = sum(r["exact_median"] < r["product_median"] for r in rows)
    print(f"exact sampler lower median excess residual at {wins} of {len(rows)} sample counts")
    table = _common.format_table(
        [[r["n_samples"], f"{r['product_median']:.3e}", f"{r['exact_median']:.3e}",
          f"{r['median_ratio_product_over_exact']:.2f}"] for r in rows],
        ["samples", "product (median)", "exact (median)", "product / exact"], markdown=True)
    print(table)
    _common.write_json("exact_sampler_quick" if args.quick else "exact_sampler", {
        "problem": {"shape": [n, n, n], "rank": R, "noise": 0.1, "collinearity": 0.5,
                    "perturbation": 0.3, "seeds": seeds, "method": "qr"},
        "rows": rows, "machine": _common.machine_info(N_THREADS), "table": table,
    })


if __name__ == "__main__":
    main()
