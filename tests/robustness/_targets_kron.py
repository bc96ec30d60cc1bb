"""Families of the Kronecker and joint-triangularization decompositions."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from _harness import Case, require
from _registry import check_array, host, register, relative_error
from _strategies import (
    Variant,
    choice_variants,
    dense_variants,
    float_variants,
    int_variants,
    normal,
    one_of_variants,
    rng_variants,
    seeds,
    shape_variants,
    torch_variant,
)
from hypothesis import strategies as st

import tensorfact as tf


# --------------------------------------------------------------------------- nearest_kronecker/gkpd
def _kron_problem(draw):
    N = draw(st.integers(1, 3))
    a = tuple(draw(st.integers(1, 3)) for _ in range(N))
    b = tuple(draw(st.integers(1, 3)) for _ in range(N))
    W = normal(draw(seeds), tuple(x * y for x, y in zip(a, b)))
    return a, b, W


def _check_nk(W, rank):
    def check(res):
        kt = res.kt
        require(kt.rank == rank, f"rank {kt.rank} != {rank}")
        D = host(kt.to_dense())
        check_array(D, W.shape)
        # the model's exact error: its first factor in units of max|W| (no subnormal rounding)
        s = float(np.max(np.abs(host(W)))) or 1.0
        exact = tf.KroneckerTensor([host(kt.factors[0]) / s, host(kt.factors[1])]).to_dense()
        true = relative_error(host(W) / s, exact)
        require(math.isfinite(res.rel_error) and abs(true - res.rel_error) < 1e-4 * (1 + true),
                f"rel_error {res.rel_error} but the model's error is {true}")
    return check


for _target in ("nearest_kronecker", "gkpd"):

    @register(_target, "W")
    def _nk_w(draw, target=_target):
        a, b, W = _kron_problem(draw)
        vs = [x for x in dense_variants(W, min_ndim=1) if x.label not in ("+1 mode", "empty mode")]
        vs += torch_variant(W)[:1]
        v = draw(one_of_variants(vs))
        return Case(target, "W", v.label, partial(getattr(tf, target), v.value, a, b),
                    ("W",), v.expect, inputs=(v.value,), check=_check_nk(v.value, 1))

    @register(_target, "shapes")
    def _nk_shapes(draw, target=_target):
        a, b, W = _kron_problem(draw)
        which = draw(st.sampled_from(["a_shape", "b_shape"]))
        vs = [x for x in shape_variants(a if which == "a_shape" else b, min_ndim=1)
              if x.label != "one mode" and not (which == "b_shape" and x.value is None)]
        if which == "b_shape":
            vs.append(Variant("None (inferred)", None, "ok"))
        v = draw(one_of_variants(vs))
        args = dict(a_shape=a, b_shape=b)
        args[which] = v.value
        return Case(target, "shapes", f"{which}={v.label}",
                    partial(getattr(tf, target), W, args["a_shape"], args["b_shape"]),
                    (which, "shape"), v.expect, inputs=(W, v.value), check=_check_nk(W, 1))

    @register(_target, "options")
    def _nk_options(draw, target=_target):
        a, b, W = _kron_problem(draw)
        maxr = min(math.prod(a), math.prod(b))
        which = draw(st.sampled_from(["rank", "method", "n_oversamples", "n_iter", "rng"]))
        kw: dict = dict(method="randomized", rng=0) if which != "method" else {}
        if which == "rank":
            vs = int_variants(draw(st.integers(1, maxr)), hi=maxr)
        elif which == "method":
            vs = choice_variants(["svd", "randomized"])
        elif which in ("n_oversamples", "n_iter"):
            vs = int_variants(2, lo=0)
        else:
            vs = rng_variants()
        v = draw(one_of_variants(vs))
        kw[which] = v.value
        rank = int(v.value) if which == "rank" and v.expect == "ok" else 1
        return Case(target, "options", f"{which}={v.label}",
                    partial(getattr(tf, target), W, a, b, **kw), (which,), v.expect,
                    inputs=(W,), check=_check_nk(W, rank))


@register("kronecker_shapes", "args")
def _kshapes(draw):
    shape = tuple(draw(st.integers(2, 12)) for _ in range(draw(st.integers(1, 3))))
    which = draw(st.sampled_from(["shape", "n_factors", "rank", "compression", "max_candidates",
                                  "max_enumerate", "allow_trivial"]))
    kw: dict = {}
    shp = shape
    if which == "shape":
        vs = [x for x in shape_variants(shape, min_ndim=1) if x.label != "one mode"]
    elif which == "n_factors":
        vs = int_variants(2)
    elif which == "rank":
        vs = int_variants(1)
    elif which == "compression":
        vs = float_variants(2.0, lo=0.0, lo_open=True, none_ok=True)
    elif which == "max_candidates":
        vs = int_variants(5, none_ok=True)
    elif which == "max_enumerate":
        vs = int_variants(1000)
    else:
        vs = [Variant("True", True, "ok"), Variant("np.False_", np.False_, "ok")]
    v = draw(one_of_variants(vs))
    if which == "shape":
        shp = v.value
    else:
        kw[which] = v.value

    def check(out):
        require(isinstance(out, list), "not a list")
        for ks in out:
            require(math.isfinite(ks.compression_ratio) and ks.compression_ratio > 0,
                    "compression ratio")

    return Case("kronecker_shapes", "args", f"{which}={v.label}",
                partial(tf.kronecker_shapes, shp, **kw), (which,), v.expect, inputs=(v.value,),
                check=check)


@register("sekron", "args")
def _sekron(draw):
    gen = np.random.default_rng(draw(seeds))
    shapes = [(2, 1), (1, 2), (2, 2)]
    W = gen.standard_normal((4, 4))
    which = draw(st.sampled_from(["W", "shapes", "ranks"]))
    args = dict(W=W, shapes=shapes, ranks=1)
    if which == "W":
        vs = [x for x in dense_variants(W) if x.label not in ("+1 mode", "empty mode")]
    elif which == "shapes":
        vs = [Variant("valid", shapes, "ok"), Variant("one shape", shapes[:1], "error"),
              Variant("wrong product", [(2, 2), (2, 2), (2, 2)], "error"),
              Variant("float entry", [(2.0, 1), (1, 2), (2, 2)], "error"),
              Variant("zero entry", [(0, 1), (1, 2), (2, 2)], "error"),
              Variant("None", None, "error"), Variant("not nested", (2, 2), "error")]
    else:
        vs = [x for x in int_variants(1, hi=2) if x.label != "None"]
        vs += [Variant("sequence", (1, 2), "ok"), Variant("too many", (1, 1, 1), "error"),
               Variant("None", None, "error")]
    v = draw(one_of_variants(vs))
    args[which] = v.value

    def check(res):
        D = host(res.sekron.to_dense())
        check_array(D, (4, 4))
        # the model's exact error: its first factor in units of max|W| (no subnormal rounding)
        s = float(np.max(np.abs(host(args["W"])))) or 1.0
        F = [host(f) for f in res.sekron.factors]
        exact = tf.SeKronTensor([F[0] / s] + F[1:], res.sekron.ranks).to_dense()
        true = relative_error(host(args["W"]) / s, exact)
        require(abs(true - res.rel_error) < 1e-4 * (1 + true), "rel_error differs")

    return Case("sekron", "args", f"{which}={v.label}",
                partial(tf.sekron, args["W"], args["shapes"], args["ranks"]), (which,), v.expect,
                inputs=(args["W"], args["shapes"]), check=check)


# --------------------------------------------------------------------------- joint triangularizers
def _commuting(draw, n=3, d=3):
    gen = np.random.default_rng(draw(seeds))
    V = gen.standard_normal((d, d)) + 3 * np.eye(d)
    Vi = np.linalg.inv(V)
    return np.stack([V @ np.diag(gen.standard_normal(d)) @ Vi for _ in range(n)])


def _orthogonal_variants(U):
    """Variants of an orthogonal matrix: rescaled or rounded copies are not orthogonal."""
    not_orthogonal = ("int64", "bool", "all zeros", "times 1e300", "times 1e-300",
                      "times 2**-1070 (subnormal)", "float32 times 1e30", "float16")
    return [Variant(x.label, x.value, "error" if x.label in not_orthogonal else x.expect)
            for x in dense_variants(U) if x.label not in ("+1 mode",)]


@register("joint_triangularize", "matrices")
def _jt_m(draw):
    M = _commuting(draw)
    vs = [x for x in dense_variants(M, min_ndim=3) if x.label not in ("+1 mode",)]
    vs += [Variant("list of matrices", list(M), "ok"),
           Variant("not square", M[:, :, :-1], "error"), Variant("one matrix 2-D", M[0], "either")]
    v = draw(one_of_variants(vs))

    def check(res):
        check_array(res.U, (3, 3))
        require(math.isfinite(res.rel_error), "rel_error")
        U = host(res.U)
        require(np.allclose(U.T @ U, np.eye(3), atol=1e-6), "U not orthogonal")

    return Case("joint_triangularize", "matrices", v.label,
                partial(tf.joint_triangularize, v.value, rng=0, max_iter=20), ("matrices",),
                v.expect, inputs=(v.value,), check=check)


@register("joint_triangularize", "options")
def _jt_opts(draw):
    M = _commuting(draw)
    which = draw(st.sampled_from(["init", "method", "max_iter", "tol", "rng", "callback"]))
    from _strategies import callback_variants

    if which == "init":
        Q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((3, 3)))
        vs = choice_variants(["schur"]) + [
            Variant("orthogonal", Q, "ok"), Variant("not orthogonal", Q * 2, "error"),
            Variant("wrong size", np.eye(2), "error"), Variant("NaN", Q * np.nan, "error")]
    elif which == "method":
        vs = choice_variants(["gauss_newton", "jacobi"])
    elif which == "max_iter":
        vs = int_variants(5)
    elif which == "tol":
        vs = float_variants(1e-10)
    elif which == "rng":
        vs = rng_variants()
    else:
        vs = callback_variants()
    v = draw(one_of_variants(vs))
    kw = {"rng": 0, "max_iter": 10, which: v.value}
    if which == "callback":
        # the Schur start is already exact for commuting matrices (0 iterations, so no
        # callback call): start elsewhere so that the solver iterates
        kw["init"] = np.linalg.qr(np.random.default_rng(2).standard_normal((3, 3)))[0]

    def check(res):
        check_array(res.U, (3, 3))
        require(math.isfinite(res.rel_error), "rel_error")

    return Case("joint_triangularize", "options", f"{which}={v.label}",
                partial(tf.joint_triangularize, M, **kw), (which,), v.expect,
                inputs=(M, v.value), check=check)


@register("joint_eigen", "args")
def _je(draw):
    M = _commuting(draw)
    U = host(tf.joint_triangularize(M, rng=0, max_iter=10).U)
    which = draw(st.sampled_from(["matrices", "U"]))
    if which == "matrices":
        vs = [x for x in dense_variants(M, min_ndim=3) if x.label not in ("+1 mode",)]
        args = lambda v: (v, U)  # noqa: E731
    else:
        vs = [x for x in _orthogonal_variants(U)]
        vs += [Variant("wrong size", np.eye(2), "error")]
        args = lambda v: (M, v)  # noqa: E731
    v = draw(one_of_variants(vs))

    def check(res):
        check_array(res.eigenvalues)
        check_array(res.eigenvectors)

    return Case("joint_eigen", "args", f"{which}={v.label}", partial(tf.joint_eigen,
                                                                     *args(v.value)),
                (which,), v.expect, inputs=(M, U, v.value), check=check)


@register("triangularization_error_bound", "args")
def _teb(draw):
    M = _commuting(draw)
    U = host(tf.joint_triangularize(M, rng=0, max_iter=10).U)
    which = draw(st.sampled_from(["matrices", "U", "noise_level", "noise_norm",
                                  "failure_probability", "safety_factor"]))
    args = dict(matrices=M, U=U, noise_level=1e-3)
    kw: dict = {}
    if which == "U":
        vs = _orthogonal_variants(U)
    elif which == "matrices":
        vs = [x for x in dense_variants(M, min_ndim=3) if x.label not in ("+1 mode",)]
    elif which == "noise_level":
        vs = float_variants(1e-3)
    elif which == "noise_norm":
        vs = choice_variants(["fro", "spectral", "gaussian"])
    elif which == "failure_probability":
        vs = float_variants(1e-6, lo_open=True, hi=1.0, hi_open=True)
    else:
        vs = float_variants(2.0, lo_open=True, none_ok=True)
    v = draw(one_of_variants(vs))
    if which in args:
        args[which] = v.value
    else:
        kw[which] = v.value

    def check(b):
        require(isinstance(b.bound, float) and not math.isnan(b.bound), "bound is NaN")

    return Case("triangularization_error_bound", "args", f"{which}={v.label}",
                partial(tf.triangularization_error_bound, args["matrices"], args["U"],
                        args["noise_level"], **kw), (which,), v.expect,
                inputs=(M, U, v.value), check=check)


@register("cp_joint_schur", "args")
def _cpjs(draw):
    from tensorfact.datasets import planted_cp

    X = planted_cp((4, 5, 6), 2, noise=0.01, rng=draw(seeds))[0]
    which = draw(st.sampled_from(["X", "rank", "n_slices", "rng"]))
    kw: dict = dict(rng=0)
    Xv, rank = X, 2
    if which == "X":
        vs = [x for x in dense_variants(X, min_ndim=3) if x.label not in ("+1 mode",)]
    elif which == "rank":
        vs = int_variants(2, hi=5)
    elif which == "n_slices":
        vs = int_variants(3, lo=2, none_ok=True)
    else:
        vs = rng_variants()
    v = draw(one_of_variants(vs))
    if which == "X":
        Xv = v.value
    elif which == "rank":
        rank = v.value
    else:
        kw[which] = v.value
    R = int(rank) if isinstance(rank, (int, np.integer)) and not isinstance(rank, bool) else 2

    def check(res):
        from _registry import dense_error

        require(res.cp.rank == R, "rank")
        true = dense_error(host(Xv), res.cp)
        require(abs(true - res.rel_error) < 1e-4 * (1 + true),
                f"rel_error {res.rel_error} but the model's error is {true}")

    return Case("cp_joint_schur", "args", f"{which}={v.label}",
                partial(tf.cp_joint_schur, Xv, rank, **kw), (which,), v.expect,
                inputs=(Xv,), check=check)
