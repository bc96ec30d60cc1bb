"""Sparse tensors in partitions on disk, computed on with Dask: `DaskSparseTensor`.

A store is a directory with a ``meta.json`` and ``.npy`` partition files
(layout in `tensorfact.formats.dask_sparse._store`): the nonzeros in
canonical order, cut into key ranges, plus per mode a fiber index (the same
nonzeros ordered by the other modes' linear index) for the sampled-fiber
access of SPALS. Building a store (`DaskSparseTensor.from_tns`,
`DaskSparseTensor.from_sparse`,
`tensorfact.datasets.planted_sparse_store`) is an external bucket sort
that never holds the tensor in memory. Needs ``dask``; ``distributed`` is
used when a client is active.
"""

from ._tensor import DaskSparseTensor

__all__ = ["DaskSparseTensor"]
