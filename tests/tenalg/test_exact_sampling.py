"""Exact leverage-score sampling of Khatri-Rao rows (Bharadwaj et al., 2023)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

import tensorfact as tf
from tensorfact._kernels.sampling import tree_descend_np, tree_descend_numba
from tensorfact.tenalg._exact_sampling import ExactKRPSampler, _build_tree


def _exact_leverage_law(factors):
    K = tf.khatri_rao(factors)
    lev = np.einsum("ir,rq,iq->i", K, np.linalg.pinv(K.T @ K), K)
    return lev / lev.sum()


@pytest.mark.parametrize("dims, R", [((5, 6, 7), 4), ((9, 8), 3), ((4, 3, 2, 5), 2)])
def test_frequencies_match_the_exact_leverage_law(dims, R):
    gen = np.random.default_rng(0)
    F = [gen.standard_normal((d, R)) for d in dims]
    F[0][:, 1] = F[0][:, 0] + 0.01 * gen.standard_normal(dims[0])  # skewed scores
    p = _exact_leverage_law(F)
    n = 100_000
    s = tf.sample_krp_rows(F, n, rng=1, sampler="exact")
    np.testing.assert_allclose(s.probabilities, p[s.linear], rtol=1e-9)
    counts = np.zeros(p.shape[0])
    counts[s.linear] = s.counts
    _, pval = stats.chisquare(counts, n * p)
    assert pval > 1e-3
    assert int(s.counts.sum()) == n == s.n_drawn


def test_tree_path_matches_the_law_on_a_tall_factor():
    # more rows than the direct path handles: the segment tree is used
    gen = np.random.default_rng(2)
    F = [gen.standard_normal((3000, 3)) * np.linspace(0.1, 3, 3000)[:, None],
         gen.standard_normal((5, 3))]
    S = ExactKRPSampler(F)
    assert S._tree[0] is not None and S._tree[1] is None
    idx, prob = S.draw([0, 1], 60_000, np.random.default_rng(3))
    p = _exact_leverage_law(F)
    lin = idx[:, 0] * 5 + idx[:, 1]
    np.testing.assert_allclose(prob, p[lin], rtol=1e-9)
    # chi-square on the mode-0 marginal in 30 bins of 100 rows
    marg = p.reshape(3000, 5).sum(axis=1).reshape(30, 100).sum(axis=1)
    got = np.bincount(idx[:, 0] // 100, minlength=30)
    _, pval = stats.chisquare(got, 60_000 * marg)
    assert pval > 1e-3


def test_tree_kernel_twin_and_flat_inverse_cdf_agree():
    gen = np.random.default_rng(4)
    U = gen.standard_normal((5000, 6))
    tree, n_leaves = _build_tree(U, 32)
    W = gen.standard_normal((500, 6))
    u = gen.random(500)
    a = tree_descend_numba(tree, U, W, u, 32, n_leaves)
    b = tree_descend_np(tree, U, W, u, 32, n_leaves)
    flat = []
    for j in range(500):
        c = np.cumsum((U @ W[j]) ** 2)
        flat.append(int(np.searchsorted(c, u[j] * c[-1], side="right")))
    np.testing.assert_array_equal(a, b)
    assert np.mean(a == np.array(flat)) > 0.99  # equal up to rounding at block edges


def test_rank_deficient_product():
    gen = np.random.default_rng(5)
    A = gen.standard_normal((6, 2))
    A = np.concatenate([A, A[:, :1]], axis=1)  # repeated column: rank 2 Gram
    F = [A, gen.standard_normal((7, 3))]
    s = tf.sample_krp_rows(F, 20_000, rng=0, sampler="exact")
    p = _exact_leverage_law(F)
    np.testing.assert_allclose(s.probabilities, p[s.linear], rtol=1e-8)


def test_sampled_solve_recovers_a_consistent_system():
    # noise-free right-hand side: enough exact-leverage rows give the exact solution
    gen = np.random.default_rng(6)
    F = [gen.standard_normal((d, 4)) for d in (8, 9)]
    Bt = gen.standard_normal((5, 4))
    Y = tf.khatri_rao(F) @ Bt.T
    s = tf.sample_krp_rows(F, 72, rng=0, sampler="exact")
    K = tf.krp_rows(F, s.indices) * np.sqrt(s.weights)[:, None]
    coef = np.linalg.lstsq(K, Y[s.linear] * np.sqrt(s.weights)[:, None], rcond=None)[0].T
    np.testing.assert_allclose(coef, Bt, rtol=1e-10, atol=1e-10)


def test_spals_with_the_exact_sampler_recovers_a_plant():
    X, truth = tf.datasets.planted_cp((30, 35, 40), 3, rng=0)
    res = tf.spals(X, 3, sampler="exact", max_iter=15, rng=0)
    assert res.cp.factor_match_score(truth) > 0.999


def test_sampler_arguments_are_checked():
    F = [np.ones((3, 2)), np.ones((4, 2))]
    with pytest.raises(ValueError, match="sampler"):
        tf.sample_krp_rows(F, 5, sampler="bogus")
    with pytest.raises(ValueError, match="deterministic_threshold"):
        tf.sample_krp_rows(F, 5, sampler="exact", deterministic_threshold=0.5)
    with pytest.raises(ValueError, match="scores"):
        tf.sample_krp_rows(F, 5, sampler="exact", scores=[np.ones(3), np.ones(4)])
    X = np.ones((3, 4, 5))
    with pytest.raises(ValueError, match="sampler"):
        tf.spals(X, 2, sampler="bogus")
    with pytest.raises(ValueError, match="deterministic_threshold"):
        tf.spals(X, 2, sampler="exact", deterministic_threshold=0.1)


def test_same_seed_same_draws():
    gen = np.random.default_rng(7)
    F = [gen.standard_normal((d, 3)) for d in (10, 11)]
    a = tf.sample_krp_rows(F, 300, rng=5, sampler="exact")
    b = tf.sample_krp_rows(F, 300, rng=5, sampler="exact")
    np.testing.assert_array_equal(a.linear, b.linear)
    np.testing.assert_array_equal(a.counts, b.counts)
