"""Plumbing shared by the structured layers: checks, host-side random draws, dense views."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from .._backend import check_rng
from .._validation import check_positive_int, describe
from ..tensors import KroneckerTensor

__all__ = [
    "RNG", "StructuredLinear", "check_compression", "check_count", "check_module",
    "check_names", "check_tensor", "check_tensors", "dense_linear",
    "fill_normal_", "fill_uniform_", "host_float64", "host_normal", "host_uniform",
    "kron_dense", "set_submodule", "to_torch",
]

#: the ``rng=`` argument of every layer and function that draws random numbers (SPEC 7)
RNG = None | int | np.random.Generator


# --------------------------------------------------------------------------- #
# argument checks
# --------------------------------------------------------------------------- #
def check_count(value: Any, name: str) -> int:
    """``value`` as an int >= 1 (`tensorfact._validation.check_positive_int`).

    A float, string, ``None``, complex or list raises ``TypeError``, a bool an
    ``ArgumentTypeError`` (both a ``TypeError`` and a ``ValueError``), a
    value below 1 ``ValueError``; every message names ``name``.
    """
    return check_positive_int(value, name)


def check_module(value: Any, name: str = "model") -> nn.Module:
    """``value`` if it is a `torch.nn.Module` (TypeError naming ``name`` otherwise)."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {describe(value)}")
    return value


def check_names(value: Any, name: str) -> tuple[str, ...]:
    """``value`` as a tuple of strings (module names); TypeError naming ``name`` otherwise."""
    if isinstance(value, (str, bytes)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a sequence of strings, got {describe(value)}")
    out = tuple(value)
    for v in out:
        if not isinstance(v, str):
            raise TypeError(f"{name} must contain strings, got {describe(v)} in "
                            f"{describe(value)}")
    return out


def check_tensors(value: Any, name: str) -> list[Tensor]:
    """``value`` as a list of `torch.Tensor` (``name[i]`` named for a bad item)."""
    if isinstance(value, (str, bytes, Tensor)) or not isinstance(value, Iterable):
        raise TypeError(f"{name} must be a sequence of torch.Tensor, got {describe(value)}")
    return [check_tensor(v, f"{name}[{i}]") for i, v in enumerate(value)]


def check_tensor(value: Any, name: str) -> Tensor:
    """``value`` if it is a `torch.Tensor` (TypeError naming ``name`` otherwise).

    NumPy arrays are refused rather than converted (DESIGN.md: no silent
    conversion between array libraries).
    """
    if not isinstance(value, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {describe(value)}")
    return value


def check_compression(value: Any, *, above: float = 0.0) -> float:
    """A finite compression ratio ``> above`` as a float (TypeError for a non-number)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"compression must be a number, got {value!r}")
    c = float(value)
    if not (c > above and math.isfinite(c)):
        raise ValueError(f"compression must be a finite number > {above:g}, got {value!r}")
    return c


# --------------------------------------------------------------------------- #
# host <-> torch
# --------------------------------------------------------------------------- #
def _dtype(dtype: Any) -> torch.dtype:
    return torch.get_default_dtype() if dtype is None else dtype


def to_torch(array: np.ndarray, *, device: Any = None, dtype: Any = None) -> Tensor:
    """A host NumPy array as a contiguous tensor on ``device`` in ``dtype`` (default dtype)."""
    return torch.from_numpy(np.ascontiguousarray(array)).to(device=device, dtype=_dtype(dtype))


def host_normal(rng: RNG, shape: tuple[int, ...], std: float, *, device: Any = None,
                dtype: Any = None) -> Tensor:
    """``N(0, std^2)`` draws made on the host from ``rng`` (SPEC 7), moved to ``device``."""
    return to_torch(check_rng(rng).normal(0.0, std, size=shape), device=device, dtype=dtype)


def host_uniform(rng: RNG, shape: tuple[int, ...], bound: float, *, device: Any = None,
                 dtype: Any = None) -> Tensor:
    """``U(-bound, bound)`` draws made on the host from ``rng``, moved to ``device``."""
    return to_torch(check_rng(rng).uniform(-bound, bound, size=shape), device=device,
                    dtype=dtype)


def fill_normal_(param: Tensor, std: float, rng: RNG) -> None:
    """Overwrite ``param`` with `host_normal` draws (no autograd record)."""
    with torch.no_grad():
        param.copy_(host_normal(rng, tuple(param.shape), std, device=param.device,
                                dtype=param.dtype))


def fill_uniform_(param: Tensor, bound: float, rng: RNG) -> None:
    """Overwrite ``param`` with `host_uniform` draws (no autograd record)."""
    with torch.no_grad():
        param.copy_(host_uniform(rng, tuple(param.shape), bound, device=param.device,
                                 dtype=param.dtype))


def host_float64(weight: Any) -> np.ndarray:
    """A float64 host copy of a tensor or array (what the decompositions run on)."""
    if isinstance(weight, Tensor):
        return weight.detach().cpu().to(torch.float64).numpy()
    return np.asarray(weight, dtype=np.float64)


# --------------------------------------------------------------------------- #
# modules
# --------------------------------------------------------------------------- #
def dense_linear(weight: Tensor, bias: Tensor | None) -> nn.Linear:
    """A new `torch.nn.Linear` holding copies of ``weight`` (out, in) and ``bias``."""
    out_features, in_features = (int(s) for s in weight.shape)
    lin = nn.Linear(in_features, out_features, bias=bias is not None,
                    device=weight.device, dtype=weight.dtype)
    with torch.no_grad():
        lin.weight.copy_(weight)
        if bias is not None and lin.bias is not None:
            lin.bias.copy_(bias)
    return lin


def kron_dense(A: Tensor, B: Tensor) -> Tensor:
    """``sum_r A[r] ⊗ B[r]`` for factors stacked over the rank (differentiable)."""
    return KroneckerTensor([A, B]).to_dense()


def set_submodule(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put ``new`` at the dotted ``name`` of ``model`` (its parent must exist)."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


class StructuredLinear(nn.Module):
    """Base of the linear layers with a structured weight (Kronecker, CP, PHM).

    Holds ``in_features``, ``out_features`` and the optional bias (initialised
    like `torch.nn.Linear`'s); subclasses provide the differentiable
    dense `weight` and their own factors.
    """

    in_features: int
    out_features: int
    bias: nn.Parameter | None

    def _init_features(self, in_features: int, out_features: int) -> None:
        for name, v in (("in_features", in_features), ("out_features", out_features)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or int(v) < 1:
                raise ValueError(f"in_features and out_features must be positive, got {name}={v!r}")
        self.in_features, self.out_features = int(in_features), int(out_features)

    def _make_bias(self, bias: bool, device: Any, dtype: Any) -> None:
        """Register the (uninitialised) bias after the factors (parameter order as before)."""
        if bias:
            self.bias = nn.Parameter(torch.empty(self.out_features, device=device,
                                                 dtype=_dtype(dtype)))
        else:
            self.register_parameter("bias", None)

    def _reset_bias(self, rng: RNG) -> None:
        """``U(-1/sqrt(in), 1/sqrt(in))``, `torch.nn.Linear`'s default bias."""
        if self.bias is not None:
            fill_uniform_(self.bias, 1.0 / math.sqrt(self.in_features), rng)

    def weight(self) -> Tensor:
        """The dense weight ``(out_features, in_features)`` (formed on demand; differentiable)."""
        raise NotImplementedError

    def to_dense(self) -> nn.Linear:
        """The equivalent `torch.nn.Linear` (a new layer; weights copied)."""
        with torch.no_grad():
            return dense_linear(self.weight(), self.bias)

    @property
    def n_params(self) -> int:
        """Number of parameters (shared ones counted once, bias included)."""
        return sum(p.numel() for p in self.parameters())

    def _features_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}"
