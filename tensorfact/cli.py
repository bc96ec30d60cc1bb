"""The ``tensorfact`` command.

Subcommands register themselves in `SUBCOMMANDS` (name -> function that
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

from ._io import atomic_write

__all__ = ["main"]


def _load_array(path: str, key: str | None) -> np.ndarray:
    """Read a ``.npy`` or ``.npz`` file without pickle."""
    p = Path(path)
    if not p.exists():
        raise SystemExit(f"tensorfact: no such file: {path}")
    if not p.is_file():
        raise SystemExit(f"tensorfact: {path} is not a file")
    with open(p, "rb") as f:
        magic = f.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        kind = "an empty file" if not magic else "not a .npy or .npz file"
        raise SystemExit(f"tensorfact: {path} is {kind}")
    try:
        data = np.load(p, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc):
            raise SystemExit(f"tensorfact: {path} holds Python objects (pickled data), which "
                             "are never loaded; save a numeric array instead") from None
        raise SystemExit(f"tensorfact: cannot read {path}: {exc}") from None
    except (OSError, EOFError) as exc:
        raise SystemExit(f"tensorfact: cannot read {path} (truncated or corrupt): {exc}") from None
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
            try:
                return np.asarray(data[key])
            except (ValueError, OSError, EOFError) as exc:
                raise SystemExit(f"tensorfact: cannot read array {key!r} of {path}: "
                                 f"{exc}") from None
    return np.asarray(data)


def _check_out(out: str | None, suffix: str) -> Path | None:
    """Validate an output path before any computation (exactly this path is written)."""
    if out is None:
        return None
    p = Path(out)
    if p.is_dir():
        raise SystemExit(f"tensorfact: --out {out} is a directory; give a file name ending "
                         f"in {suffix}")
    if not p.parent.exists() if str(p.parent) else False:
        raise SystemExit(f"tensorfact: the folder of --out {out} does not exist")
    if p.suffix != suffix:
        raise SystemExit(f"tensorfact: --out {out} must end in {suffix}")
    return p


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

    out = _check_out(args.out, ".npz")
    path = Path(args.file)
    store = path.is_dir()
    if store:
        if not (path / "meta.json").exists():
            raise SystemExit(f"tensorfact: {path} is a directory but not a tensor store "
                             "(no meta.json; make one with 'tensorfact convert')")
        X = _open_store(path)
        what = (f"{X.shape} {X.dtype}, {X.nnz} nonzeros in {X.npartitions} partitions "
                f"({X.store_nbytes / 2**20:.1f} MiB on disk)")
        shape = tuple(X.shape)
    else:
        X = _load_array(args.file, args.key)
        what = f"{X.shape} {X.dtype}"
        shape = tuple(X.shape)
        if X.dtype.kind in "fc" and not bool(np.isfinite(X).all()):
            raise SystemExit(f"tensorfact: {args.file} contains NaN or Inf values; replace "
                             "them (e.g. np.nan_to_num) before decomposing")
    if len(shape) >= 2 and args.rank > max(shape):
        print(f"tensorfact: warning: --rank {args.rank} exceeds every dimension of the "
              f"tensor {shape}; the factors cannot all be independent", file=sys.stderr)
    init = args.init or ("random" if store or args.method == "spals" else "svd")
    with _scheduler(args.scheduler):
        t0 = time.perf_counter()
        if args.method == "als":
            res = cp_als(X, args.rank, init=init, max_iter=args.max_iter, tol=args.tol,
                         rng=args.seed, verbose=args.verbose)
        else:
            res = spals(X, args.rank, init=init, max_iter=args.max_iter, tol=args.tol,
                        exact_fit_every=args.max_iter, rng=args.seed, verbose=args.verbose)
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
    if not res.converged and len(res.history) >= 2:
        change = abs(res.history.rel_error[-1] - res.history.rel_error[-2])
        print(f"note        not converged after {res.n_iter} sweeps: the error still changed "
              f"by {change:.2e} in the last one (--tol {args.tol:g}); allow more sweeps "
              "with --max-iter, or stop earlier with a larger --tol")
    if out is not None:
        weights, factors = res.cp
        arrays = {"weights": np.asarray(weights)}
        arrays.update({f"factor_{n}": np.asarray(A) for n, A in enumerate(factors)})
        atomic_write(out, lambda f: np.savez(f, **arrays))  # type: ignore[arg-type]
        print(f"saved       {out}")
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
    p.add_argument("--out", default=None, metavar="FILE.npz",
                   help="write weights and factors to exactly this .npz file, atomically "
                        "(default: not written)")
    p.add_argument("--verbose", "--progress", action="store_true", dest="verbose",
                   help="show a progress bar with the current error (default: off)")
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
    import importlib.util

    if any(importlib.util.find_spec(m) is None for m in ("torch", "safetensors")):
        raise SystemExit("tensorfact: compress needs PyTorch and safetensors: "
                         "pip install torch==2.13.0 && pip install -e '.[torch]'")
    from .nn._compress import run_cli

    _check_out(args.out, ".safetensors")
    print(run_cli(args))
    return 0


def _add_compress(sub: Any) -> None:
    p = sub.add_parser(
        "compress", help="factor the 2-D weights of a .safetensors checkpoint (Kronecker/GKPD)"
    )
    p.add_argument("checkpoint", help="input .safetensors file (no pickle)")
    p.add_argument("--out", required=True,
                   help="output .safetensors file with the factors (required)")
    p.add_argument("--compression", type=float, default=2.0,
                   help="parameter ratio per matrix, > 1 (default: %(default)s)")
    p.add_argument("--method", default="kronecker", choices=["kronecker", "gkpd"],
                   help="factorisation (default: %(default)s)")
    p.add_argument("--include", default=None,
                   help="regex; compress matching tensor names only (default: all 2-D weights "
                        "large enough to gain)")
    p.add_argument("--exclude", default=None,
                   help="regex; leave matching tensor names dense (default: none)")
    p.add_argument("--report", default=None,
                   help="JSON report path (default: OUT with .json)")
    p.set_defaults(func=_cmd_compress)


SUBCOMMANDS: dict[str, Callable[[Any], None]] = {
    "cp": _add_cp, "convert": _add_convert, "reproduce": _add_reproduce,
    "compress": _add_compress,
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``tensorfact`` command."""
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="tensorfact",
        description="Tensor decompositions from the command line. "
                    "Run 'tensorfact COMMAND --help' for a command's options.",
    )
    parser.add_argument("--version", action="version", version=f"tensorfact {__version__}")
    sub = parser.add_subparsers(dest="command", title="commands", metavar="COMMAND")
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
    except KeyboardInterrupt:
        print("tensorfact: interrupted", file=sys.stderr)
        return 130
    except (ValueError, TypeError, OSError, NotImplementedError, ArithmeticError,
            ImportError) as exc:
        msg = " ".join(str(exc).split())
        print(f"tensorfact: error: {msg}", file=sys.stderr)
        return 2
    except Exception as exc:  # never a traceback: one line, and what to report
        msg = " ".join(str(exc).split())
        print(f"tensorfact: internal error ({type(exc).__name__}): {msg}", file=sys.stderr)
        return 3


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
