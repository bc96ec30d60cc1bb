"""Joint triangularization: the loss history never increases; scale invariance; solver failures."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from tensorfact import cp_joint_schur, joint_triangularize, triangularization_error_bound
from tensorfact.datasets import planted_cp
from tensorfact.decomposition._joint import _bound as bound_module
from tensorfact.decomposition._joint import _gauss_newton, _jacobi
from tensorfact.decomposition._joint import _objective as J

METHODS = ["gauss_newton", "gauss_newton_cg", "jacobi"]


def random_family(rng, d, N, sigma, coupling):
    """Noisy M_n = V T_n V^{-1}, T_n upper triangular (diagonal when coupling = 0)."""
    V = rng.standard_normal((d, d))
    V /= np.linalg.norm(V, axis=0)
    T = np.einsum("ni,ij->nij", rng.standard_normal((N, d)), np.eye(d))
    T += coupling / np.sqrt(d) * np.triu(rng.standard_normal((N, d, d)), 1)
    M = np.einsum("ij,njk,kl->nil", V, T, np.linalg.inv(V))
    return M + sigma * rng.standard_normal(M.shape)


def check_history(res, M):
    """Loss history non-increasing and ending at the loss of the orthogonal U returned."""
    loss = np.asarray(res.history.objective)
    d = M.shape[-1]
    assert np.all(np.diff(loss) <= 0.0), np.diff(loss).max()
    assert loss[-1] == res.loss
    assert np.linalg.norm(res.U.T @ res.U - np.eye(d)) < 1e-14 * d
    exact = J.triangularization_loss(J.congruence(np.asarray(res.U), M))
    assert res.loss == pytest.approx(exact, rel=1e-9, abs=1e-28 * float(np.sum(M**2)))


# --------------------------------------------------------------------------- #
# the history's objective never increases
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", METHODS)
def test_history_non_increasing_on_random_problems(method):
    rng = np.random.default_rng({"gauss_newton": 1, "gauss_newton_cg": 2, "jacobi": 3}[method])
    for _ in range(16 if method != "jacobi" else 12):
        d = int(rng.integers(2, {"gauss_newton": 17, "gauss_newton_cg": 26, "jacobi": 9}[method]))
        N = int(rng.choice([1, 2, 3, 8]))
        sigma = float(10 ** rng.uniform(-6, -0.5))
        M = random_family(rng, d, N, sigma, float(rng.choice([0.0, 1.0])))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # singular Gauss-Newton matrices (N = 1)
            res = joint_triangularize(M, method=method, rng=int(rng.integers(100)), max_iter=40)
        check_history(res, M)


# problems on which the products of rotations drift by more than 1e-13 from
# orthogonality over a long run (one noisy non-normal matrix, 200 steps):
# earlier versions re-orthonormalised U at the end and replaced the last
# history entry by a loss that could be larger
DRIFTING = [(3, "gauss_newton"), (3, "gauss_newton_cg"), (24, "gauss_newton_cg")]


def _drifting_problem(seed):
    rng = np.random.default_rng(seed)
    d = int(rng.integers(8, 17))
    N = int(rng.choice([1, 2, 3]))
    sigma = float(10 ** rng.uniform(-3, -1))
    return random_family(np.random.default_rng(seed), d, N, sigma, 1.0)


def test_drifting_runs_keep_a_non_increasing_history(monkeypatch):
    # without the orthonormalisation of every iterate, these runs drift
    with monkeypatch.context() as mp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        mp.setattr(_gauss_newton, "orthonormalize", lambda U: U)
        drift = []
        for seed, method in DRIFTING:
            M = _drifting_problem(seed)
            res = joint_triangularize(M, method=method, rng=seed, max_iter=200)
            drift.append(np.linalg.norm(res.U.T @ res.U - np.eye(M.shape[-1])))
    assert max(drift) > 1e-13
    for seed, method in DRIFTING:
        M = _drifting_problem(seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            res = joint_triangularize(M, method=method, rng=seed, max_iter=200)
        check_history(res, M)


def test_jacobi_orthonormalises_every_sweep(monkeypatch):
    rng = np.random.default_rng(4)
    M = random_family(rng, 7, 3, 1e-2, 1.0)
    calls = []
    orig = _jacobi.orthonormalize
    monkeypatch.setattr(_jacobi, "orthonormalize", lambda U: calls.append(1) or orig(U))
    res = joint_triangularize(M, method="jacobi", rng=0, max_iter=20)
    assert len(calls) >= res.n_iter + 1
    check_history(res, M)


def test_non_orthogonal_init_is_orthonormalised_first():
    rng = np.random.default_rng(5)
    M = random_family(rng, 6, 3, 1e-3, 0.0)
    Q = np.linalg.qr(rng.standard_normal((6, 6)))[0]
    U0 = Q + 1e-8 * rng.standard_normal((6, 6))  # accepted (within 1e-6 of orthogonal)
    for method in METHODS:
        res = joint_triangularize(M, init=U0, method=method, max_iter=3)
        check_history(res, M)


# --------------------------------------------------------------------------- #
# results independent of the matrices' scale
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("method", METHODS)
def test_joint_triangularize_same_U_at_any_scale(method):
    rng = np.random.default_rng(6)
    M = random_family(rng, {"gauss_newton": 12, "gauss_newton_cg": 30, "jacobi": 8}[method], 3,
                      1e-3, 0.0)
    ref = joint_triangularize(M, method=method, rng=0, max_iter=30)
    for k in (-1000, 1000):
        res = joint_triangularize(np.ldexp(M, k), method=method, rng=0, max_iter=30)
        np.testing.assert_array_equal(res.U, ref.U)
        np.testing.assert_array_equal(res.T, np.ldexp(ref.T, k))
        assert res.rel_error == ref.rel_error
        assert res.history.rel_error == ref.history.rel_error
        assert (res.n_iter, res.converged) == (ref.n_iter, ref.converged)
        with np.errstate(over="ignore", under="ignore"):
            expected = np.ldexp(np.asarray(ref.history.objective), 2 * k)
        np.testing.assert_array_equal(res.history.objective, expected)
        assert res.loss == (np.inf if k > 0 else 0.0)  # 4^1000 L leaves the float64 range


@pytest.mark.parametrize("iterative", [False, True])
@pytest.mark.parametrize("noise_norm", ["fro", "gaussian"])
def test_bound_same_at_any_scale(monkeypatch, iterative, noise_norm):
    if iterative:
        monkeypatch.setattr(bound_module, "BOUND_MATRIX_FREE_MIN_D", 2)
    rng = np.random.default_rng(7)
    M = random_family(rng, 12, 3, 1e-5, 0.0)
    U = joint_triangularize(M, rng=0).U
    ref = triangularization_error_bound(M, U, 1e-5, noise_norm=noise_norm)
    assert np.isfinite(ref.bound)
    for k in (-1000, 1000):
        eb = triangularization_error_bound(np.ldexp(M, k), U, float(np.ldexp(1e-5, k)),
                                           noise_norm=noise_norm)
        for f in ("bound", "first_order", "certified", "step_norm", "noise_term",
                  "nonlinearity"):
            assert getattr(eb, f) == getattr(ref, f), f
        assert eb.gap == np.ldexp(ref.gap, k) and eb.residual == np.ldexp(ref.residual, k)
        assert eb.noise_level == float(np.ldexp(1e-5, k))


def test_cp_joint_schur_same_factors_at_any_scale():
    X, truth = planted_cp((7, 8, 9), rank=3, noise=1e-3, rng=3)
    X = np.asarray(X)
    ref = cp_joint_schur(X, 3, rng=0)
    for k in (-1000, 1000):
        res = cp_joint_schur(np.ldexp(X, k), 3, rng=0)
        np.testing.assert_array_equal(res.triangularization.U, ref.triangularization.U)
        for a, b in zip(res.cp.factors, ref.cp.factors, strict=True):
            np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(res.cp.weights, np.ldexp(ref.cp.weights, k))
        assert res.rel_error == ref.rel_error
    # subnormal data loses bits but does not fail
    tiny = cp_joint_schur(X * 1e-320, 3, rng=0)
    assert np.all(np.isfinite(tiny.cp.weights)) and np.isfinite(tiny.rel_error)


# --------------------------------------------------------------------------- #
# solver failures become clear errors
# --------------------------------------------------------------------------- #
def _failing(*args, **kwargs):
    raise np.linalg.LinAlgError("Eigenvalues did not converge")


def test_bound_linalg_error_becomes_floating_point_error(monkeypatch):
    rng = np.random.default_rng(8)
    M = random_family(rng, 6, 3, 1e-5, 0.0)
    U = joint_triangularize(M, rng=0).U
    monkeypatch.setattr(np.linalg, "eigh", _failing)
    with pytest.raises(FloatingPointError, match="triangularization_error_bound.*U"):
        triangularization_error_bound(M, U, 1e-5)


def test_cp_joint_schur_linalg_error_becomes_floating_point_error(monkeypatch):
    X, _ = planted_cp((6, 7, 8), rank=3, rng=0)
    monkeypatch.setattr(np.linalg, "eigh", _failing)
    with pytest.raises(FloatingPointError, match="cp_joint_schur.*X"):
        cp_joint_schur(X, 3, rng=0)


def test_cp_joint_schur_slice_ratio_failure_named(monkeypatch):
    X, _ = planted_cp((6, 7, 8), rank=3, rng=0)
    monkeypatch.setattr(np.linalg, "lstsq", _failing)
    with pytest.raises(FloatingPointError, match="cp_joint_schur.*X"):
        cp_joint_schur(X, 3, rng=0)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_input_named(bad):
    X, _ = planted_cp((6, 7, 8), rank=3, rng=0)
    X = np.array(X)
    X[1, 2, 3] = bad
    with pytest.raises(ValueError, match="X contains NaN or Inf"):
        cp_joint_schur(X, 3, rng=0)
    rng = np.random.default_rng(9)
    M = random_family(rng, 5, 2, 1e-5, 0.0)
    U = joint_triangularize(M, rng=0).U
    Mb = M.copy()
    Mb[0, 1, 1] = bad
    with pytest.raises(ValueError, match="matrices contains NaN or Inf"):
        triangularization_error_bound(Mb, U, 1e-5)
    with pytest.raises(ValueError, match="noise_level"):
        triangularization_error_bound(M, U, bad)
    Ub = np.array(U)
    Ub[0, 0] = bad
    with pytest.raises(ValueError, match="U contains NaN or Inf"):
        triangularization_error_bound(M, Ub, 1e-5)
