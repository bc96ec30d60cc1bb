"""Families of the data structures: CPTensor, KroneckerTensor, SeKronTensor, SparseTensor."""

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
    bool_variants,
    dense_variants,
    int_variants,
    one_of_variants,
    seeds,
    shape_variants,
    small_shapes,
    torch_variant,
)
from _targets_lstsq import _factor_variants, _factors
from hypothesis import strategies as st

import tensorfact as tf


def _safe_norm(D):
    """Frobenius norm without overflow (scaled by the largest magnitude)."""
    m = float(np.max(np.abs(D))) if D.size else 0.0
    return m * float(np.linalg.norm(D / m)) if m > 0 and np.isfinite(m) else m


def _cp_dense(F, w=None):
    F = [host(A) for A in F]
    w = np.ones(F[0].shape[1]) if w is None else host(w)
    out = np.einsum("r,ir->ir", w, F[0])
    for A in F[1:]:
        out = np.einsum("...r,ir->...ir", out, A)
    return out.sum(axis=-1)


# --------------------------------------------------------------------------- CPTensor
@register("CPTensor", "factors")
def _cp_factors(draw):
    F = _factors(draw)
    v = draw(one_of_variants(_factor_variants(F, finite_checked=False), [
        Variant("a CPTensor", tf.CPTensor(F), "ok"),
        Variant("(weights, factors)", (np.ones(F[0].shape[1]), list(F)), "ok"),
        Variant("factor with no rows", F[:1] + [np.ones((0, F[0].shape[1]))], "error"),
        Variant("rank 0", [np.ones((s.shape[0], 0)) for s in F], "error"),
    ]))

    def check(cp):
        facs = cp.factors
        if not all(np.all(np.isfinite(host(A))) for A in facs):
            require(not math.isfinite(float(cp.norm())), "finite norm of non-finite factors")
            return
        require(float(cp.norm()) >= 0 and math.isfinite(float(cp.norm())), "norm")
        ref = _cp_dense(facs, cp.weights)
        check_array(cp.to_dense(), ref=ref, rtol=1e-4)

    return Case("CPTensor", "factors", v.label, partial(tf.CPTensor, v.value), ("factors",),
                v.expect, inputs=(v.value,), check=check)


@register("CPTensor", "weights")
def _cp_weights(draw):
    F = _factors(draw)
    R = F[0].shape[1]
    w = np.linspace(1.0, 2.0, R)
    vs = [Variant(f"weights {x.label}", x.value,
                  "ok" if x.label in ("nested list", "None") else x.expect)
          for x in dense_variants(w, min_ndim=1, finite_checked=False)
          if x.label not in ("+1 mode", "0-D")]
    vs += [Variant("list", w.tolist(), "ok"), Variant("wrong length", np.ones(R + 1), "error"),
           Variant("2-D", w[None, :], "error"), Variant("None", None, "ok"),
           Variant("scalar 2.0", 2.0, "error" if R > 1 else "either")]
    vs += [Variant("torch weights", x.value, "error") for x in torch_variant(w)[:1]]
    v = draw(one_of_variants(vs))

    def check(cp):
        require(tuple(cp.weights.shape) == (R,), "weights shape")
        check_array(cp.weights, ref=host(np.asarray(v.value, dtype=float)
                                         if not hasattr(v.value, "shape") else v.value)
                    if v.value is not None else np.ones(R))

    return Case("CPTensor", "weights", v.label, partial(tf.CPTensor, F, weights=v.value),
                ("weights",), v.expect, inputs=(F, v.value), check=check)


@register("CPTensor", "methods")
def _cp_methods(draw):
    F = _factors(draw)
    cp = tf.CPTensor(F)
    dense = cp.to_dense()
    which = draw(st.sampled_from(["inner", "factor_match_score"]))
    gen = np.random.default_rng(draw(seeds))
    other_cp = tf.CPTensor([gen.standard_normal(A.shape) for A in F])
    vs = [Variant("CPTensor", other_cp, "ok"),
          Variant("wrong shape", tf.CPTensor([np.ones((A.shape[0] + 1, 1)) for A in F]),
                  "error"),
          Variant("None", None, "error"), Variant("list", dense.tolist(), "error"),
          Variant("3", 3, "error")]
    if which == "inner":
        vs += [Variant(f"dense {x.label}", x.value, x.expect) for x in algebra_variants(dense)]
        vs += [Variant("dense of another shape", dense.reshape(-1), "error")]

        def check(val):
            o = v.value
            ref = _cp_dense(o.factors, o.weights) if isinstance(o, tf.CPTensor) else host(o)
            if not np.all(np.isfinite(ref)):
                require(not np.isfinite(float(val)), "finite inner product of NaN/Inf data")
                return
            exact = float(np.sum(dense * ref))
            require(abs(float(val) - exact) <= 1e-6 * (1 + np.linalg.norm(dense)
                                                       * np.linalg.norm(ref)),
                    f"inner {float(val)} != {exact}")
    else:
        vs += [Variant("dense array", dense, "error")]

        def check(val):
            require(isinstance(val, float) and 0 <= val <= 1 + 1e-9, f"fms {val!r}")
    v = draw(one_of_variants(vs))
    call = partial(getattr(cp, which), v.value)
    return Case("CPTensor", "methods", f"{which}({v.label})", call, ("other",), v.expect,
                inputs=(v.value, F), check=check)


# --------------------------------------------------------------------------- Kronecker tensors
@register("KroneckerTensor", "factors")
def _kt(draw):
    gen = np.random.default_rng(draw(seeds))
    R = draw(st.integers(1, 3))
    N = draw(st.integers(1, 3))
    F = [gen.standard_normal((R,) + tuple(int(x) for x in gen.integers(1, 4, N)))
         for _ in range(draw(st.integers(1, 3)))]
    # documented: one real floating dtype for all factors (no promotion)
    retyped = {"int64": "error", "bool": "error", "float16": "either", "float32": "either",
               "float32 times 1e30": "either"}
    vs = [Variant(f"factors[0] {x.label}", [x.value] + F[1:], retyped.get(x.label, x.expect))
          for x in dense_variants(F[0], min_ndim=2, finite_checked=False)
          if x.label not in ("+1 mode",)]
    vs += [Variant("tuple", tuple(F), "ok"), Variant("empty", [], "error"),
           Variant("single array", F[0], "error"),
           Variant("ranks differ", F + [np.ones((R + 1,) + F[0].shape[1:])], "error"),
           Variant("modes differ", F + [np.ones((R,) + F[0].shape[1:] + (2,))], "error"),
           Variant("None entry", F + [None], "error"),
           Variant("a KroneckerTensor", tf.KroneckerTensor(F), "ok")]
    v = draw(one_of_variants(vs))

    def check(kt):
        if not all(np.all(np.isfinite(host(F))) for F in kt.factors):
            return  # NaN/Inf factors: NaN/Inf out, like NumPy
        check_array(kt.to_dense(), kt.shape)
        require(math.isfinite(float(kt.norm())), "norm")
        tol = 1e-2 if "float16" in str(kt.dtype) else 1e-4
        require(abs(float(kt.norm()) - _safe_norm(host(kt.to_dense())))
                <= tol * (1 + float(kt.norm())), "norm differs from the dense norm")

    return Case("KroneckerTensor", "factors", v.label, partial(tf.KroneckerTensor, v.value),
                ("factors",), v.expect, inputs=(v.value,), check=check)


@register("KroneckerTensor", "methods")
def _kt_methods(draw):
    gen = np.random.default_rng(draw(seeds))
    F = [gen.standard_normal((2, 2, 3)), gen.standard_normal((2, 3, 2))]
    kt = tf.KroneckerTensor(F)
    W = host(kt.to_dense())
    which = draw(st.sampled_from(["inner", "matmul"]))
    if which == "inner":
        vs = [Variant(f"dense {x.label}", x.value, x.expect)
              for x in dense_variants(W, finite_checked=False) if x.label not in ("+1 mode",)]
        vs += [Variant("KroneckerTensor", kt, "ok"), Variant("None", None, "error"),
               Variant("list", W.tolist(), "error")]
        v = draw(one_of_variants(vs))

        def check(val):
            o = v.value
            ref = host(o.to_dense()) if isinstance(o, tf.KroneckerTensor) else host(o)
            if not np.all(np.isfinite(ref)):
                require(not np.isfinite(float(val)), "finite inner product of NaN/Inf data")
                return
            require(abs(float(val) - float(np.sum(W * ref))) <= 1e-6 * (1 + np.sum(W * W)
                                                                         + np.sum(ref * ref)),
                    "inner differs")
        return Case("KroneckerTensor", "methods", f"inner({v.label})", partial(kt.inner, v.value),
                    ("other",), v.expect, inputs=(v.value,), check=check)
    x = gen.standard_normal((3, W.shape[1]))
    vs = [Variant(f"x {v.label}", v.value, v.expect) for v in algebra_variants(x, min_ndim=1)]
    vs += [Variant("wrong width", x[:, 1:], "error"), Variant("list", x.tolist(), "error")]
    v = draw(one_of_variants(vs))
    return Case("KroneckerTensor", "methods", f"matmul({v.label})", partial(kt.matmul, v.value),
                ("x",), v.expect, inputs=(v.value,),
                check=lambda y: check_array(y, ref=host(v.value) @ W.T, rtol=1e-4))


@register("SeKronTensor", "args")
def _sekron_tensor(draw):
    gen = np.random.default_rng(draw(seeds))
    r0 = draw(st.integers(1, 2))
    F = [gen.standard_normal((r0, 2, 2)), gen.standard_normal((r0, 3, 1))]
    which = draw(st.sampled_from(["factors", "ranks"]))
    factors, ranks = F, (r0,)
    if which == "factors":
        retyped = {"int64": "error", "bool": "error", "float16": "either", "float32": "either",
                   "float32 times 1e30": "either"}
        vs = [Variant(f"factors[1] {x.label}", [F[0], x.value], retyped.get(x.label, x.expect))
              for x in algebra_variants(F[1])]
        vs += [Variant("one factor", F[:1], "error"), Variant("not a sequence", 3, "error"),
               Variant("None entry", [F[0], None], "error"),
               Variant("lead axis wrong", [F[0], np.ones((r0 + 1, 3, 1))], "error")]
    else:
        vs = [Variant(f"ranks ({x.label},)", (x.value,), x.expect)
              for x in int_variants(r0) if x.label not in ("None",)]
        vs += [Variant("int", r0, "either"), Variant("empty", (), "error"),
               Variant("None", None, "error"), Variant("two ranks", (r0, 1), "error")]
    v = draw(one_of_variants(vs))
    if which == "factors":
        factors = v.value
    else:
        ranks = v.value

    def check(sk):
        if not all(np.all(np.isfinite(host(F))) for F in sk.factors):
            return  # NaN/Inf factors: NaN/Inf out, like NumPy
        check_array(sk.to_dense(), sk.shape)
        tol = 1e-2 if "float16" in str(sk.dtype) else 1e-4
        require(abs(float(sk.norm()) - _safe_norm(host(sk.to_dense())))
                <= tol * (1 + float(sk.norm())), "norm differs")

    return Case("SeKronTensor", "args", f"{which}={v.label}",
                partial(tf.SeKronTensor, factors, ranks), (which,), v.expect,
                inputs=(factors, ranks), check=check)


# --------------------------------------------------------------------------- SparseTensor
def _coo(draw):
    shape = draw(small_shapes(1, 4))
    gen = np.random.default_rng(draw(seeds))
    nnz = draw(st.integers(1, 8))
    coords = np.stack([gen.integers(0, s, nnz) for s in shape], axis=1)
    values = gen.standard_normal(nnz)
    return shape, coords, values


def _sparse_check(shape, coords, values):
    def check(S):
        require(isinstance(S, tf.SparseTensor), type(S).__name__)
        D = np.zeros(shape)
        np.add.at(D, tuple(np.asarray(coords, dtype=np.int64).T), host(values))
        check_array(S.to_dense(), tuple(shape), ref=D, rtol=1e-6)
    return check


@register("SparseTensor", "coords")
def _sparse_coords(draw):
    shape, coords, values = _coo(draw)
    big = coords.copy()
    big[0, 0] = shape[0]
    vs = [Variant("valid", coords, "ok"), Variant("int32", coords.astype(np.int32), "ok"),
          Variant("uint64", coords.astype(np.uint64), "ok"),
          Variant("nested lists", coords.tolist(), "ok"),
          Variant("float", coords.astype(float), "error"),
          Variant("bool", coords > 0, "error"),
          Variant("object", coords.astype(object), "error"),
          Variant("str", coords.astype(str), "error"),
          Variant("out of range", big, "error"), Variant("negative", coords - 1 - np.max(coords),
                                                         "error"),
          Variant("transposed (N, nnz)", coords.T, "either" if coords.shape[0] == coords.shape[1]
                  else "error"),
          Variant("1-D", coords[:, 0], "either" if len(shape) == 1 and False else "error"),
          Variant("None", None, "error"),
          Variant("masked", np.ma.array(coords), "error"),
          Variant("int64 max", np.full_like(coords, 2**63 - 1), "error")]
    vs += [Variant("torch coords with numpy values", x.value, "error")
           for x in torch_variant(coords)[:1]]
    v = draw(one_of_variants(vs))
    return Case("SparseTensor", "coords", v.label, partial(tf.SparseTensor, v.value, values, shape),
                ("coords",), v.expect, inputs=(v.value, values),
                check=_sparse_check(shape, np.asarray(v.value) if v.expect == "ok" else coords,
                                    values))


@register("SparseTensor", "values")
def _sparse_values(draw):
    shape, coords, values = _coo(draw)
    vs = [Variant(f"values {x.label}", x.value, x.expect)
          for x in dense_variants(values, min_ndim=1) if x.label not in ("+1 mode",)]
    vs = [x if x.label != "values nested list" else Variant(x.label, x.value, "ok") for x in vs]
    vs += [Variant("list", values.tolist(), "ok"), Variant("wrong length", values[1:], "error"),
           Variant("2-D", values[:, None], "error")]
    v = draw(one_of_variants(vs))
    return Case("SparseTensor", "values", v.label, partial(tf.SparseTensor, coords, v.value, shape),
                ("values",), v.expect, inputs=(coords, v.value),
                check=_sparse_check(shape, coords, v.value))


@register("SparseTensor", "shape-flags")
def _sparse_shape(draw):
    shape, coords, values = _coo(draw)
    which = draw(st.sampled_from(["shape", "sum_duplicates", "check"]))
    kw = {}
    shp = shape
    if which == "shape":
        vs = [x for x in shape_variants(tuple(int(s) for s in shape), min_ndim=1)
              if x.label != "one mode"]
        vs += [Variant("too small", tuple(max(1, s - 1) for s in shape), "either")]
    else:
        vs = bool_variants()
    v = draw(one_of_variants(vs))
    if which == "shape":
        shp = v.value
        if v.label == f"{HUGE}^3 entries" and len(shape) != 3:
            v = Variant(v.label, v.value, "error")
    else:
        kw[which] = v.value
    dup = np.concatenate([coords, coords[:1]])
    vals = np.concatenate([values, values[:1]])
    if which == "sum_duplicates":
        coords_, values_ = dup, vals
        expect = "error" if v.value is False or v.value is np.False_ else v.expect
    else:
        coords_, values_, expect = coords, values, v.expect
    return Case("SparseTensor", "shape-flags", f"{which}={v.label}",
                partial(tf.SparseTensor, coords_, values_, shp, **kw), (which, "coords"), expect,
                inputs=(coords_, values_), check=_sparse_check(shape, coords_, values_))


@register("SparseTensor", "methods")
def _sparse_methods(draw):
    shape, coords, values = _coo(draw)
    S = tf.SparseTensor(coords, values, shape)
    D = host(S.to_dense())
    which = draw(st.sampled_from(["from_dense", "gather_fibers", "mode", "from_scipy",
                                  "to_scipy"]))
    if which == "from_dense":
        vs = [x for x in dense_variants(D, min_ndim=1) if x.label not in ("+1 mode",)]
        v = draw(one_of_variants(vs))

        def check(T):
            check_array(T.to_dense(), ref=np.nan_to_num(host(v.value)))
        return Case("SparseTensor", "methods", f"from_dense({v.label})",
                    partial(tf.SparseTensor.from_dense, v.value), ("X",), v.expect,
                    inputs=(v.value,), check=check)
    if which == "from_scipy":
        import scipy.sparse as sps

        M = sps.random(4, 5, density=0.4, random_state=int(draw(seeds)))
        vs = [Variant("csr", M.tocsr(), "ok"), Variant("coo array", sps.coo_array(M), "ok"),
              Variant("dense", M.toarray(), "error"), Variant("None", None, "error"),
              Variant("complex", M.astype(complex), "error"),
              Variant("NaN data", sps.csr_matrix(M.toarray() * np.nan), "either")]
        v = draw(one_of_variants(vs))
        return Case("SparseTensor", "methods", f"from_scipy({v.label})",
                    partial(tf.SparseTensor.from_scipy, v.value), ("M",), v.expect,
                    inputs=(v.value,),
                    check=lambda T: check_array(T.to_dense(), ref=M.toarray()))
    if which == "to_scipy":
        from _strategies import choice_variants

        S2 = tf.SparseTensor(coords[:, :1].repeat(2, axis=1), values, (shape[0], shape[0]))
        v = draw(one_of_variants(choice_variants(["coo", "csr", "csc"])))
        return Case("SparseTensor", "methods", f"to_scipy({v.label})",
                    partial(S2.to_scipy, v.value), ("format",), v.expect,
                    check=lambda M: check_array(M.toarray(), ref=host(S2.to_dense())))
    N = len(shape)
    if which == "mode":
        v = draw(one_of_variants(int_variants(0, lo=-N, hi=N - 1)))
        return Case("SparseTensor", "methods", f"mode_gram(mode={v.label})",
                    partial(S.mode_gram, v.value), ("mode",), v.expect, inputs=(coords,),
                    check=lambda G: check_array(G))
    other = np.zeros((3, N - 1), dtype=np.int64)
    vs = [Variant("valid", other, "ok"), Variant("list", other.tolist(), "ok"),
          Variant("out of range", other + 100, "error"), Variant("negative", other - 1, "error"),
          Variant("float", other.astype(float), "error"),
          Variant("wrong width", np.zeros((3, N), dtype=np.int64), "error"),
          Variant("1-D", np.zeros(3, dtype=np.int64), "either" if N == 2 else "error"),
          Variant("None", None, "error")]
    v = draw(one_of_variants(vs))
    return Case("SparseTensor", "methods", f"gather_fibers({v.label})",
                partial(S.gather_fibers, 0, v.value), ("other_idx",), v.expect,
                inputs=(v.value, coords), check=None)


# --------------------------------------------------------------------------- SparseRows
@register("SparseRows", "args")
def _sparse_rows(draw):
    from tensorfact.formats import SparseRows

    gen = np.random.default_rng(draw(seeds))
    row = np.sort(gen.integers(0, 3, 5))
    col = gen.integers(0, 4, 5)
    val = gen.standard_normal(5)
    which = draw(st.sampled_from(["row", "col", "val", "n_columns"]))
    args = dict(row=row, col=col, val=val, n_columns=4)
    if which == "n_columns":
        vs = int_variants(4)
        vs += [Variant("smaller than a column index", int(col.max()), "error")]
    elif which == "val":
        vs = algebra_variants(val, min_ndim=1)
        vs += [Variant("wrong length", val[1:], "error")]
    else:
        base = args[which]
        vs = [Variant("valid", base, "ok"), Variant("float", base.astype(float), "error"),
              Variant("negative", base - 10, "error"), Variant("wrong length", base[1:], "error"),
              Variant("2-D", base[:, None], "error"), Variant("None", None, "error")]
        if which == "col":
            vs.append(Variant("out of range", base + 4, "error"))
    v = draw(one_of_variants(vs))
    args[which] = v.value

    def check(rows):
        require(rows.n_columns == 4 or which == "n_columns", "n_columns")
        require(int(rows.n_columns) > int(np.max(host(rows.col))), "column beyond n_columns")

    return Case("SparseRows", "args", f"{which}={v.label}",
                partial(SparseRows, args["row"], args["col"], args["val"], args["n_columns"]),
                (which,), v.expect, inputs=(v.value,), check=check)
