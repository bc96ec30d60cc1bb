"""The ``tensorfact`` command.

Subcommands register themselves in :data:`SUBCOMMANDS` (name -> function that
adds an ``argparse`` subparser whose ``func`` default runs it).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main"]


def _load_array(path: str, key: str | None) -> np.ndarray:
    """Read a ``.npy`` or ``.npz`` file without pickle."""
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"tensorfact: no such file: {path}")
    try:
        data = np.load(p, allow_pickle=False)
    except ValueError as exc:
        raise SystemExit(f"tensorfact: cannot read {path} without pickle: {exc}") from exc
    if isinstance(data, np.lib.npyio.NpzFile):
        with data:
            keys = list(data.keys())
            if key is None:
                if len(keys) != 1:
                    raise SystemExit(
                        f"tensorfact: {path} holds arrays {keys}; choose one with --key"
                    )
                key = keys[0]
            if key not in keys:
                raise SystemExit(f"tensorfact: {path} has no array {key!r} (has {keys})")
            return np.asarray(data[key])
    return np.asarray(data)


def _cmd_cp(args: argparse.Namespace) -> int:
    from . import cp_als

    X = _load_array(args.file, args.key)
    t0 = time.perf_counter()
    res = cp_als(X, args.rank, init=args.init, max_iter=args.max_iter, tol=args.tol,
                 rng=args.seed, verbose=args.progress)
    elapsed = time.perf_counter() - t0
    fit = 1.0 - res.rel_error
    print(f"tensor      {X.shape} {X.dtype}")
    print(f"rank        {args.rank}")
    print(f"iterations  {res.n_iter} (converged: {res.converged})")
    print(f"rel. error  {res.rel_error:.6e}")
    print(f"fit         {fit:.6f}")
    print(f"time        {elapsed:.3f} s ({elapsed / max(res.n_iter, 1) * 1e3:.2f} ms/iteration)")
    if args.out:
        weights, factors = res.cp
        arrays = {"weights": np.asarray(weights)}
        arrays.update({f"factor_{n}": np.asarray(A) for n, A in enumerate(factors)})
        np.savez(args.out, **arrays)  # type: ignore[arg-type]
        print(f"saved       {args.out}")
    return 0


def _add_cp(sub: Any) -> None:
    p = sub.add_parser("cp", help="CP decomposition (CP-ALS) of a .npy/.npz tensor")
    p.add_argument("file", help="tensor stored as .npy, or .npz (select with --key)")
    p.add_argument("--rank", type=int, required=True, help="number of components")
    p.add_argument("--key", default=None, help="array name inside an .npz file")
    p.add_argument("--init", default="svd", choices=["svd", "random"])
    p.add_argument("--max-iter", type=int, default=100)
    p.add_argument("--tol", type=float, default=1e-8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write weights and factors to this .npz")
    p.add_argument("--progress", action="store_true", help="show a progress bar")
    p.set_defaults(func=_cmd_cp)


#: name -> function adding the subcommand's parser
def _add_reproduce(sub: Any) -> None:
    from .reproduce import add_reproduce_parser

    add_reproduce_parser(sub)


def _cmd_compress(args: argparse.Namespace) -> int:
    from .nn._compress import run_cli  # needs the torch extra (torch, safetensors)

    print(run_cli(args))
    return 0


def _add_compress(sub: Any) -> None:
    p = sub.add_parser(
        "compress", help="factor the 2-D weights of a .safetensors checkpoint (Kronecker/GKPD)"
    )
    p.add_argument("checkpoint", help="input .safetensors file (no pickle)")
    p.add_argument("--out", required=True, help="output .safetensors file with the factors")
    p.add_argument("--compression", type=float, default=2.0, help="per-matrix ratio (> 1)")
    p.add_argument("--method", default="kronecker", choices=["kronecker", "gkpd"])
    p.add_argument("--include", default=None, help="regex; compress matching tensor names only")
    p.add_argument("--exclude", default=None, help="regex; leave matching tensor names dense")
    p.add_argument("--report", default=None, help="JSON report path (default: OUT with .json)")
    p.set_defaults(func=_cmd_compress)


SUBCOMMANDS: dict[str, Callable[[Any], None]] = {
    "cp": _add_cp, "reproduce": _add_reproduce, "compress": _add_compress,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tensorfact`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="tensorfact", description="Tensor decompositions from the command line."
    )
    parser.add_argument("--version", action="version", version=f"tensorfact {__version__}")
    sub = parser.add_subparsers(dest="command")
    for add in SUBCOMMANDS.values():
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tensorfact`` command."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "func", None) is None:
        parser.print_help()
        return 2
    try:
        return int(args.func(args))
    except (ValueError, TypeError) as exc:
        print(f"tensorfact: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
