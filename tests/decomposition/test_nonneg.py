"""nonnegative_cp: recovery, agreement with TensorLy, formats, backends, conventions, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tensorfact as tf
from tensorfact import CPTensor, nonnegative_cp
from tensorfact import _backend as B
from tensorfact._kernels.nonneg import hals_sweeps_numba, hals_sweeps_xp

EPS = float(np.finfo(np.float64).eps)


def _planted(shape, R, seed, noise=0.0):
    """A non-negative CP tensor (uniform factors) plus non-negative noise."""
    g = np.random.default_rng(seed)
    truth = CPTensor([g.uniform(size=(s, R)) for s in shape])
    X = np.asarray(truth.to_dense())
    if noise:
        E = g.uniform(size=shape)
        X = X + noise * np.linalg.norm(X) * E / np.linalg.norm(E)
    return X, truth


def _init(shape, R, seed):
    g = np.random.default_rng(seed)
    return [g.uniform(size=(s, R)) for s in shape]


def _rec(cp):
    return B.to_numpy(cp.to_dense())


def _true_error(X, cp):
    return float(np.linalg.norm(X - _rec(cp)) / np.linalg.norm(X))


# ----------------------------------------------------------------- recovery
@pytest.mark.parametrize("method", ["hals", "mu"])
@pytest.mark.parametrize("shape", [(12, 13, 14), (6, 7, 8, 5)])
def test_recovers_planted_noise_free_tensor(method, shape):
    X, truth = _planted(shape, 3, seed=1)
    # MU converges sublinearly: it gets more sweeps and a looser target
    max_iter = 800 if method == "hals" else 3000
    res = nonnegative_cp(X, 3, method=method, init="random", rng=0, max_iter=max_iter,
                         tol=1e-14)
    assert res.cp.factor_match_score(truth) > 0.999
    assert res.rel_error < (1e-8 if method == "hals" else 1e-2)
    # the error formula's absolute error in the squared residual is a few eps ||X||^2
    assert abs(_true_error(X, res.cp) - res.rel_error) < 1e-10 + 64 * EPS / res.rel_error
    w, factors = res.cp
    assert bool(np.all(w >= 0)) and all(bool(np.all(A >= 0)) for A in factors)


def test_svd_init_recovers():
    X, truth = _planted((15, 16, 17), 3, seed=2)
    res = nonnegative_cp(X, 3, init="svd", rng=0, max_iter=800, tol=1e-14)
    assert res.cp.factor_match_score(truth) > 0.999


@pytest.mark.parametrize("method", ["hals", "mu"])
def test_history_tolerance_and_frozen_result(method):
    X, _ = _planted((10, 11, 12), 2, seed=3, noise=0.1)
    fixed = nonnegative_cp(X, 2, method=method, rng=0, max_iter=7, tol=0)
    assert (fixed.n_iter, fixed.converged, len(fixed.history)) == (7, False, 7)
    assert fixed.history.rel_error[-1] == fixed.rel_error
    assert abs(_true_error(X, fixed.cp) - fixed.rel_error) < 1e-12
    stopped = nonnegative_cp(X, 2, method=method, rng=0, max_iter=5000, tol=1e-6)
    assert stopped.converged and stopped.n_iter < 5000
    assert isinstance(stopped, tf.CPALSResult)
    with pytest.raises(AttributeError):
        stopped.rel_error = 0.0


# ------------------------------------------------------------- agreement
def _tl_init(init, R):
    import tensorly as tl

    return tl.cp_tensor.CPTensor((np.ones(R), [f.copy() for f in init]))


@pytest.mark.parametrize("shape", [(9, 10, 11), (5, 6, 7, 4)])
def test_hals_agrees_with_tensorly(shape):
    import tensorly as tl
    from tensorly.decomposition import non_negative_parafac_hals

    X, _ = _planted(shape, 3, seed=5, noise=0.1)
    init = _init(shape, 3, 6)
    for k in (1, 3, 20):
        ours = nonnegative_cp(X, 3, init=CPTensor([f.copy() for f in init]), max_iter=k, tol=0)
        ref = tl.cp_to_tensor(non_negative_parafac_hals(X, 3, n_iter_max=k,
                                                        init=_tl_init(init, 3), tol=0))
        # same update order and inner-loop rule: the same iterates up to rounding
        assert np.linalg.norm(_rec(ours.cp) - ref) / np.linalg.norm(ref) < 1e-10, k
        ref_err = np.linalg.norm(X - ref) / np.linalg.norm(X)
        assert ours.rel_error == pytest.approx(ref_err, rel=1e-10)


@pytest.mark.parametrize("shape", [(9, 10, 11), (5, 6, 7, 4)])
def test_mu_agrees_with_tensorly(shape):
    import tensorly as tl
    from tensorly.decomposition import non_negative_parafac

    X, _ = _planted(shape, 3, seed=7, noise=0.1)
    init = _init(shape, 3, 8)
    for k in (1, 3, 20):
        ours = nonnegative_cp(X, 3, method="mu", init=CPTensor([f.copy() for f in init]),
                              max_iter=k, tol=0)
        ref = tl.cp_to_tensor(non_negative_parafac(X, 3, n_iter_max=k,
                                                   init=_tl_init(init, 3), tol=0))
        assert np.linalg.norm(_rec(ours.cp) - ref) / np.linalg.norm(ref) < 1e-10, k
        ref_err = np.linalg.norm(X - ref) / np.linalg.norm(X)
        assert ours.rel_error == pytest.approx(ref_err, rel=1e-10)


def test_init_weights_are_part_of_the_model():
    X, _ = _planted((6, 7, 8), 2, seed=9, noise=0.1)
    f = _init(X.shape, 2, 10)
    w = np.array([2.0, 0.5])
    a = nonnegative_cp(X, 2, init=CPTensor(f, weights=w), max_iter=5, tol=0)
    b = nonnegative_cp(X, 2, init=CPTensor([f[0] * w] + f[1:]), max_iter=5, tol=0)
    np.testing.assert_allclose(_rec(a.cp), _rec(b.cp), rtol=1e-12, atol=1e-14)


# ----------------------------------------------------------------- formats
@pytest.mark.parametrize("method", ["hals", "mu"])
def test_sparse_equals_dense(method):
    X, _ = _planted((8, 9, 10), 3, seed=11, noise=0.1)
    X = np.where(np.random.default_rng(12).uniform(size=X.shape) < 0.4, X, 0.0)
    S = tf.SparseTensor.from_dense(X)
    for init in ("random", "svd"):
        d = nonnegative_cp(X, 3, method=method, init=init, rng=3, max_iter=15, tol=0)
        s = nonnegative_cp(S, 3, method=method, init=init, rng=3, max_iter=15, tol=0)
        np.testing.assert_allclose(_rec(s.cp), _rec(d.cp), rtol=1e-9, atol=1e-12)
        assert s.rel_error == pytest.approx(d.rel_error, rel=1e-9)


def test_dask_array_equals_dense():
    da = pytest.importorskip("dask.array")
    X, _ = _planted((10, 11, 12), 2, seed=20, noise=0.1)
    d = nonnegative_cp(X, 2, rng=0, max_iter=10, tol=0)
    c = nonnegative_cp(da.from_array(X, chunks=(5, 6, 6)), 2, rng=0, max_iter=10, tol=0)
    np.testing.assert_allclose(_rec(c.cp), _rec(d.cp), rtol=1e-9, atol=1e-12)
    Xn = X.copy()
    Xn[3, 4, 5] = -1.0
    with pytest.raises(ValueError, match="X has negative entries"):
        nonnegative_cp(da.from_array(Xn, chunks=(5, 6, 6)), 2)


def test_negative_sparse_values_are_refused():
    S = tf.SparseTensor(np.array([[0, 0, 0], [1, 2, 3]]), np.array([1.0, -2.0]), (2, 3, 4))
    with pytest.raises(ValueError, match="X has negative entries"):
        nonnegative_cp(S, 1)


# ---------------------------------------------------------------- backends
@pytest.mark.parametrize("method", ["hals", "mu"])
def test_backends_dtype_and_namespace(backend, dtype_name, method):
    Xn, _ = _planted((8, 9, 10), 2, seed=13, noise=0.05)
    X = backend.asarray(Xn, dtype=dtype_name)
    res = nonnegative_cp(X, 2, method=method, rng=0, max_iter=30)
    w, factors = res.cp
    assert factors[0].dtype == X.dtype and w.dtype == X.dtype
    assert type(factors[0]) is type(X)
    ref = nonnegative_cp(Xn, 2, method=method, rng=0, max_iter=30)
    tol = 1e-9 if dtype_name == "float64" else 1e-3
    assert res.rel_error == pytest.approx(ref.rel_error, rel=tol)
    np.testing.assert_allclose(_rec(res.cp), _rec(ref.cp), rtol=tol,
                               atol=tol * float(Xn.max()))


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
@pytest.mark.parametrize("n_rows, R", [(40, 5), (3000, 20)])  # serial and threaded kernels
def test_hals_kernel_matches_xp_twin(dtype, n_rows, R):
    import array_api_strict as xps

    g = np.random.default_rng(14)
    K = g.uniform(size=(30, R))
    M = (g.uniform(size=(n_rows, 30)) @ K).astype(dtype)
    G = (K.T @ K).astype(dtype)
    A = g.uniform(size=(n_rows, R)).astype(dtype)
    A0 = A.copy()
    for sweeps, tol in ((1, 0.0), (5, 1e-8), (50, 0.5)):
        got, n_got = hals_sweeps_numba(A, M, G, 1e-6, sweeps, tol)
        ref, n_ref = hals_sweeps_xp(xps, xps.asarray(A), xps.asarray(M), xps.asarray(G), 1e-6,
                                    sweeps, tol)
        assert n_got == n_ref
        rtol = 1e-10 if dtype == np.float64 else 1e-3
        np.testing.assert_allclose(got, np.asarray(ref), rtol=rtol, atol=rtol)
        assert got.dtype == dtype and bool(np.all(got >= 1e-6))
    np.testing.assert_array_equal(A, A0)  # the caller's A is not modified


def test_hals_kernel_skips_zero_diagonal():
    M = np.ones((4, 2))
    G = np.array([[0.0, 0.0], [0.0, 2.0]])
    A = np.full((4, 2), 3.0)
    got, _ = hals_sweeps_numba(A, M, G, 0.0, 1, 0.0)
    np.testing.assert_array_equal(got[:, 0], 3.0)
    np.testing.assert_allclose(got[:, 1], 0.5)


# ------------------------------------------------------------- conventions
def test_inputs_are_not_mutated():
    X, _ = _planted((7, 8, 9), 2, seed=15, noise=0.1)
    init = CPTensor(_init(X.shape, 2, 16), weights=np.array([2.0, 3.0]))
    before = [X.copy(), init.weights.copy(), *(f.copy() for f in init.factors)]
    for method in ("hals", "mu"):
        nonnegative_cp(X, 2, method=method, init=init, max_iter=5)
    after = [X, init.weights, *init.factors]
    assert all(np.array_equal(a, b) for a, b in zip(before, after))


def test_same_seed_bit_identical():
    X, _ = _planted((7, 8, 9), 3, seed=17, noise=0.1)
    a = nonnegative_cp(X, 3, init="random", rng=5, max_iter=10, tol=0)
    b = nonnegative_cp(X, 3, init="random", rng=5, max_iter=10, tol=0)
    for fa, fb in zip(a.cp.factors, b.cp.factors):
        np.testing.assert_array_equal(fa, fb)
    assert a.history.rel_error == b.history.rel_error


def test_callback_can_stop():
    X, _ = _planted((6, 7, 8), 2, seed=18, noise=0.2)
    seen = []

    def cb(it, cp, err):
        seen.append(it)
        assert isinstance(cp, CPTensor)
        return it >= 3

    res = nonnegative_cp(X, 2, rng=0, max_iter=50, callback=cb)
    assert res.n_iter == 3 and seen == [1, 2, 3]


def test_zero_and_integer_tensors():
    res = nonnegative_cp(np.zeros((3, 4, 5)), 2)
    assert res.rel_error == 0.0 and res.converged
    res = nonnegative_cp(np.arange(60).reshape(3, 4, 5) % 7, 2, rng=0, max_iter=20)
    assert res.cp.dtype == np.float64 and np.isfinite(res.rel_error)


@pytest.mark.parametrize("method", ["hals", "mu"])
@pytest.mark.parametrize("init", ["random", "svd"])
@pytest.mark.parametrize("c", [2.0**-1000, 2.0**-160, 2.0**160, 2.0**1000])
def test_scale_invariance(method, init, c):
    X, _ = _planted((9, 10, 11), 3, seed=19, noise=0.1)
    ref = nonnegative_cp(X, 3, method=method, init=init, rng=0, max_iter=15, tol=0)
    got = nonnegative_cp(X * c, 3, method=method, init=init, rng=0, max_iter=15, tol=0)
    assert got.rel_error == pytest.approx(ref.rel_error, rel=1e-9)
    np.testing.assert_allclose(np.asarray(got.cp.weights) / c, ref.cp.weights, rtol=1e-8)
    for a, b in zip(got.cp.factors, ref.cp.factors):
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)
    S = tf.SparseTensor.from_dense(X * c)
    sp = nonnegative_cp(S, 3, method=method, init=init, rng=0, max_iter=15, tol=0)
    assert sp.rel_error == pytest.approx(ref.rel_error, rel=1e-9)


@settings(max_examples=15, deadline=None, derandomize=True)
@given(shape=st.lists(st.integers(2, 7), min_size=3, max_size=4).map(tuple),
       R=st.integers(1, 4), seed=st.integers(0, 2**16), noise=st.sampled_from([0.0, 0.1, 1.0]),
       init=st.sampled_from(["random", "svd"]))
def test_hals_error_never_increases(shape, R, seed, noise, init):
    R = min(R, min(math.prod(shape) // s for s in shape))
    X, _ = _planted(shape, R, seed=seed, noise=noise)
    res = nonnegative_cp(X, R, init=init, rng=seed, max_iter=25, tol=0)
    errs = np.array(res.history.rel_error)
    eps = np.finfo(np.float64).eps
    # the cheap error formula carries an absolute error of a few eps ||X||^2 in the
    # squared residual, i.e. about eps / rel_error in rel_error
    slack = 1e-13 + 64 * eps / np.maximum(errs[1:], 1e-300)
    assert np.all(np.diff(errs) <= slack), errs


# --------------------------------------------------------------- bad input
def test_negative_data_is_refused():
    X = np.ones((3, 4, 5))
    X[1, 2, 3] = -0.5
    with pytest.raises(ValueError, match="X has negative entries"):
        nonnegative_cp(X, 2)


@pytest.mark.parametrize("rank, exc", [(0, ValueError), (2.5, TypeError), ("3", TypeError),
                                       (True, TypeError), (10**6, ValueError)])
def test_bad_rank(rank, exc):
    with pytest.raises(exc, match="rank"):
        nonnegative_cp(np.ones((3, 4, 5)), rank)


@pytest.mark.parametrize("option, value, exc", [
    ("method", "als", ValueError), ("method", None, TypeError), ("max_iter", 0, ValueError),
    ("inner_max_iter", 0, ValueError), ("inner_tol", -1.0, ValueError),
    ("tol", float("nan"), ValueError), ("init", "joint_schur", ValueError),
    ("rng", "seed", TypeError), ("callback", 3, TypeError),
])
def test_bad_options(option, value, exc):
    with pytest.raises(exc, match=option):
        nonnegative_cp(np.ones((3, 4, 5)), 1, **{option: value})


def test_nan_data_is_refused():
    X = np.ones((3, 4, 5))
    X[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN or Inf"):
        nonnegative_cp(X, 1)


def test_bad_init_cptensor():
    X = np.ones((3, 4, 5))
    good = [np.ones((3, 2)), np.ones((4, 2)), np.ones((5, 2))]
    neg = [g.copy() for g in good]
    neg[2][1, 1] = -1.0
    with pytest.raises(ValueError, match=r"init.factors\[2\] has negative"):
        nonnegative_cp(X, 2, init=CPTensor(neg))
    with pytest.raises(ValueError, match="init.weights has negative"):
        nonnegative_cp(X, 2, init=CPTensor(good, weights=np.array([1.0, -1.0])))
    with pytest.raises(ValueError, match="rank"):
        nonnegative_cp(X, 3, init=CPTensor(good))
    with pytest.raises(TypeError, match="dtype"):
        nonnegative_cp(X, 2, init=CPTensor([g.astype(np.float32) for g in good]))
