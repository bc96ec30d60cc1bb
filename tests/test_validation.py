"""The shared argument checks of tensorfact._validation (those not covered elsewhere)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tensorfact._validation import ArgumentTypeError, check_path


@pytest.mark.parametrize("value", ["a/b", b"a/b", Path("a/b")])
def test_check_path_accepts_path_likes(value):
    assert check_path(value, "store") == Path("a/b")


@pytest.mark.parametrize("value", [None, 3, 2.5, ["a"], object()])
def test_check_path_refuses_others_naming_the_argument(value):
    with pytest.raises(ArgumentTypeError, match="store must be a path"):
        check_path(value, "store")


def test_check_path_refuses_an_empty_path():
    with pytest.raises(ValueError, match="store must be a non-empty path"):
        check_path("", "store")


def test_store_arguments_are_checked_once(tmp_path):
    from tensorfact.datasets import planted_sparse_store
    from tensorfact.formats import DaskSparseTensor

    for bad in (None, 3):
        with pytest.raises(TypeError, match="store must be a path"):
            DaskSparseTensor(bad)
        with pytest.raises(TypeError, match="store must be a path"):
            planted_sparse_store(bad, (4, 4), 1, 5, rng=0)


def test_dask_dense_refuses_masked_chunks():
    da = pytest.importorskip("dask.array")
    import numpy as np

    from tensorfact.formats import DaskDenseTensor

    X = da.from_array(np.ma.array(np.ones((4, 4)), mask=np.eye(4) > 0), chunks=2)
    with pytest.raises(TypeError, match="X is a NumPy masked array"):
        DaskDenseTensor(X)
