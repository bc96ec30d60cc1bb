"""Families of the Tucker entry points: hosvd, tucker, multi_mode_dot, TuckerTensor."""

from __future__ import annotations

import math
from functools import partial

import _strategies as strat
import numpy as np
from _harness import Case, require
from _registry import check_array, host, register, tol_for
from _strategies import Variant
from hypothesis import strategies as st

import tensorfact as tf

SOLVERS = {
    "hosvd": dict(),
    "tucker": dict(max_iter=3, tol=0.0, rng=0),
}


def _tensor(draw, min_ndim=2, max_ndim=4) -> np.ndarray:
    return strat.normal(draw(strat.seeds), draw(strat.small_shapes(min_ndim, max_ndim)))


def _ranks(draw, shape) -> tuple[int, ...]:
    """Valid multilinear ranks: ``R_n <= I_n`` and ``R_n <=`` the product of the others."""
    r = [draw(st.integers(1, min(s, 3))) for s in shape]
    return tuple(min(x, math.prod(r) // x) for x in r)


def _tucker_error(X: np.ndarray, tt: tf.TuckerTensor) -> float:
    """Exact ``||X - tt|| / ||X||`` in float64, safe for data of any magnitude."""
    X = host(X)
    s = float(np.max(np.abs(X))) if X.size else 0.0
    core = host(tt.core)
    if s == 0.0:
        return 0.0 if not np.any(core) else math.inf
    T = np.asarray(tf.TuckerTensor(core / s, [host(A) for A in tt.factors]).to_dense())
    return float(np.linalg.norm(X / s - T) / np.linalg.norm(X / s))


def check_tucker_result(X, res, ranks, *, exact: bool = True) -> None:
    """A `TuckerResult` with a finite model of the requested ranks and its true error."""
    require(isinstance(res, tf.TuckerResult), f"expected TuckerResult, got {type(res).__name__}")
    tt = res.tucker
    Xd = host(X.to_dense() if isinstance(X, tf.SparseTensor) else X)
    require(tt.shape == Xd.shape, f"model shape {tt.shape} != data shape {Xd.shape}")
    if ranks is not None:
        want = (int(ranks),) * len(Xd.shape) if np.ndim(ranks) == 0 else tuple(map(int, ranks))
        require(tt.ranks == want, f"model ranks {tt.ranks} != requested {ranks}")
    require(np.all(np.isfinite(host(tt.core))), "non-finite core")
    for n, A in enumerate(tt.factors):
        require(np.all(np.isfinite(host(A))), f"non-finite factor {n}")
    require(isinstance(res.rel_error, float) and math.isfinite(res.rel_error)
            and res.rel_error >= 0, f"rel_error {res.rel_error!r}")
    require(len(res.history) == res.n_iter, "history length != n_iter")
    if exact:
        true = _tucker_error(Xd, tt)
        tol = tol_for(X)
        require(abs(true - res.rel_error) <= tol * (1 + true),
                f"rel_error {res.rel_error:.6g} but the returned model's error is {true:.6g}")


def _solver_case(target, family, X, ranks, v: Variant, names, *, extra=None, inputs=()
                 ) -> Case:
    fn = getattr(tf, target)
    kw = dict(SOLVERS[target])
    kw.update(extra or {})

    def check(res):
        check_tucker_result(X, res, ranks)

    return Case(target, family, v.label, partial(fn, X, ranks, **kw), names, v.expect,
                inputs=(X,) + tuple(inputs), check=check)


for _target in SOLVERS:

    @register(_target, "X")
    def _x(draw, target=_target):
        X0 = _tensor(draw)
        v = draw(strat.one_of_variants(strat.dense_variants(X0), strat.torch_variant(X0)))
        return _solver_case(target, "X", v.value, 1, v, ("X",))

    @register(_target, "X-sparse")
    def _x_sparse(draw, target=_target):
        X = _tensor(draw, 2, 4)
        X = X * (np.random.default_rng(draw(strat.seeds)).random(X.shape) < 0.5)
        S = tf.SparseTensor.from_dense(X)
        empty = tf.SparseTensor(np.zeros((0, X.ndim), dtype=np.int64), np.zeros(0), X.shape)
        nan = tf.SparseTensor(S.coords, np.full(S.nnz, np.nan), S.shape, check=False)
        vs = [Variant("SparseTensor", S, "ok"), Variant("no entries", empty, "ok"),
              Variant("unchecked NaN values", nan, "error")]
        vs += [Variant(f"values times {label}", tf.SparseTensor(S.coords, S.values * f, S.shape),
                       "ok") for label, f in (("1e300", 1e300), ("2**-1070", 2.0**-1070))]
        v = draw(strat.one_of_variants(vs))
        return _solver_case(target, "X-sparse", v.value, _ranks(draw, X.shape), v, ("X",))

    @register(_target, "ranks")
    def _ranks_family(draw, target=_target):
        X = _tensor(draw, 2, 4)
        good = _ranks(draw, X.shape)
        N = X.ndim
        vs = [Variant(f"{good}", good, "ok"), Variant("list", list(good), "ok"),
              Variant("np.int64 entries", tuple(np.int64(r) for r in good), "ok"),
              Variant("ndarray", np.array(good), "ok"),
              Variant("int 1", 1, "ok"),
              Variant("too short", good[:-1], "error"),
              Variant("too long", good + (1,), "error"),
              Variant("above a mode", (X.shape[0] + 1,) + good[1:], "error"),
              Variant("a 0", (0,) + good[1:], "error"),
              Variant("a float", (float(good[0]),) + good[1:], "error"),
              Variant("a True", (True,) + good[1:], "error"),
              Variant("a None", (None,) + good[1:], "error"),
              Variant("str", "2" * N, "error"), Variant("None", None, "error"),
              Variant("1.5", 1.5, "error")]
        v = draw(strat.one_of_variants(vs))
        return _solver_case(target, "ranks", X, v.value, v, ("ranks",))

    @register(_target, "svd-rng")
    def _svd_rng(draw, target=_target):
        X = _tensor(draw, 3, 3)
        R = _ranks(draw, X.shape)
        if draw(st.booleans()):
            v = draw(strat.one_of_variants(strat.choice_variants(["exact", "randomized"])))
            return _solver_case(target, "svd-rng", X, R, v, ("svd",), extra=dict(svd=v.value))
        v = draw(strat.one_of_variants(strat.rng_variants()))
        return _solver_case(target, "svd-rng", X, R, v, ("rng",),
                            extra=dict(rng=v.value, svd="randomized"))

    @register(_target, "check_finite")
    def _check_finite(draw, target=_target):
        X = _tensor(draw)
        Xn = X.copy()
        Xn.flat[draw(st.integers(0, X.size - 1))] = draw(st.sampled_from([np.nan, np.inf]))
        bad = Variant("False with NaN/Inf in X", Xn, "error")
        v = draw(strat.one_of_variants(strat.bool_variants() + [bad]))
        if v.label.startswith("False with"):
            return _solver_case(target, "check_finite", Xn, 1, v, ("X", "NaN", "non-finite"),
                                extra=dict(check_finite=False))
        return _solver_case(target, "check_finite", X, 1, v, ("check_finite",),
                            extra=dict(check_finite=v.value))


@register("hosvd", "mode_order")
def _mode_order(draw):
    X = _tensor(draw, 3, 3)
    R = _ranks(draw, X.shape)
    vs = [Variant("(2, 0, 1)", (2, 0, 1), "ok"), Variant("[-1, 0, 1]", [-1, 0, 1], "ok"),
          Variant("None", None, "ok"), Variant("np.int64 entries", tuple(np.arange(3)), "ok"),
          Variant("repeated", (0, 0, 1), "error"), Variant("missing", (0, 1), "error"),
          Variant("out of range", (0, 1, 3), "error"), Variant("a float", (0, 1.0, 2), "error"),
          Variant("int 0", 0, "error"), Variant("str '012'", "012", "error")]
    v = draw(strat.one_of_variants(vs))
    return _solver_case("hosvd", "mode_order", X, R, v, ("mode_order",),
                        extra=dict(mode_order=v.value))


@register("tucker", "options")
def _tucker_options(draw):
    X = _tensor(draw, 3, 3)
    R = _ranks(draw, X.shape)
    which = draw(st.sampled_from(["max_iter", "tol", "method", "callback", "verbose"]))
    if which == "max_iter":
        vs = strat.int_variants(draw(st.integers(1, 3)))
    elif which == "tol":
        vs = strat.float_variants(1e-3)
    elif which == "method":
        vs = strat.choice_variants(["hooi"])
    elif which == "callback":
        vs = strat.callback_variants()
    else:
        vs = strat.bool_variants()
    v = draw(strat.one_of_variants(vs))
    return _solver_case("tucker", "options", X, R, v, (which,), extra={which: v.value})


@register("tucker", "init")
def _tucker_init(draw):
    X = _tensor(draw, 3, 3)
    R = _ranks(draw, X.shape)
    gen = np.random.default_rng(draw(strat.seeds))
    good = tf.TuckerTensor(gen.standard_normal(R), [np.linalg.qr(gen.standard_normal((s, r)))[0]
                                                    for s, r in zip(X.shape, R)])
    other = tuple(r + 1 if r + 1 <= s else r for r, s in zip(R, X.shape))
    vs = strat.choice_variants(["hosvd", "random"]) + [
        Variant("TuckerTensor", good, "ok"),
        Variant("TuckerTensor with zero factors",
                tf.TuckerTensor(good.core, [np.zeros_like(A) for A in good.factors]), "either"),
        Variant("TuckerTensor NaN factor",
                tf.TuckerTensor(good.core, [A * np.nan for A in good.factors]), "error"),
        Variant("TuckerTensor float32",
                tf.TuckerTensor(good.core.astype(np.float32),
                                [A.astype(np.float32) for A in good.factors]), "error"),
        Variant("TuckerTensor wrong shape",
                tf.TuckerTensor(good.core, [np.vstack([A, A]) for A in good.factors]), "error"),
        Variant("CPTensor", tf.CPTensor([np.ones((s, 2)) for s in X.shape]), "error"),
        Variant("(core, factors) tuple", (good.core, list(good.factors)), "error"),
    ]
    if other != R:
        vs.append(Variant("TuckerTensor other ranks",
                          tf.TuckerTensor(np.ones(other), [np.eye(s, r)
                                                           for s, r in zip(X.shape, other)]),
                          "error"))
    v = draw(strat.one_of_variants(vs))
    return _solver_case("tucker", "init", X, R, v, ("init",), extra=dict(init=v.value),
                        inputs=(v.value,))


# --------------------------------------------------------------------------- multi_mode_dot
def _ref_chain(X, mats, modes, transpose):
    Y = host(X)
    for M, n in zip(mats, modes):
        M = host(M)
        M = M.T if transpose else M
        Y = np.moveaxis(np.tensordot(M, Y, axes=(1, n)), 0, n)
    return Y


@register("multi_mode_dot", "X")
def _mmd_x(draw):
    X0 = _tensor(draw, 2, 4)
    M = strat.normal(draw(strat.seeds), (2, X0.shape[1]))
    vs = strat.algebra_variants(X0, min_ndim=2) + strat.torch_variant(X0)
    sparse = tf.SparseTensor.from_dense(X0 * (X0 > 0))
    vs.append(Variant("SparseTensor", sparse, "ok"))
    v = draw(strat.one_of_variants(vs))

    def check(out):
        data = v.value.to_dense() if isinstance(v.value, tf.SparseTensor) else v.value
        check_array(out, ref=_ref_chain(data, [M], [1], False), rtol=1e-4)

    mats = [M]
    try:
        import torch

        if isinstance(v.value, torch.Tensor):
            mats = [torch.from_numpy(M).to(v.value.dtype)]
    except ImportError:
        pass
    if getattr(v.value, "dtype", None) == np.float32:
        mats = [M.astype(np.float32)]
    return Case("multi_mode_dot", "X", v.label, partial(tf.multi_mode_dot, v.value, mats, [1]),
                ("X", "matrices"), v.expect if v.label != "float16" else "either",
                inputs=(v.value,), check=check)


@register("multi_mode_dot", "matrices-modes")
def _mmd_args(draw):
    X = _tensor(draw, 3, 3)
    g = np.random.default_rng(draw(strat.seeds))
    A, Bm = g.standard_normal((2, X.shape[0])), g.standard_normal((3, X.shape[2]))
    vs = [
        Variant("two matrices", ([A, Bm], [0, 2], {}), "ok"),
        Variant("negative mode", ([Bm], [-1], {}), "ok"),
        Variant("transpose", ([A.T, Bm.T], [0, 2], dict(transpose=True)), "ok"),
        Variant("skip", ([A, Bm], [0, 2], dict(skip=1)), "ok"),
        Variant("no matrices", ([], None, {}), "ok"),
        Variant("wrong size", ([g.standard_normal((2, X.shape[1] + 1))], [1], {}), "error"),
        Variant("mode out of range", ([A], [3], {}), "error"),
        Variant("repeated modes", ([A, A], [0, 0], {}), "error"),
        Variant("fewer modes", ([A, Bm], [0], {}), "error"),
        Variant("float mode", ([A], [0.0], {}), "error"),
        Variant("skip out of range", ([A], [0], dict(skip=1)), "error"),
        Variant("skip float", ([A], [0], dict(skip=0.0)), "error"),
        Variant("1-D matrix", ([np.ones(X.shape[0])], [0], {}), "error"),
        Variant("nested list matrix", ([A.tolist()], [0], {}), "error"),
        Variant("complex matrix", ([A.astype(complex)], [0], {}), "error"),
        Variant("float32 matrix", ([A.astype(np.float32)], [0], {}), "error"),
        Variant("matrices an array", (A, [0], {}), "error"),
        Variant("transpose 'yes'", ([A], [0], dict(transpose="yes")), "error"),
    ]
    v = draw(strat.one_of_variants(vs))
    mats, modes, kw = v.value

    def check(out):
        ms = list(mats)
        md = list(range(len(ms))) if modes is None else [m % X.ndim for m in modes]
        if "skip" in kw:
            del ms[kw["skip"]], md[kw["skip"]]
        check_array(out, ref=_ref_chain(X, ms, md, kw.get("transpose", False)))

    return Case("multi_mode_dot", "matrices-modes", v.label,
                partial(tf.multi_mode_dot, X, mats, modes, **kw),
                ("matrices", "modes", "skip", "transpose"), v.expect,
                inputs=(X, mats), check=check)


# --------------------------------------------------------------------------- TuckerTensor
@register("TuckerTensor", "core-factors")
def _tucker_tensor(draw):
    X = _tensor(draw, 2, 3)
    R = _ranks(draw, X.shape)
    g = np.random.default_rng(draw(strat.seeds))
    core = g.standard_normal(R)
    facs = [g.standard_normal((s, r)) for s, r in zip(X.shape, R)]
    vs = [
        Variant("core, factors", (core, facs), "ok"),
        Variant("core times 1e300", (core * 1e300, facs), "ok"),
        Variant("wrong column count", (core, [np.ones((s, r + 1)) for s, r in zip(X.shape, R)]),
                "error"),
        Variant("one factor too many", (core, facs + facs[:1]), "error"),
        Variant("1-D factor", (core, [np.ones(s) for s in X.shape]), "error"),
        Variant("factor with no rows", (core, [np.ones((0, r)) for r in R]), "error"),
        Variant("mixed dtypes", (core.astype(np.float32), facs), "error"),
        Variant("integer core", (np.ones(R, dtype=np.int64), facs), "error"),
        Variant("list core", (core.tolist(), facs), "error"),
        Variant("no factors", (core, []), "error"),
        Variant("None factors", (core, None), "error"),
    ]
    v = draw(strat.one_of_variants(vs))

    def check(tt):
        ref = _ref_chain(v.value[0], v.value[1], list(range(len(R))), False)
        check_array(tt.to_dense(), ref=ref, rtol=1e-8)
        nrm = float(tt.norm())
        m = float(np.max(np.abs(ref)))
        require(math.isclose(nrm, m * float(np.linalg.norm(ref / m)), rel_tol=1e-8),
                f"norm {nrm:.6g} differs from the dense norm")

    return Case("TuckerTensor", "core-factors", v.label, partial(tf.TuckerTensor, *v.value),
                ("core", "factors"), v.expect, inputs=(v.value,), check=check)
