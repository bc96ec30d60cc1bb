"""One result convention: every solver's result has a float ``rel_error`` that is right."""

from __future__ import annotations

import math

import numpy as np
import pytest

import tensorfact as tf
from tensorfact.datasets import planted_cp


def _rel(X, approx):
    return float(np.linalg.norm(X - approx) / np.linalg.norm(X))


@pytest.fixture(scope="module")
def data():
    gen = np.random.default_rng(0)
    X, _ = planted_cp((9, 10, 11), 3, noise=0.05, rng=0)
    W = gen.standard_normal((12, 15))
    V = gen.standard_normal((5, 5))
    stack = np.stack([V @ np.triu(gen.standard_normal((5, 5))) @ np.linalg.inv(V)
                      for _ in range(3)]) + 1e-3 * gen.standard_normal((3, 5, 5))
    return X, W, stack


def _cp_als(d):
    X = d[0]
    r = tf.cp_als(X, 3, rng=0)
    return r, _rel(X, r.cp.to_dense())


def _spals(d):
    X = d[0]
    r = tf.spals(X, 3, rng=0, max_iter=5, exact_fit_every=5)
    return r, _rel(X, r.cp.to_dense())


def _sampled(d):
    gen = np.random.default_rng(1)
    F = [gen.standard_normal((s, 3)) for s in (6, 7)]
    Y = gen.standard_normal((42, 4))
    r = tf.sampled_krp_lstsq(F, Y, 400, rng=0)
    # the importance-weighted estimate on the sampled rows
    s = r.sample
    K = tf.krp_rows(F, s.indices)
    res = (Y[s.linear] - K @ r.coef.T) * np.sqrt(s.weights)[:, None]
    return r, float(np.linalg.norm(res) / np.linalg.norm(Y[s.linear] * np.sqrt(s.weights)[:, None]))


def _nearest_kronecker(d):
    W = d[1]
    r = tf.nearest_kronecker(W, (3, 5), rank=2)
    return r, _rel(W, r.kt.to_dense())


def _gkpd(d):
    W = d[1]
    r = tf.gkpd(W, (4, 3), rank=1)
    return r, _rel(W, r.kt.to_dense())


def _sekron(d):
    W = d[1]
    r = tf.sekron(W, [(2, 3), (3, 5), (2, 1)], 2)
    return r, _rel(W, r.sekron.to_dense())


def _joint(d):
    M = d[2]
    r = tf.joint_triangularize(M, rng=0)
    T = np.einsum("ji,njk,kl->nil", r.U, M, r.U)
    low = np.tril(T, -1)
    return r, math.sqrt(float(np.sum(low**2)) / float(np.sum(M**2)))


def _cp_joint_schur(d):
    X = d[0]
    r = tf.cp_joint_schur(X, 3, rng=0)
    return r, _rel(X, r.cp.to_dense())


SOLVERS = {f.__name__[1:]: f for f in (_cp_als, _spals, _sampled, _nearest_kronecker, _gkpd,
                                       _sekron, _joint, _cp_joint_schur)}


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_rel_error_is_a_correct_float(data, solver):
    res, expected = SOLVERS[solver](data)
    assert type(res.rel_error) is float
    assert res.rel_error == pytest.approx(expected, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize("solver", sorted(SOLVERS))
def test_results_are_frozen(data, solver):
    res, _ = SOLVERS[solver](data)
    with pytest.raises((AttributeError, TypeError)):
        res.rel_error = 0.0
