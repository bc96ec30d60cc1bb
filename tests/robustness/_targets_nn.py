"""Families of the PyTorch layers and model transforms (tensorfact.nn, needs torch)."""

from __future__ import annotations

from functools import partial

import numpy as np
from _harness import Case, require
from _registry import has_module, register
from _strategies import (
    Variant,
    choice_variants,
    float_variants,
    int_variants,
    one_of_variants,
    rng_variants,
)
from hypothesis import strategies as st

#: layer -> (positional args, keyword args, forward input shape or None, {argument: valid value})
LAYERS: dict[str, tuple[tuple, dict, tuple | None, dict]] = {
    "CPLinear": ((6, 4), dict(in_shape=(2, 3), out_shape=(2, 2), rank=2, rng=0), (3, 6),
                 dict(in_features=6, out_features=4, rank=2)),
    "KroneckerLinear": ((6, 4), dict(a_shape=(2, 3), rank=1, rng=0), (3, 6),
                        dict(in_features=6, out_features=4, rank=1)),
    "PHMLinear": ((4, 6), dict(n=2, rng=0), (3, 4), dict(in_features=4, out_features=6, n=2)),
    "ROSALinear": ((6, 4, 2), dict(rng=0), (3, 6), dict(in_features=6, out_features=4, rank=2)),
    "CPRNNCell": ((3, 4, 2), dict(rng=0), (2, 3), dict(input_size=3, hidden_size=4, rank=2)),
    "CPRNN": ((3, 4, 2), dict(rng=0), (2, 5, 3), dict(input_size=3, hidden_size=4, rank=2)),
    "SecondOrderRNNCell": ((3, 4), dict(rng=0), (2, 3), dict(input_size=3, hidden_size=4)),
    "SecondOrderRNN": ((3, 4), dict(rng=0), (2, 5, 3), dict(input_size=3, hidden_size=4)),
    "CompacterAdapter": ((8,), dict(bottleneck=4, n=2, rng=0), (3, 8),
                         dict(dim=8, bottleneck=4, n=2)),
    "PHMRules": ((2,), dict(rng=0), None, dict(n=2)),
    "KroneckerEmbedding": ((6, 4), dict(a_shape=(2, 2), rank=1, rng=0), "indices",
                           dict(num_embeddings=6, embedding_dim=4, rank=1)),
    "GKPDConv2d": ((2, 4, 3), dict(shapes=((2, 1, 3, 1), (2, 2, 1, 3)), rank=1, rng=0),
                   (1, 2, 5, 5), dict(in_channels=2, out_channels=4, rank=1)),
    "SeKronConv2d": ((2, 4, 3), dict(shapes=((2, 1, 3, 1), (2, 2, 1, 3)), ranks=1, rng=0),
                     (1, 2, 5, 5), dict(in_channels=2, out_channels=4)),
}

POSITIONAL = {
    "CPLinear": ("in_features", "out_features"),
    "KroneckerLinear": ("in_features", "out_features"),
    "PHMLinear": ("in_features", "out_features"),
    "ROSALinear": ("in_features", "out_features", "rank"),
    "CPRNNCell": ("input_size", "hidden_size", "rank"),
    "CPRNN": ("input_size", "hidden_size", "rank"),
    "SecondOrderRNNCell": ("input_size", "hidden_size"),
    "SecondOrderRNN": ("input_size", "hidden_size"),
    "CompacterAdapter": ("dim",),
    "PHMRules": ("n",),
    "KroneckerEmbedding": ("num_embeddings", "embedding_dim"),
    "GKPDConv2d": ("in_channels", "out_channels", "kernel_size"),
    "SeKronConv2d": ("in_channels", "out_channels", "kernel_size"),
}


def _forward_check(name: str, x_shape):
    def check(layer):
        import torch

        require(isinstance(layer, torch.nn.Module), "not a module")
        for p in layer.parameters():
            require(bool(torch.all(torch.isfinite(p))), "non-finite parameter")
        if x_shape is None:
            return
        gen = torch.Generator().manual_seed(0)
        if x_shape == "indices":
            x = torch.tensor([0, 5, 2])
        else:
            x = torch.randn(x_shape, generator=gen)
        y = layer(x)
        y = y[0] if isinstance(y, tuple) else y
        require(bool(torch.all(torch.isfinite(y))), "non-finite output")
    return check


def _layer_family(layer: str):
    @register(layer, "args", needs="torch")
    def fam(draw):
        import tensorfact.nn as tnn

        pos, kw, x_shape, ints = LAYERS[layer]
        names = POSITIONAL[layer]
        args = dict(zip(names, pos))
        args.update(kw)
        which = draw(st.sampled_from(sorted(ints) + ["rng"]))
        if which == "rng":
            vs = rng_variants()
        else:
            vs = [v for v in int_variants(ints[which]) if v.label != "None"]
            vs.append(Variant("None", None, "either" if which == "bottleneck" else "error"))
            vs = [v if v.expect != "ok" or v.value == ints[which] else v for v in vs]
        v = draw(one_of_variants(vs))
        args[which] = v.value
        call_pos = [args.pop(n) for n in names]
        if v.expect == "ok" and which != "rng":
            expect = "ok"
        else:
            expect = v.expect
        return Case(layer, "args", f"{which}={v.label}",
                    partial(getattr(tnn, layer), *call_pos, **args), (which,), expect,
                    check=_forward_check(layer, x_shape if which != "rng" or expect == "ok"
                                         else None))
    return fam


for _layer in LAYERS:
    _layer_family(_layer)


def _model():
    import torch

    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.ReLU(), torch.nn.Linear(12, 8))


@register("compress", "args", needs="torch")
def _compress(draw):
    import tensorfact.nn as tnn

    model = _model()
    which = draw(st.sampled_from(["model", "method", "compression", "include",
                                  "max_candidates", "max_rel_error", "min_features"]))
    kw: dict = {}
    m = model
    if which == "model":
        vs = [Variant("Sequential", model, "ok"), Variant("None", None, "error"),
              Variant("a tensor", next(model.parameters()).detach(), "error"),
              Variant("a string", "model", "error")]
    elif which == "method":
        vs = choice_variants(["kronecker", "gkpd", "cp"])
    elif which == "compression":
        vs = float_variants(2.0, lo=1.0, lo_open=True)
    elif which == "include":
        vs = [Variant("'0'", "0", "ok"), Variant("None", None, "ok"),
              Variant("invalid regex '('", "(", "error"), Variant("3", 3, "error")]
    elif which == "max_candidates":
        vs = int_variants(2)
    elif which == "max_rel_error":
        vs = float_variants(0.9, none_ok=True, inf_ok=True)
    else:
        vs = int_variants(4, lo=0)
    v = draw(one_of_variants(vs))
    if which == "model":
        m = v.value
    else:
        kw[which] = v.value

    def check(out):
        import torch

        new, report = out
        y = new(torch.ones(2, 8))
        require(bool(torch.all(torch.isfinite(y))), "non-finite output")

    return Case("compress", "args", f"{which}={v.label}", partial(tnn.compress, m, **kw),
                (which,), v.expect, inputs=(model,), check=check)


@register("rosa", "args", needs="torch")
def _rosa(draw):
    import tensorfact.nn as tnn

    model = _model()
    which = draw(st.sampled_from(["model", "rank", "rng", "include"]))
    rank, kw, m = 2, {"rng": 0}, model
    if which == "model":
        vs = [Variant("Sequential", model, "ok"), Variant("None", None, "error"),
              Variant("a string", "model", "error")]
    elif which == "rank":
        vs = int_variants(2)  # documented: clipped to min(in, out) per layer
    elif which == "rng":
        vs = rng_variants()
    else:
        vs = [Variant("None", None, "ok"), Variant("'0'", "0", "ok"),
              Variant("invalid regex '('", "(", "error"), Variant("3", 3, "error")]
    v = draw(one_of_variants(vs))
    if which == "model":
        m = v.value
    elif which == "rank":
        rank = v.value
    else:
        kw[which] = v.value

    def check(new):
        import torch

        require(bool(torch.all(torch.isfinite(new(torch.ones(2, 8))))), "non-finite output")

    return Case("rosa", "args", f"{which}={v.label}", partial(tnn.rosa, m, rank, **kw), (which,),
                v.expect, inputs=(model,), check=check)


@register("merge_rosa-resample_rosa", "args", needs="torch")
def _rosa_tools(draw):
    import tensorfact.nn as tnn

    which = draw(st.sampled_from(["merge_rosa", "resample_rosa"]))
    adapted = tnn.rosa(_model(), 2, rng=0) if has_module("torch") else None
    vs = [Variant("ROSA model", adapted, "ok"), Variant("plain model", _model(), "either"),
          Variant("None", None, "error"), Variant("a string", "m", "error")]
    if which == "resample_rosa":
        vs += [Variant(f"rng={r.label}", r, r.expect) for r in rng_variants()[5:]]
    v = draw(one_of_variants(vs))
    if isinstance(v.value, Variant):
        call = partial(tnn.resample_rosa, adapted, rng=v.value.value)
        names = ("rng",)
    else:
        call = partial(getattr(tnn, which), v.value)
        names = ("model",)
    # resample_rosa redraws the adapters in place (documented); merge_rosa copies
    inputs = (adapted,) if which == "merge_rosa" else ()
    return Case("merge_rosa-resample_rosa", "args", f"{which}({v.label})", call, names, v.expect,
                inputs=inputs)


@register("add_adapters", "args", needs="torch")
def _add_adapters(draw):
    import tensorfact.nn as tnn

    model = _model()
    which = draw(st.sampled_from(["model", "targets", "reduction", "n", "rng"]))
    kw: dict = dict(targets="0", n=2, reduction=3, rng=0)
    m = model
    if which == "model":
        vs = [Variant("Sequential", model, "ok"), Variant("None", None, "error")]
    elif which == "targets":
        vs = [Variant("'0'", "0", "ok"), Variant("['0', '2']", ["0", "2"], "ok"),
              Variant("no match", "zzz", "error"), Variant("3", 3, "error"),
              Variant("None", None, "error")]
    elif which == "reduction":
        vs = int_variants(3)
    elif which == "n":
        vs = int_variants(2)
    else:
        vs = rng_variants()
    v = draw(one_of_variants(vs))
    if which == "model":
        m = v.value
    else:
        kw[which] = v.value
    return Case("add_adapters", "args", f"{which}={v.label}",
                partial(tnn.add_adapters, m, **kw), (which,), v.expect, inputs=(model,))


@register("kronecker_conv2d", "args", needs="torch")
def _kconv(draw):
    import torch

    import tensorfact.nn as tnn

    gen = torch.Generator().manual_seed(0)
    A = torch.randn((1, 2, 1, 3, 1), generator=gen)
    B = torch.randn((1, 2, 2, 1, 3), generator=gen)
    x = torch.randn((1, 2, 5, 5), generator=gen)
    which = draw(st.sampled_from(["x", "factors", "ranks", "stride", "padding"]))
    args = dict(x=x, factors=[A, B], ranks=[1])
    kw: dict = {}
    if which == "x":
        vs = [Variant("valid", x, "ok"), Variant("numpy", x.numpy(), "error"),
              Variant("wrong channels", x[:, :1], "error"),
              Variant("2-D", x[0, 0], "error")]
    elif which == "factors":
        vs = [Variant("valid", [A, B], "ok"), Variant("one", [A], "error"),
              Variant("numpy", [A.numpy(), B.numpy()], "error"),
              Variant("None", None, "error")]
    elif which == "ranks":
        vs = [Variant("[1]", [1], "ok"), Variant("[np.int64(1)]", [np.int64(1)], "ok"),
              Variant("[2]", [2], "error"), Variant("[1.5]", [1.5], "error"),
              Variant("1", 1, "either"), Variant("[]", [], "error")]
    else:
        vs = [v for v in int_variants(1, lo=0 if which == "padding" else 1) if v.label != "None"]
    v = draw(one_of_variants(vs))
    if which in args:
        args[which] = v.value
    else:
        kw[which] = v.value

    def check(y):
        require(bool(torch.all(torch.isfinite(y))), "non-finite output")

    return Case("kronecker_conv2d", "args", f"{which}={v.label}",
                partial(tnn.kronecker_conv2d, args["x"], args["factors"], args["ranks"], **kw),
                (which,), v.expect, inputs=(x, A, B), check=check)
