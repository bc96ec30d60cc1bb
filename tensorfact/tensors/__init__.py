"""Data structures: CP, Tucker and Kronecker-structured tensors (and the sparse format)."""

from ..formats.sparse import SparseTensor
from .cp import CPTensor
from .kronecker import KroneckerTensor, SeKronTensor
from .tucker import TuckerTensor

__all__ = ["CPTensor", "KroneckerTensor", "SeKronTensor", "SparseTensor", "TuckerTensor"]
