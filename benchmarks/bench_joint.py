"""Joint triangularization: accuracy, time, bound coverage; CP-ALS from joint_schur init.

Part 1 (grid over d, N, sigma): planted M_n = V diag(lam_n) V^{-1} (Gaussian V
with unit columns, Gaussian eigenvalues) observed as M'_n = M_n + sigma W_n,
W_n with i.i.d. N(0, 1) entries. For each problem:

* ``schur``: real Schur vectors of a random combination (the initialisation),
* ``gauss_newton`` and ``jacobi``: :func:`tensorfact.joint_triangularize`,

timed on the same data; accuracy is the distance to the nearest exact
triangularizer of the noise-free M_n (Hungarian match of the recovered
diagonals to the true eigenvalues, QR of the permuted V, sign fix). The
a posteriori bound of the Gauss-Newton result is computed twice:
``noise_norm="gaussian"`` with ``noise_level=sigma`` (what the noise model
says) and ``noise_norm="fro"`` with ``noise_level = max_n ||sigma W_n||_F``
(worst case, no distributional assumption). Coverage = fraction of problems
with bound >= true error (an ``inf`` bound covers; the fraction of finite
bounds is reported separately); tightness = bound / true error over the
finite bounds.

Part 2: CP-ALS iterations and time to reach fit 0.999 (relative error 1e-3)
on planted 50 x 50 x 50 rank-10 tensors with collinearity 0.9 (noise 1e-4),
from ``init="joint_schur"``, ``"svd"`` and ``"random"``.

Part 3 (``--large``, on all cores): the size rule of ``method="auto"``, i.e.
the direct Gauss-Newton method against the matrix-free ``"gauss_newton_cg"``
on the same data (planted diagonalizable families, noise ``sigma W_n`` with
``||W_n||_F = 1``), and the acceptance case ``d = 150``, ``N = 3``, noise
1e-3: ``joint_triangularize`` and ``triangularization_error_bound`` timed
on ``M_n = V T_n V^{-1} + noise`` with upper-triangular ``T_n`` (diagonal, or
with a strictly upper part of Gaussian entries over ``sqrt(d)``), with the
machine's load average recorded before and after.

Run: ``python benchmarks/bench_joint.py [--quick | --large]``; writes
``benchmarks/results/joint.json`` and ``docs/img/joint_bound.png``
(``benchmarks/results/joint_quick.json`` and ``joint_quick.png`` with
``--quick``, ``benchmarks/results/joint_large_<threads>thread.json`` with
``--large [--threads N]``).
"""

from __future__ import annotations

import sys

import _common  # noqa: I001  (pins BLAS threads before numpy is imported)


def _threads_from_argv() -> int | None:
    """``--threads N`` if given; else 1, or all cores with ``--large``."""
    if "--threads" in sys.argv:
        return int(sys.argv[sys.argv.index("--threads") + 1])
    return None if "--large" in sys.argv else 1


# one BLAS thread: the work is many small (<= 1225 x 1225) dense solves, where
# a multi-threaded OpenBLAS spends more time waking threads than computing;
# --large measures on all cores unless --threads says otherwise
N_THREADS = _common.pin_threads(_threads_from_argv())

import argparse  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg as sla  # noqa: E402
from scipy.optimize import linear_sum_assignment  # noqa: E402

from tensorfact import (  # noqa: E402
    BoundInvalidWarning,
    cp_als,
    joint_triangularize,
    triangularization_error_bound,
)
from tensorfact.datasets import planted_cp  # noqa: E402


def planted(d: int, N: int, rng: np.random.Generator):
    V = rng.standard_normal((d, d))
    V /= np.linalg.norm(V, axis=0)
    lam = rng.standard_normal((N, d))
    Vi = np.linalg.inv(V)
    return np.stack([V @ np.diag(lam[n]) @ Vi for n in range(N)]), V, lam


def true_error(U, M, V, lam) -> float:
    D = np.einsum("ji,njk,ki->ni", U, M, U)
    cost = ((D[:, :, None] - lam[:, None, :]) ** 2).sum(axis=0)
    _, perm = linear_sum_assignment(cost)
    Q, _ = np.linalg.qr(V[:, perm])
    Q = Q * np.where(np.sum(Q * U, axis=0) < 0, -1.0, 1.0)[None, :]
    return float(np.linalg.norm(U - Q))


def run_cell(d, N, sigma, reps, seed, jacobi_sweeps):
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(reps):
        M, V, lam = planted(d, N, rng)
        W = rng.standard_normal(M.shape)
        Mp = M + sigma * W
        gseed = int(rng.integers(2**31))
        t0 = time.perf_counter()
        theta = np.random.default_rng(gseed).standard_normal(N)
        _, Z = sla.schur(np.tensordot(theta / np.linalg.norm(theta), Mp, axes=1), output="real")
        t_schur = time.perf_counter() - t0
        t0 = time.perf_counter()
        gn = joint_triangularize(Mp, rng=gseed, max_iter=50, method="gauss_newton")
        t_gn = time.perf_counter() - t0
        t0 = time.perf_counter()
        jc = joint_triangularize(Mp, rng=gseed, method="jacobi", max_iter=jacobi_sweeps)
        t_jc = time.perf_counter() - t0
        err_gn = true_error(gn.U, M, V, lam)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundInvalidWarning)
            t0 = time.perf_counter()
            bg = triangularization_error_bound(Mp, gn.U, sigma, noise_norm="gaussian")
            t_bound = time.perf_counter() - t0
            fro_level = float(np.max(np.linalg.norm(sigma * W, axis=(1, 2))))
            bf = triangularization_error_bound(Mp, gn.U, fro_level, noise_norm="fro")
        rows.append({
            "err_schur": true_error(Z, M, V, lam), "err_gn": err_gn,
            "err_jacobi": true_error(jc.U, M, V, lam),
            "t_schur": t_schur, "t_gn": t_gn, "t_jacobi": t_jc, "t_bound": t_bound,
            "it_gn": gn.n_iter, "conv_gn": gn.converged,
            "it_jacobi": jc.n_iter, "conv_jacobi": jc.converged,
            "bound_gauss": bg.bound, "bound_fro": bf.bound, "gap": bg.gap,
            "certified_gauss": bg.certified,
        })
    return rows


def summarise(rows):
    def med(key):
        return statistics.median(r[key] for r in rows)

    out = {k: med(k) for k in ("err_schur", "err_gn", "err_jacobi", "t_schur", "t_gn",
                               "t_jacobi", "t_bound")}
    out["max_it_gn"] = max(r["it_gn"] for r in rows)
    out["conv_gn"] = float(np.mean([r["conv_gn"] for r in rows]))
    out["conv_jacobi"] = float(np.mean([r["conv_jacobi"] for r in rows]))
    for nm in ("gauss", "fro"):
        b = np.array([r[f"bound_{nm}"] for r in rows])
        e = np.array([r["err_gn"] for r in rows])
        out[f"coverage_{nm}"] = float(np.mean(b >= e))
        fin = np.isfinite(b)
        out[f"finite_{nm}"] = float(np.mean(fin))
        out[f"tightness_{nm}"] = (float(np.median(b[fin] / np.maximum(e[fin], 1e-300)))
                                  if fin.any() else None)
    out["accuracy_ratio_schur_over_gn"] = statistics.median(
        r["err_schur"] / max(r["err_gn"], 1e-300) for r in rows)
    return out


def cp_part(seeds, max_iter):
    res = []
    for seed in seeds:
        X, _ = planted_cp((50, 50, 50), 10, collinearity=0.9, noise=1e-4, rng=seed)
        for init in ("joint_schur", "svd", "random"):
            hit: dict[str, float] = {}

            def cb(it, cp, rel, hit=hit):
                if rel <= 1e-3 and "it" not in hit:
                    hit["it"] = it
                    hit["t"] = time.perf_counter()
                    return True
                return False

            t0 = time.perf_counter()
            r = cp_als(X, 10, init=init, rng=seed, max_iter=max_iter, tol=0.0, callback=cb)
            t_end = time.perf_counter()
            res.append({"seed": seed, "init": init,
                        "iters": hit.get("it"), "time": (hit.get("t", t_end) - t0),
                        "reached": "it" in hit, "final_rel_error": r.rel_error,
                        "n_iter_run": r.n_iter})
    return res


def planted_triangular(d, N, rng, *, sigma, coupling=0.0, noise="fro"):
    """M_n = V T_n V^{-1} + sigma W_n, T_n = diag(lam_n) + coupling/sqrt(d) strict_upper(G_n)."""
    V = rng.standard_normal((d, d))
    V /= np.linalg.norm(V, axis=0)
    lam = rng.standard_normal((N, d))
    T = np.einsum("ni,ij->nij", lam, np.eye(d))
    T += coupling / np.sqrt(d) * np.triu(rng.standard_normal((N, d, d)), 1)
    M = np.einsum("ij,njk,kl->nil", V, T, np.linalg.inv(V))
    W = rng.standard_normal(M.shape)
    if noise == "fro":
        W /= np.linalg.norm(W, axis=(1, 2), keepdims=True)
    return M + sigma * W, V, lam


def crossover_part(ds, Ns, sigmas, seeds):
    """Direct Gauss-Newton against Gauss-Newton-CG, same data, same process."""
    rows = []
    for d in ds:
        for N in Ns:
            for sigma in sigmas:
                t = {"gauss_newton": [], "gauss_newton_cg": []}
                loss_ratio, its = [], {"gauss_newton": [], "gauss_newton_cg": []}
                for seed in seeds:
                    M, _, _ = planted_triangular(d, N, np.random.default_rng(seed), sigma=sigma)
                    res = {}
                    for method in t:
                        t0 = time.perf_counter()
                        with warnings.catch_warnings():
                            warnings.simplefilter("ignore")
                            res[method] = joint_triangularize(M, rng=seed, method=method)
                        t[method].append(time.perf_counter() - t0)
                        its[method].append(res[method].n_iter)
                    loss_ratio.append(res["gauss_newton_cg"].loss
                                      / max(res["gauss_newton"].loss, 1e-300))
                row = {"d": d, "N": N, "sigma": sigma,
                       "t_direct": statistics.median(t["gauss_newton"]),
                       "t_cg": statistics.median(t["gauss_newton_cg"]),
                       "its_direct": its["gauss_newton"], "its_cg": its["gauss_newton_cg"],
                       "loss_ratio_cg_over_direct_max": max(loss_ratio)}
                row["time_ratio_cg_over_direct"] = row["t_cg"] / row["t_direct"]
                rows.append(row)
                print(d, N, sigma, {k: (round(v, 4) if isinstance(v, float) else v)
                                    for k, v in row.items()}, flush=True)
    return rows


def large_part(seeds, d=150, N=3, sigma=1e-3):
    """The acceptance case: wall time of joint_triangularize and of its bound at d = 150."""
    rows = []
    for coupling, noise in ((0.0, "fro"), (0.0, "entry"), (1.0, "entry")):
        for seed in seeds:
            M, V, lam = planted_triangular(d, N, np.random.default_rng(seed), sigma=sigma,
                                           coupling=coupling, noise=noise)
            load0 = os.getloadavg()[0]
            t0 = time.perf_counter()
            res = joint_triangularize(M, rng=seed)
            t_tri = time.perf_counter() - t0
            # ||Delta_n||_F: sigma (fro); about sigma d for i.i.d. entries
            level = sigma if noise == "fro" else sigma * (d + 5.0)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                t0 = time.perf_counter()
                eb = triangularization_error_bound(M, res.U, level)
                t_bound = time.perf_counter() - t0
            row = {"d": d, "N": N, "sigma": sigma, "coupling": coupling, "noise": noise,
                   "seed": seed, "t_triangularize": t_tri, "t_bound": t_bound,
                   "n_iter": res.n_iter, "converged": res.converged,
                   "rel_error": res.rel_error, "bound": eb.bound, "gap": eb.gap,
                   "nonlinearity": eb.nonlinearity, "noise_level": level,
                   "bound_warning": [str(w.message)[:120] for w in caught],
                   "true_error": true_error(res.U, M, V, lam) if coupling == 0.0 else None,
                   "loadavg_before": load0, "loadavg_after": os.getloadavg()[0]}
            rows.append(row)
            print({k: v for k, v in row.items() if k != "bound_warning"}, flush=True)
    return rows


def main_large() -> None:
    with _common.blas_limits(N_THREADS):
        cross = crossover_part([10, 16, 20, 24, 30, 40, 60], [3, 10], [1e-3, 1e-1], [0, 1, 2])
        large = large_part([0, 1, 2])
    header = ["d", "N", "sigma", "t direct", "t CG", "CG / direct", "loss CG / direct"]
    table = [[r["d"], r["N"], r["sigma"], r["t_direct"], r["t_cg"],
              r["time_ratio_cg_over_direct"], r["loss_ratio_cg_over_direct_max"]]
             for r in cross]
    print(_common.format_table(table, header))
    lheader = ["coupling", "noise", "seed", "t triangularize", "iters", "rel error",
               "t bound", "bound", "true error", "load before/after"]
    ltable = [[r["coupling"], r["noise"], r["seed"], r["t_triangularize"], r["n_iter"],
               r["rel_error"], r["t_bound"], r["bound"], r["true_error"],
               f"{r['loadavg_before']:.2f}/{r['loadavg_after']:.2f}"] for r in large]
    print(_common.format_table(ltable, lheader))
    payload = {"machine": _common.machine_info(N_THREADS), "crossover": cross, "d150": large,
               "markdown_crossover": _common.format_table(table, header, markdown=True),
               "markdown_d150": _common.format_table(ltable, lheader, markdown=True)}
    print(f"wrote {_common.write_json(f'joint_large_{N_THREADS}thread', payload)}")


def plot(cells, path: Path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    ds = sorted({c["d"] for c in cells})
    for d in ds:
        cs = sorted((c for c in cells if c["d"] == d and c["N"] == max(
            cc["N"] for cc in cells if cc["d"] == d)), key=lambda c: c["sigma"])
        s = [c["sigma"] for c in cs]
        axes[0].loglog(s, [c["err_gn"] for c in cs], "o-", label=f"GN error, d={d}")
        axes[0].loglog(s, [c["err_schur"] for c in cs], "x:", label=f"Schur init, d={d}")
        tb = [c["tightness_gauss"] or np.nan for c in cs]
        axes[1].semilogx(s, tb, "o-", label=f"gaussian bound, d={d}")
        tf = [c["tightness_fro"] or np.nan for c in cs]
        axes[1].semilogx(s, tf, "s--", label=f"fro bound, d={d}")
    axes[0].set_xlabel("sigma")
    axes[0].set_ylabel("median distance to exact triangularizer")
    axes[0].set_title("accuracy (largest N per d)")
    axes[0].legend(fontsize=7)
    axes[1].set_xlabel("sigma")
    axes[1].set_ylabel("median bound / true error (finite bounds)")
    axes[1].set_yscale("log")
    axes[1].axhline(1.0, color="k", lw=0.8)
    axes[1].set_title("tightness of the a posteriori bound")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small grid, one CP seed")
    ap.add_argument("--large", action="store_true",
                    help="only the method crossover and the d = 150 case (all cores)")
    ap.add_argument("--threads", type=int, default=None,
                    help="BLAS threads (default: 1; all cores with --large)")
    args = ap.parse_args()
    if args.large:
        main_large()
        return
    if args.quick:
        ds, Ns, sigmas = [5, 10, 20], [1, 3, 10], [1e-6, 1e-3, 1e-2]
        cp_seeds, cp_max = [0], 1000
    else:
        ds, Ns, sigmas = [5, 10, 20, 50], [1, 3, 10, 30], [1e-6, 1e-4, 1e-3, 1e-2, 1e-1]
        cp_seeds, cp_max = [0, 1, 2], 3000
    cells = []
    header = ["d", "N", "sigma", "err schur", "err GN", "err Jacobi", "acc ratio", "GN its",
              "t GN", "t Jac", "cov g", "fin g", "tight g", "cov f", "fin f", "tight f"]
    table = []
    with _common.blas_limits(N_THREADS):
        for d in ds:
            for N in Ns:
                for sigma in sigmas:
                    if d == 50 and sigma not in (1e-6, 1e-3, 1e-2):
                        continue
                    reps = 1 if d == 50 else (2 if d == 20 else 4) if not args.quick else 2
                    sweeps = 10 if d == 50 else 30
                    rows = run_cell(d, N, sigma, reps, seed=1000 * d + 10 * N + len(cells),
                                    jacobi_sweeps=sweeps)
                    s = summarise(rows)
                    s.update({"d": d, "N": N, "sigma": sigma, "reps": reps,
                              "jacobi_max_sweeps": sweeps, "problems": rows})
                    cells.append(s)
                    table.append([d, N, sigma, s["err_schur"], s["err_gn"], s["err_jacobi"],
                                  s["accuracy_ratio_schur_over_gn"], s["max_it_gn"], s["t_gn"],
                                  s["t_jacobi"], s["coverage_gauss"], s["finite_gauss"],
                                  s["tightness_gauss"], s["coverage_fro"], s["finite_fro"],
                                  s["tightness_fro"]])
                    print(_common.format_table(table[-1:], header), flush=True)
        cp_rows = cp_part(cp_seeds, cp_max)
    print(_common.format_table(table, header))
    cp_table = [[r["seed"], r["init"], r["iters"], r["time"], r["final_rel_error"]]
                for r in cp_rows]
    print(_common.format_table(cp_table, ["seed", "init", "iters to fit 0.999", "time s",
                                          "final rel err"]))

    small = [c for c in cells if c["sigma"] <= 1e-2]
    probs = [p for c in small for p in c["problems"]]

    def agg(nm):
        b = np.array([p[f"bound_{nm}"] for p in probs])
        e = np.array([p["err_gn"] for p in probs])
        fin = np.isfinite(b)
        return {"coverage": float(np.mean(b >= e)), "finite_fraction": float(np.mean(fin)),
                "median_tightness": float(np.median(b[fin] / e[fin])) if fin.any() else None,
                "median_of_cell_median_tightness": float(np.median(
                    [c[f"tightness_{nm}"] for c in small if c[f"tightness_{nm}"] is not None])),
                "n_problems": int(b.size)}

    acc_cells = [c for c in cells if c["sigma"] == 1e-3 and c["d"] <= 20]
    summary = {
        "bound_gaussian_sigma_le_1e-2": agg("gauss"),
        "bound_fro_sigma_le_1e-2": agg("fro"),
        "gn_max_iterations_d_le_20": max(c["max_it_gn"] for c in cells if c["d"] <= 20),
        "gn_converged_fraction_d_le_20": float(np.mean(
            [p["conv_gn"] for c in cells if c["d"] <= 20 for p in c["problems"]])),
        "gn_max_iterations_d_le_20_sigma_le_1e-2": max(
            c["max_it_gn"] for c in cells if c["d"] <= 20 and c["sigma"] <= 1e-2),
        "accuracy_ratio_schur_over_gn_sigma_1e-3_median": float(np.median(
            [p["err_schur"] / p["err_gn"] for c in acc_cells for p in c["problems"]])),
        "accuracy_ratio_schur_over_gn_sigma_1e-3_N_ge_3_median": float(np.median(
            [p["err_schur"] / p["err_gn"] for c in acc_cells if c["N"] >= 3
             for p in c["problems"]])),
        "accuracy_ratio_sigma_1e-3_N_ge_3_fraction_ge_10": float(np.mean(
            [p["err_schur"] / p["err_gn"] >= 10 for c in acc_cells if c["N"] >= 3
             for p in c["problems"]])),
    }
    for lo_n, hi_s, key in ((3, 1e-2, "N_ge_3_sigma_le_1e-2"), (3, 1.0, "N_ge_3_all_sigma"),
                            (1, 1e-2, "N_eq_1_sigma_le_1e-2")):
        sel = [p for c in cells if c["d"] <= 20 and c["sigma"] <= hi_s
               and (c["N"] >= lo_n if lo_n > 1 else c["N"] == 1) for p in c["problems"]]
        summary[f"gn_iterations_d_le_20_{key}"] = {
            "max": max(p["it_gn"] for p in sel),
            "median": float(np.median([p["it_gn"] for p in sel])),
            "converged_fraction": float(np.mean([p["conv_gn"] for p in sel])),
            "n_problems": len(sel)}
    for init in ("joint_schur", "svd", "random"):
        its = [r["iters"] if r["reached"] else None for r in cp_rows if r["init"] == init]
        summary[f"cp_iters_{init}"] = its
        summary[f"cp_time_{init}"] = [r["time"] for r in cp_rows if r["init"] == init]
    print(summary)
    name = "joint_quick" if args.quick else "joint"
    payload = {"machine": _common.machine_info(N_THREADS), "quick": args.quick,
               "summary": summary, "cells": cells, "cp_als": cp_rows,
               "markdown_table": _common.format_table(table, header, markdown=True)}
    path = _common.write_json(name, payload)
    print(f"wrote {path}")
    here = Path(__file__).resolve().parent
    img = (here / "results" / "joint_quick.png" if args.quick
           else here.parent / "docs" / "img" / "joint_bound.png")
    plot(cells, img)
    print(f"wrote {img}")


if __name__ == "__main__":
    main()
