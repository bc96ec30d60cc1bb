"""Families of nonnegative_cp: the data (dense, sparse, negative), rank, method, init, options."""

from __future__ import annotations

from functools import partial

import _strategies as strat
import numpy as np
from _harness import Case, require
from _registry import check_cp_result, host, register, tol_for
from _strategies import Variant, one_of_variants
from hypothesis import strategies as st

import tensorfact as tf

TARGET = "nonnegative_cp"
BASE = dict(max_iter=4, tol=0.0, rng=0)


def _data(draw, min_ndim=2, max_ndim=4) -> np.ndarray:
    """Non-negative data: a planted non-negative CP tensor, or |normal| entries."""
    shape = draw(strat.small_shapes(min_ndim, max_ndim))
    g = np.random.default_rng(draw(strat.seeds))
    if draw(st.booleans()):
        return np.asarray(tf.CPTensor([g.uniform(size=(s, 2)) for s in shape]).to_dense())
    return np.abs(g.standard_normal(shape))


def _case(family: str, X, rank, v: Variant, names, *, inputs=(), **options) -> Case:
    R = rank if isinstance(rank, (int, np.integer)) and not isinstance(rank, bool) else 1

    def check(res):
        check_cp_result(X, res, int(R), exact=True, dtype_tol=tol_for(X))
        w, factors = res.cp
        require(all(float(host(a).min(initial=0.0)) >= 0 for a in (w, *factors)),
                "negative entries in the non-negative model")

    call = partial(tf.nonnegative_cp, X, rank, **{**BASE, **options})
    return Case(TARGET, family, v.label, call, names, v.expect, inputs=(X, *inputs),
                check=check)


@register(TARGET, "X")
def _x(draw):
    X0 = _data(draw)
    neg = X0.copy()
    neg.flat[draw(st.integers(0, X0.size - 1))] = -0.25
    v = draw(one_of_variants(strat.dense_variants(X0), strat.torch_variant(X0),
                             [Variant("a negative entry", neg, "error")]))
    return _case("X", v.value, 2, v, ("X",))


@register(TARGET, "X-sparse")
def _x_sparse(draw):
    X0 = _data(draw)
    kept = np.random.default_rng(draw(strat.seeds)).uniform(size=X0.shape) < 0.5
    S = tf.SparseTensor.from_dense(np.where(kept, X0, 0.0))
    shape = X0.shape
    v = draw(one_of_variants([
        Variant("SparseTensor", S, "ok"),
        Variant("no entries", tf.SparseTensor(np.zeros((0, len(shape)), dtype=np.int64),
                                              np.zeros(0), shape), "ok"),
        Variant("values times 1e300", tf.SparseTensor(S.coords, S.values * 1e300, shape), "ok"),
        Variant("a negative value", tf.SparseTensor(np.zeros((1, len(shape)), dtype=np.int64),
                                                    -np.ones(1), shape), "error"),
        Variant("unchecked NaN values",
                tf.SparseTensor(S.coords, np.full(S.nnz, np.nan), shape, check=False), "error"),
    ]))
    return _case("X-sparse", v.value, 2, v, ("X",))


@register(TARGET, "rank")
def _rank(draw):
    X = _data(draw)
    maxr = min(X.size // s for s in X.shape)
    v = draw(one_of_variants(strat.int_variants(draw(st.integers(1, min(maxr, 4))), hi=maxr)))
    return _case("rank", X, v.value, v, ("rank",))


@register(TARGET, "method")
def _method(draw):
    X = _data(draw)
    v = draw(one_of_variants(strat.choice_variants(["hals", "mu"])))
    return _case("method", X, 2, v, ("method",), method=v.value)


@register(TARGET, "init")
def _init(draw):
    X = _data(draw, 3, 3)
    g = np.random.default_rng(draw(strat.seeds))
    good = tf.CPTensor([g.uniform(size=(s, 2)) for s in X.shape])
    negative = tf.CPTensor([A - 0.5 for A in good.factors])
    variants = strat.choice_variants(["svd", "random"]) + [
        Variant("non-negative CPTensor", good, "ok"),
        Variant("CPTensor with negative weights",
                tf.CPTensor(list(good.factors), weights=-np.ones(2)), "error"),
        Variant("CPTensor with negative entries", negative, "error"),
        Variant("CPTensor of zeros", tf.CPTensor([np.zeros((s, 2)) for s in X.shape]),
                "either"),
        Variant("CPTensor rank 3", tf.CPTensor([g.uniform(size=(s, 3)) for s in X.shape]),
                "error"),
        Variant("CPTensor float32", tf.CPTensor([A.astype(np.float32) for A in good.factors]),
                "error"),
        Variant("CPTensor NaN", tf.CPTensor([np.full((s, 2), np.nan) for s in X.shape]),
                "error"),
        Variant("ndarray", np.ones(3), "error"),
    ]
    v = draw(one_of_variants(variants))
    return _case("init", X, 2, v, ("init",), inputs=(v.value,), init=v.value)


@register(TARGET, "options")
def _options(draw):
    X = _data(draw)
    which = draw(st.sampled_from(["max_iter", "inner_max_iter", "tol", "inner_tol"]))
    if which.endswith("max_iter"):
        v = draw(one_of_variants(strat.int_variants(draw(st.integers(1, 3)))))
    else:
        v = draw(one_of_variants(strat.float_variants(1e-3)))
    return _case("options", X, 2, v, (which,), **{which: v.value})


@register(TARGET, "rng-callback")
def _rng_callback(draw):
    X = _data(draw)
    if draw(st.booleans()):
        v = draw(one_of_variants(strat.rng_variants()))
        return _case("rng-callback", X, 2, v, ("rng",), rng=v.value, init="random")
    v = draw(one_of_variants(strat.callback_variants()))
    return _case("rng-callback", X, 2, v, ("callback",), callback=v.value)


@register(TARGET, "flags")
def _flags(draw):
    X = _data(draw)
    which = draw(st.sampled_from(["verbose", "check_finite"]))
    if which == "check_finite" and draw(st.booleans()):
        bad = X.copy()
        bad.flat[draw(st.integers(0, X.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
        v = Variant("False with NaN/Inf in X", bad, "error")
        return _case("flags", bad, 2, v, ("X", which, "NaN", "non-finite"), check_finite=False)
    v = draw(one_of_variants(strat.bool_variants()))
    return _case("flags", X, 2, v, (which,), **{which: v.value})
