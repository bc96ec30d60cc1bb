"""Kronecker-factored linear and embedding layers (Shapeshifter / GKPD).

The weight of :class:`KroneckerLinear` is ``W = sum_r A_r ⊗ B_r`` and is never
formed: the forward pass multiplies by the factors one mode at a time
(:func:`tensorfact.kron_matmul`, in the cheaper contraction order). Layers are
initialised from pretrained dense layers by the nearest sum of Kronecker
products (:func:`tensorfact.nearest_kronecker`, Van Loan–Pitsianis), which is
optimal in the Frobenius norm for the chosen shapes and rank.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

from ._common import dense_linear

__all__ = [
    "KroneckerEmbedding", "KroneckerLinear", "KroneckerPlan", "fit_kronecker", "plan_kronecker",
]


# --------------------------------------------------------------------------- #
# choosing shapes and rank
# --------------------------------------------------------------------------- #
@dataclass(frozen=True)
class KroneckerPlan:
    """Shapes, rank and optimal error of a Kronecker approximation of a matrix.

    Attributes
    ----------
    a_shape, b_shape : tuple of int
        Shapes ``(m1, n1)`` and ``(m2, n2)`` of the factors, ``W`` being
        ``(m1 * m2, n1 * n2)``.
    rank : int
        Number of Kronecker terms.
    rel_error : float
        ``||W - sum_r A_r ⊗ B_r||_F / ||W||_F`` of the best such sum (the
        tail of the singular values of the rearranged matrix). Exact (float64,
        from :func:`tensorfact.nearest_kronecker`) in the plans of layers
        built by ``from_linear`` / :func:`fit_kronecker`; in a bare
        :func:`plan_kronecker` result it is the float32 estimate used to
        rank candidates, or NaN when there was only one candidate.
    n_params : int
        ``rank * (m1 * n1 + m2 * n2)``.
    """

    a_shape: tuple[int, int]
    b_shape: tuple[int, int]
    rank: int
    rel_error: float
    n_params: int


def _divisors(n: int) -> list[int]:
    return [d for d in range(1, n + 1) if n % d == 0]


def _candidate_shapes(shape: tuple[int, int], max_candidates: int
                      ) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """The most balanced factor shapes ``((m1, n1), (m2, n2))``, both factors nontrivial.

    Candidates come from :func:`tensorfact.kronecker_shapes`; they are ranked
    by ``m1 n1 + m2 n2`` (balanced rearranged matrices allow the largest rank
    per parameter), then by how square the factors are (Shapeshifter's
    choice; it also avoids the degenerate ``(1, n) x (m, 1)`` split, which is
    a plain low-rank factorization).
    """
    from .. import kronecker_shapes

    out = []
    for c in kronecker_shapes(shape, n_factors=2, max_candidates=None):
        a, b = c.shapes
        out.append(((int(a[0]), int(a[1])), (int(b[0]), int(b[1]))))

    def key(c: tuple[tuple[int, int], tuple[int, int]]) -> tuple[int, float]:
        (m1, n1), (m2, n2) = c
        return (m1 * n1 + m2 * n2, abs(math.log(m1 / n1)) + abs(math.log(m2 / n2)))

    out.sort(key=key)
    return out[:max_candidates]


def _singular_values(W: np.ndarray, a_shape: tuple[int, int], b_shape: tuple[int, int]
                     ) -> np.ndarray:
    """Singular values of the rearranged matrix, in float32 (only used to rank candidates)."""
    from .. import rearrange

    M = rearrange(W.astype(np.float32), a_shape, b_shape)
    return np.linalg.svd(M, compute_uv=False).astype(np.float64)


def _tail_error(s: np.ndarray, rank: int) -> float:
    total = float(np.sum(s**2))
    if total == 0.0:
        return 0.0
    return math.sqrt(max(float(np.sum(s[rank:] ** 2)), 0.0) / total)


def plan_kronecker(weight: Any, /, *, compression: float | None = None,
                   rank: int | None = None,
                   shapes: Sequence[Sequence[int]] | None = None,
                   max_candidates: int = 4) -> KroneckerPlan:
    """Choose factor shapes and rank for approximating a matrix by ``sum_r A_r ⊗ B_r``.

    Parameters
    ----------
    weight : array of shape ``(m, n)``
        NumPy array or torch tensor (read on the host, small matrices only).
    compression : float, optional
        Target ratio ``m n / (rank (m1 n1 + m2 n2))``: the rank is the largest
        one whose parameter count is at most ``m n / compression``. Among the
        candidate shapes, the one with the smallest optimal error is chosen.
    rank : int, optional
        Fixed number of terms (capped at the full Kronecker rank
        ``min(m1 n1, m2 n2)``). With neither ``rank`` nor ``compression`` the
        full rank is used (exact reproduction).
    shapes : pair of pairs, optional
        ``((m1, n1), (m2, n2))``; chosen among balanced factorizations when
        omitted.
    max_candidates : int, default 4
        Number of candidate shapes compared when ``shapes`` is omitted and a
        compression target is given (one SVD of the rearranged matrix each).

    Returns
    -------
    KroneckerPlan
        See :class:`KroneckerPlan` for the meaning of its ``rel_error`` here.

    Raises
    ------
    ValueError
        Both ``rank`` and ``compression`` given, a bad shape, or a compression
        target no Kronecker sum meets (not even rank 1).
    """
    W = weight.detach().cpu().double().numpy() if isinstance(weight, Tensor) else np.asarray(
        weight, dtype=np.float64)
    if W.ndim != 2:
        raise ValueError(f"weight must be a matrix, got shape {W.shape}")
    if rank is not None and compression is not None:
        raise ValueError("give rank or compression, not both")
    if rank is not None and (isinstance(rank, bool) or int(rank) < 1):
        raise ValueError(f"rank must be a positive integer, got {rank!r}")
    if compression is not None and not float(compression) > 0:
        raise ValueError(f"compression must be positive, got {compression!r}")
    m, n = W.shape
    if shapes is not None:
        try:
            a, b = (tuple(int(v) for v in s) for s in shapes)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"shapes must be ((m1, n1), (m2, n2)), got {shapes!r}") from exc
        if len(a) != 2 or len(b) != 2 or a[0] * b[0] != m or a[1] * b[1] != n:
            raise ValueError(
                f"shapes {shapes!r} do not multiply to the weight shape {(m, n)}"
            )
        cands = [((a[0], a[1]), (b[0], b[1]))]
    else:
        cands = _candidate_shapes((m, n), max_candidates if compression is not None else 1)
        if not cands:
            raise ValueError(f"a {m} x {n} matrix has no nontrivial Kronecker factorization")
    best: KroneckerPlan | None = None
    for a_shape, b_shape in cands:
        per_rank = a_shape[0] * a_shape[1] + b_shape[0] * b_shape[1]
        full = min(a_shape[0] * a_shape[1], b_shape[0] * b_shape[1])
        if compression is not None:
            r = min(int(m * n / float(compression) // per_rank), full)
            if r < 1:
                continue
        else:
            r = full if rank is None else min(int(rank), full)
        if len(cands) == 1:  # nothing to compare: the caller's decomposition gives the error
            return KroneckerPlan(a_shape, b_shape, r, math.nan, r * per_rank)
        s = _singular_values(W, a_shape, b_shape)
        plan = KroneckerPlan(a_shape, b_shape, r, _tail_error(s, r), r * per_rank)
        if best is None or plan.rel_error < best.rel_error:
            best = plan
    if best is None:
        raise ValueError(
            f"no Kronecker factorization of a {m} x {n} matrix reaches compression "
            f"{compression} (a rank-1 term has more parameters)"
        )
    return best


# --------------------------------------------------------------------------- #
# helpers
# --------------------------------------------------------------------------- #
def _init_factor_std(fan_in: int, rank: int) -> float:
    # Var(W_ij) = rank * std^4 = 1 / (3 fan_in), the variance of nn.Linear's default init
    return (1.0 / (3.0 * fan_in * rank)) ** 0.25


def _kron_dense(A: Tensor, B: Tensor) -> Tensor:
    """``sum_r kron(A[r], B[r])`` for ``A`` (R, m1, n1) and ``B`` (R, m2, n2)."""
    R, m1, n1 = A.shape
    _, m2, n2 = B.shape
    W = torch.einsum("rac,rbd->abcd", A, B)
    return W.reshape(m1 * m2, n1 * n2)


def fit_kronecker(weight: Tensor, /, *, compression: float | None = None,
                  rank: int | None = None, shapes: Sequence[Sequence[int]] | None = None,
                  max_candidates: int = 4) -> tuple[KroneckerPlan, Tensor, Tensor]:
    """Plan (:func:`plan_kronecker`) and compute the optimal factors of a matrix.

    The factors come from :func:`tensorfact.nearest_kronecker` on a float64
    host copy and are returned in ``weight``'s dtype and device; the plan's
    ``rel_error`` is the one that decomposition reports.
    """
    from .. import nearest_kronecker

    plan = plan_kronecker(weight, compression=compression, rank=rank, shapes=shapes,
                          max_candidates=max_candidates)
    W = weight.detach().cpu().double().numpy()
    res = nearest_kronecker(W, plan.a_shape, plan.b_shape, rank=plan.rank)
    plan = replace(plan, rel_error=float(res.rel_error))
    A, B = (np.asarray(f) for f in res.kt.factors)
    dev, dt = weight.device, weight.dtype
    return (plan, torch.as_tensor(A, dtype=dt, device=dev).contiguous(),
            torch.as_tensor(B, dtype=dt, device=dev).contiguous())


# --------------------------------------------------------------------------- #
# KroneckerLinear
# --------------------------------------------------------------------------- #
class KroneckerLinear(nn.Module):
    r"""Linear layer whose weight is a sum of Kronecker products.

    ``y = x W^T + b`` with ``W = sum_{r<R} A_r ⊗ B_r``, ``A_r`` of shape
    ``(m1, n1)`` and ``B_r`` of shape ``(m2, n2)``, ``out_features = m1 m2``,
    ``in_features = n1 n2``. The product with ``W`` is computed mode by mode
    by :func:`tensorfact.kron_matmul` without forming ``W``: for square
    factors of side ``sqrt(n)`` it costs ``2 R n^{1.5}`` multiplies per row
    instead of ``n^2``.

    Parameters
    ----------
    in_features, out_features : int
    a_shape : (int, int)
        ``(m1, n1)``; must divide ``(out_features, in_features)``.
    rank : int, default 1
    bias : bool, default True
    device, dtype : optional
        As for :class:`torch.nn.Linear`.

    Attributes
    ----------
    kron_a : Parameter of shape ``(rank, m1, n1)``
    kron_b : Parameter of shape ``(rank, m2, n2)``
    bias : Parameter of shape ``(out_features,)`` or None

    References
    ----------
    A. Panahi, S. Saeedi, T. Arodz, "Shapeshifter: a parameter-efficient
    transformer using factorized reshaped matrices", NeurIPS 2021.
    M. G. A. Hameed et al., "Convolutional neural network compression through
    generalized Kronecker product decomposition", AAAI 2022.

    Examples
    --------
    >>> import torch
    >>> layer = KroneckerLinear(16, 8, a_shape=(2, 4), rank=2)
    >>> layer(torch.ones(3, 16)).shape
    torch.Size([3, 8])
    >>> layer.n_params == 2 * (2 * 4 + 4 * 4) + 8
    True
    >>> dense = layer.to_dense()
    >>> bool(torch.allclose(dense(torch.ones(3, 16)), layer(torch.ones(3, 16)), atol=1e-6))
    True
    """

    def __init__(self, in_features: int, out_features: int, *, a_shape: Sequence[int],
                 rank: int = 1, bias: bool = True, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        in_features, out_features = int(in_features), int(out_features)
        if in_features < 1 or out_features < 1:
            raise ValueError(
                f"in_features and out_features must be positive, got {in_features}, "
                f"{out_features}"
            )
        a = tuple(int(v) for v in a_shape)
        if len(a) != 2 or a[0] < 1 or a[1] < 1:
            raise ValueError(f"a_shape must be two positive ints, got {a_shape!r}")
        if out_features % a[0] or in_features % a[1]:
            raise ValueError(
                f"a_shape {a} must divide (out_features, in_features) = "
                f"{(out_features, in_features)}"
            )
        if isinstance(rank, bool) or int(rank) < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        rank = int(rank)
        b = (out_features // a[0], in_features // a[1])
        self.in_features, self.out_features, self.rank = in_features, out_features, rank
        self.a_shape, self.b_shape = (a[0], a[1]), b
        #: set by :meth:`from_linear`: shapes, rank and optimal error of the initialisation
        self.plan: KroneckerPlan | None = None
        kw = {"device": device, "dtype": dtype}
        self.kron_a = nn.Parameter(torch.empty((rank, *a), **kw))  # type: ignore[arg-type]
        self.kron_b = nn.Parameter(torch.empty((rank, *b), **kw))  # type: ignore[arg-type]
        if bias:
            self.bias: nn.Parameter | None = nn.Parameter(
                torch.empty(out_features, **kw))  # type: ignore[arg-type]
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random factors with the weight variance of :class:`torch.nn.Linear`."""
        std = _init_factor_std(self.in_features, self.rank)
        with torch.no_grad():
            nn.init.normal_(self.kron_a, std=std)
            nn.init.normal_(self.kron_b, std=std)
            if self.bias is not None:
                bound = 1.0 / math.sqrt(self.in_features)
                nn.init.uniform_(self.bias, -bound, bound)

    # -- constructors ------------------------------------------------------ #
    @classmethod
    def from_linear(cls, linear: nn.Linear, /, *, rank: int | None = None,
                    compression: float | None = None,
                    shapes: Sequence[Sequence[int]] | None = None,
                    max_candidates: int = 4) -> KroneckerLinear:
        """Initialise from a dense layer by the nearest sum of Kronecker products.

        Parameters
        ----------
        linear : torch.nn.Linear
            Pretrained layer (left unchanged); its dtype and device are kept
            and its bias is copied.
        rank : int, optional
            Number of Kronecker terms (capped at the full rank
            ``min(m1 n1, m2 n2)``).
        compression : float, optional
            Target ratio of weight parameters (dense / factored); the rank is
            the largest meeting it and the shapes the best of a few candidates
            (see :func:`plan_kronecker`). With neither ``rank`` nor
            ``compression`` the full rank is used and the layer reproduces
            ``linear`` exactly (up to rounding).
        shapes : ((m1, n1), (m2, n2)), optional
            Factor shapes; chosen by :func:`tensorfact.kronecker_shapes` when
            omitted.
        max_candidates : int, default 4
            Candidate shapes compared with a compression target.

        Returns
        -------
        KroneckerLinear
            Its attribute ``plan`` (:class:`KroneckerPlan`) records the shapes,
            rank and the optimal relative error ``||W - W_R|| / ||W||``, which
            the layer attains.

        Raises
        ------
        TypeError
            ``linear`` is not a :class:`torch.nn.Linear`.
        ValueError
            Bad ``rank``/``compression``/``shapes``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        W = linear.weight
        plan, A, B = fit_kronecker(W, compression=compression, rank=rank, shapes=shapes,
                                   max_candidates=max_candidates)
        layer = cls(linear.in_features, linear.out_features, a_shape=plan.a_shape,
                    rank=plan.rank, bias=linear.bias is not None, device=W.device,
                    dtype=W.dtype)
        with torch.no_grad():
            layer.kron_a.copy_(A)
            layer.kron_b.copy_(B)
            if linear.bias is not None and layer.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.plan = plan
        return layer

    # -- computation ------------------------------------------------------- #
    #: ``"factored"`` (default): never form ``W``; ``"auto"``: form ``W`` when that is
    #: cheaper in multiplies (``R m n + N m n`` against the factored cost), which
    #: happens for high-rank sums at low compression and large batches
    forward_mode: str = "factored"

    def factored_cost(self, n_rows: int) -> int:
        """Multiplies of the factored product for ``n_rows`` input rows (best order)."""
        (m1, n1), (m2, n2) = self.a_shape, self.b_shape
        return n_rows * self.rank * min(m2 * n1 * (n2 + m1), m1 * n2 * (n1 + m2))

    def forward(self, x: Tensor) -> Tensor:
        """``x W^T + b``; without forming ``W`` unless ``forward_mode="auto"`` says so."""
        from .. import kron_matmul

        if self.forward_mode not in ("factored", "auto"):
            raise ValueError(
                f"forward_mode must be 'factored' or 'auto', got {self.forward_mode!r}")
        if self.forward_mode == "auto":
            n_rows = x.numel() // max(self.in_features, 1)
            mn = self.in_features * self.out_features
            if self.rank * mn + n_rows * mn < self.factored_cost(n_rows):
                return F.linear(x, self.weight(), self.bias)
        a: Tensor = self.kron_a
        b: Tensor = self.kron_b
        if not torch.is_grad_enabled():
            # without autograd, plain tensors let torch.matmul fold the batch into one GEMM
            # (it keeps a slower batched path for operands that require grad)
            a, b = a.detach(), b.detach()
        y = kron_matmul(x, (a, b))
        if self.bias is not None:
            # y is a fresh tensor: add in place when no graph is recorded (saves a copy)
            y = y.add_(self.bias) if not y.requires_grad else y + self.bias
        return y

    def weight(self) -> Tensor:
        """The dense weight ``sum_r A_r ⊗ B_r`` (formed on demand; differentiable)."""
        return _kron_dense(self.kron_a, self.kron_b)

    def to_dense(self) -> nn.Linear:
        """The equivalent :class:`torch.nn.Linear` (a new layer; weights copied)."""
        with torch.no_grad():
            return dense_linear(self.weight(), self.bias)

    @property
    def n_params(self) -> int:
        """Number of parameters: ``rank (m1 n1 + m2 n2)`` (+ ``out_features`` with bias)."""
        return sum(p.numel() for p in self.parameters())

    @property
    def compression(self) -> float:
        """Dense weight parameters divided by factored ones (biases excluded)."""
        return self.in_features * self.out_features / (self.kron_a.numel() + self.kron_b.numel())

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"a_shape={self.a_shape}, b_shape={self.b_shape}, rank={self.rank}, "
                f"bias={self.bias is not None}")


# --------------------------------------------------------------------------- #
# KroneckerEmbedding
# --------------------------------------------------------------------------- #
class KroneckerEmbedding(nn.Module):
    r"""Embedding table stored as a sum of Kronecker products.

    The table ``E = sum_r A_r ⊗ B_r`` has ``p1 p2 >= num_embeddings`` rows
    (rows past ``num_embeddings`` are padding and never looked up) and
    ``q1 q2 = embedding_dim`` columns. Row ``i`` is
    ``sum_r kron(A_r[i // p2], B_r[i % p2])``, computed for the looked-up
    indices only; the table is never formed.

    Parameters
    ----------
    num_embeddings, embedding_dim : int
    a_shape : (int, int)
        ``(p1, q1)``; ``q1`` must divide ``embedding_dim``.
    b_rows : int, optional
        ``p2``, with ``p1 p2 >= num_embeddings``; default
        ``ceil(num_embeddings / p1)``.
    rank : int, default 1
    padding_idx : int, optional
        Accepted for API parity with :class:`torch.nn.Embedding`; recorded and
        copied to ``to_dense()`` (its row is not forced to zero).
    device, dtype : optional

    References
    ----------
    A. Panahi, S. Saeedi, T. Arodz, "Shapeshifter: a parameter-efficient
    transformer using factorized reshaped matrices", NeurIPS 2021.

    Examples
    --------
    >>> import torch
    >>> emb = KroneckerEmbedding(100, 12, a_shape=(10, 3), rank=2)
    >>> emb(torch.tensor([[0, 5, 99]])).shape
    torch.Size([1, 3, 12])
    >>> idx = torch.tensor([7, 42])
    >>> bool(torch.allclose(emb(idx), emb.to_dense()(idx)))
    True
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, a_shape: Sequence[int],
                 b_rows: int | None = None, rank: int = 1, padding_idx: int | None = None,
                 device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        num, dim = int(num_embeddings), int(embedding_dim)
        if num < 1 or dim < 1:
            raise ValueError(
                f"num_embeddings and embedding_dim must be positive, got {num}, {dim}")
        a = tuple(int(v) for v in a_shape)
        if len(a) != 2 or a[0] < 1 or a[1] < 1:
            raise ValueError(f"a_shape must be two positive ints, got {a_shape!r}")
        if dim % a[1]:
            raise ValueError(f"a_shape[1] = {a[1]} must divide embedding_dim = {dim}")
        if isinstance(rank, bool) or int(rank) < 1:
            raise ValueError(f"rank must be a positive integer, got {rank!r}")
        rank = int(rank)
        p2 = -(-num // a[0]) if b_rows is None else int(b_rows)
        if a[0] * p2 < num:
            raise ValueError(f"a_shape[0] * b_rows = {a[0] * p2} < num_embeddings = {num}")
        b = (p2, dim // a[1])
        self.num_embeddings, self.embedding_dim, self.rank = num, dim, rank
        self.padding_idx = padding_idx
        self.a_shape, self.b_shape = (a[0], a[1]), b
        #: set by :meth:`from_embedding`: shapes, rank and optimal error of the initialisation
        self.plan: KroneckerPlan | None = None
        kw = {"device": device, "dtype": dtype}
        self.kron_a = nn.Parameter(torch.empty((rank, *a), **kw))  # type: ignore[arg-type]
        self.kron_b = nn.Parameter(torch.empty((rank, *b), **kw))  # type: ignore[arg-type]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Random factors whose table entries have unit variance (as nn.Embedding)."""
        std = (1.0 / self.rank) ** 0.25
        with torch.no_grad():
            nn.init.normal_(self.kron_a, std=std)
            nn.init.normal_(self.kron_b, std=std)

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, /, *, rank: int | None = None,
                       compression: float | None = None,
                       shapes: Sequence[Sequence[int]] | None = None,
                       max_candidates: int = 4) -> KroneckerEmbedding:
        """Initialise from a dense table by the nearest sum of Kronecker products.

        The table is padded with zero rows up to a multiple of ``p2`` when the
        number of rows does not factor; the reported error (attribute
        ``plan``) is relative to the unpadded table. Arguments as in
        :meth:`KroneckerLinear.from_linear`; ``shapes`` is
        ``((p1, q1), (p2, q2))`` with ``p1 p2 >= num_embeddings``.
        """
        if not isinstance(embedding, nn.Embedding):
            raise TypeError(
                f"embedding must be a torch.nn.Embedding, got {type(embedding).__name__}")
        E = embedding.weight
        num, dim = E.shape
        if shapes is not None:
            (p1, _), (p2, _) = shapes
            rows = int(p1) * int(p2)
            if rows < num:
                raise ValueError(f"shapes {shapes!r} give {rows} rows < {num}")
        else:
            # pad by fewer than sqrt(num) rows to p1 * p2 with p1 = ceil(sqrt(num))
            p1 = math.isqrt(num - 1) + 1 if num > 1 else 1
            rows = p1 * -(-num // p1)
        Ep = E.detach()
        if rows > num:
            Ep = torch.cat([Ep, Ep.new_zeros(rows - num, dim)], dim=0)
        plan, A, B = fit_kronecker(Ep, compression=compression, rank=rank, shapes=shapes,
                                   max_candidates=max_candidates)
        layer = cls(num, dim, a_shape=plan.a_shape, b_rows=plan.b_shape[0], rank=plan.rank,
                    padding_idx=embedding.padding_idx, device=E.device, dtype=E.dtype)
        with torch.no_grad():
            layer.kron_a.copy_(A)
            layer.kron_b.copy_(B)
        layer.plan = plan
        return layer

    def forward(self, indices: Tensor) -> Tensor:
        """Rows ``indices`` of the table, shape ``indices.shape + (embedding_dim,)``."""
        if indices.dtype not in (torch.int64, torch.int32, torch.int16, torch.int8,
                                 torch.uint8):
            raise TypeError(f"indices must be an integer tensor, got {indices.dtype}")
        p2 = self.b_shape[0]
        flat = indices.reshape(-1).long()
        if flat.numel() and (int(flat.min()) < 0 or int(flat.max()) >= self.num_embeddings):
            raise IndexError(
                f"indices must lie in [0, {self.num_embeddings}), got range "
                f"[{int(flat.min())}, {int(flat.max())}]")
        a_rows = self.kron_a[:, flat // p2, :]  # (R, T, q1)
        b_rows = self.kron_b[:, flat % p2, :]  # (R, T, q2)
        rows = torch.einsum("rta,rtb->tab", a_rows, b_rows)
        return rows.reshape(*indices.shape, self.embedding_dim)

    def weight(self) -> Tensor:
        """The dense table (formed on demand; differentiable)."""
        return _kron_dense(self.kron_a, self.kron_b)[: self.num_embeddings]

    def to_dense(self) -> nn.Embedding:
        """The equivalent :class:`torch.nn.Embedding` (a new module; table copied)."""
        emb = nn.Embedding(self.num_embeddings, self.embedding_dim,
                           padding_idx=self.padding_idx, device=self.kron_a.device,
                           dtype=self.kron_a.dtype)
        with torch.no_grad():
            emb.weight.copy_(self.weight())
        return emb

    @property
    def n_params(self) -> int:
        """Number of parameters ``rank (p1 q1 + p2 q2)``."""
        return sum(p.numel() for p in self.parameters())

    def extra_repr(self) -> str:
        return (f"{self.num_embeddings}, {self.embedding_dim}, a_shape={self.a_shape}, "
                f"b_shape={self.b_shape}, rank={self.rank}")
