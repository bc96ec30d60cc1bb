"""cp_als: recovery, agreement with TensorLy and pyttb, conventions, bad input."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import tensorfact as tf
from tensorfact import CPTensor, cp_als
from tensorfact._testing import assert_close
from tensorfact.datasets import planted_cp


def _rec(cp):
    return np.asarray(cp.to_dense())


# ----------------------------------------------------------------- recovery
@pytest.mark.parametrize("shape", [(12, 13, 14), (6, 7, 8, 9), (30, 2, 40)])
def test_recovers_planted_noise_free_tensor(shape):
    X, truth = planted_cp(shape, 2, rng=1)
    res = cp_als(X, 2, init="svd", max_iter=500, tol=1e-14, rng=0)
    assert res.rel_error < 1e-8
    assert res.cp.factor_match_score(truth) > 0.9999
    # the reported error is the true error
    true_err = np.linalg.norm(X - _rec(res.cp)) / np.linalg.norm(X)
    assert abs(true_err - res.rel_error) < 1e-10


def test_noisy_fit_reaches_noise_floor():
    X, truth = planted_cp((25, 26, 27), 3, noise=0.05, rng=2)
    res = cp_als(X, 3, rng=0, max_iter=300, tol=1e-12)
    # the planted model has error exactly 0.05 relative to T; the LS fit must do at least
    # as well relative to X (which is slightly larger than T) and cannot beat the floor much
    floor = 0.05 * np.linalg.norm(truth.to_dense()) / np.linalg.norm(X)
    assert res.rel_error <= floor * (1 + 1e-6)
    assert res.rel_error > 0.9 * floor
    assert res.cp.factor_match_score(truth) > 0.99


def test_history_and_result_are_consistent():
    X, _ = planted_cp((10, 11, 12), 2, noise=0.1, rng=3)
    res = cp_als(X, 2, rng=0, max_iter=50, tol=1e-10)
    assert len(res.history) == res.n_iter
    assert res.history.rel_error[-1] == res.rel_error
    assert all(np.diff(res.history.time) >= 0)
    # ALS never increases the error (up to rounding)
    errs = np.array(res.history.rel_error)
    assert np.all(np.diff(errs) <= 1e-12)
    with pytest.raises(AttributeError):
        res.n_iter = 3


def test_tol_zero_runs_max_iter_and_converged_flag():
    X, _ = planted_cp((8, 9, 10), 2, noise=0.1, rng=4)
    res = cp_als(X, 2, rng=0, max_iter=7, tol=0)
    assert res.n_iter == 7 and not res.converged
    res = cp_als(X, 2, rng=0, max_iter=500, tol=1e-6)
    assert res.converged and res.n_iter < 500


# ------------------------------------------------------------- agreement
def _common_init(shape, R, seed):
    g = np.random.default_rng(seed)
    return [g.standard_normal((s, R)) for s in shape]


def _trace(X, R, init_factors, n_iter):
    recs = []
    cp_als(X, R, init=CPTensor([f.copy() for f in init_factors]), max_iter=n_iter, tol=0,
           callback=lambda it, cp, err: recs.append(_rec(cp)))
    return recs


@pytest.mark.parametrize("shape", [(9, 10, 11), (5, 6, 7, 4)])
def test_agrees_with_tensorly_every_iteration(shape):
    from tensorly.decomposition import parafac

    X, _ = planted_cp(shape, 3, noise=0.2, rng=5)
    init = _common_init(shape, 3, 6)
    ours = _trace(X, 3, init, 20)
    for k in (1, 2, 3, 5, 8, 13, 20):
        tl_cp = parafac(X, 3, n_iter_max=k, init=(np.ones(3), [f.copy() for f in init]), tol=0)
        ref = np.asarray(tf.CPTensor.from_tensorly(tl_cp).to_dense())
        rel = np.linalg.norm(ours[k - 1] - ref) / np.linalg.norm(ref)
        assert rel < 1e-8, (k, rel)


@pytest.mark.parametrize("shape", [(9, 10, 11), (5, 6, 7, 4)])
def test_agrees_with_pyttb_every_iteration(shape):
    ttb = pytest.importorskip("pyttb")
    X, _ = planted_cp(shape, 3, noise=0.2, rng=7)
    init = _common_init(shape, 3, 8)
    ours = _trace(X, 3, init, 20)
    T = ttb.tensor(X.copy())
    for k in (1, 2, 4, 7, 12, 20):
        kinit = ttb.ktensor([f.copy() for f in init], np.ones(3))
        M, _, _ = ttb.cp_als(T, 3, stoptol=0, maxiters=k, init=kinit, printitn=0)
        ref = M.full().data
        rel = np.linalg.norm(ours[k - 1] - ref) / np.linalg.norm(ref)
        assert rel < 1e-8, (k, rel)


# ---------------------------------------------------------------- backends
def test_backends_dtype_and_namespace(backend, dtype_name):
    Xn, truth = planted_cp((8, 9, 10), 2, rng=9)
    X = backend.asarray(Xn, dtype=dtype_name)
    res = cp_als(X, 2, rng=0, max_iter=200, tol=1e-12)
    xp = backend.xp
    w, factors = res.cp
    assert factors[0].dtype == X.dtype and w.dtype == X.dtype
    assert type(factors[0]) is type(X)
    tol = 1e-8 if dtype_name == "float64" else 1e-4
    assert res.rel_error < tol
    rec = res.cp.to_dense()
    assert_close(rec, X, rtol=0, atol=30 * tol * float(np.abs(Xn).max()), xp=xp)


def test_same_result_on_every_backend(backend):
    Xn, _ = planted_cp((6, 7, 8), 2, noise=0.3, rng=10)
    ref = cp_als(Xn, 2, init="random", rng=42, max_iter=15, tol=0)
    res = cp_als(backend.asarray(Xn), 2, init="random", rng=42, max_iter=15, tol=0)
    np.testing.assert_allclose(_rec_host(res.cp), _rec(ref.cp), rtol=1e-9, atol=1e-12)


def _rec_host(cp):
    from tensorfact import _backend as B

    return B.to_numpy(cp.to_dense())


def test_integer_input_is_promoted():
    X = np.arange(60).reshape(3, 4, 5) % 7
    res = cp_als(X, 2, rng=0, max_iter=20)
    assert res.cp.dtype == np.float64


def test_bool_input_is_promoted():
    X = (np.arange(60).reshape(3, 4, 5) % 3) == 0
    res = cp_als(X, 2, rng=0, max_iter=5)
    assert res.cp.dtype == np.float64


# ------------------------------------------------------------- conventions
def test_inputs_are_not_mutated():
    X, _ = planted_cp((7, 8, 9), 2, noise=0.1, rng=11)
    init = CPTensor(_common_init(X.shape, 2, 12), weights=np.array([2.0, 3.0]))
    X0 = X.copy()
    f0 = [f.copy() for f in init.factors]
    w0 = init.weights.copy()
    cp_als(X, 2, init=init, max_iter=5)
    np.testing.assert_array_equal(X, X0)
    for a, b in zip(init.factors, f0):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(init.weights, w0)


def test_same_seed_bit_identical():
    X, _ = planted_cp((7, 8, 9), 3, noise=0.1, rng=13)
    a = cp_als(X, 3, init="random", rng=5, max_iter=10, tol=0, n_init=2)
    b = cp_als(X, 3, init="random", rng=5, max_iter=10, tol=0, n_init=2)
    for fa, fb in zip(a.cp.factors, b.cp.factors):
        np.testing.assert_array_equal(fa, fb)
    np.testing.assert_array_equal(a.cp.weights, b.cp.weights)
    assert a.history.rel_error == b.history.rel_error


def test_n_init_keeps_best():
    X, _ = planted_cp((6, 7, 8), 3, noise=0.2, rng=14)
    single = [cp_als(X, 3, init="random", rng=g, max_iter=5, tol=0).rel_error
              for g in range(1)]
    multi = cp_als(X, 3, init="random", rng=0, max_iter=5, tol=0, n_init=4)
    assert multi.rel_error <= single[0] + 1e-15


def test_callback_can_stop():
    X, _ = planted_cp((6, 7, 8), 2, noise=0.2, rng=15)
    seen = []

    def cb(it, cp, err):
        seen.append((it, err))
        assert isinstance(cp, CPTensor)
        return it >= 3

    res = cp_als(X, 2, rng=0, max_iter=50, callback=cb)
    assert res.n_iter == 3 and [s[0] for s in seen] == [1, 2, 3]


def test_l2_reg_shrinks_factors():
    X, _ = planted_cp((6, 7, 8), 2, noise=0.2, rng=16)
    plain = cp_als(X, 2, rng=0, max_iter=30, tol=0)
    reg = cp_als(X, 2, rng=0, max_iter=30, tol=0, l2_reg=5.0)
    assert float(np.sum(reg.cp.weights)) < float(np.sum(plain.cp.weights))
    assert reg.rel_error > plain.rel_error


def test_rank_above_mode_size_and_singular_warning():
    from tensorfact import SingularGramWarning

    X, _ = planted_cp((3, 4, 30), 2, rng=17)
    # rank > I_0: SVD init padded with random columns; the mode-0 Gram matrices of the
    # other factors are then singular, which is reported, not turned into NaN
    with pytest.warns(SingularGramWarning, match="singular"):
        res = cp_als(X, 5, rng=0, max_iter=20)
    assert np.isfinite(res.rel_error) and res.rel_error < 1e-6


def test_zero_tensor():
    res = cp_als(np.zeros((3, 4, 5)), 2)
    assert res.rel_error == 0.0 and res.converged


def test_verbose_progress_bar_and_logging(capsys, caplog):
    X, _ = planted_cp((5, 6, 7), 2, rng=18)
    with caplog.at_level(logging.INFO, logger="tensorfact.cp_als"):
        cp_als(X, 2, rng=0, max_iter=5, verbose=True)
    err = capsys.readouterr().err
    assert "cp_als" in err  # tqdm writes to stderr
    assert any("relative error" in r.message for r in caplog.records)


def test_exact_error_recomputed_near_zero():
    # noise-free: the cheap formula would cancel catastrophically; the reported error
    # must still match the true residual
    X, _ = planted_cp((15, 16, 17), 3, rng=19)
    res = cp_als(X, 3, rng=0, max_iter=200, tol=1e-15)
    true_err = np.linalg.norm(X - _rec(res.cp)) / np.linalg.norm(X)
    assert res.rel_error < 1e-10
    assert abs(true_err - res.rel_error) < 1e-12


# --------------------------------------------------------------- bad input
@pytest.mark.parametrize("rank, exc", [(0, ValueError), (-2, ValueError), (2.5, TypeError),
                                       ("3", TypeError), (True, TypeError), (10**6, ValueError)])
def test_bad_rank(rank, exc):
    with pytest.raises(exc, match="rank"):
        cp_als(np.ones((3, 4, 5)), rank)


def test_bad_tensors():
    with pytest.raises(ValueError, match="at least 2 modes"):
        cp_als(np.ones(5), 1)
    with pytest.raises(ValueError, match="empty mode"):
        cp_als(np.ones((3, 0, 2)), 1)
    X = np.ones((3, 4, 5))
    X[1, 1, 1] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        cp_als(X, 1)
    X[1, 1, 1] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        cp_als(X, 1)
    with pytest.raises(TypeError, match="complex"):
        cp_als(np.ones((3, 4, 5), dtype=complex), 1)
    with pytest.raises(TypeError, match="array"):
        cp_als([[1.0, 2.0], [3.0, 4.0]], 1)


def test_bad_options():
    X = np.ones((3, 4, 5))
    with pytest.raises(ValueError, match="max_iter"):
        cp_als(X, 1, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        cp_als(X, 1, tol=-1.0)
    with pytest.raises(ValueError, match="l2_reg"):
        cp_als(X, 1, l2_reg=float("nan"))
    with pytest.raises(ValueError, match="n_init"):
        cp_als(X, 1, n_init=0)
    with pytest.raises(ValueError, match="init"):
        cp_als(X, 1, init="nvecs")
    with pytest.raises(TypeError, match="rng"):
        cp_als(X, 1, rng="seed")
    with pytest.raises(TypeError, match="callback"):
        cp_als(X, 1, callback=3)


def test_bad_init_cptensor():
    X = np.ones((3, 4, 5))
    good = [np.ones((3, 2)), np.ones((4, 2)), np.ones((5, 2))]
    with pytest.raises(ValueError, match="shape"):
        cp_als(X, 2, init=CPTensor([np.ones((3, 2)), np.ones((4, 2)), np.ones((6, 2))]))
    with pytest.raises(ValueError, match="rank"):
        cp_als(X, 3, init=CPTensor(good))
    with pytest.raises(TypeError, match="dtype"):
        cp_als(X, 2, init=CPTensor([g.astype(np.float32) for g in good]))
    bad = [g.copy() for g in good]
    bad[1][0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        cp_als(X, 2, init=CPTensor(bad))


def test_mixed_backends_raise():
    torch = pytest.importorskip("torch")
    X = np.ones((3, 4, 5))
    init = CPTensor([torch.ones((s, 2), dtype=torch.float64) for s in X.shape])
    with pytest.raises(TypeError, match="different namespaces"):
        cp_als(X, 2, init=init)


@pytest.mark.parametrize("mode", [0, 1, 2])
def test_svd_init_subspace_matches_unfolding_svd(backend, mode):
    from tensorfact import _backend as B
    from tensorfact.formats import as_format

    X, _ = planted_cp((90, 70, 8), 4, noise=0.01, rng=20)  # modes 0, 1 use the sketch path
    op = as_format(backend.asarray(X))
    U = B.to_numpy(op.leading_subspace(mode, 4, np.random.default_rng(0)))
    ref = np.linalg.svd(tf.unfold(X, mode), full_matrices=False)[0][:, :4]
    cosines = np.linalg.svd(U.T @ ref, compute_uv=False)
    np.testing.assert_allclose(cosines, 1.0, atol=1e-6)


@pytest.mark.parametrize("shape", [(30, 40, 3), (30, 40, 12), (40, 30)])
def test_power_step_every_layout(shape, rng):
    import array_api_compat.numpy as xpn

    from tensorfact.formats import DenseTensor

    X = rng.standard_normal(shape)
    op = DenseTensor(X, xpn)
    for mode in range(len(shape)):
        Q = rng.standard_normal((shape[mode], 5))
        Xn = tf.unfold(X, mode)
        np.testing.assert_allclose(op._power_step(mode, Q), Xn @ (Xn.T @ Q), rtol=1e-10)


def test_huge_but_finite_values_are_accepted():
    # the squares overflow, so the cheap screen is inconclusive; the elementwise check decides
    X = np.full((3, 4, 5), 1e200)
    X[0, 0, 0] = 2e200
    import array_api_compat.numpy as xpn

    from tensorfact._validation import check_finite

    check_finite(X, xpn)
    X[1, 1, 1] = -np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        check_finite(X, xpn)
