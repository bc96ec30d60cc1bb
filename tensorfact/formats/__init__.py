"""Data formats: the protocol every solver reads its data through, and its implementations.

`TensorFormat` lists the operations (norm, per-mode MTTKRP, mode Gram,
leading subspace, exact residual, sampled fibers); `DenseTensor`
(any array API array), `SparseTensor` (COO) and
`DaskDenseTensor` (a chunked ``dask.array.Array``; needs the ``dask``
extra) implement it, and `as_format` turns a solver's input into one.
A new format is one class implementing the protocol: every solver then
accepts it.
"""

from typing import Any

from ._api import as_format
from ._dense import DenseTensor
from ._protocol import SparseRows, TensorFormat
from .sparse import SparseTensor

__all__ = ["DaskDenseTensor", "DaskSparseTensor", "DenseTensor", "SparseRows", "SparseTensor",
           "TensorFormat", "as_format"]


def __getattr__(name: str) -> Any:
    # DaskDenseTensor imports dask, an optional dependency: only on first use
    if name == "DaskDenseTensor":
        try:
            from ._dask_dense import DaskDenseTensor
        except ImportError as exc:
            raise ImportError(
                "DaskDenseTensor needs dask: pip install 'tensorfact[dask]'"
            ) from exc
        return DaskDenseTensor
    if name == "DaskSparseTensor":  # a partitioned store on disk; needs dask too
        try:
            from .dask_sparse import DaskSparseTensor
        except ImportError as exc:
            raise ImportError(
                "DaskSparseTensor needs dask: pip install 'tensorfact[dask]'"
            ) from exc
        return DaskSparseTensor
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
