"""Planted problems with known solutions, and data-file formats."""

from ._planted import planted_cp
from ._planted_sparse import planted_sparse_cp
from ._planted_store import planted_sparse_store
from .frostt import read_tns, write_tns

__all__ = ["planted_cp", "planted_sparse_cp", "planted_sparse_store", "read_tns", "write_tns"]
