"""Argument checks shared by the nn layers and functions (tensorfact.nn._common)."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from tensorfact import nn as tnn  # noqa: E402


@pytest.mark.parametrize("bad", [8.5, np.float64(8), "8", True, None, 1j, [8]])
def test_counts_refuse_non_integers_naming_the_argument(bad):
    with pytest.raises(TypeError, match="dim must be a positive integer"):
        tnn.CompacterAdapter(bad)
    with pytest.raises(TypeError, match="embedding_dim must be a positive integer"):
        tnn.KroneckerEmbedding(6, bad, a_shape=(2, 2))


def test_zero_dim_is_reported_as_dim():
    with pytest.raises(ValueError, match="^dim must be a positive integer"):
        tnn.CompacterAdapter(0)


@pytest.mark.parametrize("model", [None, "net", 3])
def test_model_must_be_a_module(model):
    for call in (lambda: tnn.rosa(model, rank=1), lambda: tnn.merge_rosa(model),
                 lambda: tnn.resample_rosa(model),
                 lambda: tnn.add_adapters(model, targets="0")):
        with pytest.raises(TypeError, match="model must be a torch.nn.Module"):
            call()


def test_kronecker_conv2d_refuses_numpy_and_names_ranks():
    x = torch.ones(1, 2, 5, 5, dtype=torch.float64)
    A = torch.ones(1, 2, 1, 3, 1, dtype=torch.float64)
    Bf = torch.ones(1, 2, 2, 1, 3, dtype=torch.float64)
    with pytest.raises(TypeError, match="^x must be a torch.Tensor"):
        tnn.kronecker_conv2d(x.numpy(), [A, Bf], [1])
    with pytest.raises(TypeError, match=r"factors\[0\] must be a torch.Tensor"):
        tnn.kronecker_conv2d(x, [A.numpy(), Bf], [1])
    with pytest.raises(TypeError, match="ranks must contain integers"):
        tnn.kronecker_conv2d(x, [A, Bf], [1.5])
    with pytest.raises(ValueError, match="ranks="):
        tnn.kronecker_conv2d(x, [A, Bf], [2])
    assert tnn.kronecker_conv2d(x, [A, Bf], [1]).shape[:2] == (1, 4)


def test_gkpd_conv_rank_is_one_int():
    with pytest.raises(TypeError, match="rank must be a positive integer"):
        tnn.GKPDConv2d(4, 4, 3, shapes=((2, 2, 1, 1), (2, 2, 3, 3)), rank=[1])
