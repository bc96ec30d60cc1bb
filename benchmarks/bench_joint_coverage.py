"""Coverage and margin of the a posteriori triangularization bound on random problems.

Draws ``--problems`` seeded random problems (d in {3, 5, 8, 10, 15, 20, 30},
N in {1, 2, 3, 5, 10, 30}, sigma log-uniform in [1e-7, 10^-1.5]); half get
unit-Frobenius noise (``||Delta_n||_F = sigma``, bound with
``noise_norm="fro"`` at level sigma), half i.i.d. Gaussian noise (bound with
``noise_norm="gaussian"`` at level sigma, and with ``"fro"`` at level
``max_n ||Delta_n||_F``). Runs ``joint_triangularize`` (Gauss-Newton) on the
noisy matrices and compares each bound with the true distance to the nearest
exact triangularizer of the noise-free family.

Reports, per noise model and bound: coverage (bound >= true error; an ``inf`` bound
covers, the finite fraction is reported separately), the largest
``error / first_order`` and ``error / bound`` (the margin the first-order
bound leaves), and the median tightness ``bound / error`` over finite bounds.
This is the measurement behind the "Second order" paragraph of
``docs/joint.md``.

Run: ``python benchmarks/bench_joint_coverage.py [--problems 400] [--seed 1]``;
writes ``benchmarks/results/joint_coverage.json``.
"""

from __future__ import annotations

import _common  # noqa: I001  (pins BLAS threads before numpy is imported)

N_THREADS = _common.pin_threads(1)

import argparse  # noqa: E402
import warnings  # noqa: E402

import numpy as np  # noqa: E402
from bench_joint import planted, true_error  # noqa: E402

from tensorfact import (  # noqa: E402
    BoundInvalidWarning,
    joint_triangularize,
    triangularization_error_bound,
)


def run(n_problems: int, seed: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_problems):
        d = int(rng.choice([3, 5, 8, 10, 15, 20, 30]))
        N = int(rng.choice([1, 2, 3, 5, 10, 30]))
        sigma = float(10 ** rng.uniform(-7, -1.5))
        M, V, lam = planted(d, N, rng)
        gaussian = bool(rng.integers(2))
        W = rng.standard_normal(M.shape)
        if not gaussian:
            W /= np.linalg.norm(W, axis=(1, 2), keepdims=True)
        Mp = M + sigma * W
        res = joint_triangularize(Mp, rng=rng)
        err = true_error(res.U, M, V, lam)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundInvalidWarning)
            model = triangularization_error_bound(
                Mp, res.U, sigma, noise_norm="gaussian" if gaussian else "fro")
            fro = (triangularization_error_bound(
                Mp, res.U, float(np.max(np.linalg.norm(sigma * W, axis=(1, 2)))),
                noise_norm="fro") if gaussian else model)
        rows.append({"d": d, "N": N, "sigma": sigma, "gaussian_noise": gaussian,
                     "error": err, "gn_iterations": res.n_iter,
                     "model_bound": model.bound, "model_first_order": model.first_order,
                     "fro_bound": fro.bound, "fro_first_order": fro.first_order})
    return rows


def summarise(rows: list[dict], key: str) -> dict:
    e = np.array([r["error"] for r in rows])
    b = np.array([r[f"{key}_bound"] for r in rows])
    f = np.array([r[f"{key}_first_order"] for r in rows])
    fin = np.isfinite(b)
    return {
        "n_problems": len(rows),
        "coverage": float(np.mean(b >= e)),
        "finite_fraction": float(np.mean(fin)),
        "max_error_over_first_order": float(np.max(e[fin] / f[fin])) if fin.any() else None,
        "max_error_over_bound": float(np.max(e[fin] / b[fin])) if fin.any() else None,
        "median_tightness": float(np.median(b[fin] / e[fin])) if fin.any() else None,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--problems", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with _common.blas_limits(N_THREADS):
        rows = run(args.problems, args.seed)
    gauss = [r for r in rows if r["gaussian_noise"]]
    unit = [r for r in rows if not r["gaussian_noise"]]
    summary = {
        "gaussian bound, Gaussian noise": summarise(gauss, "model"),
        "fro bound (level max ||Delta_n||_F), Gaussian noise": summarise(gauss, "fro"),
        "fro bound (level sigma), unit-Frobenius noise": summarise(unit, "model"),
    }
    table = [[k] + [v[c] for c in ("n_problems", "coverage", "finite_fraction",
                                   "max_error_over_bound", "median_tightness")]
             for k, v in summary.items()]
    print(_common.format_table(table, ["bound", "problems", "coverage", "finite",
                                       "max error/bound", "median bound/error"]))
    # per-problem rows are reproducible from the seed; keep the closest calls
    def worst(sel: list[dict], key: str) -> list[dict]:
        fin = [r for r in sel if r[f"{key}_bound"] < float("inf")]
        return sorted(fin, key=lambda r: -r["error"] / r[f"{key}_bound"])[:10]

    path = _common.write_json("joint_coverage", {
        "machine": _common.machine_info(N_THREADS), "seed": args.seed,
        "n_problems": args.problems, "summary": summary,
        "largest_error_over_bound": {
            "gaussian bound, Gaussian noise": worst(gauss, "model"),
            "fro bound, Gaussian noise": worst(gauss, "fro"),
            "fro bound, unit-Frobenius noise": worst(unit, "model")}})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
