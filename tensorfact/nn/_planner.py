"""The one planner of the Kronecker-structured layers: factor shapes and ranks for a weight.

Every structured layer (`KroneckerLinear`, `KroneckerEmbedding`,
`GKPDConv2d`, `SeKronConv2d`) and `compress` choose their
factorisation here, in four steps:

1. candidate factor shapes: the given ``shapes``, or every nontrivial
   ``n_factors``-factor split of the weight's modes from
   `tensorfact.kronecker_shapes`;
2. ranks per candidate: the largest uniform rank within the parameter budget
   of a ``compression`` target (counted by
   `tensorfact.SeKronTensor.n_params_for`), the requested ``rank``
   (capped at each level's maximum), or full rank;
3. a short list, ordered by the cost model of the product the layer computes
   (``product="matmul"``: `tensorfact.kron_matmul`; ``product="conv"``:
   the chain of convolutions of `kronecker_conv2d`);
4. the candidate with the smallest optimal error is decomposed by
   `tensorfact.nearest_kronecker` (two factors) or
   `tensorfact.sekron`, in float64 on the host.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from torch import Tensor

from .._validation import check_int_sequence
from ..decomposition import kronecker_shapes, nearest_kronecker, sekron
from ..tenalg import rearrange
from ..tensors import SeKronTensor
from ._common import check_compression, check_count, host_float64, to_torch

__all__ = ["KroneckerFit", "KroneckerPlan", "fit_kronecker", "level_max_ranks",
           "matmul_candidates", "plan_kronecker"]

Shapes = tuple[tuple[int, ...], ...]
_Option = tuple[Shapes, tuple[int, ...]]


@dataclass(frozen=True)
class KroneckerPlan:
    """Factor shapes, ranks and optimal error of a Kronecker-structured weight.

    Attributes
    ----------
    shapes : tuple of tuple of int
        The ``S`` factor shapes, outermost first; their elementwise product
        is the weight's shape (for `KroneckerEmbedding`, of the table
        padded to ``p1 p2`` rows).
    ranks : tuple of int
        ``(R,)`` for a sum of ``R`` Kronecker products (two factors); the
        SeKron level ranks ``(R_0, ..., R_{S-2})`` otherwise.
    rel_error : float
        ``||W - W_approx||_F / ||W||_F`` reported by
        `tensorfact.nearest_kronecker` / `tensorfact.sekron` for
        these shapes and ranks (optimal for two factors), which the layer
        attains.
    n_params : int
        Parameters of the factors (`tensorfact.SeKronTensor.n_params`).
    """

    shapes: Shapes
    ranks: tuple[int, ...]
    rel_error: float
    n_params: int

    @property
    def n_factors(self) -> int:
        """Number of factors ``S``."""
        return len(self.shapes)

    @property
    def rank(self) -> int:
        """Kronecker terms of the expanded sum, ``prod(ranks)`` (``R`` for two factors)."""
        return math.prod(self.ranks)

    @property
    def a_shape(self) -> tuple[int, ...]:
        """Shape of the first factor of a two-factor plan."""
        return self._pair()[0]

    @property
    def b_shape(self) -> tuple[int, ...]:
        """Shape of the second factor of a two-factor plan."""
        return self._pair()[1]

    def _pair(self) -> Shapes:
        if len(self.shapes) != 2:
            raise AttributeError(
                f"a_shape / b_shape exist for two-factor plans; this one has {len(self.shapes)} "
                "factors (see shapes)")
        return self.shapes

    @property
    def detail(self) -> str:
        """Shapes and ranks in a few words (the ``detail`` column of a compression report)."""
        text = "x".join(str(sh) for sh in self.shapes)
        if len(self.ranks) == 1:
            return f"{text} rank {self.ranks[0]}"
        return f"{text} ranks {self.ranks}"


@dataclass(frozen=True)
class KroneckerFit:
    """A plan and its factors (float64 host arrays in the layout of `SeKronTensor`)."""

    plan: KroneckerPlan
    factors: tuple[np.ndarray, ...]

    def tensors(self, like: Tensor) -> list[Tensor]:
        """The factors as tensors on ``like``'s device, in its dtype."""
        return [to_torch(f, device=like.device, dtype=like.dtype) for f in self.factors]


# --------------------------------------------------------------------------- #
# shapes and ranks
# --------------------------------------------------------------------------- #
def check_shapes(shapes: Any, shape: tuple[int, ...], n_factors: int | None = None) -> Shapes:
    """Factor shapes (one int per mode of ``shape``) whose elementwise product is ``shape``."""
    try:
        out = tuple(tuple(int(v) for v in sh) for sh in shapes)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"shapes must be a sequence of shapes (tuples of ints), got {shapes!r}"
                        ) from exc
    if n_factors is not None and len(out) != n_factors:
        raise ValueError(f"shapes must contain {n_factors} factor shapes, got {len(out)}")
    if len(out) < 2:
        raise ValueError(f"shapes must contain at least 2 factor shapes, got {len(out)}")
    for s, sh in enumerate(out):
        if len(sh) != len(shape) or min(sh) < 1:
            raise ValueError(
                f"shapes[{s}] must be {len(shape)} positive ints (one per mode of the weight), "
                f"got {sh}")
    prod = tuple(math.prod(sh[m] for sh in out) for m in range(len(shape)))
    if prod != shape:
        raise ValueError(f"shapes {out} multiply to {prod}, not to the weight shape {shape}")
    return out


def check_ranks(rank: Any, n_levels: int) -> tuple[int, ...] | None:
    """``rank`` (an int for every level, or one per level) as a tuple of positive ints."""
    if rank is None:
        return None
    if isinstance(rank, numbers.Integral) and not isinstance(rank, bool):
        rank = (rank,) * n_levels
    return check_int_sequence(rank, "rank", length=n_levels)


def level_max_ranks(shapes: Sequence[Sequence[int]]) -> tuple[int, ...]:
    """Largest rank of each level: ``min(prod shapes[s], prod_{t>s} prod shapes[t])``."""
    sizes = [math.prod(sh) for sh in shapes]
    return tuple(min(sizes[s], math.prod(sizes[s + 1:])) for s in range(len(sizes) - 1))


def _ranks_for_budget(shapes: Shapes, budget: float) -> tuple[int, ...]:
    """Largest uniform rank (capped per level) with at most ``budget`` parameters; () if none."""
    cap = level_max_ranks(shapes)
    best: tuple[int, ...] = ()
    r = 1
    while True:
        ranks = tuple(min(r, c) for c in cap)
        if SeKronTensor.n_params_for(shapes, ranks) > budget:
            return best
        best = ranks
        if all(r >= c for c in cap):
            return best
        r += 1


# --------------------------------------------------------------------------- #
# which candidates to compare: the cost model of each kind of product
# --------------------------------------------------------------------------- #
def _matmul_key(shapes: Shapes) -> tuple[int, float]:
    # parameters per rank (balanced rearranged matrices allow the largest rank per
    # parameter), then squareness (Shapeshifter's choice; avoids the (1, n) x (m, 1)
    # split, a plain low-rank factorization)
    return (sum(math.prod(sh) for sh in shapes),
            sum(abs(math.log(sh[0] / sh[1])) for sh in shapes))


def _short_list_matmul(options: list[_Option], shape: tuple[int, ...], max_candidates: int,
                       target: bool) -> list[_Option]:
    """For `kron_matmul`: the most balanced shapes; one unless there is a target."""
    ordered = sorted(options, key=lambda o: _matmul_key(o[0]))
    return ordered[: max_candidates if target else 1]


def chain_cost(shapes: Sequence[Sequence[int]], ranks: Sequence[int]) -> tuple[int, int]:
    """Multiply-adds and largest intermediate (channels) per output pixel of the conv chain.

    At stride 1, ignoring borders: stage ``s`` costs
    ``prod_{t<s} I_t * prod_{t>=s} O_t * R_0..R_s * I_s * kh_s kw_s`` (the last
    stage uses ``R_0..R_{S-2}``) and leaves
    ``prod_{t<s} I_t * R_0..R_{s-1} * prod_{t>=s} O_t`` channels.
    """
    S = len(shapes)
    flops = 0
    inter = 0
    for s in range(S):
        q = math.prod(ranks[: min(s, S - 2) + 1])
        before = math.prod(sh[1] for sh in shapes[:s])
        after = math.prod(sh[0] for sh in shapes[s:])
        flops += before * after * q * shapes[s][1] * shapes[s][2] * shapes[s][3]
        inter = max(inter, before * math.prod(ranks[:s]) * after
                    if s < S - 1 else before * q * shapes[s][0])
    return flops, inter


def _short_list_conv(options: list[_Option], shape: tuple[int, ...], max_candidates: int,
                     target: bool) -> list[_Option]:
    """For the convolution chain: cheaper than dense, narrow intermediates, most expressive.

    Keeps structures whose chain costs at most the dense convolution's
    multiply-adds and whose intermediate results stay within 4x the layer's
    width (if any; else the cheapest), then orders by total rank (largest
    first) and multiply-adds.
    """
    costs = [chain_cost(sh, ranks) for sh, ranks in options]
    size, width = math.prod(shape), max(shape[0], shape[1])
    ok = [i for i, (f, m) in enumerate(costs) if f <= size and m <= 4 * width]
    if not ok:
        ok = sorted(range(len(options)), key=lambda i: costs[i])[:max_candidates]
    ok.sort(key=lambda i: (-math.prod(options[i][1]), costs[i][0]))
    return [options[i] for i in ok[:max_candidates]]


_SHORT_LIST: dict[str, Callable[[list[_Option], tuple[int, ...], int, bool], list[_Option]]] = {
    "matmul": _short_list_matmul, "conv": _short_list_conv,
}


def matmul_candidates(shape: Sequence[int]) -> list[Shapes]:
    """All nontrivial two-factor shapes of a matrix, most balanced first (the matmul order)."""
    cands = kronecker_shapes(tuple(shape), n_factors=2, max_candidates=None)
    return sorted((c.shapes for c in cands), key=_matmul_key)


# --------------------------------------------------------------------------- #
# the planner
# --------------------------------------------------------------------------- #
def _options(W: np.ndarray, n_factors: int, rank: Any, compression: Any, shapes: Any
             ) -> tuple[list[_Option], float | None]:
    shape = tuple(int(d) for d in W.shape)
    if rank is not None and compression is not None:
        raise ValueError("give rank or compression, not both")
    target = None if compression is None else check_compression(compression)
    rk = check_ranks(rank, n_factors - 1)
    if shapes is not None:
        cands = [check_shapes(shapes, shape, n_factors)]
    else:
        cands = [c.shapes for c in kronecker_shapes(shape, n_factors=n_factors,
                                                    max_candidates=None)]
        if not cands:
            raise ValueError(f"a weight of shape {shape} has no nontrivial {n_factors}-factor "
                             "Kronecker structure")
    options: list[_Option] = []
    for sh in cands:
        cap = level_max_ranks(sh)
        if target is not None:
            ranks = _ranks_for_budget(sh, math.prod(shape) / target)
            if not ranks:
                continue
        elif rk is not None:
            ranks = tuple(min(r, c) for r, c in zip(rk, cap))
        else:
            ranks = cap
        options.append((sh, ranks))
    if not options:
        raise ValueError(
            f"no {n_factors}-factor Kronecker structure of a weight of shape {shape} reaches "
            f"compression {target:g} (rank 1 already has more parameters)")
    return options, target


def _two_factor_error(W: np.ndarray, shapes: Shapes, rank: int) -> float:
    """The optimal relative error `nearest_kronecker` reports, from singular values only.

    Eckart–Young on the Van Loan rearrangement: ``sqrt(sum_{i>=R} s_i^2 / sum s_i^2)``.
    """
    s = np.linalg.svd(rearrange(W, shapes[0], shapes[1]), compute_uv=False)
    total = float(np.sum(s**2))
    return math.sqrt(float(np.sum(s[rank:] ** 2)) / total) if total > 0 else 0.0


def _decompose(W: np.ndarray, shapes: Shapes, ranks: tuple[int, ...]) -> KroneckerFit:
    if len(shapes) == 2:
        res = nearest_kronecker(W, shapes[0], shapes[1], rank=ranks[0])
        err, facs = res.rel_error, res.kt.factors
    else:
        sres = sekron(W, shapes, ranks)
        err, facs = sres.rel_error, sres.sekron.factors
    plan = KroneckerPlan(shapes=shapes, ranks=ranks, rel_error=float(err),
                         n_params=SeKronTensor.n_params_for(shapes, ranks))
    return KroneckerFit(plan=plan, factors=tuple(np.asarray(f) for f in facs))


def fit_kronecker(weight: Any, /, *, product: str = "matmul", n_factors: int = 2,
                  rank: Any = None, compression: float | None = None, shapes: Any = None,
                  max_candidates: int = 4) -> KroneckerFit:
    """Choose factor shapes and ranks for ``weight`` and compute the optimal factors.

    Parameters
    ----------
    weight : torch.Tensor or array
        The dense weight (read as a float64 host copy).
    product : {"matmul", "conv"}
        The product the layer computes, whose cost model short-lists the
        candidate shapes (see the module docstring): ``"matmul"`` keeps the
        ``max_candidates`` most balanced shapes (only the first without a
        compression target); ``"conv"`` the ``max_candidates`` cheapest
        expressive chains.
    n_factors : int, default 2
        Number of Kronecker factors ``S`` (more than 2: SeKron).
    rank : int or sequence of S - 1 ints, optional
        Ranks (each capped at its level's maximum).
    compression : float, optional
        Target ratio of weight entries to factor parameters: the largest
        uniform rank within the budget. With neither ``rank`` nor
        ``compression`` every level has full rank (exact reproduction).
    shapes : sequence of S shapes, optional
        Factor shapes; chosen among the candidates when omitted.
    max_candidates : int, default 4
        Candidates compared (one SVD of the rearranged weight each for two
        factors, one `tensorfact.sekron` each otherwise).

    Returns
    -------
    KroneckerFit
        The `KroneckerPlan` with the smallest optimal error among the
        compared candidates (the first one on ties) and its factors.

    Raises
    ------
    ValueError
        Both ``rank`` and ``compression``, bad shapes or ranks, no nontrivial
        structure, or a compression target no candidate reaches.
    """
    if product not in _SHORT_LIST:
        raise ValueError(f"product must be one of {sorted(_SHORT_LIST)}, got {product!r}")
    S = check_count(n_factors, "n_factors")
    if S < 2:
        raise ValueError(f"n_factors must be >= 2, got {n_factors!r}")
    n_cands = check_count(max_candidates, "max_candidates")
    W = host_float64(weight)
    options, target = _options(W, S, rank, compression, shapes)
    if shapes is None:
        options = _SHORT_LIST[product](options, tuple(W.shape), n_cands, target is not None)
    if len(options) == 1:
        return _decompose(W, *options[0])
    best: tuple[float, _Option, KroneckerFit | None] | None = None
    for sh, ranks in options:
        fit = None if S == 2 else _decompose(W, sh, ranks)
        err = _two_factor_error(W, sh, ranks[0]) if fit is None else fit.plan.rel_error
        if best is None or err < best[0]:
            best = (err, (sh, ranks), fit)
    if best is None:  # pragma: no cover - options is never empty
        raise RuntimeError("no candidate factorisation")
    return best[2] if best[2] is not None else _decompose(W, *best[1])


def plan_kronecker(weight: Any, /, *, product: str = "matmul", n_factors: int = 2,
                   rank: Any = None, compression: float | None = None, shapes: Any = None,
                   max_candidates: int = 4) -> KroneckerPlan:
    """The plan of `fit_kronecker` (same arguments), without the factors."""
    return fit_kronecker(weight, product=product, n_factors=n_factors, rank=rank,
                         compression=compression, shapes=shapes,
                         max_candidates=max_candidates).plan
