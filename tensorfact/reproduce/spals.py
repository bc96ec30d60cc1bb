"""Reproduction of the SPALS experiments (Cheng et al., NeurIPS 2016).

Run as ``tensorfact reproduce spals [--scale quick|default|paper|amazon]
[--out DIR]`` or ``python benchmarks/spals_reproduce.py``. Experiments:

1. **Dense** ``n x n x n`` tensors of rank ``R``: Gaussian factors plus
   Gaussian noise of relative level ``sigma``. Exact ALS
   (`tensorfact.cp_als`) and SPALS (`tensorfact.spals`) at
   several ``alpha``.
2. **Sparse**: a planted, power-law skewed sparse tensor of rank ``R`` with
   relative noise on its stored values: sparse ALS and SPALS.
3. **Scaling**: time per sweep of exact ALS and SPALS as ``n`` grows.
4. **Amazon** (``--scale amazon`` only): a planted sparse tensor of the
   Amazon review tensor's shape with ``2 * 10^8`` nonzeros in a store on
   disk (`tensorfact.formats.DaskSparseTensor`): time, bytes read per
   sweep, fit and peak RSS of exact sparse ALS and SPALS.

Protocol of experiments 1, 2 and 4 (see `tensorfact.reproduce._runs`):
every method starts from the same seeded initialisations, and from its own
default one, and runs until one convergence test on the **exact** relative
error stops it (or a generous sweep cap); times come from the solvers'
``history.time`` with the exact-error evaluation added for SPALS subtracted.
Final errors are recomputed exactly from the returned models, whose factors
are saved next to the JSON.

Output, all in the ``--out`` folder: tables (printed, and in the JSON), the
checks of the paper's claims (target, measured, PASS/FAIL), an
error-versus-time plot and a scaling plot (PNG, matplotlib Agg), the JSON of
every number and an ``.npz`` of the final models. This module prints (it is
reproduction code) and uses only tensorfact's public API.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ._amazon import amazon_experiment
from ._experiments import dense_experiment, scaling_experiment, sparse_experiment
from ._report import format_tables, machine_info, make_checks, plot_results, print_report
from ._runs import Protocol

__all__ = ["EXPERIMENTS", "SCALES", "ReproduceConfig", "add_reproduce_parser",
           "run_spals_reproduction"]

EXPERIMENTS = ("dense", "sparse", "scaling", "amazon")

#: Amazon review tensor (users x products x words) of the SPALS paper's experiments
AMAZON_SHAPE = (4821207, 1774269, 1805187)


@dataclass(frozen=True)
class ReproduceConfig:
    """Sizes, protocol and check targets of one reproduction scale."""

    n: int
    sigmas: tuple[float, ...]
    alphas: tuple[float, ...]
    sparse_shape: tuple[int, ...]
    sparse_nnz: int
    sparse_alphas: tuple[float, ...]
    scaling_ns: tuple[int, ...]
    rank: int = 10
    seeds: int = 3
    max_iter: int = 300
    rtol: float = 1e-7
    patience: int = 20
    exact_every: int = 1
    sparse_noise: float = 0.1
    sparse_skew: float = 1.0
    scaling_iters: int = 5
    scaling_alpha: float = 0.1
    scaling_float32_n: int | None = None
    amazon_shape: tuple[int, ...] = AMAZON_SHAPE
    amazon_nnz: int = 200_000_000
    amazon_alphas: tuple[float, ...] = (0.1,)
    amazon_max_iter: dict[str, int] = field(default_factory=lambda: {"als": 40, "spals": 100})
    amazon_exact_every: int = 5
    experiments: tuple[str, ...] = ("dense", "sparse", "scaling")
    #: dense/sparse per-sweep speed-up of SPALS over exact ALS, error ratio to the
    #: best exact ALS error, tolerated relative loss of fit, and the exponent
    #: ``e`` of the allowed SPALS time growth ``(n_2 / n_1)^e`` in the scaling
    targets: dict[str, float] = field(default_factory=lambda: _targets(10.0, 8.0))


def _targets(dense_speedup: float, sparse_speedup: float) -> dict[str, float]:
    """Check targets; the speed-ups grow with the tensor (ALS's sweep costs O(nnz))."""
    return dict(dense_speedup=dense_speedup, sparse_speedup=sparse_speedup, error_ratio=1.1,
                fit_loss=0.05, scaling_exponent=1.5)


SCALES: dict[str, ReproduceConfig] = {
    # seconds, for the test suite
    "tiny": ReproduceConfig(n=24, sigmas=(0.1,), alphas=(0.5,), sparse_shape=(60, 50, 40),
                            sparse_nnz=3000, sparse_alphas=(1.0,), scaling_ns=(16, 24),
                            rank=3, seeds=2, max_iter=40, rtol=1e-3, patience=3,
                            scaling_iters=2, amazon_shape=(300, 200, 100), amazon_nnz=20000,
                            amazon_alphas=(1.0,), amazon_max_iter={"als": 8, "spals": 12},
                            amazon_exact_every=2, targets=_targets(1.0, 1.0)),
    "quick": ReproduceConfig(n=200, sigmas=(0.01, 0.1), alphas=(0.1, 0.3), max_iter=200,
                             sparse_shape=(10000, 2500, 2000), sparse_nnz=1_000_000,
                             sparse_alphas=(0.1,), scaling_ns=(50, 100, 200),
                             targets=_targets(4.0, 2.0)),
    "default": ReproduceConfig(n=400, sigmas=(0.01, 0.1, 1.0), alphas=(0.1, 0.3, 1.0),
                               exact_every=2,
                               sparse_shape=(20000, 10000, 5000), sparse_nnz=10_000_000,
                               sparse_alphas=(0.1, 0.25), scaling_ns=(100, 200, 400),
                               scaling_float32_n=800),
    "paper": ReproduceConfig(n=1000, sigmas=(0.01, 0.1, 1.0), alphas=(0.1, 0.3, 1.0),
                             exact_every=5,
                             sparse_shape=(20000, 10000, 5000), sparse_nnz=10_000_000,
                             sparse_alphas=(0.1, 0.25), scaling_ns=(100, 200, 400, 800),
                             targets=_targets(20.0, 8.0)),
    "amazon": ReproduceConfig(n=0, sigmas=(), alphas=(), sparse_shape=(), sparse_nnz=0,
                              sparse_alphas=(), scaling_ns=(), seeds=1,
                              amazon_alphas=(0.1, 0.3), experiments=("amazon",),
                              targets=_targets(20.0, 10.0)),
}


def _mem_available() -> int:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 << 30


def _needs(n: int, itemsize: int) -> int:
    """Bytes an ``n^3`` experiment needs: the tensor (built in place) plus 1 GiB of workspace."""
    return n**3 * itemsize + (1 << 30)


@contextlib.contextmanager
def _pin(threads: int) -> Iterator[None]:
    """BLAS/OpenMP pools (threadpoolctl) and Numba limited to ``threads``, restored after."""
    import numba  # a dependency of tensorfact
    from threadpoolctl import threadpool_limits

    before = numba.get_num_threads()
    try:
        numba.set_num_threads(min(threads, int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))))
        with threadpool_limits(limits=threads):
            yield
    finally:
        numba.set_num_threads(before)


def _header(scale: str, cfg: ReproduceConfig, n: int, seed: int, threads: int,
            machine: dict[str, Any], experiments: tuple[str, ...]) -> list[str]:
    pools = ", ".join(dict.fromkeys(f"{p['api']} {p['threads']}"
                                    for p in machine["thread_pools"]))
    own = "own default init (ALS: svd, SPALS: random)"
    lines = [
        f"SPALS reproduction (Cheng et al., NeurIPS 2016), scale {scale}, seed {seed}",
        f"machine: {machine['cpu_model']}, {machine['cpus_usable']} of {machine['cpu_count']} "
        f"cores usable; {machine['platform']}; Python {machine['python']}, "
        f"NumPy {machine['numpy']}",
        f"threads: {threads} (threadpoolctl/Numba pools: {pools or 'none found'})",
    ]
    if "dense" in experiments:
        lines.append(
            f"dense: {n}x{n}x{n}, rank {cfg.rank}, float64, standard normal factors, weights "
            f"in [1, 2], plus i.i.d. Gaussian noise E with ||E||/||T|| = sigma, sigma in "
            f"{{{', '.join(f'{s:g}' for s in cfg.sigmas)}}}; SPALS alpha in "
            f"{{{', '.join(f'{a:g}' for a in cfg.alphas)}}}")
    if "sparse" in experiments:
        lines.append(
            f"sparse: {'x'.join(map(str, cfg.sparse_shape))}, about {cfg.sparse_nnz} nonzeros, "
            f"rank {cfg.rank}: planted_sparse_cp(exact=True, skew={cfg.sparse_skew:g}), "
            f"relative noise {cfg.sparse_noise:g} on the stored values; SPALS alpha in "
            f"{{{', '.join(f'{a:g}' for a in cfg.sparse_alphas)}}}")
    if "amazon" in experiments:
        lines.append(
            f"amazon: {'x'.join(map(str, cfg.amazon_shape))}, about {cfg.amazon_nnz} nonzeros "
            f"on disk (planted_sparse_store, exact=True, skew={cfg.sparse_skew:g}, noise "
            f"{cfg.sparse_noise:g}), rank {cfg.rank}, DaskSparseTensor on the active Dask "
            f"scheduler; SPALS alpha in {{{', '.join(f'{a:g}' for a in cfg.amazon_alphas)}}}; "
            f"one shared range-finder start; exact error every sweep for ALS (its own), "
            f"{_every(cfg.amazon_exact_every)} for SPALS (a full pass, excluded from its time "
            f"and bytes read); stop when the best error improved by less than {cfg.rtol:g} "
            f"(relative) over the last {cfg.patience} sweeps; caps: ALS "
            f"{cfg.amazon_max_iter['als']}, SPALS {cfg.amazon_max_iter['spals']} sweeps; "
            f"peak RSS is the process's (getrusage) after each run")
    if {"dense", "sparse"} & set(experiments):
        lines += [
            f"inits: {cfg.seeds} shared seed(s), the same start for every method (dense: "
            f"standard normal factors; sparse: range-finder sketch of the data), plus each "
            f"method's {own}",
            f"convergence: exact relative error after every sweep for ALS (its own, from the "
            f"last MTTKRP), after {_every(cfg.exact_every)} for SPALS (a full residual, "
            f"as_format(X).residual_norm_sq); stop when the best error improved by less than "
            f"{cfg.rtol:g} (relative) over the last {cfg.patience} sweeps; cap "
            f"{cfg.max_iter} sweeps",
            "timing: median seconds per sweep from the solver's history.time, with the time "
            "of the exact-error evaluation subtracted; final errors recomputed exactly from "
            "the returned models",
        ]
    return lines


def _every(k: int) -> str:
    return "every sweep" if k == 1 else f"every {k} sweeps (and the first)"


def _save_models(models: dict[str, Any], path: Path) -> None:
    arrays: dict[str, np.ndarray] = {}
    for key, cp in models.items():
        weights, factors = cp
        arrays[f"{key}__weights"] = np.asarray(weights)
        arrays.update({f"{key}__factor_{m}": np.asarray(a) for m, a in enumerate(factors)})
    np.savez(path, **arrays)  # type: ignore[arg-type]


def run_spals_reproduction(scale: str = "quick", out: str | os.PathLike[str] | None = None, *,
                           seed: int = 0, threads: int = 1, progress: bool = True,
                           experiments: tuple[str, ...] | None = None,
                           seeds: int | None = None) -> dict[str, Any]:
    """Run the SPALS reproduction at ``scale``; write everything to ``out``.

    Parameters
    ----------
    scale : {"tiny", "quick", "default", "paper", "amazon"}
        Problem sizes and protocol, see `SCALES`.
    out : path, optional
        Output folder (created if needed; nothing is written elsewhere);
        default ``./spals_reproduce``.
    seed : int
        Seed of the problems, the shared initial factors and the samplers.
    threads : int
        BLAS and Numba threads during the run (the amazon experiment's Dask
        graphs run on the active Dask scheduler).
    progress : bool
        Show a progress bar.
    experiments : tuple of {"dense", "sparse", "scaling", "amazon"}, optional
        Which experiments to run (default: the scale's).
    seeds : int, optional
        Number of shared starts per experiment (default: the scale's, 3; 1
        at the amazon scale); each method also runs from its own start. ``0``:
        each method from its own default start only (the checks then compare
        those runs).

    Returns
    -------
    dict
        What was written to ``spals_<scale>.json`` (header, experiments with
        every run and the per-method summaries, checks, notes, machine), plus
        its path under ``"json"``.

    Raises
    ------
    ValueError
        Unknown ``scale`` or experiment name.
    RuntimeError
        The amazon experiment without the on-disk formats installed.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    cfg = SCALES[scale]
    if seeds is not None:
        if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)) or seeds < 0:
            raise ValueError(f"seeds must be a non-negative integer, got {seeds!r}")
        cfg = replace(cfg, seeds=int(seeds))
    experiments = cfg.experiments if experiments is None else tuple(experiments)
    bad = set(experiments) - set(EXPERIMENTS)
    if bad:
        raise ValueError(f"unknown experiments {sorted(bad)}; choose from {EXPERIMENTS}")
    notes: list[str] = []
    n = cfg.n
    if "dense" in experiments and _needs(n, 8) > _mem_available():
        fallback = next((m for m in (800, 600, 400, 200) if _needs(m, 8) < _mem_available()),
                        200)
        notes.append(f"dense: n={n} needs about {_needs(n, 8) / 2**30:.1f} GiB, "
                     f"{_mem_available() / 2**30:.1f} GiB available; using n={fallback}")
        n = fallback
    sizes: list[tuple[int, Any]] = [(m, np.float64) for m in cfg.scaling_ns]
    if cfg.scaling_float32_n is not None:
        m = cfg.scaling_float32_n
        if _needs(m, 4) < _mem_available():
            sizes.append((m, np.float32))
        else:
            notes.append(f"scaling: n={m} float32 skipped (needs about "
                         f"{_needs(m, 4) / 2**30:.1f} GiB)")
    out_dir = Path(out) if out is not None else Path.cwd() / "spals_reproduce"
    out_dir.mkdir(parents=True, exist_ok=True)
    protocol = Protocol(rtol=cfg.rtol, patience=cfg.patience, max_iter=cfg.max_iter,
                        every=cfg.exact_every)
    per_init = cfg.seeds + 1
    total = (("dense" in experiments) * len(cfg.sigmas) * (1 + len(cfg.alphas)) * per_init
             + ("sparse" in experiments) * (1 + len(cfg.sparse_alphas)) * per_init
             + ("scaling" in experiments) * len(sizes)
             + ("amazon" in experiments) * (1 + len(cfg.amazon_alphas)))
    from tqdm.auto import tqdm

    t_start = time.perf_counter()
    models: dict[str, Any] = {}
    exp: dict[str, Any] = {}
    seconds: dict[str, float] = {}
    with _pin(threads), tqdm(total=total, desc=f"spals reproduce ({scale})",
                             disable=not progress) as bar:
        machine = machine_info()
        for name in EXPERIMENTS:
            if name not in experiments:
                continue
            t0 = time.perf_counter()
            if name == "dense":
                exp["dense"] = dense_experiment(cfg, n, seed, protocol, models, bar)
            elif name == "sparse":
                exp["sparse"] = sparse_experiment(cfg, seed, protocol, models, bar)
            elif name == "scaling":
                exp["scaling"] = scaling_experiment(cfg, seed, sizes, bar)
            else:
                exp["amazon"] = amazon_experiment(cfg, seed, out_dir, notes, bar)
            seconds[name] = time.perf_counter() - t0
    result: dict[str, Any] = dict(
        scale=scale, config=asdict(cfg), dense_n=n, seed=seed, threads=threads,
        machine=machine, header=_header(scale, cfg, n, seed, threads, machine, experiments),
        experiments=exp, notes=notes,
        total_seconds=time.perf_counter() - t_start, experiment_seconds=seconds,
        peak_rss_mib=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    )
    for block in [*exp.get("dense", []), *([exp["sparse"]] if "sparse" in exp else [])]:
        for s in block["summary"]:
            for w in s["warnings"]:
                where = f"sigma={block['sigma']:g}" if "sigma" in block else "sparse"
                notes.append(f"{where}, {s['method']}, {s['init']}: {w}")
    for r in exp.get("amazon", {}).get("runs", []):
        notes += [f"amazon, {r['method']}: {w}" for w in r["warnings"]]
    result["checks"] = make_checks(result, cfg.targets)
    result["tables_markdown"] = format_tables(result)
    files = plot_results(result, out_dir, scale)
    if models:
        name = f"spals_{scale}_models.npz"
        _save_models(models, out_dir / name)
        files.append(name)
    result["files"] = files
    result["out"] = str(out_dir)
    path = out_dir / f"spals_{scale}.json"
    result["json"] = path.name
    path.write_text(json.dumps(result, indent=1))
    print_report(result)
    result["json"] = str(path)
    return result


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def add_reproduce_parser(sub: Any) -> None:
    """Add ``tensorfact reproduce spals`` to an argparse subparsers object."""
    p = sub.add_parser("reproduce", help="reproduce published experiments")
    rsub = p.add_subparsers(dest="experiment")
    s = rsub.add_parser("spals", help="SPALS experiments (Cheng et al., NeurIPS 2016)")
    s.add_argument("--scale", default="quick", choices=list(SCALES),
                   help="quick (dense 200^3, 10^6 nonzeros; < 2 min), default (400^3, 10^7), "
                        "paper (1000^3, about 9 GiB), amazon (2*10^8 nonzeros on disk under "
                        "--out); tiny is for tests")
    s.add_argument("--out", default=None, help="output folder (default ./spals_reproduce)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1, help="BLAS/Numba threads (default 1)")
    s.add_argument("--seeds", type=int, default=None,
                   help="shared starts per experiment (default: the scale's; 3 below "
                        "amazon); 0: each method from its own start only")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.set_defaults(func=_cmd_reproduce_spals)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _cmd_reproduce_spals(args: Any) -> int:
    run_spals_reproduction(args.scale, args.out, seed=args.seed, threads=args.threads,
                           progress=not args.no_progress, seeds=args.seeds)
    return 0
