"""The backend layer: namespace dispatch and the non-standard operations."""

from __future__ import annotations

import numpy as np
import pytest

from tensorfact import _backend as B
from tensorfact._testing import assert_close, expm, lstsq


def test_namespace_mixed_libraries_names_both():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match=r"numpy.*torch|torch.*numpy"):
        B.namespace(np.ones(3), torch.ones(3))


def test_namespace_rejects_non_arrays():
    with pytest.raises(TypeError, match="expected an array"):
        B.namespace([1.0, 2.0])


def test_namespace_ignores_none_and_scalars():
    xp = B.namespace(np.ones(2), None, 3.0)
    assert B.is_numpy(xp)


def test_einsum_matches_numpy(backend, rng):
    xp = backend.xp
    a = rng.standard_normal((3, 4, 5))
    b = rng.standard_normal((5, 4))
    c = rng.standard_normal((3, 2))
    for subs, ops in [("ijk,kj->i", (a, b)), ("ijk,kr,ir->jr", (a, rng.standard_normal((5, 2)), c)),
                      ("ij,jk->ik", (b, b.T)), ("ijk->kji", (a,))]:
        ref = np.einsum(subs, *ops)
        got = B.einsum(xp, subs, *[backend.asarray(o) for o in ops])
        assert_close(got, ref, rtol=1e-12, check_namespace=False, check_dtype=False)


def test_portable_einsum_directly(rng):
    xps = pytest.importorskip("array_api_strict")
    a = rng.standard_normal((3, 4, 5))
    b = rng.standard_normal((5, 6))
    got = B._einsum_portable(xps, "ijk,kl->lji", xps.asarray(a), xps.asarray(b))
    np.testing.assert_allclose(np.asarray(got), np.einsum("ijk,kl->lji", a, b), rtol=1e-12)
    with pytest.raises(NotImplementedError, match="repeated"):
        B._einsum_portable(xps, "ii->i", xps.asarray(np.eye(3)))


@pytest.mark.parametrize("cols", [None, 3])
def test_scatter_add_matches_bincount(backend, rng, cols):
    idx = rng.integers(0, 7, size=50)
    vals = rng.standard_normal(50 if cols is None else (50, cols))
    ref = np.zeros((7,) if cols is None else (7, cols))
    np.add.at(ref, idx, vals)
    got = B.scatter_add(backend.xp, 7, backend.asarray(idx), backend.asarray(vals))
    assert_close(got, ref, rtol=1e-12, check_namespace=False, check_dtype=False)


def test_spd_solve(backend, rng):
    A = rng.standard_normal((6, 6))
    G = A @ A.T + 6 * np.eye(6)
    Bm = rng.standard_normal((6, 4))
    got = B.spd_solve(backend.xp, backend.asarray(G), backend.asarray(Bm))
    assert_close(got, np.linalg.solve(G, Bm), rtol=1e-10, check_namespace=False, check_dtype=False)
    M = rng.standard_normal((9, 6))
    got = B.spd_solve_right(backend.xp, backend.asarray(M), backend.asarray(G))
    assert_close(got, M @ np.linalg.inv(G), rtol=1e-10, check_namespace=False,
                 check_dtype=False)


def test_spd_solve_singular_falls_back_with_warning(backend, rng):
    U = rng.standard_normal((5, 2))
    G = U @ U.T  # rank 2
    b = G @ rng.standard_normal((5, 3))  # consistent right-hand side
    with pytest.warns(B.SingularGramWarning):
        x = B.spd_solve(backend.xp, backend.asarray(G), backend.asarray(b))
    xn = B.to_numpy(x)
    assert np.all(np.isfinite(xn))
    np.testing.assert_allclose(G @ xn, b, atol=1e-8)
    np.testing.assert_allclose(xn, np.linalg.pinv(G) @ b, atol=1e-8)


def test_random_draws_identical_on_every_backend(backend):
    like = backend.asarray(np.zeros(1))
    a = B.random_normal(backend.xp, (4, 3), B.check_rng(7), dtype=like.dtype, like=like)
    b = np.random.default_rng(7).standard_normal((4, 3))
    np.testing.assert_array_equal(B.to_numpy(a), b)


def test_check_rng():
    g = np.random.default_rng(1)
    assert B.check_rng(g) is g
    assert isinstance(B.check_rng(None), np.random.Generator)
    assert B.check_rng(3).random() == np.random.default_rng(3).random()
    with pytest.raises(TypeError, match="rng"):
        B.check_rng(1.5)
    with pytest.raises(TypeError, match="rng"):
        B.check_rng(True)


def test_as_float_array(backend):
    xp = backend.xp
    x = backend.asarray(np.arange(4), dtype="int64")
    y = B.as_float_array(x, xp)
    assert xp.isdtype(y.dtype, "real floating")
    f = backend.asarray(np.ones(3), dtype="float32")
    assert B.as_float_array(f, xp) is f


def test_schur_and_expm(backend, rng):
    import scipy.linalg as sla

    A = rng.standard_normal((5, 5))
    T, Z = B.schur(backend.xp, backend.asarray(A))
    Tn, Zn = B.to_numpy(T), B.to_numpy(Z)
    np.testing.assert_allclose(Zn @ Tn @ Zn.T, A, atol=1e-12)
    assert np.allclose(np.tril(Tn, -2), 0)
    S = A - A.T
    E = expm(backend.xp, backend.asarray(S))
    np.testing.assert_allclose(B.to_numpy(E), sla.expm(S), atol=1e-12)


def test_lstsq(backend, rng):
    A = rng.standard_normal((10, 4))
    b = rng.standard_normal((10, 2))
    x = lstsq(backend.xp, backend.asarray(A), backend.asarray(b))
    np.testing.assert_allclose(B.to_numpy(x), np.linalg.lstsq(A, b, rcond=None)[0], atol=1e-10)
