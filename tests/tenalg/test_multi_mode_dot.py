"""multi_mode_dot: agreement with TensorLy and unfold/fold, sparse path, backends, bad input."""

from __future__ import annotations

import numpy as np
import pytest

import tensorfact as tf
from tensorfact import SparseTensor, multi_mode_dot
from tensorfact._kernels.sparse_ttm import ttm_rows_numba, ttm_rows_xp
from tensorfact.tenalg import TuckerTree, fold, unfold


def _reference(X, mats, modes, transpose=False):
    """The definition: unfold, multiply, fold, one mode at a time."""
    Y = X
    for M, n in zip(mats, modes):
        M = M.T if transpose else M
        shape = Y.shape[:n] + (M.shape[0],) + Y.shape[n + 1:]
        Y = fold(M @ unfold(Y, n), n, shape)
    return Y


@pytest.mark.parametrize("modes", [[0], [1], [2], [0, 2], [2, 0, 1], [3, 1]])
def test_matches_unfold_definition_and_tensorly(modes):
    import tensorly as tl

    g = np.random.default_rng(0)
    X = g.standard_normal((4, 5, 6, 3))
    mats = [g.standard_normal((2 + k, X.shape[m])) for k, m in enumerate(modes)]
    out = multi_mode_dot(X, mats, modes)
    np.testing.assert_allclose(out, _reference(X, mats, modes), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out, tl.tenalg.multi_mode_dot(X, mats, modes), rtol=1e-12,
                               atol=1e-12)
    assert out.flags.c_contiguous


def test_transpose_skip_and_default_modes():
    import tensorly as tl

    g = np.random.default_rng(1)
    X = g.standard_normal((4, 5, 6))
    mats = [g.standard_normal((s, 2)) for s in X.shape]
    out = multi_mode_dot(X, mats, transpose=True, skip=1)
    ref = tl.tenalg.multi_mode_dot(X, mats, transpose=True, skip=1)
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)
    assert out.shape == (2, 5, 2)
    # negative modes count from the end
    np.testing.assert_allclose(multi_mode_dot(X, [mats[2].T], [-1]),
                               multi_mode_dot(X, [mats[2].T], [2]))


def test_no_matrices_returns_the_tensor_values():
    X = np.arange(24.0).reshape(2, 3, 4)
    np.testing.assert_array_equal(multi_mode_dot(X, []), X)


def test_noncontiguous_input_and_integer_promotion():
    g = np.random.default_rng(2)
    X = g.standard_normal((8, 5, 6))[::2]
    M = g.standard_normal((3, 5))
    np.testing.assert_allclose(multi_mode_dot(X, [M], [1]), _reference(X, [M], [1]))
    Xi = np.arange(24).reshape(2, 3, 4)
    out = multi_mode_dot(Xi, [np.ones((1, 3))], [1])
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, Xi.sum(axis=1, keepdims=True))


@pytest.mark.parametrize("modes", [[0, 2, 3], [1, 2, 3], [0, 1, 2, 3], [2], [3, 0]])
@pytest.mark.parametrize("use_numba", [True, False])
def test_sparse_matches_dense(modes, use_numba):
    g = np.random.default_rng(3)
    X = g.standard_normal((4, 5, 6, 3))
    X[g.random(X.shape) < 0.7] = 0
    S = SparseTensor.from_dense(X)
    mats = [g.standard_normal((2, X.shape[m])) for m in modes]
    ref = multi_mode_dot(X, mats, modes)
    if use_numba:
        out = multi_mode_dot(S, mats, modes)
    else:
        import array_api_strict as xs

        Sx = SparseTensor(xs.asarray(np.asarray(S.coords)), xs.asarray(np.asarray(S.values)),
                          S.shape)
        out = np.asarray(multi_mode_dot(Sx, [xs.asarray(M) for M in mats], modes))
    np.testing.assert_allclose(out, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("serial_work", [1 << 40, 0])
def test_sparse_kernel_and_twin_agree(serial_work, monkeypatch):
    import array_api_compat.numpy as xnp

    from tensorfact._kernels import sparse_ttm

    monkeypatch.setattr(sparse_ttm, "_SERIAL_WORK", serial_work)  # serial, then parallel

    g = np.random.default_rng(4)
    nnz, n_rows = 200, 7
    rows = np.sort(g.integers(0, n_rows, nnz))
    cols = np.stack([g.integers(0, 5, nnz), g.integers(0, 4, nnz)], axis=1)
    vals = g.standard_normal(nnz)
    mats = [g.standard_normal((5, 3)), g.standard_normal((4, 2))]
    rowptr = np.searchsorted(rows, np.arange(n_rows + 1)).astype(np.int64)
    a = ttm_rows_numba(rowptr, cols, vals, mats)
    b = ttm_rows_xp(xnp, rows, [cols[:, 0], cols[:, 1]], vals, mats, n_rows)
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
    assert a.shape == (n_rows, 6)


def test_empty_sparse_tensor():
    S = SparseTensor(np.zeros((0, 3), dtype=np.int64), np.zeros(0), (3, 4, 5))
    out = multi_mode_dot(S, [np.ones((2, 4))], [1])
    assert out.shape == (3, 2, 5) and not np.any(out)


def test_tucker_tree_reuses_half_and_is_exact():
    g = np.random.default_rng(5)
    X = g.standard_normal((6, 5, 4, 3))
    U = [np.linalg.qr(g.standard_normal((s, 2)))[0] for s in X.shape]
    tree = TuckerTree(np, X)
    for _sweep in range(2):
        for n in range(4):
            others = [m for m in range(4) if m != n]
            ref = multi_mode_dot(X, [U[m] for m in others], others, transpose=True)
            np.testing.assert_allclose(tree.other_modes(U, n), ref, rtol=1e-12, atol=1e-12)
            U[n] = np.linalg.qr(g.standard_normal((X.shape[n], 2)))[0]


def test_backends(backend):
    g = np.random.default_rng(6)
    Xn = g.standard_normal((3, 4, 5))
    mats = [g.standard_normal((2, 4)), g.standard_normal((3, 5))]
    out = multi_mode_dot(backend.asarray(Xn), [backend.asarray(M) for M in mats], [1, 2])
    assert type(out) is type(backend.asarray(Xn))
    from tensorfact import _backend as B

    np.testing.assert_allclose(B.to_numpy(out), _reference(Xn, mats, [1, 2]), rtol=1e-12)


def test_inputs_not_mutated():
    g = np.random.default_rng(7)
    X = g.standard_normal((3, 4, 5))
    M = g.standard_normal((2, 4))
    X0, M0 = X.copy(), M.copy()
    multi_mode_dot(X, [M], [1])
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(M, M0)


@pytest.mark.parametrize("args, kwargs, exc, word", [
    (([np.ones((2, 3))],), dict(modes=[1]), ValueError, "matrices[0]"),
    (([np.ones((2, 4))],), dict(modes=[3]), ValueError, "modes"),
    (([np.ones((2, 4))],), dict(modes=[1.0]), TypeError, "modes"),
    (([np.ones((2, 4)), np.ones((2, 4))],), dict(modes=[1, 1]), ValueError, "modes"),
    (([np.ones((2, 4))],), dict(modes=[1, 2]), ValueError, "modes"),
    (([np.ones((2, 4))],), dict(modes=[1], skip=1), ValueError, "skip"),
    (([np.ones(4)],), dict(modes=[1]), ValueError, "matrices[0]"),
    ((np.ones((2, 4)),), dict(modes=[1]), TypeError, "matrices"),
    (([np.ones((2, 4))],), dict(modes=[1], transpose="yes"), TypeError, "transpose"),
    (([[[1.0] * 4] * 2],), dict(modes=[1]), TypeError, "matrices[0]"),
    (([np.ones((2, 4), dtype=np.float32)],), dict(modes=[1]), TypeError, "matrices[0]"),
])
def test_bad_input(args, kwargs, exc, word):
    X = np.ones((3, 4, 5))
    with pytest.raises(exc, match=word.replace("[", r"\[").replace("]", r"\]")):
        multi_mode_dot(X, *args, **kwargs)


def test_bad_tensor():
    with pytest.raises(TypeError, match="X"):
        multi_mode_dot([[1.0]], [np.ones((1, 1))])
    with pytest.raises(TypeError, match="X"):
        multi_mode_dot(np.ones((2, 2), dtype=complex), [np.ones((1, 2))])


def test_public_names():
    assert tf.multi_mode_dot is multi_mode_dot
    assert tf.tenalg.TuckerTree is TuckerTree
