"""SeKron: sequences of Kronecker products found by recursive nearest-Kronecker steps."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B
from .._validation import check_finite
from ..formats._scale import scaled_array, unscaled_product
from ..tenalg._kron import _check_group_shapes, group_modes
from ..tensors.kronecker import KroneckerTensor, SeKronTensor
from ._kronecker import _check_float_tensor, _relative

__all__ = ["SeKronResult", "sekron"]


@dataclass(frozen=True)
class SeKronResult:
    """Result of `tensorfact.sekron`.

    Attributes
    ----------
    sekron : SeKronTensor
        The nested decomposition (each factor stored once).
    level_singular_values : tuple of arrays
        For level ``s``, the singular values of the ``R_0 ... R_{s-1}``
        rearranged remainders, shape ``(R_0, ..., R_{s-1}, k_s)``, on the
        host as float64 NumPy arrays (small).
    error : float
        ``||W - sekron.to_dense()||_F``, computed exactly from the discarded
        singular values (the residuals of different levels are orthogonal).
    norm : float
        ``||W||_F``.
    rel_error : float
        ``error / ||W||_F`` (0 for a zero ``W``).

    Notes
    -----
    The error at smaller ranks is read off the stored singular values by
    `error_at` and `rel_error_at` (no recomputation).
    """

    sekron: SeKronTensor
    level_singular_values: tuple[np.ndarray, ...]
    error: float
    norm: float
    rel_error: float

    @property
    def ranks(self) -> tuple[int, ...]:
        """The level ranks of `sekron`."""
        return self.sekron.ranks

    def error_at(self, ranks: Sequence[int] | int) -> float:
        """Frobenius error of `sekron` at other level ranks, without recomputing.

        Every level of the recursion is a separate SVD per branch, so running
        `sekron` at ranks ``R' <= R`` (elementwise, ``R`` = `ranks`)
        gives the truncation of this result and the error
        ``sqrt(sum_s sum_{kept branches} sum_{i >= R'_s} s_i^2)`` is known
        from `level_singular_values`. The last level stores every
        singular value, so its rank may also exceed ``R`` (up to its maximum).

        Parameters
        ----------
        ranks : int or sequence of S - 1 ints
            ``0 <= ranks[s] <= R_s`` for ``s < S - 2``; the last one up to
            the size of its level's spectrum (an int is used for every level).

        Raises
        ------
        ValueError
            Wrong number of ranks or a rank outside those bounds.
        """
        rk = _rank_tuple(ranks, len(self.level_singular_values))
        limits = tuple(self.ranks[:-1]) + (int(self.level_singular_values[-1].shape[-1]),)
        for s, (r, lim) in enumerate(zip(rk, limits)):
            if r < 0 or r > lim:
                raise ValueError(
                    f"ranks[{s}] = {r} is outside 0 .. {lim}, the ranks whose error this "
                    "result knows"
                )
        # squares in units of a power of two near the largest value (exact): no overflow
        top = max(float(np.max(sv, initial=0.0)) for sv in self.level_singular_values)
        unit = math.ldexp(1.0, math.frexp(top)[1]) if top > 0 and math.isfinite(top) else 1.0
        total = 0.0
        for s, sv in enumerate(self.level_singular_values):
            kept = tuple(slice(0, r) for r in rk[:s])  # branches of the earlier levels kept
            total += float(np.sum((sv[kept + (slice(rk[s], None),)] / unit) ** 2))
        return math.sqrt(total) * unit

    def rel_error_at(self, ranks: Sequence[int] | int) -> float:
        """``error_at(ranks) / ||W||_F`` (0 for a zero ``W``)."""
        return _relative(self.error_at(ranks), self.norm)

    @property
    def kt(self) -> KroneckerTensor:
        """The flat `KroneckerTensor` (rank ``prod(ranks)``)."""
        return self.sekron.to_kronecker()

    @property
    def n_params(self) -> int:
        """Parameters of the nested form."""
        return self.sekron.n_params

    @property
    def compression_ratio(self) -> float:
        """Dense entries per stored parameter of the nested form."""
        return self.sekron.compression_ratio


def _rank_tuple(ranks: Any, n: int) -> tuple[Any, ...]:
    """``ranks`` as a tuple of ``n`` entries (an int is repeated); TypeError/ValueError else."""
    if isinstance(ranks, numbers.Integral) and not isinstance(ranks, bool):
        return (int(ranks),) * n
    try:
        out = tuple(ranks)
    except TypeError as exc:
        raise TypeError(f"ranks must be an int or a sequence of ints, got {ranks!r}") from exc
    if len(out) != n:
        raise ValueError(f"ranks must have {n} entries (S - 1 for S = {n + 1} shapes), got {out}")
    for s, r in enumerate(out):
        if isinstance(r, bool) or not isinstance(r, numbers.Integral):
            raise TypeError(f"ranks[{s}] must be an integer, got {r!r}")
    return tuple(int(r) for r in out)


def _batched_sign_fix(xp: ModuleType, U: Any, Vh: Any) -> tuple[Any, Any]:
    idx = xp.argmax(xp.abs(U), axis=-2)  # (Q, k)
    picked = xp.take_along_axis(U, idx[:, None, :], axis=-2)[:, 0, :]
    sgn = xp.where(picked < 0, -xp.ones_like(picked), xp.ones_like(picked))
    return U * sgn[:, None, :], Vh * sgn[:, :, None]


def sekron(
    W: Any,
    /,
    shapes: Sequence[Sequence[int]],
    ranks: Sequence[int] | int,
    *,
    check_finite: bool = True,
) -> SeKronResult:
    """Sequence-of-Kronecker-products (SeKron) approximation of an N-way tensor.

    Approximates ``W`` by

    ``sum_{r0<R0} A0[r0] ⊗ sum_{r1<R1} A1[r0,r1] ⊗ ... ⊗
    sum_{r_{S-2}} A_{S-2}[r0..r_{S-2}] ⊗ A_{S-1}[r0..r_{S-2}]``

    with ``A_s`` of shape ``shapes[s]``, recursively (Hameed et al.): the
    nearest rank-``R0`` Kronecker approximation of ``W`` with factor shapes
    ``shapes[0]`` and ``prod_{t>0} shapes[t]`` (truncated SVD of the Van Loan
    rearrangement, `nearest_kronecker`) gives ``A0`` (the
    orthonormal left singular tensors) and ``R0`` remainders ``s_r V_r``;
    each remainder is decomposed the same way with the next shape and rank,
    and so on; the last remainders are the last factors. Every level is a
    batched SVD of all remainders at once. Since the discarded parts of each
    level are orthogonal to everything kept, the error is known exactly:
    ``error^2 = sum over levels and branches of the discarded s^2``.

    When is the recursion exact? Level ``s`` sees the remainders only up to
    the rotation its SVD applies to the earlier ranks, so a tensor is
    recovered exactly at ranks ``R`` when every linear combination of its
    level-``s`` remainders has Kronecker rank ``<= R_s``. This holds for a
    *Kronecker train*
    ``sum_{r} A0[r0] ⊗ A1[r0, r1] ⊗ A2[r1, r2] ⊗ ... ⊗ A_{S-1}[r_{S-2}]``
    (each factor depends on its two neighbouring ranks only). A general nested
    tensor with independent branches and ranks ``(R0, R1, ...)`` is
    recovered at ranks ``(R0, R0 R1, ...)`` (the mixed branches add up); at
    full ranks every tensor is reproduced.

    Special cases (single-mode factor shapes: ``shapes[s]`` has the size of
    mode ``s`` in mode ``s`` and 1 elsewhere, ``S = N``), all Kronecker trains
    and so recovered exactly:

    * ``S = 2`` is exactly `nearest_kronecker`.
    * Tensor train: a TT tensor of TT ranks ``(R0, ..., R_{N-2})``,
      ``W[i] = sum_r G0[i0, r0] G1[r0, i1, r1] ... G_{N-1}[r_{N-2}, i_{N-1}]``,
      is a Kronecker train with vector factors; ranks ``(R0, ..., R_{N-2})``
      recover it (the SeKron format itself is more general than TT: its
      factor ``s`` may depend on all earlier ranks).
    * Tucker: a Tucker tensor of multilinear rank ``(T0, ..., T_{N-1})`` has
      ``a_s[r0..r_s] = U_s[:, r_s]`` for ``s < N-1`` and
      ``a_{N-1}[r0..r_{N-2}] = sum_t G[r0..r_{N-2}, t] U_{N-1}[:, t]``;
      ranks ``(T0, ..., T_{N-2})`` recover it.
    * CP: ranks ``(R, 1, ..., 1)`` give ``sum_r a0[r] ∘ a1[r] ∘ ... ∘
      a_{N-1}[r]``, a rank-``R`` CP approximation with orthonormal first
      factor (sequential SVDs, not the CP-ALS optimum); a rank-``R`` CP tensor
      is recovered exactly with ranks ``(R, ..., R)``, a rank-1 one with
      ``(1, ..., 1)``.

    Parameters
    ----------
    W : array, N >= 1 modes, real numbers
        Integers and booleans are promoted to the default float, half
        precision to float32.
    shapes : sequence of S >= 2 sequences of N ints
        Factor shapes; their elementwise product must equal ``W.shape``.
    ranks : int or sequence of S - 1 ints
        Ranks of the levels (an int is used for every level); level ``s``
        needs ``1 <= R_s <= min(prod shapes[s], prod_{t>s} prod shapes[t])``.
    check_finite : bool, default True
        Reject NaN/Inf in ``W``.

    Returns
    -------
    SeKronResult
        ``.sekron`` (`SeKronTensor`), ``.kt`` (flat
        `KroneckerTensor`), ``.error``, ``.rel_error``,
        ``.error_at(ranks)``, ``.rel_error_at(ranks)`` (smaller ranks),
        ``.n_params``, ``.compression_ratio``, ``.level_singular_values``.

    Raises
    ------
    TypeError
        ``W`` not an array of real numbers.
    ValueError
        Fewer than 2 shapes, shapes not multiplying to ``W.shape``,
        non-positive sizes, wrong number of ranks or a rank out of range.

    References
    ----------
    M. G. A. Hameed, A. Mosleh, M. S. Tahaei, V. Partovi Nia, "SeKron: A
    Decomposition Method Supporting Many Factorization Structures",
    arXiv:2210.06299, 2022.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> W = rng.standard_normal((8, 12, 3, 3))
    >>> res = sekron(W, [(2, 2, 1, 1), (2, 3, 1, 1), (2, 2, 3, 3)], ranks=(2, 3))
    >>> res.sekron.ranks, res.n_params, round(res.compression_ratio, 2)
    ((2, 3), 260, 3.32)
    >>> bool(np.isclose(res.error, np.linalg.norm(W - res.sekron.to_dense())))
    True
    """
    xp, W = _check_float_tensor(W)
    shape = tuple(int(d) for d in W.shape)
    try:
        shp_in = [tuple(sh) for sh in shapes]
    except TypeError as exc:
        raise TypeError(f"shapes must be a sequence of shape tuples, got {shapes!r}") from exc
    S = len(shp_in)
    if S < 2:
        raise ValueError(f"shapes must contain at least 2 factor shapes, got {S}")
    shp = _check_group_shapes(shape, shp_in, name="shapes", tensor="W")
    rk_in = _rank_tuple(ranks, S - 1)
    rk = []
    for s, r in enumerate(rk_in):
        pa = math.prod(shp[s])
        pb = math.prod(math.prod(sh) for sh in shp[s + 1:])
        if not 1 <= int(r) <= min(pa, pb):
            raise ValueError(
                f"ranks[{s}] = {r} is out of range: level {s} allows 1 .. "
                f"min({pa}, {pb}) = {min(pa, pb)}"
            )
        rk.append(int(r))
    if check_finite:
        _finite(W, xp)
    # solve for scale * W (a power of two, 1 for ordinary data): the squares stay finite
    Ws, scale, norm_sq = scaled_array(W, xp)
    factors = []
    svals = []
    discarded = 0.0
    rem = xp.reshape(Ws, (1,) + shape)  # (Q, *remaining shape)
    for s in range(S - 1):
        a = shp[s]
        b = tuple(math.prod(sh[n] for sh in shp[s + 1:]) for n in range(len(shape)))
        Q = int(rem.shape[0])
        M = group_modes(rem, ((Q,) + a, (1,) + b))
        M = xp.reshape(M, (Q, math.prod(a), math.prod(b)))
        U, sv, Vh = B.thin_svd(xp, M)
        R = rk[s]
        sv_host = B.to_numpy(sv).astype(np.float64)
        discarded += float(np.sum(sv_host[:, R:] ** 2))
        svals.append(sv_host.reshape(tuple(rk[:s]) + (sv_host.shape[-1],)) / scale)
        U, Vh = _batched_sign_fix(xp, U[:, :, :R], Vh[:, :R, :])
        A = xp.reshape(xp.permute_dims(U, (0, 2, 1)), tuple(rk[: s + 1]) + a)
        factors.append(A)
        rem = xp.reshape(sv[:, :R, None] * Vh, (Q * R,) + b)
    factors.append(xp.reshape(rem, tuple(rk) + shp[-1]))
    tensor = SeKronTensor(unscaled_product(xp, factors, scale) if scale != 1.0 else factors, rk)
    error, norm = math.sqrt(max(discarded, 0.0)), math.sqrt(norm_sq)
    return SeKronResult(
        sekron=tensor,
        level_singular_values=tuple(svals),
        error=error / scale,
        norm=norm / scale,
        rel_error=_relative(error, norm),  # from the scaled values: exact for subnormal data
    )


def _finite(W: Any, xp: ModuleType) -> None:
    check_finite(W, xp, name="W")
