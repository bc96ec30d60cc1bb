"""Benchmark: exact sparse ALS and SPALS out of core, on a planted Amazon-shaped store.

A planted rank-10 sparse CP tensor with the shape of the Amazon review tensor
of the SPALS paper (FROSTT version: 4821207 x 1774269 x 1805187) and ``--nnz``
nonzeros (default 2 * 10^8, relative noise 0.1) is written to disk as a
``DaskSparseTensor`` store by ``tensorfact.datasets.planted_sparse_store``
(partition by partition, never in memory), unless the store folder already
holds it. Then, from the same initial factors (``--init svd``, the default: the
range-finder sketch of ``cp_als``'s ``init="svd"``, computed once; or
``--init random``):

(``--exact``: an exactly low-rank plant with sparse factor columns instead of
power-law positions, so that the fit can approach 1 - noise.)

- **exact sparse ALS** (``cp_als``) until the change of its exact relative
  error falls below ``--tol`` (at most ``--max-iter`` sweeps), and **SPALS**
  (``spals``, default sample counts) for ``--iters`` sweeps, then again from
  where it stopped for ``--iters`` more (a fit that no longer moves between
  the two is converged), each on the local threaded Dask scheduler;
- the first ``--cluster-iters`` sweeps of each on a ``distributed.LocalCluster``
  (``--workers`` processes of ``--threads-per-worker`` threads; skip with
  ``--no-cluster``), from the same initial factors: the same factors, so the
  same fit as the threaded runs after as many sweeps.

Measured per run: wall time per sweep (from ``CPALSResult.history.time``),
the exact fit ``1 - ||X - model|| / ||X||`` (ALS: after every sweep, from its
MTTKRP; SPALS: one exact residual pass at the end, timed separately), the
bytes of array data read from the store per sweep (``DaskSparseTensor.bytes_read``:
ALS per sweep from a callback; SPALS the run's total over its sweeps, since a
callback would make it build the dense factors every sweep), against the size
of the store, the peak RSS of the process that ran it (every run is a fresh
process; the cluster runs also report each worker's peak RSS) and, on the
cluster, the bytes the workers sent to each other (``distributed``'s
``transfer_outgoing_bytes_total``). Numba kernels are compiled (or loaded from
the cache) on a tiny store first, outside the timings.

The default store folder, ``build/sparse_store/`` at the repository root, is
git-ignored. At the default size the store takes about 16 GB of disk (80 bytes
per nonzero: 20 in the primary partitions, 20 per mode in the fiber indexes) and
the build tens of minutes; ``--nnz 100000 --shape 20000,8000,8000 --iters 2``
checks that the script works in seconds.

Results: ``benchmarks/results/sparse_store[_<tag>].json`` and a table.
"""

from __future__ import annotations

import _common  # noqa: I001  (must come first: pins BLAS threads before NumPy loads)

N_THREADS = _common.pin_threads()

import argparse  # noqa: E402
import concurrent.futures as cf  # noqa: E402
import json  # noqa: E402
import math  # noqa: E402
import multiprocessing  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import numpy as np  # noqa: E402

AMAZON_SHAPE = (4821207, 1774269, 1805187)
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_STORE_DIR = ROOT / "build" / "sparse_store"


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _spawn(fn: Any, *args: Any) -> Any:
    """Run ``fn(*args)`` in a fresh process (its own peak RSS), return its result."""
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=1, mp_context=ctx) as ex:
        return ex.submit(fn, *args).result()


# --------------------------------------------------------------------------- #
# the store
# --------------------------------------------------------------------------- #
def _build(store: str, shape: tuple[int, ...], rank: int, nnz: int, partition_nnz: int,
           seed: int, exact: bool) -> dict[str, Any]:
    from tensorfact.datasets import planted_sparse_store

    t0 = time.perf_counter()
    X, _ = planted_sparse_store(store, shape, rank, nnz, noise=0.1, exact=exact, rng=seed,
                                partition_nnz=partition_nnz, progress=True)
    return {"build_s": time.perf_counter() - t0, "build_peak_rss_bytes": _peak_rss_bytes(),
            "nnz": X.nnz}


def ensure_store(store: Path, shape: tuple[int, ...], rank: int, nnz: int, partition_nnz: int,
                 seed: int, exact: bool) -> dict[str, Any]:
    """Open the store, building it first (in a child process) when absent."""
    from tensorfact.formats import DaskSparseTensor

    info: dict[str, Any] = {"built_now": False}
    if not (store / "meta.json").exists():
        print(f"building {store} ({nnz} nonzeros, shape {shape}) ...", flush=True)
        info.update(_spawn(_build, str(store), shape, rank, nnz, partition_nnz, seed, exact))
        info["built_now"] = True
    X = DaskSparseTensor(store)
    if X.shape != shape:
        raise SystemExit(f"{store} holds a tensor of shape {X.shape}, not {shape}; "
                         "choose another --store")
    info.update(store=store.name, exact=exact, shape=list(X.shape), nnz=X.nnz,
                npartitions=X.npartitions,
                store_bytes=X.store_nbytes, primary_bytes=X.primary_nbytes)
    return info


# --------------------------------------------------------------------------- #
# one run (in its own process)
# --------------------------------------------------------------------------- #
def _warm_up_kernels(like_shape: tuple[int, ...]) -> None:
    """Compile or load the Numba kernels on a tiny store with the same dtypes."""
    from tensorfact.formats import DaskSparseTensor, SparseTensor
    from tensorfact.formats.dask_sparse._store import index_dtype_for

    wide = index_dtype_for(like_shape) != np.int32
    shape = (2**31, 30, 20) if wide else (40, 30, 20)  # int64 or int32 coordinates
    rng = np.random.default_rng(0)
    S = SparseTensor(np.stack([rng.integers(0, d, 200) for d in shape], 1),
                     rng.standard_normal(200), shape)
    with tempfile.TemporaryDirectory() as d:
        X = DaskSparseTensor.from_sparse(S, Path(d) / "w", 2)
        F = [np.ones((s, 2)) for s in shape]
        X.mttkrp(F, 0)
        X.residual_norm_sq(np.ones(2), F)
        X.sampled_fibers(0, np.zeros((1, 2), dtype=np.int64))


def _make_init(store: str, rank: int, kind: str, seed: int, path: str) -> dict[str, Any]:
    """Write the shared initial factors to ``path`` (npz); returns the time taken."""
    from tensorfact.decomposition._cp_als import initial_factors
    from tensorfact.formats import DaskSparseTensor

    X = DaskSparseTensor(store)
    _warm_up_kernels(X.shape)
    t0 = time.perf_counter()
    F = initial_factors(X, rank, kind, np.random.default_rng(seed))
    took = time.perf_counter() - t0
    np.savez(path, *F)
    return {"init": kind, "init_s": took, "init_peak_rss_bytes": _peak_rss_bytes()}


def _run(store: str, method: str, rank: int, iters: int, tol: float, seed: int,
         cluster: dict | None, init_path: str, first: int = 0,
         model_path: str | None = None) -> dict[str, Any]:
    from tensorfact import CPTensor, cp_als, spals
    from tensorfact.formats import DaskSparseTensor

    X = DaskSparseTensor(store)
    _warm_up_kernels(X.shape)
    with np.load(init_path, allow_pickle=False) as z:
        init = CPTensor([z[k] for k in z.files])
    client = None
    if cluster is not None:
        from distributed import Client, LocalCluster

        lc = LocalCluster(n_workers=cluster["workers"], processes=True,
                          threads_per_worker=cluster["threads_per_worker"],
                          dashboard_address=None)
        client = Client(lc)
        client.run(_warm_up_kernels, X.shape)
    try:
        normX2 = X.norm_sq()
        X.check_finite()
        per_bytes: list[int] = []
        X.reset_bytes_read()

        def count(it: int, cp: Any, rel: float) -> None:
            per_bytes.append(X.reset_bytes_read())

        sent0 = _sent(client)
        out: dict[str, Any] = {"method": method,
                               "scheduler": "threads" if cluster is None else "LocalCluster"}
        if method == "als":
            res = cp_als(X, rank, init=init, max_iter=iters, tol=tol, callback=count)
            out["fit_history"] = [1.0 - e for e in res.history.rel_error]
            fit = 1.0 - res.rel_error
            exact_s, exact_bytes = 0.0, 0
            times = list(res.history.time)
        else:
            def exact_fit(cp: Any) -> tuple[float, float, int]:
                t0 = time.perf_counter()
                resid = X.residual_norm_sq(cp.weights, list(cp.factors))
                took = time.perf_counter() - t0
                return 1.0 - math.sqrt(max(resid, 0.0) / normX2), took, X.reset_bytes_read()

            # segments of sweeps, an exact fit after each: the first `first`
            # sweeps (compared with the cluster run), the rest of the first
            # half, and a second half from where it stopped
            if cluster is not None:
                segments = [iters]
            else:
                segments = [first, iters - first, iters] if first else [iters, iters]
            cp, times, per_bytes, fits = init, [], [], []
            for k, n_sweeps in enumerate(s for s in segments if s > 0):
                res = spals(X, rank, init=cp, max_iter=n_sweeps, tol=0, rng=seed + k)
                per_bytes += [X.reset_bytes_read() // max(res.n_iter, 1)] * res.n_iter
                offset = times[-1] if times else 0.0
                times += [offset + t for t in res.history.time]
                cp = res.cp
                fit, exact_s, exact_bytes = exact_fit(cp)
                fits.append({"sweeps": len(times), "fit": fit})
            out["fit_segments"] = fits
            if model_path is not None:
                w = np.asarray(cp.weights)
                np.savez(model_path, *([np.asarray(cp.factors[0]) * w[None, :]]
                                       + [np.asarray(A) for A in cp.factors[1:]]))
        sent = _sent(client) - sent0
        t = np.asarray(times)
        out.update({
            "iters": len(times), "per_iter_s": np.diff(np.concatenate([[0.0], t])).tolist(),
            "fit": fit, "exact_fit_s": exact_s, "exact_fit_bytes": exact_bytes,
            "bytes_per_iter": per_bytes, "peak_rss_bytes": _peak_rss_bytes(),
        })
        if client is not None:
            out["bytes_between_workers"] = sent
            out["worker_peak_rss_bytes"] = list(client.run(_peak_rss_bytes).values())
            out["cluster"] = cluster
        return out
    finally:
        if client is not None:
            client.close()
            lc.close()


def _sent(client: Any) -> int:
    if client is None:
        return 0
    per = client.run(lambda dask_worker: dask_worker.transfer_outgoing_bytes_total)
    return int(sum(per.values()))


# --------------------------------------------------------------------------- #
def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--nnz", type=int, default=200_000_000, help="nonzeros (default: 2e8)")
    p.add_argument("--shape", default=",".join(map(str, AMAZON_SHAPE)),
                   help="comma-separated shape (default: the Amazon review tensor's)")
    p.add_argument("--rank", type=int, default=10, help="planted and fitted rank (default: 10)")
    p.add_argument("--iters", type=int, default=10,
                   help="SPALS sweeps per half of its run (default: 10)")
    p.add_argument("--max-iter", type=int, default=30, help="ALS sweep cap (default: 30)")
    p.add_argument("--tol", type=float, default=1e-4,
                   help="ALS stops when its relative error changes less (default: 1e-4)")
    p.add_argument("--cluster-iters", type=int, default=3,
                   help="sweeps per method on the LocalCluster (default: 3)")
    p.add_argument("--init", choices=("svd", "random"), default="svd",
                   help="shared initial factors (default: svd)")
    p.add_argument("--store", default=None,
                   help=f"store folder (default: {DEFAULT_STORE_DIR}/<shape>-<nnz>, git-ignored)")
    p.add_argument("--partition-nnz", type=int, default=1 << 23,
                   help="nonzeros per partition when building (default: 2^23)")
    p.add_argument("--exact", action="store_true",
                   help="plant an exactly low-rank tensor (sparse factor columns) instead of "
                        "power-law positions (default: off)")
    p.add_argument("--workers", type=int, default=2, help="LocalCluster workers (default: 2)")
    p.add_argument("--threads-per-worker", type=int, default=1,
                   help="threads per LocalCluster worker (default: 1)")
    p.add_argument("--no-cluster", action="store_true", help="skip the LocalCluster runs")
    p.add_argument("--seed", type=int, default=0, help="seed (default: 0)")
    p.add_argument("--tag", default=None, help="suffix of the JSON file name (default: none)")
    p.add_argument("--out", default=None,
                   help="JSON path (default: benchmarks/results/sparse_store[_TAG].json)")
    args = p.parse_args()
    shape = tuple(int(s) for s in args.shape.split(","))
    name = f"{'x'.join(map(str, shape))}-{args.nnz}" + ("-exact" if args.exact else "")
    store = Path(args.store) if args.store else DEFAULT_STORE_DIR / name
    info = ensure_store(store, shape, args.rank, args.nnz, args.partition_nnz, args.seed,
                        args.exact)
    print(f"store: {info['nnz']} nonzeros in {info['npartitions']} partitions, "
          f"{info['store_bytes'] / 2**30:.2f} GiB ({info['primary_bytes'] / 2**30:.2f} GiB "
          "per pass over the nonzeros)", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        init_path = str(Path(tmp) / "init.npz")
        info.update(_spawn(_make_init, str(store), args.rank, args.init, args.seed, init_path))
        print(f"init={args.init}: {info['init_s']:.1f} s", flush=True)
        spals_model = str(Path(tmp) / "spals_model.npz")
        first = 0 if args.no_cluster else args.cluster_iters
        plan: list[tuple[dict | None, str, int, float, str]] = [
            (None, "als", args.max_iter, args.tol, init_path),
            (None, "spals", args.iters, 0.0, init_path),
            # exact ALS from SPALS's final model: how far that model is from an
            # ALS fixed point
            (None, "als", args.max_iter, args.tol, spals_model)]
        if not args.no_cluster:
            cl = {"workers": args.workers, "threads_per_worker": args.threads_per_worker}
            plan += [(cl, "als", args.cluster_iters, 0.0, init_path),
                     (cl, "spals", args.cluster_iters, 0.0, init_path)]
        for cluster, method, iters, tol, start in plan:
            r = _spawn(_run, str(store), method, args.rank, iters, tol, args.seed, cluster,
                       start, first, spals_model if method == "spals" else None)
            r["start"] = "spals model" if start == spals_model else args.init
            runs.append(r)
            print(f"{method:6s} {r['scheduler']:12s} from {r['start']:11s} {r['iters']:3d} sweeps  "
                  f"fit {r['fit']:.6f}  "
                  f"{np.median(r['per_iter_s']):.3f} s/iter  "
                  f"{np.median(r['bytes_per_iter']) / 2**20:.1f} MiB/iter", flush=True)
    als = next(r for r in runs if r["method"] == "als" and r["scheduler"] == "threads")
    sp = next(r for r in runs if r["method"] == "spals" and r["scheduler"] == "threads")
    polish = next(r for r in runs if r["start"] == "spals model")
    speedup = float(np.median(als["per_iter_s"]) / np.median(sp["per_iter_s"]))
    summary = {
        "spals_speedup_per_iter": speedup,
        "als_sweeps": als["iters"], "als_converged": als["iters"] < args.max_iter,
        "fit_ratio_spals_to_als": sp["fit"] / als["fit"] if als["fit"] else float("nan"),
        "spals_fit_change_second_half": sp["fit"] - sp["fit_segments"][-2]["fit"],
        "als_from_spals_model_fit": polish["fit"],
        "als_from_spals_model_sweeps": polish["iters"],
        "spals_read_fraction": float(np.median(sp["bytes_per_iter"])) / info["store_bytes"],
    }
    for cluster_run in (r for r in runs if r["scheduler"] == "LocalCluster"):
        k = cluster_run["iters"]
        if cluster_run["method"] == "als" and len(als["fit_history"]) >= k:
            summary["cluster_als_fit_minus_threads"] = (cluster_run["fit"]
                                                        - als["fit_history"][k - 1])
        if cluster_run["method"] == "spals" and sp["fit_segments"][0]["sweeps"] == k:
            summary["cluster_spals_fit_minus_threads"] = (cluster_run["fit"]
                                                          - sp["fit_segments"][0]["fit"])
    print("summary:", json.dumps(summary, indent=1))
    rows = []
    for r in runs:
        med_bytes = float(np.median(r["bytes_per_iter"]))
        rows.append([r["method"], r["scheduler"], r["start"], r["iters"], f"{r['fit']:.6f}",
                     f"{np.median(r['per_iter_s']):.3f}", f"{med_bytes / 2**20:.1f}",
                     f"{med_bytes / info['store_bytes']:.2e}",
                     f"{r['peak_rss_bytes'] / 2**30:.2f}",
                     f"{r.get('bytes_between_workers', 0) / 2**20:.1f}"])
    header = ["method", "scheduler", "start", "sweeps", "fit", "s/iter", "MiB read/iter",
              "read/store", "peak RSS GiB", "MiB between workers"]
    print(_common.format_table(rows, header))
    payload = {"machine": _common.machine_info(N_THREADS), "store": info, "rank": args.rank,
               "iters": args.iters, "max_iter": args.max_iter, "tol": args.tol,
               "init": args.init, "seed": args.seed, "summary": summary, "runs": runs}
    name = "sparse_store" + (f"_{args.tag}" if args.tag else "")
    out = Path(args.out) if args.out else None
    print("wrote", _common.write_json(name, payload, out=out))


if __name__ == "__main__":
    main()
