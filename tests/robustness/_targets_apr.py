"""Families of cp_apr (Poisson CP of count data)."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from _harness import Case, require
from _registry import dense_error, finite, host, register, tol_for
from _strategies import (
    Variant,
    callback_variants,
    choice_variants,
    dense_variants,
    float_variants,
    int_variants,
    one_of_variants,
    rng_variants,
    seeds,
    small_shapes,
    torch_variant,
)
from hypothesis import strategies as st

import tensorfact as tf

BASE = dict(max_iter=4, tol=0.0, rng=0)


def _counts(draw) -> np.ndarray:
    """Small Poisson count tensors (about a third of the entries zero)."""
    shape = draw(small_shapes(2, 4))
    gen = np.random.default_rng(draw(seeds))
    return gen.poisson(1.2, shape).astype(np.float64)


def _loglik(Xd: np.ndarray, cp: tf.CPTensor, epsilon: float) -> float:
    """``sum x log max(m, epsilon) - sum m`` from the dense model, in float64."""
    w = host(cp.weights)
    M = tf.CPTensor([host(A) for A in cp.factors], weights=w).to_dense()
    pos = Xd > 0
    return float(np.sum(Xd[pos] * np.log(np.maximum(M[pos], epsilon))) - M.sum())


def check_apr_result(X, res, rank: int, *, dtype_tol: float, epsilon: float = 1e-10) -> None:
    """A CPAPRResult: a finite non-negative model whose reported figures are its own."""
    require(isinstance(res, tf.CPAPRResult), f"expected CPAPRResult, got {type(res).__name__}")
    cp = res.cp
    Xd = host(X.to_dense() if isinstance(X, tf.SparseTensor) else X)
    require(cp.shape == Xd.shape, f"model shape {cp.shape} != data shape {Xd.shape}")
    require(cp.rank == rank, f"model rank {cp.rank} != requested {rank}")
    require(finite(cp.weights) and np.all(host(cp.weights) >= 0), "weights not finite >= 0")
    for n, A in enumerate(cp.factors):
        require(finite(A) and np.all(host(A) >= 0), f"factor {n} not finite >= 0")
    require(len(res.history) == res.n_iter, "history length != n_iter")
    require(res.n_iter == 0 or res.history.objective[-1] == res.log_likelihood,
            "log_likelihood is not the last history entry")
    require(math.isfinite(res.kkt_violation) and res.kkt_violation >= 0,
            f"kkt_violation {res.kkt_violation!r}")
    scale = float(np.max(Xd)) if Xd.size else 0.0
    if scale == 0.0 or scale < 1e-200 or scale > 1e200:
        return  # the checks below would under- or overflow in float64 themselves
    ll = _loglik(Xd, cp, epsilon)
    require(abs(ll - res.log_likelihood) <= dtype_tol * (abs(ll) + Xd.sum()),
            f"log_likelihood {res.log_likelihood:.8g} but the model's is {ll:.8g}")
    true = dense_error(Xd, cp)
    require(abs(true - res.rel_error) <= dtype_tol * (1 + true),
            f"rel_error {res.rel_error:.6g} but the returned model's error is {true:.6g}")


def _case(family: str, X, rank, v: Variant, names, *, extra: dict | None = None,
          inputs=(), expect=None) -> Case:
    kw = dict(BASE)
    kw.update(extra or {})
    R = int(rank) if isinstance(rank, (int, np.integer)) and not isinstance(rank, bool) else 1
    eps = kw.get("epsilon", 1e-10)

    def check(res):
        check_apr_result(X, res, R, dtype_tol=tol_for(X), epsilon=float(eps))

    return Case("cp_apr", family, v.label, partial(tf.cp_apr, X, rank, **kw), names,
                expect or v.expect, inputs=(X,) + tuple(inputs), check=check)


@register("cp_apr", "S")
def _s(draw):
    X0 = _counts(draw)
    X0.flat[0] = 2.0  # never all zero
    vs = [x for x in dense_variants(X0, name="S") if "subnormal" not in x.label]
    neg = X0.copy()
    neg.flat[-1] = -1.0
    S = tf.SparseTensor.from_dense(X0)
    vs += [
        Variant("negative count", neg, "error"),
        Variant("non-integer counts (warns)", X0 + 0.25, "ok"),
        Variant("SparseTensor", S, "ok"),
        Variant("SparseTensor with a negative value",
                tf.SparseTensor(S.coords, -S.values, S.shape), "error"),
        Variant("SparseTensor without entries",
                tf.SparseTensor(np.zeros((0, X0.ndim), dtype=np.int64), np.zeros(0), X0.shape),
                "ok"),
        Variant("1-way SparseTensor", tf.SparseTensor(np.zeros((1, 1), dtype=np.int64),
                                                      np.ones(1), (4,)), "error"),
        Variant("unchecked NaN values",
                tf.SparseTensor(S.coords, np.full(S.nnz, np.nan), S.shape, check=False),
                "error"),
    ]
    v = draw(one_of_variants(vs, torch_variant(X0)))
    return _case("S", v.value, 2, v, ("S", "X"))


@register("cp_apr", "rank")
def _rank(draw):
    X = _counts(draw)
    maxr = min(math.prod(X.shape) // s for s in X.shape)
    v = draw(one_of_variants(int_variants(draw(st.integers(1, min(maxr, 3))), hi=maxr)))
    return _case("rank", X, v.value, v, ("rank",))


@register("cp_apr", "iterations")
def _iterations(draw):
    X = _counts(draw)
    which = draw(st.sampled_from(["max_iter", "max_inner_iter"]))
    v = draw(one_of_variants(int_variants(draw(st.integers(1, 3)))))
    return _case("iterations", X, 2, v, (which,), extra={which: v.value})


@register("cp_apr", "tolerances")
def _tolerances(draw):
    X = _counts(draw)
    which = draw(st.sampled_from(["tol", "kappa", "kappa_tol", "epsilon"]))
    valid = {"tol": 1e-4, "kappa": 0.01, "kappa_tol": 1e-10, "epsilon": 1e-10}[which]
    vs = float_variants(valid, lo_open=which == "epsilon")
    v = draw(one_of_variants(vs))
    return _case("tolerances", X, 2, v, (which,), extra={which: v.value})


@register("cp_apr", "init")
def _init(draw):
    X = _counts(draw)
    gen = np.random.default_rng(draw(seeds))
    good = tf.CPTensor([gen.random((s, 2)) for s in X.shape], weights=gen.random(2) + 0.1)
    variants = choice_variants(["random"]) + [
        Variant("CPTensor", good, "ok"),
        Variant("CPTensor of zeros", tf.CPTensor([np.zeros((s, 2)) for s in X.shape]), "ok"),
        Variant("CPTensor with a negative entry",
                tf.CPTensor([A - 2.0 * (A == A.max()) for A in good.factors]), "error"),
        Variant("CPTensor with a negative weight",
                tf.CPTensor(list(good.factors), weights=-np.ones(2)), "error"),
        Variant("CPTensor rank 3", tf.CPTensor([gen.random((s, 3)) for s in X.shape]),
                "error"),
        Variant("CPTensor wrong shape", tf.CPTensor([gen.random((s + 1, 2)) for s in X.shape]),
                "error"),
        Variant("CPTensor NaN", tf.CPTensor([np.full((s, 2), np.nan) for s in X.shape]),
                "error"),
        Variant("'svd' (not for cp_apr)", "svd", "error"),
        Variant("ndarray", np.ones(3), "error"),
    ]
    v = draw(one_of_variants(variants))
    return _case("init", X, 2, v, ("init",), extra=dict(init=v.value), inputs=(v.value,))


@register("cp_apr", "rng-callback")
def _rng_callback(draw):
    X = _counts(draw)
    which = draw(st.sampled_from(["rng", "callback"]))
    v = draw(one_of_variants(rng_variants() if which == "rng" else callback_variants()))
    return _case("rng-callback", X, 2, v, (which,), extra={which: v.value})
