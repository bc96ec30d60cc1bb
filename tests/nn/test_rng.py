"""rng= (SPEC 7) on every layer that draws: host draws, seeds reproduce, torch's RNG untouched."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402

from tensorfact.nn import (  # noqa: E402
    CompacterAdapter,
    CPLinear,
    CPRNNCell,
    GKPDConv2d,
    KroneckerEmbedding,
    KroneckerLinear,
    PHMLinear,
    PHMRules,
    ROSALinear,
    SecondOrderRNNCell,
    SeKronConv2d,
    add_adapters,
)


def _fixed_linear():
    lin = nn.Linear(6, 4)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(np.random.default_rng(0).standard_normal((4, 6))))
        lin.bias.zero_()
    return lin


BUILDERS = {
    "KroneckerLinear": lambda rng: KroneckerLinear(12, 6, a_shape=(2, 3), rank=2, rng=rng),
    "KroneckerEmbedding": lambda rng: KroneckerEmbedding(20, 6, a_shape=(5, 2), rank=2, rng=rng),
    "PHMRules": lambda rng: PHMRules(3, rng=rng),
    "PHMLinear": lambda rng: PHMLinear(8, 12, n=4, rank=1, rng=rng),
    "PHMLinear full": lambda rng: PHMLinear(8, 12, n=2, rng=rng),
    "CompacterAdapter": lambda rng: CompacterAdapter(16, reduction=4, n=2,
                                                     init_identity=False, rng=rng),
    "CPLinear": lambda rng: CPLinear(12, 6, in_shape=(3, 4), out_shape=(2, 3), rank=2, rng=rng),
    "GKPDConv2d": lambda rng: GKPDConv2d(4, 4, 3, shapes=((2, 2, 1, 1), (2, 2, 3, 3)), rank=2,
                                         rng=rng),
    "SeKronConv2d": lambda rng: SeKronConv2d(4, 4, 3, shapes=((2, 1, 1, 1), (1, 2, 1, 1),
                                                              (2, 2, 3, 3)), ranks=2, rng=rng),
    "SecondOrderRNNCell": lambda rng: SecondOrderRNNCell(3, 4, rng=rng),
    "CPRNNCell": lambda rng: CPRNNCell(3, 4, 2, rng=rng),
    "ROSALinear": lambda rng: ROSALinear.from_linear(_fixed_linear(), 2, rng=rng),
}


def _state(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_seed_reproduces_and_torch_rng_is_untouched(name):
    build = BUILDERS[name]
    torch.manual_seed(0)
    a = _state(build(7))
    before = torch.get_rng_state()
    b = _state(build(7))
    if name != "ROSALinear":  # its nn.Linear argument draws from torch, not the layer
        assert torch.equal(torch.get_rng_state(), before)
    c = _state(build(np.random.default_rng(7)))
    d = _state(build(8))
    assert a.keys() == b.keys() == c.keys() == d.keys()
    for k in a:
        assert torch.equal(a[k], b[k]) and torch.equal(a[k], c[k])
    assert any(not torch.equal(a[k], d[k]) for k in a if a[k].numel() > 1)


@pytest.mark.parametrize("name", ["KroneckerLinear", "KroneckerEmbedding", "PHMLinear",
                                  "PHMRules", "CPLinear", "GKPDConv2d", "SeKronConv2d"])
def test_reset_parameters_takes_rng(name):
    layer = BUILDERS[name](1)
    layer.reset_parameters(rng=5)
    first = _state(layer)
    layer.reset_parameters(rng=np.random.default_rng(5))
    for k, v in _state(layer).items():
        assert torch.equal(v, first[k])


def test_dtype_and_device_of_host_draws():
    layer = KroneckerLinear(12, 6, a_shape=(2, 3), rank=2, rng=0, dtype=torch.float64)
    assert layer.kron_a.dtype == torch.float64 and layer.bias.dtype == torch.float64
    same = KroneckerLinear(12, 6, a_shape=(2, 3), rank=2, rng=0, dtype=torch.float32)
    # one seed, the same numbers in every dtype (rounded)
    torch.testing.assert_close(same.kron_a, layer.kron_a.float())
    # the variance of nn.Linear's default weights (1 / (3 fan_in)), on average
    big = KroneckerLinear(256, 256, a_shape=(16, 16), rank=4, rng=1, dtype=torch.float64)
    var = big.weight().var().item()
    assert var == pytest.approx(1 / (3 * 256), rel=0.2)


def test_add_adapters_rng():
    net = nn.Sequential(nn.Linear(16, 16), nn.ReLU(), nn.Linear(16, 16))
    a = add_adapters(net, targets=r"0|2", reduction=4, n=2, rng=3)
    b = add_adapters(net, targets=r"0|2", reduction=4, n=2, rng=3)
    for (k, v), (_, w) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.equal(v, w), k
    c = add_adapters(net, targets=r"0|2", reduction=4, n=2, rng=4)
    assert not torch.equal(a[0].adapter.rules.weight, c[0].adapter.rules.weight)


def test_bad_rng():
    with pytest.raises(TypeError, match="rng"):
        KroneckerLinear(12, 6, a_shape=(2, 3), rng="seed")
    with pytest.raises(TypeError, match="rng"):
        PHMRules(2, rng=1.5)
