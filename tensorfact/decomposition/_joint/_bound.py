"""A posteriori bound on the distance to an exact joint triangularizer.

The derivation (first-order term, Weyl correction, the Gaussian noise model
and the certified local bound) is written out in ``docs/joint.md``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from ... import _backend as B
from ..._validation import check_nonneg_float, check_real
from ._checks import check_orthogonal, check_stack, power_of_two_exponent
from ._matrix_free import JacobianOperator, least_squares_step, smallest_singular_values
from ._objective import congruence, gram_and_gradient, jacobian, lower_vec
from ._results import BoundInvalidWarning, TriangularizationErrorBound

__all__ = ["triangularization_error_bound"]

_SQRT2 = math.sqrt(2.0)

_NOISE_NORMS = ("fro", "spectral", "total", "gaussian")

#: From this matrix size on, the gap and the Gauss-Newton step come from
#: iterative solvers on ``J^T J`` (LOBPCG, CG) instead of its eigendecomposition.
BOUND_MATRIX_FREE_MIN_D = 56

#: Smallest singular values computed at large ``d`` for ``noise_norm="gaussian"``
#: (``||J^+||_F`` takes the others at most ``1 / s_k``: an upper bound).
_GAUSSIAN_K = 8

#: LOBPCG iterations of the first (gap upper bound) and the full run.
_LOBPCG_SHORT = 60
_LOBPCG_LONG = 3000

#: Relative width ``1 - lower / upper`` at which a short LOBPCG run is good enough.
_GAP_RTOL = 1e-3


def triangularization_error_bound(
    matrices: Any,
    U: Any,
    noise_level: float,
    /,
    *,
    noise_norm: str = "fro",
    failure_probability: float = 1e-6,
    safety_factor: float | None = None,
) -> TriangularizationErrorBound:
    """A posteriori bound on the distance from ``U`` to an exact joint triangularizer.

    The observed matrices are ``M'_n = M_n + Delta_n`` where the unknown
    ``M_n`` are jointly diagonalizable with real, jointly distinct eigenvalues.
    For any orthogonal ``U`` (e.g. the output of `tensorfact.joint_triangularize`)
    this returns a number ``beta`` computed only from ``M'``, ``U`` and the
    noise level such that ``min_{U0} ||U - U0||_F <= beta`` over the exact
    joint triangularizers ``U0`` of the ``M_n``.

    With ``T'_n = U^T M'_n U``, residual ``r = (strictly_lower(T'_n))_n``,
    Jacobian ``J: A -> (strictly_lower([T'_n, A]))_n`` on skew-symmetric
    ``A`` (orthonormal coordinates), ``gap = sigma_min(J)`` and Gauss-Newton
    step ``g = J^+ r``, the error ``x = ||A||_F`` of ``U = U0 expm(A)`` is to
    first order ``||J0^+ (r - e)||`` with ``e`` the strictly lower part of
    the rotated noise, hence at most

    ``first_order = ||g|| + noise_term``,

    ``noise_term = eta / gap`` (worst-case norms, ``eta >= ||e||``) or
    ``eps (||J^+||_F + t ||J^+||_2)`` (Gaussian, ``t`` from the failure
    probability). The returned bound is
    ``safety_factor * first_order / (1 - nonlinearity)``: the
    ``1 / (1 - nonlinearity)`` factor is the Weyl correction of the gap for
    the (estimated) change of the Jacobian between ``U`` and ``U0``, the
    safety factor a margin for the remaining second-order terms. For the
    worst-case norms it defaults to 2: noise pointing along the most
    sensitive direction makes the first-order value exact to first order, so
    second-order terms can push the error above it (measured: 1.064 times it
    at ``sigma = 1.3e-3``). For ``"gaussian"`` it defaults to 1: the
    concentration term already leaves a measured margin (true error at most
    0.61 of the bound on 993 random Gaussian-noise problems). Both are checked in the
    documentation page "Joint triangularization".
    ``certified`` is a local bound with every second-order term bounded in
    the worst case (smallest fixed point of the inequality derived there);
    it is rigorous for the exact triangularizer in whose basin ``U`` lies
    but often ``inf`` at moderate noise.

    For ``d < 56`` the singular values of ``J`` and the step ``g`` come from
    the eigendecomposition of ``J^T J``. From ``d = 56`` on ``J^T J`` is not
    formed (it has ``(d^2/2)^2`` entries): the smallest singular values come
    from LOBPCG and ``g`` from preconditioned CG, both on products with the
    stack (``O(N d^3)`` each). The gap used is then the certified lower end
    ``sqrt(theta - rho)`` of the smallest Ritz value ``theta`` with residual
    ``rho``, the step norm is enlarged by the CG residual over ``gap^2``,
    and for ``"gaussian"`` the ``m - 8`` singular values not computed
    count as equal to the 8th smallest in ``||J^+||_F`` (an upper bound, so
    the Gaussian bound is looser than at small ``d``). If the eigensolver
    cannot bring ``theta - rho`` above 0 within its budget, ``bound`` is
    ``inf`` with a ``BoundInvalidWarning`` (not certified); when a short
    run already shows that the gap is too small for the noise level
    (``nonlinearity >= 1`` whatever the step), the step is not computed
    (``step_norm`` and ``first_order`` are NaN, ``bound`` is ``inf``).

    The computation runs on the matrices and the noise level divided by the
    same power of two (largest entry in ``[1/2, 1)``): the bound does not
    depend on the units of the matrices, and ``residual`` and ``gap`` are
    returned in those units.

    Parameters
    ----------
    matrices : array of shape (N, d, d)
        The observed (noisy) matrices ``M'_n``.
    U : (d, d) orthogonal array
        The approximate joint triangularizer to assess.
    noise_level : float
        ``epsilon >= 0``, interpreted by ``noise_norm``.
    noise_norm : {"fro", "spectral", "total", "gaussian"}
        ``"fro"``: ``||Delta_n||_F <= epsilon`` for every n (worst case);
        ``"spectral"``: ``||Delta_n||_2 <= epsilon`` for every n (worst case);
        ``"total"``: ``sqrt(sum_n ||Delta_n||_F^2) <= epsilon`` (worst case);
        ``"gaussian"``: the entries of every ``Delta_n`` are independent
        ``N(0, epsilon^2)``; the bound then holds with probability at least
        ``1 - failure_probability`` (Gaussian concentration, see the docs)
        and is much tighter than the worst case.
    failure_probability : float in (0, 1)
        Only for ``"gaussian"``.
    safety_factor : float >= 1, optional
        Multiplies the (Weyl-corrected) first-order bound. Default: 2 for
        ``"fro"``, ``"spectral"`` and ``"total"``, 1 for ``"gaussian"``.

    Returns
    -------
    TriangularizationErrorBound
        The bound and its ingredients (residual, gap, Gauss-Newton step norm,
        noise term, nonlinearity ratio).

    Warns
    -----
    BoundInvalidWarning
        When the gap is too small compared with the noise and residual for
        the linearisation to hold (no fixed point), or could not be certified
        by the iterative eigensolver (large ``d``): ``bound`` is ``inf``.

    Raises
    ------
    ValueError
        Bad stack, non-orthogonal or mis-shaped ``U``, negative
        ``noise_level``, unknown ``noise_norm``, ``failure_probability``
        outside (0, 1), ``safety_factor`` below 1.
    FloatingPointError
        If a dense eigenvalue or singular value solver fails on the Jacobian
        at ``U`` (its ``LinAlgError`` is not passed on).

    References
    ----------
    Colombo & Vlassis, "A posteriori error bounds for joint matrix
    decomposition problems", NeurIPS 2016.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> V = rng.standard_normal((4, 4))
    >>> M = np.stack([V @ np.diag(rng.standard_normal(4)) @ np.linalg.inv(V) for _ in range(3)])
    >>> W = rng.standard_normal(M.shape)
    >>> W /= np.linalg.norm(W, axis=(1, 2), keepdims=True)
    >>> from tensorfact import joint_triangularize
    >>> res = joint_triangularize(M + 1e-6 * W, rng=0)
    >>> eb = triangularization_error_bound(M + 1e-6 * W, res.U, 1e-6)
    >>> 0 < eb.bound < 1e-3
    True
    """
    _, _, Mp = check_stack(matrices)
    N, d, _ = Mp.shape
    Un = check_orthogonal(U, d)
    eps_in = check_nonneg_float(noise_level, "noise_level")
    if noise_norm not in _NOISE_NORMS:
        raise ValueError(f"noise_norm must be one of {_NOISE_NORMS}, got {noise_norm!r}")
    fp = check_real(failure_probability, "failure_probability", low=0.0, high=1.0,
                    low_open=True, high_open=True, what="a number in (0, 1)")
    if safety_factor is None:
        safety = 1.0 if noise_norm == "gaussian" else 2.0
    else:
        safety = check_real(safety_factor, "safety_factor", low=1.0,
                            what="a finite number >= 1")
    if d == 1:
        return TriangularizationErrorBound(0.0, 0.0, 0.0, 0.0, math.inf, 0.0, 0.0, 0.0,
                                           eps_in, noise_norm, 1.0)
    # work on M / 2^e (max |entry| in [1/2, 1)) and noise_level / 2^e: exact,
    # so the bound does not depend on the units; residual and gap are scaled back
    e = power_of_two_exponent(Mp)
    Mp = np.ldexp(Mp, -e)
    eps_s = float(np.ldexp(eps_in, -e))
    with B.linalg_guard("triangularization_error_bound: the Jacobian at U of these matrices"), \
            np.errstate(over="ignore", under="ignore", invalid="ignore"):
        return _bound(Mp, Un, eps_s, eps_in, e, noise_norm=noise_norm, fp=fp, safety=safety,
                      iterative=d >= BOUND_MATRIX_FREE_MIN_D)


def _bound(Mp: np.ndarray, Un: np.ndarray, eps_s: float, eps_in: float, e: int, *,
           noise_norm: str, fp: float, safety: float,
           iterative: bool) -> TriangularizationErrorBound:
    """The bound on scaled matrices ``Mp`` and noise level ``eps_s`` (see the public docstring)."""
    N, d, _ = Mp.shape
    nan = float("nan")
    T = congruence(Un, Mp)
    r = lower_vec(T)
    res_norm = float(np.linalg.norm(r))
    tau = math.sqrt(float(np.sum(np.linalg.norm(Mp, ord=2, axis=(1, 2)) ** 2)))
    m = d * (d - 1) // 2
    eps = np.finfo(np.float64).eps
    t = math.sqrt(2.0 * math.log(2.0 / fp))

    # noise ingredients: eps2 >= sqrt(sum ||Delta_n||_2^2), noise(s_i) >= ||J0^+ e||
    if noise_norm == "fro":
        eps2 = math.sqrt(N) * eps_s
        eta = math.sqrt(N) * eps_s
        prob = 1.0
    elif noise_norm == "spectral":
        eps2 = math.sqrt(N) * eps_s
        eta = math.sqrt(N * d) * eps_s
        prob = 1.0
    elif noise_norm == "total":
        eps2 = eps_s
        eta = eps_s
        prob = 1.0
    else:
        # two Gaussian-concentration events, each failing with prob <= fp / 2
        eps2 = eps_s * (math.sqrt(N * (4.0 * d + 1.0)) + t)
        eta = nan
        prob = 1.0 - fp
    # ||P e||: <= eta (worst case), ~ eps (sqrt(m) + t) (Gaussian, m-dim projection)
    e_proj = eta if noise_norm != "gaussian" else eps_s * (math.sqrt(m) + t)

    if iterative:
        sp = _iterative_spectrum(T, k=_GAUSSIAN_K if noise_norm == "gaussian" else 1,
                                 floor=2.0 * (_SQRT2 * e_proj + eps2))
    else:
        sp = _dense_spectrum(T)
    s_all, tail, gap, smax = sp.s, sp.tail, sp.gap, sp.smax
    step, jg = sp.step_norm, sp.jg
    r_perp = math.sqrt(max(res_norm**2 - sp.jg_low**2, 0.0))

    def noise_term(delta: float) -> float:
        sh = s_all - delta
        if sh[0] <= 0:
            return math.inf
        if noise_norm == "gaussian":
            # ||J^+||_F^2 = sum 1/s_i^2; the singular values not computed
            # (tail of them) are >= the largest one computed
            fro2 = float(np.sum(1.0 / sh**2)) + (tail / float(sh[-1]) ** 2 if tail else 0.0)
            return eps_s * (math.sqrt(fro2) + t / float(sh[0]))
        return eta / float(sh[0])

    def f(x: float) -> tuple[float, float]:
        # certified local bound: x <= f(x) with worst-case second-order terms
        delta = 2.0 * (_SQRT2 * tau * x + eps2)
        s = gap - delta
        if s <= 0:
            return math.inf, math.inf
        val = (step * (1.0 + delta / s) + delta * r_perp / s**2 + noise_term(delta)
               + (2.0 * eps2 * x + _SQRT2 * tau * x * x) / s)
        return val, delta / gap

    # ---- first-order bound, Weyl-corrected (the returned ``bound``)
    noise0 = noise_term(0.0) if gap > 0 else math.inf
    first = step + noise0
    # estimated relative size of the second-order terms: the Jacobian moves by
    # about 2 (||[T, A]|| + eps2); ||[T, A]|| is estimated by sqrt(2) times its
    # strictly-lower part J0 a = P_{J0}(r - e - q), whose size is about
    # ||J g|| + ||P e|| (the residual orthogonal to the range does not count)
    nonlin = (2.0 * (_SQRT2 * (jg + e_proj) + eps2) / gap if gap > 0 else math.inf)
    tiny_gap = gap <= 1e4 * eps * max(smax, 1.0)
    if not tiny_gap and nonlin < 1.0 and math.isfinite(first):
        bound = safety * first / (1.0 - nonlin)
    else:
        bound = math.inf

    # ---- certified (worst-case second-order) local bound: smallest fixed point of f
    x = 0.0
    certified = math.inf
    for _ in range(500 if gap > 0 else 0):
        fx, _r = f(x)
        if not math.isfinite(fx):
            break
        if fx <= x * (1 + 1e-12) + 1e-300:
            certified = fx
            break
        x = fx
    if not math.isfinite(bound):
        if sp.uncertified:
            why = (f"the iterative eigensolver could not certify the smallest singular value "
                   f"of the linearised residual operator (at most {sp.gap_upper:.3e} relative "
                   "to the matrices' largest entry; lower estimate "
                   f"{gap:.3e}) within its iteration budget")
        else:
            why = (f"the linearised residual operator's smallest singular value "
                   f"(gap={gap:.3e} relative to the matrices' largest entry) is too small "
                   f"for the noise level and residual (estimated second-order ratio "
                   f"{nonlin:.2f} >= 1)")
        warnings.warn(
            f"triangularization_error_bound: {why}; returning inf. The joint eigenvalues "
            "may be (nearly) repeated, the noise too large, or U too far from a "
            "triangularizer.",
            BoundInvalidWarning,
            stacklevel=3,
        )
    with np.errstate(over="ignore", under="ignore"):
        residual_out = float(np.ldexp(res_norm, e))
        gap_out = float(np.ldexp(gap, e))
    return TriangularizationErrorBound(
        bound=float(bound),
        first_order=float(first),
        certified=float(certified),
        residual=residual_out,
        gap=gap_out,
        step_norm=step,
        noise_term=float(noise0),
        nonlinearity=float(nonlin),
        noise_level=eps_in,
        noise_norm=noise_norm,
        probability=prob,
    )


@dataclass(frozen=True)
class _Spectrum:
    """What the bound needs from ``J``: small singular values, the GN step and ``||J g||``.

    ``s``: lower estimates of the smallest singular values, sorted (all ``m``
    of them on the dense path); ``tail``: how many further singular values
    (each at least ``s[-1]``) were not computed; ``gap = s[0]`` and
    ``gap_upper`` (a Rayleigh quotient, never below the true value);
    ``smax``: the largest singular value or an upper bound; ``step_norm``: an
    upper bound on ``||J^+ r||``; ``jg``/``jg_low``: upper/lower bounds on
    ``||J J^+ r||``; ``uncertified``: the iterative solver did not converge.
    """

    s: np.ndarray
    tail: int
    gap: float
    gap_upper: float
    smax: float
    step_norm: float
    jg: float
    jg_low: float
    uncertified: bool = False


def _dense_spectrum(T: np.ndarray) -> _Spectrum:
    """All singular values of ``J`` and ``J^+ r`` from the eigendecomposition of ``J^T J``."""
    G, Jtr = gram_and_gradient(T)
    w, Vg = np.linalg.eigh(G)
    w = np.clip(w, 0.0, None)
    s_all = np.sqrt(w)
    smax = float(s_all[-1])
    eps = np.finfo(np.float64).eps
    if s_all[0] <= 1e4 * eps * max(smax, 1.0) * math.sqrt(w.size):
        # eigvalsh of the Gram matrix is too coarse here: use the SVD of J
        s_all = np.sort(np.linalg.svd(jacobian(T).toarray(), compute_uv=False))
    gap = float(s_all[0])
    if gap > 0:
        g = Vg @ ((Vg.T @ Jtr) / np.where(w > 0, w, 1.0))
    else:
        g = np.zeros_like(Jtr)
    jg = math.sqrt(max(float(g @ (G @ g)), 0.0))
    return _Spectrum(s=s_all, tail=0, gap=gap, gap_upper=gap, smax=smax,
                     step_norm=float(np.linalg.norm(g)), jg=jg, jg_low=jg)


def _iterative_spectrum(T: np.ndarray, *, k: int, floor: float) -> _Spectrum:
    """The same ingredients matrix-free (``_matrix_free``): LOBPCG and preconditioned CG.

    A short LOBPCG run first bounds the gap from above; when even that bound
    leaves the nonlinearity ratio at or above 1 (``floor`` is its
    noise-only numerator) the bound is ``inf`` whatever the rest, and the
    expensive solves are skipped; the same test is repeated with the upper
    bound of the full run before the gap is declared uncertified.
    """
    op = JacobianOperator(T)
    tau2 = 2.0 * math.sqrt(float(np.sum(np.linalg.norm(T, ord=2, axis=(1, 2)) ** 2)))
    low, up = smallest_singular_values(op, k, maxiter=_LOBPCG_SHORT)
    gap_upper = float(up[0])
    if floor >= gap_upper:
        # the ratio is >= floor / gap >= 1 whatever the step: not computed
        return _Spectrum(s=up[:1], tail=op.m - 1, gap=gap_upper, gap_upper=gap_upper,
                         smax=tau2, step_norm=math.nan, jg=0.0, jg_low=0.0)
    if not np.all(low >= (1.0 - _GAP_RTOL) * up):
        low, up = smallest_singular_values(op, k, maxiter=_LOBPCG_LONG)
        gap_upper = min(gap_upper, float(up[0]))
        if floor >= gap_upper:
            return _Spectrum(s=up[:1], tail=op.m - 1, gap=gap_upper, gap_upper=gap_upper,
                             smax=tau2, step_norm=math.nan, jg=0.0, jg_low=0.0)
    gap = float(low[0])
    if not gap > 0:
        return _Spectrum(s=low[:1], tail=op.m - 1, gap=0.0, gap_upper=gap_upper,
                         smax=tau2, step_norm=math.nan, jg=0.0, jg_low=0.0,
                         uncertified=True)
    # the prefix of certified values; the others count as the tail (each at
    # least the k-th smallest singular value, itself at least low[k - 1])
    c = int(np.argmin(low > 0)) if not np.all(low > 0) else low.size
    low = low[:c]
    g, res = least_squares_step(op)
    # ||g - J^+ r|| <= ||res|| / gap^2 and ||J (g - J^+ r)|| <= ||res|| / gap
    jg_cg = math.sqrt(op.jac_norm_sq(g))
    return _Spectrum(s=low, tail=op.m - low.size, gap=gap, gap_upper=gap_upper, smax=tau2,
                     step_norm=float(np.linalg.norm(g)) + res / gap**2,
                     jg=jg_cg + res / gap, jg_low=max(jg_cg - res / gap, 0.0))
