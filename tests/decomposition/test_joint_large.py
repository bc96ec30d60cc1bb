"""Joint triangularization at large d: matrix-free Gauss-Newton-CG and the iterative bound."""

from __future__ import annotations

import time
import warnings

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment

from tensorfact import BoundInvalidWarning, joint_triangularize, triangularization_error_bound
from tensorfact.decomposition._joint import _bound as bound_module
from tensorfact.decomposition._joint import _objective as J
from tensorfact.decomposition._joint._matrix_free import (
    CGStepper,
    JacobianOperator,
    pcg,
    smallest_singular_values,
)
from tensorfact.decomposition._joint._solver import MATRIX_FREE_MIN_D, resolve_method


def planted_triangular(d, N, rng, *, sigma=1e-3, coupling=0.0, noise="fro"):
    """M_n = V T_n V^{-1} + noise, T_n upper triangular (jointly triangularizable).

    ``T_n = diag(lam_n) + coupling / sqrt(d) * strictly_upper(G_n)`` with
    Gaussian ``lam_n``, ``G_n``; ``coupling = 0`` is a jointly diagonalizable
    family. Noise ``sigma W_n`` with ``||W_n||_F = 1`` (``noise="fro"``) or
    i.i.d. standard normal entries (``noise="entry"``). Returns the noisy
    matrices, ``V`` and the eigenvalues.
    """
    V = rng.standard_normal((d, d))
    V /= np.linalg.norm(V, axis=0)
    lam = rng.standard_normal((N, d))
    T = np.einsum("ni,ij->nij", lam, np.eye(d))
    T += coupling / np.sqrt(d) * np.triu(rng.standard_normal((N, d, d)), 1)
    M = np.einsum("ij,njk,kl->nil", V, T, np.linalg.inv(V))
    W = rng.standard_normal(M.shape)
    if noise == "fro":
        W /= np.linalg.norm(W, axis=(1, 2), keepdims=True)
    return M + sigma * W, V, lam


def true_error(U, M, V, lam):
    """min over exact triangularizers U0 of ||U - U0||_F (diagonal family)."""
    D = np.einsum("ji,njk,ki->ni", U, M, U)
    cost = ((D[:, :, None] - lam[:, None, :]) ** 2).sum(axis=0)
    _, perm = linear_sum_assignment(cost)
    Q, _ = np.linalg.qr(V[:, perm])
    Q = Q * np.where(np.sum(Q * U, axis=0) < 0, -1.0, 1.0)[None, :]
    return float(np.linalg.norm(U - Q))


# --------------------------------------------------------------------------- #
# the matrix-free operators
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(("d", "N"), [(2, 1), (7, 3), (12, 1), (9, 5)])
def test_matrix_free_products_match_the_sparse_jacobian(d, N):
    rng = np.random.default_rng(d * 10 + N)
    T = rng.standard_normal((N, d, d))
    op = JacobianOperator(T)
    Jac = J.jacobian(T).toarray()
    a = rng.standard_normal(op.m)
    np.testing.assert_allclose(op.gram(a), Jac.T @ (Jac @ a), atol=1e-12)
    np.testing.assert_allclose(op.adjoint(T), Jac.T @ J.lower_vec(T), atol=1e-12)
    np.testing.assert_allclose(op.gram_diagonal(), np.sum(Jac**2, axis=0), atol=1e-12)
    assert op.jac_norm_sq(a) == pytest.approx(float(np.sum((Jac @ a) ** 2)), rel=1e-12)
    np.testing.assert_allclose(op.skew(a), J.skew(a, d), atol=0)


def test_eigenvector_preconditioner_is_spd_and_beats_jacobi_near_a_solution():
    rng = np.random.default_rng(3)
    M, _, _ = planted_triangular(40, 3, rng)
    U = joint_triangularize(M, rng=0).U
    op = JacobianOperator(J.congruence(U, M))
    P = op.eigenvector_preconditioner()
    assert P is not None
    X = rng.standard_normal((op.m, 6))
    PX = np.column_stack([P(X[:, i]) for i in range(6)])
    S = X.T @ PX
    np.testing.assert_allclose(S, S.T, rtol=1e-10, atol=1e-12 * np.abs(S).max())
    assert np.all(np.linalg.eigvalsh((S + S.T) / 2) > 0)
    b = rng.standard_normal(op.m)
    its = {}
    for name, pre in (("eigenvector", P), ("jacobi", op.jacobi_preconditioner())):
        res = pcg(op.gram, b, pre, rtol=1e-6, maxiter=5000)
        assert res.converged
        np.testing.assert_allclose(op.gram(res.x), b, atol=2e-6 * np.linalg.norm(b))
        its[name] = res.iterations
    assert its["eigenvector"] < 0.5 * its["jacobi"]


def test_smallest_singular_values_bracket_the_dense_ones():
    rng = np.random.default_rng(4)
    M, _, _ = planted_triangular(20, 3, rng)
    U = joint_triangularize(M, rng=0).U
    T = J.congruence(U, M)
    op = JacobianOperator(T)
    s = np.sqrt(np.clip(np.linalg.eigvalsh(J.gram(J.jacobian(T))), 0, None))
    low, up = smallest_singular_values(op, 3)
    assert np.all(low <= s[:3] * (1 + 1e-12)) and np.all(up >= s[:3] * (1 - 1e-12))
    np.testing.assert_allclose(low, s[:3], rtol=1e-3)


# --------------------------------------------------------------------------- #
# Gauss-Newton-CG and method="auto"
# --------------------------------------------------------------------------- #
def test_auto_method_rule():
    assert resolve_method("auto", MATRIX_FREE_MIN_D - 1) == "gauss_newton"
    assert resolve_method("auto", MATRIX_FREE_MIN_D) == "gauss_newton_cg"
    for m in ("gauss_newton", "gauss_newton_cg", "jacobi"):
        assert resolve_method(m, 3) == m and resolve_method(m, 500) == m
    with pytest.raises(ValueError, match="method must be one of"):
        joint_triangularize(np.eye(3)[None], method="newton")


@pytest.mark.parametrize(("d", "N", "sigma"), [(6, 3, 1e-3), (12, 4, 1e-2), (20, 3, 1e-4),
                                                 (30, 10, 1e-3)])
def test_gauss_newton_cg_reaches_the_direct_minimiser(d, N, sigma):
    rng = np.random.default_rng(d + N)
    M, V, lam = planted_triangular(d, N, rng, sigma=sigma)
    a = joint_triangularize(M, rng=1, method="gauss_newton")
    b = joint_triangularize(M, rng=1, method="gauss_newton_cg")
    assert a.converged and b.converged
    assert b.loss == pytest.approx(a.loss, rel=1e-6)
    S = np.sign(np.sum(a.U * b.U, axis=0))
    np.testing.assert_allclose(b.U * S[None, :], a.U, atol=1e-5)
    assert np.all(np.diff(b.history.objective) <= 0)


def test_gauss_newton_cg_noise_free_converges_to_exact():
    rng = np.random.default_rng(8)
    M, V, lam = planted_triangular(25, 3, rng, sigma=0.0)
    # a start well away from the solution: Schur vectors of one matrix, rotated
    U0 = joint_triangularize(M[:1], max_iter=1).U
    A = rng.standard_normal((25, 25))
    U0 = np.asarray(U0) @ np.linalg.qr(np.eye(25) + 0.02 * (A - A.T))[0]
    res = joint_triangularize(M, init=U0, method="gauss_newton_cg", max_iter=200)
    assert res.converged
    assert res.loss < 1e-24 * float(np.sum(M**2))
    assert true_error(res.U, M, V, lam) < 1e-9


def test_cg_stepper_switches_preconditioner_on_a_hard_start():
    # a non-normal family far from its triangularizer: the eigenvector
    # preconditioner fails there and Jacobi takes over, retried with backoff
    rng = np.random.default_rng(2)
    M, _, _ = planted_triangular(40, 3, rng, coupling=1.0, noise="entry")
    T = J.congruence(np.asarray(joint_triangularize(M, max_iter=1, rng=0).U), M)
    stepper = CGStepper(maxiter=200)
    for _ in range(6):
        a, pred = stepper(T)
        assert pred > 0 and np.all(np.isfinite(a))
    assert any("jacobi" in p for p in stepper.preconditioners)
    assert max(stepper.cg_iterations) <= 200


# --------------------------------------------------------------------------- #
# the bound at large d (iterative path)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("noise_norm", ["fro", "total", "gaussian"])
def test_iterative_bound_matches_dense(monkeypatch, noise_norm):
    rng = np.random.default_rng(5)
    M, V, lam = planted_triangular(30, 3, rng, sigma=1e-4)
    U = joint_triangularize(M, rng=0).U
    dense = triangularization_error_bound(M, U, 1e-4, noise_norm=noise_norm)
    monkeypatch.setattr(bound_module, "BOUND_MATRIX_FREE_MIN_D", 2)
    it = triangularization_error_bound(M, U, 1e-4, noise_norm=noise_norm)
    assert it.gap <= dense.gap * (1 + 1e-12)
    assert it.gap == pytest.approx(dense.gap, rel=1e-3)
    assert it.step_norm == pytest.approx(dense.step_norm, rel=1e-3, abs=1e-12)
    assert it.residual == pytest.approx(dense.residual, rel=1e-12)
    assert np.isfinite(dense.bound)
    if noise_norm == "gaussian":
        # the singular values not computed count as the 8th smallest: larger
        assert dense.bound <= it.bound < 3 * dense.bound
    else:
        assert it.bound == pytest.approx(dense.bound, rel=2e-3)


def test_iterative_bound_honest_inf(monkeypatch):
    rng = np.random.default_rng(6)
    M, V, lam = planted_triangular(30, 3, rng, sigma=1e-4)
    U = joint_triangularize(M, rng=0).U
    monkeypatch.setattr(bound_module, "BOUND_MATRIX_FREE_MIN_D", 2)
    # noise far above the gap: decided by the short LOBPCG run, no step computed
    with pytest.warns(BoundInvalidWarning, match="too small"):
        eb = triangularization_error_bound(M, U, 10.0)
    assert eb.bound == np.inf and np.isnan(eb.step_norm)
    # an eigensolver budget too small to certify the gap: inf, not a guess
    monkeypatch.setattr(bound_module, "_LOBPCG_SHORT", 1)
    monkeypatch.setattr(bound_module, "_LOBPCG_LONG", 1)
    with pytest.warns(BoundInvalidWarning, match="could not certify"):
        eb = triangularization_error_bound(M, U, 1e-4)
    assert eb.bound == np.inf


def test_moderate_d_end_to_end():
    """d = 60 (auto: Gauss-Newton-CG, iterative bound) in a few seconds; the bound covers."""
    rng = np.random.default_rng(0)
    d, N, sigma = 60, 3, 1e-3
    M, V, lam = planted_triangular(d, N, rng, sigma=sigma)
    t0 = time.perf_counter()
    res = joint_triangularize(M, rng=0)
    eb = triangularization_error_bound(M, res.U, sigma)  # fro: ||Delta_n||_F = sigma
    elapsed = time.perf_counter() - t0
    assert res.converged
    assert np.linalg.norm(res.U.T @ res.U - np.eye(d)) < 1e-13
    err = true_error(res.U, M, V, lam)
    assert np.isfinite(eb.bound) and err <= eb.bound
    assert err < 0.1
    # about 0.5 s on one idle core; only a guard against a hang, generous
    # because BLAS threads contend on a busy machine
    assert elapsed < 120


@pytest.mark.slow
@pytest.mark.parametrize(("coupling", "noise"), [(0.0, "fro"), (0.0, "entry"), (1.0, "entry")])
def test_d150_under_a_minute(coupling, noise):
    """The acceptance case: d = 150, N = 3, noise 1e-3, in under 60 s with a bound or inf."""
    rng = np.random.default_rng(0)
    d, sigma = 150, 1e-3
    M, V, lam = planted_triangular(d, 3, rng, sigma=sigma, coupling=coupling, noise=noise)
    t0 = time.perf_counter()
    res = joint_triangularize(M, rng=0)
    # ||Delta_n||_F: sigma (fro), about sigma d for i.i.d. entries (chi with d^2 dof)
    level = sigma if noise == "fro" else sigma * (d + 5.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        eb = triangularization_error_bound(M, res.U, level)
    elapsed = time.perf_counter() - t0
    assert elapsed < 60
    assert np.linalg.norm(res.U.T @ res.U - np.eye(d)) < 1e-13
    assert np.all(np.diff(res.history.objective) <= 0)
    if np.isfinite(eb.bound):
        if coupling == 0.0:
            assert true_error(res.U, M, V, lam) <= eb.bound
    else:
        assert any(issubclass(w.category, BoundInvalidWarning) for w in caught)
    if coupling == 0.0 and noise == "fro":
        assert np.isfinite(eb.bound)
