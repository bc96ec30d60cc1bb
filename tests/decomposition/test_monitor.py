"""The shared iteration monitor, the explicit solver loop and the data-format protocol."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

import tensorfact as tf
from tensorfact.datasets import planted_cp, planted_sparse_cp
from tensorfact.decomposition._monitor import ConvergenceHistory, IterationMonitor
from tensorfact.formats import DenseTensor, TensorFormat, as_format

SOLVERS = {
    "cp_als": lambda X, **kw: tf.cp_als(X, 3, init="random", **kw),
    "spals": lambda X, **kw: tf.spals(X, 3, **kw),
}


@pytest.fixture(scope="module")
def planted():
    X, _ = planted_cp((12, 13, 14), 3, noise=0.05, rng=1)
    return X


# ------------------------------------------------------------------ monitor unit
def test_monitor_history_tolerance_and_callback():
    seen = []
    mon = IterationMonitor("probe", max_iter=10, tol=1e-3,
                           callback=lambda it, model, err: seen.append((it, model, err)))
    with mon:
        for it in mon.iterations():
            if mon.record(1.0 / it**3, model=lambda it=it: f"model {it}"):
                break
    # |1/k^3 - 1/(k+1)^3| < 1e-3 first at k + 1 = 13 > max_iter? no: at k = 8 -> 9
    diffs = [abs(1 / k**3 - 1 / (k + 1) ** 3) for k in range(1, 10)]
    stop = next(k + 1 for k, d in zip(range(1, 10), diffs) if d < 1e-3)
    assert mon.n_iter == stop and mon.converged
    assert len(mon.history) == stop
    assert seen[-1] == (stop, f"model {stop}", 1.0 / stop**3)
    assert all(t1 <= t2 for t1, t2 in zip(mon.history.time, mon.history.time[1:]))


def test_monitor_callback_stop_is_not_convergence():
    mon = IterationMonitor("probe", max_iter=10, tol=0.0, callback=lambda it, m, e: it == 2)
    with mon:
        for _ in mon.iterations():
            if mon.record(0.5, model=lambda: None):
                break
    assert mon.n_iter == 2 and not mon.converged and mon.stopped_by_callback


@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_monitor_raises_on_non_finite(bad):
    mon = IterationMonitor("probe", max_iter=3, hint="try something")
    mon.record(0.5)
    with pytest.raises(FloatingPointError, match="probe produced a non-finite iterate at "
                                                   "iteration 2; try something"):
        mon.record(bad)
    with pytest.raises(FloatingPointError):
        IterationMonitor("probe", max_iter=3).record(0.1, finite=False)


def test_monitor_start_objective_and_logging(caplog):
    mon = IterationMonitor("probe", max_iter=5, tol=None, logger=logging.getLogger("probe"))
    with caplog.at_level(logging.DEBUG, logger="probe"), mon:
        mon.start(1.0, objective=4.0)
        mon.record(0.5, objective=1.0)
        mon.record(0.25, objective=0.25, converged=True)
    h = mon.history
    assert isinstance(h, ConvergenceHistory)
    assert h.rel_error == (1.0, 0.5, 0.25) and h.objective == (4.0, 1.0, 0.25)
    assert mon.n_iter == 2 and mon.converged
    assert any("probe: 2 iterations" in r.message for r in caplog.records)


@pytest.mark.parametrize("kwargs, exc", [({"max_iter": 0}, ValueError),
                                         ({"max_iter": 2, "tol": -1.0}, ValueError),
                                         ({"max_iter": 2, "callback": 3}, TypeError)])
def test_monitor_bad_arguments_name_themselves(kwargs, exc):
    name = next(k for k in kwargs if k != "max_iter" or kwargs[k] == 0)
    with pytest.raises(exc, match=name):
        IterationMonitor("probe", **kwargs)


# ------------------------------------------------------------------ every solver
@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_history_lengths(planted, solver):
    res = SOLVERS[solver](planted, max_iter=6, tol=0.0, rng=0)
    assert res.n_iter == 6 and len(res.history) == 6 and len(res.history.time) == 6
    assert res.rel_error == res.history.rel_error[-1]
    assert not res.converged


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_callback_stops_and_sees_the_model(planted, solver):
    calls = []

    def cb(it, cp, err):
        calls.append((it, err))
        assert isinstance(cp, tf.CPTensor) and cp.shape == planted.shape
        return it == 3

    res = SOLVERS[solver](planted, max_iter=20, tol=0.0, rng=0, callback=cb)
    assert res.n_iter == 3 and not res.converged
    assert [c[0] for c in calls] == [1, 2, 3]
    assert [c[1] for c in calls] == list(res.history.rel_error)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_verbose_gives_identical_results(planted, solver):
    quiet = SOLVERS[solver](planted, max_iter=5, rng=3)
    loud = SOLVERS[solver](planted, max_iter=5, rng=3, verbose=True)
    assert quiet.rel_error == loud.rel_error and quiet.n_iter == loud.n_iter
    for a, b in zip(quiet.cp.factors, loud.cp.factors):
        np.testing.assert_array_equal(a, b)


def test_cp_als_tolerance_stop(planted):
    res = tf.cp_als(planted, 3, tol=1e-6, max_iter=500, rng=0)
    e = res.history.rel_error
    assert res.converged and res.n_iter < 500
    assert abs(e[-2] - e[-1]) < 1e-6 <= abs(e[-3] - e[-2])


class _PoisonedFormat:
    """A third data format in one class: a dense tensor whose MTTKRP turns NaN.

    Written only against the protocol, it shows that the solvers need nothing
    else, and lets the non-finite check be triggered from inside the loop.
    """

    def __init__(self, X, poison_after):
        self._inner = DenseTensor(X)
        self.xp, self.shape, self.dtype, self.like = (self._inner.xp, self._inner.shape,
                                                      self._inner.dtype, self._inner.like)
        self.calls = 0
        self.poison_after = poison_after

    def norm_sq(self):
        return self._inner.norm_sq()

    def mttkrp(self, factors, mode):
        self.calls += 1
        M = self._inner.mttkrp(factors, mode)
        return M * np.nan if self.calls > self.poison_after else M

    def mode_gram(self, mode):
        return self._inner.mode_gram(mode)

    def leading_subspace(self, mode, k, rng):
        return self._inner.leading_subspace(mode, k, rng)

    def residual_norm_sq(self, weights, factors):
        return self._inner.residual_norm_sq(weights, factors)

    def sampled_fibers(self, mode, indices):
        self.calls += 1
        rows = self._inner.sampled_fibers(mode, indices)
        return rows * np.nan if self.calls > self.poison_after else rows

    def check_finite(self, name="X"):
        self._inner.check_finite(name)


def test_a_new_format_is_one_class(planted):
    fmt = _PoisonedFormat(planted, poison_after=10**9)
    assert isinstance(fmt, TensorFormat) and as_format(fmt) is fmt
    ref = tf.cp_als(planted, 3, max_iter=5, tol=0, rng=0)
    got = tf.cp_als(fmt, 3, max_iter=5, tol=0, rng=0)
    assert got.rel_error == ref.rel_error
    np.testing.assert_array_equal(tf.mttkrp(fmt, list(ref.cp.factors), 1),
                                  tf.mttkrp(planted, list(ref.cp.factors), 1))
    s_ref = tf.spals(planted, 3, max_iter=3, rng=0)
    s_got = tf.spals(_PoisonedFormat(planted, 10**9), 3, max_iter=3, rng=0)
    assert s_got.rel_error == s_ref.rel_error


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_non_finite_iterate_raises(planted, solver):
    # caught by the monitor, or by the solve of the next mode (a NaN Gram matrix)
    with pytest.raises(FloatingPointError, match="non-finite"):
        SOLVERS[solver](_PoisonedFormat(planted, poison_after=4), max_iter=10, rng=0)


# ------------------------------------------------------------------ the explicit loop
def test_mttkrp_sweep_does_not_mutate_its_arguments(rng):
    X = rng.standard_normal((5, 6, 7))
    F = [rng.standard_normal((s, 2)) for s in X.shape]
    F_ids = [id(A) for A in F]
    out = tf.mttkrp_sweep(X, F, lambda n, M: M[:, :2] * 0 + n)
    assert [id(A) for A in F] == F_ids
    assert [float(A[0, 0]) for A in out] == [0.0, 1.0, 2.0]


@pytest.mark.parametrize("shape", [(4, 5, 6), (3, 4, 5, 6), (2, 3, 4, 3, 2), (7, 8)])
def test_dimension_tree_any_calling_order(rng, shape):
    # random modes, random factor replacements: the kept partials are never stale
    X = rng.standard_normal(shape)
    tree = tf.DimensionTree(as_format(X).xp, X)
    F = [rng.standard_normal((s, 3)) for s in shape]
    for _ in range(25):
        n = int(rng.integers(len(shape)))
        np.testing.assert_allclose(tree.mttkrp(F, n), tf.mttkrp(X, F, n), rtol=1e-12,
                                   atol=1e-12)
        if rng.random() < 0.5:
            m = int(rng.integers(len(shape)))
            F = list(F)
            F[m] = rng.standard_normal((shape[m], 3))


def test_dimension_tree_reuses_the_partial_within_a_sweep(rng, monkeypatch):
    from tensorfact.tenalg import _mttkrp as mod

    X = rng.standard_normal((6, 7, 8, 9))
    F = [rng.standard_normal((s, 2)) for s in X.shape]
    passes = []
    real = mod._gemm_block
    monkeypatch.setattr(mod, "_gemm_block", lambda *a: passes.append(1) or real(*a))
    tree = mod.DimensionTree(np, X)
    for n in range(4):
        tree.mttkrp(F, n)
        F = list(F)
        F[n] = rng.standard_normal(F[n].shape)
    assert len(passes) == 2  # two passes over X for the whole sweep


def test_solvers_never_mutate_inputs(planted):
    X0 = planted.copy()
    gen = np.random.default_rng(0)
    init = tf.CPTensor([gen.standard_normal((s, 3)) for s in planted.shape])
    init_copy = [A.copy() for A in init.factors]
    tf.cp_als(planted, 3, init=init, max_iter=3)
    tf.spals(planted, 3, init=init, max_iter=3, rng=0)
    np.testing.assert_array_equal(planted, X0)
    for a, b in zip(init.factors, init_copy):
        np.testing.assert_array_equal(a, b)


def test_sparse_tensor_is_a_format():
    S, _ = planted_sparse_cp((10, 11, 12), 2, nnz=200, rng=0)
    assert isinstance(S, TensorFormat) and as_format(S) is S
    with pytest.raises(TypeError, match="X must be an array or a tensorfact data format"):
        as_format([[1.0, 2.0]])
