import io
import itertools
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
F = torch.nn.functional

from tensorfact import SeKronTensor, kron, nearest_kronecker, rearrange, sekron  # noqa: E402
from tensorfact.nn import GKPDConv2d, SeKronConv2d  # noqa: E402
from tensorfact.nn._conv import _stage_params, kronecker_conv2d  # noqa: E402

TOL = {torch.float32: 1e-5, torch.float64: 1e-12}


@pytest.fixture(autouse=True)
def _one_thread():
    # tiny BLAS/LAPACK calls are orders of magnitude slower with 2 threads on a busy machine
    from threadpoolctl import threadpool_limits

    n = torch.get_num_threads()
    torch.set_num_threads(1)
    with threadpool_limits(1):
        yield
    torch.set_num_threads(n)


GKPD_SHAPES = [((2, 3, 3, 1), (3, 2, 1, 3)), ((4, 2, 1, 1), (2, 3, 3, 3)),
               ((2, 2, 2, 2), (3, 3, 2, 1))]
SEKRON_SHAPES = [((2, 1, 1, 3), (1, 3, 2, 1), (3, 2, 2, 1)),
                 ((2, 2, 1, 1), (2, 1, 3, 1), (1, 3, 1, 3)),
                 ((2, 1, 3, 1), (1, 2, 1, 3), (2, 3, 1, 1))]
VARIANTS = list(itertools.product([1, 2, 3, (2, 1)], [0, 1, (2, 0)], [1, 2, (1, 3)]))


def _gkpd(shapes, rank, dtype, seed, **kw):
    a, b = shapes
    ck = (a[2] * b[2], a[3] * b[3])
    return GKPDConv2d(a[1] * b[1], a[0] * b[0], ck, shapes=shapes, rank=rank, rng=seed,
                      dtype=dtype, **kw)


def _sekron(shapes, ranks, dtype, seed, **kw):
    shp = tuple(math.prod(sh[m] for sh in shapes) for m in range(4))
    return SeKronConv2d(shp[1], shp[0], shp[2:], shapes=shapes, ranks=ranks, rng=seed,
                        dtype=dtype, **kw)


def test_dense_kernel_is_the_kronecker_structure():
    layer = _gkpd(GKPD_SHAPES[0], 2, torch.float64, 0)
    A, B = layer.kron_a.detach(), layer.kron_b.detach()
    torch.testing.assert_close(layer.weight().detach(), kron(A[0], B[0]) + kron(A[1], B[1]),
                               rtol=1e-14, atol=1e-14)
    sk = _sekron(SEKRON_SHAPES[0], (2, 3), torch.float64, 1)
    ref = SeKronTensor([f.detach() for f in sk.factors], (2, 3)).to_dense()
    torch.testing.assert_close(sk.weight().detach(), ref, rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shapes", GKPD_SHAPES)
def test_gkpd_chain_equals_dense_conv_all_variants(dtype, shapes):
    base = _gkpd(shapes, 3, dtype, 2)
    W = base.weight().detach()
    g = torch.Generator().manual_seed(3)
    for stride, padding, dilation in VARIANTS:
        x = torch.randn(2, W.shape[1], 11, 13, generator=g, dtype=dtype)
        y_ref = F.conv2d(x, W, base.bias, stride, padding, dilation)
        y = kronecker_conv2d(x, [base.kron_a, base.kron_b], (3,), bias=base.bias,
                             stride=stride, padding=padding, dilation=dilation)
        assert y.shape == y_ref.shape, (stride, padding, dilation)
        torch.testing.assert_close(y, y_ref, rtol=TOL[dtype], atol=TOL[dtype],
                                   msg=f"stride={stride} padding={padding} dilation={dilation}")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shapes", SEKRON_SHAPES)
def test_sekron_chain_equals_dense_conv_all_variants(dtype, shapes):
    base = _sekron(shapes, (2, 2), dtype, 4)
    W = base.weight().detach()
    g = torch.Generator().manual_seed(5)
    for stride, padding, dilation in VARIANTS:
        x = torch.randn(2, W.shape[1], 12, 11, generator=g, dtype=dtype)
        y_ref = F.conv2d(x, W, base.bias, stride, padding, dilation)
        y = base.__class__.forward(_with(base, stride, padding, dilation), x)
        assert y.shape == y_ref.shape
        torch.testing.assert_close(y, y_ref, rtol=TOL[dtype], atol=TOL[dtype],
                                   msg=f"stride={stride} padding={padding} dilation={dilation}")


def _with(layer, stride, padding, dilation):
    layer.stride = (stride, stride) if isinstance(stride, int) else stride
    layer.padding = (padding, padding) if isinstance(padding, int) else padding
    layer.dilation = (dilation, dilation) if isinstance(dilation, int) else dilation
    return layer


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("padding_mode", ["zeros", "reflect", "replicate", "circular"])
@pytest.mark.parametrize("padding", [1, (2, 1), "same", "valid"])
def test_modules_equal_to_dense_layer(dtype, padding_mode, padding):
    dil = 2 if padding == "same" else 1
    kw = {"padding": padding, "padding_mode": padding_mode, "dilation": dil}
    g = torch.Generator().manual_seed(6)
    for layer in (_gkpd(GKPD_SHAPES[1], 2, dtype, 7, **kw),
                  _sekron(SEKRON_SHAPES[1], (2, 2), dtype, 8, **kw)):
        dense = layer.to_dense()
        assert type(dense) is torch.nn.Conv2d and dense.padding_mode == padding_mode
        x = torch.randn(3, layer.in_channels, 9, 10, generator=g, dtype=dtype)
        torch.testing.assert_close(layer(x), dense(x), rtol=TOL[dtype], atol=TOL[dtype])
        # unbatched input
        torch.testing.assert_close(layer(x[0]), dense(x[0]), rtol=TOL[dtype], atol=TOL[dtype])


def test_stage_parameters_distribute_stride():
    # extents: inner kernel 3 (E_0 = 3 d), stride 3 can be applied on the inner stage
    p = _stage_params([(1, 1), (3, 3)], (3, 3), (1, 1))
    assert p == [((1, 1), (1, 1)), ((3, 3), (1, 1))]
    # stride 2 is coprime to the inner extent 3: inner stage at stride 1
    p = _stage_params([(3, 3), (3, 3)], (2, 2), (1, 1))
    assert p == [((2, 2), (3, 3)), ((1, 1), (1, 1))]
    # stride 4 with inner extent 2 * dilation 2 = 4: all the stride goes inside
    p = _stage_params([(3, 3), (2, 2)], (4, 4), (2, 2))
    assert p == [((1, 1), (1, 1)), ((4, 4), (2, 2))]


def test_gradcheck():
    g = torch.Generator().manual_seed(9)
    layer = _gkpd(((2, 1, 1, 2), (1, 2, 2, 1)), 2, torch.float64, 10, stride=2, padding=1,
                  dilation=(1, 2))
    x = torch.randn(1, 2, 6, 7, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *p: layer(x), (x, *layer.parameters()))
    sk = _sekron(((1, 2, 1, 1), (2, 1, 2, 1), (1, 1, 1, 2)), (2, 2), torch.float64, 11,
                 stride=(1, 2), padding=1)
    x = torch.randn(1, 2, 5, 6, generator=g, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, *p: sk(x), (x, *sk.parameters()))


def _conv(cin, cout, k, seed, dtype=torch.float64, **kw):
    torch.manual_seed(seed)
    return torch.nn.Conv2d(cin, cout, k, dtype=dtype, **kw)


@pytest.mark.parametrize("kw", [{"padding": 1}, {"stride": 2, "padding": 2, "dilation": 2},
                                {"padding": "same", "padding_mode": "reflect"}])
def test_from_conv_full_rank_reproduces(kw):
    conv = _conv(6, 8, 3, 0, **kw)
    x = torch.randn(2, 6, 11, 9, dtype=torch.float64)
    g = GKPDConv2d.from_conv(conv)
    s = SeKronConv2d.from_conv(conv)
    s2 = SeKronConv2d.from_conv(conv, shapes=[(2, 1, 1, 1), (2, 3, 1, 1), (2, 2, 3, 3)])
    for layer in (g, s, s2):
        assert layer.plan.rel_error < 1e-12
        torch.testing.assert_close(layer(x), conv(x), rtol=1e-10, atol=1e-10)
        assert layer.stride == conv.stride and layer.padding_mode == conv.padding_mode


def test_from_conv_low_rank_error_is_optimal():
    conv = _conv(8, 12, 3, 1)
    W = conv.weight.detach()
    shapes = ((4, 2, 3, 1), (3, 4, 1, 3))
    for rank in (1, 3, 7):
        layer = GKPDConv2d.from_conv(conv, rank=rank, shapes=shapes)
        err = float(torch.linalg.vector_norm(layer.weight().detach() - W)
                    / torch.linalg.vector_norm(W))
        # the optimum: tail of the singular values of the Van Loan rearrangement
        s = np.linalg.svd(rearrange(W.numpy(), shapes[0], shapes[1]), compute_uv=False)
        opt = math.sqrt(np.sum(s[rank:] ** 2) / np.sum(s**2))
        assert layer.plan.rel_error == pytest.approx(opt, rel=1e-10)
        assert err == pytest.approx(opt, rel=1e-8)
        res = nearest_kronecker(W.numpy(), shapes[0], shapes[1], rank=rank)
        assert layer.plan.rel_error == pytest.approx(res.rel_error, rel=1e-12)
    sh3 = ((2, 2, 1, 1), (2, 2, 1, 3), (3, 2, 3, 1))
    sk = SeKronConv2d.from_conv(conv, rank=(2, 3), shapes=sh3)
    res = sekron(W.numpy(), sh3, (2, 3))
    err = float(torch.linalg.vector_norm(sk.weight().detach() - W) / torch.linalg.vector_norm(W))
    assert sk.plan.rel_error == pytest.approx(res.rel_error, rel=1e-12)
    assert err == pytest.approx(res.rel_error, rel=1e-8)


@pytest.mark.parametrize("compression", [4.0, 8.0])
def test_from_conv_compression(compression):
    conv = _conv(16, 16, 3, 2, dtype=torch.float32, padding=1)
    for cls in (GKPDConv2d, SeKronConv2d):
        layer = cls.from_conv(conv, compression=compression)
        assert layer.compression >= compression
        assert 0 < layer.plan.rel_error < 1
        assert layer.kron_a.dtype == torch.float32 if cls is GKPDConv2d else True
        W = conv.weight.detach().double()
        err = float(torch.linalg.vector_norm(layer.weight().detach().double() - W)
                    / torch.linalg.vector_norm(W))
        assert err == pytest.approx(layer.plan.rel_error, rel=1e-4)


def test_parameter_counts():
    a, b = (4, 2, 1, 1), (2, 3, 3, 3)
    layer = _gkpd((a, b), 3, torch.float32, 0)
    assert layer.n_params == 3 * (math.prod(a) + math.prod(b)) + 8
    assert _gkpd((a, b), 3, torch.float32, 0, bias=False).n_params == 3 * (8 + 54)
    assert layer.compression == pytest.approx(8 * 6 * 9 / (3 * 62))
    sh = SEKRON_SHAPES[0]
    sk = _sekron(sh, (2, 3), torch.float32, 0, bias=False)
    p = [math.prod(s) for s in sh]
    assert sk.n_params == 2 * p[0] + 2 * 3 * p[1] + 2 * 3 * p[2]
    assert sk.n_params == SeKronTensor([f.detach() for f in sk.factors], (2, 3)).n_params


def test_state_dict_round_trip_and_repr():
    a = _sekron(SEKRON_SHAPES[0], (2, 2), torch.float32, 1, stride=2)
    b = _sekron(SEKRON_SHAPES[0], (2, 2), torch.float32, 2, stride=2)
    buf = io.BytesIO()
    torch.save(a.state_dict(), buf)
    buf.seek(0)
    b.load_state_dict(torch.load(buf, weights_only=True))
    x = torch.randn(1, a.in_channels, 8, 8)
    torch.testing.assert_close(a(x), b(x), rtol=0, atol=0)
    g1 = _gkpd(GKPD_SHAPES[0], 2, torch.float32, 3)
    g2 = _gkpd(GKPD_SHAPES[0], 2, torch.float32, 4)
    g2.load_state_dict(g1.state_dict())
    x = torch.randn(1, g1.in_channels, 8, 8)
    torch.testing.assert_close(g1(x), g2(x), rtol=0, atol=0)
    assert set(g1.state_dict()) == {"kron_a", "kron_b", "bias"}
    assert "rank=2" in repr(g1) and "a_shape=(2, 3, 3, 1)" in repr(g1)
    assert "ranks=(2, 2)" in repr(a)


def test_from_conv_leaves_conv_unchanged():
    conv = _conv(4, 4, 3, 3)
    before = conv.weight.detach().clone()
    GKPDConv2d.from_conv(conv, rank=2)
    SeKronConv2d.from_conv(conv, rank=2, shapes=[(2, 1, 1, 1), (1, 2, 1, 1), (2, 2, 3, 3)])
    torch.testing.assert_close(conv.weight.detach(), before, rtol=0, atol=0)


def test_bad_input():
    conv = _conv(4, 4, 3, 0)
    with pytest.raises(ValueError, match="groups"):
        GKPDConv2d.from_conv(torch.nn.Conv2d(4, 4, 3, groups=2))
    with pytest.raises(TypeError, match="Conv2d"):
        GKPDConv2d.from_conv(torch.nn.Linear(3, 3))
    with pytest.raises(ValueError, match="not both"):
        GKPDConv2d.from_conv(conv, rank=1, compression=2.0)
    with pytest.raises(ValueError, match="multiply"):
        GKPDConv2d.from_conv(conv, shapes=((2, 2, 3, 3), (2, 1, 1, 1)))
    with pytest.raises(ValueError, match="rank of level"):
        GKPDConv2d(4, 4, 3, shapes=((2, 2, 1, 1), (2, 2, 3, 3)), rank=5)
    with pytest.raises(ValueError, match="compression"):
        GKPDConv2d.from_conv(conv, compression=1000.0)
    with pytest.raises(ValueError, match="padding_mode"):
        GKPDConv2d(4, 4, 3, shapes=((2, 2, 1, 1), (2, 2, 3, 3)), padding_mode="mirror")
    layer = GKPDConv2d(4, 4, 3, shapes=((2, 2, 1, 1), (2, 2, 3, 3)), rng=0)
    with pytest.raises(ValueError, match="x must have shape"):
        layer(torch.zeros(1, 3, 5, 5))
