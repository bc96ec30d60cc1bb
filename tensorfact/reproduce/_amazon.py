"""The Amazon-shaped experiment: exact sparse ALS vs SPALS on a planted store on disk.

The tensor is written by `tensorfact.datasets.planted_sparse_store`
into ``<out>/amazon_store`` and read through
`tensorfact.formats.DaskSparseTensor`; both methods start from one
shared range-finder start and follow the reproduction's convergence test,
SPALS with the exact error every ``cfg.amazon_exact_every`` sweeps (one pass
over the store each, excluded from its time and from its bytes read).
"""

from __future__ import annotations

import json
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np

import tensorfact as tf

from ._problems import noise_floor, sketch_init
from ._runs import Protocol, run_method

__all__ = ["amazon_experiment"]

_NEEDS = (("datasets", "planted_sparse_store"), ("formats", "DaskSparseTensor"))


def _public(module: str, name: str) -> Any:
    mod = getattr(tf, module)
    if name not in getattr(mod, "__all__", ()):
        raise RuntimeError(
            f"the amazon scale needs tensorfact.{module}.{name}, which this installation "
            f"does not provide (tensorfact.{module}.__all__ lacks it)")
    return getattr(mod, name)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _open_or_build(cfg: Any, seed: int, out: Path, notes: list[str]) -> tuple[Any, Any, float]:
    """The store under ``out`` (reused when built with the same parameters) and the plant."""
    planted_sparse_store = _public("datasets", "planted_sparse_store")
    DaskSparseTensor = _public("formats", "DaskSparseTensor")
    store, plant = out / "amazon_store", out / "amazon_plant.npz"
    params = json.dumps(dict(shape=list(cfg.amazon_shape), rank=cfg.rank, nnz=cfg.amazon_nnz,
                             noise=cfg.sparse_noise, skew=cfg.sparse_skew, seed=seed))
    t0 = time.perf_counter()
    if plant.exists() and store.exists():
        with np.load(plant, allow_pickle=False) as f:
            if str(f["params"]) == params:
                truth = tf.CPTensor([f[f"factor_{m}"] for m in range(len(cfg.amazon_shape))],
                                    weights=f["weights"])
                notes.append(f"amazon: reused the store {store} (same parameters)")
                return DaskSparseTensor(store), truth, time.perf_counter() - t0
        raise RuntimeError(f"{store} was built with other parameters; remove it and "
                           f"{plant} to rebuild")
    X, truth = planted_sparse_store(store, cfg.amazon_shape, cfg.rank, cfg.amazon_nnz,
                                    noise=cfg.sparse_noise, skew=cfg.sparse_skew, exact=True,
                                    rng=np.random.default_rng((seed, 10)))
    weights, factors = truth
    arrays = {f"factor_{m}": np.asarray(a) for m, a in enumerate(factors)}
    np.savez(plant, params=np.array(params), weights=np.asarray(weights),
             **arrays)  # type: ignore[arg-type]
    return X, truth, time.perf_counter() - t0


def amazon_experiment(cfg: Any, seed: int, out: Path, notes: list[str], bar: Any
                      ) -> dict[str, Any]:
    """Exact sparse ALS vs SPALS on the store: time and bytes read per sweep, fit, RSS."""
    X, truth, build = _open_or_build(cfg, seed, out, notes)
    norm_sq = X.norm_sq()
    floor = noise_floor(X, truth, norm_sq)
    del truth
    t0 = time.perf_counter()
    init = sketch_init(X, cfg.rank, (seed, 11))
    init_seconds = time.perf_counter() - t0
    runs = []
    methods: list[tuple[str, str, float | None]] = [("sparse ALS", "als", None)]
    methods += [(f"sparse SPALS alpha={a:g}", "spals", a) for a in cfg.amazon_alphas]
    for label, method, alpha in methods:
        protocol = Protocol(rtol=cfg.rtol, patience=cfg.patience,
                            max_iter=cfg.amazon_max_iter[method],
                            every=cfg.amazon_exact_every)
        rec, _ = run_method(X, X, norm_sq, cfg.rank, method, protocol=protocol, init=init,
                            rng=np.random.default_rng((seed, 12)), alpha=alpha,
                            counter=lambda: X.bytes_read)
        rec.update(method=label, alpha=alpha, init="shared sketch", peak_rss_mib=_peak_rss_mib(),
                   n_samples=(None if alpha is None else
                              tf.spals_sample_count(tuple(X.shape), cfg.rank, 0, alpha=alpha)))
        runs.append(rec)
        bar.update(1)
    return dict(shape=list(X.shape), nnz=int(X.nnz), rank=cfg.rank, noise=cfg.sparse_noise,
                skew=cfg.sparse_skew, noise_floor=floor, store=str(X.store),
                store_bytes=int(X.store_nbytes), build_seconds=build, init_seconds=init_seconds,
                exact_every=cfg.amazon_exact_every, runs=runs)
