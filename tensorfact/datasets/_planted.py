"""Planted problems with known solutions."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _backend as B
from .._validation import check_allocation, check_nonneg_float, check_positive_int, check_shape
from ..tensors.cp import CPTensor
from ._common import add_relative_noise, output_converter

__all__ = ["planted_cp"]


def _collinear_factor(rng: np.random.Generator, n: int, R: int, c: float) -> np.ndarray:
    """(n, R) matrix with unit columns whose pairwise cosines all equal ``c``.

    Orthonormal columns (QR of a Gaussian matrix) times the Cholesky factor of
    the target congruence matrix ``(1 - c) I + c 11^T`` (Tomasi & Bro, 2006).
    With ``n < R`` exact equal congruence is impossible; Gaussian columns mixed
    towards a common direction are used instead.
    """
    if c == 0.0:
        A = rng.standard_normal((n, R))
        return A / np.linalg.norm(A, axis=0)
    if n >= R:
        Q, _ = np.linalg.qr(rng.standard_normal((n, R)))
        K = (1.0 - c) * np.eye(R) + c * np.ones((R, R))
        A = Q @ np.linalg.cholesky(K).T
        return A
    common = rng.standard_normal((n, 1))
    A = math.sqrt(1 - c) * rng.standard_normal((n, R)) + math.sqrt(c) * common
    return A / np.linalg.norm(A, axis=0)


def planted_cp(
    shape: Sequence[int],
    rank: int,
    *,
    noise: float = 0.0,
    collinearity: float = 0.0,
    rng: None | int | np.random.Generator = None,
    dtype: Any = None,
    like: Any = None,
) -> tuple[Any, CPTensor]:
    """A tensor with a known CP structure plus Gaussian noise.

    Parameters
    ----------
    shape : sequence of int
        Tensor shape (at least two modes).
    rank : int
        Number of planted components.
    noise : float
        Relative noise level: ``X = T + noise * ||T||_F * E / ||E||_F`` with
        ``E`` standard Gaussian, so ``||X - T|| / ||T|| = noise`` exactly.
    collinearity : float in [0, 1)
        Cosine between any two columns of each factor (Tomasi & Bro's
        congruence); higher values make CP-ALS converge slowly ("swamps").
    rng : None, int or numpy.random.Generator
    dtype : dtype, optional
        Floating dtype of the result (default: float64, or ``like``'s dtype).
    like : array, optional
        Create the arrays in this array's namespace and on its device.

    Returns
    -------
    X : array
        The noisy tensor.
    truth : CPTensor
        The planted decomposition (unit columns; weights uniform in [1, 2]).

    Examples
    --------
    >>> X, truth = planted_cp((4, 5, 6), rank=2, rng=0)
    >>> X.shape, truth.rank
    ((4, 5, 6), 2)
    """
    shape = check_shape(shape, min_ndim=2)
    R = check_positive_int(rank, "rank")
    noise = check_nonneg_float(noise, "noise")
    collinearity = check_nonneg_float(collinearity, "collinearity")
    if collinearity >= 1.0:
        raise ValueError(f"collinearity must be in [0, 1), got {collinearity}")
    check_allocation(R * (sum(shape) + 1), 8, f"rank={R} planted factors")
    check_allocation(math.prod(shape), 8, f"a planted tensor of shape {shape}")
    gen = B.check_rng(rng)
    _, conv = output_converter(like, dtype)
    factors_np = [_collinear_factor(gen, s, R, collinearity) for s in shape]
    weights_np = 1.0 + gen.random(R)
    T = add_relative_noise(gen, CPTensor(factors_np, weights=weights_np).to_dense(), noise)
    truth = CPTensor([conv(A) for A in factors_np], weights=conv(weights_np))
    return conv(T), truth
