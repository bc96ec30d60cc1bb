"""Sums of Kronecker products of N-way factors (the GKPD / SeKron format)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import _backend as B
from .._validation import (
    check_array,
    check_array_sequence,
    check_factor_dtypes,
    check_int_sequence,
)
from ..tenalg._kron import _kron2, _kron_matmul, group_modes, ungroup_modes
from ._frozen import Frozen

__all__ = ["KroneckerTensor", "SeKronTensor"]


class _KroneckerFamily(Frozen):
    """What a sum of Kronecker products derives from its factor shapes."""

    __slots__ = ()
    _factors: tuple[Any, ...]

    @property
    def factor_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shapes of the S factors of one term (without the rank axes)."""
        raise NotImplementedError

    @property
    def n_params(self) -> int:
        """Number of stored parameters."""
        raise NotImplementedError

    @property
    def n_factors(self) -> int:
        """Number of factors S in each Kronecker term."""
        return len(self._factors)

    @property
    def shape(self) -> tuple[int, ...]:
        """Shape of the represented tensor: the elementwise product of the factor shapes."""
        shp = self.factor_shapes
        return tuple(math.prod(sh[n] for sh in shp) for n in range(len(shp[0])))

    @property
    def ndim(self) -> int:
        """Number of modes N of the represented tensor (and of every factor)."""
        return len(self.factor_shapes[0])

    @property
    def dtype(self) -> Any:
        """Floating dtype of the factors."""
        return self._factors[0].dtype

    @property
    def compression_ratio(self) -> float:
        """``prod(shape) / n_params``: dense entries per stored parameter."""
        return math.prod(self.shape) / self.n_params


class KroneckerTensor(_KroneckerFamily):
    """``W = sum_{r<R} A_r^(0) ⊗ A_r^(1) ⊗ ... ⊗ A_r^(S-1)`` of N-way factors.

    ``⊗`` is the N-way Kronecker product of GKPD: with ``a``, ``b`` the
    shapes of two factors, ``(A ⊗ B)[i] = A[j] * B[k]`` with
    ``i_n = j_n * b_n + k_n`` in every mode ``n`` (for matrices,
    `numpy.kron`). The represented tensor has shape
    ``prod_s factor_shapes[s]`` (elementwise).

    Factor ``s`` is stored as ONE array of shape ``(R, *factor_shapes[s])``:
    the ``s``-th factor of term ``r`` is ``factors[s][r]``. The arrays are not
    copied (treat them as read-only; tensorfact never writes into them), so
    torch ``Parameter`` tensors can be wrapped and autograd flows through
    every method. The object is immutable.

    Parameters
    ----------
    factors : sequence of S >= 1 arrays
        ``factors[s]`` has shape ``(R, *factor_shapes[s])``; all have the same
        ``R >= 1``, the same number ``N >= 1`` of trailing modes, one real
        floating dtype, and live in one namespace on one device.

    Raises
    ------
    ValueError
        No factors, a factor with fewer than 2 axes, different ranks or
        numbers of modes, or an empty axis.
    TypeError
        A factor that is not an array, mixed libraries/devices, non-floating
        or mixed dtypes.

    See Also
    --------
    tensorfact.nearest_kronecker : the best approximation of a dense tensor.
    tensorfact.kron_matmul : products with a 2-way KroneckerTensor.

    Examples
    --------
    >>> import numpy as np
    >>> A = np.arange(4.0).reshape(1, 2, 2); Bm = np.ones((1, 3, 1))
    >>> kt = KroneckerTensor([A, Bm])
    >>> kt.shape, kt.rank, kt.n_factors, kt.n_params
    ((6, 2), 1, 2, 7)
    >>> bool(np.array_equal(kt.to_dense(), np.kron(A[0], Bm[0])))
    True
    >>> round(float(kt.norm()), 10) == round(float(np.linalg.norm(kt.to_dense())), 10)
    True
    """

    __slots__ = ("_factors", "_xp")
    _factors: tuple[Any, ...]
    _xp: Any

    def __init__(self, factors: Sequence[Any]) -> None:
        if isinstance(factors, KroneckerTensor):
            factors = factors.factors
        if hasattr(factors, "shape"):
            raise TypeError(
                "factors must be a sequence of arrays of shape (rank, *factor_shape), "
                "got a single array; wrap it in a list"
            )
        facs = check_array_sequence(factors, "factors")
        for s, F in enumerate(facs):
            if not hasattr(F, "shape") or not hasattr(F, "dtype"):
                raise TypeError(f"factors[{s}] must be an array, got {type(F).__name__}")
            if F.ndim < 2:
                raise ValueError(
                    f"factors[{s}] must have shape (rank, *factor_shape) with at least one "
                    f"factor mode, got shape {tuple(F.shape)}"
                )
        xp = B.namespace(*facs, name="factors")
        R = int(facs[0].shape[0])
        N = facs[0].ndim - 1
        for s, F in enumerate(facs):
            if F.ndim - 1 != N:
                raise ValueError(
                    f"factors[{s}] has {F.ndim - 1} modes (shape {tuple(F.shape)}) but "
                    f"factors[0] has {N}; every factor must have the same number of modes"
                )
            if int(F.shape[0]) != R:
                raise ValueError(
                    f"factors[{s}] has rank {F.shape[0]} (leading axis) but factors[0] has {R}"
                )
            if any(int(d) == 0 for d in F.shape):
                raise ValueError(f"factors[{s}] has an empty axis: shape {tuple(F.shape)}")
        check_factor_dtypes(facs, xp)
        self._set_fields(_factors=facs, _xp=xp)

    # ------------------------------------------------------------------ basics
    @property
    def factors(self) -> tuple[Any, ...]:
        """Tuple of the S factor arrays, ``factors[s]`` of shape ``(R, *factor_shapes[s])``."""
        return self._factors

    @property
    def rank(self) -> int:
        """Number of Kronecker terms R."""
        return int(self._factors[0].shape[0])

    @property
    def factor_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shapes of the S factors of one term (without the rank axis)."""
        return tuple(tuple(int(d) for d in F.shape[1:]) for F in self._factors)

    @property
    def n_params(self) -> int:
        """Number of stored parameters, ``R * sum_s prod(factor_shapes[s])``."""
        return self.rank * sum(math.prod(sh) for sh in self.factor_shapes)

    def __repr__(self) -> str:
        return (
            f"KroneckerTensor(shape={self.shape}, rank={self.rank}, "
            f"factor_shapes={self.factor_shapes}, dtype={self.dtype}, "
            f"namespace={self._xp.__name__.split('.')[-1]})"
        )

    # ------------------------------------------------------------- algebra
    def to_dense(self) -> Any:
        """The full tensor, ``prod(shape)`` entries.

        Forms the regrouped S-way tensor ``sum_r vec(A_r^(0)) ∘ ... ∘
        vec(A_r^(S-1))`` with one matrix product over the rank (for two
        factors: ``flat(A)^T flat(B)``) and permutes it back
        (`ungroup_modes`): workspace is one copy of
        the result, not ``R`` of them.
        """
        xp = self._xp
        if self.n_factors == 1:
            F = self._factors[0]
            return xp.sum(F, axis=0) if self.rank > 1 else F[0, ...]
        flats = self._flat()
        R = self.rank
        cur = flats[0]
        for F in flats[1:-1]:
            cur = xp.reshape(cur[:, :, None] * F[:, None, :], (R, -1))
        M = xp.matrix_transpose(cur) @ flats[-1]
        shapes = self.factor_shapes
        T = xp.reshape(M, tuple(math.prod(sh) for sh in shapes))
        return ungroup_modes(T, shapes)

    def _flat(self) -> list[Any]:
        xp = self._xp
        return [xp.reshape(F, (self.rank, -1)) for F in self._factors]

    def gram(self) -> Any:
        """The R x R matrix ``G[r, q] = <term_r, term_q> = prod_s <A_r^(s), A_q^(s)>``."""
        xp = self._xp
        G = None
        for F in self._flat():
            Gs = F @ xp.matrix_transpose(F)
            G = Gs if G is None else G * Gs
        return G

    def norm(self) -> Any:
        """Frobenius norm, ``sqrt(sum_{r,q} prod_s <A_r^(s), A_q^(s)>)``, never densifying.

        Uses ``<A ⊗ B, C ⊗ D> = <A, C> <B, D>``; costs
        ``R^2 sum_s prod(factor_shapes[s])``. Each factor is divided by its
        largest magnitude first, so no square leaves the dtype's range
        whenever the norm itself is representable. Returns a 0-d array in the
        factors' namespace.
        """
        xp = self._xp
        G = None
        scale = None
        for F in self._flat():
            m = xp.max(xp.abs(F))
            c = xp.where(m > 0, m, xp.ones_like(m))
            Fs = F / c
            Gs = Fs @ xp.matrix_transpose(Fs)
            G = Gs if G is None else G * Gs
            scale = c if scale is None else scale * c
        sq = xp.sum(G)
        return scale * xp.sqrt(xp.clip(sq, 0, None))

    def inner(self, other: Any) -> Any:
        """Frobenius inner product with a KroneckerTensor or a dense array.

        Against a `KroneckerTensor` with the same factor shapes, the
        cross Gram identity (no densification of either). Against a dense
        array ``X``, ``X`` is regrouped into the S-way tensor of
        `group_modes` and contracted with one factor
        at a time (this tensor is never densified). A KroneckerTensor with
        different factor shapes is densified (it is ``other`` that is
        expanded) and treated as a dense array.

        Returns a 0-d array in the factors' namespace.
        """
        xp = self._xp
        if isinstance(other, KroneckerTensor):
            B.namespace(self._factors[0], other.factors[0], name="other")
            if other.shape != self.shape:
                raise ValueError(f"other has shape {other.shape}, expected {self.shape}")
            if other.factor_shapes == self.factor_shapes:
                G = None
                for F, H in zip(self._flat(), other._flat()):
                    Gs = F @ xp.matrix_transpose(H)
                    G = Gs if G is None else G * Gs
                return xp.sum(G)
            other = other.to_dense()
        if not hasattr(other, "shape") or not B.is_array(other):
            raise TypeError(
                f"other must be an array or a KroneckerTensor, got {type(other).__name__}"
            )
        check_array(other, "other")
        B.namespace(self._factors[0], other, name="other")
        if tuple(int(d) for d in other.shape) != self.shape:
            raise ValueError(f"other has shape {tuple(other.shape)}, expected {self.shape}")
        T = group_modes(other, self.factor_shapes)
        flats = self._flat()
        R = self.rank
        # contract mode 0 for all r at once: (R, P0) @ (P0, rest) -> (R, rest)
        cur = flats[0] @ xp.reshape(T, (T.shape[0], -1))
        for F in flats[1:]:
            P = int(F.shape[1])
            cur = xp.reshape(cur, (R, P, -1))
            cur = xp.sum(cur * F[:, :, None], axis=1)
        return xp.sum(cur)

    def matmul(self, x: Any, /, *, transpose: bool = False) -> Any:
        """``x @ W.T`` (or ``x @ W``) for a 2-way tensor; see `tensorfact.kron_matmul`."""
        if self.ndim != 2:
            raise ValueError(
                f"matmul needs a 2-way KroneckerTensor, this one has shape {self.shape}"
            )
        check_array(x, "x")
        xp = B.namespace(x, *self._factors, name="x")
        facs = self._factors
        if transpose:
            facs = tuple(xp.permute_dims(F, (0, 2, 1)) for F in facs)
        return _kron_matmul(xp, x, facs)


class SeKronTensor(_KroneckerFamily):
    """A sequence of Kronecker products (SeKron), nested over the ranks.

    ``W = sum_{r0} A0[r0] ⊗ sum_{r1} A1[r0, r1] ⊗ ... ⊗ sum_{r_{S-2}}
    A_{S-2}[r0, ..., r_{S-2}] ⊗ A_{S-1}[r0, ..., r_{S-2}]``

    (Hameed et al., SeKron). Factor ``s < S-1`` is indexed by all ranks up to
    its own, ``factors[s]`` has shape ``(R_0, ..., R_s, *shapes[s])``; the last
    factor shares the indices of the one before it, shape
    ``(R_0, ..., R_{S-2}, *shapes[S-1])``. Expanding the sums gives a flat
    `KroneckerTensor` of rank ``prod(ranks)`` in which factor ``s`` is
    repeated ``R_{s+1} ... R_{S-2}`` times; the nested form stores each factor
    once, so `n_params` is
    ``sum_{s<S-1} R_0...R_s prod(shapes[s]) + R_0...R_{S-2} prod(shapes[S-1])``.
    Immutable; arrays are not copied.

    Parameters
    ----------
    factors : sequence of S >= 2 arrays, shaped as above
    ranks : sequence of S - 1 positive ints

    Raises
    ------
    ValueError
        Wrong number of factors or ranks, or a factor whose leading axes do
        not match the ranks, or factor shapes with different numbers of modes.
    TypeError
        Non-floating, mixed dtypes or mixed namespaces.
    """

    __slots__ = ("_factors", "_ranks", "_xp")
    _factors: tuple[Any, ...]
    _ranks: tuple[int, ...]
    _xp: Any

    def __init__(self, factors: Sequence[Any], ranks: Sequence[int]) -> None:
        if hasattr(factors, "shape"):
            raise TypeError("factors must be a sequence of arrays, got a single array; wrap it "
                            "in a list")
        facs = check_array_sequence(factors, "factors")
        rk = check_int_sequence(ranks, "ranks", positive=False)
        S = len(facs)
        if S < 2:
            raise ValueError(f"a SeKron tensor needs at least 2 factors, got {S}")
        if len(rk) != S - 1:
            raise ValueError(
                f"ranks must have {S - 1} entries (one per factor but the last), got {rk}"
            )
        if any(r < 1 for r in rk):
            raise ValueError(f"ranks must be positive, got {rk}")
        for s, F in enumerate(facs):
            if not hasattr(F, "shape") or not hasattr(F, "dtype"):
                raise TypeError(f"factors[{s}] must be an array, got {type(F).__name__}")
        xp = B.namespace(*facs, name="factors")
        N = None
        for s, F in enumerate(facs):
            lead = rk[: min(s, S - 2) + 1]
            if tuple(int(d) for d in F.shape[: len(lead)]) != lead:
                raise ValueError(
                    f"factors[{s}] must start with the rank axes {lead}, got shape {tuple(F.shape)}"
                )
            n = F.ndim - len(lead)
            if n < 1:
                raise ValueError(f"factors[{s}] has no factor modes: shape {tuple(F.shape)}")
            if N is None:
                N = n
            elif n != N:
                raise ValueError(f"factors[{s}] has {n} factor modes, factors[0] has {N}")
        check_factor_dtypes(facs, xp)
        self._set_fields(_factors=facs, _ranks=rk, _xp=xp)

    @property
    def factors(self) -> tuple[Any, ...]:
        """The S nested factor arrays."""
        return self._factors

    @property
    def ranks(self) -> tuple[int, ...]:
        """The S - 1 ranks ``(R_0, ..., R_{S-2})``."""
        return self._ranks

    @property
    def factor_shapes(self) -> tuple[tuple[int, ...], ...]:
        """Shapes of the S factors (without rank axes)."""
        S = len(self._factors)
        return tuple(
            tuple(int(d) for d in F.shape[min(s, S - 2) + 1:]) for s, F in enumerate(self._factors)
        )

    @property
    def n_params(self) -> int:
        """Stored parameters of the nested form (each factor counted once)."""
        return self.n_params_for(self.factor_shapes, self._ranks)

    @staticmethod
    def n_params_for(factor_shapes: Sequence[Sequence[int]], ranks: Sequence[int]) -> int:
        """`n_params` of a SeKron tensor with these factor shapes and ranks.

        ``sum_{s<S-1} R_0...R_s prod(shapes[s]) + R_0...R_{S-2} prod(shapes[S-1])``,
        without any factor arrays (to compare shapes and ranks before decomposing).
        """
        S = len(factor_shapes)
        return sum(math.prod(ranks[: min(s, S - 2) + 1]) * math.prod(sh)
                   for s, sh in enumerate(factor_shapes))

    def __repr__(self) -> str:
        return (
            f"SeKronTensor(shape={self.shape}, ranks={self.ranks}, "
            f"factor_shapes={self.factor_shapes}, dtype={self.dtype})"
        )

    def to_kronecker(self) -> KroneckerTensor:
        """The flat `KroneckerTensor` of rank ``prod(ranks)`` (factors repeated)."""
        xp = self._xp
        rk = self._ranks
        S = len(self._factors)
        R = math.prod(rk)
        out = []
        for s, F in enumerate(self._factors):
            k = min(s, S - 2) + 1  # number of rank axes of this factor
            fshape = tuple(int(d) for d in F.shape[k:])
            G = xp.reshape(F, rk[:k] + (1,) * (len(rk) - k) + fshape)
            G = xp.broadcast_to(G, rk + fshape)
            out.append(xp.reshape(G, (R,) + fshape))
        return KroneckerTensor(out)

    def to_dense(self) -> Any:
        """The full tensor, contracted level by level from the last factor."""
        xp = self._xp
        S = len(self._factors)
        rk = self._ranks
        # T: (R_0..R_{S-2}, *shape_{S-1}); fold in factor s = S-2, ..., 0
        T = self._factors[-1]
        for s in range(S - 2, -1, -1):
            F = self._factors[s]
            lead = rk[: s + 1]
            Q = math.prod(lead)
            Ff = xp.reshape(F, (Q,) + tuple(int(d) for d in F.shape[s + 1:]))
            Tf = xp.reshape(T, (Q,) + tuple(int(d) for d in T.shape[s + 1:]))
            K = _kron2(xp, Ff, Tf, batched=True)
            K = xp.reshape(K, lead + tuple(int(d) for d in K.shape[1:]))
            T = xp.sum(K, axis=s)
        return T

    def norm(self) -> Any:
        """Frobenius norm via the flat form's Gram identity (never densifies)."""
        return self.to_kronecker().norm()

    def matmul(self, x: Any, /, *, transpose: bool = False) -> Any:
        """``x @ W.T`` (``x @ W``) for a 2-way tensor, via the flat form and ``kron_matmul``."""
        return self.to_kronecker().matmul(x, transpose=transpose)
