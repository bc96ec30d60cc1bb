"""Numba sparse kernels against their pure array-API twins and brute force."""

from __future__ import annotations

import array_api_compat.numpy as npx
import numpy as np
import pytest

from tensorfact._kernels import sparse as K
from tensorfact.formats.sparse import SparseTensor
from tensorfact.tenalg import mttkrp


def _random_sparse(rng, shape, density, skew_rows=False):
    D = rng.standard_normal(shape) * (rng.random(shape) < density)
    if skew_rows:  # one very long row in every mode (load-balance edge cases)
        D[0] = rng.standard_normal(shape[1:])
        D[(slice(None), shape[1] - 1) + (0,) * (len(shape) - 2)] = 1.5
    return D


@pytest.mark.parametrize("shape", [(7, 5, 6), (6, 4, 5, 3), (30, 1, 2), (1, 9, 8)])
@pytest.mark.parametrize("skew", [False, True])
def test_mttkrp_numba_equals_twin_and_dense(rng, shape, skew):
    D = _random_sparse(rng, shape, 0.3, skew_rows=skew)
    X = SparseTensor.from_dense(D)
    F = [rng.standard_normal((s, 4)) for s in shape]
    for n in range(len(shape)):
        rowptr, others, vals = K.mode_sorted(np.asarray(X.coords), np.asarray(X.values), n,
                                             shape[n])
        a = K.mttkrp_numba(rowptr, others, vals, F, n)
        b = K.mttkrp_xp(npx, X.coords, X.values, F, n, shape[n])
        ref = mttkrp(D, F, n)
        np.testing.assert_allclose(a, ref, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(b, ref, rtol=1e-12, atol=1e-12)


def test_mttkrp_numba_many_chunks_one_row(rng):
    # 50_000 entries all in one output row: every chunk shares it (head/tail reduction)
    n = 50_000
    coords = np.stack([np.zeros(n, dtype=np.int64), np.arange(n) % 250, np.arange(n) // 250], 1)
    vals = rng.standard_normal(n)
    X = SparseTensor(coords, vals, (3, 250, 200))
    F = [rng.standard_normal((s, 3)) for s in X.shape]
    a = X.mttkrp(F, 0)
    b = X.mttkrp(F, 0, use_numba=False)
    np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-11)
    assert np.all(a[1:] == 0)


def test_mode_sorted_layout(rng):
    D = _random_sparse(rng, (5, 6, 7), 0.4)
    X = SparseTensor.from_dense(D)
    rowptr, others, vals = K.mode_sorted(np.asarray(X.coords), np.asarray(X.values), 1, 6)
    assert rowptr[0] == 0 and rowptr[-1] == X.nnz
    np.testing.assert_array_equal(np.diff(rowptr), np.count_nonzero(D, axis=(0, 2)))
    for i in range(6):
        seg = slice(rowptr[i], rowptr[i + 1])
        np.testing.assert_array_equal(vals[seg], D[others[seg, 0], i, others[seg, 1]])


@pytest.mark.parametrize("shape", [(7, 5, 6), (4, 3, 5, 6)])
def test_gather_numba_equals_twin_and_brute_force(rng, shape):
    D = _random_sparse(rng, shape, 0.25)
    X = SparseTensor.from_dense(D)
    N = len(shape)
    for n in range(N):
        others = [m for m in range(N) if m != n]
        S = np.stack([rng.integers(0, shape[m], 40) for m in others], axis=1)
        S[1] = S[0]  # a repeated sample is served twice
        keys, perm = X._fiber_index(n)
        col = np.ascontiguousarray(X.coords[:, n])
        lin = np.ravel_multi_index(tuple(S.T), tuple(shape[m] for m in others))
        got = K.gather_fibers_numba(keys, perm, col, np.asarray(X.values), lin)
        twin = K.gather_fibers_xp(npx, keys, perm, col, X.values, lin)
        for a, b in zip(got, twin):
            np.testing.assert_array_equal(a, b)
        pos, idx, val = got
        assert np.all(np.diff(pos) >= 0)
        for j in range(S.shape[0]):
            sl = [slice(None)] * N
            for m, s in zip(others, S[j]):
                sl[m] = s
            fiber = D[tuple(sl)]
            nz = np.flatnonzero(fiber)
            np.testing.assert_array_equal(idx[pos == j], nz)
            np.testing.assert_array_equal(val[pos == j], fiber[nz])


def test_gather_empty_samples_and_empty_fibers():
    X = SparseTensor(np.array([[0, 0, 0]]), np.array([2.0]), (2, 2, 2))
    pos, idx, val = X.gather_fibers(2, np.zeros((0, 2), dtype=np.int64))
    assert pos.shape == idx.shape == val.shape == (0,)
    pos, idx, val = X.gather_fibers(2, np.array([[1, 1], [0, 0]]))
    assert pos.tolist() == [1] and idx.tolist() == [0] and val.tolist() == [2.0]


def test_cp_at_nonzeros_numba_equals_twin(rng):
    D = _random_sparse(rng, (6, 7, 8), 0.3)
    X = SparseTensor.from_dense(D)
    F = [rng.standard_normal((s, 3)) for s in D.shape]
    w = rng.random(3) + 0.5
    a = K.cp_at_nonzeros_numba(np.asarray(X.coords), np.asarray(X.values), w, F)
    b = K.cp_at_nonzeros_xp(npx, X.coords, X.values, w, F)
    M = np.einsum("r,ir,jr,kr->ijk", w, *F)
    mask = D != 0
    ref = (np.sum((D - M)[mask] ** 2), np.sum(M[mask] ** 2))
    np.testing.assert_allclose(a, ref, rtol=1e-12)
    np.testing.assert_allclose(b, ref, rtol=1e-12)


def test_float32_factors(rng):
    D = _random_sparse(rng, (6, 7, 8), 0.3).astype(np.float32)
    X = SparseTensor.from_dense(D)
    F = [rng.standard_normal((s, 3)).astype(np.float32) for s in D.shape]
    for n in range(3):
        a = X.mttkrp(F, n)
        assert a.dtype == np.float32
        np.testing.assert_allclose(a, mttkrp(D, F, n), rtol=1e-4, atol=1e-5)


def test_cp_values_numba_equals_krp_rows(rng):
    from tensorfact.tenalg import krp_rows

    F = [rng.standard_normal((s, 3)) for s in (4, 5, 6)]
    w = rng.random(3)
    coords = np.stack([rng.integers(0, s, 50) for s in (4, 5, 6)], axis=1)
    np.testing.assert_allclose(K.cp_values_numba(coords, w, F), krp_rows(F, coords) @ w,
                               rtol=1e-13)


def test_mttkrp_skewed_many_chunks_equals_twin():
    from tensorfact.datasets import planted_sparse_cp

    X, _ = planted_sparse_cp((300, 200, 100), 3, nnz=100_000, skew=1.5, rng=9)
    r = np.random.default_rng(0)
    F = [r.standard_normal((s, 4)) for s in X.shape]
    for n in range(3):
        np.testing.assert_allclose(X.mttkrp(F, n), X.mttkrp(F, n, use_numba=False),
                                   rtol=1e-10, atol=1e-10)
