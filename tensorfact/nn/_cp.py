"""CP-factored linear layer (Lebedev et al. / tensorised layers).

The weight ``W`` of shape ``(out_features, in_features)``, viewed (C order) as
a tensor of shape ``out_shape + in_shape``, is a rank-``R`` CP tensor
``sum_r w_r a_r^(1) ∘ ... ∘ a_r^(p) ∘ b_r^(1) ∘ ... ∘ b_r^(q)``. The forward
pass contracts the input with the input-mode factors one mode at a time,
scales by the weights and expands through the output-mode factors; ``W`` is
never formed. Layers are initialised from pretrained dense layers by
`tensorfact.cp_als`, which is a local method: the recorded error is the
one achieved, not an optimum.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._backend import check_rng
from ..decomposition import cp_als
from ._common import RNG, StructuredLinear, check_compression, check_count, fill_normal_

__all__ = ["CPLinear", "CPPlan"]


@dataclass(frozen=True)
class CPPlan:
    """Shapes, rank and achieved error of the CP initialisation of a `CPLinear`.

    Attributes
    ----------
    out_shape, in_shape : tuple of int
        Mode sizes; their products are ``out_features`` and ``in_features``.
    rank : int
        Number of CP components.
    rel_error : float
        ``||W - W_cp||_F / ||W||_F`` achieved by `tensorfact.cp_als`,
        computed exactly in float64 from the fitted factors (CP-ALS is a local
        method: this is not the best rank-``rank`` error, which is not
        computable in general).
    n_iter : int
        CP-ALS sweeps run.
    converged : bool
        Whether CP-ALS met its tolerance before ``max_iter``.
    n_params : int
        ``rank * (sum(out_shape) + sum(in_shape) + 1)`` (bias excluded).
    """

    out_shape: tuple[int, ...]
    in_shape: tuple[int, ...]
    rank: int
    rel_error: float
    n_iter: int
    converged: bool
    n_params: int

    @property
    def detail(self) -> str:
        """Shapes and rank in a few words (the ``detail`` column of a compression report)."""
        return f"{self.out_shape}x{self.in_shape} CP rank {self.rank}"


def _balanced(n: int) -> tuple[int, ...]:
    """Two-mode factorization ``(d, n // d)`` with ``d`` the largest divisor <= sqrt(n).

    A prime ``n`` (or 1) stays a single mode ``(n,)``.
    """
    d = max(k for k in range(1, math.isqrt(n) + 1) if n % k == 0)
    return (n,) if d == 1 else (d, n // d)


def _check_shape(shape: Any, total: int, name: str) -> tuple[int, ...]:
    try:
        s = tuple(int(v) for v in shape)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be a sequence of positive ints, got {shape!r}") from exc
    if not s or any(v < 1 for v in s):
        raise ValueError(f"{name} must be a non-empty sequence of positive ints, got {shape!r}")
    if math.prod(s) != total:
        raise ValueError(f"{name} {s} must multiply to {total}, got {math.prod(s)}")
    return s


class CPLinear(StructuredLinear):
    r"""Linear layer whose weight is a CP (canonical polyadic) tensor.

    ``y = x W^T + b`` where ``W.reshape(out_shape + in_shape)`` equals
    ``sum_r w_r a_r^(1) ∘ ... ∘ a_r^(p) ∘ b_r^(1) ∘ ... ∘ b_r^(q)``, with
    output-mode factors ``A_k`` of shape ``(out_shape[k], rank)`` and
    input-mode factors ``B_k`` of shape ``(in_shape[k], rank)``. The forward
    pass costs about ``rank (in_features + out_features)`` multiplies per
    row (plus lower-order terms) instead of ``in_features * out_features``:
    the input is contracted with ``B_q, ..., B_1`` mode by mode keeping the
    rank axis, scaled by ``w`` and expanded through ``A_1, ..., A_p``.

    Parameters
    ----------
    in_features, out_features : int
    in_shape, out_shape : sequence of int
        Mode sizes multiplying to ``in_features`` / ``out_features``.
    rank : int
    bias : bool, default True
    rng : None, int or numpy.random.Generator
        Randomness of the initial factors and bias (host draws, SPEC 7).
    dtype, device : optional
        As for `torch.nn.Linear`.

    Attributes
    ----------
    cp_weights : Parameter of shape (rank,)
    out_factors : ParameterList of (out_shape[k], rank) matrices
    in_factors : ParameterList of (in_shape[k], rank) matrices
    bias : Parameter of shape (out_features,) or None
    plan : CPPlan or None
        Set by `from_linear`.

    References
    ----------
    V. Lebedev, Y. Ganin, M. Rakhuba, I. Oseledets, V. Lempitsky, "Speeding-up
    convolutional neural networks using fine-tuned CP-decomposition", ICLR 2015.
    A. Novikov, D. Podoprikhin, A. Osokin, D. Vetrov, "Tensorizing neural
    networks", NeurIPS 2015 (tensorised layers; there with a tensor train).

    Examples
    --------
    >>> import torch
    >>> layer = CPLinear(16, 12, in_shape=(4, 4), out_shape=(3, 4), rank=5, rng=0)
    >>> layer(torch.ones(2, 16)).shape
    torch.Size([2, 12])
    >>> layer.n_params == 5 * (3 + 4 + 4 + 4 + 1) + 12
    True
    >>> x = torch.randn(2, 16)
    >>> bool(torch.allclose(layer.to_dense()(x), layer(x), atol=1e-6))
    True
    """

    def __init__(self, in_features: int, out_features: int, *, in_shape: Sequence[int],
                 out_shape: Sequence[int], rank: int, bias: bool = True, rng: RNG = None,
                 dtype: Any = None, device: Any = None) -> None:
        super().__init__()
        self._init_features(in_features, out_features)
        ins = _check_shape(in_shape, self.in_features, "in_shape")
        outs = _check_shape(out_shape, self.out_features, "out_shape")
        self.rank = rank = check_count(rank, "rank")
        self.in_shape, self.out_shape = ins, outs
        #: set by `from_linear`: shapes, rank and achieved CP-ALS error
        self.plan: CPPlan | None = None
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        self.cp_weights = nn.Parameter(torch.empty(rank, **kw))
        self.out_factors = nn.ParameterList(
            [nn.Parameter(torch.empty(s, rank, **kw)) for s in outs])
        self.in_factors = nn.ParameterList(
            [nn.Parameter(torch.empty(s, rank, **kw)) for s in ins])
        self._make_bias(bias, device, dtype)
        self.reset_parameters(rng=rng)

    def reset_parameters(self, *, rng: RNG = None) -> None:
        """Random factors (unit weights) with the weight variance of `torch.nn.Linear`.

        Host draws (SPEC 7).
        """
        gen = check_rng(rng)
        n_modes = len(self.in_shape) + len(self.out_shape)
        # Var(W_ij) = rank * std^(2 n_modes) = 1 / (3 fan_in), nn.Linear's default weight variance
        std = (1.0 / (3.0 * self.in_features * self.rank)) ** (1.0 / (2 * n_modes))
        with torch.no_grad():
            self.cp_weights.fill_(1.0)
        for f in [*self.out_factors, *self.in_factors]:
            fill_normal_(f, std, gen)
        self._reset_bias(gen)

    # -- constructor ------------------------------------------------------- #
    @classmethod
    def from_linear(cls, linear: nn.Linear, /, *, rank: int | None = None,
                    compression: float | None = None,
                    shapes: tuple[Sequence[int], Sequence[int]] | None = None,
                    max_iter: int = 500, tol: float = 1e-10,
                    rng: None | int | np.random.Generator = None) -> CPLinear:
        """Initialise from a dense layer by CP-ALS on its reshaped weight.

        The weight is copied to the host in float64, reshaped to
        ``out_shape + in_shape`` and fitted by `tensorfact.cp_als`
        (``init="svd"``); the factors are then cast to the layer's dtype and
        device, and the bias is copied.

        Parameters
        ----------
        linear : torch.nn.Linear
            Pretrained layer (left unchanged).
        rank : int, optional
            Number of CP components (capped, as is the rank a compression
            target gives, at ``min_n prod_{k != n} I_k`` over the modes ``I``,
            the largest rank `tensorfact.cp_als` accepts).
        compression : float, optional
            Target ratio of weight parameters (dense / CP); the rank is the
            largest with ``rank (sum(out_shape) + sum(in_shape) + 1) <=
            in_features out_features / compression``. Exactly one of ``rank``
            and ``compression`` must be given.
        shapes : (out_shape, in_shape), optional
            Mode sizes; by default each of ``out_features`` and
            ``in_features`` is split into two balanced modes (a prime stays
            one mode).
        max_iter : int, default 500
            CP-ALS sweeps at most.
        tol : float, default 1e-10
            CP-ALS stopping tolerance on the change of relative error.
        rng : None, int or numpy.random.Generator
            For the random columns CP-ALS pads its SVD initialisation with
            when the rank exceeds a mode size.

        Returns
        -------
        CPLinear
            Its attribute ``plan`` (`CPPlan`) records shapes, rank and
            the achieved relative error of the weight.

        Raises
        ------
        TypeError
            ``linear`` is not a `torch.nn.Linear`.
        ValueError
            Both or neither of ``rank``/``compression``, bad ``shapes``, or a
            compression target that not even rank 1 meets.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        if (rank is None) == (compression is None):
            raise ValueError("give exactly one of rank and compression")
        m, n = linear.out_features, linear.in_features
        if shapes is None:
            outs, ins = _balanced(m), _balanced(n)
        else:
            try:
                out_s, in_s = shapes
            except (TypeError, ValueError) as exc:
                raise ValueError(f"shapes must be (out_shape, in_shape), got {shapes!r}") from exc
            outs = _check_shape(out_s, m, "shapes[0] (out_shape)")
            ins = _check_shape(in_s, n, "shapes[1] (in_shape)")
        full = outs + ins
        per_rank = sum(full) + 1
        if compression is not None:
            c = check_compression(compression)
            r = int(m * n / c // per_rank)
            if r < 1:
                raise ValueError(
                    f"no CP factorization of a {m} x {n} weight with modes {outs}+{ins} "
                    f"reaches compression {c:g} (a rank-1 term has {per_rank} parameters)")
        else:
            r = check_count(rank, "rank")
        if len(full) < 2:  # pragma: no cover - outs and ins each have >= 1 mode
            raise ValueError("the weight tensor needs at least two modes")
        # cp_als accepts ranks up to min_n prod_{k != n} I_k (always enough for an exact fit)
        cap = min(math.prod(full) // s for s in full)
        r = min(r, cap)
        W = linear.weight.detach().cpu().double().numpy()
        T = W.reshape(full)
        res = cp_als(T, rank=r, init="svd", max_iter=max_iter, tol=tol, rng=rng)
        w = np.asarray(res.cp.weights, dtype=np.float64)
        facs = [np.asarray(f, dtype=np.float64) for f in res.cp.factors]
        # the achieved error, exactly (not the solver's cheap running estimate)
        W_hat = np.asarray(res.cp.to_dense()).reshape(m, n)
        nW = float(np.linalg.norm(W))
        err = float(np.linalg.norm(W - W_hat) / nW) if nW > 0 else 0.0
        dev, dt = linear.weight.device, linear.weight.dtype
        layer = cls(n, m, in_shape=ins, out_shape=outs, rank=r, bias=linear.bias is not None,
                    rng=0, dtype=dt, device=dev)
        with torch.no_grad():
            layer.cp_weights.copy_(torch.as_tensor(w))
            for p, f in zip([*layer.out_factors, *layer.in_factors], facs):
                p.copy_(torch.as_tensor(f))
            if linear.bias is not None and layer.bias is not None:
                layer.bias.copy_(linear.bias)
        layer.plan = CPPlan(out_shape=outs, in_shape=ins, rank=r, rel_error=err,
                            n_iter=int(res.n_iter), converged=bool(res.converged),
                            n_params=r * per_rank)
        return layer

    # -- computation ------------------------------------------------------- #
    def forward(self, x: Tensor) -> Tensor:
        """``x W^T + b`` without forming ``W``."""
        if x.shape[-1:] != (self.in_features,):
            raise ValueError(
                f"input's last dimension must be in_features={self.in_features}, "
                f"got shape {tuple(x.shape)}")
        lead = x.shape[:-1]
        N = math.prod(lead)
        ins = self.in_shape
        # contract the trailing input mode first, keeping the rank axis
        t = x.reshape(N * math.prod(ins[:-1]), ins[-1]) @ self.in_factors[-1]
        for k in range(len(ins) - 2, -1, -1):
            t = torch.einsum("pir,ir->pr", t.reshape(N * math.prod(ins[:k]), ins[k], self.rank),
                             self.in_factors[k])
        z = t.reshape(N, self.rank) * self.cp_weights
        # expand through the output modes; the last one also sums over the rank
        outs = self.out_shape
        u = z.reshape(N, 1, self.rank)
        for k in range(len(outs) - 1):
            u = torch.einsum("npr,ar->npar", u, self.out_factors[k]).reshape(
                N, math.prod(outs[: k + 1]), self.rank)
        y = u.reshape(N * math.prod(outs[:-1]), self.rank) @ self.out_factors[-1].T
        y = y.reshape(*lead, self.out_features)
        if self.bias is not None:
            y = y + self.bias
        return y

    def weight(self) -> Tensor:
        """The dense weight ``(out_features, in_features)`` (formed on demand; differentiable)."""
        facs = [*self.out_factors, *self.in_factors]
        M = facs[0] * self.cp_weights
        for f in facs[1:]:
            M = (M[:, None, :] * f[None, :, :]).reshape(-1, self.rank)
        return M.sum(dim=1).reshape(self.out_features, self.in_features)

    @property
    def compression(self) -> float:
        """Dense weight parameters divided by CP ones (biases excluded)."""
        per_rank = sum(self.out_shape) + sum(self.in_shape) + 1
        return self.in_features * self.out_features / (self.rank * per_rank)

    def extra_repr(self) -> str:
        return (f"{self._features_repr()}, in_shape={self.in_shape}, out_shape={self.out_shape}, "
                f"rank={self.rank}, bias={self.bias is not None}")
