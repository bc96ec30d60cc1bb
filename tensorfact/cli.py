"""The ``tensorfact`` command.

Subcommands register themselves in :data:`SUBCOMMANDS` (name -> function that
adds an ``argparse`` subparser whose ``func`` default runs it).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
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


def _open_store(path: Path) -> Any:
    from .formats import DaskSparseTensor

    return DaskSparseTensor(path)


@contextmanager
def _scheduler(address: str | None) -> Iterator[None]:
    """Run the block on a ``distributed.Client(address)`` (closed afterwards), if given."""
    if address is None:
        yield
        return
    try:
        from distributed import Client
    except ImportError:
        raise SystemExit("tensorfact: --scheduler needs the distributed package "
                         "(pip install distributed)") from None
    try:
        client = Client(address)  # timeout: dask's distributed.comm.timeouts.connect
    except OSError as exc:
        raise SystemExit(f"tensorfact: cannot connect to the scheduler at {address}: "
                         f"{exc}") from None
    with client:
        yield


def _cmd_cp(args: argparse.Namespace) -> int:
    from . import cp_als, spals

    path = Path(args.file)
    store = path.is_dir()
    if store:
        X = _open_store(path)
        what = (f"{X.shape} {X.dtype}, {X.nnz} nonzeros in {X.npartitions} partitions "
                f"({X.store_nbytes / 2**20:.1f} MiB on disk)")
    else:
        X = _load_array(args.file, args.key)
        what = f"{X.shape} {X.dtype}"
    init = args.init or ("random" if store or args.method == "spals" else "svd")
    with _scheduler(args.scheduler):
        t0 = time.perf_counter()
        if args.method == "als":
            res = cp_als(X, args.rank, init=init, max_iter=args.max_iter, tol=args.tol,
                         rng=args.seed, verbose=args.progress)
        else:
            res = spals(X, args.rank, init=init, max_iter=args.max_iter, tol=args.tol,
                        exact_fit_every=args.max_iter, rng=args.seed, verbose=args.progress)
        elapsed = time.perf_counter() - t0
    fit = 1.0 - res.rel_error
    print(f"tensor      {what}")
    print(f"method      {args.method}, init {init}")
    print(f"rank        {args.rank}")
    print(f"iterations  {res.n_iter} (converged: {res.converged})")
    print(f"rel. error  {res.rel_error:.6e}")
    print(f"fit         {fit:.6f}")
    print(f"time        {elapsed:.3f} s ({elapsed / max(res.n_iter, 1) * 1e3:.2f} ms/iteration)")
    if store:
        print(f"read        {X.bytes_read / 2**20:.1f} MiB from the store")
    if args.out:
        weights, factors = res.cp
        arrays = {"weights": np.asarray(weights)}
        arrays.update({f"factor_{n}": np.asarray(A) for n, A in enumerate(factors)})
        np.savez(args.out, **arrays)  # type: ignore[arg-type]
        print(f"saved       {args.out}")
    return 0


def _add_cp(sub: Any) -> None:
    p = sub.add_parser(
        "cp", help="CP decomposition (CP-ALS or SPALS) of a .npy/.npz tensor or a sparse store"
    )
    p.add_argument("file", help="tensor stored as .npy, .npz (select with --key), or a sparse "
                                "store directory made by 'tensorfact convert' (read out of core)")
    p.add_argument("--rank", type=int, required=True, help="number of components (required)")
    p.add_argument("--method", default="als", choices=["als", "spals"],
                   help="exact ALS or sampled ALS (SPALS) (default: %(default)s)")
    p.add_argument("--key", default=None, help="array name inside an .npz file (default: its "
                                               "only array)")
    p.add_argument("--init", default=None, choices=["svd", "random"],
                   help="initial factors (default: svd for arrays with als, random for stores "
                        "and spals)")
    p.add_argument("--max-iter", type=int, default=100,
                   help="maximum number of sweeps (default: %(default)s)")
    p.add_argument("--tol", type=float, default=1e-8,
                   help="stop when the relative error changes less than this (default: "
                        "%(default)s)")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the random initialisation and samples (default: %(default)s)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run on the dask.distributed scheduler at this address (default: the "
                        "local threaded scheduler)")
    p.add_argument("--out", default=None,
                   help="write weights and factors to this .npz (default: not written)")
    p.add_argument("--progress", action="store_true",
                   help="show a progress bar (default: off)")
    p.set_defaults(func=_cmd_cp)


def _cmd_convert(args: argparse.Namespace) -> int:
    from .formats import DaskSparseTensor

    if args.partition_nnz < 1:
        raise ValueError(f"--partition-nnz must be positive, got {args.partition_nnz}")
    t0 = time.perf_counter()
    X = DaskSparseTensor.from_tns(args.file, args.store, partition_nnz=args.partition_nnz,
                                  index_base=args.index_base, progress=args.progress)
    elapsed = time.perf_counter() - t0
    print(f"tensor      {X.shape} {X.dtype}, {X.nnz} nonzeros")
    print(f"store       {X.store} ({X.npartitions} partitions, "
          f"{X.store_nbytes / 2**20:.1f} MiB)")
    print(f"time        {elapsed:.3f} s")
    return 0


def _add_convert(sub: Any) -> None:
    p = sub.add_parser(
        "convert", help="convert a FROSTT .tns file into a partitioned sparse store (streaming)"
    )
    p.add_argument("file", help="FROSTT .tns file, or .tns.gz")
    p.add_argument("store", help="new (or empty) directory for the store")
    p.add_argument("--partition-nnz", type=int, default=1 << 23, metavar="N",
                   help="target number of nonzeros per partition (default: %(default)s)")
    p.add_argument("--index-base", type=int, default=1,
                   help="index of the first element along a mode in the file (default: "
                        "%(default)s, as in FROSTT)")
    p.add_argument("--progress", action="store_true",
                   help="show progress bars (default: off)")
    p.set_defaults(func=_cmd_convert)


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
    "cp": _add_cp, "convert": _add_convert, "reproduce": _add_reproduce,
    "compress": _add_compress,
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
    except (ValueError, TypeError, OSError, NotImplementedError, ArithmeticError,
            ImportError) as exc:
        msg = " ".join(str(exc).split())
        print(f"tensorfact: error: {msg}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
