"""Results do not depend on the data's units: scaling by any power of two the dtype holds."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tensorfact as tf
from tensorfact.datasets import planted_cp, planted_sparse_cp

SCALES = [2.0**-1000, 2.0**-600, 2.0**-160, 2.0**160, 2.0**600, 2.0**1000]


@pytest.fixture(scope="module")
def dense():
    return planted_cp((12, 13, 14), 3, noise=0.1, rng=0)[0]


@pytest.fixture(scope="module")
def sparse():
    return planted_sparse_cp((15, 16, 17), 3, nnz=600, noise=0.1, rng=0)[0]


def _scaled_sparse(S, c):
    return tf.SparseTensor(S.coords, S.values * c, S.shape)


SOLVERS = {
    "cp_als": lambda X: tf.cp_als(X, 3, rng=0, max_iter=30),
    "cp_als_random": lambda X: tf.cp_als(X, 3, init="random", rng=0, max_iter=30),
    "spals": lambda X: tf.spals(X, 3, rng=0, max_iter=8),
    "spals_exact_fit": lambda X: tf.spals(X, 3, rng=0, max_iter=4, exact_fit_every=2),
}


@pytest.mark.parametrize("c", SCALES)
@pytest.mark.parametrize("solver", sorted(SOLVERS))
@pytest.mark.parametrize("kind", ["dense", "sparse"])
def test_solvers_are_scale_invariant(request, kind, solver, c):
    X = request.getfixturevalue(kind)
    Xc = X * c if kind == "dense" else _scaled_sparse(X, c)
    ref = SOLVERS[solver](X)
    got = SOLVERS[solver](Xc)
    assert got.rel_error == pytest.approx(ref.rel_error, rel=1e-10, abs=1e-14)
    assert got.n_iter == ref.n_iter
    np.testing.assert_allclose(np.asarray(got.cp.weights) / c, ref.cp.weights, rtol=1e-10)
    for a, b in zip(got.cp.factors, ref.cp.factors):
        np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)


def test_tiny_data_is_not_a_zero_model(dense):
    res = tf.cp_als(dense * 1e-300, 3, rng=0)
    assert res.rel_error == pytest.approx(tf.cp_als(dense, 3, rng=0).rel_error, rel=1e-10)
    assert bool(np.all(np.asarray(res.cp.weights) > 0))


@pytest.mark.parametrize("c", [1e-120, 1e100, 2.0**300])
def test_cp_tensor_norm_at_extreme_scales(c):
    gen = np.random.default_rng(0)
    F = [gen.standard_normal((s, 3)) for s in (4, 5, 6)]
    ref = np.linalg.norm(tf.CPTensor(F).to_dense())
    got = float(tf.CPTensor([A * c for A in F]).norm())
    assert got == pytest.approx(ref * c**3, rel=1e-12)


def test_scaled_norm_helper():
    from tensorfact import _backend as B

    xp = tf.as_format(np.ones((2, 2))).xp
    x = np.array([3e200, 4e200, 0.0])
    assert float(B.scaled_norm(xp, x)) == pytest.approx(5e200)
    np.testing.assert_allclose(B.scaled_norm(xp, np.array([[3e-200, 0.0], [4e-200, 0.0]]),
                                             axis=0), [5e-200, 0.0])


@pytest.fixture(scope="module")
def matrix():
    return np.random.default_rng(1).standard_normal((12, 20))


@pytest.mark.parametrize("c", SCALES)
@pytest.mark.parametrize("method", ["svd", "randomized"])
def test_nearest_kronecker_is_scale_invariant(matrix, c, method):
    ref = tf.nearest_kronecker(matrix, (3, 4), rank=2, method=method, rng=0)
    got = tf.nearest_kronecker(matrix * c, (3, 4), rank=2, method=method, rng=0)
    assert got.rel_error == pytest.approx(ref.rel_error, rel=1e-10)
    # the model's own error, computed in units of max|W| (no overflow or rounding)
    s = np.max(np.abs(matrix * c))
    model = np.asarray(got.kt.to_dense()) / s
    true = np.linalg.norm(matrix * c / s - model) / np.linalg.norm(matrix * c / s)
    assert true == pytest.approx(ref.rel_error, rel=1e-8)


@pytest.mark.parametrize("c", SCALES)
def test_sekron_is_scale_invariant(matrix, c):
    shapes = [(2, 2), (3, 5), (2, 2)]
    ref = tf.sekron(matrix, shapes, [2, 2])
    got = tf.sekron(matrix * c, shapes, [2, 2])
    assert got.rel_error == pytest.approx(ref.rel_error, rel=1e-10)
    assert got.rel_error_at([1, 1]) == pytest.approx(ref.rel_error_at([1, 1]), rel=1e-10)


@pytest.mark.parametrize("c", [2.0**-300, 2.0**-160, 2.0**160, 2.0**300])
def test_kronecker_tensor_norm_at_extreme_scales(c):
    # three factors scaled by c: the norm is scaled by c^3 (in range) while its
    # square, c^6 ||K||^2, is far outside the range of float64
    gen = np.random.default_rng(2)
    F = [gen.standard_normal((2, s, t)) for s, t in ((2, 3), (3, 2), (2, 2))]
    ref = float(tf.KroneckerTensor(F).norm())
    assert ref == pytest.approx(np.linalg.norm(np.asarray(tf.KroneckerTensor(F).to_dense())),
                                rel=1e-12)
    got = float(tf.KroneckerTensor([A * c for A in F]).norm())
    assert math.ldexp(got, -3 * int(math.log2(c))) == pytest.approx(ref, rel=1e-12)
