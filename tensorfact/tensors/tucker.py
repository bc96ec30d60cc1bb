"""The Tucker tensor: a core tensor multiplied by a factor matrix in every mode."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from .. import _backend as B
from .._validation import check_array, check_array_sequence, check_factor_dtypes
from ..tenalg._ttm import mode_dot, ttm_chain
from ._frozen import FactorPair

__all__ = ["TuckerTensor"]


class TuckerTensor(FactorPair):
    """``core x_0 factors[0] x_1 factors[1] ... x_{N-1} factors[N-1]``.

    Frozen and validated on construction; unpacks as ``(core, factors)`` like
    TensorLy's ``TuckerTensor``. The arrays are not copied: treat them as
    read-only (no method of tensorfact ever writes into them).

    Parameters
    ----------
    core : array of shape (R_0, ..., R_{N-1})
        Or a ``(core, factors)`` pair (then ``factors`` is omitted).
    factors : sequence of N arrays, factors[n] of shape (I_n, R_n)

    Raises
    ------
    ValueError
        No factors, a factor that is not 2-D or whose column count differs
        from the core's size in its mode, a core with the wrong number of
        modes.
    TypeError
        Arrays from different array libraries or devices, non-floating or
        different dtypes.

    Examples
    --------
    >>> import numpy as np
    >>> core = np.ones((1, 2))
    >>> tt = TuckerTensor(core, [np.ones((3, 1)), np.eye(2)])
    >>> core, factors = tt
    >>> tt.shape, tt.ranks, round(float(tt.norm()), 12)
    ((3, 2), (1, 2), 2.449489742783)
    """

    __slots__ = ("_core", "_factors", "_xp")
    _core: Any
    _factors: tuple[Any, ...]
    _xp: Any

    def __init__(self, core: Any, factors: Sequence[Any] | None = None) -> None:
        if factors is None:
            if isinstance(core, TuckerTensor):
                core, factors = core.core, core.factors
            elif isinstance(core, (tuple, list)) and len(core) == 2:
                core, factors = core
            else:
                raise TypeError("TuckerTensor needs a core and factors (or a (core, factors) "
                                "pair)")
        facs = check_array_sequence(factors, "factors", what="factor matrices")
        check_array(core, "core")
        for n, A in enumerate(facs):
            check_array(A, f"factors[{n}]", ndim=2)
        xp = B.namespace(core, *facs, name="core and factors")
        dt = check_factor_dtypes(facs, xp)
        if core.dtype != dt:
            raise TypeError(f"core has dtype {core.dtype} but factors have {dt}; use one dtype")
        if core.ndim != len(facs):
            raise ValueError(f"core has {core.ndim} modes but there are {len(facs)} factors")
        for n, A in enumerate(facs):
            if int(A.shape[1]) != int(core.shape[n]):
                raise ValueError(f"factors[{n}] has {int(A.shape[1])} columns but the core has "
                                 f"size {int(core.shape[n])} in mode {n}")
            if int(A.shape[0]) == 0:
                raise ValueError(f"factors[{n}] has no rows")
        self._set_fields(_core=core, _factors=tuple(facs), _xp=xp)

    # ------------------------------------------------------------------ basics
    @property
    def core(self) -> Any:
        """The core array, shape ``ranks``."""
        return self._core

    @property
    def n_params(self) -> int:
        """Number of stored parameters (core and factor entries)."""
        return math.prod(self.ranks) + sum(s * r for s, r in zip(self.shape, self.ranks))

    @property
    def ranks(self) -> tuple[int, ...]:
        """Multilinear ranks (the core's shape)."""
        return tuple(int(A.shape[1]) for A in self._factors)

    def _head(self) -> Any:
        return self._core

    def __repr__(self) -> str:
        return (f"TuckerTensor(shape={self.shape}, ranks={self.ranks}, dtype={self.dtype}, "
                f"namespace={self._xp.__name__.split('.')[-1]})")

    # ------------------------------------------------------------- algebra
    def to_dense(self) -> Any:
        """The full tensor: the core multiplied by every factor (copy-free TTM chain)."""
        return ttm_chain(self._xp, self._core, list(self._factors), list(range(self.ndim)))

    def norm(self) -> Any:
        """Frobenius norm from the core and the factors' Gram matrices, never densifying.

        ``||T||^2 = <G, G x_0 (U_0^T U_0) ... x_{N-1} (U_{N-1}^T U_{N-1})>``;
        for orthonormal factors it is the core's norm. The core and every
        factor are first divided by their largest magnitude (kept apart as a
        power-of-two exponent), so no square leaves the range of the dtype
        whenever the norm itself is representable. Returns a 0-d array in the
        arrays' namespace.
        """
        xp = self._xp
        exponent = 0
        mantissa = 1.0

        def unit(A: Any) -> Any:
            nonlocal exponent, mantissa
            c = B.to_float(B.scaled_norm(xp, xp.reshape(A, (-1,))))
            if c == 0.0:
                return A
            m, e = math.frexp(c)
            exponent += e
            mantissa *= m
            return A / c

        G = unit(self._core)
        H = G
        for n, A in enumerate(self._factors):
            An = unit(A)
            H = mode_dot(xp, H, xp.matrix_transpose(An) @ An, n)
        sq = xp.sum(G * H)
        try:
            scale = math.ldexp(mantissa, exponent)
        except OverflowError:  # the norm itself is beyond the float range
            scale = math.inf
        return xp.sqrt(xp.clip(sq, 0, None)) * scale

    # ------------------------------------------------------------ interop
    def to_tensorly(self) -> Any:
        """A ``tensorly.tucker_tensor.TuckerTensor`` sharing the same arrays."""
        from tensorly.tucker_tensor import TuckerTensor as TLTuckerTensor

        return TLTuckerTensor((self._core, list(self._factors)))

    @classmethod
    def from_tensorly(cls, tucker: Any) -> TuckerTensor:
        """Build from a TensorLy ``TuckerTensor`` or a ``(core, factors)`` pair."""
        core, factors = tucker
        return cls(core, list(factors))
