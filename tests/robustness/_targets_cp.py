"""Families of the CP solvers: cp_als, spals, spals_sample_count, as_format, DenseTensor."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from _harness import Case, require
from _registry import check_array, check_cp_result, host, register, tol_for
from _strategies import (
    Variant,
    bool_variants,
    callback_variants,
    choice_variants,
    dense_variants,
    float_variants,
    int_variants,
    normal,
    one_of_variants,
    rng_variants,
    seeds,
    shape_variants,
    small_shapes,
    torch_variant,
)
from hypothesis import strategies as st

import tensorfact as tf
from tensorfact.datasets import planted_cp, planted_sparse_cp

SOLVERS = {
    "cp_als": dict(max_iter=4, tol=0.0, rng=0),
    "spals": dict(max_iter=3, tol=0.0, rng=0, exact_fit_every=1),
}


def _tensor(draw, min_ndim=2, max_ndim=4) -> np.ndarray:
    shape = draw(small_shapes(min_ndim, max_ndim))
    seed = draw(seeds)
    if draw(st.booleans()):
        return planted_cp(shape, 2, noise=0.1, rng=seed)[0]
    return normal(seed, shape)


def _solver_case(target: str, family: str, X, rank, v: Variant, names, *,
                 extra: dict | None = None, exact: bool = True, inputs=(), expect=None) -> Case:
    fn = getattr(tf, target)
    kw = dict(SOLVERS[target])
    kw.update(extra or {})
    R = int(rank) if isinstance(rank, (int, np.integer)) and not isinstance(rank, bool) else 1

    def check(res):
        check_cp_result(X, res, R, exact=exact, dtype_tol=tol_for(X))

    return Case(target, family, v.label, partial(fn, X, rank, **kw), names,
                expect or v.expect, inputs=(X,) + tuple(inputs), check=check)


for _target in SOLVERS:

    @register(_target, "X")
    def _x(draw, target=_target):
        X0 = _tensor(draw)
        vs = [x for x in dense_variants(X0) if "subnormal" not in x.label]  # X-subnormal
        v = draw(one_of_variants(vs, torch_variant(X0)))
        return _solver_case(target, "X", v.value, 2, v, ("X",))

    @register(_target, "X-sparse")
    def _x_sparse(draw, target=_target):
        shape = draw(small_shapes(2, 4))
        seed = draw(seeds)
        total = math.prod(shape)
        S, _ = planted_sparse_cp(shape, 2, min(total, draw(st.integers(1, 3 * total // 4 + 1))),
                                 rng=seed)
        empty = tf.SparseTensor(np.zeros((0, len(shape)), dtype=np.int64), np.zeros(0), shape)
        one_mode = tf.SparseTensor(np.zeros((1, 1), dtype=np.int64), np.ones(1), (4,))
        big = tf.SparseTensor(S.coords, S.values * 1e300, S.shape)
        v = draw(one_of_variants([
            Variant("SparseTensor", S, "ok"),
            Variant("no entries", empty, "ok"),
            Variant("values times 1e300", big, "ok"),
            Variant("1-way SparseTensor", one_mode, "error"),
            Variant("unchecked NaN values",
                    tf.SparseTensor(S.coords, np.full(S.nnz, np.nan), S.shape, check=False),
                    "error"),
        ]))
        return _solver_case(target, "X-sparse", v.value, 2, v, ("X",))

    @register(_target, "rank")
    def _rank(draw, target=_target):
        X = _tensor(draw)
        maxr = min(math.prod(X.shape) // s for s in X.shape)
        valid = draw(st.integers(1, min(maxr, 4)))
        v = draw(one_of_variants(int_variants(valid, hi=maxr)))
        return _solver_case(target, "rank", X, v.value, v, ("rank",))

    @register(_target, "max_iter")
    def _max_iter(draw, target=_target):
        X = _tensor(draw)
        v = draw(one_of_variants(int_variants(draw(st.integers(1, 3)))))
        return _solver_case(target, "max_iter", X, 2, v, ("max_iter",),
                            extra=dict(max_iter=v.value))

    @register(_target, "tol")
    def _tol(draw, target=_target):
        X = _tensor(draw)
        v = draw(one_of_variants(float_variants(1e-3)))
        return _solver_case(target, "tol", X, 2, v, ("tol",), extra=dict(tol=v.value))

    @register(_target, "rng")
    def _rng(draw, target=_target):
        X = _tensor(draw)
        v = draw(one_of_variants(rng_variants()))
        init = {"init": "random"}
        return _solver_case(target, "rng", X, 2, v, ("rng",), extra=dict(rng=v.value, **init))

    @register(_target, "callback")
    def _callback(draw, target=_target):
        X = _tensor(draw)
        v = draw(one_of_variants(callback_variants()))
        names = ("callback",)
        return _solver_case(target, "callback", X, 2, v, names, extra=dict(callback=v.value))

    @register(_target, "flags")
    def _flags(draw, target=_target):
        X = _tensor(draw)
        which = draw(st.sampled_from(["verbose", "check_finite"]))
        vs = bool_variants()
        if which == "check_finite":
            Xn = X.copy()
            Xn.flat[draw(st.integers(0, X.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
            vs = vs + [Variant("False with NaN/Inf in X", (False, Xn), "error")]
        v = draw(one_of_variants(vs))
        if isinstance(v.value, tuple):
            return _solver_case(target, "flags", v.value[1], 2, v,
                                ("X", which, "NaN", "non-finite"), extra={which: False})
        return _solver_case(target, "flags", X, 2, v, (which,), extra={which: v.value})

    @register(_target, "X-subnormal")
    def _x_subnormal(draw, target=_target):
        X = _tensor(draw) * draw(st.sampled_from([2.0**-1070, 2.0**-1040, 2.0**-1030]))
        v = Variant("data below 2**-1022 (subnormal)", X, "ok")
        return _solver_case(target, "X-subnormal", X, 2, v, ("X",))

    @register(_target, "init")
    def _init(draw, target=_target):
        X = _tensor(draw, 3, 3)
        seed = draw(seeds)
        gen = np.random.default_rng(seed)
        good = tf.CPTensor([gen.standard_normal((s, 2)) for s in X.shape])
        nan = tf.CPTensor([np.full((s, 2), np.nan) for s in X.shape])
        zero = tf.CPTensor([np.zeros((s, 2)) for s in X.shape])
        names = ["svd", "random"] + (["joint_schur"] if target == "cp_als" else [])
        variants = choice_variants(names) + [
            Variant("CPTensor", good, "ok"),
            Variant("CPTensor of zeros", zero, "either"),
            Variant("CPTensor rank 3", tf.CPTensor([gen.standard_normal((s, 3))
                                                   for s in X.shape]), "error"),
            Variant("CPTensor wrong shape", tf.CPTensor([gen.standard_normal((s + 1, 2))
                                                        for s in X.shape]), "error"),
            Variant("CPTensor float32", tf.CPTensor([A.astype(np.float32)
                                                    for A in good.factors]), "error"),
            Variant("CPTensor NaN", nan, "error"),
            Variant("(weights, factors) tuple", (np.ones(2), list(good.factors)), "either"),
            Variant("ndarray", np.ones(3), "error"),
        ]
        try:
            import torch

            variants.append(Variant("torch CPTensor",
                                    tf.CPTensor([torch.from_numpy(A) for A in good.factors]),
                                    "error"))
        except ImportError:
            pass
        v = draw(one_of_variants(variants))
        return _solver_case(target, "init", X, 2, v, ("init",), extra=dict(init=v.value),
                            inputs=(v.value,))


@register("cp_als", "l2_reg-n_init")
def _cp_als_reg(draw):
    X = _tensor(draw)
    which = draw(st.sampled_from(["l2_reg", "n_init"]))
    if which == "l2_reg":
        v = draw(one_of_variants(float_variants(0.1)))
        return _solver_case("cp_als", "l2_reg-n_init", X, 2, v, ("l2_reg",),
                            extra=dict(l2_reg=v.value), exact=True)
    v = draw(one_of_variants(int_variants(2)))
    return _solver_case("cp_als", "l2_reg-n_init", X, 2, v, ("n_init",),
                        extra=dict(n_init=v.value))


@register("spals", "n_samples-alpha")
def _spals_samples(draw):
    X = _tensor(draw)
    which = draw(st.sampled_from(["n_samples", "alpha"]))
    if which == "alpha":
        v = draw(one_of_variants(float_variants(0.3, lo_open=True)))
        return _solver_case("spals", "n_samples-alpha", X, 2, v, ("alpha",),
                            extra=dict(alpha=v.value))
    v = draw(one_of_variants(int_variants(draw(st.integers(4, 30))) + [
        Variant("'auto'", "auto", "ok"), Variant("'AUTO'", "AUTO", "error"),
        Variant("10**15 (capped)", 10**15, "ok")]))
    return _solver_case("spals", "n_samples-alpha", X, 2, v, ("n_samples",),
                        extra=dict(n_samples=v.value))


@register("spals", "method-sampler")
def _spals_method(draw):
    X = _tensor(draw)
    which = draw(st.sampled_from(["method", "sampler", "deterministic_threshold",
                                  "exact_fit_every"]))
    if which == "method":
        vs = choice_variants(["qr", "gram"])
    elif which == "sampler":
        vs = choice_variants(["product", "exact"])
    elif which == "deterministic_threshold":
        vs = float_variants(0.05, hi=1.0, none_ok=True)
    else:
        vs = int_variants(2, none_ok=True)
    v = draw(one_of_variants(vs))
    exact = which != "exact_fit_every" or v.value == 1
    extra = {which: v.value}
    if which == "exact_fit_every":
        extra["max_iter"] = 2
    return _solver_case("spals", "method-sampler", X, 2, v, (which,), extra=extra, exact=exact)


# --------------------------------------------------------------------------- spals_sample_count
@register("spals_sample_count", "args")
def _sample_count(draw):
    shape = draw(small_shapes(2, 4, 50))
    which = draw(st.sampled_from(["shape", "rank", "mode", "alpha"]))
    args = dict(shape=shape, rank=2, mode=0, alpha=0.5)
    if which == "shape":
        vs = [x if "entries" not in x.label else Variant(x.label, x.value, "ok")
              for x in shape_variants(shape)]
    elif which == "rank":
        vs = int_variants(3)
    elif which == "mode":
        vs = int_variants(1, lo=-len(shape), hi=len(shape) - 1)
    else:
        vs = float_variants(0.5, lo_open=True)
    v = draw(one_of_variants(vs))
    args[which] = v.value

    def call():
        return tf.spals_sample_count(args["shape"], args["rank"], args["mode"],
                                     alpha=args["alpha"])

    def check(s):
        require(isinstance(s, int) and s >= 1, f"sample count {s!r}")

    return Case("spals_sample_count", "args", f"{which}={v.label}", call, (which,), v.expect,
                inputs=(v.value,), check=check)


# --------------------------------------------------------------------------- as_format, DenseTensor
@register("as_format", "X")
def _as_format(draw):
    X0 = _tensor(draw)
    v = draw(one_of_variants(dense_variants(X0), torch_variant(X0), [
        Variant("SparseTensor", tf.SparseTensor.from_dense(X0), "ok")]))

    def check(fmt):
        require(isinstance(fmt, tf.TensorFormat), f"not a TensorFormat: {type(fmt).__name__}")
        data = host(v.value.to_dense() if isinstance(v.value, tf.SparseTensor) else v.value)
        big = np.finfo(np.float32 if "float32" in str(fmt.dtype) else np.float64).max
        with np.errstate(over="ignore"):
            overflows = not np.sum((data / np.sqrt(big)) ** 2) < 1.0
        require(math.isfinite(fmt.norm_sq()) or overflows, "non-finite norm_sq")

    return Case("as_format", "X", v.label, partial(tf.as_format, v.value), ("X",), v.expect,
                inputs=(v.value,), check=check)


@register("DenseTensor", "X")
def _dense_tensor(draw):
    X0 = _tensor(draw)
    vs = [x if x.label != "empty mode" else Variant(x.label, x.value, "either")
          for x in dense_variants(X0, finite_checked=False)]  # as_format refuses empty modes
    v = draw(one_of_variants(vs, torch_variant(X0)))

    def check(fmt):
        if 0 in fmt.shape:
            return
        F = [np.ones((s, 2)) for s in fmt.shape]
        M = fmt.mttkrp([np.asarray(A, dtype=host(fmt.like).dtype) for A in F], 0) \
            if isinstance(v.value, np.ndarray) else None
        require(fmt.shape == tuple(np.shape(host(v.value))), "shape changed")
        if M is not None and np.all(np.isfinite(host(v.value))):
            ref = tf.unfold(host(v.value), 0) @ tf.khatri_rao(F, skip=0)
            check_array(M, ref=ref, rtol=1e-3)

    return Case("DenseTensor", "X", v.label, partial(tf.DenseTensor, v.value), ("X",),
                v.expect, inputs=(v.value,), check=check)


@register("DenseTensor", "methods")
def _dense_methods(draw):
    X = _tensor(draw, 3, 3)
    D = tf.DenseTensor(X)
    which = draw(st.sampled_from(["mode", "k", "indices"]))
    if which == "mode":
        v = draw(one_of_variants(int_variants(1, lo=-3, hi=2)))
        call = partial(D.mode_gram, v.value)
        ref = None
        if v.expect == "ok":
            ref = tf.unfold(X, int(v.value)) @ tf.unfold(X, int(v.value)).T
        return Case("DenseTensor", "methods", f"mode_gram mode={v.label}", call, ("mode",),
                    v.expect, inputs=(X,), check=lambda G: check_array(G, ref=ref))
    if which == "k":
        v = draw(one_of_variants(int_variants(2, hi=X.shape[1])))
        call = partial(D.leading_subspace, 1, v.value, np.random.default_rng(0))
        return Case("DenseTensor", "methods", f"leading_subspace k={v.label}", call, ("k",),
                    v.expect, inputs=(X,), check=lambda U: check_array(U))
    good = np.zeros((3, 2), dtype=np.int64)
    v = draw(one_of_variants([
        Variant("valid", good, "ok"),
        Variant("out of range", good + 50, "error"),
        Variant("negative", good - 1, "error"),
        Variant("float", good.astype(float), "error"),
        Variant("wrong width", np.zeros((3, 3), dtype=np.int64), "error"),
    ]))
    return Case("DenseTensor", "methods", f"sampled_fibers indices={v.label}",
                partial(D.sampled_fibers, 0, v.value), ("indices",), v.expect,
                inputs=(X, v.value), check=lambda F: check_array(F, (3, X.shape[0])))


# --------------------------------------------------------------------------- result records
@register("CPALSResult", "args")
def _result(draw):
    X = _tensor(draw)
    res = tf.cp_als(X, 2, max_iter=2, rng=0)
    which = draw(st.sampled_from(["cp", "n_iter", "converged", "rel_error", "history"]))
    args = dict(cp=res.cp, n_iter=res.n_iter, converged=res.converged,
                rel_error=res.rel_error, history=res.history)
    if which == "cp":
        vs = [Variant("CPTensor", res.cp, "ok"), Variant("(weights, factors)", tuple(res.cp),
                                                         "error"),
              Variant("None", None, "error"), Variant("ndarray", X, "error")]
    elif which == "n_iter":
        vs = int_variants(2, lo=0)
    elif which == "converged":
        vs = [Variant("True", True, "ok"), Variant("np.False_", np.False_, "ok"),
              Variant("1", 1, "error"), Variant("'yes'", "yes", "error"),
              Variant("None", None, "error")]
    elif which == "rel_error":
        vs = float_variants(0.25)
    else:
        vs = [Variant("history", res.history, "ok"), Variant("None", None, "error"),
              Variant("tuple", (res.history.rel_error, res.history.time), "error")]
    v = draw(one_of_variants(vs))
    args[which] = v.value

    def check(r):
        require(isinstance(r.rel_error, float) and isinstance(r.n_iter, int)
                and isinstance(r.converged, bool), "fields not normalised")

    return Case("CPALSResult", "args", f"{which}={v.label}", partial(tf.CPALSResult, **args),
                (which,), v.expect, inputs=(v.value,), check=check)


@register("ConvergenceHistory", "args")
def _history(draw):
    n = draw(st.integers(0, 4))
    errs = [0.5 / (k + 1) for k in range(n)]
    times = [0.1 * (k + 1) for k in range(n)]
    which = draw(st.sampled_from(["rel_error", "time", "objective"]))
    args: dict = dict(rel_error=errs, time=times, objective=None)
    base = args[which] if which != "objective" else errs
    vs = [Variant("list", list(base), "ok"), Variant("tuple", tuple(base), "ok"),
          Variant("ndarray", np.array(base), "ok"),
          Variant("np.float32 entries", [np.float32(x) for x in base], "ok"),
          Variant("one entry too many", list(base) + [0.1], "error"),
          Variant("string entries", [str(x) for x in base] or ["a"], "error"),
          Variant("a string", "0.5", "error"), Variant("3", 3, "error"),
          Variant("complex entries", [complex(x, 1) for x in base] or [1j], "error")]
    if which == "objective":
        vs.append(Variant("None", None, "ok"))
    v = draw(one_of_variants(vs))
    args[which] = v.value

    def check(h):
        require(len(h) == n and all(isinstance(x, float) for x in h.rel_error),
                "not normalised to floats")

    return Case("ConvergenceHistory", "args", f"{which}={v.label}",
                partial(tf.ConvergenceHistory, **args), (which, f"{which} entries"), v.expect,
                inputs=(v.value,), check=check)
