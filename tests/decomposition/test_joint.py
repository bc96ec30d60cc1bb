"""Tests for joint triangularization, its a posteriori error bound and cp_joint_schur."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.linalg as sla
from scipy.optimize import linear_sum_assignment

from tensorfact import (
    BoundInvalidWarning,
    CPTensor,
    cp_als,
    cp_joint_schur,
    joint_eigen,
    joint_triangularize,
    triangularization_error_bound,
)
from tensorfact import _backend as B
from tensorfact.datasets import planted_cp
from tensorfact.decomposition._joint import _objective as J


# --------------------------------------------------------------------------- #
# planted problems and the true-error reference
# --------------------------------------------------------------------------- #
def planted(d, N, rng):
    """Jointly diagonalizable M_n = V diag(lam_n) V^{-1} (unit-norm columns of V)."""
    V = rng.standard_normal((d, d))
    V /= np.linalg.norm(V, axis=0)
    lam = rng.standard_normal((N, d))
    Vi = np.linalg.inv(V)
    M = np.stack([V @ np.diag(lam[n]) @ Vi for n in range(N)])
    return M, V, lam


def true_error(U, M, V, lam):
    """min over exact triangularizers U0 of ||U - U0||_F (the issue's reference).

    Match the diagonals of U^T M_n U to the true joint eigenvalues (Hungarian),
    QR of the correspondingly permuted V, fix column signs, measure the distance.
    """
    D = np.einsum("ji,njk,ki->ni", U, M, U)
    cost = ((D[:, :, None] - lam[:, None, :]) ** 2).sum(axis=0)
    _, perm = linear_sum_assignment(cost)
    Q, _ = np.linalg.qr(V[:, perm])
    Q = Q * np.where(np.sum(Q * U, axis=0) < 0, -1.0, 1.0)[None, :]
    return float(np.linalg.norm(U - Q))


def perturbed_start(M, rng, size=0.05):
    """Schur vectors of M_0 rotated by a small random orthogonal matrix."""
    _, Z = sla.schur(M[0], output="real")
    A = rng.standard_normal(Z.shape)
    A = size * (A - A.T) / np.linalg.norm(A - A.T)
    return Z @ sla.expm(A)


def unit_noise(shape, rng):
    W = rng.standard_normal(shape)
    return W / np.linalg.norm(W, axis=(1, 2), keepdims=True)


# --------------------------------------------------------------------------- #
# noise-free recovery
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(("method", "d", "N"), [
    ("gauss_newton", 3, 2), ("gauss_newton", 6, 4), ("gauss_newton", 10, 3),
    ("gauss_newton", 15, 6), ("gauss_newton", 20, 10),
    # Jacobi sweeps converge only linearly (see docs): small cases
    ("jacobi", 3, 2), ("jacobi", 5, 3),
])
def test_noise_free_recovery(method, d, N):
    rng = np.random.default_rng(100 * d + N)
    M, V, lam = planted(d, N, rng)
    M_orig = M.copy()
    U_init = perturbed_start(M, rng)
    res = joint_triangularize(M, init=U_init, method=method, max_iter=400, rng=0)
    scale = float(np.sum(M**2))
    assert res.converged
    assert res.loss < 1e-24 * scale
    assert true_error(res.U, M, V, lam) < 1e-10
    assert np.linalg.norm(res.U.T @ res.U - np.eye(d)) < 1e-12
    loss = np.asarray(res.history.objective)
    assert loss[0] > 1e-6 * scale  # the start really was off
    assert np.all(np.diff(loss) <= 0.0)
    assert len(res.history.objective) == len(res.history.time) == res.n_iter + 1
    np.testing.assert_allclose(res.T, np.einsum("ji,njk,kl->nil", res.U, M, res.U), atol=1e-12)
    np.testing.assert_array_equal(M, M_orig)


def test_schur_init_is_exact_for_noise_free():
    rng = np.random.default_rng(7)
    M, V, lam = planted(8, 3, rng)
    res = joint_triangularize(M, rng=3)
    assert res.loss < 1e-24 * float(np.sum(M**2))
    assert true_error(res.U, M, V, lam) < 1e-10


@pytest.mark.parametrize("method", ["gauss_newton", "jacobi"])
def test_loss_never_increases_noisy(method):
    rng = np.random.default_rng(11)
    M, V, lam = planted(8, 5, rng)
    Mp = M + 1e-3 * unit_noise(M.shape, rng)
    res = joint_triangularize(Mp, init=perturbed_start(Mp, rng, 0.2), method=method, max_iter=60)
    loss = np.asarray(res.history.objective)
    assert np.all(np.diff(loss) <= 0.0)
    assert loss[-1] < 1e-3 * loss[0]
    np.testing.assert_allclose(res.loss, loss[-1])


def test_gauss_newton_beats_schur_init_and_converges_fast():
    rng = np.random.default_rng(12)
    ratios = []
    for _ in range(5):
        M, V, lam = planted(10, 5, rng)
        Mp = M + 1e-3 * unit_noise(M.shape, rng)
        res = joint_triangularize(Mp, rng=1)
        assert res.converged and res.n_iter <= 20
        # the Schur start that joint_triangularize(rng=1) used
        _, Z = sla.schur(np.tensordot(_theta(5, 1), Mp, axes=1), output="real")
        assert np.sum(np.tril(np.einsum("ji,njk,kl->nil", Z, Mp, Z), -1) ** 2) == \
            pytest.approx(res.history.objective[0])
        ratios.append(true_error(Z, M, V, lam) / true_error(res.U, M, V, lam))
    assert np.median(ratios) > 10


def test_dense_forms_match_sparse_jacobian_and_taylor():
    """G = J^T J and J^T r from the dense forms equal the sparse Jacobian's;
    L + 2 g.a + a^T (G + S) a is the loss to third order along any direction."""
    rng = np.random.default_rng(21)
    for d, N in [(2, 1), (5, 3), (7, 2), (9, 8)]:
        T = rng.standard_normal((N, d, d))
        Jac = J.jacobian(T)
        G, S = J.dense_forms(T, True)
        np.testing.assert_allclose(G, J.gram(Jac), atol=1e-12)
        np.testing.assert_allclose(J.gradient(T), Jac.T @ J.lower_vec(T), atol=1e-12)
        a = rng.standard_normal(d * (d - 1) // 2)
        errs = []
        for t in (1e-2, 1e-3):
            E = B.expm(np, t * J.skew(a, d), skew=True)
            exact = J.triangularization_loss(np.einsum("ji,njk,kl->nil", E, T, E))
            model = (J.triangularization_loss(T) + 2 * t * J.gradient(T) @ a
                     + t * t * a @ (G + S) @ a)
            errs.append(abs(exact - model))
        assert errs[1] < 3e-3 * errs[0]  # third-order remainder (ratio 1e-3)


def test_expm_skew_is_orthogonal_and_matches_scipy():
    """The Gauss-Newton update's exponential (tensorfact._backend.expm, skew=True)."""
    rng = np.random.default_rng(20)
    for d in (1, 2, 5, 12):
        A = rng.standard_normal((d, d))
        A = A - A.T
        for t in (1e-8, 1e-2, 1.0, 10.0):
            E = B.expm(np, t * A, skew=True)
            assert E.dtype == np.float64
            np.testing.assert_allclose(E, sla.expm(t * A), atol=1e-12 * max(1.0, t))
            assert np.linalg.norm(E.T @ E - np.eye(d)) < 1e-14 * d


def test_second_order_steps_speed_up_high_noise():
    """Where the residual stays large (sigma = 0.1), plain Gauss-Newton converges
    linearly; the second-order correction cuts the iterations, same minimiser."""
    from tensorfact.decomposition._joint._gauss_newton import gauss_newton
    from tensorfact.decomposition._joint._solver import initial_triangularizer
    from tensorfact.decomposition._monitor import IterationMonitor

    def run(Mp, U0, second_order):
        with IterationMonitor("gn", max_iter=100) as mon:
            gauss_newton(Mp, U0, mon, tol=1e-12, second_order=second_order)
        return mon

    plain, hybrid = [], []
    for seed in range(4):
        rng = np.random.default_rng(seed)
        M, V, lam = planted(10, 3, rng)
        Mp = M + 0.1 * rng.standard_normal(M.shape)
        U0 = initial_triangularizer(Mp, "schur", np.random.default_rng(seed))
        a = run(Mp, U0, False)
        b = run(Mp, U0, True)
        assert b.converged
        assert b.history.objective[-1] <= a.history.objective[-1] * (1 + 1e-6)
        plain.append(a.n_iter)
        hybrid.append(b.n_iter)
    assert sum(hybrid) < 0.6 * sum(plain)
    assert max(hybrid) <= 25


def test_dense_and_sparse_gram_paths_agree(monkeypatch):
    rng = np.random.default_rng(22)
    M, V, lam = planted(8, 7, rng)
    Mp = M + 1e-4 * rng.standard_normal(M.shape)
    a = joint_triangularize(Mp, rng=3)
    ea = triangularization_error_bound(Mp, a.U, 1e-4, noise_norm="gaussian")
    monkeypatch.setattr(J, "use_dense", lambda N, d: False)
    b = joint_triangularize(Mp, rng=3)
    eb = triangularization_error_bound(Mp, b.U, 1e-4, noise_norm="gaussian")
    np.testing.assert_allclose(a.U, b.U, atol=1e-10)
    assert ea.bound == pytest.approx(eb.bound, rel=1e-8)
    assert ea.gap == pytest.approx(eb.gap, rel=1e-8)


def _theta(N, seed):
    th = np.random.default_rng(seed).standard_normal(N)
    return th / np.linalg.norm(th)


def test_jacobi_and_gauss_newton_agree():
    rng = np.random.default_rng(13)
    M, V, lam = planted(7, 4, rng)
    Mp = M + 1e-5 * unit_noise(M.shape, rng)
    a = joint_triangularize(Mp, rng=2)
    b = joint_triangularize(Mp, rng=2, method="jacobi", max_iter=500)
    assert abs(a.loss - b.loss) <= 1e-6 * a.loss
    # same local minimiser up to column signs
    S = np.sign(np.sum(a.U * b.U, axis=0))
    np.testing.assert_allclose(a.U, b.U * S[None, :], atol=1e-6)


# --------------------------------------------------------------------------- #
# the a posteriori bound
# --------------------------------------------------------------------------- #
def _coverage_problems(n_problems, seed):
    rng = np.random.default_rng(seed)
    for k in range(n_problems):
        if k % 10 == 9:
            d = int(rng.choice([12, 16, 20]))
        else:
            d = int(rng.integers(2, 9))
        N = int(rng.integers(1, 11))
        sigma = float(10 ** rng.uniform(-6, -2))
        M, V, lam = planted(d, N, rng)
        yield M, V, lam, sigma, rng


@pytest.mark.parametrize("noise_norm", ["fro", "gaussian"])
def test_bound_coverage_random_problems(noise_norm):
    """>= 200 seeded problems, d <= 20, N <= 10, sigma <= 1e-2: bound >= true error."""
    n_finite = 0
    n = 0
    tight = []
    for M, V, lam, sigma, rng in _coverage_problems(200, seed=2024 if noise_norm == "fro" else 7):
        if noise_norm == "fro":
            Mp = M + sigma * unit_noise(M.shape, rng)
        else:
            Mp = M + sigma * rng.standard_normal(M.shape)
        res = joint_triangularize(Mp, rng=rng)
        err = true_error(res.U, M, V, lam)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundInvalidWarning)
            eb = triangularization_error_bound(Mp, res.U, sigma, noise_norm=noise_norm)
        n += 1
        assert eb.bound >= err, (M.shape, sigma, eb, err)
        if np.isfinite(eb.bound):
            n_finite += 1
            tight.append(eb.bound / err)
            assert eb.bound >= eb.first_order
    assert n == 200
    assert n_finite >= 150  # the bound is informative on most problems, not vacuous
    assert np.median(tight) <= 30


def test_worst_case_bound_is_attained_by_adversarial_noise():
    """Noise along the most sensitive direction: the first-order worst-case value
    equals the true error to first order (the bound is sharp, not just valid),
    and the default factor 2 keeps the bound above it once second-order terms
    appear (the first-order value alone is exceeded at moderate noise)."""
    rng = np.random.default_rng(5)
    sharp, cover = [], []
    for _ in range(120):
        d, N = int(rng.choice([2, 3, 4, 5])), int(rng.choice([1, 2, 3]))
        sigma = float(10 ** rng.uniform(-6, -1.5))
        M, V, lam = planted(d, N, rng)
        Q, _ = np.linalg.qr(V)
        T0 = np.einsum("ji,njk,kl->nil", Q, M, Q)
        u = np.linalg.svd(J.jacobian(T0).toarray())[0][:, d * (d - 1) // 2 - 1]
        il, jl = np.tril_indices(d, -1)
        E = np.zeros((N, d, d))
        E[:, il, jl] = u.reshape(N, -1)
        E *= sigma / np.max(np.linalg.norm(E, axis=(1, 2))) * rng.choice([-1.0, 1.0])
        Mp = M + np.einsum("ij,njk,lk->nil", Q, E, Q)
        res = joint_triangularize(Mp, rng=rng)
        err = true_error(res.U, M, V, lam)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundInvalidWarning)
            eb = triangularization_error_bound(Mp, res.U, sigma)
        assert eb.bound >= err
        if np.isfinite(eb.bound):
            cover.append(err / eb.bound)
            if sigma < 1e-4 and N == 1:
                sharp.append(err / eb.first_order)
    assert len(cover) > 90 and max(cover) < 0.75
    assert len(sharp) > 5 and max(sharp) > 0.99  # first order: attained


def test_bound_covers_unconverged_schur_start():
    """The bound holds for any orthogonal U, not only at a stationary point."""
    rng = np.random.default_rng(5)
    for _ in range(20):
        M, V, lam = planted(6, 4, rng)
        Mp = M + 1e-4 * unit_noise(M.shape, rng)
        _, Z = sla.schur(np.tensordot(rng.standard_normal(4), Mp, axes=1), output="real")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundInvalidWarning)
            eb = triangularization_error_bound(Mp, Z, 1e-4)
        assert eb.step_norm > 0
        assert eb.bound >= true_error(Z, M, V, lam)


@pytest.mark.parametrize("noise_norm", ["fro", "gaussian"])
def test_error_and_bound_scale_linearly(noise_norm):
    rng = np.random.default_rng(31)
    M, V, lam = planted(6, 4, rng)
    W = unit_noise(M.shape, rng) if noise_norm == "fro" else rng.standard_normal(M.shape)
    sigmas = np.logspace(-8, -4, 5)
    errs, bounds = [], []
    for s in sigmas:
        res = joint_triangularize(M + s * W, rng=0)
        errs.append(true_error(res.U, M, V, lam))
        bounds.append(triangularization_error_bound(M + s * W, res.U, s,
                                                    noise_norm=noise_norm).bound)
    slope_e = np.polyfit(np.log(sigmas), np.log(errs), 1)[0]
    slope_b = np.polyfit(np.log(sigmas), np.log(bounds), 1)[0]
    assert abs(slope_e - 1) < 0.1
    assert abs(slope_b - 1) < 0.1
    assert np.all(np.asarray(bounds) >= np.asarray(errs))


def test_bound_ingredients():
    rng = np.random.default_rng(8)
    M, V, lam = planted(5, 3, rng)
    Mp = M + 1e-5 * unit_noise(M.shape, rng)
    res = joint_triangularize(Mp, rng=0)
    eb = triangularization_error_bound(Mp, res.U, 1e-5)
    assert eb.residual == pytest.approx(np.sqrt(res.loss), rel=1e-6)
    assert eb.step_norm < 1e-3 * eb.first_order  # stationary point: GN step ~ 0
    assert eb.gap > 0 and eb.probability == 1.0 and eb.noise_norm == "fro"
    assert eb.bound == pytest.approx(2 * eb.first_order / (1 - eb.nonlinearity))
    eb3 = triangularization_error_bound(Mp, res.U, 1e-5, safety_factor=3.0)
    assert eb3.bound == pytest.approx(1.5 * eb.bound)
    ebg = triangularization_error_bound(Mp, res.U, 1e-5, noise_norm="gaussian")
    assert ebg.bound == pytest.approx(ebg.first_order / (1 - ebg.nonlinearity))
    assert eb.certified >= eb.first_order  # worst-case local bound exists at this noise
    with pytest.raises(AttributeError):
        eb.bound = 0.0  # frozen
    # noise-free: the bound is (numerically) zero
    res0 = joint_triangularize(M, rng=0)
    assert triangularization_error_bound(M, res0.U, 0.0).bound < 1e-10


def test_bound_repeated_eigenvalue_returns_inf_and_warns():
    rng = np.random.default_rng(9)
    d, N = 5, 3
    V = rng.standard_normal((d, d))
    lam = rng.standard_normal((N, d))
    lam[:, 1] = lam[:, 0]  # a repeated joint eigenvalue: no isolated triangularizer
    M = np.stack([V @ np.diag(lam[n]) @ np.linalg.inv(V) for n in range(N)])
    Mp = M + 1e-6 * unit_noise(M.shape, rng)
    res = joint_triangularize(Mp, rng=0)
    with pytest.warns(BoundInvalidWarning, match="gap"):
        eb = triangularization_error_bound(Mp, res.U, 1e-6)
    assert eb.bound == np.inf


def test_bound_other_noise_norms_are_ordered():
    rng = np.random.default_rng(10)
    M, V, lam = planted(5, 3, rng)
    Mp = M + 1e-6 * unit_noise(M.shape, rng)
    U = joint_triangularize(Mp, rng=0).U
    fro = triangularization_error_bound(Mp, U, 1e-6, noise_norm="fro").bound
    tot = triangularization_error_bound(Mp, U, 1e-6, noise_norm="total").bound
    spec = triangularization_error_bound(Mp, U, 1e-6, noise_norm="spectral").bound
    assert tot < fro < spec  # total <= eps is the weakest assumption per matrix
    assert true_error(U, M, V, lam) <= tot * np.sqrt(3)


# --------------------------------------------------------------------------- #
# joint eigenvectors / eigenvalues
# --------------------------------------------------------------------------- #
def test_joint_eigen_recovers_planted():
    rng = np.random.default_rng(14)
    M, V, lam = planted(7, 4, rng)
    res = joint_triangularize(M, rng=0)
    E = joint_eigen(M, res.U)
    Vh, Lh = E.eigenvectors, E.eigenvalues
    cost = ((Lh[:, :, None] - lam[:, None, :]) ** 2).sum(axis=0)
    rows, perm = linear_sum_assignment(cost)
    np.testing.assert_allclose(Lh, lam[:, perm], atol=1e-10)
    C = np.abs(np.sum(Vh * V[:, perm], axis=0))
    np.testing.assert_allclose(C, 1.0, atol=1e-10)
    for n in range(4):
        np.testing.assert_allclose(M[n] @ Vh, Vh * Lh[n][None, :], atol=1e-10)


def test_joint_eigen_least_squares_uses_all_matrices():
    """A matrix with a repeated eigenvalue is fine if another one separates them."""
    rng = np.random.default_rng(15)
    M, V, lam = planted(4, 2, rng)
    lam[0, 1] = lam[0, 0]
    M = np.stack([V @ np.diag(lam[n]) @ np.linalg.inv(V) for n in range(2)])
    E = joint_eigen(M, joint_triangularize(M, rng=0).U)
    for n in range(2):
        np.testing.assert_allclose(M[n] @ E.eigenvectors,
                                   E.eigenvectors * E.eigenvalues[n][None, :], atol=1e-9)


# --------------------------------------------------------------------------- #
# CP through joint triangularization
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize(("shape", "rank", "col"), [((6, 7, 8), 3, 0.0), ((20, 30, 25), 6, 0.5),
                                                    ((30, 4, 40), 4, 0.0), ((8, 9, 2), 5, 0.0)])
def test_cp_joint_schur_recovers_planted(shape, rank, col):
    X, truth = planted_cp(shape, rank, collinearity=col, rng=3)
    X0 = X.copy()
    cp = cp_joint_schur(X, rank, rng=0).cp
    assert isinstance(cp, CPTensor) and cp.shape == shape and cp.rank == rank
    assert cp.factor_match_score(truth) > 0.9999
    assert np.linalg.norm(cp.to_dense() - X) < 1e-8 * np.linalg.norm(X)
    np.testing.assert_array_equal(X, X0)


def test_cp_als_joint_schur_init():
    X, truth = planted_cp((15, 16, 17), 4, collinearity=0.8, rng=4)
    res = cp_als(X, 4, init="joint_schur", rng=0, max_iter=5)
    assert res.rel_error < 1e-8
    assert res.cp.factor_match_score(truth) > 0.9999
    assert res.n_iter <= 2


def test_cp_joint_schur_rank_one():
    X, truth = planted_cp((5, 6, 7), 1, rng=5)
    cp = cp_joint_schur(X, 1, rng=0).cp
    assert cp.factor_match_score(truth) > 0.9999


def test_backend_namespaces(backend):
    rng = np.random.default_rng(21)
    M, V, lam = planted(5, 3, rng)
    Mp = M + 1e-7 * unit_noise(M.shape, rng)
    ref = joint_triangularize(Mp, rng=0)
    Mx = backend.asarray(Mp)
    xp = backend.xp
    res = joint_triangularize(Mx, rng=0)
    assert B.namespace(res.U) is B.namespace(Mx) and res.U.dtype == Mx.dtype
    assert B.namespace(res.T) is B.namespace(Mx) and tuple(res.T.shape) == (3, 5, 5)
    np.testing.assert_allclose(B.to_numpy(res.U), ref.U, atol=1e-12)
    eb = triangularization_error_bound(Mx, res.U, 1e-7)
    assert eb.bound >= true_error(B.to_numpy(res.U), M, V, lam)
    E = joint_eigen(Mx, res.U)
    assert B.namespace(E.eigenvectors) is B.namespace(Mx)
    X, truth = planted_cp((6, 7, 8), 3, rng=1)
    cp = cp_joint_schur(backend.asarray(X), 3, rng=0).cp
    assert B.namespace(cp.factors[0]) is xp or B.namespace(cp.factors[0]) is B.namespace(Mx)
    assert cp.factor_match_score(CPTensor([backend.asarray(np.asarray(A))
                                           for A in truth.factors],
                                          weights=backend.asarray(np.asarray(truth.weights))))\
        > 0.9999


def test_float32_input_keeps_dtype():
    rng = np.random.default_rng(22)
    M, _, _ = planted(4, 2, rng)
    res = joint_triangularize(M.astype(np.float32), rng=0)
    assert res.U.dtype == np.float32 and res.T.dtype == np.float32


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
def test_bad_input_joint_triangularize():
    rng = np.random.default_rng(23)
    M, _, _ = planted(4, 2, rng)
    with pytest.raises(ValueError, match="square"):
        joint_triangularize(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match="N=0"):
        joint_triangularize(np.zeros((0, 3, 3)))
    with pytest.raises(ValueError, match="N=0"):
        joint_triangularize([])
    with pytest.raises(ValueError, match="same shape"):
        joint_triangularize([np.eye(3), np.eye(4)])
    with pytest.raises(ValueError, match=r"\(N, d, d\)"):
        joint_triangularize(np.eye(3))
    bad = M.copy()
    bad[1, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        joint_triangularize(bad)
    with pytest.raises(ValueError, match="method"):
        joint_triangularize(M, method="newton")
    with pytest.raises(ValueError, match="init"):
        joint_triangularize(M, init="random")
    with pytest.raises(ValueError, match="orthogonal"):
        joint_triangularize(M, init=2 * np.eye(4))
    with pytest.raises(ValueError, match="shape"):
        joint_triangularize(M, init=np.eye(3))
    with pytest.raises(ValueError, match="max_iter"):
        joint_triangularize(M, max_iter=0)
    with pytest.raises(ValueError, match="tol"):
        joint_triangularize(M, tol=-1.0)
    with pytest.raises(TypeError, match="rng"):
        joint_triangularize(M, rng="seed")
    with pytest.raises(TypeError, match="complex"):
        joint_triangularize(M.astype(np.complex128))


def test_bad_input_bound_and_eigen():
    rng = np.random.default_rng(24)
    M, _, _ = planted(4, 2, rng)
    U = np.eye(4)
    with pytest.raises(ValueError, match="noise_level"):
        triangularization_error_bound(M, U, -1.0)
    with pytest.raises(ValueError, match="noise_norm"):
        triangularization_error_bound(M, U, 1e-3, noise_norm="max")
    with pytest.raises(ValueError, match="failure_probability"):
        triangularization_error_bound(M, U, 1e-3, noise_norm="gaussian", failure_probability=0)
    with pytest.raises(ValueError, match="safety_factor"):
        triangularization_error_bound(M, U, 1e-3, safety_factor=0.5)
    with pytest.raises(ValueError, match="safety_factor"):
        triangularization_error_bound(M, U, 1e-3, safety_factor=float("nan"))
    with pytest.raises(ValueError, match="orthogonal"):
        triangularization_error_bound(M, 2 * U, 1e-3)
    with pytest.raises(ValueError, match="shape"):
        triangularization_error_bound(M, np.eye(3), 1e-3)
    with pytest.raises(ValueError, match="orthogonal"):
        joint_eigen(M, U + 1.0)
    with pytest.raises(ValueError, match="square"):
        joint_eigen(np.zeros((1, 2, 3)), U)


def test_bad_input_cp_joint_schur():
    X, _ = planted_cp((5, 6, 7), 2, rng=0)
    with pytest.raises(ValueError, match="rank"):
        cp_joint_schur(X, 7)
    with pytest.raises(ValueError, match="rank"):
        cp_joint_schur(X, 0)
    with pytest.raises(ValueError, match="3-way"):
        cp_joint_schur(np.ones((3, 3, 3, 3)), 2)
    with pytest.raises(ValueError, match="modes"):
        cp_joint_schur(np.ones((3, 3)), 2)
    bad = X.copy()
    bad[0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="NaN"):
        cp_joint_schur(bad, 2)
    with pytest.raises(ValueError, match="n_slices"):
        cp_joint_schur(X, 2, n_slices=0)
    with pytest.raises(ValueError, match="2 slices"):
        cp_joint_schur(np.ones((5, 6, 1)), 2)
    with pytest.raises(ValueError, match="3-way"):
        cp_als(np.ones((3, 3, 3, 3)), 2, init="joint_schur")


@pytest.mark.slow
def test_bound_coverage_large_sweep():
    """Slow sweep: d up to 30, N up to 30, 300 problems, both noise models."""
    rng = np.random.default_rng(99)
    for _ in range(300):
        d = int(rng.integers(2, 31))
        N = int(rng.integers(1, 31))
        sigma = float(10 ** rng.uniform(-7, -2))
        M, V, lam = planted(d, N, rng)
        gaussian = bool(rng.integers(2))
        W = rng.standard_normal(M.shape) if gaussian else unit_noise(M.shape, rng)
        Mp = M + sigma * W
        res = joint_triangularize(Mp, rng=rng)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", BoundInvalidWarning)
            eb = triangularization_error_bound(Mp, res.U, sigma,
                                               noise_norm="gaussian" if gaussian else "fro")
        assert eb.bound >= true_error(res.U, M, V, lam)
