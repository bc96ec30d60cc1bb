"""Kronecker-factored linear and embedding layers (Shapeshifter / GKPD).

The weight of `KroneckerLinear` is ``W = sum_r A_r ⊗ B_r`` and is never
formed: the forward pass multiplies by the factors one mode at a time
(`tensorfact.kron_matmul`, in the cheaper contraction order). Layers are
initialised from pretrained dense layers by the nearest sum of Kronecker
products (`tensorfact.nearest_kronecker`, Van Loan–Pitsianis), which is
optimal in the Frobenius norm for the chosen shapes and rank; shapes and rank
come from `tensorfact.nn._planner.fit_kronecker`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .._backend import check_rng
from ..tenalg import kron_matmul
from ._common import RNG, StructuredLinear, check_count, fill_normal_, kron_dense
from ._planner import KroneckerPlan, fit_kronecker

__all__ = ["KroneckerEmbedding", "KroneckerLinear"]


def _check_a_shape(a_shape: Sequence[int]) -> tuple[int, int]:
    a = tuple(int(v) for v in a_shape)
    if len(a) != 2 or a[0] < 1 or a[1] < 1:
        raise ValueError(f"a_shape must be two positive ints, got {a_shape!r}")
    return (a[0], a[1])


# --------------------------------------------------------------------------- #
# KroneckerLinear
# --------------------------------------------------------------------------- #
class KroneckerLinear(StructuredLinear):
    r"""Linear layer whose weight is a sum of Kronecker products.

    ``y = x W^T + b`` with ``W = sum_{r<R} A_r ⊗ B_r``, ``A_r`` of shape
    ``(m1, n1)`` and ``B_r`` of shape ``(m2, n2)``, ``out_features = m1 m2``,
    ``in_features = n1 n2``. The product with ``W`` is computed mode by mode
    by `tensorfact.kron_matmul` without forming ``W``: for square
    factors of side ``sqrt(n)`` it costs ``2 R n^{1.5}`` multiplies per row
    instead of ``n^2``.

    Parameters
    ----------
    in_features, out_features : int
    a_shape : (int, int)
        ``(m1, n1)``; must divide ``(out_features, in_features)``.
    rank : int, default 1
    bias : bool, default True
    rng : None, int or numpy.random.Generator
        Randomness of the initial factors and bias (host draws, SPEC 7).
    device, dtype : optional
        As for `torch.nn.Linear`.

    Attributes
    ----------
    kron_a : Parameter of shape (rank, m1, n1)
    kron_b : Parameter of shape (rank, m2, n2)
    bias : Parameter of shape (out_features,) or None
    plan : KroneckerPlan or None
        Shapes, rank and optimal error of the initialisation, set by
        `from_linear`.

    References
    ----------
    A. Panahi, S. Saeedi, T. Arodz, "Shapeshifter: a parameter-efficient
    transformer using factorized reshaped matrices", NeurIPS 2021.
    M. G. A. Hameed et al., "Convolutional neural network compression through
    generalized Kronecker product decomposition", AAAI 2022.

    Examples
    --------
    >>> import torch
    >>> layer = KroneckerLinear(16, 8, a_shape=(2, 4), rank=2, rng=0)
    >>> layer(torch.ones(3, 16)).shape
    torch.Size([3, 8])
    >>> layer.n_params == 2 * (2 * 4 + 4 * 4) + 8
    True
    >>> dense = layer.to_dense()
    >>> bool(torch.allclose(dense(torch.ones(3, 16)), layer(torch.ones(3, 16)), atol=1e-6))
    True
    """

    def __init__(self, in_features: int, out_features: int, *, a_shape: Sequence[int],
                 rank: int = 1, bias: bool = True, rng: RNG = None, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        self._init_features(in_features, out_features)
        a = _check_a_shape(a_shape)
        if self.out_features % a[0] or self.in_features % a[1]:
            raise ValueError(
                f"a_shape {a} must divide (out_features, in_features) = "
                f"{(self.out_features, self.in_features)}"
            )
        self.rank = check_count(rank, "rank")
        self.a_shape, self.b_shape = a, (self.out_features // a[0], self.in_features // a[1])
        self.plan: KroneckerPlan | None = None
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.kron_a = nn.Parameter(torch.empty((self.rank, *self.a_shape), **kw))
        self.kron_b = nn.Parameter(torch.empty((self.rank, *self.b_shape), **kw))
        self._make_bias(bias, device, dtype)
        self.reset_parameters(rng=rng)

    def reset_parameters(self, *, rng: RNG = None) -> None:
        """Random factors with the weight variance of `torch.nn.Linear` (host draws)."""
        gen = check_rng(rng)
        # Var(W_ij) = rank * std^4 = 1 / (3 fan_in), the variance of nn.Linear's default init
        std = (1.0 / (3.0 * self.in_features * self.rank)) ** 0.25
        fill_normal_(self.kron_a, std, gen)
        fill_normal_(self.kron_b, std, gen)
        self._reset_bias(gen)

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
            (see `tensorfact.nn._planner.fit_kronecker`). With neither
            ``rank`` nor ``compression`` the full rank is used and the layer
            reproduces ``linear`` exactly (up to rounding).
        shapes : ((m1, n1), (m2, n2)), optional
            Factor shapes; the most balanced candidate of
            `tensorfact.kronecker_shapes` when omitted.
        max_candidates : int, default 4
            Candidate shapes compared with a compression target.

        Returns
        -------
        KroneckerLinear
            Its attribute ``plan`` (`KroneckerPlan`) records the shapes,
            rank and the optimal relative error ``||W - W_R|| / ||W||``, which
            the layer attains.

        Raises
        ------
        TypeError
            ``linear`` is not a `torch.nn.Linear`.
        ValueError
            Bad ``rank``/``compression``/``shapes``.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        W = linear.weight
        fit = fit_kronecker(W, compression=compression, rank=rank, shapes=shapes,
                            max_candidates=max_candidates)
        layer = cls(linear.in_features, linear.out_features, a_shape=fit.plan.a_shape,
                    rank=fit.plan.rank, bias=linear.bias is not None, rng=0, device=W.device,
                    dtype=W.dtype)
        A, B = fit.tensors(W)
        with torch.no_grad():
            layer.kron_a.copy_(A)
            layer.kron_b.copy_(B)
            if linear.bias is not None and layer.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.plan = fit.plan
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
        return kron_dense(self.kron_a, self.kron_b)

    @property
    def compression(self) -> float:
        """Dense weight parameters divided by factored ones (biases excluded)."""
        return self.in_features * self.out_features / (self.kron_a.numel() + self.kron_b.numel())

    def extra_repr(self) -> str:
        return (f"{self._features_repr()}, a_shape={self.a_shape}, b_shape={self.b_shape}, "
                f"rank={self.rank}, bias={self.bias is not None}")


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
        Accepted for API parity with `torch.nn.Embedding`; recorded and
        copied to ``to_dense()`` (its row is not forced to zero).
    rng : None, int or numpy.random.Generator
        Randomness of the initial factors (host draws, SPEC 7).
    device, dtype : optional

    References
    ----------
    A. Panahi, S. Saeedi, T. Arodz, "Shapeshifter: a parameter-efficient
    transformer using factorized reshaped matrices", NeurIPS 2021.

    Examples
    --------
    >>> import torch
    >>> emb = KroneckerEmbedding(100, 12, a_shape=(10, 3), rank=2, rng=0)
    >>> emb(torch.tensor([[0, 5, 99]])).shape
    torch.Size([1, 3, 12])
    >>> idx = torch.tensor([7, 42])
    >>> bool(torch.allclose(emb(idx), emb.to_dense()(idx)))
    True
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, *, a_shape: Sequence[int],
                 b_rows: int | None = None, rank: int = 1, padding_idx: int | None = None,
                 rng: RNG = None, device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        num = check_count(num_embeddings, "num_embeddings")
        dim = check_count(embedding_dim, "embedding_dim")
        a = _check_a_shape(a_shape)
        if dim % a[1]:
            raise ValueError(f"a_shape[1] = {a[1]} must divide embedding_dim = {dim}")
        rank = check_count(rank, "rank")
        p2 = -(-num // a[0]) if b_rows is None else check_count(b_rows, "b_rows")
        if a[0] * p2 < num:
            raise ValueError(f"a_shape[0] * b_rows = {a[0] * p2} < num_embeddings = {num}")
        self.num_embeddings, self.embedding_dim, self.rank = num, dim, rank
        self.padding_idx = padding_idx
        self.a_shape, self.b_shape = a, (p2, dim // a[1])
        #: set by `from_embedding`: shapes, rank and optimal error of the initialisation
        self.plan: KroneckerPlan | None = None
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.kron_a = nn.Parameter(torch.empty((rank, *self.a_shape), **kw))
        self.kron_b = nn.Parameter(torch.empty((rank, *self.b_shape), **kw))
        self.reset_parameters(rng=rng)

    def reset_parameters(self, *, rng: RNG = None) -> None:
        """Random factors whose table entries have unit variance (as nn.Embedding)."""
        gen = check_rng(rng)
        std = (1.0 / self.rank) ** 0.25
        fill_normal_(self.kron_a, std, gen)
        fill_normal_(self.kron_b, std, gen)

    @classmethod
    def from_embedding(cls, embedding: nn.Embedding, /, *, rank: int | None = None,
                       compression: float | None = None,
                       shapes: Sequence[Sequence[int]] | None = None,
                       max_candidates: int = 4) -> KroneckerEmbedding:
        """Initialise from a dense table by the nearest sum of Kronecker products.

        The table is padded with zero rows up to a multiple of ``p2`` when the
        number of rows does not factor; the reported error (attribute
        ``plan``) is that of the padded table, whose norm is the table's.
        Arguments as in `KroneckerLinear.from_linear`; ``shapes`` is
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
        fit = fit_kronecker(Ep, compression=compression, rank=rank, shapes=shapes,
                            max_candidates=max_candidates)
        layer = cls(num, dim, a_shape=fit.plan.a_shape, b_rows=fit.plan.b_shape[0],
                    rank=fit.plan.rank, padding_idx=embedding.padding_idx, rng=0,
                    device=E.device, dtype=E.dtype)
        A, B = fit.tensors(E)
        with torch.no_grad():
            layer.kron_a.copy_(A)
            layer.kron_b.copy_(B)
        layer.plan = fit.plan
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
        return kron_dense(self.kron_a, self.kron_b)[: self.num_embeddings]

    def to_dense(self) -> nn.Embedding:
        """The equivalent `torch.nn.Embedding` (a new module; table copied)."""
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
