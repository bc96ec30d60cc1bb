"""SPALS reproduction benchmark: a thin wrapper over ``tensorfact reproduce spals``.

Exact ALS against SPALS at several ``alpha`` on dense n x n x n tensors (one
comparison per noise level), sparse ALS against SPALS on a planted skewed
sparse tensor, and the time per sweep as n grows; at ``--scale amazon``, exact
sparse ALS against SPALS on an Amazon-shaped planted tensor of 2 * 10^8
nonzeros in a store on disk. Every method runs to convergence on the exact
error from shared starts and its own default start (protocol in
``docs/spals.md``). Writes ``benchmarks/results/spals_<scale>.json``, the
final models (``.npz``) and PNG plots next to it, and prints the tables and
checks.

Usage::

    python benchmarks/spals_reproduce.py --quick          # < 2 minutes on two idle cores
    python benchmarks/spals_reproduce.py                  # default scale (n=400, 1e7 nnz)
    python benchmarks/spals_reproduce.py --scale paper    # n=1000, an 8 GB tensor
    python benchmarks/spals_reproduce.py --scale amazon   # 2e8 nonzeros on disk
"""

from __future__ import annotations

import argparse

import _common  # noqa: I001  (must precede numpy: pins BLAS threads)

N_THREADS = _common.pin_threads(1)


def main() -> None:
    """Parse arguments and run the reproduction."""
    from tensorfact.reproduce import SCALES, run_spals_reproduction

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="default", choices=list(SCALES))
    p.add_argument("--quick", action="store_true", help="same as --scale quick")
    p.add_argument("--threads", type=int, default=N_THREADS)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--seeds", type=int, default=None,
                   help="shared starts per experiment (default: the scale's)")
    args = p.parse_args()
    scale = "quick" if args.quick else args.scale
    run_spals_reproduction(scale, _common.RESULTS_DIR, seed=args.seed, threads=args.threads,
                           seeds=args.seeds)


if __name__ == "__main__":
    main()
