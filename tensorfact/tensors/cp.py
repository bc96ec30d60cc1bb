"""The CP (CANDECOMP/PARAFAC) tensor: a weighted sum of rank-one tensors."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from .. import _backend as B
from .._validation import check_array, check_array_sequence, check_factor_dtypes
from ..tenalg._khatri_rao import khatri_rao
from ..tenalg._mttkrp import _mttkrp
from ._frozen import FactorPair

__all__ = ["CPTensor"]


class CPTensor(FactorPair):
    """``sum_r weights[r] * factors[0][:, r] ∘ ... ∘ factors[N-1][:, r]``.

    Frozen and validated on construction; unpacks as ``(weights, factors)``
    like TensorLy's ``CPTensor``. The arrays are not copied: treat them as
    read-only (no method of tensorfact ever writes into them).

    Parameters
    ----------
    factors : sequence of (I_n, R) arrays, or a (weights, factors) pair
    weights : (R,) array, optional
        Defaults to ones.

    Raises
    ------
    ValueError
        No factors, a factor that is not 2-D, factors with different numbers
        of columns, or ``weights`` of the wrong shape.
    TypeError
        Factors from different array libraries or devices, or of different /
        non-floating dtypes.

    Examples
    --------
    >>> import numpy as np
    >>> cp = CPTensor([np.ones((2, 1)), np.ones((3, 1))], weights=np.array([2.0]))
    >>> weights, factors = cp
    >>> cp.shape, cp.rank, round(float(cp.norm()), 12)
    ((2, 3), 1, 4.898979485566)
    """

    __slots__ = ("_weights", "_factors", "_xp")
    _weights: Any
    _factors: tuple[Any, ...]
    _xp: Any

    def __init__(self, factors: Sequence[Any], weights: Any = None) -> None:
        if (
            isinstance(factors, tuple)
            and len(factors) == 2
            and weights is None
            and isinstance(factors[1], (list, tuple))
        ):
            weights, factors = factors
        if isinstance(factors, CPTensor):
            weights, factors = factors.weights, factors.factors
        facs = check_array_sequence(factors, "factors", what="2-D arrays")
        for i, A in enumerate(facs):
            if not hasattr(A, "ndim") or A.ndim != 2:
                raise ValueError(
                    f"factors[{i}] must be a 2-D array of shape (I_{i}, rank), "
                    f"got {getattr(A, 'shape', type(A).__name__)}"
                )
        xp = B.namespace(*facs, name="factors")
        if B.is_array(weights):
            try:
                B.namespace(facs[0], weights)
            except TypeError as exc:
                raise TypeError(f"weights and factors must come from one array library and "
                                f"device: {exc}") from None
        R = int(facs[0].shape[1])
        for i, A in enumerate(facs):
            if int(A.shape[1]) != R:
                raise ValueError(
                    f"factors[{i}] has {A.shape[1]} columns but factors[0] has {R}; "
                    "every factor must have rank columns"
                )
            if int(A.shape[0]) == 0:
                raise ValueError(f"factors[{i}] has no rows")
        dt = check_factor_dtypes(facs, xp)
        if weights is None:
            weights = xp.ones((R,), dtype=dt, device=B.device(facs[0]))
        else:
            if not B.is_array(weights):
                try:
                    host = np.asarray(weights)
                except (TypeError, ValueError) as exc:
                    raise TypeError(f"weights must be an array or a sequence of numbers, "
                                    f"got {type(weights).__name__}") from exc
                weights = B.from_numpy(xp, B.as_float_array(host, B.namespace(host),
                                                            name="weights"),
                                       like=facs[0], dtype=dt)
            weights = B.as_float_array(weights, xp, name="weights")  # complex: TypeError
            if tuple(weights.shape) != (R,):
                raise ValueError(f"weights must have shape ({R},), got {tuple(weights.shape)}")
            if weights.dtype != dt:
                weights = xp.astype(weights, dt)
        self._set_fields(_weights=weights, _factors=facs, _xp=xp)

    # ------------------------------------------------------------------ basics
    @property
    def weights(self) -> Any:
        """(R,) array of component weights."""
        return self._weights

    @property
    def rank(self) -> int:
        """Number of components R."""
        return int(self._factors[0].shape[1])

    @property
    def n_params(self) -> int:
        """Number of stored parameters (weights and factor entries)."""
        return self.rank * (1 + sum(self.shape))

    def _head(self) -> Any:
        return self._weights

    def __repr__(self) -> str:
        return (
            f"CPTensor(shape={self.shape}, rank={self.rank}, dtype={self.dtype}, "
            f"namespace={self._xp.__name__.split('.')[-1]})"
        )

    # ------------------------------------------------------------- algebra
    def to_dense(self) -> Any:
        """The full tensor (``prod(shape)`` entries).

        Computed as ``khatri_rao(factors[:h]) @ khatri_rao(factors[h:]).T`` at the
        split ``h`` that balances the two sides, so the workspace beyond the
        result is ``R * (prod(shape[:h]) + prod(shape[h:]))`` entries.
        """
        xp = self._xp
        f = self._factors
        if len(f) == 1:
            return f[0] @ self._weights
        s = self.shape
        h = min(range(1, len(f)), key=lambda k: math.prod(s[:k]) + math.prod(s[k:]))
        left = khatri_rao(f[:h], weights=self._weights)
        right = khatri_rao(f[h:])
        return xp.reshape(left @ xp.matrix_transpose(right), s)

    def _grams(self) -> list[Any]:
        xp = self._xp
        return [xp.matrix_transpose(A) @ A for A in self._factors]

    def norm(self) -> Any:
        """Frobenius norm via ``w^T (G_0 * ... * G_{N-1}) w``, never densifying.

        Computed on unit columns with a scaled weight vector, so the result is
        finite and accurate whenever the norm itself is representable.

        Returns a 0-d array in the factors' namespace.
        """
        xp = self._xp
        # unit columns and one scaled weight vector: no square leaves the range
        # of the dtype whatever the factors' magnitude (||M|| = c sqrt(u^T H u))
        u = self._weights
        grams = []
        for A in self._factors:
            nrm = B.scaled_norm(xp, A, axis=0)
            safe = xp.where(nrm > 0, nrm, xp.ones_like(nrm))
            An = A / safe[None, :]
            grams.append(xp.matrix_transpose(An) @ An)
            u = u * nrm
        c = xp.max(xp.abs(u))
        un = u / xp.where(c > 0, c, xp.ones_like(c))
        H = _hadamard(grams)
        sq = xp.sum(un[:, None] * H * un[None, :])
        return c * xp.sqrt(xp.clip(sq, 0, None))

    def inner(self, other: Any) -> Any:
        """Inner product with another ``CPTensor`` or a dense array of the same shape.

        Never densifies this tensor: against a CPTensor it uses the Hadamard
        product of cross-Gram matrices; against a dense array one MTTKRP.
        """
        xp = self._xp
        if isinstance(other, CPTensor):
            B.namespace(self._factors[0], other.factors[0], name="other")
            if other.shape != self.shape:
                raise ValueError(f"other has shape {other.shape}, expected {self.shape}")
            H = _hadamard(
                [xp.matrix_transpose(A) @ Bm for A, Bm in zip(self._factors, other.factors)]
            )
            return xp.sum(self._weights[:, None] * H * other.weights[None, :])
        check_array(other, "other")
        B.namespace(self._factors[0], other, name="other")
        if tuple(other.shape) != self.shape:
            raise ValueError(f"other has shape {tuple(other.shape)}, expected {self.shape}")
        if self.ndim == 1:
            return xp.sum(other * (self._factors[0] @ self._weights))
        M = _mttkrp(xp, other, list(self._factors), 0)
        return xp.sum(M * self._factors[0] * self._weights[None, :])

    def normalize(self) -> CPTensor:
        """Unit-norm factor columns with the norms absorbed into the weights.

        Zero columns are left as they are and get weight 0 (no NaN).
        """
        xp = self._xp
        w = self._weights
        facs = []
        for A in self._factors:
            nrm = xp.linalg.vector_norm(A, axis=0)
            safe = xp.where(nrm > 0, nrm, xp.ones_like(nrm))
            facs.append(A / safe[None, :])
            w = w * nrm
        return CPTensor(facs, weights=w)

    def arrange(self) -> CPTensor:
        """Normalise, sort components by decreasing weight and fix signs.

        The sign of each column of every factor but the last is chosen so its
        largest-magnitude entry is positive; the last factor absorbs the
        product of the flips, so the tensor is unchanged. Negative weights are
        made positive the same way.
        """
        xp = self._xp
        cp = self.normalize()
        w = cp.weights
        facs = list(cp.factors)
        sign_w = xp.where(w < 0, -xp.ones_like(w), xp.ones_like(w))
        w = w * sign_w
        total = sign_w
        for n in range(len(facs) - 1):
            A = facs[n]
            idx = xp.argmax(xp.abs(A), axis=0)
            picked = xp.take_along_axis(A, idx[None, :], axis=0)[0, :]
            s = xp.where(picked < 0, -xp.ones_like(picked), xp.ones_like(picked))
            facs[n] = A * s[None, :]
            total = total * s
        facs[-1] = facs[-1] * total[None, :]
        order = xp.argsort(-w, stable=True)
        facs = [xp.take(A, order, axis=1) for A in facs]
        return CPTensor(facs, weights=xp.take(w, order))

    def factor_match_score(self, other: CPTensor, *, consider_weights: bool = True) -> float:
        """Factor match score (FMS) in [0, 1], invariant to permutation and scaling.

        Components are normalised and matched by the Hungarian algorithm
        (`scipy.optimize.linear_sum_assignment`, run on the host on the
        R x R score matrix). A matched pair scores
        ``(1 - |w_r - v_s| / max(w_r, v_s)) * prod_n |<a_r^n, b_s^n>|``
        (the weight penalty only if ``consider_weights``); the FMS is the mean
        over ``max(R, R')`` components (unmatched ones score 0).

        References
        ----------
        Acar, Dunlavy, Kolda, Mørup, "Scalable tensor factorizations for
        incomplete data", Chemometrics and Intelligent Laboratory Systems, 2011.
        """
        from scipy.optimize import linear_sum_assignment

        if not isinstance(other, CPTensor):
            raise TypeError(f"other must be a CPTensor, got {type(other).__name__}")
        if other.shape != self.shape:
            raise ValueError(f"other has shape {other.shape}, expected {self.shape}")
        B.namespace(self._factors[0], other.factors[0], name="other")
        a = self.normalize()
        b = other.normalize()
        xp = self._xp
        score = None
        for A, Bm in zip(a.factors, b.factors):
            C = xp.abs(xp.matrix_transpose(A) @ Bm)
            score = C if score is None else score * C
        S = B.to_numpy(score).astype(np.float64)
        if consider_weights:
            wa = np.abs(B.to_numpy(a.weights).astype(np.float64))
            wb = np.abs(B.to_numpy(b.weights).astype(np.float64))
            mx = np.maximum(wa[:, None], wb[None, :])
            gap = np.abs(wa[:, None] - wb[None, :]) / np.where(mx > 0, mx, 1.0)
            pen = np.where(mx > 0, 1.0 - gap, 1.0)
            S = S * pen
        rows, cols = linear_sum_assignment(S, maximize=True)
        return float(S[rows, cols].sum() / max(S.shape))

    # ------------------------------------------------------------ interop
    def to_tensorly(self) -> Any:
        """A ``tensorly.cp_tensor.CPTensor`` sharing the same arrays."""
        from tensorly.cp_tensor import CPTensor as TLCPTensor

        return TLCPTensor((self._weights, list(self._factors)))

    @classmethod
    def from_tensorly(cls, cp: Any) -> CPTensor:
        """Build from a TensorLy ``CPTensor`` or a ``(weights, factors)`` pair."""
        weights, factors = cp
        return cls(list(factors), weights=weights)


def _hadamard(mats: Sequence[Any]) -> Any:
    out = mats[0]
    for M in mats[1:]:
        out = out * M
    return out


