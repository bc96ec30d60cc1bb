"""Families of leverage scores, Khatri-Rao row sampling and sampled least squares."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from _harness import Case, require
from _registry import check_array, host, register
from _strategies import (
    Variant,
    choice_variants,
    dense_variants,
    float_variants,
    int_variants,
    one_of_variants,
    rng_variants,
    seeds,
    torch_variant,
)
from hypothesis import strategies as st

import tensorfact as tf


def _factors(draw, k_min=2, k_max=3):
    k = draw(st.integers(k_min, k_max))
    R = draw(st.integers(1, 3))
    gen = np.random.default_rng(draw(seeds))
    return [gen.standard_normal((int(gen.integers(R, R + 4)), R)) for _ in range(k)]


def _factor_variants(F: list[np.ndarray], finite_checked: bool = True) -> list[Variant]:
    """Variants of a list of factor matrices (one factor perturbed).

    A factor of another dtype than the others may be promoted or refused
    (``"either"``); ``finite_checked=False`` for building blocks that let
    NaN/Inf propagate like NumPy does.
    """
    retyped = ("float32", "float16", "int64", "bool", "float32 times 1e30")
    out = [Variant(f"factors[1] {v.label}", F[:1] + [v.value] + F[2:],
                   "either" if v.label in retyped
                   or (v.label == "empty mode" and not finite_checked) else v.expect)
           for v in dense_variants(F[1], min_ndim=2, finite_checked=finite_checked)
           if v.label not in ("+1 mode",)]
    out += [
        Variant("tuple", tuple(F), "ok"),
        Variant("empty list", [], "error"),
        Variant("one array (not a list)", F[0], "error"),
        Variant("generator", (A for A in F), "either"),
        Variant("column counts differ", F[:1] + [np.ones((F[1].shape[0], F[1].shape[1] + 1))]
                + F[2:], "error"),
        Variant("None entry", F[:1] + [None] + F[2:], "error"),
    ]
    out += [Variant(f"factors[1] {v.label}", F[:1] + [v.value] + F[2:], "either")
            for v in torch_variant(F[1])[:1]]
    return out


def _check_sample(dims):
    def check(s):
        require(isinstance(s, tf.KRPSample), f"not a KRPSample: {type(s).__name__}")
        require(s.indices.shape[1] == len(dims), "indices width")
        require(np.all(s.indices >= 0) and np.all(s.indices < np.asarray(dims)),
                "indices out of range")
        require(np.all(np.isfinite(s.weights)) and np.all(s.weights >= 0), "weights")
        require(np.all(np.isfinite(s.probabilities)), "probabilities")
    return check


# --------------------------------------------------------------------------- leverage_scores
@register("leverage_scores", "A")
def _lev_a(draw):
    A = _factors(draw, 1, 1)[0]
    v = draw(one_of_variants(dense_variants(A), torch_variant(A)))

    def check(lev):
        h = host(v.value)
        check_array(lev, (h.shape[0],))
        U, s, _ = np.linalg.svd(h / max(np.max(np.abs(h)), 1e-300), full_matrices=False)
        r = int(np.sum(s > max(h.shape) * np.finfo(np.float64).eps * s[0])) if s[0] > 0 else 0
        require(abs(float(np.sum(host(lev))) - r) < 1e-3 * (1 + r),
                f"scores sum to {float(np.sum(host(lev))):.6g}, rank is {r}")

    return Case("leverage_scores", "A", v.label, partial(tf.leverage_scores, v.value), ("A",),
                v.expect, inputs=(v.value,), check=check)


@register("leverage_scores", "rtol")
def _lev_rtol(draw):
    A = _factors(draw, 1, 1)[0]
    v = draw(one_of_variants(float_variants(1e-8, none_ok=True)))
    return Case("leverage_scores", "rtol", v.label, partial(tf.leverage_scores, A, rtol=v.value),
                ("rtol",), v.expect, inputs=(A,),
                check=lambda lev: check_array(lev, (A.shape[0],)))


# --------------------------------------------------------------------------- sample_krp_rows
@register("sample_krp_rows", "factors")
def _skr_factors(draw):
    F = _factors(draw)
    sampler = draw(st.sampled_from(["product", "exact"]))
    v = draw(one_of_variants(_factor_variants(F)))
    dims = [A.shape[0] for A in F]
    return Case("sample_krp_rows", "factors", f"{v.label} ({sampler})",
                partial(tf.sample_krp_rows, v.value, 20, rng=0, sampler=sampler),
                ("factors",), v.expect, inputs=(v.value,), check=_check_sample(dims))


@register("sample_krp_rows", "options")
def _skr_options(draw):
    F = _factors(draw)
    dims = [A.shape[0] for A in F]
    which = draw(st.sampled_from(["n_samples", "rng", "deterministic_threshold", "sampler",
                                  "scores"]))
    kw: dict = dict(rng=0)
    if which == "n_samples":
        vs = int_variants(draw(st.integers(1, 30)))
    elif which == "rng":
        vs = rng_variants()
    elif which == "deterministic_threshold":
        vs = float_variants(0.05, hi=1.0, none_ok=True)
    elif which == "sampler":
        vs = choice_variants(["product", "exact"])
    else:
        good = [np.abs(A[:, 0]) + 0.1 for A in F]
        vs = [Variant("valid", good, "ok"), Variant("None", None, "ok"),
              Variant("zeros", [np.zeros_like(s) for s in good], "ok"),
              Variant("too few", good[:1], "error"),
              Variant("negative", [-s for s in good], "error"),
              Variant("NaN", [s * np.nan for s in good], "error"),
              Variant("wrong length", [np.ones(d + 1) for d in dims], "error"),
              Variant("2-D entries", [s[:, None] for s in good], "error"),
              Variant("lists", [s.tolist() for s in good], "either"),
              Variant("complex", [s.astype(complex) for s in good], "error"),
              Variant("strings", [s.astype(str) for s in good], "error"),
              Variant("not a sequence", 3, "error")]
    v = draw(one_of_variants(vs))
    n = v.value if which == "n_samples" else 20
    if which != "n_samples":
        kw[which] = v.value
    return Case("sample_krp_rows", "options", f"{which}={v.label}",
                partial(tf.sample_krp_rows, F, n, **kw), (which,), v.expect, inputs=(F, v.value),
                check=_check_sample(dims))


# --------------------------------------------------------------------------- sampled_krp_lstsq
def _lstsq_check(F, Y, method):
    Y = np.asarray(host(Y)) if hasattr(Y, "shape") else np.zeros((1, 2))

    def check(res):
        require(isinstance(res, tf.SampledLstsqResult), type(res).__name__)
        check_array(res.coef, (Y.shape[1], F[0].shape[1]))
        require(math.isfinite(res.rel_error) and res.rel_error >= 0, f"rel_error {res.rel_error}")
        with np.errstate(over="ignore"):
            big = float(np.max(np.abs(host(Y))) ** 2) if Y.size else 0.0
        require(res.residual_sq >= 0 and (math.isfinite(res.residual_sq) or math.isinf(big)),
                f"residual_sq {res.residual_sq}")
    return check


@register("sampled_krp_lstsq", "factors")
def _sl_factors(draw):
    F = _factors(draw)
    Y = np.random.default_rng(draw(seeds)).standard_normal((math.prod(A.shape[0] for A in F), 2))
    v = draw(one_of_variants(_factor_variants(F)))
    return Case("sampled_krp_lstsq", "factors", v.label,
                partial(tf.sampled_krp_lstsq, v.value, Y, 30, rng=0), ("factors",), v.expect,
                inputs=(v.value, Y), check=_lstsq_check(F, Y, "qr"))


@register("sampled_krp_lstsq", "rhs")
def _sl_rhs(draw):
    F = _factors(draw)
    n = math.prod(A.shape[0] for A in F)
    Y = np.random.default_rng(draw(seeds)).standard_normal((n, 2))
    dims = tuple(A.shape[0] for A in F)

    def dense_rows(idx):
        return Y[np.ravel_multi_index(tuple(idx.T), dims)]

    def coo(idx):
        rows = dense_rows(idx)
        r, c = np.nonzero(rows)
        return r, c, rows[r, c]

    vs = [Variant(f"rhs {v.label}", v.value, v.expect) for v in dense_variants(Y)
          if v.label not in ("+1 mode", "empty mode")]
    vs += [
        Variant("callable rows", dense_rows, "ok"),
        Variant("callable COO (n_columns=2)", coo, "ok"),
        Variant("callable returning None", lambda idx: None, "error"),
        Variant("callable returning NaN rows", lambda idx: dense_rows(idx) * np.nan, "error"),
        Variant("callable returning a list", lambda idx: dense_rows(idx).tolist(), "error"),
        Variant("callable returning too few rows", lambda idx: dense_rows(idx)[:1], "error"),
        Variant("callable COO with a column out of range",
                lambda idx: (np.zeros(1, np.int64), np.full(1, 9), np.ones(1)), "error"),
        Variant("callable COO with a negative row",
                lambda idx: (np.full(1, -1), np.zeros(1, np.int64), np.ones(1)), "error"),
        Variant("callable COO with float indices",
                lambda idx: (np.zeros(1), np.zeros(1), np.ones(1)), "error"),
        Variant("callable COO of 2 arrays", lambda idx: (np.zeros(1), np.ones(1)), "error"),
        Variant("wrong number of rows", Y[:-1], "error"),
        Variant("1-D", Y[:, 0], "error"),
        Variant("string", "Y", "error"),
    ]
    v = draw(one_of_variants(vs))
    n_columns = 2 if callable(v.value) else None
    return Case("sampled_krp_lstsq", "rhs", v.label,
                partial(tf.sampled_krp_lstsq, F, v.value, 30, rng=0, n_columns=n_columns),
                ("rhs",), v.expect, inputs=(F, Y),
                check=_lstsq_check(F, v.value if hasattr(v.value, "shape") else Y, "qr"))


@register("sampled_krp_lstsq", "options")
def _sl_options(draw):
    F = _factors(draw)
    n = math.prod(A.shape[0] for A in F)
    Y = np.random.default_rng(draw(seeds)).standard_normal((n, 2))
    which = draw(st.sampled_from(["n_samples", "rng", "method", "sampler",
                                  "deterministic_threshold", "n_columns", "check_finite"]))
    kw: dict = dict(rng=0)
    n_samples = 30
    if which == "n_samples":
        vs = int_variants(draw(st.integers(1, 40)))
    elif which == "rng":
        vs = rng_variants()
    elif which == "method":
        vs = choice_variants(["qr", "gram"])
    elif which == "sampler":
        vs = choice_variants(["product", "exact"])
    elif which == "deterministic_threshold":
        vs = float_variants(0.05, hi=1.0, none_ok=True)
    elif which == "n_columns":
        vs = int_variants(2)
    else:
        vs = [Variant("True", True, "ok"), Variant("False", False, "ok"),
              Variant("False with NaN rhs", False, "error")]
    v = draw(one_of_variants(vs))
    rhs = Y
    if which == "n_samples":
        n_samples = v.value
    elif which == "n_columns":
        dims = tuple(A.shape[0] for A in F)

        def rhs(idx):
            rows = Y[np.ravel_multi_index(tuple(idx.T), dims)]
            r, c = np.nonzero(rows)
            return r, c, rows[r, c]
        kw[which] = v.value
    elif which == "check_finite":
        kw[which] = v.value
        if v.label.startswith("False with"):
            rhs = Y * np.nan
    else:
        kw[which] = v.value
    return Case("sampled_krp_lstsq", "options", f"{which}={v.label}",
                partial(tf.sampled_krp_lstsq, F, rhs, n_samples, **kw),
                (which, "rhs") if which == "check_finite" else (which,), v.expect,
                inputs=(F, Y), check=_lstsq_check(F, Y, "qr"))
