"""Data formats: the protocol every solver reads its data through, and its implementations.

:class:`TensorFormat` lists the operations (norm, per-mode MTTKRP, mode Gram,
leading subspace, exact residual, sampled fibers); :class:`DenseTensor`
(any array API array) and :class:`SparseTensor` (COO) implement it, and
:func:`as_format` turns a solver's input into one. A new format is one class
implementing the protocol: every solver then accepts it.
"""

from ._api import as_format
from ._dense import DenseTensor
from ._protocol import SparseRows, TensorFormat
from .sparse import SparseTensor

__all__ = ["DenseTensor", "SparseRows", "SparseTensor", "TensorFormat", "as_format"]
