"""The dense, sparse and scaling experiments of the SPALS reproduction."""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np

import tensorfact as tf
from tensorfact.datasets import planted_sparse_cp

from ._problems import dense_problem, noise_floor, random_init, sketch_init
from ._runs import Protocol, annotate, run_method, summarise

__all__ = ["dense_experiment", "scaling_experiment", "sparse_experiment"]


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() or c == "." else "_" for c in text)


def _compare(X: Any, rank: int, methods: list[tuple[str, str, float | None]],
             inits: list[tuple[str, int, Any]], own: dict[str, str], protocol: Protocol,
             seed: int, prefix: str, models: dict[str, Any], bar: Any,
             extra: dict[str, Any]) -> list[dict[str, Any]]:
    """Every method from every shared init, then from its own default init.

    The methods are interleaved per init, so that a drift of the machine's
    load affects them alike.
    """
    fmt = tf.as_format(X, check_finite=False)
    norm_sq = fmt.norm_sq()
    starts = [(kind, s, init) for kind, s, init in inits] + [("own", 0, None)]
    runs: list[dict[str, Any]] = []
    for kind, s, init in starts:
        for label, method, alpha in methods:
            start = own[method] if init is None else init
            init_label = f"own ({own[method]})" if init is None else kind
            rng = np.random.default_rng((seed, 3, s, 0 if init is None else 1))
            rec, cp = run_method(X, fmt, norm_sq, rank, method, protocol=protocol,
                                 init=start, rng=rng, alpha=alpha)
            key = _slug(f"{prefix}__{label}__{init_label}{s if init is not None else ''}")
            models[key] = cp
            rec.update(extra, method=label, alpha=alpha, init=init_label, seed=s, model=key,
                       n_samples=(None if alpha is None else
                                  tf.spals_sample_count(tuple(X.shape), rank, 0, alpha=alpha)))
            runs.append(rec)
            bar.update(1)
    return runs


def _warm_up(X: Any, rank: int, alpha: float) -> None:
    """One sweep of each solver: compilation, caches and fiber indexes before timing."""
    tf.cp_als(X, rank, init="random", max_iter=1, tol=0.0, rng=0)
    tf.spals(X, rank, init="random", alpha=alpha, max_iter=1, rng=0, exact_fit_every=1)


def dense_experiment(cfg: Any, n: int, seed: int, protocol: Protocol, models: dict[str, Any],
                     bar: Any) -> list[dict[str, Any]]:
    """Exact ALS and SPALS at ``cfg.alphas`` on ``n^3`` tensors, one block per sigma."""
    methods: list[tuple[str, str, float | None]] = [("exact ALS", "als", None)]
    methods += [(f"SPALS alpha={a:g}", "spals", a) for a in cfg.alphas]
    blocks = []
    for k, sigma in enumerate(cfg.sigmas):
        t0 = time.perf_counter()
        X, truth = dense_problem(n, cfg.rank, sigma, (seed, 1, k))
        fmt = tf.as_format(X, check_finite=False)
        norm_sq = fmt.norm_sq()
        floor = noise_floor(fmt, truth, norm_sq)
        del truth, fmt
        build = time.perf_counter() - t0
        if k == 0:
            _warm_up(X, cfg.rank, cfg.alphas[0])
        inits = [("shared random", s, random_init(X.shape, cfg.rank, (seed, 2, s), X.dtype))
                 for s in range(cfg.seeds)]
        runs = _compare(X, cfg.rank, methods, inits, {"als": "svd", "spals": "random"},
                        protocol, seed, f"dense_sigma{sigma:g}", models, bar,
                        dict(experiment="dense", sigma=sigma))
        best = annotate(runs, floor)
        blocks.append(dict(sigma=sigma, shape=[n, n, n], rank=cfg.rank, noise_floor=floor,
                           best_final_error=best, build_seconds=build, runs=runs,
                           summary=summarise(runs)))
        del X
    return blocks


def sparse_experiment(cfg: Any, seed: int, protocol: Protocol, models: dict[str, Any],
                      bar: Any) -> dict[str, Any]:
    """Sparse ALS and SPALS at ``cfg.sparse_alphas`` on a planted skewed sparse tensor."""
    t0 = time.perf_counter()
    X, truth = planted_sparse_cp(cfg.sparse_shape, cfg.rank, cfg.sparse_nnz,
                                 noise=cfg.sparse_noise, skew=cfg.sparse_skew, exact=True,
                                 rng=np.random.default_rng((seed, 5)))
    build = time.perf_counter() - t0
    fmt = tf.as_format(X, check_finite=False)
    norm_sq = fmt.norm_sq()
    floor = noise_floor(fmt, truth, norm_sq)
    del truth
    _warm_up(X, cfg.rank, cfg.sparse_alphas[0])
    methods: list[tuple[str, str, float | None]] = [("sparse ALS", "als", None)]
    methods += [(f"sparse SPALS alpha={a:g}", "spals", a) for a in cfg.sparse_alphas]
    inits = [("shared sketch", s, sketch_init(X, cfg.rank, (seed, 6, s)))
             for s in range(cfg.seeds)]
    runs = _compare(X, cfg.rank, methods, inits, {"als": "svd", "spals": "svd"}, protocol,
                    seed, "sparse", models, bar, dict(experiment="sparse"))
    best = annotate(runs, floor)
    return dict(shape=list(cfg.sparse_shape), nnz=int(X.nnz), requested_nnz=cfg.sparse_nnz,
                rank=cfg.rank, noise=cfg.sparse_noise, skew=cfg.sparse_skew, noise_floor=floor,
                best_final_error=best, build_seconds=build, runs=runs, summary=summarise(runs))


def _per_sweep(history_time: tuple[float, ...]) -> float:
    t = list(history_time)
    return float(statistics.median([t[0]] + [b - a for a, b in zip(t[:-1], t[1:])]))


def scaling_experiment(cfg: Any, seed: int, sizes: list[tuple[int, Any]], bar: Any
                       ) -> dict[str, Any]:
    """Median time per sweep of exact ALS and SPALS (``cfg.scaling_alpha``) as ``n`` grows.

    A fixed number of sweeps from one shared random start, no callback: this
    measures the cost of a sweep, not convergence.
    """
    alpha = cfg.scaling_alpha
    rows = []
    for n, dt in sizes:
        X, _ = dense_problem(n, cfg.rank, 0.1, (seed, 7, n), dtype=dt)
        init = random_init(X.shape, cfg.rank, (seed, 8), X.dtype)
        res = tf.cp_als(X, cfg.rank, init=init, max_iter=cfg.scaling_iters, tol=0.0)
        r = tf.spals(X, cfg.rank, init=init, alpha=alpha, max_iter=cfg.scaling_iters,
                     rng=np.random.default_rng((seed, 9, n)))
        als, sp = _per_sweep(res.history.time), _per_sweep(r.history.time)
        rows.append(dict(n=n, dtype=np.dtype(dt).name, als_time_per_iter=als,
                         spals_time_per_iter=sp, speedup=als / sp,
                         n_samples=tf.spals_sample_count((n, n, n), cfg.rank, 0, alpha=alpha)))
        bar.update(1)
        del X
    return dict(alpha=alpha, rank=cfg.rank, sigma=0.1, iters=cfg.scaling_iters, rows=rows)
