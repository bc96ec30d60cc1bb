"""Reproduction of the SPALS timing experiments (Cheng et al., NeurIPS 2016).

Run as ``tensorfact reproduce spals [--scale quick|default|paper] [--out DIR]``
or ``python benchmarks/spals_reproduce.py``. Three experiments:

1. **Dense** ``n x n x n`` tensors, rank 10, Gaussian factors plus Gaussian
   noise of relative level ``sigma`` in {0.01, 0.1, 1}: exact ALS
   (:func:`tensorfact.cp_als`), SPALS (:func:`tensorfact.spals`) at several
   ``alpha``, and TensorLy's ``randomised_parafac`` with uniform sampling
   (its error computation switched off while timed). Every method starts from
   the same initial factors and runs the same number of sweeps.
2. **Sparse**: a planted, power-law skewed sparse tensor of rank 10 with
   noise 0.1: sparse ALS, SPALS and pyttb's ``cp_als`` on a ``sptensor``.
3. **Scaling**: time per sweep of SPALS and exact ALS as ``n`` grows.

Output: a paper-style table (time per iteration and relative error), an
error-versus-time plot and a scaling plot (PNG, matplotlib Agg), and a JSON
file with every number. This module prints (it is reproduction code).
It uses only tensorfact's public API.
"""

from __future__ import annotations

import json
import math
import os
import platform
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import tensorfact as tf
from tensorfact.datasets import planted_sparse_cp

from ._report import format_table, plot_results, print_report, summary_ratios

__all__ = ["SCALES", "ReproduceConfig", "add_reproduce_parser", "dense_problem",
           "run_spals_reproduction"]


@dataclass(frozen=True)
class ReproduceConfig:
    """Sizes of one reproduction scale."""

    n: int
    iters: int
    alphas: tuple[float, ...]
    sparse_shape: tuple[int, ...]
    sparse_nnz: int
    sparse_als_iters: int
    sparse_spals_iters: int
    pyttb_iters: int
    scaling_ns: tuple[int, ...]
    scaling_iters: int
    scaling_float32_n: int | None = None
    sigmas: tuple[float, ...] = (0.01, 0.1, 1.0)
    rank: int = 10
    sparse_alphas: tuple[float, ...] = field(default=(0.25, 1.0))


SCALES: dict[str, ReproduceConfig] = {
    # seconds, for the smoke test
    "tiny": ReproduceConfig(n=24, iters=4, alphas=(0.5,), sparse_shape=(60, 50, 40),
                            sparse_nnz=3000, sparse_als_iters=3, sparse_spals_iters=3,
                            pyttb_iters=1, scaling_ns=(16, 24), scaling_iters=2,
                            sigmas=(0.1,), rank=3, sparse_alphas=(1.0,)),
    "quick": ReproduceConfig(n=200, iters=10, alphas=(0.1, 0.3),
                             sparse_shape=(10000, 5000, 2000), sparse_nnz=1_000_000,
                             sparse_als_iters=6, sparse_spals_iters=6,
                             pyttb_iters=1, scaling_ns=(50, 100, 200), scaling_iters=3,
                             sparse_alphas=(0.1,)),
    "default": ReproduceConfig(n=400, iters=15, alphas=(0.1, 0.3, 1.0),
                               sparse_shape=(20000, 10000, 5000), sparse_nnz=10_000_000,
                               sparse_als_iters=12, sparse_spals_iters=12, pyttb_iters=2,
                               scaling_ns=(100, 200, 400), scaling_iters=4,
                               scaling_float32_n=800, sparse_alphas=(0.1, 0.25)),
    "paper": ReproduceConfig(n=1000, iters=15, alphas=(0.1, 0.3, 1.0),
                             sparse_shape=(20000, 10000, 5000), sparse_nnz=10_000_000,
                             sparse_als_iters=12, sparse_spals_iters=12, pyttb_iters=2,
                             scaling_ns=(100, 200, 400), scaling_iters=4,
                             scaling_float32_n=800, sparse_alphas=(0.1, 0.25)),
}


def _mem_available() -> int:
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:  # pragma: no cover - non-Linux
        pass
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_AVPHYS_PAGES"))
    except (ValueError, OSError, AttributeError):  # pragma: no cover
        return 8 << 30


def _fits(n: int, itemsize: int) -> bool:
    """Whether an ``n^3`` tensor and the solvers' workspace fit in memory."""
    return 2.5 * n**3 * itemsize < _mem_available()


def dense_problem(n: int, rank: int, sigma: float, gen: np.random.Generator,
                  dtype: Any = np.float64) -> np.ndarray:
    """``n^3`` CP tensor with Gaussian factors plus relative Gaussian noise ``sigma``.

    Built slice by slice in ``dtype`` (one tensor-sized allocation), so that
    large ``n`` fit in memory; ``||noise|| / ||signal|| ≈ sigma``.
    """
    A, Bm, C = (gen.standard_normal((n, rank)) for _ in range(3))
    w = 1.0 + gen.random(rank)
    KR = tf.khatri_rao([Bm, C])  # (n^2, R)
    X = np.empty((n, n * n), dtype=dtype)
    step = max(1, (1 << 24) // (n * n))
    sq = 0.0
    for i in range(0, n, step):
        X[i:i + step] = (A[i:i + step] * w) @ KR.T
        sq += float(np.sum(X[i:i + step].astype(np.float64) ** 2))
    scale = sigma * math.sqrt(sq / n**3)
    for i in range(0, n, step):
        X[i:i + step] += (scale * gen.standard_normal((min(step, n - i), n * n))).astype(dtype)
    return X.reshape(n, n, n)


def _shared_init(X: Any, rank: int, seed: int) -> Any:
    """Random Gaussian initial factors shared by every method.

    (An SVD-type start is deterministic and, on these Gaussian problems, can
    lead exact ALS to a spurious stationary point; a seeded random start is
    what the paper's experiments use and treats all methods alike.)
    """
    gen = np.random.default_rng(seed + 1000)
    dt = np.dtype(X.dtype)
    return tf.CPTensor([gen.standard_normal((s, rank)).astype(dt) for s in X.shape])


def _sparse_init(X: Any, rank: int, seed: int) -> Any:
    """Range-finder initial factors of a sparse tensor, shared by every method.

    A random start makes every fiber about equally likely to be sampled, and
    almost all fibers of a sparse tensor are empty; instead each factor is an
    orthonormal basis of ``X_(n) (G_1 ⊙ G_2)`` for Gaussian ``G`` (one sparse
    MTTKRP per mode), which puts the leverage on the rows that hold data.
    """
    gen = np.random.default_rng(seed + 1000)
    G = [gen.standard_normal((s, rank)) for s in X.shape]
    factors = []
    for n in range(X.ndim):
        Y = np.asarray(tf.mttkrp(X, G, n))
        Q, _ = np.linalg.qr(Y + 1e-12 * gen.standard_normal(Y.shape))
        factors.append(Q)
    return tf.CPTensor(factors)


def _residual_norm_sq(X: Any, cp: Any, normX2: float) -> float:
    """Exact ``||X - cp||^2 = ||X||^2 - 2 <X, cp> + ||cp||^2`` (dense or sparse ``X``).

    The inner product is one MTTKRP and ``||cp||`` comes from the factors'
    Gram matrices, so neither ``cp`` nor a sparse ``X`` is densified.
    """
    cp = tf.CPTensor(cp)
    factors = list(cp.factors)
    M = np.asarray(tf.mttkrp(X, factors, 0), dtype=np.float64)
    inner = float(np.sum(M * np.asarray(factors[0]) * np.asarray(cp.weights)[None, :]))
    return max(normX2 - 2.0 * inner + float(cp.norm()) ** 2, 0.0)


def _exact_rel_error(X: Any, cp: Any, normX2: float) -> float:
    return math.sqrt(_residual_norm_sq(X, cp, normX2) / normX2)


class _Trace:
    """Callback recording the exact error every few sweeps, excluding its own cost."""

    def __init__(self, X: Any, normX2: float, last: int, points: int = 6) -> None:
        self.X, self.normX2, self.last = X, normX2, last
        self.every = max(1, last // points)
        self.iters: list[int] = []
        self.errors: list[float] = []
        self.spent: list[float] = []

    def __call__(self, it: int, cp: Any, rel: float) -> bool:
        t0 = time.perf_counter()
        if it == 1 or it % self.every == 0 or it == self.last:
            self.iters.append(it)
            self.errors.append(_exact_rel_error(self.X, cp, self.normX2))
        self.spent.append(time.perf_counter() - t0)
        return False

    def times(self, raw: tuple[float, ...]) -> list[float]:
        """Elapsed times with the callback's own time removed."""
        out, removed = [], 0.0
        for t, s in zip(raw, self.spent):
            out.append(t - removed)
            removed += s
        return out

    def curve(self, times: list[float]) -> dict[str, list[float]]:
        """Time and exact error at the evaluated sweeps."""
        return dict(curve_time=[times[i - 1] for i in self.iters], curve_error=self.errors)


def _per_iter(times: list[float]) -> float:
    """Median seconds per sweep from cumulative times."""
    if not times:
        return float("nan")
    steps = [times[0]] + [b - a for a, b in zip(times[:-1], times[1:])]
    return float(statistics.median(steps))


def _pin(threads: int) -> Any:
    from threadpoolctl import threadpool_limits

    try:
        import numba

        numba.set_num_threads(min(threads, int(getattr(numba.config, "NUMBA_NUM_THREADS", 1))))
    except Exception:  # pragma: no cover - numba missing
        pass
    return threadpool_limits(limits=threads)


def _dense_experiment(cfg: ReproduceConfig, seed: int, bar: Any, notes: list[str],
                      n: int) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    for k, sigma in enumerate(cfg.sigmas):
        gen = np.random.default_rng(seed + k)
        X = dense_problem(n, cfg.rank, sigma, gen)
        normX2 = float(np.vdot(X, X))
        init = _shared_init(X, cfg.rank, seed)
        tr = _Trace(X, normX2, cfg.iters)
        res = tf.cp_als(X, cfg.rank, init=init, max_iter=cfg.iters, tol=0.0, callback=tr)
        als_t = tr.times(res.history.time)
        rows.append(dict(experiment="dense", n=n, sigma=sigma, method="ALS (tensorfact)",
                         time_per_iter=_per_iter(als_t), rel_error=res.rel_error,
                         n_iter=res.n_iter, **tr.curve(als_t)))
        bar.update(1)
        for alpha in cfg.alphas:
            tr = _Trace(X, normX2, cfg.iters)
            r = tf.spals(X, cfg.rank, init=init, alpha=alpha, max_iter=cfg.iters, rng=seed,
                         callback=tr)
            t = tr.times(r.history.time)
            rows.append(dict(experiment="dense", n=n, sigma=sigma,
                             method=f"SPALS alpha={alpha:g}", alpha=alpha,
                             n_samples=tf.spals_sample_count((n, n, n), cfg.rank, 0, alpha=alpha),
                             time_per_iter=_per_iter(t), rel_error=tr.errors[-1],
                             rel_error_estimate=r.rel_error, n_iter=r.n_iter,
                             **tr.curve(t)))
            bar.update(1)
        rows.append(_tensorly_row(X, cfg, init, seed, normX2, n, sigma, notes))
        bar.update(1)
        del X
    return rows


def _tensorly_row(X: np.ndarray, cfg: ReproduceConfig, init: Any, seed: int, normX2: float,
                  n: int, sigma: float, notes: list[str]) -> dict[str, Any]:
    row: dict[str, Any] = dict(experiment="dense", n=n, sigma=sigma,
                               method="TensorLy randomised_parafac (uniform)")
    try:
        from tensorly.decomposition import randomised_parafac
    except ImportError:  # pragma: no cover - optional peer
        notes.append("tensorly not installed: randomised_parafac skipped")
        row.update(time_per_iter=float("nan"), rel_error=float("nan"))
        return row
    n_samples = tf.spals_sample_count((n, n, n), cfg.rank, 0, alpha=cfg.alphas[-1])
    t0 = time.perf_counter()
    cp = randomised_parafac(X, cfg.rank, n_samples, n_iter_max=cfg.iters, init=init.to_tensorly(),
                            tol=0.0, max_stagnation=0, random_state=seed, sampling="uniform")
    elapsed = time.perf_counter() - t0
    w, f = cp
    err = math.sqrt(max(_tl_resid(X, w, f, normX2), 0.0) / normX2)
    row.update(time_per_iter=elapsed / cfg.iters, rel_error=err, n_samples=n_samples,
               n_iter=cfg.iters, curve_time=[elapsed], curve_error=[err])
    return row


def _tl_resid(X: np.ndarray, w: Any, f: Any, normX2: float) -> float:
    cp = tf.CPTensor([np.asarray(a, dtype=X.dtype) for a in f],
                     weights=np.asarray(w, dtype=X.dtype))
    return _residual_norm_sq(X, cp, normX2)


def _sparse_experiment(cfg: ReproduceConfig, seed: int, bar: Any,
                       notes: list[str]) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    t0 = time.perf_counter()
    X, _ = planted_sparse_cp(cfg.sparse_shape, cfg.rank, cfg.sparse_nnz, noise=0.1, skew=1.0,
                             exact=True, rng=seed)
    info = dict(shape=list(cfg.sparse_shape), nnz=int(X.nnz), requested_nnz=cfg.sparse_nnz,
                generate_seconds=time.perf_counter() - t0, noise=0.1, skew=1.0)
    normX2 = float(X.norm()) ** 2
    init = _sparse_init(X, cfg.rank, seed)
    rows: list[dict[str, Any]] = []
    tf.cp_als(X, cfg.rank, init=init, max_iter=1, tol=0.0)  # numba compilation / fiber index
    tr = _Trace(X, normX2, cfg.sparse_als_iters)
    res = tf.cp_als(X, cfg.rank, init=init, max_iter=cfg.sparse_als_iters, tol=0.0, callback=tr)
    t = tr.times(res.history.time)
    rows.append(dict(experiment="sparse", method="sparse ALS (tensorfact)",
                     time_per_iter=_per_iter(t), rel_error=res.rel_error, n_iter=res.n_iter,
                     **tr.curve(t)))
    bar.update(1)
    tf.spals(X, cfg.rank, init=init, max_iter=1, rng=seed)  # warm the fiber indices
    for alpha in cfg.sparse_alphas:
        tr = _Trace(X, normX2, cfg.sparse_spals_iters)
        r = tf.spals(X, cfg.rank, init=init, alpha=alpha, max_iter=cfg.sparse_spals_iters,
                  rng=seed, callback=tr)
        t = tr.times(r.history.time)
        rows.append(dict(experiment="sparse", method=f"SPALS alpha={alpha:g}", alpha=alpha,
                         n_samples=tf.spals_sample_count(cfg.sparse_shape, cfg.rank, 0,
                                                         alpha=alpha),
                         time_per_iter=_per_iter(t), rel_error=tr.errors[-1],
                         rel_error_estimate=r.rel_error, n_iter=r.n_iter,
                         **tr.curve(t)))
        bar.update(1)
    rows.append(_pyttb_row(X, cfg, init, normX2, notes))
    bar.update(1)
    return rows, info


def _pyttb_row(X: Any, cfg: ReproduceConfig, init: Any, normX2: float,
               notes: list[str]) -> dict[str, Any]:
    import contextlib
    import io

    row: dict[str, Any] = dict(experiment="sparse", method="pyttb cp_als (sptensor)")
    try:
        import pyttb
    except ImportError:  # pragma: no cover - optional peer
        notes.append("pyttb not installed: skipped")
        row.update(time_per_iter=float("nan"), rel_error=float("nan"))
        return row
    coords = np.asarray(X.coords, dtype=np.int64)
    vals = np.asarray(X.values, dtype=np.float64).reshape(-1, 1)
    T = pyttb.sptensor(coords, vals, tuple(X.shape), copy=False)
    K0 = pyttb.ktensor([np.asarray(a) for a in init.factors], np.asarray(init.weights))
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        M, _, out = pyttb.cp_als(T, cfg.rank, maxiters=cfg.pyttb_iters, stoptol=0.0, init=K0,
                                 printitn=0)
    elapsed = time.perf_counter() - t0
    w = np.asarray(M.weights)
    f = [np.asarray(a) for a in M.factor_matrices]
    err = _exact_rel_error(X, tf.CPTensor(f, weights=w), normX2)
    row.update(time_per_iter=elapsed / cfg.pyttb_iters, rel_error=err, n_iter=cfg.pyttb_iters,
               curve_time=[elapsed], curve_error=[err])
    return row


def _scaling_experiment(cfg: ReproduceConfig, seed: int, bar: Any,
                        notes: list[str]) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    alpha = cfg.alphas[min(1, len(cfg.alphas) - 1)]
    sizes: list[tuple[int, Any]] = [(n, np.float64) for n in cfg.scaling_ns]
    if cfg.scaling_float32_n is not None:
        n32 = cfg.scaling_float32_n
        if _fits(n32, 4):
            sizes.append((n32, np.float32))
        else:
            notes.append(f"scaling: n={n32} float32 skipped (needs about "
                         f"{2.5 * n32**3 * 4 / 2**30:.1f} GiB, "
                         f"{_mem_available() / 2**30:.1f} GiB available)")
    for n, dt in sizes:
        gen = np.random.default_rng(seed)
        X = dense_problem(n, cfg.rank, 0.1, gen, dtype=dt)
        init = _shared_init(X, cfg.rank, seed)
        res = tf.cp_als(X, cfg.rank, init=init, max_iter=cfg.scaling_iters, tol=0.0)
        r = tf.spals(X, cfg.rank, init=init, alpha=alpha, max_iter=cfg.scaling_iters, rng=seed)
        rows.append(dict(experiment="scaling", n=n, dtype=np.dtype(dt).name, alpha=alpha,
                         als_time_per_iter=_per_iter(list(res.history.time)),
                         spals_time_per_iter=_per_iter(list(r.history.time))))
        bar.update(1)
        del X
    return rows


def run_spals_reproduction(scale: str = "quick", out: str | os.PathLike[str] | None = None, *,
                           seed: int = 0, threads: int = 1, progress: bool = True,
                           experiments: tuple[str, ...] = ("dense", "sparse", "scaling"),
                           ) -> dict[str, Any]:
    """Run the SPALS reproduction at ``scale``; write JSON + PNGs to ``out``.

    Parameters
    ----------
    scale : {"tiny", "quick", "default", "paper"}
        Problem sizes, see :data:`SCALES`.
    out : path, optional
        Output folder (created if needed); default ``./spals_reproduce``.
    seed : int
        Seed of the problems, the shared initial factors and the samplers.
    threads : int
        BLAS and Numba threads during the run.
    progress : bool
        Show a progress bar.
    experiments : tuple of {"dense", "sparse", "scaling"}
        Which experiments to run.

    Returns
    -------
    dict
        What was written to ``spals_<scale>.json`` (rows, summary ratios under
        ``"acceptance"``, notes, machine) plus its path under ``"json"``.

    Raises
    ------
    ValueError
        Unknown ``scale`` or experiment name.
    """
    if scale not in SCALES:
        raise ValueError(f"scale must be one of {sorted(SCALES)}, got {scale!r}")
    bad = set(experiments) - {"dense", "sparse", "scaling"}
    if bad:
        raise ValueError(f"unknown experiments {sorted(bad)}")
    cfg = SCALES[scale]
    notes: list[str] = []
    n = cfg.n
    if scale == "paper" and not _fits(n, 8):
        fallback = next(m for m in (800, 600, 400) if _fits(m, 8))
        notes.append(f"paper scale: n={n} float64 needs about {2.5 * n**3 * 8 / 2**30:.0f} GiB, "
                     f"{_mem_available() / 2**30:.1f} GiB available; using n={fallback}")
        n = fallback
    out_dir = Path(out) if out is not None else Path.cwd() / "spals_reproduce"
    out_dir.mkdir(parents=True, exist_ok=True)
    from tqdm.auto import tqdm

    total = 0
    if "dense" in experiments:
        total += len(cfg.sigmas) * (2 + len(cfg.alphas))
    if "sparse" in experiments:
        total += 2 + len(cfg.sparse_alphas)
    if "scaling" in experiments:
        total += len(cfg.scaling_ns) + (cfg.scaling_float32_n is not None)
    t_start = time.perf_counter()
    rows: list[dict[str, Any]] = []
    sparse_info: dict[str, Any] = {}
    with _pin(threads), tqdm(total=total, desc=f"spals reproduce ({scale})",
                             disable=not progress) as bar:
        if "dense" in experiments:
            rows += _dense_experiment(cfg, seed, bar, notes, n)
        if "sparse" in experiments:
            srows, sparse_info = _sparse_experiment(cfg, seed, bar, notes)
            rows += srows
        if "scaling" in experiments:
            rows += _scaling_experiment(cfg, seed, bar, notes)
    result: dict[str, Any] = dict(
        scale=scale, config=asdict(cfg), dense_n=n, seed=seed, threads=threads,
        total_seconds=time.perf_counter() - t_start, rows=rows, sparse=sparse_info,
        acceptance=summary_ratios(rows), notes=notes,
        machine=dict(platform=platform.platform(), processor=platform.processor(),
                     cpus=os.cpu_count(), numpy=np.__version__),
    )
    try:
        import resource

        result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    except ImportError:  # pragma: no cover - non-Unix
        result["peak_rss_mib"] = float("nan")
    result["table_markdown"] = format_table(rows)
    result["plots"] = plot_results(rows, out_dir, scale)
    path = out_dir / f"spals_{scale}.json"
    path.write_text(json.dumps(result, indent=1, default=float))
    result["json"] = str(path)
    print_report(result, out_dir)
    return result


# --------------------------------------------------------------------------- #
# CLI
# --------------------------------------------------------------------------- #
def add_reproduce_parser(sub: Any) -> None:
    """Add ``tensorfact reproduce spals`` to an argparse subparsers object."""
    p = sub.add_parser("reproduce", help="reproduce published experiments")
    rsub = p.add_subparsers(dest="experiment")
    s = rsub.add_parser("spals", help="SPALS timing experiments (Cheng et al., NeurIPS 2016)")
    s.add_argument("--scale", default="quick", choices=["tiny", "quick", "default", "paper"],
                   help="problem sizes: quick (< 2 min), default (n=400, 1e7 nonzeros), "
                        "paper (n=1000 when memory allows); tiny is for tests")
    s.add_argument("--out", default=None, help="output directory (default ./spals_reproduce)")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--threads", type=int, default=1, help="BLAS/Numba threads (default 1)")
    s.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s.set_defaults(func=_cmd_reproduce_spals)
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])


def _cmd_reproduce_spals(args: Any) -> int:
    run_spals_reproduction(args.scale, args.out, seed=args.seed, threads=args.threads,
                           progress=not args.no_progress)
    return 0
