"""hosvd and tucker (HOOI): recovery, agreement with TensorLy and pyttb, sparse, backends."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorfact as tf
from tensorfact import SparseTensor, TuckerResult, TuckerTensor, hosvd, tucker
from tensorfact import _backend as B


def planted_tucker(shape, ranks, *, noise=0.0, seed=0):
    """``(X, truth)``: orthonormal factors, a Gaussian core, optional relative noise."""
    g = np.random.default_rng(seed)
    core = g.standard_normal(ranks)
    facs = [np.linalg.qr(g.standard_normal((s, r)))[0] for s, r in zip(shape, ranks)]
    truth = TuckerTensor(core, facs)
    X = truth.to_dense()
    if noise:
        E = g.standard_normal(shape)
        X = X + noise * np.linalg.norm(X) / np.linalg.norm(E) * E
    return X, truth


def true_error(X, tt):
    return float(np.linalg.norm(X - np.asarray(tt.to_dense())) / np.linalg.norm(X))


def subspace_gap(A, Bm):
    """Largest principal-angle sine between the column spaces of orthonormal A, Bm."""
    return float(np.linalg.norm(Bm - A @ (A.T @ Bm), 2))  # no sqrt(1 - cos^2) cancellation


# ----------------------------------------------------------------- recovery
@pytest.mark.parametrize("shape, ranks", [((12, 13, 14), (3, 4, 2)),
                                          ((6, 7, 8, 5), (2, 3, 2, 2)),
                                          ((30, 4, 20), (5, 4, 5))])
@pytest.mark.parametrize("solver", ["hosvd", "tucker"])
def test_recovers_planted_noise_free_tensor(shape, ranks, solver):
    X, truth = planted_tucker(shape, ranks, seed=1)
    res = hosvd(X, ranks) if solver == "hosvd" else tucker(X, ranks, tol=1e-14)
    assert isinstance(res, TuckerResult)
    assert res.rel_error < 1e-12
    assert true_error(X, res.tucker) < 1e-12
    for A, T in zip(res.tucker.factors, truth.factors):
        assert subspace_gap(np.asarray(A), T) < 1e-10


@pytest.mark.parametrize("svd", ["exact", "randomized"])
def test_noisy_fit_reported_error_is_true_error(svd):
    X, _ = planted_tucker((25, 26, 27), (3, 4, 5), noise=0.1, seed=2)
    res = tucker(X, (3, 4, 5), svd=svd, rng=0, tol=1e-12)
    assert res.rel_error == pytest.approx(true_error(X, res.tucker), rel=1e-8)
    assert res.rel_error < 0.1
    for A in res.tucker.factors:
        np.testing.assert_allclose(A.T @ A, np.eye(A.shape[1]), atol=1e-12)


def test_randomized_matches_exact_on_large_mode():
    X, _ = planted_tucker((200, 8, 9), (3, 3, 3), noise=0.01, seed=3)
    ex = tucker(X, (3, 3, 3), tol=0, max_iter=5)
    rd = tucker(X, (3, 3, 3), svd="randomized", rng=1, tol=0, max_iter=5)
    assert rd.rel_error == pytest.approx(ex.rel_error, rel=1e-8)
    hx = hosvd(X, (3, 3, 3))
    hr = hosvd(X, (3, 3, 3), svd="randomized", rng=1)
    assert hr.rel_error == pytest.approx(hx.rel_error, rel=1e-6)


def test_history_and_result_are_consistent():
    X, _ = planted_tucker((10, 11, 12), (2, 3, 2), noise=0.2, seed=4)
    res = tucker(X, (2, 3, 2), init="random", rng=0, max_iter=50, tol=1e-12)
    assert len(res.history) == res.n_iter
    assert res.history.rel_error[-1] == res.rel_error
    assert np.all(np.diff(res.history.time) >= 0)
    # HOOI never increases the error (up to rounding)
    assert np.all(np.diff(np.array(res.history.rel_error)) <= 1e-12)
    with pytest.raises(AttributeError):
        res.n_iter = 3


def test_tol_zero_runs_max_iter_and_converged_flag():
    X, _ = planted_tucker((8, 9, 10), (2, 2, 2), noise=0.3, seed=5)
    res = tucker(X, (2, 2, 2), init="random", rng=0, max_iter=7, tol=0)
    assert res.n_iter == 7 and not res.converged
    res = tucker(X, (2, 2, 2), max_iter=500, tol=1e-6)
    assert res.converged and res.n_iter < 500


def test_hosvd_mode_order_and_result():
    X, _ = planted_tucker((10, 12, 14), (3, 3, 3), noise=0.1, seed=6)
    a = hosvd(X, (3, 3, 3))
    b = hosvd(X, (3, 3, 3), mode_order=(2, 0, 1))
    c = hosvd(X, 3, mode_order=[-1, 0, 1])
    assert a.n_iter == 0 and a.converged and len(a.history) == 0
    for r in (a, b, c):
        assert r.rel_error == pytest.approx(true_error(X, r.tucker), rel=1e-10)
    assert b.rel_error == pytest.approx(c.rel_error, rel=1e-12)


# ------------------------------------------------------------- agreement with peers
@pytest.mark.parametrize("shape, ranks", [((9, 10, 11), (2, 3, 4)), ((5, 6, 7, 4), (2, 2, 3, 2))])
def test_agrees_with_tensorly_from_same_init(shape, ranks):
    import tensorly as tl
    from tensorly.decomposition import tucker as tl_tucker

    X, _ = planted_tucker(shape, ranks, noise=0.3, seed=7)
    g = np.random.default_rng(8)
    init = TuckerTensor(g.standard_normal(ranks),
                        [np.linalg.qr(g.standard_normal((s, r)))[0] for s, r in zip(shape, ranks)])
    for iters in (1, 3, 10):
        ref = tl_tucker(X, list(ranks), init=init.to_tensorly(), n_iter_max=iters, tol=0)
        mine = tucker(X, ranks, init=init, max_iter=iters, tol=0)
        D = tl.tucker_to_tensor(ref)
        np.testing.assert_allclose(mine.tucker.to_dense(), D, atol=1e-8 * np.linalg.norm(X))
        assert mine.rel_error == pytest.approx(true_error(X, TuckerTensor.from_tensorly(ref)),
                                               abs=1e-8)


def test_agrees_with_pyttb_tucker_als():
    import pyttb

    shape, ranks = (9, 10, 11), (2, 3, 4)
    X, _ = planted_tucker(shape, ranks, noise=0.3, seed=9)
    g = np.random.default_rng(10)
    facs = [np.linalg.qr(g.standard_normal((s, r)))[0] for s, r in zip(shape, ranks)]
    init = TuckerTensor(np.zeros(ranks), facs)
    for iters in (1, 4):
        _, _, out = pyttb.tucker_als(pyttb.tensor(X.copy()), list(ranks), stoptol=-1.0,
                                     maxiters=iters, init=[A.copy() for A in facs], printitn=0)
        mine = tucker(X, ranks, init=init, max_iter=iters, tol=0)
        assert mine.rel_error == pytest.approx(1.0 - out["fit"], abs=1e-8)


# -------------------------------------------------------------- identities
@settings(max_examples=20, deadline=None)
@given(shape=st.lists(st.integers(2, 6), min_size=3, max_size=4), seed=st.integers(0, 2**16),
       data=st.data())
def test_hosvd_error_bounded_by_discarded_singular_values(shape, seed, data):
    X = np.random.default_rng(seed).standard_normal(shape)
    ranks = [data.draw(st.integers(1, s)) for s in shape]
    for n, r in enumerate(ranks):  # keep the ranks valid (R_n <= product of the others)
        ranks[n] = min(r, math.prod(ranks) // r)
    res = hosvd(X, tuple(ranks))
    bound = 0.0
    for n, r in enumerate(ranks):
        s = np.linalg.svd(tf.unfold(X, n), compute_uv=False)
        bound += float(np.sum(s[r:] ** 2))
    err2 = (res.rel_error * np.linalg.norm(X)) ** 2
    assert err2 <= bound * (1 + 1e-10) + 1e-12
    assert res.rel_error == pytest.approx(true_error(X, res.tucker), rel=1e-7, abs=1e-12)


@settings(max_examples=15, deadline=None)
@given(shape=st.lists(st.integers(2, 6), min_size=3, max_size=3), seed=st.integers(0, 2**16))
def test_tucker_norm_equals_core_norm(shape, seed):
    X = np.random.default_rng(seed).standard_normal(shape)
    ranks = tuple(max(1, s // 2) for s in shape)
    ranks = tuple(min(r, math.prod(ranks) // r) for r in ranks)
    tt = tucker(X, ranks, max_iter=3, tol=0).tucker
    assert float(tt.norm()) == pytest.approx(float(np.linalg.norm(tt.core)), rel=1e-12)
    assert float(tt.norm()) == pytest.approx(float(np.linalg.norm(tt.to_dense())), rel=1e-10)


# --------------------------------------------------------------------- sparse
@pytest.mark.parametrize("shape, ranks", [((12, 10, 9), (3, 2, 4)), ((6, 5, 7, 4), (2, 2, 3, 2))])
def test_sparse_tucker_equals_dense_tucker(shape, ranks):
    g = np.random.default_rng(11)
    X, _ = planted_tucker(shape, ranks, noise=0.2, seed=12)
    X = X * (g.random(shape) < 0.3)
    S = SparseTensor.from_dense(X)
    init = hosvd(X, ranks).tucker
    a = tucker(S, ranks, init=init, max_iter=6, tol=0)
    b = tucker(X, ranks, init=init, max_iter=6, tol=0)
    assert a.rel_error == pytest.approx(b.rel_error, rel=1e-9)
    np.testing.assert_allclose(a.tucker.to_dense(), b.tucker.to_dense(), atol=1e-9)
    assert a.rel_error == pytest.approx(true_error(X, a.tucker), rel=1e-8)
    # the sparse HOSVD (not sequential) is a valid Tucker model with its true error
    h = hosvd(S, ranks)
    assert h.rel_error == pytest.approx(true_error(X, h.tucker), rel=1e-8)
    d = tucker(S, ranks, tol=1e-10, max_iter=200)
    assert d.rel_error <= h.rel_error + 1e-12


def test_sparse_other_namespace():
    import array_api_strict as xs

    shape, ranks = (8, 7, 6), (2, 3, 2)
    X, _ = planted_tucker(shape, ranks, noise=0.2, seed=13)
    X = X * (np.random.default_rng(14).random(shape) < 0.4)
    S = SparseTensor.from_dense(X)
    Sx = SparseTensor(xs.asarray(np.asarray(S.coords)), xs.asarray(np.asarray(S.values)), shape)
    a = tucker(Sx, ranks, init="random", rng=0, max_iter=4, tol=0)
    b = tucker(S, ranks, init="random", rng=0, max_iter=4, tol=0)
    assert a.rel_error == pytest.approx(b.rel_error, rel=1e-9)


# ------------------------------------------------------------------- backends
def test_backends_dtype_and_namespace(backend, dtype_name):
    Xn, _ = planted_tucker((8, 9, 10), (2, 3, 2), noise=0.1, seed=15)
    X = backend.asarray(Xn, dtype=dtype_name)
    res = tucker(X, (2, 3, 2), max_iter=20, tol=1e-10)
    tt = res.tucker
    assert type(tt.core) is type(X) and tt.core.dtype == X.dtype
    assert all(A.dtype == X.dtype for A in tt.factors)
    tol = 1e-3 if dtype_name == "float32" else 1e-9
    ref = tucker(Xn, (2, 3, 2), max_iter=20, tol=1e-10)
    assert res.rel_error == pytest.approx(ref.rel_error, rel=tol)
    h = hosvd(X, (2, 3, 2), svd="randomized", rng=0)
    assert type(h.tucker.core) is type(X)


def test_same_result_on_every_backend(backend):
    Xn, _ = planted_tucker((7, 8, 9), (2, 2, 3), noise=0.2, seed=16)
    res = tucker(backend.asarray(Xn), (2, 2, 3), init="random", rng=42, max_iter=5, tol=0)
    ref = tucker(Xn, (2, 2, 3), init="random", rng=42, max_iter=5, tol=0)
    np.testing.assert_allclose(B.to_numpy(res.tucker.to_dense()), ref.tucker.to_dense(),
                               atol=1e-10)


# --------------------------------------------------------------- conventions
def test_inputs_are_not_mutated():
    X, _ = planted_tucker((6, 7, 8), (2, 2, 2), noise=0.1, seed=17)
    init = hosvd(X, (2, 2, 2)).tucker
    X0 = X.copy()
    f0 = [np.array(A, copy=True) for A in init.factors]
    tucker(X, (2, 2, 2), init=init, max_iter=3, tol=0)
    hosvd(X, (2, 2, 2))
    np.testing.assert_array_equal(X, X0)
    for A, A0 in zip(init.factors, f0):
        np.testing.assert_array_equal(A, A0)
    S = SparseTensor.from_dense(X)
    v0 = np.array(S.values, copy=True)
    tucker(S, (2, 2, 2), max_iter=2, tol=0)
    np.testing.assert_array_equal(S.values, v0)


@pytest.mark.parametrize("e", [-1000, 1000])
@pytest.mark.parametrize("solver", ["hosvd", "tucker"])
def test_scale_invariance(e, solver):
    X, _ = planted_tucker((7, 8, 9), (2, 3, 2), noise=0.1, seed=18)

    def run(Y):
        if solver == "hosvd":
            return hosvd(Y, (2, 3, 2))
        return tucker(Y, (2, 3, 2), max_iter=10, tol=0)

    ref = run(X)
    res = run(X * 2.0**e)
    assert res.rel_error == pytest.approx(ref.rel_error, rel=1e-12)
    np.testing.assert_allclose(np.asarray(res.tucker.core) * 2.0**-e, ref.tucker.core,
                               rtol=1e-10, atol=1e-10 * np.abs(ref.tucker.core).max())
    assert math.isfinite(float(res.tucker.norm()))
    S = SparseTensor.from_dense(X * 2.0**e)
    assert run(S).rel_error == pytest.approx(run(SparseTensor.from_dense(X)).rel_error,
                                             rel=1e-10)


def test_zero_tensor():
    res = tucker(np.zeros((3, 4, 5)), (2, 2, 2))
    assert res.rel_error == 0.0 and not np.any(res.tucker.to_dense())
    assert hosvd(np.zeros((3, 4, 5)), 2).rel_error == 0.0


def test_integer_input_is_promoted():
    X = np.arange(60).reshape(3, 4, 5) % 7
    res = tucker(X, (2, 2, 2), max_iter=3)
    assert res.tucker.dtype == np.float64


def test_same_seed_bit_identical():
    X, _ = planted_tucker((6, 7, 8), (2, 2, 2), noise=0.3, seed=19)
    a = tucker(X, (2, 2, 2), init="random", svd="randomized", rng=5, max_iter=4, tol=0)
    b = tucker(X, (2, 2, 2), init="random", svd="randomized", rng=5, max_iter=4, tol=0)
    np.testing.assert_array_equal(a.tucker.core, b.tucker.core)


def test_callback_can_stop_and_verbose(caplog, capsys):
    X, _ = planted_tucker((6, 7, 8), (2, 2, 2), noise=0.3, seed=20)
    seen = []

    def cb(it, tt, err):
        seen.append((it, isinstance(tt, TuckerTensor), err))
        return it == 2

    res = tucker(X, (2, 2, 2), max_iter=10, tol=0, callback=cb)
    assert res.n_iter == 2 and not res.converged and [s[0] for s in seen] == [1, 2]
    assert all(s[1] for s in seen)
    with caplog.at_level(logging.INFO, logger="tensorfact.tucker"):
        tucker(X, (2, 2, 2), max_iter=2, verbose=True)
    assert any("tucker" in r.message for r in caplog.records)


# ----------------------------------------------------------------- bad input
@pytest.mark.parametrize("ranks, exc, word", [
    ((2, 2), ValueError, "ranks must have length 3"),
    ((2, 2, 9), ValueError, r"ranks\[2\]=9 exceeds the size 5"),
    ((2, 2.0, 2), TypeError, r"ranks\[1\]"),
    ((2, True, 2), TypeError, r"ranks\[1\]"),
    ((0, 2, 2), ValueError, r"ranks\[0\]"),
    ((3, 1, 2), ValueError, r"ranks\[0\]=3 exceeds the product"),
    ("abc", TypeError, "ranks"),
    (2.5, TypeError, "ranks"),
    (None, TypeError, "ranks"),
])
@pytest.mark.parametrize("solver", [hosvd, tucker])
def test_bad_ranks(ranks, exc, word, solver):
    with pytest.raises(exc, match=word):
        solver(np.ones((3, 4, 5)), ranks)


@pytest.mark.parametrize("solver, kwargs, exc, word", [
    (hosvd, dict(mode_order=(0, 1, 3)), ValueError, "mode_order"),
    (hosvd, dict(mode_order=(0, 1)), ValueError, "mode_order"),
    (hosvd, dict(mode_order=(0, 1.0, 2)), TypeError, "mode_order"),
    (hosvd, dict(svd="qr"), ValueError, "svd"),
    (tucker, dict(svd="lanczos"), ValueError, "svd"),
    (tucker, dict(method="als"), ValueError, "method"),
    (tucker, dict(init="svd"), ValueError, "init"),
    (tucker, dict(init=3), TypeError, "init"),
    (tucker, dict(max_iter=0), ValueError, "max_iter"),
    (tucker, dict(tol=-1.0), ValueError, "tol"),
    (tucker, dict(callback=3), TypeError, "callback"),
    (tucker, dict(rng="seed"), TypeError, "rng"),
])
def test_bad_options(solver, kwargs, exc, word):
    X = np.random.default_rng(0).standard_normal((3, 4, 5))
    with pytest.raises(exc, match=word):
        solver(X, 2, **kwargs)


def test_bad_tensors():
    X = np.random.default_rng(0).standard_normal((3, 4, 5))
    X[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        tucker(X, 2)
    with pytest.raises(ValueError, match="X"):
        hosvd(np.ones(4), 1)
    with pytest.raises(TypeError, match="X"):
        tucker(np.ones((3, 4, 5), dtype=complex), 2)


def test_bad_init_tucker_tensor():
    X = np.random.default_rng(0).standard_normal((3, 4, 5))
    good = hosvd(X, (2, 2, 2)).tucker
    with pytest.raises(ValueError, match="init has ranks"):
        tucker(X, (2, 2, 1), init=good)
    with pytest.raises(ValueError, match="init has shape"):
        tucker(X[:, :, :4], (2, 2, 2), init=good)
    with pytest.raises(TypeError, match="init has dtype"):
        tucker(X.astype(np.float32), (2, 2, 2), init=good)
    bad = TuckerTensor(good.core, [good.factors[0], good.factors[1] * np.nan, good.factors[2]])
    with pytest.raises(ValueError, match=r"init.factors\[1\]"):
        tucker(X, (2, 2, 2), init=bad)


def test_public_names():
    assert tf.tucker is tucker and tf.hosvd is hosvd
    assert tf.decomposition.TuckerResult is TuckerResult


@pytest.mark.parametrize("sparse", [False, True])
def test_subnormal_data_keeps_the_model_precise(sparse):
    X, _ = planted_tucker((6, 7, 8), (2, 3, 2), noise=0.1, seed=21)
    tiny = np.ldexp(X, -1070)  # subnormal: a few significant bits per entry
    data = SparseTensor.from_dense(tiny) if sparse else tiny
    res = tucker(data, (2, 3, 2), max_iter=5, tol=0)
    # the model times 2^1070, computed exactly (powers of two moved between the arrays)
    exps = [math.frexp(float(np.linalg.norm(np.asarray(A)[:, 0])))[1] for A in res.tucker.factors]
    facs = [np.ldexp(np.asarray(A), -e) for A, e in zip(res.tucker.factors, exps)]
    core = np.ldexp(np.asarray(res.tucker.core), 1070 + sum(exps))
    data_up = np.ldexp(tiny, 1070)
    err = np.linalg.norm(data_up - TuckerTensor(core, facs).to_dense()) / np.linalg.norm(data_up)
    assert res.rel_error == pytest.approx(err, rel=1e-10)


def test_gram_eigenvector_path_matches_svd_path(monkeypatch):
    from tensorfact.decomposition import _tucker_ops

    X, _ = planted_tucker((10, 12, 14), (3, 3, 3), noise=0.05, seed=22)
    ref = hosvd(X, (3, 3, 3))
    monkeypatch.setattr(_tucker_ops, "_SVD_ENTRIES", 0)  # every unfolding through its Gram
    res = hosvd(X, (3, 3, 3))
    assert res.rel_error == pytest.approx(ref.rel_error, rel=1e-10)
    np.testing.assert_allclose(res.tucker.to_dense(), ref.tucker.to_dense(), atol=1e-10)
