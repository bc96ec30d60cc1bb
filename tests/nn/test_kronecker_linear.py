"""KroneckerLinear and KroneckerEmbedding: dense equivalence, GKPD initialisation, round trips."""

import io

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch import nn  # noqa: E402
from torch.func import functional_call  # noqa: E402

from tensorfact import nearest_kronecker  # noqa: E402
from tensorfact.nn import KroneckerEmbedding, KroneckerLinear  # noqa: E402
from tensorfact.nn._planner import plan_kronecker  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


def _brute_rearrange(W, a, b):
    """Van Loan rearrangement by explicit loops (reference)."""
    (m1, n1), (m2, n2) = a, b
    M = np.empty((m1 * n1, m2 * n2))
    for i1 in range(m1):
        for j1 in range(n1):
            for i2 in range(m2):
                for j2 in range(n2):
                    M[i1 * n1 + j1, i2 * n2 + j2] = W[i1 * m2 + i2, j1 * n2 + j2]
    return M


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize(
    "in_f,out_f,a_shape,rank,bias",
    [(12, 6, (2, 3), 1, True), (12, 6, (3, 4), 3, False), (16, 16, (4, 4), 2, True),
     (10, 35, (5, 2), 4, True), (8, 1, (1, 2), 1, True)],
)
def test_forward_equals_to_dense(dtype, in_f, out_f, a_shape, rank, bias):
    torch.manual_seed(0)
    layer = KroneckerLinear(in_f, out_f, a_shape=a_shape, rank=rank, bias=bias, dtype=dtype)
    dense = layer.to_dense()
    assert isinstance(dense, nn.Linear) and dense.weight.dtype == dtype
    x = torch.randn(2, 5, in_f, dtype=dtype)
    y, yd = layer(x), dense(x)
    assert y.shape == (2, 5, out_f) and y.dtype == dtype
    scale = yd.abs().max().item()
    assert (y - yd).abs().max().item() <= TOL[dtype] * max(scale, 1.0)
    # the dense weight is the sum of Kronecker products (explicit torch.kron)
    W = sum(torch.kron(layer.kron_a[r], layer.kron_b[r]) for r in range(rank))
    assert torch.allclose(dense.weight, W, rtol=0, atol=TOL[dtype])


def test_gradcheck_float64():
    torch.manual_seed(1)
    layer = KroneckerLinear(6, 4, a_shape=(2, 3), rank=2, dtype=torch.float64)
    x = torch.randn(3, 6, dtype=torch.float64, requires_grad=True)

    def f(x, a, b, bias):
        return functional_call(layer, {"kron_a": a, "kron_b": b, "bias": bias}, (x,))

    a = layer.kron_a.detach().clone().requires_grad_(True)
    b = layer.kron_b.detach().clone().requires_grad_(True)
    bias = layer.bias.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (x, a, b, bias))
    # and through the module itself: parameter gradients equal those of the dense layer
    y = layer(x).square().sum()
    y.backward()
    xd = x.detach().clone().requires_grad_(True)
    W = layer.weight()
    yd = (xd @ W.T + layer.bias).square().sum()
    ga, gb = torch.autograd.grad(yd, (layer.kron_a, layer.kron_b))
    assert torch.allclose(layer.kron_a.grad, ga, atol=1e-12)
    assert torch.allclose(layer.kron_b.grad, gb, atol=1e-12)


@pytest.mark.parametrize("shapes", [((3, 4), (4, 6)), ((2, 8), (6, 3)), ((12, 1), (1, 24))])
def test_from_linear_full_rank_reproduces_layer(shapes):
    torch.manual_seed(2)
    lin = nn.Linear(24, 12, dtype=torch.float64)
    before = lin.weight.detach().clone()
    layer = KroneckerLinear.from_linear(lin, shapes=shapes)
    assert torch.equal(lin.weight, before)  # input unchanged
    x = torch.randn(7, 24, dtype=torch.float64)
    assert (layer(x) - lin(x)).abs().max().item() < 1e-10
    assert layer.rank == min(shapes[0][0] * shapes[0][1], shapes[1][0] * shapes[1][1])
    assert layer.plan.rel_error < 1e-12


@pytest.mark.parametrize("rank", [1, 2, 5])
def test_from_linear_low_rank_error_is_optimal(rank):
    torch.manual_seed(3)
    lin = nn.Linear(20, 12, dtype=torch.float64)
    shapes = ((3, 4), (4, 5))
    layer = KroneckerLinear.from_linear(lin, rank=rank, shapes=shapes)
    W = lin.weight.detach().numpy()
    err = (torch.linalg.norm(layer.weight() - lin.weight) / torch.linalg.norm(lin.weight)).item()
    res = nearest_kronecker(W, (3, 4), (4, 5), rank=rank)
    assert err == pytest.approx(res.rel_error, rel=1e-9)
    assert layer.plan.rel_error == pytest.approx(err, rel=1e-9)
    # Eckart-Young on the brute-force rearrangement
    s = np.linalg.svd(_brute_rearrange(W, *shapes), compute_uv=False)
    assert err == pytest.approx(np.sqrt(np.sum(s[rank:] ** 2) / np.sum(s**2)), rel=1e-9)
    assert torch.equal(layer.bias, lin.bias)


def test_from_linear_compression_target():
    torch.manual_seed(4)
    lin = nn.Linear(48, 32)
    layer = KroneckerLinear.from_linear(lin, compression=4)
    n_weight = layer.kron_a.numel() + layer.kron_b.numel()
    assert n_weight <= 48 * 32 / 4
    assert layer.compression >= 4
    assert layer.n_params == n_weight + 32
    # the plan is the best of the candidates it compared
    plan = plan_kronecker(lin.weight, compression=4)
    assert (plan.a_shape, plan.b_shape, plan.rank) == (layer.a_shape, layer.b_shape, layer.rank)
    # and its error is the optimum of nearest_kronecker for the chosen shapes
    res = nearest_kronecker(lin.weight.detach().double().numpy(), layer.a_shape,
                            layer.b_shape, rank=layer.rank)
    assert layer.plan.rel_error == pytest.approx(res.rel_error, rel=1e-9)


def test_float32_layer_keeps_dtype_and_error():
    torch.manual_seed(5)
    lin = nn.Linear(32, 16)
    layer = KroneckerLinear.from_linear(lin, rank=3, shapes=((4, 4), (4, 8)))
    assert layer.kron_a.dtype == torch.float32
    err = (torch.linalg.norm(layer.weight() - lin.weight) / torch.linalg.norm(lin.weight)).item()
    assert err == pytest.approx(layer.plan.rel_error, rel=1e-5)


def test_state_dict_round_trip_torch_and_safetensors(tmp_path):
    torch.manual_seed(6)
    layer = KroneckerLinear(12, 6, a_shape=(2, 3), rank=2)
    buf = io.BytesIO()
    torch.save(layer.state_dict(), buf)
    buf.seek(0)
    other = KroneckerLinear(12, 6, a_shape=(2, 3), rank=2)
    other.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(4, 12)
    assert torch.equal(other(x), layer(x))

    from safetensors.torch import load_file, save_file

    save_file(layer.state_dict(), str(tmp_path / "k.safetensors"))
    third = KroneckerLinear(12, 6, a_shape=(2, 3), rank=2)
    third.load_state_dict(load_file(str(tmp_path / "k.safetensors")))
    assert torch.equal(third(x), layer(x))


def test_repr_and_counts():
    layer = KroneckerLinear(16, 8, a_shape=(2, 4), rank=3)
    r = repr(layer)
    assert "a_shape=(2, 4)" in r and "b_shape=(4, 4)" in r and "rank=3" in r
    assert layer.n_params == 3 * (8 + 16) + 8
    assert sum(p.numel() for p in layer.parameters()) == layer.n_params


def test_bad_input():
    with pytest.raises(ValueError, match="a_shape"):
        KroneckerLinear(10, 6, a_shape=(4, 3))
    with pytest.raises(ValueError, match="rank"):
        KroneckerLinear(10, 6, a_shape=(2, 5), rank=0)
    with pytest.raises(TypeError, match="nn.Linear"):
        KroneckerLinear.from_linear(nn.Conv2d(2, 2, 3))
    lin = nn.Linear(8, 8)
    with pytest.raises(ValueError, match="not both"):
        KroneckerLinear.from_linear(lin, rank=1, compression=2)
    with pytest.raises(ValueError, match="shapes"):
        KroneckerLinear.from_linear(lin, shapes=((3, 2), (2, 4)))
    with pytest.raises(ValueError, match="compression"):
        KroneckerLinear.from_linear(lin, compression=1000)
    layer = KroneckerLinear(8, 8, a_shape=(2, 2))
    with pytest.raises(ValueError, match="last dimension"):
        layer(torch.ones(3, 7))


# --------------------------------------------------------------------------- #
# embeddings
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_embedding_lookup_equals_dense(dtype):
    torch.manual_seed(7)
    emb = KroneckerEmbedding(50, 12, a_shape=(7, 4), rank=3, dtype=dtype)
    assert emb.b_shape == (8, 3)  # 7 * 8 = 56 >= 50 rows
    dense = emb.to_dense()
    idx = torch.tensor([[0, 1, 49], [7, 8, 48]])
    out = emb(idx)
    assert out.shape == (2, 3, 12) and out.dtype == dtype
    assert (out - dense(idx)).abs().max().item() <= TOL[dtype]
    # row i is sum_r kron(A_r[i // p2], B_r[i % p2])
    i = 23
    row = sum(torch.kron(emb.kron_a[r, i // 8], emb.kron_b[r, i % 8]) for r in range(3))
    assert torch.allclose(emb(torch.tensor(i)), row, atol=TOL[dtype])


def test_embedding_from_dense_exact_and_optimal():
    torch.manual_seed(8)
    e = nn.Embedding(30, 8, dtype=torch.float64)
    full = KroneckerEmbedding.from_embedding(e, shapes=((5, 2), (6, 4)))
    idx = torch.arange(30)
    assert (full(idx) - e(idx)).abs().max().item() < 1e-10
    low = KroneckerEmbedding.from_embedding(e, rank=2, shapes=((5, 2), (6, 4)))
    res = nearest_kronecker(e.weight.detach().numpy(), (5, 2), (6, 4), rank=2)
    err = (torch.linalg.norm(low.weight() - e.weight) / torch.linalg.norm(e.weight)).item()
    assert err == pytest.approx(res.rel_error, rel=1e-9)
    # a row count that does not factor nicely is padded (error relative to the real rows)
    e2 = nn.Embedding(31, 8, dtype=torch.float64)
    pad = KroneckerEmbedding.from_embedding(e2)
    assert pad.kron_a.shape[1] * pad.kron_b.shape[1] >= 31
    assert (pad(torch.arange(31)) - e2(torch.arange(31))).abs().max().item() < 1e-10


def test_embedding_gradcheck_and_errors():
    torch.manual_seed(9)
    emb = KroneckerEmbedding(12, 6, a_shape=(3, 2), rank=2, dtype=torch.float64)
    idx = torch.tensor([0, 5, 11, 5])

    def f(a, b):
        return functional_call(emb, {"kron_a": a, "kron_b": b}, (idx,))

    a = emb.kron_a.detach().clone().requires_grad_(True)
    b = emb.kron_b.detach().clone().requires_grad_(True)
    assert torch.autograd.gradcheck(f, (a, b))
    out = emb(idx).sum()
    out.backward()
    assert emb.kron_a.grad is not None and emb.kron_b.grad is not None
    with pytest.raises(IndexError):
        emb(torch.tensor([12]))
    with pytest.raises(TypeError, match="integer"):
        emb(torch.tensor([1.0]))
    with pytest.raises(ValueError, match="embedding_dim"):
        KroneckerEmbedding(12, 7, a_shape=(3, 2))


def test_forward_mode_auto_matches_factored():
    torch.manual_seed(10)
    lin = nn.Linear(64, 48, dtype=torch.float64)
    layer = KroneckerLinear.from_linear(lin, compression=2)
    x = torch.randn(50, 64, dtype=torch.float64)
    y = layer(x)
    # a high-rank sum at 2x is cheaper to form than to apply factor by factor
    assert layer.rank * 64 * 48 + 50 * 64 * 48 < layer.factored_cost(50)
    layer.forward_mode = "auto"
    assert torch.allclose(layer(x), y, rtol=0, atol=1e-12)
    layer.forward_mode = "dense-ish"
    with pytest.raises(ValueError, match="forward_mode"):
        layer(x)


def test_inference_path_leaves_input_unchanged():
    torch.manual_seed(12)
    layer = KroneckerLinear(16, 16, a_shape=(4, 4), rank=1)
    x = torch.randn(3, 16)
    x0 = x.clone()
    with torch.no_grad():
        y = layer(x)
        y2 = layer(x)
    assert torch.equal(x, x0) and torch.equal(y, y2)
    assert torch.allclose(y, layer.to_dense()(x), atol=1e-5)
