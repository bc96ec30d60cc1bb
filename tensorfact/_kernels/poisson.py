"""Kernels of CP alternating Poisson regression (CP-APR) on sparse tensors.

One mode's subproblem works on the nonzeros sorted by that mode's index (the
layout of `tensorfact._kernels.sparse.mode_sorted`) and on ``Pi``, the rows of
the Khatri-Rao product of the other modes' factors at the nonzeros, in that
order. A multiplicative-update (MU) step is, per row ``i`` of the mode:

    phi_i = sum_{k in row i} x_k / max(b_i . pi_k, epsilon) * pi_k
    kkt   = max_{i,r} |min(b_ir, 1 - phi_ir)|
    b_i  <- b_i * phi_i

The rows are independent, so `mu_steps_numba` runs several steps of a row
before the next row (its ``Pi`` rows stay in cache), recording each step's
KKT violation. Every operation has a Numba kernel (NumPy arrays,
``parallel=True``) and a pure array-API twin (storage order,
``scatter_add``); the tests check both against a dense brute force.

Each Numba kernel is compiled twice from one body: threaded, and serial for
inputs below `PARALLEL_MIN_NNZ` nonzeros, where launching the threads
costs more than the work.

Race freedom: the Numba MU step splits the *rows* into chunks holding about
the same number of nonzeros; a chunk owns its rows, so every output row is
written by one thread and no reduction is needed (a single row longer than a
chunk leaves its chunk heavier, never wrong). The Khatri-Rao rows and the
log-likelihood run over the nonzeros with disjoint writes and reduction
variables. Accumulation is in float64.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import numba
import numpy as np

from .. import _backend as B
from .sparse import stack_factors

__all__ = [
    "krp_at_nonzeros_numba",
    "krp_at_nonzeros_xp",
    "mu_step_numba",
    "mu_step_xp",
    "mu_steps_numba",
    "poisson_fit_numba",
    "poisson_fit_xp",
    "row_chunks",
]


#: below this many nonzeros the kernels run on one thread (a parallel launch costs more)
PARALLEL_MIN_NNZ = 1 << 15


def _threaded(nnz: int) -> int:
    """Index of the kernel variant: 1 (threaded) for large inputs, 0 (serial) otherwise."""
    return int(nnz >= PARALLEL_MIN_NNZ and numba.get_num_threads() > 1)


# --------------------------------------------------------------------------- #
# Khatri-Rao rows at the nonzeros
# --------------------------------------------------------------------------- #
def _krp_rows_py(others, F, offsets, out):  # pragma: no cover - compiled
    R = F.shape[1]
    M = others.shape[1]
    for k in numba.prange(others.shape[0]):
        for r in range(R):
            out[k, r] = 1.0
        for j in range(M):
            row = offsets[j] + others[k, j]
            for r in range(R):
                out[k, r] *= F[row, r]


_krp_rows = (numba.njit(cache=True, nogil=True)(_krp_rows_py),
             numba.njit(parallel=True, cache=True, nogil=True)(_krp_rows_py))


def krp_at_nonzeros_numba(others: np.ndarray, factors: list[np.ndarray]) -> np.ndarray:
    """``Pi[k] = prod_j factors[j][others[k, j]]`` (float64, parallel over nonzeros).

    ``others`` holds, per nonzero, the indices of the modes of ``factors``
    (one column per factor, in order), e.g. the layout of `mode_sorted`.
    """
    F, offsets = stack_factors(factors, np.float64)
    out = np.empty((others.shape[0], F.shape[1]), dtype=np.float64)
    if others.shape[0]:
        _krp_rows[_threaded(others.shape[0])](others, F, offsets, out)
    return out


def krp_at_nonzeros_xp(xp: ModuleType, others: Any, factors: list[Any]) -> Any:
    """Pure array-API twin of `krp_at_nonzeros_numba` (in the factors' dtype)."""
    out = xp.take(factors[0], others[:, 0], axis=0)
    for j, A in enumerate(factors[1:], start=1):
        out = out * xp.take(A, others[:, j], axis=0)
    return out


# --------------------------------------------------------------------------- #
# one multiplicative update of one mode
# --------------------------------------------------------------------------- #
def row_chunks(rowptr: np.ndarray, n_chunks: int) -> np.ndarray:
    """Row boundaries ``(n_chunks + 1,)`` splitting the nonzeros into near-equal parts."""
    n_rows = rowptr.shape[0] - 1
    nnz = int(rowptr[-1])
    targets = (np.arange(n_chunks + 1, dtype=np.int64) * nnz) // n_chunks
    bounds = np.searchsorted(rowptr[:-1], targets, side="left").astype(np.int64)
    bounds[0] = 0
    bounds[-1] = n_rows
    return np.maximum.accumulate(bounds)


def _mu_rows_py(rowptr, vals, Pi, Bm, epsilon, bounds, n_phi, update_last, B_out, Phi,
                kkt):  # pragma: no cover - compiled
    R = Bm.shape[1]
    for c in numba.prange(bounds.shape[0] - 1):
        phi = np.zeros(R, dtype=np.float64)
        b = np.empty(R, dtype=np.float64)
        for j in range(n_phi):
            kkt[c, j] = 0.0
        for i in range(bounds[c], bounds[c + 1]):
            for r in range(R):
                b[r] = Bm[i, r]
            for j in range(n_phi):  # the row's steps, its nonzeros hot in cache
                for r in range(R):
                    phi[r] = 0.0
                for u in range(rowptr[i], rowptr[i + 1]):
                    v = 0.0
                    for r in range(R):
                        v += b[r] * Pi[u, r]
                    if v < epsilon:
                        v = epsilon
                    w = vals[u] / v
                    for r in range(R):
                        phi[r] += w * Pi[u, r]
                worst = 0.0
                for r in range(R):
                    t = abs(min(b[r], 1.0 - phi[r]))
                    if t > worst or t != t:
                        worst = t
                if worst > kkt[c, j] or worst != worst:
                    kkt[c, j] = worst
                if j < n_phi - 1 or update_last:
                    for r in range(R):
                        b[r] = b[r] * phi[r]
            for r in range(R):
                Phi[i, r] = phi[r]
                B_out[i, r] = b[r]


_mu_rows = (numba.njit(cache=True, nogil=True)(_mu_rows_py),
            numba.njit(parallel=True, cache=True, nogil=True)(_mu_rows_py))


def mu_steps_numba(rowptr: np.ndarray, vals: np.ndarray, Pi: np.ndarray, Bm: np.ndarray,
                   epsilon: float, bounds: np.ndarray, n_phi: int = 1, update_last: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``n_phi`` MU steps of a mode's subproblem, fused row by row.

    Row ``i`` runs all its steps before the next row, so its nonzeros and
    ``Pi`` rows are read from cache after the first step; the rows' values are
    those of ``n_phi`` separate `mu_step_numba` calls, to the bit.

    Parameters
    ----------
    rowptr, vals
        The mode-sorted layout (`mode_sorted`): nonzeros of row ``i`` are
        ``rowptr[i]:rowptr[i + 1]``.
    Pi : (nnz, R) float64
        Khatri-Rao rows of the other modes at the nonzeros, same order.
    Bm : (I, R) float64
        The mode's current factor (weights included).
    epsilon : float
        Lower bound of the model value in the division.
    bounds : (n_chunks + 1,) int64
        Row chunks from `row_chunks`.
    n_phi : int
        Number of ``Phi`` computations.
    update_last : bool
        Whether the last ``Phi`` is applied too (``n_phi`` updates) or only
        computed (``n_phi - 1`` updates).

    Returns
    -------
    B : (I, R)
        The factor after the updates.
    Phi : (I, R)
        The last ``Phi`` computed.
    kkt : (n_phi,)
        The KKT violation ``max |min(B_j, 1 - Phi_j)|`` of every step ``j``.
    """
    R = Bm.shape[1]
    n_rows = Bm.shape[0]
    B_out = np.empty((n_rows, R), dtype=np.float64)
    Phi = np.empty((n_rows, R), dtype=np.float64)
    kkt = np.zeros((bounds.shape[0] - 1, n_phi), dtype=np.float64)
    Bc = np.ascontiguousarray(Bm, dtype=np.float64)
    _mu_rows[_threaded(vals.shape[0])](rowptr, vals, Pi, Bc, float(epsilon), bounds, int(n_phi),
                                       bool(update_last), B_out, Phi, kkt)
    return B_out, Phi, kkt.max(axis=0) if kkt.shape[0] else np.zeros(n_phi)


def mu_step_numba(rowptr: np.ndarray, vals: np.ndarray, Pi: np.ndarray, Bm: np.ndarray,
                  epsilon: float, bounds: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
    """One MU step of a mode's subproblem: ``(B * Phi, Phi, kkt violation)``.

    See `mu_steps_numba` (one step, applied).
    """
    B_new, Phi, kkt = mu_steps_numba(rowptr, vals, Pi, Bm, epsilon, bounds)
    return B_new, Phi, float(kkt[0])


def mu_step_xp(xp: ModuleType, rows: Any, vals: Any, Pi: Any, Bm: Any, epsilon: float
               ) -> tuple[Any, Any, float]:
    """Pure array-API twin of `mu_step_numba` (nonzeros in any order).

    ``rows`` holds the mode's index of every nonzero, ``Pi`` its Khatri-Rao row.
    """
    v = xp.sum(xp.take(Bm, rows, axis=0) * Pi, axis=1)
    v = xp.where(v < epsilon, xp.full_like(v, epsilon), v)
    W = (vals / v)[:, None] * Pi
    Phi = B.scatter_add(xp, int(Bm.shape[0]), rows, W)
    kkt = xp.abs(xp.minimum(Bm, 1.0 - Phi))
    worst = B.to_float(xp.max(kkt)) if kkt.shape[0] else 0.0
    return Bm * Phi, Phi, worst


# --------------------------------------------------------------------------- #
# Poisson log-likelihood and inner product at the nonzeros
# --------------------------------------------------------------------------- #
def _fit_rows_py(rowptr, vals, Pi, Bm, epsilon, inv_scale):  # pragma: no cover - compiled
    R = Bm.shape[1]
    n_rows = rowptr.shape[0] - 1
    xlogm = 0.0
    xm = 0.0
    for i in numba.prange(n_rows):
        for u in range(rowptr[i], rowptr[i + 1]):
            x = vals[u]
            if x == 0.0:
                continue
            m = 0.0
            for r in range(R):
                m += Bm[i, r] * Pi[u, r]
            xm += (x * inv_scale) * (m * inv_scale)
            if m < epsilon:
                m = epsilon
            xlogm += x * np.log(m)
    return xlogm, xm


_fit_rows = (numba.njit(cache=True, nogil=True)(_fit_rows_py),
             numba.njit(parallel=True, cache=True, nogil=True)(_fit_rows_py))


def poisson_fit_numba(rowptr: np.ndarray, vals: np.ndarray, Pi: np.ndarray, Bm: np.ndarray,
                      epsilon: float, inv_scale: float = 1.0) -> tuple[float, float]:
    """``(sum_k x_k log max(m_k, epsilon), sum_k (s x_k) (s m_k))`` over the nonzeros.

    ``m_k = b_i . pi_k`` is the model at nonzero ``k``, ``s = inv_scale``
    (``1 / max x`` keeps the inner product finite for data near overflow). Entries with
    ``x_k = 0`` contribute nothing (``0 log 0 = 0``); the floor ``epsilon``
    (the one of the MU divisions) keeps the value finite where the model
    vanishes at a positive count.
    """
    if vals.shape[0] == 0:
        return 0.0, 0.0
    Bc = np.ascontiguousarray(Bm, dtype=np.float64)
    a, b = _fit_rows[_threaded(vals.shape[0])](rowptr, vals, Pi, Bc, float(epsilon),
                                               float(inv_scale))
    return float(a), float(b)


def poisson_fit_xp(xp: ModuleType, rows: Any, vals: Any, Pi: Any, Bm: Any, epsilon: float,
                   inv_scale: float = 1.0) -> tuple[float, float]:
    """Pure array-API twin of `poisson_fit_numba` (nonzeros in any order)."""
    if int(vals.shape[0]) == 0:
        return 0.0, 0.0
    m = xp.sum(xp.take(Bm, rows, axis=0) * Pi, axis=1)
    pos = vals > 0
    safe = xp.where(pos & (m >= epsilon), m, xp.where(pos, xp.full_like(m, epsilon),
                                                       xp.ones_like(m)))
    xlogm = xp.where(pos, vals * xp.log(safe), xp.zeros_like(m))
    return B.to_float(xp.sum(xlogm)), B.to_float(xp.sum((vals * inv_scale) * (m * inv_scale)))
