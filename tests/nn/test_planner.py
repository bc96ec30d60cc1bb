"""The one planner of the Kronecker layers: choices, optimality among candidates, layer reuse."""

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from tensorfact import SeKronTensor, kronecker_shapes, nearest_kronecker, sekron  # noqa: E402
from tensorfact.nn import (  # noqa: E402
    GKPDConv2d,
    KroneckerConvPlan,
    KroneckerEmbedding,
    KroneckerLinear,
    KroneckerPlan,
    SeKronConv2d,
)
from tensorfact.nn._planner import fit_kronecker, matmul_candidates, plan_kronecker  # noqa: E402


def _weight(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("shape,compression", [((48, 32), 4.0), ((64, 64), 2.0), ((30, 12), 3.0)])
def test_matmul_plan_is_the_best_of_the_balanced_candidates(shape, compression):
    W = _weight(shape, 0)
    fit = fit_kronecker(W, compression=compression, max_candidates=4)
    plan = fit.plan
    # brute force: the 4 most balanced shapes, each at its largest rank within the budget
    best = math.inf
    for sh in matmul_candidates(shape)[:4]:
        per_rank = sum(math.prod(s) for s in sh)
        r = min(int(math.prod(shape) / compression // per_rank), min(math.prod(s) for s in sh))
        if r >= 1:
            best = min(best, nearest_kronecker(W, sh[0], sh[1], rank=r).rel_error)
    assert plan.rel_error == pytest.approx(best, rel=1e-10)
    assert plan.n_params <= math.prod(shape) / compression
    # the factors are nearest_kronecker's for the chosen shapes and rank
    res = nearest_kronecker(W, plan.a_shape, plan.b_shape, rank=plan.rank)
    for f, g in zip(fit.factors, res.kt.factors):
        np.testing.assert_allclose(f, g, rtol=1e-12, atol=1e-12)
    assert plan.n_params == res.kt.n_params


def test_matmul_candidates_order():
    cands = matmul_candidates((64, 64))
    assert cands[0] == ((8, 8), (8, 8))
    assert len(cands) == len(kronecker_shapes((64, 64), max_candidates=None))
    sizes = [sum(math.prod(s) for s in c) for c in cands]
    assert sizes == sorted(sizes)


def test_conv_plan_sekron_is_the_best_compared():
    W = _weight((16, 16, 3, 3), 1)
    fit = fit_kronecker(W, product="conv", n_factors=3, compression=4.0, max_candidates=3)
    plan = fit.plan
    res = sekron(W, plan.shapes, plan.ranks)
    assert plan.rel_error == pytest.approx(res.rel_error, rel=1e-12)
    assert plan.n_params == res.sekron.n_params == SeKronTensor.n_params_for(plan.shapes,
                                                                            plan.ranks)
    assert plan.n_params <= W.size / 4
    np.testing.assert_allclose(SeKronTensor(list(fit.factors), plan.ranks).to_dense(),
                               res.sekron.to_dense(), rtol=1e-12, atol=1e-12)


def test_plan_fields_and_views():
    two = plan_kronecker(_weight((12, 20), 2), rank=2, shapes=((3, 4), (4, 5)))
    assert isinstance(two, KroneckerPlan) and KroneckerConvPlan is KroneckerPlan
    assert (two.a_shape, two.b_shape, two.rank, two.ranks) == ((3, 4), (4, 5), 2, (2,))
    assert two.n_factors == 2 and two.detail == "(3, 4)x(4, 5) rank 2"
    three = plan_kronecker(_weight((8, 8), 3), n_factors=3, rank=(2, 3),
                           shapes=((2, 2), (2, 2), (2, 2)))
    assert three.ranks == (2, 3) and three.rank == 6
    assert three.detail == "(2, 2)x(2, 2)x(2, 2) ranks (2, 3)"
    with pytest.raises(AttributeError, match="two-factor"):
        three.a_shape  # noqa: B018


def test_planner_bad_input():
    W = _weight((8, 8), 4)
    with pytest.raises(ValueError, match="not both"):
        fit_kronecker(W, rank=1, compression=2)
    with pytest.raises(ValueError, match="product"):
        fit_kronecker(W, product="fft")
    with pytest.raises(ValueError, match="reaches compression"):
        fit_kronecker(W, compression=100)
    with pytest.raises(ValueError, match="n_factors"):
        fit_kronecker(W, n_factors=1)
    with pytest.raises(TypeError, match="compression"):
        fit_kronecker(W, compression="2")
    with pytest.raises(ValueError, match="multiply"):
        fit_kronecker(W, shapes=((2, 2), (2, 2)))
    with pytest.raises(ValueError, match="no nontrivial"):
        fit_kronecker(_weight((1, 7), 5))


def test_every_layer_plans_with_the_planner():
    torch.manual_seed(0)
    lin = nn.Linear(48, 32, dtype=torch.float64)
    layer = KroneckerLinear.from_linear(lin, compression=3)
    assert layer.plan == plan_kronecker(lin.weight, compression=3)
    emb = nn.Embedding(64, 16, dtype=torch.float64)
    e = KroneckerEmbedding.from_embedding(emb, compression=2)
    assert e.plan == plan_kronecker(emb.weight, compression=2)
    conv = nn.Conv2d(8, 16, 3, dtype=torch.float64)
    g = GKPDConv2d.from_conv(conv, compression=4)
    assert g.plan == plan_kronecker(conv.weight, product="conv", compression=4,
                                    max_candidates=6)
    s = SeKronConv2d.from_conv(conv, compression=4)
    assert s.plan == plan_kronecker(conv.weight, product="conv", n_factors=3, compression=4,
                                    max_candidates=6)


def test_conv_layers_are_sekron_tensors():
    torch.manual_seed(1)
    conv = nn.Conv2d(8, 16, 3, dtype=torch.float64)
    for layer in (GKPDConv2d.from_conv(conv, rank=3),
                  SeKronConv2d.from_conv(conv, rank=(2, 2))):
        kernel = layer.kernel()
        assert isinstance(kernel, SeKronTensor) and kernel.ranks == layer.ranks
        assert layer.n_params == kernel.n_params + 16 == layer.plan.n_params + 16
        assert layer.compression == pytest.approx(kernel.compression_ratio)
        torch.testing.assert_close(layer.weight(), kernel.to_dense())
