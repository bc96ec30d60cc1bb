"""Data structures: CP and Kronecker-structured tensors (and the sparse format)."""

from ..formats.sparse import SparseTensor
from .cp import CPTensor
from .kronecker import KroneckerTensor, SeKronTensor

__all__ = ["CPTensor", "KroneckerTensor", "SeKronTensor", "SparseTensor"]
