"""Problems and initialisations of the SPALS reproduction (public API only)."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

import tensorfact as tf

__all__ = ["dense_problem", "exact_rel_error", "noise_floor", "random_init", "sketch_init"]


def dense_problem(n: int, rank: int, sigma: float, seed: Any,
                  dtype: Any = np.float64) -> tuple[np.ndarray, Any]:
    """``n x n x n`` planted CP tensor plus Gaussian noise of relative level ``sigma``.

    ``X = T + E`` with ``T = [[w; A, B, C]]`` (standard normal factors,
    weights uniform in ``[1, 2]``) and ``E`` i.i.d. Gaussian with entry
    standard deviation ``sigma * ||T||_F / n^(3/2)``, so ``||E|| / ||T|| ≈
    sigma``. Built in row blocks directly in ``dtype``: the tensor is the only
    tensor-sized allocation (8 GB at ``n = 1000`` in float64).

    Returns
    -------
    X : ndarray of shape (n, n, n)
    truth : CPTensor
        The planted ``T`` (float64 factors).
    """
    gen = np.random.default_rng(seed)
    A, Bm, C = (gen.standard_normal((n, rank)) for _ in range(3))
    w = 1.0 + gen.random(rank)
    KR_t = tf.khatri_rao([Bm, C]).T  # (R, n^2); row i of X_(0) is (A[i] * w) @ KR_t
    X = np.empty((n, n * n), dtype=dtype)
    step = max(1, (1 << 24) // (n * n))
    sq = 0.0
    for i in range(0, n, step):
        block = X[i:i + step]
        np.matmul(A[i:i + step] * w, KR_t, out=block, casting="same_kind")
        sq += float(np.vdot(block, block))
    std = sigma * math.sqrt(sq / n**3)
    for i in range(0, n, step):
        rows = min(step, n - i)
        X[i:i + rows] += (std * gen.standard_normal((rows, n * n))).astype(dtype, copy=False)
    return X.reshape(n, n, n), tf.CPTensor([A, Bm, C], weights=w)


def exact_rel_error(fmt: Any, cp: Any, norm_sq: float) -> float:
    """``||X - cp|| / ||X||`` by the data format's exact residual (dense or sparse)."""
    weights, factors = cp
    return math.sqrt(max(fmt.residual_norm_sq(weights, list(factors)), 0.0) / norm_sq)


def noise_floor(fmt: Any, truth: Any, norm_sq: float) -> float:
    """``||X - T|| / ||X||`` for the planted ``T``: the error of the true model."""
    dt = np.dtype(fmt.dtype)
    weights, factors = truth
    planted = tf.CPTensor([np.asarray(a, dtype=dt) for a in factors],
                          weights=np.asarray(weights, dtype=dt))
    return exact_rel_error(fmt, planted, norm_sq)


def random_init(shape: tuple[int, ...], rank: int, seed: Any, dtype: Any) -> Any:
    """Standard normal initial factors, shared by every method started from ``seed``."""
    gen = np.random.default_rng(seed)
    return tf.CPTensor([gen.standard_normal((s, rank)).astype(dtype) for s in shape])


def sketch_init(X: Any, rank: int, seed: Any, passes: int = 2) -> Any:
    """Range-finder initial factors of a sparse tensor, shared by every method.

    Starting from standard normal ``G_m`` drawn from ``seed``, each pass
    replaces every factor in turn by an orthonormal basis of
    ``X_(n) (⊙_{m != n} G_m)`` (one MTTKRP per mode and pass), using the
    factors already replaced in this pass: ``passes`` sweeps of orthogonal
    iteration. A start with standard normal factors makes every fiber about
    equally likely to be sampled, and almost all fibers of a sparse tensor are
    empty; this start puts the leverage on the rows that hold data. One pass
    from independent random matrices left exact ALS at a stationary point
    (relative error 0.25 against a floor of 0.1) from two of three seeds on the
    quick sparse problem; two sequential passes brought it to the floor from
    all three. Zero rows of the sketch are filled with a small random
    perturbation so that no factor is rank deficient.
    """
    gen = np.random.default_rng(seed)
    factors = [gen.standard_normal((s, rank)) for s in X.shape]
    for _ in range(passes):
        for n in range(len(X.shape)):
            Y = np.asarray(tf.mttkrp(X, factors, n), dtype=np.float64)
            scale = 1e-12 * max(float(np.abs(Y).max()), 1.0)
            factors[n], _ = np.linalg.qr(Y + scale * gen.standard_normal(Y.shape))
    return tf.CPTensor(factors)
