"""cp_als with missing data (mask=, missing='weighted' | 'em'): recovery, agreement, bad masks."""

from __future__ import annotations

import numpy as np
import pytest

import tensorfact as tf
from tensorfact import CPTensor, SparseTensor, cp_als
from tensorfact import _backend as B
from tensorfact._kernels.masked import mode_layout, mttkrp_sorted, row_solve_numba, row_solve_xp
from tensorfact._kernels.sparse import mttkrp_xp
from tensorfact.datasets import planted_cp

METHODS = ["weighted", "em"]


def _problem(shape, rank, frac_missing, *, noise=0.0, seed=0):
    X, truth = planted_cp(shape, rank, noise=noise, rng=seed)
    M = np.random.default_rng(seed + 100).random(shape) >= frac_missing
    return X, M, truth


def _rec(cp):
    return B.to_numpy(cp.to_dense())


def _observed_rel(X, M, cp):
    D = _rec(cp)
    return np.linalg.norm((X - D)[M]) / np.linalg.norm(X[M])


def _random_init(shape, rank, seed=7):
    g = np.random.default_rng(seed)
    return CPTensor([g.standard_normal((s, rank)) for s in shape], weights=g.random(rank) + 0.5)


# ----------------------------------------------------------------- recovery
@pytest.mark.parametrize("missing", METHODS)
@pytest.mark.parametrize("frac", [0.5, 0.9])
@pytest.mark.parametrize("shape, rank", [
    pytest.param((40, 40, 40), 3, id="40^3-R3"),
    pytest.param((100, 100, 100), 5, id="100^3-R5", marks=pytest.mark.slow),
])
def test_recovers_planted(missing, frac, shape, rank):
    X, M, truth = _problem(shape, rank, frac, seed=1)
    res = cp_als(X, rank, mask=M, missing=missing, rng=0, max_iter=3000, tol=1e-14)
    assert res.cp.factor_match_score(truth) > 0.99
    # the reported error is the error over the observed entries
    assert res.rel_error == pytest.approx(_observed_rel(X, M, res.cp), rel=1e-6, abs=1e-12)


def test_weighted_noisy_reaches_observed_noise_floor():
    X, M, truth = _problem((30, 31, 32), 3, 0.5, noise=0.05, seed=3)
    res = cp_als(X, 3, mask=M, rng=0, max_iter=500, tol=1e-12)
    floor = _observed_rel(X, M, truth)
    assert res.rel_error <= floor * (1 + 1e-6)
    assert res.rel_error > 0.9 * floor
    assert res.cp.factor_match_score(truth) > 0.99


@pytest.mark.parametrize("missing", METHODS)
def test_errors_never_increase(missing):
    X, M, _ = _problem((15, 16, 17), 3, 0.6, noise=0.1, seed=4)
    res = cp_als(X, 3, mask=M, missing=missing, rng=0, max_iter=40, tol=0)
    errs = np.array(res.history.rel_error)
    assert np.all(np.diff(errs) <= 1e-12 * errs[:-1] + 1e-15)
    assert len(res.history) == res.n_iter == 40


# -------------------------------------------------------------- agreement
@pytest.mark.parametrize("shape", [(12, 13, 14), (6, 7, 5, 8)])
def test_em_agrees_with_tensorly_masked_parafac(shape):
    tl = pytest.importorskip("tensorly")
    from tensorly.decomposition import parafac

    X, M, _ = _problem(shape, 3, 0.5, noise=0.1, seed=5)
    init = _random_init(shape, 3)
    # TensorLy's first sweep uses the missing entries as passed; tensorfact completes them
    # with the initial model first: the same iterates when TensorLy gets them pre-filled
    Xf = np.where(M, X, init.to_dense())
    for k in (1, 4, 12):
        ours = cp_als(X, 3, mask=M, missing="em", init=init, max_iter=k, tol=0)
        ref = parafac(Xf, 3, init=(init.weights.copy(), [A.copy() for A in init.factors]),
                      mask=M, n_iter_max=k, tol=0)
        D = tl.cp_to_tensor(ref)
        assert np.linalg.norm(_rec(ours.cp) - D) / np.linalg.norm(D) < 1e-10, k


@pytest.mark.parametrize("init", ["svd", "random"])
def test_weighted_all_observed_equals_unmasked(init):
    X, _ = planted_cp((10, 11, 12), 3, noise=0.2, rng=6)
    ref = cp_als(X, 3, init=init, rng=0, max_iter=20, tol=0)
    res = cp_als(X, 3, mask=np.ones(X.shape, dtype=bool), init=init, rng=0, max_iter=20, tol=0)
    np.testing.assert_allclose(_rec(res.cp), _rec(ref.cp), rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(res.history.rel_error, ref.history.rel_error, rtol=1e-9)


def test_em_all_observed_equals_unmasked():
    X, _ = planted_cp((10, 11, 12), 3, noise=0.2, rng=6)
    ref = cp_als(X, 3, rng=0, max_iter=20, tol=0)
    res = cp_als(X, 3, mask=np.ones(X.shape, dtype=bool), missing="em", rng=0, max_iter=20,
                 tol=0)
    np.testing.assert_allclose(_rec(res.cp), _rec(ref.cp), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("missing", METHODS)
def test_nan_mask_equals_explicit_mask(missing):
    X, M, _ = _problem((11, 12, 13), 2, 0.4, noise=0.1, seed=7)
    Xnan = np.where(M, X, np.nan)
    a = cp_als(X, 2, mask=M, missing=missing, rng=0, max_iter=10, tol=0)
    b = cp_als(Xnan, 2, mask="nan", missing=missing, rng=0, max_iter=10, tol=0)
    np.testing.assert_array_equal(_rec(a.cp), _rec(b.cp))
    assert a.rel_error == b.rel_error


@pytest.mark.parametrize("missing", METHODS)
def test_sparse_observed_equals_dense_masked(missing):
    X, M, _ = _problem((11, 12, 13), 2, 0.7, noise=0.1, seed=8)
    S = SparseTensor(np.argwhere(M), X[M], X.shape)
    a = cp_als(X, 2, mask=M, missing=missing, rng=0, max_iter=10, tol=0)
    b = cp_als(S, 2, mask="observed", missing=missing, rng=0, max_iter=10, tol=0)
    np.testing.assert_allclose(_rec(a.cp), _rec(b.cp), rtol=1e-12, atol=1e-13)
    assert b.rel_error == pytest.approx(a.rel_error, rel=1e-12)


def test_sparse_observed_zeros_are_not_assumed():
    # stored explicit zeros are observed; absent entries are not
    X, M, truth = _problem((20, 21, 22), 2, 0.6, seed=9)
    S = SparseTensor(np.argwhere(M), X[M], X.shape)
    res = cp_als(S, 2, mask="observed", rng=0, max_iter=500, tol=1e-14)
    assert res.cp.factor_match_score(truth) > 0.99
    unmasked = cp_als(S, 2, rng=0, max_iter=50)
    assert unmasked.cp.factor_match_score(truth) < res.cp.factor_match_score(truth)


def test_integer_mask_equals_boolean_mask():
    X, M, _ = _problem((8, 9, 10), 2, 0.5, seed=10)
    a = cp_als(X, 2, mask=M, rng=0, max_iter=5, tol=0)
    b = cp_als(X, 2, mask=M.astype(np.int64), rng=0, max_iter=5, tol=0)
    np.testing.assert_array_equal(_rec(a.cp), _rec(b.cp))


def test_missing_values_are_never_read():
    X, M, _ = _problem((8, 9, 10), 2, 0.5, seed=11)
    Y = np.where(M, X, np.inf)
    for missing in METHODS:
        a = cp_als(X, 2, mask=M, missing=missing, rng=0, max_iter=5, tol=0)
        b = cp_als(Y, 2, mask=M, missing=missing, rng=0, max_iter=5, tol=0)
        np.testing.assert_array_equal(_rec(a.cp), _rec(b.cp))


# ------------------------------------------------------------- the kernel
@pytest.mark.parametrize("l2_reg", [0.0, 0.1])
def test_row_solve_numba_matches_twin_and_dense_reference(l2_reg):
    import array_api_compat.numpy as xnp

    g = np.random.default_rng(12)
    shape, R = (9, 10, 11), 4
    M = g.random(shape) < 0.3
    M[3] = False          # a row with no observation: zero
    M[5] = False
    M[5, 0, :2] = True    # a row with 2 < R observations: the ridge fallback
    coords = np.argwhere(M)
    vals = g.standard_normal(coords.shape[0])
    factors = [g.standard_normal((s, R)) for s in shape]
    layout = mode_layout(coords, 0, shape[0])
    A, n_ridged = row_solve_numba(layout, vals, factors, 0, l2_reg=l2_reg)
    At, n_ridged_t = row_solve_xp(xnp, coords, vals, factors, 0, l2_reg=l2_reg)
    # the ridged row (5) is solved at condition ~ 1/sqrt(eps): agreement to ~sqrt(eps)
    np.testing.assert_allclose(A, At, rtol=1e-6, atol=1e-8)
    full = [i for i in range(shape[0]) if i != 5]
    np.testing.assert_allclose(A[full], At[full], rtol=1e-10, atol=1e-12)
    assert n_ridged == n_ridged_t == (1 if l2_reg == 0 else 0)
    assert np.all(A[3] == 0)
    for i in range(shape[0]):
        rows = coords[coords[:, 0] == i]
        if i in (3, 5) or len(rows) == 0:
            continue
        K = factors[1][rows[:, 1]] * factors[2][rows[:, 2]]
        x = vals[coords[:, 0] == i]
        ref = np.linalg.solve(K.T @ K + l2_reg * np.eye(R), K.T @ x)
        np.testing.assert_allclose(A[i], ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("n_obs", [300, 200_000])  # one thread; mttkrp_numba's chunks
def test_mttkrp_sorted_matches_twin(n_obs):
    import array_api_compat.numpy as xnp

    g = np.random.default_rng(13)
    shape, R = (40, 50, 60), 3
    coords = np.unique(np.stack([g.integers(0, s, n_obs) for s in shape], axis=1), axis=0)
    vals = g.standard_normal(coords.shape[0])
    factors = [g.standard_normal((s, R)) for s in shape]
    for mode in range(3):
        got = mttkrp_sorted(mode_layout(coords, mode, shape[mode]), vals, factors, mode)
        ref = mttkrp_xp(xnp, coords, vals, factors, mode, shape[mode])
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)


def test_empty_slices_warn_and_get_zero_rows():
    X, M, _ = _problem((8, 9, 10), 2, 0.3, seed=13)
    M[2] = False
    with pytest.warns(RuntimeWarning, match="mode 0"):
        res = cp_als(X, 2, mask=M, rng=0, max_iter=5, tol=0)
    assert np.all(res.cp.factors[0][2] == 0)


# ---------------------------------------------------------------- backends
@pytest.mark.parametrize("missing", METHODS)
def test_backends_agree(backend, missing):
    X, M, _ = _problem((7, 8, 9), 2, 0.5, noise=0.2, seed=14)
    ref = cp_als(X, 2, mask=M, missing=missing, init="random", rng=3, max_iter=8, tol=0)
    Xb = backend.asarray(X)
    Mb = backend.asarray(M)
    res = cp_als(Xb, 2, mask=Mb, missing=missing, init="random", rng=3, max_iter=8, tol=0)
    w, factors = res.cp
    assert type(factors[0]) is type(Xb) and factors[0].dtype == Xb.dtype
    np.testing.assert_allclose(_rec(res.cp), _rec(ref.cp), rtol=1e-9, atol=1e-11)
    assert res.rel_error == pytest.approx(ref.rel_error, rel=1e-9)


def test_backends_float32(backend):
    X, M, truth = _problem((10, 11, 12), 2, 0.5, seed=15)
    Xb = backend.asarray(X, dtype="float32")
    res = cp_als(Xb, 2, mask=backend.asarray(M), rng=0, max_iter=200, tol=1e-10)
    assert res.cp.factors[0].dtype == Xb.dtype
    assert res.rel_error < 1e-4


# ---------------------------------------------------------------- contracts
@pytest.mark.parametrize("missing", METHODS)
def test_inputs_are_not_mutated(missing):
    X, M, _ = _problem((8, 9, 10), 2, 0.5, seed=16)
    Xnan = np.where(M, X, np.nan)
    init = _random_init(X.shape, 2)
    copies = [a.copy() for a in (X, M, Xnan, *init.factors, init.weights)]
    cp_als(X, 2, mask=M, missing=missing, init=init, max_iter=3, tol=0)
    cp_als(Xnan, 2, mask="nan", missing=missing, init=init, max_iter=3, tol=0)
    for a, b in zip((X, M, Xnan, *init.factors, init.weights), copies):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("missing", METHODS)
@pytest.mark.parametrize("c", [2.0**-1000, 2.0**1000])
def test_scale_invariance(missing, c):
    X, M, _ = _problem((9, 10, 11), 2, 0.5, noise=0.1, seed=17)
    ref = cp_als(X, 2, mask=M, missing=missing, rng=0, max_iter=15, tol=0)
    got = cp_als(X * c, 2, mask=M, missing=missing, rng=0, max_iter=15, tol=0)
    assert got.rel_error == pytest.approx(ref.rel_error, rel=1e-10)
    np.testing.assert_allclose(np.asarray(got.cp.weights) / c, ref.cp.weights, rtol=1e-10)
    S = SparseTensor(np.argwhere(M), X[M] * c, X.shape)
    got_s = cp_als(S, 2, mask="observed", missing=missing, rng=0, max_iter=15, tol=0)
    assert got_s.rel_error == pytest.approx(ref.rel_error, rel=1e-10)


def test_zero_observed_values_give_zero_model():
    X = np.zeros((4, 5, 6))
    res = cp_als(X, 2, mask=np.ones(X.shape, bool))
    assert res.rel_error == 0.0 and res.converged


def test_n_init_and_callback():
    X, M, _ = _problem((8, 9, 10), 2, 0.5, noise=0.1, seed=18)
    seen = []
    res = cp_als(X, 2, mask=M, rng=0, max_iter=50, n_init=2,
                 callback=lambda it, cp, err: seen.append(err) or it == 3)
    assert res.n_iter == 3 and not res.converged
    assert len(seen) == 6


# ---------------------------------------------------------------- bad input
def test_bad_masks_name_the_argument():
    X, M, _ = _problem((5, 6, 7), 2, 0.5, seed=19)
    with pytest.raises(ValueError, match="mask has shape"):
        cp_als(X, 2, mask=M[:4])
    with pytest.raises(TypeError, match="mask must be boolean"):
        cp_als(X, 2, mask=M.astype(float))
    with pytest.raises(ValueError, match="mask of integer dtype"):
        cp_als(X, 2, mask=M.astype(np.int64) * 2)
    with pytest.raises(ValueError, match="mask has no observed entry"):
        cp_als(X, 2, mask=np.zeros(X.shape, bool))
    with pytest.raises(ValueError, match="mask has no observed entry"):
        cp_als(np.full(X.shape, np.nan), 2, mask="nan")
    with pytest.raises(ValueError, match="mask must be a boolean array, 'nan' or 'observed'"):
        cp_als(X, 2, mask="missing")
    with pytest.raises(ValueError, match="mask='observed' needs X as a SparseTensor"):
        cp_als(X, 2, mask="observed")
    with pytest.raises(TypeError, match="mask must be a boolean array"):
        cp_als(X, 2, mask=[[True]])
    S = SparseTensor(np.argwhere(M), X[M], X.shape)
    with pytest.raises(ValueError, match="mask must be 'observed' when X is a SparseTensor"):
        cp_als(S, 2, mask=M)
    with pytest.raises(ValueError, match="mask must be 'observed' when X is a SparseTensor"):
        cp_als(S, 2, mask="nan")
    empty = SparseTensor(np.zeros((0, 3), dtype=np.int64), np.zeros(0), X.shape)
    with pytest.raises(ValueError, match="mask='observed' needs at least one stored entry"):
        cp_als(empty, 2, mask="observed")
    with pytest.raises(ValueError, match="missing"):
        cp_als(X, 2, mask=M, missing="impute")


def test_mask_from_another_namespace():
    torch = pytest.importorskip("torch")
    X, M, _ = _problem((5, 6, 7), 2, 0.5, seed=20)
    with pytest.raises(TypeError, match="X and mask"):
        cp_als(X, 2, mask=torch.from_numpy(M))


def test_nonfinite_observed_values():
    X, M, _ = _problem((5, 6, 7), 2, 0.5, seed=21)
    Y = X.copy()
    Y[M.nonzero()[0][0], M.nonzero()[1][0], M.nonzero()[2][0]] = np.inf
    with pytest.raises(ValueError, match="X contains NaN or Inf at observed entries"):
        cp_als(Y, 2, mask=M)
    Z = np.where(M, Y, np.nan)
    with pytest.raises(ValueError, match="X contains Inf at observed entries"):
        cp_als(Z, 2, mask="nan")
    # without a mask, NaN still trips the check
    with pytest.raises(ValueError, match="NaN or Inf"):
        cp_als(Z, 2)


def test_spals_refuses_mask():
    X, M, _ = _problem((5, 6, 7), 2, 0.5, seed=22)
    with pytest.raises(ValueError, match="mask"):
        tf.spals(X, 2, mask=M)
