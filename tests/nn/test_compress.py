"""compress / compress_state_dict / ``tensorfact compress``: optimal errors, untouched layers."""

import dataclasses
import json
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
safetensors_numpy = pytest.importorskip("safetensors.numpy")

from torch import nn  # noqa: E402

from tensorfact import nearest_kronecker  # noqa: E402
from tensorfact.cli import main  # noqa: E402
from tensorfact.nn import CompressionReport, KroneckerEmbedding, KroneckerLinear, compress  # noqa: E402
from tensorfact.nn._compress import compress_state_dict  # noqa: E402


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(64, 16)
        self.encoder = nn.ModuleDict({
            "q": nn.Linear(16, 16), "ffn": nn.Linear(16, 48), "out": nn.Linear(48, 16),
        })
        self.head = nn.Linear(16, 4)

    def forward(self, idx):
        h = self.emb(idx)
        h = h + self.encoder["q"](h)
        h = h + self.encoder["out"](torch.relu(self.encoder["ffn"](h)))
        return self.head(h)


def _net(dtype=torch.float64):
    torch.manual_seed(0)
    return _Net().to(dtype)


def test_compress_replaces_selected_layers_and_reports_optimal_errors():
    model = _net()
    ref_state = {k: v.clone() for k, v in model.state_dict().items()}
    new, report = compress(model, compression=2, include=r"^encoder\.")
    # the input model is untouched
    assert all(torch.equal(v, ref_state[k]) for k, v in model.state_dict().items())
    assert [r.name for r in report.layers] == ["encoder.q", "encoder.ffn", "encoder.out"]
    for row in report.layers:
        old = model.get_submodule(row.name)
        layer = new.get_submodule(row.name)
        assert isinstance(layer, KroneckerLinear)
        W = old.weight.detach()
        err = (torch.linalg.norm(layer.weight().detach() - W) / torch.linalg.norm(W)).item()
        res = nearest_kronecker(W.numpy(), layer.a_shape, layer.b_shape, rank=layer.rank)
        assert row.rel_error == pytest.approx(res.rel_error, rel=1e-9, abs=1e-14)
        assert row.rel_error == pytest.approx(err, rel=1e-7, abs=1e-12)
        n_w = layer.kron_a.numel() + layer.kron_b.numel()
        assert n_w <= W.numel() / 2
        assert row.params_before == W.numel() + W.shape[0]
        assert row.params_after == n_w + W.shape[0] == layer.n_params
    # excluded / unselected layers are bit-identical copies
    for name in ("emb", "head"):
        for k, v in new.get_submodule(name).state_dict().items():
            assert torch.equal(v, model.get_submodule(name).state_dict()[k])
    assert type(new.head) is nn.Linear and type(new.emb) is nn.Embedding
    assert report.model_params_before == sum(p.numel() for p in model.parameters())
    assert report.model_params_after == sum(p.numel() for p in new.parameters())
    assert report.model_params_after < report.model_params_before
    idx = torch.tensor([[1, 2, 3]])
    assert new(idx).shape == (1, 3, 4)


def test_compress_exclude_and_embeddings():
    model = _net()
    new, report = compress(model, compression=2, exclude=r"head|ffn")
    names = [r.name for r in report.layers]
    assert names == ["emb", "encoder.q", "encoder.out"]
    assert isinstance(new.emb, KroneckerEmbedding)
    assert torch.equal(new.head.weight, model.head.weight)
    assert torch.equal(new.encoder["ffn"].weight, model.encoder["ffn"].weight)
    row = report.layers[0]
    res = nearest_kronecker(model.emb.weight.detach().numpy(), new.emb.a_shape,
                            new.emb.b_shape, rank=new.emb.rank)
    assert row.rel_error == pytest.approx(res.rel_error, rel=1e-9)


def test_compress_full_model_float32_and_report_table():
    model = _net(torch.float32)
    new, report = compress(model, method="gkpd", compression=3)
    assert len(report.layers) + len(report.skipped) == 5
    table = str(report)
    assert "encoder.q" in table and "rel. error" in table and "total" in table
    assert report.to_table(markdown=True).startswith("| layer |")
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.method = "x"
    assert isinstance(report, CompressionReport)
    d = report.to_dict()
    json.dumps(d)
    assert d["params_before"] == report.params_before
    for row in report.layers:
        layer = new.get_submodule(row.name)
        W = model.get_submodule(row.name).weight.detach().double()
        err = (torch.linalg.norm(layer.weight().detach().double()[: W.shape[0]] - W)
               / torch.linalg.norm(W)).item()
        assert err == pytest.approx(row.rel_error, rel=1e-4, abs=1e-6)


def test_compress_state_dict_round_trip():
    model = _net()
    new, _ = compress(model, compression=2, include=r"^encoder\.q$")
    buf = {k: v.clone() for k, v in new.state_dict().items()}
    fresh, _ = compress(_net(), compression=2, include=r"^encoder\.q$")
    fresh.load_state_dict(buf)
    idx = torch.tensor([[5, 6]])
    assert torch.equal(fresh(idx), new(idx))


def test_compress_bad_input():
    model = _net()
    with pytest.raises(ValueError, match="method"):
        compress(model, method="tucker")
    with pytest.raises(ValueError, match="compression"):
        compress(model, compression=1.0)
    with pytest.raises(ValueError, match="regular expression"):
        compress(model, include="(")
    with pytest.raises(ValueError, match="no Linear"):
        compress(model, include="nothing-matches")
    with pytest.raises(TypeError, match="Module"):
        compress({"a": 1})
    # a layer too small for the target is reported as skipped, not silently dense
    tiny = nn.Sequential(nn.Linear(2, 2), nn.Linear(64, 64))
    _, rep = compress(tiny, compression=2)
    assert [n for n, _ in rep.skipped] == ["0"] and [r.name for r in rep.layers] == ["1"]


# --------------------------------------------------------------------------- #
# checkpoints and the command line
# --------------------------------------------------------------------------- #
def _checkpoint(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {
        "enc.q.weight": rng.standard_normal((16, 24)).astype(np.float32),
        "enc.q.bias": rng.standard_normal(16).astype(np.float32),
        "enc.k.weight": rng.standard_normal((12, 12)).astype(np.float32),
        "norm.weight": np.ones(16, dtype=np.float32),
        "conv.weight": rng.standard_normal((4, 2, 3, 3)).astype(np.float32),
        "steps": np.arange(3, dtype=np.int64),
    }
    path = tmp_path / "ckpt.safetensors"
    safetensors_numpy.save_file(tensors, str(path))
    return path, tensors


def test_cli_compress_round_trip(tmp_path, capsys):
    path, tensors = _checkpoint(tmp_path)
    out = tmp_path / "small.safetensors"
    rc = main(["compress", str(path), "--out", str(out), "--compression", "2",
               "--exclude", r"enc\.k"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "enc.q.weight" in printed and "wrote" in printed
    got = safetensors_numpy.load_file(str(out))
    assert set(got) == {"enc.q.kron_a", "enc.q.kron_b", "enc.q.bias", "enc.k.weight",
                        "norm.weight", "conv.weight", "steps"}
    for k in ("enc.q.bias", "enc.k.weight", "norm.weight", "conv.weight", "steps"):
        assert np.array_equal(got[k], tensors[k]) and got[k].dtype == tensors[k].dtype
    A, Bf = got["enc.q.kron_a"], got["enc.q.kron_b"]
    assert A.dtype == np.float32 and A.size + Bf.size <= 16 * 24 / 2
    W_hat = sum(np.kron(A[r], Bf[r]) for r in range(A.shape[0]))
    W = tensors["enc.q.weight"].astype(np.float64)
    err = np.linalg.norm(W_hat - W) / np.linalg.norm(W)
    report = json.loads((tmp_path / "small.json").read_text())
    (row,) = report["layers"]
    assert row["name"] == "enc.q.weight"
    assert err == pytest.approx(row["rel_error"], rel=1e-5)
    res = nearest_kronecker(W, A.shape[1:], Bf.shape[1:], rank=A.shape[0])
    assert row["rel_error"] == pytest.approx(res.rel_error, rel=1e-12)
    # the factors load straight into a KroneckerLinear of the same shapes
    layer = KroneckerLinear(24, 16, a_shape=A.shape[1:], rank=A.shape[0])
    layer.load_state_dict({"kron_a": torch.from_numpy(A), "kron_b": torch.from_numpy(Bf),
                           "bias": torch.from_numpy(got["enc.q.bias"])})
    x = torch.randn(3, 24)
    bias = torch.from_numpy(tensors["enc.q.bias"])
    expect = x.double() @ torch.from_numpy(W_hat).double().T + bias
    assert torch.allclose(layer(x).double(), expect, atol=1e-4)


def test_cli_compress_rejects_other_formats(tmp_path):
    np.save(tmp_path / "w.npy", np.ones((4, 4)))
    with pytest.raises(SystemExit, match="safetensors"):
        main(["compress", str(tmp_path / "w.npy"), "--out", str(tmp_path / "o.safetensors")])
    with pytest.raises(SystemExit, match="no such file"):
        main(["compress", str(tmp_path / "missing.safetensors"), "--out",
              str(tmp_path / "o.safetensors")])


def test_compress_state_dict_direct():
    rng = np.random.default_rng(1)
    tensors = {"a.weight": rng.standard_normal((8, 8)), "b": rng.standard_normal((6, 10))}
    out, rep = compress_state_dict(tensors, compression=2)
    assert set(out) == {"a.kron_a", "a.kron_b", "b.kron_a", "b.kron_b"}
    assert [r.name for r in rep.layers] == ["a.weight", "b"]
    with pytest.raises(ValueError, match="method"):
        compress_state_dict(tensors, method="sekron")


@pytest.mark.parametrize("method", ["gkpd", "sekron"])
def test_compress_convolutions(method):
    import tensorfact.nn as tnn

    cls = getattr(tnn, "SeKronConv2d" if method == "sekron" else "GKPDConv2d")
    torch.manual_seed(11)
    model = nn.Sequential(nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),
                          nn.Conv2d(16, 16, 3, padding=1), nn.Flatten(), nn.Linear(16 * 36, 4))
    model = model.double()
    new, report = compress(model, method=method, compression=2, exclude=r"^4$")
    names = [r.name for r in report.layers]
    assert names and set(names) <= {"0", "2"}
    assert torch.equal(new[4].weight, model[4].weight)
    for row in report.layers:
        layer = new.get_submodule(row.name)
        assert isinstance(layer, cls)
        W = model.get_submodule(row.name).weight.detach()
        W_hat = layer.to_dense().weight.detach()
        err = (torch.linalg.norm(W_hat - W) / torch.linalg.norm(W)).item()
        assert row.rel_error == pytest.approx(err, rel=1e-6, abs=1e-10)
        assert row.params_after < row.params_before
    x = torch.randn(2, 8, 6, 6, dtype=torch.float64)
    assert new(x).shape == (2, 4)


# --------------------------------------------------------------------------- #
# per-layer decisions: poor approximations, tiny layers, tied modules and weights
# --------------------------------------------------------------------------- #
def _kron_linear(seed, a=(4, 8), b=(8, 4)):
    """A Linear whose weight is exactly one Kronecker product (optimal error 0)."""
    rng = np.random.default_rng(seed)
    W = np.kron(rng.standard_normal(a), rng.standard_normal(b))
    lin = nn.Linear(W.shape[1], W.shape[0], dtype=torch.float64)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(W))
    return lin


def test_compress_keeps_poor_layers_dense():
    torch.manual_seed(1)
    model = nn.Sequential(_kron_linear(0), nn.ReLU(), nn.Linear(32, 32, dtype=torch.float64))
    new, report = compress(model, compression=2, max_rel_error=0.5)
    assert [r.name for r in report.layers] == ["0"] and report.layers[0].rel_error < 1e-12
    assert not report.layers[0].skipped and report.layers[0].reason is None
    (row,) = report.kept_dense
    assert row.name == "2" and row.skipped and "max_rel_error" in row.reason
    assert row.new_type == row.type == "Linear" and row.params_after == row.params_before
    # the error is the optimal one of the structure it was not replaced by
    layer = KroneckerLinear.from_linear(model[2], compression=2)
    assert row.rel_error == layer.plan.rel_error > 0.5
    assert row.detail == layer.plan.detail
    assert report.skipped == (("2", row.reason),)
    assert type(new[2]) is nn.Linear and torch.equal(new[2].weight, model[2].weight)
    assert "kept dense 2: relative error" in str(report)
    # without a limit every layer is replaced
    _, everything = compress(model, compression=2, max_rel_error=None)
    assert [r.name for r in everything.layers] == ["0", "2"] and everything.kept_dense == ()


def test_compress_default_threshold_catches_structureless_layers():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), _kron_linear(1).float())
    _, report = compress(model, compression=16)
    assert [r.name for r in report.layers] == ["2"]
    (row,) = report.kept_dense
    assert row.name == "0" and row.rel_error > 0.9 and "max_rel_error 0.9" in row.reason
    assert report.max_rel_error == 0.9 and report.min_features == 4


def test_compress_keeps_tiny_layers_dense():
    torch.manual_seed(3)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.token_type = nn.Embedding(2, 384)
            self.stem = nn.Conv2d(1, 16, 3, padding=1)
            self.rgb = nn.Conv2d(3, 16, 3, padding=1)
            self.body = nn.Conv2d(16, 16, 3, padding=1)

    model = Net()
    new, report = compress(model, compression=2, max_rel_error=None)
    assert [r.name for r in report.layers] == ["body"]
    reasons = dict(report.skipped)
    assert set(reasons) == {"token_type", "stem", "rgb"}
    assert "num_embeddings = 2 < min_features = 4" in reasons["token_type"]
    assert "in_channels = 1" in reasons["stem"] and "in_channels = 3" in reasons["rgb"]
    assert all(math.isnan(r.rel_error) for r in report.kept_dense)
    assert type(new.stem) is nn.Conv2d and type(new.token_type) is nn.Embedding
    d = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert [r["rel_error"] for r in d["kept_dense"]] == [None, None, None]
    assert [tuple(p) for p in d["skipped"]] == list(report.skipped)
    # the threshold is an argument
    _, small = compress(model, compression=2, max_rel_error=None, min_features=1,
                        include="token_type")
    assert [r.name for r in small.layers] == ["token_type"]


def test_compress_replaces_a_tied_module_by_one_shared_module():
    torch.manual_seed(4)

    class Tied(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Linear(32, 32)
            self.dec = self.enc  # the same module object at two places
            self.head = nn.Linear(32, 8)

        def forward(self, x):
            return self.head(self.dec(torch.relu(self.enc(x))))

    model = Tied()
    new, report = compress(model, compression=2, max_rel_error=None)
    assert isinstance(new.enc, KroneckerLinear) and new.enc is new.dec
    assert [r.name for r in report.layers] == ["enc", "head"]
    assert report.layers[0].aliases == ("dec",) and report.layers[1].aliases == ()
    assert report.model_params_after == sum(p.numel() for p in new.parameters())
    assert report.model_params_after == (new.enc.n_params + new.head.n_params)
    assert "enc is also at dec (one shared module)" in str(report)
    x = torch.randn(3, 32)
    assert new(x).shape == (3, 8)
    # a tied module selected at only one of its places stays dense everywhere
    new2, rep2 = compress(model, compression=2, exclude="^dec$", max_rel_error=None)
    assert type(new2.enc) is nn.Linear and new2.enc is new2.dec
    assert dict(rep2.skipped)["enc"] == "also used as dec, which is not selected"


def test_compress_keeps_shared_weights_dense():
    torch.manual_seed(5)

    class SharedWeight(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = nn.Embedding(32, 16)
            self.out = nn.Linear(16, 32, bias=False)
            self.out.weight = self.emb.weight  # parameter tying (two modules, one weight)
            self.mid = nn.Linear(16, 16)

    model = SharedWeight()
    new, report = compress(model, compression=2, max_rel_error=None)
    assert [r.name for r in report.layers] == ["mid"]
    reasons = dict(report.skipped)
    assert reasons == {"emb": "its weight is shared with out",
                       "out": "its weight is shared with emb"}
    assert new.out.weight is new.emb.weight


def test_compress_state_dict_keeps_tiny_and_poor_matrices():
    rng = np.random.default_rng(6)
    tensors = {"tiny.weight": rng.standard_normal((2, 64)),
               "poor.weight": rng.standard_normal((16, 16)),
               "kron.weight": np.kron(rng.standard_normal((4, 4)), rng.standard_normal((4, 4)))}
    out, rep = compress_state_dict(tensors, compression=2, max_rel_error=0.5)
    assert [r.name for r in rep.layers] == ["kron.weight"]
    assert set(dict(rep.skipped)) == {"tiny.weight", "poor.weight"}
    assert "rows = 2" in dict(rep.skipped)["tiny.weight"]
    assert np.array_equal(out["tiny.weight"], tensors["tiny.weight"])
    assert np.array_equal(out["poor.weight"], tensors["poor.weight"])
    assert {"kron.kron_a", "kron.kron_b"} <= set(out) and "kron.weight" not in out


def test_compress_threshold_arguments_are_checked():
    model = _net()
    with pytest.raises(ValueError, match="max_rel_error"):
        compress(model, max_rel_error=-1)
    with pytest.raises(TypeError, match="max_rel_error"):
        compress(model, max_rel_error="0.5")
    with pytest.raises(ValueError, match="min_features"):
        compress(model, min_features=0)
