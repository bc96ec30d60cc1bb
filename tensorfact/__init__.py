"""tensorfact: backend-agnostic tensor decompositions.

CP-ALS (dense and sparse), SPALS, Kronecker decompositions (GKPD, SeKron),
joint triangularization with a posteriori error bounds, and neural layers
initialised by these decompositions (``tensorfact.nn``, needs PyTorch).

The names below are re-exported from the subpackages' ``__all__``:
`tensorfact.decomposition` (the algorithms and their results),
`tensorfact.tenalg` (tensor algebra), `tensorfact.tensors` (CP,
Kronecker and sparse tensors) and `tensorfact.formats` (the data-format
protocol).
"""

from importlib.metadata import PackageNotFoundError, version

from . import datasets, decomposition, formats, tenalg, tensors
from ._backend import SingularGramWarning
from .decomposition import *  # noqa: F403
from .formats import DenseTensor, TensorFormat, as_format
from .tenalg import *  # noqa: F403
from .tensors import *  # noqa: F403

try:
    __version__ = version("tensorfact")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.1.0"

__all__ = [
    "__version__", "datasets", "decomposition", "formats", "tenalg", "tensors",
    "SingularGramWarning", "DenseTensor", "TensorFormat", "as_format",
]
__all__ += decomposition.__all__ + tenalg.__all__ + tensors.__all__
