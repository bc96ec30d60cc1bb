"""Numba kernel of the exact Khatri-Rao leverage sampler, and its vectorised twin.

Both descend a heap of block Gram matrices (see
``tensorfact.tenalg._exact_sampling``) by hierarchical inverse CDF: at each
node the sample's uniform number is compared with the left child's share of
the mass ``w^T G w`` and rescaled, so that the row chosen is the one a flat
inverse CDF over all rows would choose with the same number.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["tree_descend_numba", "tree_descend_np"]


@numba.njit(cache=True, parallel=True)
def tree_descend_numba(tree: np.ndarray, U: np.ndarray, W: np.ndarray, u01: np.ndarray,
                  leaf: int, n_leaves: int) -> np.ndarray:  # pragma: no cover - jitted
    """One row per sample ``j`` with probability ``∝ (U[i] · W[j])^2``.

    ``tree`` is a heap (root 1, children 2v and 2v+1, leaves from
    ``n_leaves``) of ``R x R`` Gram matrices of consecutive blocks of
    ``leaf`` rows of ``U``.
    """
    s = W.shape[0]
    R = W.shape[1]
    I = U.shape[0]
    out = np.empty(s, dtype=np.int64)
    for j in numba.prange(s):
        w = W[j]
        u = u01[j]
        node = 1
        while node < n_leaves:
            left = 2 * node
            ml = 0.0
            mr = 0.0
            for a in range(R):
                ta = 0.0
                tb = 0.0
                for b in range(R):
                    ta += tree[left, a, b] * w[b]
                    tb += tree[left + 1, a, b] * w[b]
                ml += w[a] * ta
                mr += w[a] * tb
            ml = max(ml, 0.0)
            mr = max(mr, 0.0)
            tot = ml + mr
            if tot <= 0.0:
                node = left  # no mass below (rounding): any row of the block is exact 0
                continue
            x = u * tot
            if x < ml:
                node = left
                u = x / ml
            else:
                node = left + 1
                u = (x - ml) / mr if mr > 0 else 0.0
            u = min(max(u, 0.0), 1.0 - 1e-16)
        first = (node - n_leaves) * leaf
        last = min(I, first + leaf)
        total = 0.0
        for i in range(first, last):
            d = 0.0
            for a in range(R):
                d += U[i, a] * w[a]
            total += d * d
        target = u * total
        acc = 0.0
        pick = max(first, last - 1)
        for i in range(first, last):
            d = 0.0
            for a in range(R):
                d += U[i, a] * w[a]
            acc += d * d
            if acc > target:
                pick = i
                break
        out[j] = pick
    return out


def tree_descend_np(tree: np.ndarray, U: np.ndarray, W: np.ndarray, u01: np.ndarray,
                    leaf: int, n_leaves: int) -> np.ndarray:
    """Vectorised NumPy twin of `tree_descend_numba` (same draws)."""
    s = W.shape[0]
    I = U.shape[0]
    node = np.ones(s, dtype=np.int64)
    u = u01.astype(np.float64).copy()
    while n_leaves > 1 and node[0] < n_leaves:
        left = 2 * node
        ml = np.maximum(np.einsum("sa,sab,sb->s", W, tree[left], W), 0.0)
        mr = np.maximum(np.einsum("sa,sab,sb->s", W, tree[left + 1], W), 0.0)
        tot = ml + mr
        x = u * tot
        go_left = (tot <= 0) | (x < ml)
        with np.errstate(divide="ignore", invalid="ignore"):
            u = np.where(go_left, np.where(ml > 0, x / ml, u),
                         np.where(mr > 0, (x - ml) / mr, 0.0))
        u = np.clip(u, 0.0, 1.0 - 1e-16)
        node = np.where(go_left, left, left + 1)
    out = np.empty(s, dtype=np.int64)
    for j in range(s):
        first = int(node[j] - n_leaves) * leaf
        last = min(I, first + leaf)
        q = (U[first:last] @ W[j]) ** 2
        acc = np.cumsum(q)
        pos = int(np.searchsorted(acc, u[j] * acc[-1], side="right")) if last > first else 0
        out[j] = first + min(pos, max(last - first - 1, 0))
    return out
