"""ROSA: random subspace adaptation of pretrained linear layers.

A pretrained weight ``W = U diag(s) V^T`` is split into a frozen part and a
trainable rank-``r`` part spanned by ``r`` singular triplets drawn uniformly at
random (Hameed, Milios, Reddy, Rabusseau, 2024). Training updates only the
small factors; `ROSALinear.resample` folds them back into the weight and
draws a fresh random subspace of the updated weight, so that over successive
resamplings the adapted subspace is not restricted to rank ``r`` (unlike
LoRA). After training, `ROSALinear.merge` gives a plain
`torch.nn.Linear`: no extra inference latency.
"""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .._backend import check_rng
from ._common import RNG, check_count, check_module, dense_linear, set_submodule

__all__ = ["ROSALinear", "merge_rosa", "resample_rosa", "rosa"]

Selector = None | str | Sequence[str] | Callable[[str, nn.Module], bool]


class ROSALinear(nn.Module):
    r"""Linear layer adapted in a random rank-``r`` subspace of its SVD (ROSA).

    ``y = x (W_f + U_r V_r)^T + b`` where ``W_f`` (buffer ``weight_frozen``)
    is frozen and ``U_r`` (``out x r``, parameter ``subspace_up``), ``V_r``
    (``r x in``, parameter ``subspace_down``) are trainable. On construction
    and on every `resample`, ``W = W_f + U_r V_r`` is decomposed as
    ``W = U diag(s) V^T`` (in float64), ``r`` indices ``S`` are drawn
    uniformly without replacement from ``range(min(out, in))``, and
    ``U_r = U[:, S] diag(s_S)``, ``V_r = V[:, S]^T`` (orthonormal rows, the
    paper's factorisation), ``W_f = W - U_r V_r``. The function is the same
    before and after resampling up to rounding of ``W_f + U_r V_r``.

    Build it with `from_linear` (or `rosa` for a whole model).

    Parameters
    ----------
    in_features, out_features : int
        Sizes of the wrapped layer.
    rank : int
        Subspace dimension ``r`` (clipped to ``min(in, out)``).
    bias : bool
        Whether the layer has a bias.
    train_bias : bool
        Whether the bias is trainable (frozen by default).
    rng : None, int or numpy.random.Generator
        Randomness for the subspace draws (SPEC 7, drawn on the host); kept
        and reused by `resample` when it gets no ``rng``.
    device, dtype
        Where the tensors live.

    Attributes
    ----------
    weight_frozen : torch.Tensor
        Buffer ``W_f`` (out, in).
    subspace_up, subspace_down : torch.nn.Parameter
        ``U_r`` (out, r) and ``V_r`` (r, in).
    bias : torch.nn.Parameter or None
        The bias (``requires_grad=train_bias``).
    indices : tuple of int
        The singular-triplet indices of the current subspace.

    Notes
    -----
    After `resample` the optimizer's running statistics (Adam moments)
    refer to the previous subspace; the paper restarts them, which is done
    by creating a new optimizer (the parameters keep their identity).

    References
    ----------
    M. G. Abdel Hameed, A. Milios, S. Reddy, G. Rabusseau, "ROSA: Random
    Subspace Adaptation for Efficient Fine-Tuning", arXiv:2407.07802, 2024.

    Examples
    --------
    >>> import torch
    >>> lin = torch.nn.Linear(6, 4)
    >>> layer = ROSALinear.from_linear(lin, rank=2, rng=0)
    >>> x = torch.randn(3, 6)
    >>> bool(torch.allclose(layer(x), lin(x), atol=1e-6))
    True
    >>> layer.n_trainable
    20
    >>> layer.resample()
    >>> bool(torch.allclose(layer.merge()(x), lin(x), atol=1e-6))
    True
    """

    weight_frozen: torch.Tensor

    def __init__(self, in_features: int, out_features: int, rank: int, *, bias: bool = True,
                 train_bias: bool = False, rng: RNG = None,
                 device: Any = None, dtype: Any = None) -> None:
        super().__init__()
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or int(v) < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        self.in_features = int(in_features)
        self.out_features = int(out_features)
        self.rank = min(check_count(rank, "rank"), self.in_features, self.out_features)
        self.train_bias = bool(train_bias)
        self._gen = check_rng(rng)
        kw = {"device": device, "dtype": dtype or torch.get_default_dtype()}
        self.register_buffer("weight_frozen", torch.zeros(out_features, in_features, **kw))
        self.subspace_up = nn.Parameter(torch.zeros(out_features, self.rank, **kw))
        self.subspace_down = nn.Parameter(torch.zeros(self.rank, in_features, **kw))
        if bias:
            self.bias = nn.Parameter(torch.zeros(out_features, **kw),
                                     requires_grad=self.train_bias)
        else:
            self.register_parameter("bias", None)
        self.indices: tuple[int, ...] = ()

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int, *, train_bias: bool = False,
                    rng: RNG = None) -> ROSALinear:
        """Wrap a pretrained `torch.nn.Linear` (copied, not modified).

        The result computes the same function as ``linear`` (to rounding) and
        has a freshly drawn random subspace.

        Parameters
        ----------
        linear : torch.nn.Linear
            The pretrained layer.
        rank : int
            Subspace dimension.
        train_bias : bool
            Whether the bias is trainable.
        rng : None, int or numpy.random.Generator
            Randomness for the subspace draws.

        Returns
        -------
        ROSALinear

        Raises
        ------
        TypeError
            ``linear`` is not a `torch.nn.Linear`.
        """
        if not isinstance(linear, nn.Linear):
            raise TypeError(f"linear must be a torch.nn.Linear, got {type(linear).__name__}")
        W = linear.weight
        out = cls(linear.in_features, linear.out_features, rank, bias=linear.bias is not None,
                  train_bias=train_bias, rng=rng, device=W.device, dtype=W.dtype)
        with torch.no_grad():
            out.weight_frozen.copy_(W)
            if linear.bias is not None and out.bias is not None:
                out.bias.copy_(linear.bias)
        out.resample()
        return out.train(linear.training)

    def weight(self) -> torch.Tensor:
        """The current full weight ``W_f + U_r V_r`` (materialised, differentiable)."""
        return self.weight_frozen + self.subspace_up @ self.subspace_down

    @property
    def n_trainable(self) -> int:
        """Trainable parameters: ``r (in + out)`` (``+ out`` with a trainable bias)."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    @property
    def n_params(self) -> int:
        """Stored numbers: ``in out + r (in + out) (+ out)``."""
        return sum(p.numel() for p in self.parameters()) + self.weight_frozen.numel()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x W_f^T + (x V_r^T) U_r^T + b`` (the full weight is never rebuilt)."""
        y = nn.functional.linear(x, self.weight_frozen, self.bias)
        return y + nn.functional.linear(nn.functional.linear(x, self.subspace_down),
                                        self.subspace_up)

    @torch.no_grad()
    def resample(self, *, rng: RNG = None) -> None:
        """Merge the trained subspace into the weight and draw a new random subspace.

        The function is unchanged (up to rounding in the layer's dtype).

        Parameters
        ----------
        rng : None, int or numpy.random.Generator
            Randomness for this draw; the layer's own generator when omitted.
        """
        gen = self._gen if rng is None else check_rng(rng)
        W = self.weight().detach()
        W64 = W.to(torch.float64)
        U, s, Vh = torch.linalg.svd(W64, full_matrices=False)
        k = s.shape[0]
        idx = np.sort(gen.choice(k, size=self.rank, replace=False))
        sel = torch.as_tensor(idx, device=W.device)
        up = U[:, sel] * s[sel]
        down = Vh[sel, :]
        frozen = W64 - up @ down
        self.subspace_up.copy_(up)
        self.subspace_down.copy_(down)
        self.weight_frozen.copy_(frozen)
        self.indices = tuple(int(i) for i in idx)

    @torch.no_grad()
    def merge(self) -> nn.Linear:
        """A plain `torch.nn.Linear` with weight ``W_f + U_r V_r`` (same function)."""
        return dense_linear(self.weight().detach(), self.bias).train(self.training)

    def to_dense(self) -> nn.Linear:
        """Same as `merge`."""
        return self.merge()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"rank={self.rank}, bias={self.bias is not None}, train_bias={self.train_bias}")


def _as_matcher(sel: Selector, name: str) -> Callable[[str, nn.Module], bool] | None:
    if sel is None:
        return None
    if callable(sel):
        return sel
    if isinstance(sel, str):
        patterns: tuple[str, ...] = (sel,)
    else:
        try:
            patterns = tuple(sel)
        except TypeError as exc:
            raise TypeError(
                f"{name} must be None, a glob pattern, a sequence of them or a callable, "
                f"got {type(sel).__name__}"
            ) from exc
        for p in patterns:
            if not isinstance(p, str):
                raise TypeError(f"{name} must contain strings (glob patterns), got {p!r}")
    return lambda qualname, _mod: any(fnmatch.fnmatchcase(qualname, p) for p in patterns)


def rosa(model: nn.Module, /, rank: int, *, include: Selector = None, exclude: Selector = None,
         train_bias: bool = False, inplace: bool = False,
         rng: RNG = None) -> nn.Module:
    """Wrap the chosen linear layers of ``model`` in `ROSALinear` and freeze the rest.

    Parameters
    ----------
    model : torch.nn.Module
        The pretrained model.
    rank : int
        Subspace dimension of every wrapped layer.
    include, exclude : None, str, sequence of str or callable
        Which `torch.nn.Linear` submodules to wrap, by qualified name
        (``model.named_modules()``): glob patterns (``fnmatch``, e.g.
        ``"encoder.*"``) or a predicate ``f(name, module) -> bool``.
        ``include=None`` takes every linear layer; ``exclude`` wins.
    train_bias : bool
        Whether the wrapped layers' biases are trainable.
    inplace : bool
        Modify ``model`` itself instead of a deep copy.
    rng : None, int or numpy.random.Generator
        One generator shared by all wrapped layers (SPEC 7).

    Returns
    -------
    torch.nn.Module
        The adapted model: only the ROSA subspaces (and biases with
        ``train_bias``) require gradients.

    Raises
    ------
    ValueError
        No linear layer matched.
    TypeError
        ``model`` is not a `torch.nn.Module`.

    Examples
    --------
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> adapted = rosa(net, rank=2, exclude="2", rng=0)
    >>> type(adapted[0]).__name__, type(adapted[2]).__name__
    ('ROSALinear', 'Linear')
    >>> sum(p.numel() for p in adapted.parameters() if p.requires_grad)
    32
    """
    check_module(model)
    rank = check_count(rank, "rank")
    inc = _as_matcher(include, "include")
    exc = _as_matcher(exclude, "exclude")
    gen = check_rng(rng)
    target = model if inplace else copy.deepcopy(model)
    chosen = [
        (name, mod) for name, mod in target.named_modules()
        if isinstance(mod, nn.Linear) and name
        and (inc is None or inc(name, mod)) and not (exc is not None and exc(name, mod))
    ]
    if not chosen:
        raise ValueError("no torch.nn.Linear layer of model matches include/exclude")
    for p in target.parameters():
        p.requires_grad_(False)
    for name, mod in chosen:
        set_submodule(target, name, ROSALinear.from_linear(mod, rank, train_bias=train_bias,
                                                            rng=gen))
    return target


def resample_rosa(model: nn.Module, /, *, rng: RNG = None) -> int:
    """Call `ROSALinear.resample` on every ROSA layer of ``model``; returns how many."""
    check_module(model)
    gen = None if rng is None else check_rng(rng)
    n = 0
    for mod in model.modules():
        if isinstance(mod, ROSALinear):
            mod.resample(rng=gen)
            n += 1
    return n


def merge_rosa(model: nn.Module, /, *, inplace: bool = False) -> nn.Module:
    """Replace every `ROSALinear` of ``model`` by its merged `torch.nn.Linear`."""
    check_module(model)
    target = model if inplace else copy.deepcopy(model)
    for name, mod in list(target.named_modules()):
        if isinstance(mod, ROSALinear):
            if not name:
                raise ValueError("model is itself a ROSALinear; call its merge() method")
            set_submodule(target, name, mod.merge())
    return target
