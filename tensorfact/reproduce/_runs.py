"""Runs to convergence and their summaries (the protocol of the SPALS reproduction).

Every run is a solver call (`tensorfact.cp_als` or
`tensorfact.spals`) with ``tol=0`` and a `Tracker` callback that

* records the **exact** relative error after every sweep (``every=1``) or
  every ``every`` sweeps: for exact ALS the solver's own error, which comes
  from the last MTTKRP and is exact; for SPALS (whose own error is a sampled
  estimate) a full residual ``as_format(X).residual_norm_sq`` of the current
  model;
* applies one convergence test to every method: stop when the best exact
  error has improved by less than ``rtol`` (relative) over the last
  ``patience`` sweeps, or at the sweep cap ``max_iter`` (not converged);
* times itself, so that the time spent on the exact error is removed from the
  solver's ``history.time`` (a solver records its time before it calls the
  callback, so the callback's cost shows up in the next sweeps' times only).

A run's clock starts at the solver call: its times include the setup before
the first sweep (validation, norm, the initialisation when the solver makes
its own, e.g. an SVD start, and SPALS's first leverage scores), reported
separately as ``setup_time``.
"""

from __future__ import annotations

import math
import statistics
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

import tensorfact as tf

from ._problems import exact_rel_error

__all__ = ["Protocol", "Tracker", "annotate", "run_method", "summarise"]


@dataclass(frozen=True)
class Protocol:
    """Convergence test and sweep cap shared by every method of an experiment."""

    rtol: float
    patience: int
    max_iter: int
    every: int = 1  # exact error every ``every`` sweeps (SPALS); ALS has it every sweep


class Tracker:
    """Solver callback: exact errors, the convergence test, and its own cost."""

    def __init__(self, protocol: Protocol, exact: Callable[[Any], float] | None,
                 every: int = 1) -> None:
        self.protocol = protocol
        self.exact = exact
        self.every = every
        self.iters: list[int] = []
        self.errors: list[float] = []
        self.spent: list[float] = []  # seconds spent in the callback, per sweep
        self.converged = False

    def __call__(self, it: int, cp: Any, rel: float) -> bool:
        t0 = time.perf_counter()
        if self.exact is None:
            self.iters.append(it)
            self.errors.append(float(rel))
        elif it % self.every == 0 or it == 1:
            self.iters.append(it)
            self.errors.append(self.exact(cp))
        self.converged = self._test(it)
        self.spent.append(time.perf_counter() - t0)
        return self.converged

    def _test(self, it: int) -> bool:
        p = self.protocol
        if it <= p.patience or not self.errors or self.iters[-1] != it:
            return False
        before = [e for i, e in zip(self.iters, self.errors) if i <= it - p.patience]
        if not before:
            return False
        best_now = min(self.errors)
        return min(before) - best_now <= p.rtol * best_now

    def times(self, raw: tuple[float, ...]) -> list[float]:
        """The solver's cumulative times with this callback's own time removed."""
        out, removed = [], 0.0
        for t, s in zip(raw, self.spent):
            out.append(t - removed)
            removed += s
        return out


def _steps(times: list[float]) -> list[float]:
    return [times[0]] + [b - a for a, b in zip(times[:-1], times[1:])] if times else []


def run_method(X: Any, fmt: Any, norm_sq: float, rank: int, method: str, *,
               protocol: Protocol, init: Any, rng: Any, alpha: float | None = None,
               counter: Callable[[], int] | None = None) -> tuple[dict[str, Any], Any]:
    """Run ``method`` ("als" or "spals") to convergence; return its record and model.

    The record holds the per-sweep times (callback removed) and exact errors,
    the sweep count, whether the test was met, and the final relative error
    recomputed exactly from the returned ``cp``. With ``counter`` (a data
    format's bytes-read counter) it also holds the bytes the solver read per
    sweep, the exact-error passes excluded.
    """
    excluded = [0]

    def exact(cp: Any) -> float:
        before = counter() if counter is not None else 0
        err = exact_rel_error(fmt, cp, norm_sq)
        if counter is not None:
            excluded[0] += counter() - before
        return err

    start = counter() if counter is not None else 0
    t_call = time.perf_counter()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if method == "als":
            tracker = Tracker(protocol, None)
            res = tf.cp_als(X, rank, init=init, max_iter=protocol.max_iter, tol=0.0, rng=rng,
                            callback=tracker)
        else:
            tracker = Tracker(protocol, exact, every=protocol.every)
            res = tf.spals(X, rank, init=init, alpha=float(alpha or 0.5),
                           max_iter=protocol.max_iter,
                           tol=0.0, rng=rng, callback=tracker)
    read = (counter() - start - excluded[0]) if counter is not None else None
    wall = time.perf_counter() - t_call
    sweeps = tracker.times(res.history.time)
    steps = _steps(sweeps)
    # before the first sweep: validation, norm, initialisation (an SVD start), leverage scores
    setup = max(wall - sum(tracker.spent) - (sweeps[-1] if sweeps else 0.0), 0.0)
    times = [setup + t for t in sweeps]
    final = exact_rel_error(fmt, res.cp, norm_sq)
    curve_iter, curve_error = list(tracker.iters), list(tracker.errors)
    if times and (not curve_iter or curve_iter[-1] != res.n_iter):
        curve_iter.append(res.n_iter)  # the last sweep was not evaluated: its exact error
        curve_error.append(final)
    curve_time = [times[i - 1] for i in curve_iter]
    record = dict(
        n_iter=res.n_iter, converged=tracker.converged,
        time_per_iter=float(statistics.median(steps)) if steps else math.nan,
        sweep_times=steps, setup_time=setup, total_time=times[-1] if times else setup,
        final_error=final, curve_iter=curve_iter, curve_time=curve_time,
        curve_error=curve_error,
        exact_error_seconds=float(sum(tracker.spent)) if method == "spals" else 0.0,
        warnings=sorted({f"{w.category.__name__}: {w.message}" for w in caught}),
    )
    if read is not None:
        record["bytes_read_per_iter"] = read / max(res.n_iter, 1)
    return record, res.cp


def _first_time(run: dict[str, Any], level: float) -> float | None:
    for t, e in zip(run["curve_time"], run["curve_error"]):
        if e <= level:
            return float(t)
    return None


def annotate(runs: list[dict[str, Any]], floor: float) -> float:
    """Add the times to ``1.01 x best`` and ``1.1 x floor`` to every run; return best."""
    best = min(r["final_error"] for r in runs)
    for r in runs:
        r["time_to_1pct_of_best"] = _first_time(r, 1.01 * best)
        r["time_to_floor"] = _first_time(r, 1.1 * floor)
        r["final_within_floor"] = bool(r["final_error"] <= 1.1 * floor)
    return best


def _median(values: list[float]) -> float | None:
    return float(statistics.median(values)) if values else None


def _median_time(values: list[float | None]) -> float | None:
    """Median over all runs, a run that never got there counting as infinitely late.

    ``None`` when that median is "never".
    """
    if not values:
        return None
    med = statistics.median([math.inf if v is None else v for v in values])
    return None if math.isinf(med) else float(med)


def summarise(runs: list[dict[str, Any]], keys: tuple[str, ...] = ("method", "init")
              ) -> list[dict[str, Any]]:
    """One summary per (method, init kind): medians, best and counts over seeds."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in runs:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for key, rs in groups.items():
        steps = [s for r in rs for s in r["sweep_times"]]
        reach = [r["time_to_1pct_of_best"] for r in rs]
        floor = [r["time_to_floor"] for r in rs]
        finals = [r["final_error"] for r in rs]
        out.append(dict(
            zip(keys, key), alpha=rs[0].get("alpha"), n_samples=rs[0].get("n_samples"),
            runs=len(rs), converged=sum(bool(r["converged"]) for r in rs),
            time_per_iter=float(np.median(steps)) if steps else math.nan,
            n_iter_median=_median([r["n_iter"] for r in rs]),
            n_iter_max=max(r["n_iter"] for r in rs),
            setup_time_median=_median([r["setup_time"] for r in rs]),
            total_time_median=_median([r["total_time"] for r in rs]),
            final_error_median=_median(finals), final_error_best=min(finals),
            final_error_worst=max(finals),
            within_floor=sum(bool(r["final_within_floor"]) for r in rs),
            time_to_1pct_median=_median_time(reach),
            reached_1pct=sum(t is not None for t in reach),
            time_to_floor_median=_median_time(floor),
            reached_floor=sum(t is not None for t in floor),
            warnings=sorted({w for r in rs for w in r["warnings"]}),
        ))
    return out
