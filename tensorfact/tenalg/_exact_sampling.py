"""Exact leverage-score sampling of Khatri-Rao product rows.

Draws rows of ``K = U_0 ⊙ ... ⊙ U_{k-1}`` (``I_0 ... I_{k-1}`` rows, ``R``
columns) from the exact leverage distribution ``p(i) = l(i) / rank(K)``,
``l(i) = k_i^T (K^T K)^+ k_i``, without forming ``K`` (Bharadwaj, Malik,
Murray, Grigori, Buluç & Demmel, "Fast exact leverage score sampling from
Khatri-Rao products with applications to tensor decomposition", NeurIPS 2023).

The row index is drawn one factor at a time. With ``Φ = (K^T K)^+``,
``G_m = U_m^T U_m``, ``h`` the Hadamard product of the rows already chosen
and ``W_j = Φ ⊛ G_{j+1} ⊛ ... ⊛ G_{k-1}``, the conditional law of ``i_j`` is

    p(i_j | i_0 ... i_{j-1}) ∝ u^T diag(h) W_j diag(h) u,    u = U_j[i_j, :].

Writing ``W_j = Σ_t λ_t v_t v_t^T`` (eigendecomposition, once per factor
update), this is a mixture over ``t`` of the rank-one laws
``∝ (u · (h ⊛ v_t))^2``: ``t`` is drawn with probability proportional to
``λ_t (h ⊛ v_t)^T G_j (h ⊛ v_t)`` and then the row from a segment tree whose
nodes hold the Gram matrices of their blocks of rows (mass ``w^T G_node w``),
descending in ``O(R^2 log(I_j / L))`` plus ``O(L R)`` in the leaf block of
``L`` rows. A draw costs ``O(k (R^3 + R^2 log I))`` whatever the number of
rows of ``K``; building the tree of a factor costs ``O(I_j R^2)`` once per
update of that factor.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _backend as B
from .._kernels.sampling import tree_descend_numba
from ._sampling import KRPSample

__all__ = ["ExactKRPSampler"]

#: below this many rows a factor is sampled by one dense product, not the tree
_DIRECT_ROWS = 2048


def _build_tree(U: np.ndarray, leaf: int) -> tuple[np.ndarray, int]:
    """Heap of block Gram matrices of ``U``'s rows (leaves padded with zeros)."""
    I, R = U.shape
    n_blocks = -(-I // leaf)
    n_leaves = 1 << max(0, math.ceil(math.log2(max(n_blocks, 1))))
    tree = np.zeros((2 * n_leaves, R, R))
    pad = np.zeros((n_blocks * leaf, R))
    pad[:I] = U
    blocks = pad.reshape(n_blocks, leaf, R)
    tree[n_leaves:n_leaves + n_blocks] = np.matmul(blocks.transpose(0, 2, 1), blocks)
    for v in range(n_leaves - 1, 0, -1):
        tree[v] = tree[2 * v] + tree[2 * v + 1]
    return tree, n_leaves


def _pick_rows(U: np.ndarray, tree: tuple[np.ndarray, int] | None, W: np.ndarray,
               u01: np.ndarray, leaf: int) -> np.ndarray:
    """Rows with probability ``∝ (U[i] · W[j])^2`` for every sample ``j``."""
    if tree is None:  # small factor: one product, inverse CDF per sample
        q = (U @ W.T) ** 2  # (I, s)
        cdf = np.cumsum(q, axis=0)
        target = u01 * cdf[-1]
        idx = (cdf < target[None, :]).sum(axis=0)
        return np.minimum(idx, U.shape[0] - 1).astype(np.int64)
    return tree_descend_numba(tree[0], U, W, u01, leaf, tree[1])


class ExactKRPSampler:
    """Exact leverage-score sampler for Khatri-Rao products of changing factors.

    Keeps, per factor, the host copy, its Gram matrix and its segment tree;
    `update` refreshes one factor (an ALS solver calls it after each
    factor update), `draw` samples rows of the Khatri-Rao product of
    any subset of the factors.

    Parameters
    ----------
    factors : sequence of (I_m, R) arrays
        Initial factors (any namespace; copied to the host in float64, the
        documented host round trip of the sampler).
    leaf : int, optional
        Rows per leaf block of the trees (default ``max(R, 32)``).
    """

    def __init__(self, factors: Sequence[Any], *, leaf: int | None = None) -> None:
        R = int(factors[0].shape[1])
        self.rank = R
        self.leaf = int(leaf) if leaf is not None else max(R, 32)
        self._U: list[np.ndarray] = []
        self._G: list[np.ndarray] = []
        self._tree: list[tuple[np.ndarray, int] | None] = []
        for _ in factors:
            self._U.append(np.zeros((0, R)))
            self._G.append(np.zeros((R, R)))
            self._tree.append(None)
        for m, A in enumerate(factors):
            self.update(m, A)

    def update_rows(self, mode: int, n_rows: int, index: Any, A_rows: Any, gram: Any) -> None:
        """`update` with a factor that is zero outside the rows ``index``.

        See `ProductKRPSampler.update_rows`; the tree is built over all rows.
        """
        U = np.zeros((n_rows, int(A_rows.shape[1])))
        U[B.to_numpy(index)] = B.to_numpy(A_rows)
        self.update(mode, U)

    def update(self, mode: int, A: Any, gram: Any = None) -> None:
        """Replace factor ``mode`` (its Gram matrix and tree are rebuilt on the host)."""
        U = np.ascontiguousarray(B.to_numpy(A), dtype=np.float64)
        self._U[mode] = U
        self._G[mode] = U.T @ U
        self._tree[mode] = (None if U.shape[0] <= _DIRECT_ROWS
                            else _build_tree(U, self.leaf))

    def sample(self, modes: Sequence[int], n_samples: int, gen: np.random.Generator,
               tau: None = None) -> KRPSample:
        """`draw` merged into a `KRPSample` (rows sorted, counted, weighted)."""
        idx, prob = self.draw(modes, n_samples, gen)
        dims = tuple(int(self._U[m].shape[0]) for m in modes)
        strides = np.ones(len(dims), dtype=np.int64)
        for j in range(len(dims) - 2, -1, -1):
            strides[j] = strides[j + 1] * dims[j + 1]
        lin = idx @ strides
        uniq, first, counts = np.unique(lin, return_index=True, return_counts=True)
        p = prob[first]
        with np.errstate(divide="ignore"):
            w = np.where(p > 0, counts / (n_samples * np.where(p > 0, p, 1.0)), 0.0)
        return KRPSample(idx[first], uniq.astype(np.int64), counts.astype(np.int64), p, w,
                         np.zeros(uniq.shape[0], dtype=bool), int(n_samples), dims)

    def draw(self, modes: Sequence[int], n_samples: int, gen: np.random.Generator
             ) -> tuple[np.ndarray, np.ndarray]:
        """Draw ``n_samples`` rows of ``⊙_{m in modes} U_m`` from the exact leverage law.

        Returns
        -------
        indices : (n_samples, len(modes)) int64
            Per-factor row indices of every draw (with repetitions).
        probabilities : (n_samples,) float64
            The exact probability of each drawn row, ``l(i) / rank``.
        """
        modes = list(modes)
        k = len(modes)
        Gs = [self._G[m] for m in modes]
        H = Gs[0].copy()
        for G in Gs[1:]:
            H *= G
        with B.linalg_guard("exact leverage sampling (Gram eigendecomposition)"):
            w_all, V_all = np.linalg.eigh(H)
        cut = max(float(w_all.max()), 0.0) * H.shape[0] * np.finfo(np.float64).eps
        keep = w_all > cut
        Phi = (V_all[:, keep] / w_all[keep]) @ V_all[:, keep].T  # pseudo-inverse of H
        rank = int(keep.sum())
        s = int(n_samples)
        idx = np.empty((s, k), dtype=np.int64)
        h = np.ones((s, self.rank))
        u01 = gen.random((s, 2 * k))
        # suffix Hadamard products G_{>j}
        suffix = [np.ones_like(H) for _ in range(k + 1)]
        for j in range(k - 1, -1, -1):
            suffix[j] = suffix[j + 1] * Gs[j]
        for j, m in enumerate(modes):
            with B.linalg_guard("exact leverage sampling (eigendecomposition)"):
                lam, V = np.linalg.eigh(Phi * suffix[j + 1])
            lam = np.maximum(lam, 0.0)
            G = Gs[j]
            if j == 0:  # h = 1: the component law is the same for every sample
                mass = lam * np.einsum("rt,rq,qt->t", V, G, V)
                mass = np.broadcast_to(mass, (s, lam.shape[0]))
            else:
                Z = h[:, :, None] * V[None, :, :]  # (s, R, T): columns h ⊛ v_t
                mass = lam[None, :] * np.einsum("srt,srt->st", Z, np.matmul(G, Z))
            mass = np.maximum(mass, 0.0)
            cdf = np.cumsum(mass, axis=1)
            t = (cdf < (u01[:, 2 * j] * cdf[:, -1])[:, None]).sum(axis=1)
            t = np.minimum(t, lam.shape[0] - 1)
            Wv = h * V[:, t].T  # (s, R): h ⊛ v_t per sample
            rows = _pick_rows(self._U[m], self._tree[m], Wv, u01[:, 2 * j + 1], self.leaf)
            idx[:, j] = rows
            h = h * self._U[m][rows]
        lev = np.einsum("sr,rq,sq->s", h, Phi, h)
        return idx, np.maximum(lev, 0.0) / max(rank, 1)
