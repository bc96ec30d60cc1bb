"""cp_apr: agreement with pyttb, planted recovery, monotone likelihood, kernels, bad input."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest

import tensorfact as tf
from tensorfact import CPTensor, SparseTensor, cp_apr
from tensorfact._kernels import poisson as KP
from tensorfact._kernels.sparse import mode_sorted


def _counts(shape, rank, scale, seed, *, sparsify=0.0):
    """Poisson counts drawn from a planted non-negative CP model (and the model)."""
    gen = np.random.default_rng(seed)
    facs = [gen.random((s, rank)) ** 2 for s in shape]
    weights = scale * np.linspace(1.0, 0.5, rank)
    truth = CPTensor(facs, weights=weights / np.prod([A.sum(axis=0) for A in facs], axis=0))
    X = gen.poisson(truth.to_dense()).astype(np.float64)
    if sparsify:
        X[gen.random(X.shape) < sparsify] = 0.0
    return X, truth


def _random_init(shape, rank, seed):
    gen = np.random.default_rng(seed)
    return CPTensor([gen.random((s, rank)) for s in shape], weights=gen.random(rank) + 0.5)


def _loglik_dense(X, cp):
    M = np.asarray(cp.to_dense())
    pos = X > 0
    return float(np.sum(X[pos] * np.log(M[pos])) - M.sum())


# ----------------------------------------------------------------- pyttb
@pytest.mark.parametrize("shape, rank, n_iter", [((9, 8, 7), 3, 1), ((9, 8, 7), 3, 12),
                                                 ((6, 5, 4, 3), 2, 6)])
def test_matches_pyttb_mu_from_the_same_init(shape, rank, n_iter):
    ttb = pytest.importorskip("pyttb")
    X, _ = _counts(shape, rank, 50.0 * math.prod(shape), 1, sparsify=0.4)
    S = SparseTensor.from_dense(X)
    init = _random_init(shape, rank, 2)
    res = cp_apr(S, rank, init=init, max_iter=n_iter, tol=0.0)
    sp = ttb.sptensor(np.array(S.coords), np.array(S.values)[:, None], shape)
    kinit = ttb.ktensor([np.array(A) for A in init.factors], np.array(init.weights))
    M, _, out = ttb.cp_apr(sp, rank, init=kinit, maxiters=n_iter, stoptol=0.0, printitn=0)
    assert res.n_iter == len(out["kktViolations"]) == n_iter
    assert res.log_likelihood == pytest.approx(out["obj"], rel=1e-6)
    assert res.kkt_violation == pytest.approx(out["kktViolations"][-1], rel=1e-6, abs=1e-12)
    # same model (pyttb's returned ktensor has its weights absorbed into mode 0)
    np.testing.assert_allclose(np.asarray(res.cp.to_dense()), M.full().data, rtol=1e-6,
                               atol=1e-9 * X.max())
    # the init keeps its values
    assert np.array_equal(kinit.factor_matrices[0], np.asarray(init.factors[0]))


def test_matches_pyttb_stopping_rule():
    ttb = pytest.importorskip("pyttb")
    X, _ = _counts((8, 7, 6), 2, 4e3, 3, sparsify=0.3)
    S = SparseTensor.from_dense(X)
    init = _random_init(X.shape, 2, 4)
    res = cp_apr(S, 2, init=init, max_iter=400, tol=1e-4)
    sp = ttb.sptensor(np.array(S.coords), np.array(S.values)[:, None], X.shape)
    kinit = ttb.ktensor([np.array(A) for A in init.factors], np.array(init.weights))
    _, _, out = ttb.cp_apr(sp, 2, init=kinit, maxiters=400, stoptol=1e-4, printitn=0)
    assert res.converged and res.n_iter == len(out["kktViolations"]) < 400
    assert res.kkt_violation < 1e-4
    assert res.log_likelihood == pytest.approx(out["obj"], rel=1e-6)


# ----------------------------------------------------------------- recovery
def test_recovers_planted_poisson_cp():
    shape = (30, 25, 20)
    X, truth = _counts(shape, 3, 2e5, 5)
    res = cp_apr(X, 3, rng=0, max_iter=500)
    assert res.cp.factor_match_score(truth) > 0.95
    # the likelihood of the fit is at least that of the plant (it is the maximiser)
    assert res.log_likelihood >= _loglik_dense(X, truth) - 1e-6 * abs(res.log_likelihood)


def test_log_likelihood_non_decreasing_and_reported_exactly():
    # every MU step is a majorise-minimise step; only scooching (kappa > 0) may lower the
    # likelihood, so it is switched off here
    X, _ = _counts((12, 11, 10), 3, 3e3, 6, sparsify=0.5)
    res = cp_apr(X, 3, rng=1, max_iter=40, tol=0.0, kappa=0.0)
    ll = np.array(res.history.objective)
    assert len(ll) == res.n_iter == 40
    assert np.all(np.diff(ll) >= -1e-9 * np.abs(ll[1:]))
    assert res.log_likelihood == ll[-1]
    assert res.log_likelihood == pytest.approx(_loglik_dense(X, res.cp), rel=1e-10)
    rel = np.linalg.norm(X - np.asarray(res.cp.to_dense())) / np.linalg.norm(X)
    assert res.rel_error == pytest.approx(rel, rel=1e-8)


def test_result_conventions():
    X, _ = _counts((7, 6, 5), 3, 500.0, 7)
    res = cp_apr(X, 3, rng=0, max_iter=5)
    w, facs = res.cp
    assert np.all(np.diff(np.asarray(w)) <= 0)  # sorted by decreasing weight
    for A in facs:
        np.testing.assert_allclose(np.asarray(A).sum(axis=0), 1.0, rtol=1e-12)
        assert np.all(np.asarray(A) >= 0)
    with pytest.raises(AttributeError):
        res.n_iter = 3  # frozen
    assert isinstance(res, tf.CPAPRResult)


def test_dense_and_sparse_input_agree_and_seed_reproducible():
    X, _ = _counts((6, 5, 4), 2, 300.0, 8)
    a = cp_apr(X, 2, rng=3, max_iter=10)
    b = cp_apr(SparseTensor.from_dense(X), 2, rng=3, max_iter=10)
    assert a.history.objective == b.history.objective


def test_callback_stops_and_zero_tensor():
    X, _ = _counts((6, 5, 4), 2, 300.0, 9)
    seen = []
    res = cp_apr(X, 2, rng=0, callback=lambda it, cp, err: seen.append(it) or it == 3)
    assert seen == [1, 2, 3] and res.n_iter == 3 and not res.converged
    zero = cp_apr(np.zeros((3, 4, 5)), 2)
    assert zero.log_likelihood == 0.0 and zero.converged and zero.n_iter == 0


def test_inputs_are_not_mutated():
    X, _ = _counts((6, 5, 4), 2, 300.0, 10)
    X0 = X.copy()
    init = _random_init(X.shape, 2, 1)
    f0 = [np.array(A) for A in init.factors]
    w0 = np.array(init.weights)
    cp_apr(X, 2, init=init, max_iter=5)
    assert np.array_equal(X, X0)
    assert np.array_equal(np.asarray(init.weights), w0)
    assert all(np.array_equal(np.asarray(A), B) for A, B in zip(init.factors, f0))


def test_other_namespace_agrees_with_numpy(backend):
    if backend.name == "numpy":
        pytest.skip("the reference")
    X, _ = _counts((6, 5, 4), 2, 300.0, 11, sparsify=0.3)
    init = _random_init(X.shape, 2, 5)
    ref = cp_apr(X, 2, init=init, max_iter=6, tol=0.0)
    Xb = backend.asarray(X)
    init_b = CPTensor([backend.asarray(np.asarray(A)) for A in init.factors],
                      weights=backend.asarray(np.asarray(init.weights)))
    res = cp_apr(Xb, 2, init=init_b, max_iter=6, tol=0.0)
    assert type(res.cp.factors[0]) is type(Xb)
    np.testing.assert_allclose(res.history.objective, ref.history.objective, rtol=1e-9)


# ----------------------------------------------------------------- kernels
def _kernel_case(seed, shape=(7, 6, 5), R=3, mode=1):
    gen = np.random.default_rng(seed)
    X, _ = _counts(shape, R, 200.0, seed, sparsify=0.6)
    X[0] = 0.0  # an empty slice in mode 0
    S = SparseTensor.from_dense(X)
    facs = [gen.random((s, R)) for s in shape]
    facs[1][2, 0] = 0.0
    return X, S, facs, mode


def _brute(X, facs, mode, eps):
    """Dense NumPy: Phi, B * Phi, KKT violation, sum x log m, sum x m."""
    N = X.ndim
    Xn = np.moveaxis(X, mode, 0).reshape(X.shape[mode], -1)
    others = [facs[m] for m in range(N) if m != mode]
    Pi = others[0]
    for A in others[1:]:
        Pi = np.einsum("ir,jr->ijr", Pi, A).reshape(-1, Pi.shape[1])
    Bm = facs[mode]
    V = Bm @ Pi.T
    Phi = (Xn / np.maximum(V, eps)) @ Pi
    pos = Xn > 0
    return (Phi, Bm * Phi, np.max(np.abs(np.minimum(Bm, 1 - Phi))),
            float(np.sum(Xn[pos] * np.log(np.maximum(V[pos], eps)))), float(np.sum(Xn * V)))


@pytest.mark.parametrize("mode", [0, 1, 2])
@pytest.mark.parametrize("n_chunks", [1, 3, 50])
@pytest.mark.parametrize("threaded", [False, True])
def test_numba_kernels_match_brute_force(mode, n_chunks, threaded, monkeypatch):
    if threaded:  # the threaded variants, whatever the size
        monkeypatch.setattr(KP, "PARALLEL_MIN_NNZ", 0)
    X, S, facs, _ = _kernel_case(20 + mode, mode=mode)
    eps = 1e-10
    rowptr, others, vals = mode_sorted(np.asarray(S.coords), np.asarray(S.values), mode,
                                       X.shape[mode])
    Pi = KP.krp_at_nonzeros_numba(others, [A for m, A in enumerate(facs) if m != mode])
    bounds = KP.row_chunks(rowptr, n_chunks)
    B_new, Phi, kkt = KP.mu_step_numba(rowptr, vals, Pi, facs[mode], eps, bounds)
    ref = _brute(X, facs, mode, eps)
    np.testing.assert_allclose(Phi, ref[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(B_new, ref[1], rtol=1e-12, atol=1e-14)
    assert kkt == pytest.approx(ref[2], rel=1e-12)
    xlogm, xm = KP.poisson_fit_numba(rowptr, vals, Pi, facs[mode], eps)
    assert xlogm == pytest.approx(ref[3], rel=1e-12) and xm == pytest.approx(ref[4], rel=1e-12)


@pytest.mark.parametrize("mode", [0, 2])
def test_xp_twins_match_brute_force(mode):
    X, S, facs, _ = _kernel_case(30 + mode, mode=mode)
    eps = 1e-10
    cols = [m for m in range(3) if m != mode]
    others = np.stack([S.coords[:, m] for m in cols], axis=1)
    Pi = KP.krp_at_nonzeros_xp(np, others, [facs[m] for m in cols])
    rows = np.asarray(S.coords[:, mode])
    B_new, Phi, kkt = KP.mu_step_xp(np, rows, np.asarray(S.values), Pi, facs[mode], eps)
    ref = _brute(X, facs, mode, eps)
    np.testing.assert_allclose(Phi, ref[0], rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(B_new, ref[1], rtol=1e-12, atol=1e-14)
    assert kkt == pytest.approx(ref[2], rel=1e-12)
    xlogm, xm = KP.poisson_fit_xp(np, rows, np.asarray(S.values), Pi, facs[mode], eps)
    assert xlogm == pytest.approx(ref[3], rel=1e-12) and xm == pytest.approx(ref[4], rel=1e-12)


def test_row_chunks_cover_every_row_once():
    rowptr = np.array([0, 0, 5, 5, 6, 100, 100, 101], dtype=np.int64)
    for n in (1, 2, 4, 7, 20):
        b = KP.row_chunks(rowptr, n)
        assert b[0] == 0 and b[-1] == 7 and np.all(np.diff(b) >= 0) and len(b) == n + 1


# ----------------------------------------------------------------- bad input
def test_negative_values_name_S():
    X = np.ones((3, 4, 5))
    X[1, 2, 3] = -1.0
    with pytest.raises(ValueError, match="S contains negative"):
        cp_apr(X, 2)
    with pytest.raises(ValueError, match="S contains negative"):
        cp_apr(SparseTensor.from_dense(X), 2)


def test_non_integer_counts_warn_naming_S():
    X, _ = _counts((5, 4, 3), 2, 100.0, 12)
    with pytest.warns(UserWarning, match="S has non-integer"):
        cp_apr(X + 0.5, 2, max_iter=2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cp_apr(X, 2, max_iter=2)


@pytest.mark.parametrize("kw, name", [
    (dict(rank=0), "rank"), (dict(rank=1000), "rank"), (dict(rank=2.5), "rank"),
    (dict(max_iter=0), "max_iter"), (dict(max_inner_iter=0), "max_inner_iter"),
    (dict(tol=-1.0), "tol"), (dict(kappa=-1.0), "kappa"), (dict(kappa_tol=math.nan), "kappa_tol"),
    (dict(epsilon=0.0), "epsilon"), (dict(init="svd"), "init"), (dict(rng=-1), "rng"),
    (dict(callback=3), "callback"),
])
def test_bad_options_name_the_argument(kw, name):
    X, _ = _counts((5, 4, 3), 2, 100.0, 13)
    kw = {"rank": 2, **kw}
    rank = kw.pop("rank")
    with pytest.raises((ValueError, TypeError), match=name):
        cp_apr(X, rank, **kw)


def test_bad_tensors_and_init():
    with pytest.raises(ValueError, match="S"):
        cp_apr(np.ones(5), 1)
    with pytest.raises(ValueError, match="S contains NaN"):
        cp_apr(np.full((2, 3), np.nan), 1)
    with pytest.raises(TypeError, match="S must be"):
        cp_apr([[1, 2], [3, 4]], 1)
    X = np.ones((3, 4, 5))
    bad = _random_init(X.shape, 2, 0)
    neg = CPTensor([-A for A in bad.factors])
    with pytest.raises(ValueError, match=r"init.factors\[0\]"):
        cp_apr(X, 2, init=neg)
    with pytest.raises(ValueError, match="init.weights"):
        cp_apr(X, 2, init=CPTensor(list(bad.factors), weights=-np.ones(2)))
    with pytest.raises(ValueError, match="init"):
        cp_apr(X, 3, init=bad)


def test_counts_near_overflow_keep_finite_figures():
    X, _ = _counts((5, 4, 3), 2, 200.0, 14)
    ref = cp_apr(X, 2, rng=0, max_iter=5)
    res = cp_apr(X * 2.0**900, 2, rng=0, max_iter=5)
    assert res.rel_error == pytest.approx(ref.rel_error, rel=1e-9)
    assert math.isfinite(res.log_likelihood)


def test_verbose_progress_bar_and_logging(capsys, caplog):
    X, _ = _counts((5, 4, 3), 2, 100.0, 15)
    with caplog.at_level(logging.INFO, logger="tensorfact.cp_apr"):
        cp_apr(X, 2, rng=0, max_iter=3, verbose=True)
    assert "cp_apr" in capsys.readouterr().err  # tqdm writes to stderr
    assert any("cp_apr" in r.message for r in caplog.records)


def test_fused_inner_steps_equal_the_step_by_step_loop(monkeypatch):
    from tensorfact.decomposition import _cp_apr as mod

    class StepByStep(mod._NumbaEngine):
        inner = mod._Engine.inner  # one mu_step call per step

    X, _ = _counts((9, 8, 7), 3, 3e3, 16, sparsify=0.4)
    S = SparseTensor.from_dense(X)
    init = _random_init(X.shape, 3, 6)
    reruns = []
    steps = KP.mu_steps_numba

    def spy(*args, **kw):
        if len(args) > 7 and not args[7]:
            reruns.append(args[6])
        return steps(*args, **kw)

    monkeypatch.setattr(KP, "mu_steps_numba", spy)
    kw = dict(max_iter=300, max_inner_iter=10, tol=1e-3, kappa=0.01, kappa_tol=1e-10,
              epsilon=1e-10, callback=None, verbose=False)
    fused = mod._mu(S, mod._NumbaEngine(S), init.weights, list(init.factors), **kw)
    plain = mod._mu(S, StepByStep(S), init.weights, list(init.factors), **kw)
    assert reruns  # some mode stopped between its second and last step
    assert fused.history.objective == plain.history.objective
    assert fused.n_iter == plain.n_iter and fused.converged == plain.converged
    assert fused.kkt_violation == plain.kkt_violation


@pytest.mark.parametrize("threaded", [False, True])
@pytest.mark.parametrize("update_last", [False, True])
def test_fused_steps_kernel_matches_single_steps(threaded, update_last, monkeypatch):
    if threaded:
        monkeypatch.setattr(KP, "PARALLEL_MIN_NNZ", 0)
    X, S, facs, mode = _kernel_case(40)
    rowptr, others, vals = mode_sorted(np.asarray(S.coords), np.asarray(S.values), mode,
                                       X.shape[mode])
    Pi = KP.krp_at_nonzeros_numba(others, [A for m, A in enumerate(facs) if m != mode])
    bounds = KP.row_chunks(rowptr, 4)
    Bm, kkts = facs[mode], []
    for j in range(3):
        B_new, Phi, kkt = KP.mu_step_numba(rowptr, vals, Pi, Bm, 1e-10, bounds)
        kkts.append(kkt)
        if j < 2 or update_last:
            Bm = B_new
    B3, Phi3, hist = KP.mu_steps_numba(rowptr, vals, Pi, facs[mode], 1e-10, bounds, 3,
                                       update_last)
    assert np.array_equal(B3, Bm) and np.array_equal(Phi3, Phi)
    assert hist.tolist() == kkts
