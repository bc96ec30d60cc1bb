"""SparseTensor: construction, validation, conversions, fiber gather and CP-ALS on it."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sps

from tensorfact import CPTensor, SparseTensor, cp_als
from tensorfact._testing import assert_close
from tensorfact.datasets import planted_cp, planted_sparse_cp
from tensorfact.tenalg import mttkrp, unfold


def _sparse_dense(rng, shape, density=0.3):
    return rng.standard_normal(shape) * (rng.random(shape) < density)


# ----------------------------------------------------------------- construction
def test_duplicates_summed_and_canonical_order(rng):
    coords = rng.integers(0, 3, (40, 3))
    vals = rng.standard_normal(40)
    ref = np.zeros((3, 3, 3))
    np.add.at(ref, tuple(coords.T), vals)
    c0, v0 = coords.copy(), vals.copy()
    X = SparseTensor(coords, vals, (3, 3, 3))
    np.testing.assert_allclose(X.to_dense(), ref, rtol=1e-14, atol=1e-14)
    lin = np.ravel_multi_index(tuple(X.coords.T), X.shape)
    assert np.all(np.diff(lin) > 0)
    assert X.nnz == len(np.unique(np.ravel_multi_index(tuple(coords.T), (3, 3, 3))))
    # inputs unchanged, stored arrays read-only
    np.testing.assert_array_equal(coords, c0)
    np.testing.assert_array_equal(vals, v0)
    with pytest.raises(ValueError):
        X.values[0] = 1.0
    with pytest.raises(AttributeError):
        X.shape = (1, 1, 1)


def test_properties():
    X = SparseTensor([[0, 1], [2, 0]], [1, 2], (3, 4))
    assert X.shape == (3, 4) and X.ndim == 2 and X.nnz == 2
    assert X.dtype == np.float64  # integer values promoted
    assert X.density == pytest.approx(2 / 12)
    assert float(X.norm()) == pytest.approx(np.sqrt(5.0))
    assert "nnz=2" in repr(X)


def test_sum_duplicates_false_rejects_repeats():
    with pytest.raises(ValueError, match=r"repeated coordinate \(1, 1\)"):
        SparseTensor(np.array([[1, 1], [0, 0], [1, 1]]), np.ones(3), (2, 2), sum_duplicates=False)


@pytest.mark.parametrize(
    ("coords", "values", "shape", "exc", "match"),
    [
        ([[0, 5]], [1.0], (2, 5), ValueError, r"coords\[0, 1\] = 5 is out of range for size 5"),
        ([[0, 1], [-1, 0]], [1.0, 2.0], (2, 5), ValueError, r"coords\[1, 0\] = -1 is negative"),
        ([[0, 1], [3, 0]], [1.0, 2.0], (2, 5), ValueError, "out of range for size 2"),
        ([[0, 1]], [np.nan], (2, 5), ValueError, "NaN or Inf"),
        ([[0, 1]], [np.inf], (2, 5), ValueError, "NaN or Inf"),
        ([[0, 1, 2]], [1.0], (2, 5), ValueError, r"coords must have shape \(nnz, 2\)"),
        ([[0, 1]], [1.0, 2.0], (2, 5), ValueError, r"values must have shape \(1,\)"),
        ([[0.0, 1.0]], [1.0], (2, 5), TypeError, "integer dtype"),
        ([[0, 1]], [1.0], (2, 0), ValueError, r"shape\[1\] must be >= 1"),
        ([[0, 1]], [1.0 + 1j], (2, 5), TypeError, "complex"),
    ],
)
def test_bad_input(coords, values, shape, exc, match):
    with pytest.raises(exc, match=match):
        SparseTensor(np.asarray(coords), np.asarray(values), shape)


def test_check_false_skips_validation_but_keeps_structure():
    X = SparseTensor(np.array([[1, 0], [0, 1]]), np.array([1.0, 2.0]), (2, 2), check=False)
    assert X.coords.tolist() == [[0, 1], [1, 0]]


def test_empty_tensor():
    X = SparseTensor(np.zeros((0, 3), dtype=np.int64), np.zeros(0), (2, 3, 4))
    assert X.nnz == 0
    np.testing.assert_array_equal(X.to_dense(), np.zeros((2, 3, 4)))
    F = [np.ones((s, 2)) for s in X.shape]
    np.testing.assert_array_equal(X.mttkrp(F, 1), np.zeros((3, 2)))


def test_huge_shape_lexicographic_path():
    # prod(shape) overflows int64: canonicalisation falls back to a lexicographic sort
    big = 2**40
    coords = np.array([[5, 1, 7], [1, 2, 3], [5, 1, 7], [1, 2, 2]])
    X = SparseTensor(coords, np.array([1.0, 2.0, 3.0, 4.0]), (big, big, 10))
    assert X.coords.tolist() == [[1, 2, 2], [1, 2, 3], [5, 1, 7]]
    assert X.values.tolist() == [4.0, 2.0, 4.0]


# ----------------------------------------------------------------- conversions
def test_dense_round_trip(rng):
    D = _sparse_dense(rng, (5, 6, 7))
    X = SparseTensor.from_dense(D)
    assert X.nnz == np.count_nonzero(D)
    np.testing.assert_array_equal(X.to_dense(), D)
    with pytest.raises(ValueError, match="NaN"):
        SparseTensor.from_dense(np.array([[np.nan, 1.0]]))


def test_scipy_round_trip(rng):
    M = sps.random_array((30, 40), density=0.1, random_state=1, format="csr")
    X = SparseTensor.from_scipy(M)
    assert X.shape == (30, 40) and X.nnz == M.nnz
    np.testing.assert_array_equal(X.to_dense(), M.toarray())
    for fmt in ("coo", "csr", "csc"):
        np.testing.assert_array_equal(X.to_scipy(fmt).toarray(), M.toarray())
    with pytest.raises(ValueError, match="2-way"):
        SparseTensor.from_dense(np.ones((2, 2, 2))).to_scipy()
    with pytest.raises(TypeError, match="scipy.sparse"):
        SparseTensor.from_scipy(np.ones((2, 2)))


def test_scipy_duplicates_summed():
    M = sps.coo_array((np.array([1.0, 2.0]), (np.array([0, 0]), np.array([1, 1]))), shape=(2, 2))
    X = SparseTensor.from_scipy(M)
    assert X.nnz == 1 and X.values.tolist() == [3.0]


def test_pydata_round_trip(rng):
    sparse = pytest.importorskip("sparse")
    D = _sparse_dense(rng, (4, 5, 6, 3))
    S = sparse.COO.from_numpy(D)
    X = SparseTensor.from_pydata(S)
    np.testing.assert_array_equal(X.to_dense(), D)
    back = X.to_pydata()
    assert isinstance(back, sparse.COO)
    np.testing.assert_array_equal(back.todense(), D)
    with pytest.raises(ValueError, match="fill value"):
        SparseTensor.from_pydata(sparse.COO.from_numpy(np.ones((2, 2)), fill_value=1.0))


# ----------------------------------------------------------------- MTTKRP / gather
@pytest.mark.parametrize("shape", [(6, 7, 8), (4, 5, 3, 6)])
def test_mttkrp_equals_dense(rng, shape):
    D = _sparse_dense(rng, shape)
    X = SparseTensor.from_dense(D)
    F = [rng.standard_normal((s, 5)) for s in shape]
    F0 = [A.copy() for A in F]
    for n in range(len(shape)):
        ref = mttkrp(D, F, n)
        np.testing.assert_allclose(X.mttkrp(F, n), ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(X.mttkrp(F, n, use_numba=False), ref, rtol=1e-12, atol=1e-12)
    for A, A0 in zip(F, F0):
        np.testing.assert_array_equal(A, A0)


def test_mttkrp_bad_factors(rng):
    X = SparseTensor.from_dense(_sparse_dense(rng, (3, 4, 5)))
    with pytest.raises(ValueError, match="3 modes"):
        X.mttkrp([np.ones((3, 2))] * 2, 0)
    with pytest.raises(ValueError, match=r"factors\[1\] must have shape \(4, R\)"):
        X.mttkrp([np.ones((3, 2)), np.ones((5, 2)), np.ones((5, 2))], 0)
    with pytest.raises(ValueError, match="out of range"):
        X.mttkrp([np.ones((s, 2)) for s in X.shape], 3)


@pytest.mark.parametrize("mode", [0, 1, 2, -1])
def test_gather_fibers_brute_force(rng, mode):
    shape = (5, 6, 7)
    D = _sparse_dense(rng, shape, 0.2)
    X = SparseTensor.from_dense(D)
    n = mode % 3
    others = [m for m in range(3) if m != n]
    S = np.stack([rng.integers(0, shape[m], 60) for m in others], axis=1)
    pos, idx, val = X.gather_fibers(mode, S)
    assert pos.dtype == idx.dtype == np.int64 and val.dtype == D.dtype
    # scatter the triplets into dense fibers and compare with slices of D
    got = np.zeros((S.shape[0], shape[n]))
    got[pos, idx] = val
    for j in range(S.shape[0]):
        sl = [slice(None)] * 3
        sl[others[0]], sl[others[1]] = S[j]
        np.testing.assert_array_equal(got[j], D[tuple(sl)])
    assert pos.shape[0] == sum(np.count_nonzero(g) for g in got)


def test_gather_fibers_bad_input(rng):
    X = SparseTensor.from_dense(_sparse_dense(rng, (3, 4, 5)))
    with pytest.raises(ValueError, match=r"other_idx must have shape \(n_samples, 2\)"):
        X.gather_fibers(0, np.zeros((4, 3), dtype=np.int64))
    with pytest.raises(ValueError, match=r"other_idx\[1, 1\] = 5 is out of range for size 5"):
        X.gather_fibers(0, np.array([[0, 0], [1, 5]]))
    with pytest.raises(ValueError, match="negative"):
        X.gather_fibers(2, np.array([[-1, 0]]))
    with pytest.raises(TypeError, match="integer"):
        X.gather_fibers(2, np.array([[0.0, 1.0]]))
    with pytest.raises(ValueError, match="out of range"):
        X.gather_fibers(5, np.array([[0, 1]]))


# ----------------------------------------------------------------- CP-ALS on sparse data
def test_mode_gram_equals_dense(rng):
    D = _sparse_dense(rng, (5, 6, 7))
    op = SparseTensor.from_dense(D)
    for n in range(3):
        U = unfold(D, n)
        np.testing.assert_allclose(op.mode_gram(n), U @ U.T, rtol=1e-12, atol=1e-12)


def test_residual_norm_sq_exact(rng):
    D = _sparse_dense(rng, (5, 6, 7))
    op = SparseTensor.from_dense(D)
    F = [rng.standard_normal((s, 3)) for s in D.shape]
    w = rng.random(3) + 0.5
    M = CPTensor(F, weights=w).to_dense()
    assert op.residual_norm_sq(w, F) == pytest.approx(np.sum((D - M) ** 2), rel=1e-12)
    assert op.norm_sq() == pytest.approx(np.sum(D**2), rel=1e-14)


@pytest.mark.parametrize("shape", [(9, 10, 11), (5, 6, 4, 7)])
def test_cp_als_sparse_matches_dense_from_same_init(rng, shape):
    X, _ = planted_sparse_cp(shape, 3, nnz=int(0.3 * np.prod(shape)), noise=0.05, rng=3)
    D = X.to_dense()
    init = CPTensor([rng.standard_normal((s, 3)) for s in shape])
    init0 = [A.copy() for A in init.factors]
    rs = cp_als(X, 3, init=init, max_iter=25, tol=0)
    rd = cp_als(D, 3, init=init, max_iter=25, tol=0)
    np.testing.assert_allclose(rs.history.rel_error, rd.history.rel_error, rtol=1e-8)
    np.testing.assert_allclose(rs.cp.to_dense(), rd.cp.to_dense(), rtol=1e-8, atol=1e-10)
    for A, A0 in zip(init.factors, init0):
        np.testing.assert_array_equal(A, A0)
    np.testing.assert_array_equal(X.to_dense(), D)


def test_cp_als_svd_init_on_sparse(rng):
    X, _ = planted_sparse_cp((12, 13, 14), 2, nnz=800, noise=0.1, rng=4)
    res = cp_als(X, 2, init="svd", max_iter=50)
    ref = cp_als(X.to_dense(), 2, init="random", rng=0, max_iter=200, tol=1e-12)
    assert res.rel_error < 1.05 * ref.rel_error + 1e-3


def test_cp_als_recovers_exact_low_rank_sparse_tensor():
    X, truth = planted_sparse_cp((40, 50, 60), 3, nnz=3000, exact=True, rng=5)
    assert X.density < 0.1
    res = cp_als(X, 3, init="svd", max_iter=500, tol=1e-14, rng=0, n_init=3)
    assert res.rel_error < 1e-6
    assert res.cp.factor_match_score(truth) > 0.999
    D = X.to_dense()
    true_err = np.linalg.norm(D - res.cp.to_dense()) / np.linalg.norm(D)
    assert true_err < 1e-6


def test_cp_als_reported_error_is_true_error_on_sparse(rng):
    X, _ = planted_sparse_cp((10, 12, 14), 2, nnz=600, noise=0.2, rng=6)
    res = cp_als(X, 2, rng=0, max_iter=30)
    D = X.to_dense()
    true_err = np.linalg.norm(D - res.cp.to_dense()) / np.linalg.norm(D)
    assert abs(true_err - res.rel_error) < 1e-10


def test_cp_als_dense_planted_through_sparse():
    D, truth = planted_cp((8, 9, 10), 2, rng=7)
    res = cp_als(SparseTensor.from_dense(D), 2, rng=0, max_iter=500, tol=1e-14)
    assert res.rel_error < 1e-7
    assert res.cp.factor_match_score(truth) > 0.9999


# ----------------------------------------------------------------- backends
def test_backend_construction_conversions_and_kernels(backend, rng):
    xp = backend.xp
    shape = (5, 6, 7)
    D = _sparse_dense(rng, shape)
    coords = np.argwhere(D != 0)
    perm = rng.permutation(coords.shape[0])
    c_dup = np.concatenate([coords[perm], coords[:3]])
    v_dup = np.concatenate([D[tuple(coords[perm].T)], np.ones(3)])
    ref = D.copy()
    ref[tuple(coords[:3].T)] += 1.0
    X = SparseTensor(backend.asarray(c_dup), backend.asarray(v_dup), shape)
    Xn = SparseTensor(c_dup, v_dup, shape)
    assert X.xp is xp or X.xp.__name__ == xp.__name__
    assert_close(X.to_dense(), backend.asarray(ref), rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(np.asarray(X.coords), Xn.coords)
    assert_close(SparseTensor.from_dense(backend.asarray(D)).to_dense(), backend.asarray(D))
    F_np = [rng.standard_normal((s, 3)) for s in shape]
    F = [backend.asarray(A) for A in F_np]
    for n in range(3):
        assert_close(X.mttkrp(F, n), backend.asarray(Xn.mttkrp(F_np, n)), rtol=1e-12, atol=1e-12)
    S = np.stack([rng.integers(0, shape[m], 30) for m in (0, 2)], axis=1)
    got = X.gather_fibers(1, backend.asarray(S))
    got_np_idx = X.gather_fibers(1, S)  # host sample indices are accepted too
    want = Xn.gather_fibers(1, S)
    for a, a2, b in zip(got, got_np_idx, want):
        np.testing.assert_array_equal(np.asarray(a), b)
        np.testing.assert_array_equal(np.asarray(a2), b)
    op, opn = X, Xn
    assert_close(op.mode_gram(1), backend.asarray(opn.mode_gram(1)), rtol=1e-12, atol=1e-12)
    w = backend.asarray(np.array([1.0, 0.5, 2.0]))
    assert op.residual_norm_sq(w, F) == pytest.approx(
        opn.residual_norm_sq(np.array([1.0, 0.5, 2.0]), F_np), rel=1e-12)


def test_backend_cp_als(backend):
    X, _ = planted_sparse_cp((8, 9, 10), 2, nnz=300, noise=0.1, rng=8)
    Xb = SparseTensor(backend.asarray(np.array(X.coords)), backend.asarray(np.array(X.values)),
                      X.shape)
    init_np = [np.random.default_rng(1).standard_normal((s, 2)) for s in X.shape]
    rb = cp_als(Xb, 2, init=CPTensor([backend.asarray(A) for A in init_np]), max_iter=15, tol=0)
    rn = cp_als(X, 2, init=CPTensor(init_np), max_iter=15, tol=0)
    assert rb.cp.weights.__class__ is backend.asarray(np.ones(1)).__class__
    np.testing.assert_allclose(rb.history.rel_error, rn.history.rel_error, rtol=1e-9)


# ----------------------------------------------------------------- properties (Hypothesis)
try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra import numpy as hnp
except ImportError:  # pragma: no cover
    pass
else:

    @st.composite
    def _coo(draw):
        N = draw(st.integers(2, 4))
        shape = tuple(draw(st.lists(st.integers(1, 5), min_size=N, max_size=N)))
        nnz = draw(st.integers(0, 40))
        cols = [draw(hnp.arrays(np.int64, nnz, elements=st.integers(0, s - 1))) for s in shape]
        vals = draw(hnp.arrays(np.float64, nnz, elements=st.floats(-10, 10, width=64)))
        coords = np.stack(cols, axis=1) if nnz else np.zeros((0, N), dtype=np.int64)
        return coords, vals, shape

    @settings(max_examples=40, deadline=None)
    @given(_coo(), st.integers(0, 2**31 - 1))
    def test_property_dense_mttkrp_and_gather(data, seed):
        coords, vals, shape = data
        ref = np.zeros(shape)
        np.add.at(ref, tuple(coords.T), vals)
        X = SparseTensor(coords, vals, shape)
        np.testing.assert_allclose(X.to_dense(), ref, rtol=1e-12, atol=1e-12)
        r = np.random.default_rng(seed)
        F = [r.standard_normal((s, 2)) for s in shape]
        N = len(shape)
        n = int(r.integers(N))
        np.testing.assert_allclose(X.mttkrp(F, n), mttkrp(X.to_dense(), F, n), rtol=1e-10,
                                   atol=1e-10)
        others = [m for m in range(N) if m != n]
        S = np.stack([r.integers(0, shape[m], 5) for m in others], axis=1)
        pos, idx, val = X.gather_fibers(n, S)
        got = np.zeros((5, shape[n]))
        got[pos, idx] = val
        D = X.to_dense()
        for j in range(5):
            sl = [slice(None)] * N
            for m, s in zip(others, S[j]):
                sl[m] = s
            np.testing.assert_array_equal(got[j], D[tuple(sl)])


def test_leading_subspace_of_a_large_mode_matches_the_unfolding_svd():
    # 600 rows: the randomised range finder on the compressed unfolding
    from tensorfact.datasets import planted_sparse_cp

    S, _ = planted_sparse_cp((600, 40, 30), 4, nnz=20_000, exact=True, noise=0.01, rng=3)
    U = S.leading_subspace(0, 4, np.random.default_rng(0))
    ref = np.linalg.svd(unfold(S.to_dense(), 0), full_matrices=False)[0][:, :4]
    cosines = np.linalg.svd(U.T @ ref, compute_uv=False)
    np.testing.assert_allclose(cosines, 1.0, atol=1e-8)
