"""joint_triangularize on the shared iteration monitor, and the cp_joint_schur result."""

from __future__ import annotations

import logging
import math
import warnings

import numpy as np
import pytest
import scipy.linalg as sla

from tensorfact import (
    ConvergenceHistory,
    JointSchurCPResult,
    JointTriangularizationResult,
    SingularGramWarning,
    cp_joint_schur,
    joint_triangularize,
)
from tensorfact import _backend as B
from tensorfact.datasets import planted_cp

METHODS = ["gauss_newton", "gauss_newton_cg", "jacobi"]


def noisy_problem(d=6, N=4, sigma=1e-3, seed=0):
    """Planted jointly diagonalizable matrices plus noise, and a poor start."""
    rng = np.random.default_rng(seed)
    V = rng.standard_normal((d, d))
    lam = rng.standard_normal((N, d))
    M = np.stack([V @ np.diag(lam[n]) @ np.linalg.inv(V) for n in range(N)])
    M = M + sigma * rng.standard_normal(M.shape)
    _, Z = sla.schur(M[0], output="real")
    A = rng.standard_normal((d, d))
    A = 0.3 * (A - A.T) / np.linalg.norm(A - A.T)
    return M, Z @ sla.expm(A)


# --------------------------------------------------------------------------- #
# history, rel_error
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", METHODS)
def test_history_is_the_shared_type_with_one_entry_per_iteration(method):
    M, U0 = noisy_problem()
    res = joint_triangularize(M, init=U0, method=method, max_iter=200)
    h = res.history
    assert isinstance(res, JointTriangularizationResult)
    assert isinstance(h, ConvergenceHistory)
    assert res.n_iter >= 2
    assert len(h) == len(h.rel_error) == len(h.time) == len(h.objective) == res.n_iter + 1
    assert h.objective[-1] == res.loss and h.rel_error[-1] == res.rel_error
    assert all(b <= a for a, b in zip(h.objective, h.objective[1:]))
    assert all(b >= a for a, b in zip(h.time, h.time[1:]))
    # entry 0 is the starting point
    T0 = np.einsum("ji,njk,kl->nil", U0, M, U0)
    assert h.objective[0] == pytest.approx(float(np.sum(np.tril(T0, -1) ** 2)), rel=1e-12)


@pytest.mark.parametrize("method", METHODS)
def test_rel_error_is_relative_size_of_the_lower_parts(method):
    M, U0 = noisy_problem(seed=1)
    res = joint_triangularize(M, init=U0, method=method, max_iter=50)
    scale = float(np.sum(M**2))
    assert type(res.rel_error) is float
    assert res.rel_error == pytest.approx(math.sqrt(res.loss / scale), rel=1e-14)
    for err, loss in zip(res.history.rel_error, res.history.objective):
        assert err == pytest.approx(math.sqrt(loss / scale), rel=1e-14)


def test_rel_error_float32_and_zero_matrices():
    M, _ = noisy_problem(seed=2)
    res = joint_triangularize(M.astype(np.float32), rng=0)
    assert type(res.rel_error) is float and res.U.dtype == np.float32
    zero = joint_triangularize(np.zeros((2, 3, 3)), rng=0)
    assert zero.rel_error == 0.0 and zero.loss == 0.0 and zero.converged and zero.n_iter == 0
    assert len(zero.history) == 1


# --------------------------------------------------------------------------- #
# callback, verbose
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("k", [1, 2])
def test_callback_stops_after_k_iterations(method, k):
    M, U0 = noisy_problem(seed=3)
    full = joint_triangularize(M, init=U0, method=method, max_iter=200)
    assert full.n_iter > k
    seen = []

    def callback(it, U, rel):
        seen.append((it, U, rel))
        return it == k

    res = joint_triangularize(M, init=U0, method=method, max_iter=200, callback=callback)
    assert res.n_iter == k and not res.converged
    assert len(res.history) == k + 1
    assert [s[0] for s in seen] == list(range(1, k + 1))
    assert [s[2] for s in seen] == list(res.history.rel_error[1:])
    np.testing.assert_array_equal(seen[-1][1], res.U)
    # the run up to the stop is the full run's beginning
    assert res.history.objective == full.history.objective[:k + 1]


@pytest.mark.parametrize("method", METHODS)
def test_callback_gets_a_copy_in_the_callers_dtype(method):
    M, U0 = noisy_problem(seed=4)
    seen = []
    res = joint_triangularize(M.astype(np.float32), init=U0, method=method, max_iter=5,
                              callback=lambda it, U, rel: seen.append(U))
    assert len(seen) == res.n_iter >= 2
    assert all(U.dtype == np.float32 and U.shape == (6, 6) for U in seen)
    assert not np.array_equal(seen[0], seen[-1])  # not one array mutated in place
    np.testing.assert_array_equal(seen[-1], res.U)


def test_callback_namespace(backend):
    M, U0 = noisy_problem(seed=5)
    seen = []
    Mx = backend.asarray(M)
    joint_triangularize(Mx, rng=0, max_iter=3, callback=lambda it, U, rel: seen.append(U))
    assert seen and all(B.namespace(U) is B.namespace(Mx) for U in seen)


def test_callback_must_be_callable():
    M, _ = noisy_problem()
    with pytest.raises(TypeError, match="callback"):
        joint_triangularize(M, callback=3)


@pytest.mark.parametrize("method", METHODS)
def test_verbose_gives_bit_identical_results(method, capsys, caplog):
    M, U0 = noisy_problem(seed=6)
    quiet = joint_triangularize(M, init=U0, method=method, max_iter=30)
    with caplog.at_level(logging.INFO, logger="tensorfact.joint"):
        loud = joint_triangularize(M, init=U0, method=method, max_iter=30, verbose=True)
    assert "joint_triangularize" in capsys.readouterr().err  # tqdm writes to stderr
    assert any("relative error" in r.message for r in caplog.records)
    np.testing.assert_array_equal(loud.U, quiet.U)
    np.testing.assert_array_equal(loud.T, quiet.T)
    assert loud.history.objective == quiet.history.objective
    assert (loud.n_iter, loud.converged, loud.loss) == (quiet.n_iter, quiet.converged, quiet.loss)


# --------------------------------------------------------------------------- #
# non-finite input and iterates
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("bad", [np.nan, np.inf])
@pytest.mark.parametrize("method", METHODS)
def test_check_finite(bad, method):
    M, U0 = noisy_problem(seed=7)
    M[1, 2, 0] = bad
    with pytest.raises(ValueError, match="matrices contains NaN or Inf"):
        joint_triangularize(M, method=method)
    for init in ("schur", U0):
        with pytest.raises(FloatingPointError, match="joint_triangularize.*non-finite"):
            joint_triangularize(M, init=init, method=method, check_finite=False)


def test_check_finite_false_changes_nothing_on_finite_input():
    M, U0 = noisy_problem(seed=8)
    a = joint_triangularize(M, init=U0)
    b = joint_triangularize(M, init=U0, check_finite=False)
    np.testing.assert_array_equal(a.U, b.U)


@pytest.mark.parametrize("method", METHODS)
def test_entries_too_large_to_square_are_fine(method):
    # the iteration runs on the matrices scaled by a power of two: same U and
    # rel_error; the loss itself (1e320 times larger) is inf in the caller's units
    M, _ = noisy_problem(seed=9)
    ref = joint_triangularize(M, rng=0, method=method)
    big = joint_triangularize(M * 2.0**600, rng=0, method=method)
    np.testing.assert_array_equal(big.U, ref.U)
    assert big.rel_error == ref.rel_error
    assert big.loss == math.inf and all(v == math.inf for v in big.history.objective)


def test_singular_gauss_newton_matrix_warns_and_loss_still_decreases():
    # one matrix whose noise created complex eigenvalue pairs: no real
    # triangularizer, a singular Gauss-Newton matrix (pseudo-inverse step)
    rng = np.random.default_rng(5)
    while True:
        V = rng.standard_normal((6, 6))
        M = (V @ np.diag(rng.standard_normal(6)) @ np.linalg.inv(V))[None]
        M = M + 5e-3 * rng.standard_normal(M.shape)
        if np.any(np.abs(np.linalg.eigvals(M[0]).imag) > 0):
            break
    with pytest.warns(SingularGramWarning, match="Gauss-Newton"):
        res = joint_triangularize(M, rng=0)
    loss = np.asarray(res.history.objective)
    assert np.all(np.diff(loss) <= 0.0) and loss[-1] < loss[0]


# --------------------------------------------------------------------------- #
# cp_joint_schur result
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(("shape", "rank", "noise"), [((6, 7, 8), 3, 1e-3), ((9, 5, 4), 2, 0.1),
                                                      ((8, 9, 10), 4, 0.0)])
def test_cp_joint_schur_rel_error_is_exact(shape, rank, noise):
    X, _ = planted_cp(shape, rank, noise=noise, rng=11)
    res = cp_joint_schur(X, rank, rng=0)
    assert isinstance(res, JointSchurCPResult)
    assert type(res.rel_error) is float
    ref = np.linalg.norm(X - res.cp.to_dense()) / np.linalg.norm(X)
    assert res.rel_error == pytest.approx(ref, rel=1e-9, abs=1e-15)
    tri = res.triangularization
    assert isinstance(tri, JointTriangularizationResult)
    assert tri.U.shape == (rank, rank) and tri.converged
    with pytest.raises(AttributeError):
        res.rel_error = 0.0  # frozen


def test_cp_joint_schur_rel_error_blockwise(monkeypatch):
    from tensorfact.decomposition._joint import _schur_cp

    X, _ = planted_cp((6, 7, 8), 3, noise=1e-2, rng=12)
    whole = cp_joint_schur(X, 3, rng=0)
    monkeypatch.setattr(_schur_cp, "_RESIDUAL_BLOCK", 50)  # one slice per block
    blocks = cp_joint_schur(X, 3, rng=0)
    assert blocks.rel_error == pytest.approx(whole.rel_error, rel=1e-12)
    ref = np.linalg.norm(X - whole.cp.to_dense()) / np.linalg.norm(X)
    assert blocks.rel_error == pytest.approx(ref, rel=1e-9)


def test_cp_joint_schur_rank_one_and_zero_tensor():
    X, _ = planted_cp((5, 6, 7), 1, noise=1e-3, rng=13)
    res = cp_joint_schur(X, 1, rng=0)
    ref = np.linalg.norm(X - res.cp.to_dense()) / np.linalg.norm(X)
    assert res.rel_error == pytest.approx(ref, rel=1e-9)
    assert res.triangularization.U.shape == (1, 1) and res.triangularization.n_iter == 0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        zero = cp_joint_schur(np.zeros((4, 5, 6)), 2, rng=0)
    assert zero.rel_error == 0.0


def test_cp_joint_schur_rel_error_backends(backend):
    X, _ = planted_cp((6, 7, 8), 3, noise=1e-3, rng=14)
    ref = cp_joint_schur(X, 3, rng=0)
    res = cp_joint_schur(backend.asarray(X), 3, rng=0)
    assert type(res.rel_error) is float
    assert res.rel_error == pytest.approx(ref.rel_error, rel=1e-6)
