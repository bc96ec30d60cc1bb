"""Leverage-score sampling of Khatri-Rao product rows.

The leverage score of row ``(i_0, ..., i_{k-1})`` of ``A_0 ⊙ ... ⊙ A_{k-1}``
is at most the product of the factors' own leverage scores,
``prod_m l_m(i_m)`` (Cheng et al., 2016, Lemma 1), and that product,
normalised, is a probability distribution over the rows which factorises over
the modes. Rows can therefore be drawn one mode at a time without ever
forming the Khatri-Rao product.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .. import _backend as B
from .._validation import check_allocation, check_choice, check_positive_int, check_real
from ._khatri_rao import _check_factors
from ._leverage import _leverage, leverage_from_gram

__all__ = ["KRPSample", "ProductKRPSampler", "krp_sampler", "sample_krp_rows"]

_MAX_LINEAR = 2**62


@dataclass(frozen=True)
class KRPSample:
    """Rows of a Khatri-Rao product drawn by leverage-score sampling.

    All arrays are host NumPy arrays: the indices are drawn on the host from
    the caller's generator (SPEC 7) and are small (one entry per distinct
    sampled row); move them with ``xp.asarray`` where needed. Rows are sorted
    by linear index.

    Attributes
    ----------
    indices : (n_rows, k) int64 ndarray
        Per-factor row indices of every distinct selected row.
    linear : (n_rows,) int64 ndarray
        Linear row indices in the C order of `tensorfact.khatri_rao`
        (first factor's index slowest).
    counts : (n_rows,) int64 ndarray
        Number of random draws that hit the row (0 for rows included
        deterministically).
    probabilities : (n_rows,) float64 ndarray
        Probability of the row under the product distribution
        ``p(i_0, ..., i_{k-1}) = prod_m p_m(i_m)``.
    weights : (n_rows,) float64 ndarray
        Importance weights: ``sum_j weights[j] * outer(K[j], Y[j])`` is an
        unbiased estimate of ``K^T Y`` for any ``Y`` (rows of ``K``, ``Y``
        at ``linear``); 1 for deterministic rows, ``counts / (n_drawn * q)``
        for sampled ones, ``q`` the probability renormalised to the rows not
        taken deterministically.
    deterministic : (n_rows,) bool ndarray
        Which rows were included deterministically.
    n_drawn : int
        Number of random draws kept (draws landing on deterministic rows
        are discarded).
    shape : tuple of int
        Number of rows of each factor.
    """

    indices: np.ndarray
    linear: np.ndarray
    counts: np.ndarray
    probabilities: np.ndarray
    weights: np.ndarray
    deterministic: np.ndarray
    n_drawn: int
    shape: tuple[int, ...]

    @property
    def n_rows(self) -> int:
        """Number of distinct rows selected."""
        return int(self.linear.shape[0])


def sample_krp_rows(
    factors: Sequence[Any],
    /,
    n_samples: int,
    *,
    rng: None | int | np.random.Generator = None,
    scores: Sequence[Any] | None = None,
    deterministic_threshold: float | None = None,
    sampler: str = "product",
) -> KRPSample:
    """Draw rows of ``A_0 ⊙ ... ⊙ A_{k-1}`` by (bounded or exact) leverage scores.

    Row ``(i_0, ..., i_{k-1})`` is drawn with probability
    ``prod_m p_m(i_m)``, ``p_m = l_m / sum(l_m)`` with ``l_m`` the leverage
    scores of ``A_m`` (the SPALS upper bound on the product's own leverage
    scores). Each mode's index is drawn independently and vectorised
    (inverse-CDF by binary search); repeated rows are merged and counted.
    A factor whose leverage scores are all zero (zero matrix) is sampled
    uniformly.

    With ``deterministic_threshold=tau`` the rows whose probability is at
    least ``tau`` are found without enumerating the product (branch and
    bound over the per-mode sorted probabilities) and included with weight
    1; the random draws are then restricted to the remaining rows (hybrid
    sampling of Larsen & Kolda). ``tau=0`` includes every row, which gives
    the exact problem (small products only).

    Parameters
    ----------
    factors : sequence of (I_m, R) arrays
        The Khatri-Rao factors (any array API namespace).
    n_samples : int
        Number of random draws (with replacement), ``>= 1``.
    rng : None, int or numpy.random.Generator
        Randomness (drawn on the host).
    scores : sequence of (I_m,) arrays, optional
        Precomputed leverage scores (or any non-negative importance) of each
        factor; default `tensorfact.leverage_scores` of each factor.
        Scores are moved to the host (one small vector per factor).
    deterministic_threshold : float, optional
        Include rows with probability ``>= deterministic_threshold``
        deterministically (in ``[0, 1]``); ``None`` disables it.
    sampler : {"product", "exact"}
        ``"product"``: the SPALS product distribution above. ``"exact"``:
        the exact leverage scores of the Khatri-Rao product,
        ``p(i) = k_i^T (K^T K)^+ k_i / rank(K)``, drawn without forming it
        (Bharadwaj et al., 2023: segment trees of block Gram matrices,
        ``O(k (R^3 + R^2 log I))`` per draw); ``scores`` and
        ``deterministic_threshold`` must then be ``None``.

    Returns
    -------
    KRPSample

    Raises
    ------
    ValueError
        Bad ``n_samples``, ``scores`` of the wrong length or negative or
        non-finite, a threshold outside ``[0, 1]``, a product with more than
        ``2**62`` rows.

    References
    ----------
    Cheng, Peng, Liu & Perros, "SPALS: Fast alternating least squares via
    implicit leverage scores sampling", NeurIPS, 2016.
    Larsen & Kolda, "Practical leverage-based sampling for low-rank tensor
    decomposition", SIAM J. Matrix Anal. Appl., 2022.
    Bharadwaj, Malik, Murray, Grigori, Buluç & Demmel, "Fast exact leverage
    score sampling from Khatri-Rao products with applications to tensor
    decomposition", NeurIPS, 2023.

    Examples
    --------
    >>> import numpy as np
    >>> gen = np.random.default_rng(0)
    >>> A, Bm = gen.standard_normal((50, 3)), gen.standard_normal((40, 3))
    >>> s = sample_krp_rows([A, Bm], 200, rng=0)
    >>> s.indices.shape[1], int(s.counts.sum()), bool(np.all(s.weights > 0))
    (2, 200, True)
    """
    _check_factors(factors)
    xp = B.namespace(*factors, name="factors")
    n_samples = check_positive_int(n_samples, "n_samples")
    empty = [m for m, A in enumerate(factors) if int(A.shape[0]) == 0]
    if empty:
        raise ValueError(f"factors[{empty[0]}] has no rows: the Khatri-Rao product has no row "
                         "to sample")
    sampler = check_choice(sampler, "sampler", ("product", "exact"))
    tau = _check_threshold(deterministic_threshold)
    gen = B.check_rng(rng)
    dims = tuple(int(A.shape[0]) for A in factors)
    check_allocation(int(n_samples) * (len(factors) + 3), 8, f"n_samples={n_samples} draws")
    if sampler == "exact":
        if scores is not None:
            raise ValueError("scores cannot be given with sampler='exact'")
        for m, A in enumerate(factors):
            if not bool(xp.all(xp.isfinite(B.as_float_array(A, xp, name="factors")))):
                raise ValueError(f"factors[{m}] contains NaN or Inf")
        return krp_sampler("exact", factors, tau=tau).sample(range(len(factors)),
                                                             int(n_samples), gen)
    if scores is None:
        probs = []
        for A in factors:
            Af = B.as_float_array(A, xp, name="factors")
            if not bool(xp.all(xp.isfinite(Af))):
                raise ValueError("factors contain NaN or Inf")
            eps = B.finfo_eps(xp, Af.dtype)
            probs.append(B.to_numpy(_leverage(xp, Af, max(Af.shape) * eps)))
    else:
        probs = _host_scores(scores, len(factors))
        for m, (p, d) in enumerate(zip(probs, dims)):
            if p.shape != (d,):
                raise ValueError(f"scores[{m}] must have shape ({d},), got {p.shape}")
            if not np.all(np.isfinite(p)) or np.any(p < 0):
                raise ValueError(f"scores[{m}] must be finite and non-negative")
    return draw_krp_sample(probs, int(n_samples), gen, tau)


def _host_scores(scores: Any, k: int) -> list[np.ndarray]:
    """``scores`` (a sequence of ``k`` vectors of real numbers) as host float64 arrays."""
    if B.is_array(scores) or isinstance(scores, (str, bytes)) or not hasattr(scores, "__len__"):
        raise TypeError(f"scores must be a sequence of {k} vectors, got {type(scores).__name__}")
    if len(scores) != k:
        raise ValueError(f"scores must hold {k} vectors, got {len(scores)}")
    out = []
    for m, s in enumerate(scores):
        h = np.asarray(B.to_numpy(s) if B.is_array(s) else s)
        if h.dtype.kind not in "biuf":
            raise TypeError(f"scores[{m}] must hold real numbers, got dtype {h.dtype}")
        out.append(h.astype(np.float64))
    return out


class ProductKRPSampler:
    """The SPALS sampler: rows drawn from the product of the factors' leverage scores.

    Keeps one host law (`RowLaw`: probabilities and their CDF) per factor;
    `update` refreshes a factor's law (from its Gram matrix when given and
    well conditioned), `sample` draws rows of the Khatri-Rao product of any
    subset of the factors.
    """

    def __init__(self, factors: Sequence[Any]) -> None:
        self._laws: list[RowLaw] = []
        for m, A in enumerate(factors):
            self._laws.append(RowLaw(np.ones(1)))
            self.update(m, A)

    def update(self, mode: int, A: Any, gram: Any = None) -> None:
        """Replace factor ``mode`` (``gram = A^T A`` if the caller holds it)."""
        self._laws[mode] = RowLaw(self._scores(A, gram))

    def update_rows(self, mode: int, n_rows: int, index: Any, A_rows: Any, gram: Any) -> None:
        """Replace factor ``mode`` by one that is zero outside the rows ``index``.

        ``index``: sorted distinct row numbers of a factor of ``n_rows`` rows,
        ``A_rows`` those rows, ``gram = A_rows^T A_rows``; the scores are
        computed on those rows only.
        """
        self._laws[mode] = RowLaw(self._scores(A_rows, gram), B.to_numpy(index), n_rows)

    @staticmethod
    def _scores(A: Any, gram: Any) -> np.ndarray:
        xp = B.namespace(A)
        lev = leverage_from_gram(xp, A, gram) if gram is not None else None
        if lev is None:
            lev = _leverage(xp, A, max(max(A.shape), 1) * B.finfo_eps(xp, A.dtype))
        return B.to_numpy(lev)

    def sample(self, modes: Sequence[int], n_samples: int, gen: np.random.Generator,
               tau: float | None = None) -> KRPSample:
        """Draw ``n_samples`` rows of the Khatri-Rao product of ``modes``."""
        return draw_krp_sample([self._laws[m] for m in modes], n_samples, gen, tau)


def krp_sampler(sampler: str, factors: Sequence[Any], *, tau: float | None = None) -> Any:
    """The sampler named ``sampler`` ("product" or "exact") over ``factors``."""
    if sampler == "product":
        return ProductKRPSampler(factors)
    if sampler == "exact":
        if tau is not None:
            raise ValueError("deterministic_threshold is not available with sampler='exact' "
                             "(the exact law needs no deterministic rows); pass None")
        from ._exact_sampling import ExactKRPSampler

        return ExactKRPSampler(factors)
    raise ValueError(f"sampler must be 'product' or 'exact', got {sampler!r}")


def _check_threshold(tau: float | None) -> float | None:
    if tau is None:
        return None
    return check_real(tau, "deterministic_threshold", low=0.0, high=1.0,
                      what="a number in [0, 1] or None")


class RowLaw:
    """A distribution over a factor's rows, with its CDF, for inverse-CDF draws.

    ``RowLaw(scores)``: probabilities proportional to the non-negative
    ``scores`` of every row. ``RowLaw(scores, support, n)``: the scores of
    the sorted, distinct rows ``support`` of ``n`` rows, all other rows
    having probability zero; draws and probabilities then cost time in the
    support's size, and give the same rows as the dense law. All-zero scores
    give the uniform law over all rows.
    """

    __slots__ = ("n", "support", "p", "cdf")

    def __init__(self, scores: np.ndarray, support: np.ndarray | None = None,
                 n: int | None = None) -> None:
        p = np.where(np.asarray(scores, dtype=np.float64) > 0, scores, 0.0)
        total = p.sum()
        if support is None or not total > 0:
            self.n = int(p.shape[0]) if support is None else int(n)  # type: ignore[arg-type]
            self.support = None
            p = p / total if total > 0 else np.full(self.n, 1.0 / self.n)
        else:
            self.n = int(n)  # type: ignore[arg-type]
            self.support = np.asarray(support, dtype=np.int64)
            p = p / total
        self.p = p
        self.cdf = np.cumsum(p)

    def dense(self) -> np.ndarray:
        """The probabilities of all ``n`` rows."""
        if self.support is None:
            return self.p
        out = np.zeros(self.n)
        out[self.support] = self.p
        return out

    def draw(self, u: np.ndarray) -> np.ndarray:
        """Rows for uniform draws ``u`` in ``[0, 1)`` (inverse CDF)."""
        pos = np.searchsorted(self.cdf, u * self.cdf[-1], side="right")
        np.minimum(pos, self.cdf.shape[0] - 1, out=pos)
        return pos if self.support is None else self.support[pos]

    def prob(self, rows: np.ndarray) -> np.ndarray:
        """Probabilities of ``rows``."""
        if self.support is None:
            return self.p[rows]
        pos = np.minimum(np.searchsorted(self.support, rows), self.support.shape[0] - 1)
        return np.where(self.support[pos] == rows, self.p[pos], 0.0)


def draw_krp_sample(scores: Sequence[np.ndarray | RowLaw], n_samples: int,
                    gen: np.random.Generator, tau: float | None = None) -> KRPSample:
    """Draw a `KRPSample` from per-factor host scores or laws (no validation)."""
    laws = [s if isinstance(s, RowLaw) else RowLaw(s) for s in scores]
    dims = tuple(law.n for law in laws)
    k = len(dims)
    if math.prod(dims) >= _MAX_LINEAR:
        raise ValueError(
            f"the Khatri-Rao product has {math.prod(dims)} rows, more than 2**62; "
            "sampling needs linear row indices that fit in int64"
        )
    strides = np.ones(k, dtype=np.int64)
    for m in range(k - 2, -1, -1):
        strides[m] = strides[m + 1] * dims[m + 1]

    # deterministic (heavy) rows
    if tau is not None:
        det_idx, det_p = _heavy_rows([law.dense() for law in laws], tau)
        det_lin = det_idx @ strides if det_idx.shape[0] else np.zeros(0, dtype=np.int64)
        order = np.argsort(det_lin)
        det_idx, det_p, det_lin = det_idx[order], det_p[order], det_lin[order]
    else:
        det_idx = np.zeros((0, k), dtype=np.int64)
        det_p = np.zeros(0)
        det_lin = np.zeros(0, dtype=np.int64)
    p_det = float(det_p.sum())

    # random draws, one mode at a time (inverse CDF)
    draws = np.empty((n_samples, k), dtype=np.int64)
    u = gen.random((n_samples, k))
    for m, law in enumerate(laws):
        draws[:, m] = law.draw(u[:, m])
    lin = draws @ strides
    if det_lin.shape[0]:
        keep = ~np.isin(lin, det_lin, assume_unique=False)
        lin = lin[keep]
    n_drawn = int(lin.shape[0])
    uniq, counts = np.unique(lin, return_counts=True)
    rand_idx = _unravel(uniq, dims)
    rand_p = np.ones(uniq.shape[0])
    for m, law in enumerate(laws):
        rand_p *= law.prob(rand_idx[:, m])
    rest = 1.0 - p_det
    if n_drawn and rest > 0:
        rand_w = counts / (n_drawn * (rand_p / rest))
    else:
        rand_w = np.zeros(uniq.shape[0])

    if det_lin.shape[0] == 0:
        return KRPSample(rand_idx, uniq.astype(np.int64), counts.astype(np.int64), rand_p,
                         rand_w, np.zeros(uniq.shape[0], dtype=bool), n_drawn, dims)
    all_lin = np.concatenate([det_lin, uniq])
    order = np.argsort(all_lin, kind="stable")
    return KRPSample(
        np.concatenate([det_idx, rand_idx])[order],
        all_lin[order].astype(np.int64),
        np.concatenate([np.zeros(det_lin.shape[0], dtype=np.int64), counts])[order],
        np.concatenate([det_p, rand_p])[order],
        np.concatenate([np.ones(det_lin.shape[0]), rand_w])[order],
        np.concatenate([np.ones(det_lin.shape[0], dtype=bool),
                        np.zeros(uniq.shape[0], dtype=bool)])[order],
        n_drawn,
        dims,
    )


def _unravel(lin: np.ndarray, dims: Sequence[int]) -> np.ndarray:
    out = np.empty((lin.shape[0], len(dims)), dtype=np.int64)
    rem = lin.astype(np.int64, copy=True)
    for m in range(len(dims) - 1, -1, -1):
        out[:, m] = rem % dims[m]
        rem //= dims[m]
    return out


def _heavy_rows(probs: Sequence[np.ndarray], tau: float) -> tuple[np.ndarray, np.ndarray]:
    """All rows whose product probability is ``>= tau`` (branch and bound).

    Modes are expanded one at a time; a partial row over modes ``0..j`` is
    kept only if its partial product times the largest attainable product of
    the remaining modes still reaches ``tau``. At most ``1/tau`` partial rows
    survive each stage (all rows when ``tau == 0``).
    """
    k = len(probs)
    order = [np.argsort(-p, kind="stable") for p in probs]
    sp = [p[o] for p, o in zip(probs, order)]
    best_rest = np.ones(k + 1)
    for m in range(k - 1, -1, -1):
        best_rest[m] = best_rest[m + 1] * sp[m][0]
    cand = np.zeros((1, 0), dtype=np.int64)  # positions in the sorted order
    cand_p = np.ones(1)
    for m in range(k):
        need = tau / best_rest[m + 1] if best_rest[m + 1] > 0 else np.inf
        if tau == 0.0:
            need = 0.0
        # number of mode-m entries with cand_p * sp[m] >= need (sp[m] descending)
        with np.errstate(divide="ignore", invalid="ignore"):
            thresh = np.where(cand_p > 0, need / cand_p, np.inf)
        if need == 0.0:
            thresh = np.zeros_like(cand_p)
        cnt = np.searchsorted(-sp[m], -thresh, side="right")
        total = int(cnt.sum())
        parent = np.repeat(np.arange(cand.shape[0]), cnt)
        starts = np.cumsum(cnt) - cnt
        pos = np.arange(total) - np.repeat(starts, cnt)
        cand = np.concatenate([cand[parent], pos[:, None]], axis=1)
        cand_p = cand_p[parent] * sp[m][pos]
    rows = np.empty_like(cand)
    for m in range(k):
        rows[:, m] = order[m][cand[:, m]]
    if tau > 0:
        ok = cand_p >= tau
        rows, cand_p = rows[ok], cand_p[ok]
    return rows.astype(np.int64), cand_p
