"""CP-ALS quickstart: a real hyperspectral image and a planted problem.

Decomposes two tensors with :func:`tensorfact.cp_als` and plots how the
relative error ``||X - X_hat|| / ||X||`` falls with the iterations and with
wall time:

- **Indian Pines** (145 x 145 x 200: two spatial modes and 200 spectral
  bands, AVIRIS sensor, Baumgardner, Biehl & Landgrebe 2015), the
  hyperspectral image that TensorLy ships inside its package
  (``tensorly.datasets.load_indian_pines``; read from the installed package,
  no download);
- a **planted** rank-10 tensor with 5 % relative Gaussian noise
  (:func:`tensorfact.datasets.planted_cp`), where the error must settle at the
  noise floor and the fitted factors must match the planted ones.

Run::

    python examples/cp_als_quickstart.py [--out DIR] [--quick]

The plot goes to ``DIR/cp_als_convergence.png`` (default ``examples_out/``,
ignored by git; the docs' figure is made with ``--out docs/img``).
``--quick`` crops the image and shrinks the planted tensor (a few seconds).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

import tensorfact as tf
from tensorfact.datasets import planted_cp

FIGURE = "cp_als_convergence.png"


def load_indian_pines(quick: bool) -> np.ndarray:
    """The Indian Pines image as a float64 array (cropped with ``quick``)."""
    from tensorly.datasets import load_indian_pines as tl_load

    X = np.asarray(tl_load()["tensor"], dtype=np.float64)
    if quick:
        X = np.ascontiguousarray(X[:32, :32, ::4])
    return X


@dataclass(frozen=True)
class Run:
    """One decomposition: what the table and the plot need."""

    name: str
    shape: tuple[int, ...]
    rank: int
    result: tf.CPALSResult
    seconds: float  # whole call, SVD initialisation included


def run(name: str, X: np.ndarray, rank: int, *, max_iter: int, tol: float, seed: int) -> Run:
    """Decompose ``X`` from an SVD initialisation."""
    t0 = time.perf_counter()
    res = tf.cp_als(X, rank=rank, init="svd", max_iter=max_iter, tol=tol, rng=seed)
    return Run(name, tuple(X.shape), rank, res, time.perf_counter() - t0)


def plot(runs: list[Run], floor: float, out: Path) -> None:
    """Relative error against iteration and against time, one line per run."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_it, ax_t) = plt.subplots(1, 2, figsize=(10, 4), constrained_layout=True)
    for r in runs:
        errs = np.asarray(r.result.history.rel_error)
        times = np.asarray(r.result.history.time)
        label = f"{r.name}, R={r.rank}"
        ax_it.semilogy(np.arange(1, errs.size + 1), errs, label=label)
        ax_t.loglog(times, errs, label=label)
    for ax in (ax_it, ax_t):
        ax.axhline(floor, color="grey", ls="--", lw=1)
        ax.set_ylabel("relative error ||X - X̂|| / ||X||")
        ax.grid(True, which="both", alpha=0.3)
    ax_it.annotate("planted noise floor", (1, floor), textcoords="offset points",
                   xytext=(4, 4), color="grey", fontsize=8)
    ax_it.set_xlabel("iteration (ALS sweep)")
    ax_t.set_xlabel("wall time (s, log scale)")
    ax_it.legend(fontsize=8)
    fig.suptitle("tensorfact.cp_als convergence (SVD initialisation)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="CP-ALS on Indian Pines and a planted tensor")
    p.add_argument("--out", type=Path, default=Path("examples_out"),
                   help="folder for the plot (default: examples_out, ignored by git)")
    p.add_argument("--quick", action="store_true", help="small sizes for a smoke test")
    args = p.parse_args(argv)

    max_iter = 20 if args.quick else 200
    tol = 1e-7
    noise = 0.05

    pines = load_indian_pines(args.quick)
    planted_shape = (20, 25, 30) if args.quick else (150, 160, 170)
    Xp, truth = planted_cp(planted_shape, 10, noise=noise, rng=0)

    runs = []
    for rank in ((3, 6) if args.quick else (5, 10, 20)):
        runs.append(run("Indian Pines", pines, rank, max_iter=max_iter, tol=tol, seed=0))
    runs.append(run("planted", Xp, 10, max_iter=max_iter, tol=tol, seed=0))

    # ||X - T|| = noise ||T|| and the noise is nearly orthogonal to T, so the
    # best rank-10 fit leaves about noise / sqrt(1 + noise^2) of ||X||
    floor = noise / math.sqrt(1.0 + noise**2)

    header = (f"{'tensor':14s} {'shape':>15s} {'rank':>4s} {'iters':>5s} {'rel error':>10s} "
              f"{'time (s)':>8s}")
    print(header)
    print("-" * len(header))
    for r in runs:
        shape = "x".join(map(str, r.shape))
        print(f"{r.name:14s} {shape:>15s} {r.rank:>4d} {r.result.n_iter:>5d} "
              f"{r.result.rel_error:>10.4f} {r.seconds:>8.2f}")
    fms = runs[-1].result.cp.factor_match_score(truth)
    print(f"\nplanted: noise floor {floor:.4f}, factor match score vs truth {fms:.4f}")

    out = args.out / FIGURE
    plot(runs, floor, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
