"""Statistical leverage scores of a tall matrix."""

from __future__ import annotations

from typing import Any

from .. import _backend as B
from .._validation import check_array, check_nonneg_float

__all__ = ["leverage_scores"]


def leverage_scores(A: Any, /, *, rtol: float | None = None) -> Any:
    """Statistical leverage scores of the rows of ``A``.

    The leverage score of row ``i`` is the ``i``-th diagonal entry of the
    orthogonal projector onto the column space of ``A`` (the "hat matrix"
    ``A A^+``), i.e. ``||U[i, :]||^2`` where ``U`` is an orthonormal basis of
    ``range(A)``. Scores lie in ``[0, 1]`` and sum to ``rank(A)``.

    The basis comes from a thin SVD with a rank-revealing cutoff: singular
    values below ``rtol * s_max`` are discarded, so zero columns, repeated
    columns and an all-zero matrix give finite scores (an all-zero matrix
    gives all-zero scores). No Gram matrix is formed or inverted.

    Parameters
    ----------
    A : (I, R) array
        Any array API namespace; real floating (integers are promoted).
    rtol : float, optional
        Relative singular-value cutoff; default ``max(I, R) * eps``.

    Returns
    -------
    (I,) array
        In ``A``'s namespace, device and floating dtype.

    Raises
    ------
    ValueError
        If ``A`` is not 2-D, is empty, contains NaN/Inf, or ``rtol`` is negative.
    TypeError
        If ``A`` is complex or not an array.

    References
    ----------
    Drineas, Magdon-Ismail, Mahoney & Woodruff, "Fast approximation of matrix
    coherence and statistical leverage", JMLR, 2012.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.array([[1.0, 0.0], [0.0, 1.0], [0.0, 1.0]])
    >>> np.round(leverage_scores(A), 6)
    array([1. , 0.5, 0.5])
    """
    check_array(A, "A")
    xp = B.namespace(A)
    if A.ndim != 2:
        raise ValueError(f"A must be a 2-D matrix, got shape {tuple(A.shape)}")
    A = B.as_float_array(A, xp, name="A")
    n_rows, n_cols = int(A.shape[0]), int(A.shape[1])
    if n_rows == 0 or n_cols == 0:
        raise ValueError(f"A must be non-empty, got shape {(n_rows, n_cols)}")
    if not bool(xp.all(xp.isfinite(A))):
        raise ValueError("A contains NaN or Inf")
    if rtol is None:
        rtol = max(n_rows, n_cols) * B.finfo_eps(xp, A.dtype)
    else:
        rtol = check_nonneg_float(rtol, "rtol")
    return _leverage(xp, A, rtol)


def _leverage(xp: Any, A: Any, rtol: float) -> Any:
    """Leverage scores without validation (``A`` real floating, finite, 2-D)."""
    # Scale first: keeps the SVD well away from overflow/underflow and makes the
    # zero matrix an explicit, NaN-free case.
    scale = xp.max(xp.abs(A))
    if B.to_float(scale) == 0.0:
        return xp.zeros((A.shape[0],), dtype=A.dtype, device=B.device(A))
    with B.linalg_guard("leverage scores (SVD)"):
        U, s, _ = xp.linalg.svd(A / scale, full_matrices=False)
    keep = s > rtol * xp.max(s)
    U = U * xp.astype(keep, A.dtype)[None, :]
    return xp.sum(U * U, axis=1)


#: Largest condition number for which `leverage_from_gram` is trusted.
_GRAM_COND_MAX = 1e4


def leverage_from_gram(xp: Any, A: Any, G: Any) -> Any | None:
    """Leverage scores of ``A`` from its Gram matrix ``G = A^T A``, or ``None``.

    Fast path for iterative solvers that already hold ``G``: with
    ``G = V diag(lam) V^T``, the scores are ``rowsum((A V)^2 / lam)``, one
    ``I x R x R`` product instead of an ``I x R`` SVD. Forming ``G`` squares
    the condition number, so this returns ``None`` (caller falls back to the
    SVD of `leverage_scores`) unless ``cond(A) <= 1e4``, where the
    scores are accurate to about ``1e8 * eps`` relative.
    """
    with B.linalg_guard("leverage scores (Gram eigendecomposition)"):
        lam, V = xp.linalg.eigh(G)
    lmax = B.to_float(xp.max(lam))
    lmin = B.to_float(xp.min(lam))
    if not lmax > 0 or lmin < lmax / _GRAM_COND_MAX**2:
        return None
    AV = A @ V
    return xp.sum(AV * AV / lam[None, :], axis=1)
