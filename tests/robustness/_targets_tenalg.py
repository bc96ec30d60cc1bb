"""Families of the tensor-algebra building blocks (tensorfact.tenalg)."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from _harness import Case, require
from _registry import check_array, host, register
from _strategies import (
    HUGE,
    Variant,
    algebra_variants,
    dense_variants,
    int_variants,
    normal,
    one_of_variants,
    seeds,
    shape_variants,
    small_shapes,
    torch_variant,
)
from _targets_lstsq import _factor_variants, _factors
from hypothesis import strategies as st

import tensorfact as tf


def _ref_krp(F):
    out = host(F[0])
    for A in F[1:]:
        A = host(A)
        out = (out[:, None, :] * A[None, :, :]).reshape(-1, out.shape[1])
    return out


def _ref_unfold(X, n):
    return np.moveaxis(X, n, 0).reshape(X.shape[n], -1)


def _ref_fold(M, n, shape):
    full = (shape[n],) + tuple(shape[:n]) + tuple(shape[n + 1:])
    return np.moveaxis(M.reshape(full), 0, n)


# --------------------------------------------------------------------------- khatri_rao
@register("khatri_rao", "factors")
def _kr_factors(draw):
    F = _factors(draw)
    v = draw(one_of_variants(_factor_variants(F, finite_checked=False), [
        Variant("three 10**6-row factors", [np.broadcast_to(np.ones(1), (HUGE, 2))] * 3,
                "error")]))

    def check(K):
        check_array(K, ref=_ref_krp(list(v.value)))

    return Case("khatri_rao", "factors", v.label, partial(tf.khatri_rao, v.value),
                ("factors",), v.expect, inputs=(v.value,), check=check)


@register("khatri_rao", "weights-skip")
def _kr_options(draw):
    F = _factors(draw)
    R = F[0].shape[1]
    which = draw(st.sampled_from(["weights", "skip"]))
    if which == "skip":
        v = draw(one_of_variants(int_variants(1, lo=-len(F), hi=len(F) - 1, none_ok=True)))
        kw = {"skip": v.value}

        def check(K):
            s = int(v.value) % len(F) if v.value is not None else None
            check_array(K, ref=_ref_krp([A for i, A in enumerate(F) if i != s]))
    else:
        w = np.arange(1.0, R + 1)
        v = draw(one_of_variants([Variant(f"weights {x.label}", x.value, x.expect)
                                  for x in dense_variants(w, min_ndim=1, finite_checked=False)
                                  if x.label not in ("+1 mode",)],
                                 [Variant("None", None, "ok"),
                                  Variant("list", w.tolist(), "either"),
                                  Variant("wrong length", np.ones(R + 1), "error")]))
        kw = {"weights": v.value}

        def check(K):
            ref = _ref_krp(F)
            if v.value is not None:
                ref = ref * host(v.value)[None, :]
            check_array(K, ref=ref)
    return Case("khatri_rao", "weights-skip", f"{which}={v.label}",
                partial(tf.khatri_rao, F, **kw), (which,), v.expect, inputs=(F, v.value),
                check=check)


# --------------------------------------------------------------------------- krp_rows
@register("krp_rows", "args")
def _krp_rows(draw):
    F = _factors(draw)
    dims = [A.shape[0] for A in F]
    n = math.prod(dims)
    gen = np.random.default_rng(draw(seeds))
    lin = gen.integers(0, n, size=5)
    multi = np.stack(np.unravel_index(lin, dims), axis=1)
    which = draw(st.sampled_from(["rows", "factors"]))
    if which == "factors":
        v = draw(one_of_variants(_factor_variants(F, finite_checked=False)))
        rows = lin

        def check(K):
            check_array(K, ref=_ref_krp(list(v.value))[lin])

        return Case("krp_rows", "args", f"factors {v.label}", partial(tf.krp_rows, v.value, rows),
                    ("factors",), v.expect, inputs=(v.value,), check=check)
    v = draw(one_of_variants([
        Variant("linear", lin, "ok"),
        Variant("multi-index", multi, "ok"),
        Variant("int32", lin.astype(np.int32), "ok"),
        Variant("uint64", lin.astype(np.uint64), "ok"),
        Variant("empty", lin[:0], "ok"),
        Variant("linear out of range", lin + n, "error"),
        Variant("negative linear", -lin - 1, "error"),
        Variant("multi-index out of range", multi + np.asarray(dims), "error"),
        Variant("negative multi-index", multi - 1 - np.asarray(dims), "error"),
        Variant("float", lin.astype(float), "error"),
        Variant("bool", lin > 0, "error"),
        Variant("list", lin.tolist(), "either"),
        Variant("wrong width", np.zeros((2, len(F) + 1), dtype=np.int64), "error"),
        Variant("3-D", np.zeros((2, 2, 2), dtype=np.int64), "error"),
        Variant("scalar", 3, "either"),
        Variant("None", None, "error"),
    ]))

    def check(K):
        rows = np.asarray(v.value)
        lin_ = rows if rows.ndim <= 1 else np.ravel_multi_index(tuple(rows.T), dims)
        check_array(K, ref=_ref_krp(F)[np.asarray(lin_, dtype=np.int64)])

    return Case("krp_rows", "args", f"rows {v.label}", partial(tf.krp_rows, F, v.value),
                ("rows",), v.expect, inputs=(F, v.value), check=check)


# --------------------------------------------------------------------------- unfold / fold
@register("unfold", "args")
def _unfold(draw):
    shape = draw(small_shapes(1, 4))
    X = normal(draw(seeds), shape)
    which = draw(st.sampled_from(["X", "mode"]))
    if which == "X":
        v = draw(one_of_variants(algebra_variants(X, min_ndim=1), torch_variant(X)))
        mode = 0
    else:
        v = draw(one_of_variants(int_variants(len(shape) - 1, lo=-len(shape),
                                              hi=len(shape) - 1)))
        mode = v.value

    def check(M):
        Xv = host(v.value) if which == "X" else X
        check_array(M, ref=_ref_unfold(Xv, int(mode) % Xv.ndim))

    return Case("unfold", "args", f"{which}={v.label}",
                partial(tf.unfold, v.value if which == "X" else X, mode), (which,), v.expect,
                inputs=(v.value,), check=check)


@register("fold", "args")
def _fold(draw):
    shape = draw(small_shapes(2, 4))
    X = normal(draw(seeds), shape)
    n = draw(st.integers(0, len(shape) - 1))
    M = _ref_unfold(X, n)
    which = draw(st.sampled_from(["M", "mode", "shape"]))
    args = dict(M=M, mode=n, shape=shape)
    if which == "M":
        vs = algebra_variants(M, min_ndim=2)
        vs += [Variant("transposed", M.T, "either" if M.shape[0] == M.shape[1] else "error")]
    elif which == "mode":
        vs = int_variants(n, lo=-len(shape), hi=len(shape) - 1)
    else:
        vs = [x for x in shape_variants(shape, min_ndim=1) if x.label != "one mode"]
    v = draw(one_of_variants(vs))
    args[which] = v.value

    def check(T):
        check_array(T, shape, ref=_ref_fold(host(args["M"]), n, shape))

    return Case("fold", "args", f"{which}={v.label}",
                partial(tf.fold, args["M"], args["mode"], args["shape"]), (which,), v.expect,
                inputs=(v.value,), check=check)


# --------------------------------------------------------------------------- mttkrp
def _mttkrp_ref(X, F, n):
    return _ref_unfold(host(X), n) @ _ref_krp([host(A) for m, A in enumerate(F) if m != n])


@register("mttkrp", "args")
def _mttkrp(draw):
    shape = draw(small_shapes(2, 4))
    X = normal(draw(seeds), shape)
    R = draw(st.integers(1, 3))
    gen = np.random.default_rng(draw(seeds))
    F = [gen.standard_normal((s, R)) for s in shape]
    which = draw(st.sampled_from(["X", "factors", "mode"]))
    args = dict(X=X, factors=F, mode=0)
    if which == "X":
        vs = algebra_variants(X) + torch_variant(X)[:1]
        vs += [Variant("SparseTensor", tf.SparseTensor.from_dense(X), "ok")]
    elif which == "factors":
        vs = [Variant(x.label.replace("factors[1]", f"factors[{len(F) - 1}]"),
                      x.value if not isinstance(x.value, list) or len(x.value) != len(F)
                      else x.value, x.expect) for x in _factor_variants(F, finite_checked=False)]
        vs += [Variant("one factor too few", F[:-1], "error"),
               Variant("factor with wrong rows", F[:-1] + [np.ones((F[-1].shape[0] + 1, R))],
                       "error")]
    else:
        vs = int_variants(len(shape) - 1, lo=-len(shape), hi=len(shape) - 1)
    v = draw(one_of_variants(vs))
    args[which] = v.value

    def check(M):
        Xd = args["X"].to_dense() if isinstance(args["X"], tf.SparseTensor) else args["X"]
        n = int(args["mode"]) % len(shape)
        check_array(M, ref=_mttkrp_ref(Xd, list(args["factors"]), n), rtol=1e-3)

    return Case("mttkrp", "args", f"{which}={v.label}",
                partial(tf.mttkrp, args["X"], args["factors"], args["mode"]), (which,),
                v.expect, inputs=(args["X"], args["factors"]), check=check)


@register("mttkrp_sweep", "args")
def _sweep(draw):
    shape = draw(small_shapes(2, 4))
    X = normal(draw(seeds), shape)
    gen = np.random.default_rng(draw(seeds))
    F = [gen.standard_normal((s, 2)) for s in shape]
    which = draw(st.sampled_from(["X", "factors", "update"]))
    args = dict(X=X, factors=F, update=lambda n, M: M)
    if which == "X":
        vs = algebra_variants(X)
        vs += [Variant("SparseTensor", tf.SparseTensor.from_dense(X), "either")]
    elif which == "factors":
        vs = _factor_variants(F, finite_checked=False)
    else:
        vs = [Variant("identity", lambda n, M: M, "ok"),
              Variant("returns None", lambda n, M: None, "error"),
              Variant("returns a list", lambda n, M: M.tolist(), "error"),
              Variant("returns wrong shape", lambda n, M: M[:1], "error"),
              Variant("not callable", 3, "error")]
    v = draw(one_of_variants(vs))
    args[which] = v.value

    def check(out):
        require(isinstance(out, list) and len(out) == len(shape), "not a list of factors")
        for A in out:
            check_array(A)

    return Case("mttkrp_sweep", "args", f"{which}={v.label}",
                partial(tf.mttkrp_sweep, args["X"], args["factors"], args["update"]), (which,),
                v.expect, inputs=(args["X"], args["factors"]), check=check)


@register("DimensionTree", "args")
def _dimtree(draw):
    shape = draw(small_shapes(2, 4))
    X = normal(draw(seeds), shape)
    gen = np.random.default_rng(draw(seeds))
    F = [gen.standard_normal((s, 2)) for s in shape]
    import array_api_compat.numpy as xpn

    which = draw(st.sampled_from(["X", "xp", "mode", "factors"]))
    xp, mode, factors, Xv = xpn, 0, F, X
    if which == "X":
        vs = algebra_variants(X)
    elif which == "xp":
        vs = [Variant("numpy namespace", xpn, "ok"), Variant("None", None, "either"),
              Variant("'numpy'", "numpy", "error"), Variant("math module", math, "error")]
    elif which == "mode":
        vs = int_variants(len(shape) - 1, lo=-len(shape), hi=len(shape) - 1)
    else:
        vs = _factor_variants(F, finite_checked=False)
    v = draw(one_of_variants(vs))
    if which == "X":
        Xv = v.value
    elif which == "xp":
        xp = v.value
    elif which == "mode":
        mode = v.value
    else:
        factors = v.value

    def call():
        return tf.DimensionTree(xp, Xv).mttkrp(factors, mode)

    def check(M):
        check_array(M, ref=_mttkrp_ref(Xv, list(factors), int(mode) % len(shape)), rtol=1e-3)

    return Case("DimensionTree", "args", f"{which}={v.label}", call, (which,), v.expect,
                inputs=(Xv, factors), check=check)


# --------------------------------------------------------------------------- Kronecker algebra
@register("kron", "arrays")
def _kron(draw):
    gen = np.random.default_rng(draw(seeds))
    A, Bm = gen.standard_normal((2, 3)), gen.standard_normal((3, 2))
    vs = [Variant(f"second {x.label}", (A, x.value), x.expect)
          for x in algebra_variants(Bm, min_ndim=1)]
    vs = [x if x.label != "second 0-d array" else Variant(x.label, x.value, "ok") for x in vs]
    vs += [Variant("no arrays", (), "error"), Variant("three", (A, Bm, A), "ok"),
           Variant("a list", (A, Bm.tolist()), "error"),
           Variant("1-D and 2-D", (A, Bm[0]), "ok"),
           Variant("10**6 x 10**6 result", (np.broadcast_to(np.ones(1), (HUGE,)),
                                             np.broadcast_to(np.ones(1), (HUGE,)),
                                             np.broadcast_to(np.ones(1), (HUGE,))), "error")]
    vs += [Variant("torch and numpy", (A, x.value), "error") for x in torch_variant(Bm)[:1]]
    v = draw(one_of_variants(vs))

    def check(K):
        ref = host(v.value[0])
        for M in v.value[1:]:
            ref = np.kron(ref, host(M))
        check_array(K, ref=ref)

    return Case("kron", "arrays", v.label, partial(tf.kron, *v.value), ("arrays",), v.expect,
                inputs=(v.value,), check=check)


def _shape_pair(draw):
    N = draw(st.integers(1, 3))
    a = tuple(draw(st.integers(1, 3)) for _ in range(N))
    b = tuple(draw(st.integers(1, 3)) for _ in range(N))
    W = normal(draw(seeds), tuple(x * y for x, y in zip(a, b)))
    return a, b, W


def _ref_rearrange(W, a, b):
    N = len(a)
    T = W.reshape(tuple(v for n in range(N) for v in (a[n], b[n])))
    T = T.transpose(tuple(range(0, 2 * N, 2)) + tuple(range(1, 2 * N, 2)))
    return T.reshape(math.prod(a), math.prod(b))


def _ref_unrearrange(M, a, b):
    N = len(a)
    T = M.reshape(tuple(a) + tuple(b))
    T = T.transpose(tuple(v for n in range(N) for v in (n, N + n)))
    return T.reshape(tuple(x * y for x, y in zip(a, b)))


@register("rearrange", "args")
def _rearrange(draw):
    a, b, W = _shape_pair(draw)
    which = draw(st.sampled_from(["W", "a_shape", "b_shape"]))
    args = dict(W=W, a_shape=a, b_shape=b)
    if which == "W":
        vs = algebra_variants(W, min_ndim=1)
    elif which == "a_shape":
        vs = [x for x in shape_variants(a, min_ndim=1) if x.label != "one mode"]
    else:
        vs = [x for x in shape_variants(b, min_ndim=1) if x.label != "one mode"]
        vs.append(Variant("None (inferred)", None, "ok"))
    v = draw(one_of_variants(vs))
    args[which] = v.value

    def check(M):
        check_array(M, ref=_ref_rearrange(host(args["W"]), a, b))

    return Case("rearrange", "args", f"{which}={v.label}",
                partial(tf.rearrange, args["W"], args["a_shape"], args["b_shape"]), (which,),
                v.expect, inputs=(args["W"], v.value), check=check)


@register("unrearrange", "args")
def _unrearrange(draw):
    a, b, W = _shape_pair(draw)
    M = _ref_rearrange(W, a, b)
    which = draw(st.sampled_from(["M", "a_shape", "b_shape"]))
    args = dict(M=M, a_shape=a, b_shape=b)
    if which == "M":
        vs = algebra_variants(M)
    else:
        vs = [x for x in shape_variants(a if which == "a_shape" else b, min_ndim=1)
              if x.label != "one mode"]
    v = draw(one_of_variants(vs))
    args[which] = v.value

    def check(T):
        check_array(T, W.shape, ref=_ref_unrearrange(host(args["M"]), a, b))

    return Case("unrearrange", "args", f"{which}={v.label}",
                partial(tf.unrearrange, args["M"], args["a_shape"], args["b_shape"]),
                (which,), v.expect, inputs=(args["M"], v.value), check=check)


@register("group_modes", "args")
def _group(draw):
    a, b, W = _shape_pair(draw)
    which = draw(st.sampled_from(["W", "shapes"]))
    shapes = [a, b]
    Wv = W
    if which == "W":
        vs = algebra_variants(W, min_ndim=1)
    else:
        vs = [Variant("tuple", (a, b), "ok"), Variant("empty", [], "error"),
              Variant("one shape", [W.shape], "ok"), Variant("not a sequence", 3, "error"),
              Variant("entry None", [a, None], "error"),
              Variant("wrong product", [a, tuple(x + 1 for x in b)], "error"),
              Variant("float entry", [a, tuple(float(x) for x in b)], "error"),
              Variant("np.int64 entries", [a, tuple(np.int64(x) for x in b)], "ok"),
              Variant("zero entry", [a, (0,) + b[1:]], "error")]
    v = draw(one_of_variants(vs))
    if which == "W":
        Wv = v.value
    else:
        shapes = v.value

    def check(T):
        check_array(T)
        require(T.size == np.size(host(Wv)), "entries lost")

    return Case("group_modes", "args", f"{which}={v.label}", partial(tf.group_modes, Wv, shapes),
                (which,), v.expect, inputs=(Wv, shapes), check=check)


@register("ungroup_modes", "args")
def _ungroup(draw):
    a, b, W = _shape_pair(draw)
    T = _ref_rearrange(W, a, b)
    which = draw(st.sampled_from(["T", "shapes"]))
    shapes = [a, b]
    Tv = T
    if which == "T":
        vs = algebra_variants(T)
    else:
        vs = [Variant("tuple", (a, b), "ok"), Variant("empty", [], "error"),
              Variant("not a sequence", 3, "error"), Variant("entry None", [a, None], "error"),
              Variant("ragged", [a, b + (2,)], "error"),
              Variant("float entry", [a, tuple(float(x) for x in b)], "error"),
              Variant("zero entry", [a, (0,) + b[1:]], "error")]
    v = draw(one_of_variants(vs))
    if which == "T":
        Tv = v.value
    else:
        shapes = v.value

    def check(out):
        check_array(out, W.shape)

    return Case("ungroup_modes", "args", f"{which}={v.label}",
                partial(tf.ungroup_modes, Tv, shapes), (which,), v.expect, inputs=(Tv, shapes),
                check=check)


@register("kron_matmul", "args")
def _kron_matmul(draw):
    gen = np.random.default_rng(draw(seeds))
    R = draw(st.integers(1, 2))
    A, Bm = gen.standard_normal((R, 2, 3)), gen.standard_normal((R, 3, 2))
    W = sum(np.kron(A[r], Bm[r]) for r in range(R))
    x = gen.standard_normal((4, W.shape[1]))
    which = draw(st.sampled_from(["x", "kt", "transpose"]))
    xv, kt, transpose = x, [A, Bm], False
    if which == "x":
        vs = algebra_variants(x, min_ndim=1)
        vs += [Variant("wrong width", x[:, :-1], "error"), Variant("1-D row", x[0], "ok")]
        vs += [Variant("torch x", v.value, "error") for v in torch_variant(x)[:1]]
    elif which == "kt":
        vs = [Variant("KroneckerTensor", tf.KroneckerTensor([A, Bm]), "ok"),
              Variant("list of factors", [A, Bm], "ok"),
              Variant("empty list", [], "error"),
              Variant("2-D factors", [A[0], Bm[0]], "error"),
              Variant("ranks differ", [A, Bm[:1].repeat(R + 1, axis=0)], "error"),
              Variant("not a sequence", 3, "error"),
              Variant("dense W", W, "error"),
              Variant("3-way KroneckerTensor",
                      tf.KroneckerTensor([gen.standard_normal((1, 2, 2, 2))] * 2), "error"),
              Variant("None entry", [A, None], "error")]
    else:
        vs = [Variant("True", True, "ok"), Variant("False", False, "ok"),
              Variant("np.True_", np.True_, "ok"), Variant("'yes'", "yes", "either")]
    v = draw(one_of_variants(vs))
    if which == "x":
        xv = v.value
    elif which == "kt":
        kt = v.value
    else:
        transpose = v.value
        if bool(v.value):
            xv = gen.standard_normal((4, W.shape[0]))

    def check(y):
        Wm = W.T if bool(transpose) else W
        check_array(y, ref=host(xv) @ Wm.T)

    return Case("kron_matmul", "args", f"{which}={v.label}",
                partial(tf.kron_matmul, xv, kt, transpose=transpose), (which,), v.expect,
                inputs=(xv, kt), check=check)
