"""Memory-order gather of sampled dense fibers: the Numba kernel and its twin."""

from __future__ import annotations

import array_api_compat.numpy as xpn
import numpy as np
import pytest

import tensorfact as tf
from tensorfact._kernels.dense import gather_dense_fibers_numba, gather_dense_fibers_xp
from tensorfact.formats import DenseTensor


@pytest.mark.parametrize("shape", [(1, 7, 9), (6, 7, 1), (5, 6, 7), (2, 3, 4)])
def test_kernel_and_twin_agree(shape):
    gen = np.random.default_rng(0)
    X3 = gen.standard_normal(shape)
    s = 40
    lo = gen.integers(0, shape[0], s)
    hi = gen.integers(0, shape[2], s)
    want = np.stack([X3[lo[k], :, hi[k]] for k in range(s)])
    np.testing.assert_array_equal(gather_dense_fibers_numba(X3, lo, hi), want)
    np.testing.assert_array_equal(gather_dense_fibers_xp(xpn, X3, lo, hi), want)


@pytest.mark.parametrize("mode", [0, 1, 2, 3])
def test_sampled_fibers_are_the_fibers(mode, backend):
    gen = np.random.default_rng(1)
    X = gen.standard_normal((4, 5, 6, 3))
    others = [m for m in range(4) if m != mode]
    idx = np.stack([gen.integers(0, X.shape[m], 25) for m in others], axis=1)
    got = DenseTensor(backend.asarray(X)).sampled_fibers(mode, idx)
    Xm = np.moveaxis(X, mode, -1)
    want = np.stack([Xm[tuple(row)] for row in idx])
    np.testing.assert_array_equal(tf._backend.to_numpy(got), want)


def test_non_contiguous_input_uses_the_twin():
    gen = np.random.default_rng(2)
    X = gen.standard_normal((6, 5, 4)).transpose(2, 1, 0)  # F-ordered view
    idx = np.stack([gen.integers(0, 4, 10), gen.integers(0, 6, 10)], axis=1)
    got = DenseTensor(X).sampled_fibers(1, idx)
    want = np.stack([X[a, :, b] for a, b in idx])
    np.testing.assert_array_equal(got, want)


def test_too_few_samples_for_an_estimate_warn_and_report_exact_errors():
    X, _ = tf.datasets.planted_cp((20, 21, 22), 3, noise=0.4, rng=0)
    with pytest.warns(UserWarning, match="n_samples=1 .* too few for an error estimate"):
        res = tf.spals(X, 3, n_samples=1, max_iter=3, rng=0)
    exact = float(np.linalg.norm(X - res.cp.to_dense()) / np.linalg.norm(X))
    assert res.rel_error == pytest.approx(exact, rel=1e-10)
    assert res.rel_error > 0.3
