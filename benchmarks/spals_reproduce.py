"""SPALS reproduction benchmark: a thin wrapper over ``tensorfact reproduce spals``.

Compares exact ALS (tensorfact), SPALS at several ``alpha``, TensorLy's
``randomised_parafac`` (uniform sampling) on dense n x n x n tensors, sparse
ALS / SPALS / pyttb ``cp_als`` on a planted skewed sparse tensor, and the
time-per-iteration scaling in n. Writes ``benchmarks/results/spals_<scale>.json``
and PNG plots next to it, and prints the table.

Usage::

    python benchmarks/spals_reproduce.py --quick          # < 2 minutes
    python benchmarks/spals_reproduce.py                  # default scale (n=400, 1e7 nnz)
    python benchmarks/spals_reproduce.py --scale paper    # n=1000 when memory allows
"""

from __future__ import annotations

import argparse

import _common  # noqa: I001  (must precede numpy: pins BLAS threads)

N_THREADS = _common.pin_threads(1)


def main() -> None:
    """Parse arguments and run the reproduction."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--scale", default="default", choices=["tiny", "quick", "default", "paper"])
    p.add_argument("--quick", action="store_true", help="same as --scale quick")
    p.add_argument("--threads", type=int, default=N_THREADS)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()
    from tensorfact.reproduce import run_spals_reproduction

    scale = "quick" if args.quick else args.scale
    run_spals_reproduction(scale, _common.RESULTS_DIR, seed=args.seed, threads=args.threads)


if __name__ == "__main__":
    main()
