"""Families of cp_als with missing data: the mask argument (and missing=) over both methods."""

from __future__ import annotations

import math
from functools import partial

import numpy as np
from _harness import Case, require
from _registry import check_cp_result, host, register, tol_for
from _strategies import Variant, one_of_variants, seeds, small_shapes
from hypothesis import strategies as st

import tensorfact as tf
from tensorfact.datasets import planted_cp

KW = dict(max_iter=4, tol=0.0, rng=0)


def _observed_check(X, M, rank, res) -> None:
    """A finite CPALSResult whose rel_error is its model's error on the observed entries."""
    check_cp_result(X, res, rank, exact=False)
    Xd = host(X.to_dense() if isinstance(X, tf.SparseTensor) else X)
    keep = M if M is not None else ~np.isnan(Xd)
    x = np.where(keep, Xd, 0.0)
    s = float(np.abs(x).max())
    if s == 0.0:
        true = 0.0 if not np.any(host(res.cp.weights)) else math.inf
    else:  # as _registry.dense_error: the model built in the data's units divided by s
        model = tf.CPTensor([host(A) for A in res.cp.factors],
                            weights=host(res.cp.weights) / s).to_dense()
        true = float(np.linalg.norm(np.where(keep, x / s - model, 0.0)) / np.linalg.norm(x / s))
    require(abs(true - res.rel_error) <= tol_for(X) * (1 + true),
            f"rel_error {res.rel_error:.6g} but the model's observed error is {true:.6g}")


def _mask_variants(X: np.ndarray, M: np.ndarray) -> list[Variant]:
    torch_v = []
    try:
        import torch

        torch_v = [Variant("torch mask with NumPy X", torch.from_numpy(M), "error")]
    except ImportError:
        pass
    one = np.zeros_like(M)
    one.flat[0] = True
    return [
        Variant("boolean", M, "ok"),
        Variant("all True", np.ones_like(M), "ok"),
        Variant("one observed entry", one, "ok"),
        Variant("integer 0/1", M.astype(np.int64), "ok"),
        Variant("uint8 0/1", M.astype(np.uint8), "ok"),
        Variant("integer 0/2", M.astype(np.int64) * 2, "error"),
        Variant("float 0/1", M.astype(np.float64), "error"),
        Variant("all False", np.zeros_like(M), "error"),
        Variant("wrong shape", M[..., :1] if M.shape[-1] > 1 else np.ones(M.shape + (2,),
                                                                        bool), "error"),
        Variant("transposed", M.T if M.shape != M.T.shape else M[None], "error"),
        Variant("read-only", _read_only(M), "ok"),
        Variant("non-contiguous view", np.concatenate([M, M], axis=0)[::2], "ok"),
        Variant("'nan' with NaN-free X", "nan", "ok"),
        Variant("'observed' with dense X", "observed", "error"),
        Variant("other string", "missing", "error"),
        Variant("nested list", M.tolist(), "error"),
        Variant("scalar True", True, "error"),
    ] + torch_v


def _read_only(M: np.ndarray) -> np.ndarray:
    R = M.copy()
    R.flags.writeable = False
    return R


def _case(family: str, X, mask, v: Variant, missing: str, rank: int = 2) -> Case:
    M = None  # mask='nan' on NaN-free data: everything observed
    if isinstance(mask, np.ndarray) and mask.shape == np.shape(X) and mask.dtype != float:
        M = mask.astype(bool)
    call = partial(tf.cp_als, X, rank, mask=mask, missing=missing, **KW)
    inputs = (X,) + ((mask,) if isinstance(mask, np.ndarray) else ())
    return Case("cp_als", family, f"{v.label} ({missing})", call, ("mask",), v.expect,
                inputs=inputs, check=lambda res: _observed_check(X, M, rank, res))


def _tensor(draw) -> np.ndarray:
    shape = draw(small_shapes(2, 4))
    shape = tuple(max(s, 2) for s in shape)
    return planted_cp(shape, 2, noise=0.1, rng=draw(seeds))[0]


@register("cp_als", "mask")
def _mask(draw):
    X = _tensor(draw)
    M = np.random.default_rng(draw(seeds)).random(X.shape) < draw(st.sampled_from([0.3, 0.7]))
    M.flat[0] = True
    v = draw(one_of_variants(_mask_variants(X, M)))
    return _case("mask", X, v.value, v, draw(st.sampled_from(["weighted", "em"])))


@register("cp_als", "mask-X")
def _mask_x(draw):
    """The data side of a masked call: NaN/Inf at missing and observed entries, sparse X."""
    X = _tensor(draw)
    g = np.random.default_rng(draw(seeds))
    M = g.random(X.shape) < 0.6
    M.flat[0] = True
    M.flat[-1] = False
    nan_missing = np.where(M, X, np.nan)
    inf_missing = np.where(M, X, np.inf)
    inf_observed = nan_missing.copy()
    inf_observed.flat[0] = np.inf
    coords = np.argwhere(M)
    S = tf.SparseTensor(coords, X[M], X.shape)
    variants = [
        Variant("NaN at missing entries, mask='nan'", (nan_missing, "nan"), "ok"),
        Variant("NaN at missing entries, boolean mask", (nan_missing, M), "ok"),
        Variant("Inf at missing entries, boolean mask", (inf_missing, M), "ok"),
        Variant("Inf at an observed entry, mask='nan'", (inf_observed, "nan"), "error"),
        Variant("all NaN, mask='nan'", (np.full(X.shape, np.nan), "nan"), "error"),
        Variant("SparseTensor, mask='observed'", (S, "observed"), "ok"),
        Variant("SparseTensor, boolean mask", (S, M), "error"),
        Variant("SparseTensor, mask='nan'", (S, "nan"), "error"),
        Variant("float32 X", (X.astype(np.float32), M), "ok"),
        Variant("X times 1e300", (X * 1e300, M), "ok"),
        Variant("X times 2**-1070 (subnormal)", (X * 2.0**-1070, M), "ok"),
        Variant("all-zero X", (np.zeros_like(X), M), "ok"),
    ]
    v = draw(one_of_variants(variants))
    Xv, mask = v.value
    missing = draw(st.sampled_from(["weighted", "em"]))
    M_obs = M if not isinstance(mask, str) or isinstance(Xv, tf.SparseTensor) else None
    call = partial(tf.cp_als, Xv, 2, mask=mask, missing=missing, **KW)
    names = ("mask", "X", "Inf", "NaN")
    return Case("cp_als", "mask-X", f"{v.label} ({missing})", call, names, v.expect,
                inputs=(Xv,) + ((mask,) if isinstance(mask, np.ndarray) else ()),
                check=lambda res: _observed_check(Xv, M_obs, 2, res))


@register("cp_als", "missing")
def _missing(draw):
    X = _tensor(draw)
    M = np.random.default_rng(draw(seeds)).random(X.shape) < 0.6
    M.flat[0] = True
    value = draw(st.sampled_from(["weighted", "em", "EM", "impute", None, 1]))
    expect = "ok" if value in ("weighted", "em") else "error"
    v = Variant(f"missing={value!r}", value, expect)
    call = partial(tf.cp_als, X, 2, mask=M, missing=value, **KW)
    return Case("cp_als", "missing", v.label, call, ("missing",), expect, inputs=(X, M),
                check=lambda res: _observed_check(X, M, 2, res))

