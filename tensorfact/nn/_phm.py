"""Parameterized hypercomplex multiplication (PHM) layers and Compacter adapters.

A PHM layer's weight is ``W = sum_{i<n} A_i ⊗ B_i`` with ``n x n`` "rules"
``A_i`` and blocks ``B_i`` of shape ``(out/n, in/n)`` (Zhang et al., 2021).
Compacter (Karimi Mahabadi et al., 2021) shares the rules across every adapter
of a model and makes each ``B_i = s_i t_i^T`` rank one, so an adapter of
hidden size ``k`` and bottleneck ``d`` has ``2 (k + d)`` weight parameters
per projection pair besides the ``n^3`` shared ones.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from .._backend import check_rng
from ..tenalg import kron_matmul
from ._common import (
    RNG,
    StructuredLinear,
    check_count,
    check_module,
    check_names,
    fill_normal_,
    kron_dense,
    set_submodule,
)

__all__ = ["CompacterAdapter", "PHMLinear", "PHMRules", "add_adapters"]


def _param(p: nn.Parameter | None) -> nn.Parameter:
    if p is None:  # pragma: no cover - guarded by the layer's construction
        raise RuntimeError("parameter missing for this PHM layer configuration")
    return p


class PHMRules(nn.Module):
    """The ``n`` rule matrices ``A_i`` (each ``n x n``) of PHM layers, shareable.

    Pass one instance to several `PHMLinear` layers to share the rules
    (Compacter's "slow" weights); a shared instance is one set of parameters
    (``model.parameters()`` yields it once).

    Parameters
    ----------
    n : int
        Number of Kronecker terms and size of each rule.
    rng : None, int or numpy.random.Generator
        Randomness of the initial rules (host draws, SPEC 7).
    device, dtype : optional

    Attributes
    ----------
    weight : Parameter of shape (n, n, n)
        ``weight[i]`` is ``A_i``.
    """

    def __init__(self, n: int, *, rng: RNG = None, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        self.n = check_count(n, "n")
        self.weight = nn.Parameter(torch.empty((self.n, self.n, self.n), device=device,
                                               dtype=dtype))
        self.reset_parameters(rng=rng)

    def reset_parameters(self, *, rng: RNG = None) -> None:
        """Entries ``N(0, 1/n)``, so ``sum_i A_i ⊗ B_i`` keeps the blocks' variance."""
        fill_normal_(self.weight, 1.0 / math.sqrt(self.n), rng)

    def extra_repr(self) -> str:
        return f"n={self.n}"


class PHMLinear(StructuredLinear):
    r"""Linear layer with a PHM weight ``W = sum_{i<n} A_i ⊗ B_i``.

    ``y = x W^T + b`` with rules ``A_i`` of shape ``(n, n)`` and blocks
    ``B_i`` of shape ``(out_features / n, in_features / n)``; optionally
    ``B_i = s_i t_i^T`` of rank ``rank`` (Compacter's low-rank PHM). The
    product with ``W`` is computed by `tensorfact.kron_matmul` without
    forming ``W``.

    Parameters
    ----------
    in_features, out_features : int
        Both divisible by ``n``.
    n : int
        Number of Kronecker terms (the "hypercomplex dimension").
    rank : int, optional
        Rank of each ``B_i``; ``None`` stores full blocks.
    bias : bool, default True
    rules : PHMRules, optional
        Shared rules; a new `PHMRules` of size ``n`` when omitted.
    rng : None, int or numpy.random.Generator
        Randomness of the initial blocks, bias and new rules (host draws, SPEC 7).
    device, dtype : optional

    Notes
    -----
    Weight parameters: ``n^3 + out in / n`` for full blocks and
    ``n^3 + rank (out + in)`` for rank-``rank`` blocks (``n^3`` counted once
    when the rules are shared), against ``out in`` for a dense layer.

    References
    ----------
    A. Zhang et al., "Beyond fully-connected layers with quaternions:
    parameterization of hypercomplex multiplications with 1/n parameters",
    ICLR 2021.
    R. Karimi Mahabadi, J. Henderson, S. Ruder, "Compacter: efficient low-rank
    hypercomplex adapter layers", NeurIPS 2021.

    Examples
    --------
    >>> import torch
    >>> layer = PHMLinear(8, 12, n=4, rank=1, rng=0)
    >>> layer(torch.ones(2, 8)).shape
    torch.Size([2, 12])
    >>> layer.n_weight_params == 4**3 + (8 + 12)
    True
    """

    def __init__(self, in_features: int, out_features: int, *, n: int, rank: int | None = None,
                 bias: bool = True, rules: PHMRules | None = None, rng: RNG = None,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        n = check_count(n, "n")
        self._init_features(in_features, out_features)
        in_features, out_features = self.in_features, self.out_features
        if in_features % n or out_features % n:
            raise ValueError(
                f"n = {n} must divide in_features = {in_features} and "
                f"out_features = {out_features}"
            )
        self.rank = None if rank is None else check_count(rank, "rank")
        gen = check_rng(rng)
        if rules is None:
            rules = PHMRules(n, rng=gen, device=device, dtype=dtype)
        elif not isinstance(rules, PHMRules):
            raise TypeError(f"rules must be a PHMRules, got {type(rules).__name__}")
        elif rules.n != n:
            raise ValueError(f"rules have n = {rules.n}, the layer n = {n}")
        self.n = n
        self.rules = rules
        p, q = out_features // n, in_features // n
        kw: dict[str, Any] = {"device": device, "dtype": dtype}
        if self.rank is None:
            self.phm_b: nn.Parameter | None = nn.Parameter(torch.empty((n, p, q), **kw))
            self.register_parameter("phm_s", None)
            self.register_parameter("phm_t", None)
        else:
            self.register_parameter("phm_b", None)
            self.phm_s: nn.Parameter | None = nn.Parameter(torch.empty((n, p, self.rank), **kw))
            self.phm_t: nn.Parameter | None = nn.Parameter(torch.empty((n, self.rank, q), **kw))
        self._make_bias(bias, device, dtype)
        self.reset_parameters(rng=gen)

    def reset_parameters(self, *, rng: RNG = None) -> None:
        """Blocks scaled so that ``W`` has the entry variance of `torch.nn.Linear`.

        Host draws (SPEC 7); the (possibly shared) rules are left as they are.
        """
        gen = check_rng(rng)
        target = 1.0 / (3.0 * self.in_features)  # Var of nn.Linear's default weights
        if self.phm_b is not None:
            fill_normal_(self.phm_b, math.sqrt(target), gen)
        else:
            std = (target / float(self.rank or 1)) ** 0.25
            fill_normal_(_param(self.phm_s), std, gen)
            fill_normal_(_param(self.phm_t), std, gen)
        self._reset_bias(gen)

    def blocks(self) -> Tensor:
        """The blocks ``B_i`` as one tensor of shape ``(n, out/n, in/n)``."""
        if self.phm_b is not None:
            return self.phm_b
        return torch.matmul(_param(self.phm_s), _param(self.phm_t))

    def forward(self, x: Tensor) -> Tensor:
        """``x W^T + b`` without forming ``W``."""
        y = kron_matmul(x, (self.rules.weight, self.blocks()))
        if self.bias is not None:
            y = y + self.bias
        return y

    def weight(self) -> Tensor:
        """The dense weight ``sum_i A_i ⊗ B_i`` (formed on demand; differentiable)."""
        return kron_dense(self.rules.weight, self.blocks())

    @property
    def n_weight_params(self) -> int:
        """Weight parameters including the rules' ``n^3`` (biases excluded)."""
        own = sum(p.numel() for p in (self.phm_b, self.phm_s, self.phm_t) if p is not None)
        return own + self.rules.weight.numel()

    def extra_repr(self) -> str:
        return (f"{self._features_repr()}, n={self.n}, rank={self.rank}, "
                f"bias={self.bias is not None}")


_ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "gelu": nn.GELU, "relu": nn.ReLU, "silu": nn.SiLU, "tanh": nn.Tanh,
    "identity": nn.Identity,
}


class CompacterAdapter(nn.Module):
    r"""Compacter adapter: ``h + up(f(down(h)))`` with low-rank PHM projections.

    ``down`` maps the hidden size ``k`` to the bottleneck ``d`` and ``up`` maps
    back, both `PHMLinear` with rank-1 blocks and the same (usually
    model-wide) `PHMRules`. Weight parameters: ``2 (k + d)`` per adapter
    plus the ``n^3`` shared rules; with adapters after the attention and the
    feed-forward block of each of ``L`` layers (Compacter) this totals
    ``4 L (k + d) + n^3``, and ``2 L (k + d) + n^3`` with the feed-forward
    adapter only (Compacter++), biases not counted.

    Parameters
    ----------
    dim : int
        Hidden size ``k``.
    bottleneck : int, optional
        ``d``; default ``dim // reduction``.
    reduction : int, default 16
    n : int, default 4
        Must divide ``dim`` and ``bottleneck``.
    rules : PHMRules, optional
        Shared rules (new ones when omitted).
    activation : str, default "gelu"
        One of ``"gelu", "relu", "silu", "tanh", "identity"``.
    init_identity : bool, default True
        Start ``up`` at zero (its ``s_i`` and bias), so the adapter is the
        identity at initialisation and the pretrained function is unchanged.
    rng : None, int or numpy.random.Generator
        Randomness of the initial projections (and new rules), host draws (SPEC 7).
    device, dtype : optional

    References
    ----------
    R. Karimi Mahabadi, J. Henderson, S. Ruder, "Compacter: efficient low-rank
    hypercomplex adapter layers", NeurIPS 2021.

    Examples
    --------
    >>> import torch
    >>> ad = CompacterAdapter(32, reduction=4, n=4, rng=0)
    >>> h = torch.randn(2, 5, 32)
    >>> bool(torch.equal(ad(h), h))  # identity at initialisation
    True
    >>> ad.n_weight_params == 2 * (32 + 8) + 4**3
    True
    """

    def __init__(self, dim: int, *, bottleneck: int | None = None, reduction: int = 16,
                 n: int = 4, rules: PHMRules | None = None, activation: str = "gelu",
                 init_identity: bool = True, rng: RNG = None, device: Any = None,
                 dtype: Any = None) -> None:
        super().__init__()
        dim = check_count(dim, "dim")
        if bottleneck is None:
            bottleneck = dim // check_count(reduction, "reduction")
        else:
            bottleneck = check_count(bottleneck, "bottleneck")
        if bottleneck < 1:
            raise ValueError(f"bottleneck must be positive, got {bottleneck} (dim {dim})")
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation must be one of {sorted(_ACTIVATIONS)}, got {activation!r}")
        gen = check_rng(rng)
        if rules is None:
            rules = PHMRules(n, rng=gen, device=device, dtype=dtype)
        self.dim, self.bottleneck, self.n = dim, bottleneck, int(n)
        self.down = PHMLinear(dim, bottleneck, n=n, rank=1, rules=rules, rng=gen, device=device,
                              dtype=dtype)
        self.up = PHMLinear(bottleneck, dim, n=n, rank=1, rules=rules, rng=gen, device=device,
                            dtype=dtype)
        self.activation = _ACTIVATIONS[activation]()
        if init_identity:
            with torch.no_grad():
                _param(self.up.phm_s).zero_()
                if self.up.bias is not None:
                    self.up.bias.zero_()

    @property
    def rules(self) -> PHMRules:
        """The (shared) rules of both projections."""
        return self.down.rules

    def forward(self, h: Tensor) -> Tensor:
        """``h + up(f(down(h)))``."""
        return h + self.up(self.activation(self.down(h)))

    @property
    def n_weight_params(self) -> int:
        """``2 (k + d) + n^3`` (rules counted once, biases excluded)."""
        own = sum(p.numel() for lay in (self.down, self.up)
                  for p in (lay.phm_b, lay.phm_s, lay.phm_t) if p is not None)
        return own + self.rules.weight.numel()

    def extra_repr(self) -> str:
        return f"dim={self.dim}, bottleneck={self.bottleneck}, n={self.n}"


class _Adapted(nn.Module):
    """A sublayer followed by an adapter: ``adapter(sublayer(*args, **kwargs))``."""

    def __init__(self, sublayer: nn.Module, adapter: nn.Module) -> None:
        super().__init__()
        self.sublayer = sublayer
        self.adapter = adapter

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        out = self.sublayer(*args, **kwargs)
        if isinstance(out, tuple):  # e.g. attention modules returning (output, weights)
            return (self.adapter(out[0]),) + out[1:]
        return self.adapter(out)


def _output_dim(module: nn.Module, name: str) -> int:
    if isinstance(module, nn.Linear):
        return module.out_features
    if isinstance(module, nn.MultiheadAttention):
        return module.embed_dim
    if isinstance(module, nn.LayerNorm):
        return int(module.normalized_shape[-1])
    out = getattr(module, "out_features", None)
    if isinstance(out, int):
        return out
    raise ValueError(
        f"cannot infer the output size of {name!r} ({type(module).__name__}); pass dim=")


def add_adapters(model: nn.Module, /, *, targets: str | Sequence[str],
                 reduction: int = 16, bottleneck: int | None = None, n: int = 4,
                 dim: int | None = None, activation: str = "gelu",
                 train_layer_norms: bool = True, freeze: bool = True,
                 rng: RNG = None) -> nn.Module:
    """Insert Compacter adapters after chosen sublayers and freeze everything else.

    Parameters
    ----------
    model : torch.nn.Module
        Left unchanged; a deep copy is modified and returned.
    targets : str or sequence of str
        A regular expression matched (``re.fullmatch``) against module names
        (``model.named_modules()``), or a list of exact names. Compacter puts
        one adapter after the attention output projection and one after the
        feed-forward output of every layer; Compacter++ only the latter.
    reduction, bottleneck, n, activation
        As in `CompacterAdapter`; one `PHMRules` of size ``n``
        is shared by all inserted adapters.
    dim : int, optional
        Hidden size, inferred from each target (``out_features`` of a Linear,
        ``embed_dim`` of a MultiheadAttention) when omitted.
    train_layer_norms : bool, default True
        Keep LayerNorm parameters trainable, as Compacter does.
    freeze : bool, default True
        Set ``requires_grad=False`` on every pre-existing parameter (except
        LayerNorms with ``train_layer_norms``).
    rng : None, int or numpy.random.Generator
        One generator for the shared rules and every adapter (host draws, SPEC 7).

    Returns
    -------
    torch.nn.Module
        The copy with each target ``m`` replaced by a module computing
        ``adapter(m(x))`` (``sublayer`` and ``adapter`` attributes). The
        shared rules are reachable as any adapter's ``rules``.

    Raises
    ------
    ValueError
        No module matches ``targets``, or a hidden size cannot be inferred or
        is not divisible by ``n``.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> net = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 16))
    >>> tuned = add_adapters(net, targets=r"0|2", reduction=4, n=4, rng=0)
    >>> x = torch.randn(3, 16)
    >>> bool(torch.allclose(tuned(x), net(x)))  # adapters start as the identity
    True
    >>> trainable = {name for name, p in tuned.named_parameters() if p.requires_grad}
    >>> sorted(trainable)[:2]
    ['0.adapter.down.bias', '0.adapter.down.phm_s']
    """
    check_module(model)
    new = copy.deepcopy(model)
    names = [name for name, _ in new.named_modules() if name]
    if isinstance(targets, str):
        pattern = re.compile(targets)
        chosen = [name for name in names if pattern.fullmatch(name)]
    else:
        wanted = list(check_names(targets, "targets"))
        missing = [t for t in wanted if t not in names]
        if missing:
            raise ValueError(f"targets {missing} are not modules of the model")
        chosen = wanted
    if not chosen:
        raise ValueError(f"no module name matches targets={targets!r}")
    ref = next(iter(new.parameters()), None)
    kw: dict[str, Any] = {}
    if ref is not None:
        kw = {"device": ref.device, "dtype": ref.dtype}
    if freeze:
        for mod in new.modules():
            keep = train_layer_norms and isinstance(mod, nn.LayerNorm)
            for p in mod.parameters(recurse=False):
                p.requires_grad_(keep)
    gen = check_rng(rng)
    rules = PHMRules(n, rng=gen, **kw)
    for name in chosen:
        sub = new.get_submodule(name)
        k = dim if dim is not None else _output_dim(sub, name)
        adapter = CompacterAdapter(k, bottleneck=bottleneck, reduction=reduction, n=n,
                                   rules=rules, activation=activation, rng=gen, **kw)
        set_submodule(new, name, _Adapted(sub, adapter))
    return new
