"""Neural-network layers structured by tensor decompositions (needs PyTorch).

Every layer here is a `torch.nn.Module` that can be initialised from a
pretrained dense layer (``from_linear``, ``from_conv``, ...) and converted back
with ``to_dense()``. PyTorch is an optional dependency of tensorfact; install
it with ``pip install 'tensorfact[torch]'``.

Layers are imported lazily on first attribute access, so that
``import tensorfact.nn`` stays cheap and one missing module cannot break the
others.
"""

from __future__ import annotations

import importlib
from typing import Any

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised in a subprocess test
    raise ImportError(
        "tensorfact.nn needs PyTorch, which is an optional dependency of tensorfact; "
        "install it with: pip install 'tensorfact[torch]'"
    ) from exc

#: public name -> private module of this package that defines it
_EXPORTS: dict[str, str] = {
    # Kronecker / Shapeshifter layers and their planner
    "KroneckerLinear": "_kronecker",
    "KroneckerEmbedding": "_kronecker",
    "KroneckerPlan": "_planner",
    # PHM / Compacter adapters
    "PHMLinear": "_phm",
    "CompacterAdapter": "_phm",
    "PHMRules": "_phm",
    "add_adapters": "_phm",
    # CP-factored linear layers
    "CPLinear": "_cp",
    "CPPlan": "_cp",
    # GKPD / SeKron convolutions
    "GKPDConv2d": "_conv",
    "SeKronConv2d": "_conv",
    "KroneckerConvPlan": "_conv",
    "kronecker_conv2d": "_conv",
    # second-order RNNs
    "CPRNN": "_rnn",
    "CPRNNCell": "_rnn",
    "SecondOrderRNN": "_rnn",
    "SecondOrderRNNCell": "_rnn",
    # ROSA adapters
    "ROSALinear": "_rosa",
    "rosa": "_rosa",
    "resample_rosa": "_rosa",
    "merge_rosa": "_rosa",
    # whole models and checkpoints
    "compress": "_compress",
    "CompressionReport": "_compress",
    "LayerReport": "_compress",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'tensorfact.nn' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
