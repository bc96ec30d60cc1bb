"""Non-negative CP and Tucker on a real data set: the Indian Pines hyperspectral image.

The **Indian Pines** scene (Baumgardner, Biehl & Landgrebe, *220 Band AVIRIS
Hyperspectral Image Data Set: June 12, 1992 Indian Pine Test Site 3*, Purdue
University Research Repository, 2015) is a 145 x 145 pixel image in 200
spectral bands: a 145 x 145 x 200 tensor of non-negative radiances. TensorLy
ships it inside its package (``tensorly.datasets.load_indian_pines``, read
from the installed package, no download).

The script fits, to the image scaled to unit maximum,

- :func:`tensorfact.nonnegative_cp` (HALS) at rank ``R``: ``R`` non-negative
  spectral signatures and their abundance maps (row x column);
- :func:`tensorfact.tucker` (HOOI) at ranks ``(r, r, s)``: a compressed image;

and prints, for each, the parameters stored, the compression ratio (entries
of the image per stored parameter), the relative error, the sweeps and the
time, and writes the same table to ``DIR/indian_pines.txt``. Non-negativity
of the CP factors is checked.

Run::

    python examples/indian_pines.py [--rank R] [--out DIR] [--quick]

``DIR`` defaults to ``examples_out/`` (ignored by git). ``--quick`` fits rank
4 and ranks (8, 8, 4) for a few sweeps (seconds).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np

import tensorfact as tf

OUTPUT = "indian_pines.txt"


def load_indian_pines() -> np.ndarray:
    """The 145 x 145 x 200 image as float64, scaled to unit maximum."""
    from tensorly.datasets import load_indian_pines as tl_load

    X = np.asarray(tl_load().tensor, dtype=np.float64)
    return X / X.max()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rank", type=int, default=12, help="CP components (default 12)")
    p.add_argument("--out", type=Path, default=Path("examples_out"),
                   help="folder for indian_pines.txt (default examples_out/)")
    p.add_argument("--quick", action="store_true", help="small ranks, a few sweeps")
    args = p.parse_args(argv)
    if args.quick:
        rank, ranks, max_iter = 4, (8, 8, 4), 10
    else:
        rank, ranks, max_iter = args.rank, (30, 30, 12), 200

    X = load_indian_pines()
    rows = []
    t0 = time.perf_counter()
    nn = tf.nonnegative_cp(X, rank, max_iter=max_iter, rng=0)
    t_nn = time.perf_counter() - t0
    if not all(bool(np.all(np.asarray(A) >= 0)) for A in nn.cp.factors):
        print("non-negative CP returned a negative factor entry", file=sys.stderr)
        return 1
    n_cp = sum(int(np.asarray(A).size) for A in nn.cp.factors) + rank
    rows.append((f"nonnegative_cp R={rank}", n_cp, nn.rel_error, nn.n_iter, t_nn))

    t0 = time.perf_counter()
    tk = tf.tucker(X, ranks, max_iter=max_iter, rng=0)
    t_tk = time.perf_counter() - t0
    core, factors = tk.tucker
    n_tk = int(np.asarray(core).size) + sum(int(np.asarray(U).size) for U in factors)
    rows.append((f"tucker ranks={'x'.join(map(str, ranks))}", n_tk, tk.rel_error, tk.n_iter,
                 t_tk))

    entries = math.prod(X.shape)
    header = f"{'method':28s} {'parameters':>10s} {'compression':>11s} {'rel_error':>9s} " \
             f"{'sweeps':>6s} {'seconds':>7s}"
    lines = [header] + [f"{name:28s} {n:10d} {entries / n:11.1f} {err:9.4f} {it:6d} {t:7.2f}"
                        for name, n, err, it, t in rows]
    text = "\n".join(lines)
    print(f"Indian Pines {'x'.join(map(str, X.shape))} (scaled to unit maximum)")
    print(text)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / OUTPUT).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
