"""SeKron: S=2 equals GKPD, monotone error, exact recovery of nested/TT/Tucker/CP structures."""

from __future__ import annotations

import numpy as np
import pytest

from tensorfact import SeKronTensor, nearest_kronecker, sekron
from tensorfact import _backend as B
from tensorfact._testing import assert_close


@pytest.fixture(autouse=True, scope="module")
def _single_blas_thread():
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg  # noqa: F401  (load SciPy's BLAS before limiting it)

    with threadpoolctl.threadpool_limits(1):
        yield


def _nested(rng, shapes, ranks):
    S = len(shapes)
    facs = [rng.standard_normal(tuple(ranks[: min(s, S - 2) + 1]) + sh)
            for s, sh in enumerate(shapes)]
    return SeKronTensor(facs, ranks)


def test_two_factors_equals_nearest_kronecker(rng):
    W = rng.standard_normal((12, 10, 3))
    a, b = (3, 2, 3), (4, 5, 1)
    for r in (1, 3, 6):
        sk = sekron(W, [a, b], ranks=r)
        nk = nearest_kronecker(W, a, b, rank=r)
        np.testing.assert_allclose(sk.sekron.to_dense(), nk.kt.to_dense(), rtol=1e-10, atol=1e-12)
        assert sk.error == pytest.approx(nk.error, rel=1e-10)
        np.testing.assert_allclose(sk.level_singular_values[0],
                                   np.asarray(nk.singular_values), rtol=1e-12)


def test_error_is_exact_and_monotone(rng):
    W = rng.standard_normal((8, 12, 3, 3))
    shapes = [(2, 2, 1, 1), (2, 3, 1, 1), (2, 2, 3, 3)]
    prev = np.inf
    for ranks in [(1, 1), (2, 1), (2, 3), (4, 3), (4, 5), (4, 6)]:
        res = sekron(W, shapes, ranks=ranks)
        actual = np.linalg.norm(W - res.sekron.to_dense())
        assert res.error == pytest.approx(actual, rel=1e-10)
        assert res.rel_error == pytest.approx(actual / np.linalg.norm(W), rel=1e-10)
        assert res.error <= prev + 1e-12
        prev = res.error
    assert prev <= 1e-12 * np.linalg.norm(W)  # full ranks: exact


def test_monotone_in_each_level(rng):
    W = rng.standard_normal((8, 8, 8))
    shapes = [(2, 2, 2), (2, 2, 2), (2, 2, 2)]
    for r1 in (1, 2, 4):
        errs = [sekron(W, shapes, ranks=(r1, r2)).error for r2 in (1, 2, 4, 8)]
        assert all(e2 <= e1 + 1e-12 for e1, e2 in zip(errs, errs[1:]))


def test_error_at_smaller_ranks_equals_a_new_run(rng):
    # every level is one SVD per branch: the run at smaller ranks is a truncation of this one
    W = rng.standard_normal((8, 12, 3, 3))
    shapes = [(2, 2, 1, 1), (2, 3, 1, 1), (2, 2, 3, 3)]
    big = sekron(W, shapes, ranks=(3, 4))
    assert big.ranks == (3, 4)
    assert big.error_at((3, 4)) == big.error and big.rel_error_at((3, 4)) == big.rel_error
    for ranks in [(1, 1), (2, 1), (3, 2), (1, 4), (2, 5), (3, 6)]:
        run = sekron(W, shapes, ranks=ranks)
        assert big.error_at(ranks) == pytest.approx(run.error, rel=1e-10, abs=1e-12)
        assert big.rel_error_at(ranks) == pytest.approx(run.rel_error, rel=1e-10, abs=1e-12)
    assert big.rel_error_at((0, 0)) == pytest.approx(1.0, rel=1e-12)
    assert big.error_at(2) == pytest.approx(sekron(W, shapes, ranks=2).error, rel=1e-10)
    # S = 2: the same numbers as nearest_kronecker's error_at
    nk = nearest_kronecker(W, shapes[0], rank=2)
    two = sekron(W, [shapes[0], (4, 6, 3, 3)], ranks=2)
    for r in (0, 1, 3, 4):
        assert two.error_at(r) == pytest.approx(nk.error_at(r), rel=1e-10, abs=1e-12)
    with pytest.raises(ValueError, match="outside"):
        big.error_at((4, 1))  # level 0's branches beyond rank 3 were never decomposed
    with pytest.raises(ValueError, match="outside"):
        big.error_at((1, 7))
    with pytest.raises(ValueError, match="2 entries"):
        big.error_at((1, 1, 1))


def _kron_tt(rng, shapes, ranks):
    """A Kronecker tensor train: sum_r A0[r0] ⊗ A1[r0, r1] ⊗ ... ⊗ A_{S-1}[r_{S-2}]."""
    S = len(shapes)
    cores = []
    for s, sh in enumerate(shapes):
        left = (ranks[s - 1],) if s > 0 else ()
        right = (ranks[s],) if s < S - 1 else ()
        cores.append(rng.standard_normal(left + right + sh))
    # expand into the nested SeKron form: factor s indexed by (r0..r_s)
    facs = []
    for s, G in enumerate(cores):
        lead = tuple(ranks[: min(s, S - 2) + 1])
        if s == 0:
            F = G
        elif s < S - 1:
            F = np.broadcast_to(G.reshape((1,) * (s - 1) + G.shape), lead + shapes[s])
        else:
            F = np.broadcast_to(G.reshape((1,) * (S - 2) + G.shape), lead + shapes[s])
        facs.append(np.ascontiguousarray(F))
    return SeKronTensor(facs, ranks)


@pytest.mark.parametrize(
    "shapes,ranks",
    [([(2, 3), (3, 2), (2, 2)], (2, 3)),
     ([(2, 2, 1), (2, 1, 3), (2, 3, 2)], (3, 2)),
     ([(2, 1, 2), (1, 2, 2), (2, 2, 1), (1, 3, 2)], (2, 2, 2))],
)
def test_known_kronecker_train_recovered(rng, shapes, ranks):
    # level-s remainders of a Kronecker train keep Kronecker rank <= R_s whatever the
    # rotation the SVD applies to the earlier ranks, so the recursion is exact
    truth = _kron_tt(rng, shapes, ranks)
    W = truth.to_dense()
    res = sekron(W, shapes, ranks=ranks)
    assert res.sekron.ranks == tuple(ranks)
    assert res.sekron.factor_shapes == tuple(shapes)
    assert res.rel_error <= 1e-12
    np.testing.assert_allclose(res.sekron.to_dense(), W, atol=1e-12 * np.abs(W).max())
    np.testing.assert_allclose(res.kt.to_dense(), W, atol=1e-12 * np.abs(W).max())
    assert res.n_params == truth.n_params
    assert res.kt.n_params > res.n_params  # the flat form repeats factors


def test_general_nested_structure_recovered_with_product_ranks(rng):
    # independent branches get mixed by the level-0 SVD: level 1 then needs R0 * R1 terms
    shapes, ranks = [(2, 2, 1), (2, 2, 3), (3, 3, 2)], (2, 2)
    S = len(shapes)
    facs = [rng.standard_normal(tuple(ranks[: min(s, S - 2) + 1]) + sh)
            for s, sh in enumerate(shapes)]
    W = SeKronTensor(facs, ranks).to_dense()
    assert sekron(W, shapes, ranks=ranks).rel_error > 1e-3
    assert sekron(W, shapes, ranks=(2, 4)).rel_error <= 1e-12


def _single_mode_shapes(shape):
    N = len(shape)
    return [tuple(shape[n] if m == n else 1 for m in range(N)) for n in range(N)]


def test_tensor_train_special_case(rng):
    I, (r1, r2, r3) = (4, 5, 6, 3), (2, 3, 2)
    G0 = rng.standard_normal((I[0], r1))
    G1 = rng.standard_normal((r1, I[1], r2))
    G2 = rng.standard_normal((r2, I[2], r3))
    G3 = rng.standard_normal((r3, I[3]))
    T = np.einsum("ia,ajb,bkc,cl->ijkl", G0, G1, G2, G3)
    res = sekron(T, _single_mode_shapes(I), ranks=(r1, r2, r3))
    assert res.rel_error <= 1e-12
    np.testing.assert_allclose(res.sekron.to_dense(), T, atol=1e-12 * np.abs(T).max())
    # lower TT ranks than the truth leave an error
    assert sekron(T, _single_mode_shapes(I), ranks=(r1, r2 - 1, r3)).rel_error > 1e-3


def test_tucker_special_case(rng):
    I, R = (5, 6, 4), (2, 3, 2)
    G = rng.standard_normal(R)
    U = [rng.standard_normal((i, r)) for i, r in zip(I, R)]
    T = np.einsum("abc,ia,jb,kc->ijk", G, *U)
    res = sekron(T, _single_mode_shapes(I), ranks=R[:2])
    assert res.rel_error <= 1e-12


def test_cp_special_case(rng):
    I, R = (5, 6, 4), 3
    A = [rng.standard_normal((i, R)) for i in I]
    T = np.einsum("ir,jr,kr->ijk", *A)
    # ranks (R, R) recover a rank-R CP tensor exactly
    assert sekron(T, _single_mode_shapes(I), ranks=(R, R)).rel_error <= 1e-12
    # ranks (R, 1) give a CP-structured (sum of R outer products) approximation
    res = sekron(T, _single_mode_shapes(I), ranks=(R, 1))
    kt = res.kt
    assert kt.rank == R
    D = kt.to_dense()
    np.testing.assert_allclose(res.sekron.to_dense(), D, rtol=1e-12)
    for r in range(R):
        term = np.einsum("i,j,k->ijk", *(np.asarray(f[r]).ravel() for f in kt.factors))
        assert np.linalg.matrix_rank(term.reshape(I[0], -1)) == 1
    # a rank-1 CP tensor is recovered exactly with ranks (1, 1)
    T1 = np.einsum("i,j,k->ijk", *(a[:, 0] for a in A))
    assert sekron(T1, _single_mode_shapes(I), ranks=(1, 1)).rel_error <= 1e-12


def test_conv_kernel_three_factors(rng):
    # a ResNet-style 3x3 kernel, reduced size for the default run
    W = rng.standard_normal((64, 64, 3, 3)).astype(np.float32)
    res = sekron(W, [(4, 4, 1, 1), (4, 4, 1, 1), (4, 4, 3, 3)], ranks=(4, 4))
    assert res.sekron.dtype == np.float32
    actual = np.linalg.norm(W.astype(np.float64) - res.sekron.to_dense().astype(np.float64))
    assert res.error == pytest.approx(actual, rel=1e-3)
    assert res.compression_ratio > 10


@pytest.mark.slow
def test_resnet_kernel_512():
    rng = np.random.default_rng(0)
    W = rng.standard_normal((512, 512, 3, 3)).astype(np.float32)
    res = sekron(W, [(8, 8, 1, 1), (8, 8, 1, 1), (8, 8, 3, 3)], ranks=(8, 8))
    assert res.sekron.shape == W.shape
    assert 0 < res.rel_error < 1


def test_backends(backend, rng):
    truth = _nested(rng, [(2, 3), (3, 1), (2, 2)], (2, 2))
    W = truth.to_dense() + 1e-3 * rng.standard_normal((12, 6))
    ref = sekron(W, [(2, 3), (3, 1), (2, 2)], ranks=(2, 2))
    res = sekron(backend.asarray(W), [(2, 3), (3, 1), (2, 2)], ranks=(2, 2))
    xp = backend.xp
    assert B.namespace(res.sekron.factors[0]) is xp
    assert_close(res.sekron.to_dense(), backend.asarray(ref.sekron.to_dense()), xp=xp,
                 rtol=1e-9, atol=1e-9)
    assert res.error == pytest.approx(ref.error, rel=1e-7)


def test_input_not_mutated(rng):
    W = rng.standard_normal((8, 8))
    W0 = W.copy()
    sekron(W, [(2, 2), (2, 2), (2, 2)], ranks=2)
    np.testing.assert_array_equal(W, W0)


@pytest.mark.parametrize(
    "shapes,ranks,exc,match",
    [
        ([(8, 8)], 1, ValueError, "at least 2"),
        ([(2, 2), (2, 2)], 1, ValueError, "do not multiply"),
        ([(2, 2), (4, 4), (1, 1)], (1,), ValueError, "entries"),
        ([(2, 2), (4, 4)], (5,), ValueError, "out of range"),
        ([(2, 2), (4, 4)], (0,), ValueError, "out of range"),
        ([(2, 2), (4, 4)], (1.5,), TypeError, "integer"),
        ([(2, 0), (4, 4)], 1, ValueError, "positive"),
        ([(2, 2, 1), (4, 4, 1)], 1, ValueError, "modes"),
    ],
)
def test_bad_input(rng, shapes, ranks, exc, match):
    with pytest.raises(exc, match=match):
        sekron(rng.standard_normal((8, 8)), shapes, ranks)


def test_bad_dtype():
    with pytest.raises(TypeError, match="W has complex dtype"):
        sekron(np.ones((4, 4), dtype=np.complex64), [(2, 2), (2, 2)], 1)


def test_integer_w_is_promoted():
    # DESIGN.md: integers are promoted to the default float (as nearest_kronecker does)
    W = np.arange(16, dtype=np.int32).reshape(4, 4) % 5
    res = sekron(W, [(2, 2), (2, 2)], 1)
    ref = sekron(W.astype(np.float64), [(2, 2), (2, 2)], 1)
    np.testing.assert_array_equal(res.sekron.to_dense(), ref.sekron.to_dense())
    assert res.rel_error == ref.rel_error
