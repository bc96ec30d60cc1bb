"""Families of the datasets (planted problems, .tns files) and the Dask formats."""

from __future__ import annotations

import atexit
import math
import os
import shutil
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
from _harness import Case, require
from _registry import check_array, host, register
from _strategies import (
    HUGE,
    Variant,
    bool_variants,
    dense_variants,
    float_variants,
    int_variants,
    normal,
    one_of_variants,
    rng_variants,
    seeds,
    shape_variants,
    small_shapes,
    tns_variants,
)
from hypothesis import strategies as st

import tensorfact as tf
from tensorfact.datasets import (
    planted_cp,
    planted_sparse_cp,
    planted_sparse_store,
    read_tns,
    write_tns,
)

_TMP = Path(tempfile.mkdtemp(prefix="tensorfact-robustness-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


def _fresh_dir() -> Path:
    return Path(tempfile.mkdtemp(dir=_TMP))


def _dtype_variants() -> list[Variant]:
    return [Variant("None", None, "ok"), Variant("np.float32", np.float32, "ok"),
            Variant("'float64'", "float64", "ok"), Variant("np.int64", np.int64, "error"),
            Variant("'bogus'", "bogus", "error"), Variant("complex", np.complex128, "error"),
            Variant("3", 3, "error"), Variant("object", object, "error")]


# --------------------------------------------------------------------------- planted_cp
@register("planted_cp", "args")
def _planted(draw):
    shape = draw(small_shapes(2, 4))
    which = draw(st.sampled_from(["shape", "rank", "noise", "collinearity", "rng", "dtype",
                                  "like"]))
    args: dict = dict(shape=shape, rank=2)
    kw: dict = dict(rng=0)
    if which == "shape":
        vs = shape_variants(shape)
    elif which == "rank":
        vs = int_variants(2, hi=None) + [Variant("10**12", 10**12, "error")]
    elif which == "noise":
        vs = float_variants(0.1)
    elif which == "collinearity":
        vs = float_variants(0.5, hi=1.0, hi_open=True)
    elif which == "rng":
        vs = rng_variants()
    elif which == "dtype":
        vs = _dtype_variants()
    else:
        vs = [Variant("None", None, "ok"), Variant("float32 array", np.ones(2, np.float32), "ok"),
              Variant("list", [1.0], "error"), Variant("int array", np.ones(2, int), "either"),
              Variant("string", "numpy", "error")]
    v = draw(one_of_variants(vs))
    if which in args:
        args[which] = v.value
    else:
        kw[which] = v.value

    def check(out):
        X, truth = out
        require(isinstance(truth, tf.CPTensor), "truth")
        check_array(X, truth.shape)
        if which != "noise" or v.value == 0:
            require(np.allclose(host(X), host(truth.to_dense()), rtol=1e-3, atol=1e-5)
                    or kw.get("noise", 0) > 0, "X differs from truth")

    return Case("planted_cp", "args", f"{which}={v.label}",
                partial(planted_cp, args["shape"], args["rank"], **kw), (which,), v.expect,
                inputs=(v.value,), check=check)


def _sparse_shape_variants(shape):
    """`shape_variants` for sparse data: a huge shape with few nonzeros is fine."""
    return [x if x.label != f"{HUGE}^3 entries" else Variant(x.label, x.value, "ok")
            for x in shape_variants(shape)]


@register("planted_sparse_cp", "args")
def _planted_sparse(draw):
    shape = draw(small_shapes(2, 4))
    total = math.prod(shape)
    which = draw(st.sampled_from(["shape", "rank", "nnz", "noise", "skew", "exact", "rng",
                                  "dtype"]))
    args: dict = dict(shape=shape, rank=2, nnz=max(1, total // 3))
    kw: dict = dict(rng=0)
    if which == "shape":
        vs = _sparse_shape_variants(shape)
    elif which == "rank":
        vs = int_variants(2) + [Variant("10**12", 10**12, "error")]
    elif which == "nnz":
        vs = int_variants(max(1, total // 3), hi=total)
    elif which == "noise":
        vs = float_variants(0.1)
    elif which == "skew":
        vs = float_variants(1.0)
    elif which == "exact":
        vs = bool_variants()
    elif which == "rng":
        vs = rng_variants()
    else:
        vs = _dtype_variants()
    v = draw(one_of_variants(vs))
    if which in args:
        args[which] = v.value
    else:
        kw[which] = v.value

    def check(out):
        X, truth = out
        require(isinstance(X, tf.SparseTensor), "X")
        check_array(X.values)
        require(X.shape == truth.shape, "shapes differ")

    return Case("planted_sparse_cp", "args", f"{which}={v.label}",
                partial(planted_sparse_cp, args["shape"], args["rank"], args["nnz"], **kw),
                (which,), v.expect, inputs=(v.value,), check=check)


@register("planted_sparse_store", "args")
def _planted_store(draw):
    shape = draw(small_shapes(2, 3))
    total = math.prod(shape)
    which = draw(st.sampled_from(["store", "shape", "rank", "nnz", "noise", "partition_nnz",
                                  "dtype"]))
    store = _fresh_dir() / "s"
    args: dict = dict(store=store, shape=shape, rank=2, nnz=max(1, total // 3))
    kw: dict = dict(rng=0)
    if which == "store":
        f = _fresh_dir() / "a-file"
        f.write_text("x")
        nonempty = _fresh_dir()
        (nonempty / "other").write_text("y")
        vs = [Variant("new dir", store, "ok"), Variant("str", str(store), "ok"),
              Variant("a file", f, "error"), Variant("non-empty dir", nonempty, "error"),
              Variant("None", None, "error"), Variant("3", 3, "error")]
    elif which == "shape":
        vs = _sparse_shape_variants(shape)
    elif which == "rank":
        vs = int_variants(2)
    elif which == "nnz":
        vs = int_variants(max(1, total // 3), hi=total)
    elif which == "noise":
        vs = float_variants(0.1)
    elif which == "partition_nnz":
        vs = int_variants(4)
    else:
        vs = _dtype_variants()[1:]
    v = draw(one_of_variants(vs))
    if which in args:
        args[which] = v.value
    else:
        kw[which] = v.value

    def check(out):
        X, truth = out
        require(X.shape == truth.shape, "shapes differ")

    return Case("planted_sparse_store", "args", f"{which}={v.label}",
                partial(planted_sparse_store, args["store"], args["shape"], args["rank"],
                        args["nnz"], **kw), (which,), v.expect,
                inputs=() if which == "store" else (v.value,), check=check)


# --------------------------------------------------------------------------- read_tns / write_tns
def _tns_file(v: Variant) -> Path:
    d = _fresh_dir()
    content = v.value
    if isinstance(content, tuple):
        kind, data = content
        if kind == "gz":
            p = d / "t.tns.gz"
            p.write_bytes(data)
        elif kind == "dir":
            p = d / "adir.tns"
            p.mkdir()
        else:
            p = d / "missing.tns"
        return p
    p = d / "t.tns"
    p.write_bytes(content)
    return p


@register("read_tns", "content")
def _read_content(draw):
    v = draw(one_of_variants(tns_variants(draw(seeds))))
    p = _tns_file(v)

    def check(S):
        require(isinstance(S, tf.SparseTensor), "not a SparseTensor")
        require(S.nnz >= 1 and np.all(np.isfinite(host(S.values))), "values")

    return Case("read_tns", "content", v.label, partial(read_tns, p), (str(p), p.name, "path"),
                v.expect, inputs=(p,), check=check)


@register("read_tns", "options")
def _read_options(draw):
    gen = np.random.default_rng(draw(seeds))
    idx = gen.integers(1, 4, size=(5, 3))
    p = _fresh_dir() / "t.tns"
    p.write_text("".join(f"{i} {j} {k} 1.5\n" for i, j, k in idx))
    which = draw(st.sampled_from(["path", "shape", "dtype", "index_base", "has_values",
                                  "block_bytes"]))
    kw: dict = {}
    path = p
    if which == "path":
        vs = [Variant("Path", p, "ok"), Variant("str", str(p), "ok"),
              Variant("bytes", os.fsencode(p), "either"), Variant("3", 3, "error"),
              Variant("None", None, "error"), Variant("list", [str(p)], "error")]
    elif which == "shape":
        vs = [x for x in shape_variants((3, 3, 3), min_ndim=1) if x.label != "one mode"]
        vs += [Variant("too small", (2, 2, 2), "error"), Variant("too few modes", (3, 3), "error"),
               Variant("None", None, "ok")]
        vs = [x if x.label != f"{HUGE}^3 entries" else Variant(x.label, x.value, "ok")
              for x in vs if x.label not in ("None",) or x.expect == "ok"]
    elif which == "dtype":
        vs = [Variant("np.float32", np.float32, "ok"), Variant("'float64'", "float64", "ok"),
              Variant("np.int64", np.int64, "error"), Variant("'bogus'", "bogus", "error"),
              Variant("None", None, "either"), Variant("3", 3, "error")]
    elif which == "index_base":
        vs = int_variants(1, lo=0) + [Variant("0", 0, "ok"), Variant("2", 2, "error")]
    elif which == "has_values":  # the file has a value column: False reads it as an index
        vs = [x if x.value is not False and x.value is not np.False_
              else Variant(x.label, x.value, "error") for x in bool_variants(none_ok=True)]
    else:
        vs = int_variants(64)
    v = draw(one_of_variants(vs))
    if which == "path":
        path = v.value
    else:
        kw[which] = v.value
    names = (which, str(p)) if which != "path" else ("path",)

    def check(S):
        require(isinstance(S, tf.SparseTensor), "not a SparseTensor")
        require(np.all(np.isfinite(host(S.values))), "values")

    return Case("read_tns", "options", f"{which}={v.label}", partial(read_tns, path, **kw),
                names, v.expect, inputs=(p,), check=check)


@register("write_tns", "args")
def _write(draw):
    shape = draw(small_shapes(1, 3))
    S, _ = planted_sparse_cp(shape if len(shape) > 1 else shape + (2,), 1, 3, rng=draw(seeds))
    d = _fresh_dir()
    p = d / "out.tns"
    which = draw(st.sampled_from(["path", "X", "index_base", "header"]))
    path, X, kw = p, S, {}
    if which == "path":
        (d / "adir").mkdir()
        vs = [Variant("Path", p, "ok"), Variant("str", str(p), "ok"),
              Variant(".gz", d / "out.tns.gz", "ok"), Variant("a directory", d / "adir", "error"),
              Variant("missing parent", d / "no" / "out.tns", "error"),
              Variant("3", 3, "error"), Variant("None", None, "error")]
    elif which == "X":
        vs = [Variant("SparseTensor", S, "ok"), Variant("dense", S.to_dense(), "error"),
              Variant("None", None, "error"),
              Variant("empty", tf.SparseTensor(np.zeros((0, S.ndim), np.int64), np.zeros(0),
                                               S.shape), "ok")]
    elif which == "index_base":
        vs = int_variants(1, lo=0) + [Variant("0", 0, "ok")]
    else:
        vs = [Variant("None", None, "ok"), Variant("text", "a\nb", "ok"),
              Variant("3", 3, "error"), Variant("bytes", b"x", "error"),
              Variant("unicode", "caf\u00e9 \u2211", "ok")]
    v = draw(one_of_variants(vs))
    if which == "path":
        path = v.value
    elif which == "X":
        X = v.value
    else:
        kw[which] = v.value

    def check(_):
        target = Path(os.fsdecode(path)) if not isinstance(path, Path) else path
        if isinstance(X, tf.SparseTensor) and X.nnz:
            ib = kw.get("index_base", 1)
            back = read_tns(target, shape=X.shape, index_base=int(ib))
            check_array(back.values, ref=host(X.values))

    names = (which, "path", os.fsdecode(path)) if isinstance(path, (str, os.PathLike)) \
        else (which, "path")
    return Case("write_tns", "args", f"{which}={v.label}", partial(write_tns, path, X, **kw),
                names, v.expect, inputs=(X,), check=check)


# --------------------------------------------------------------------------- Dask formats
@register("DaskDenseTensor", "args", needs="dask")
def _dask_dense(draw):
    import dask.array as da

    shape = draw(small_shapes(2, 3))
    X = normal(draw(seeds), shape)
    which = draw(st.sampled_from(["X", "memory_budget", "split_every", "name"]))
    kw: dict = {}
    Xv = da.from_array(X, chunks=2)
    if which == "X":
        vs = [Variant(f"dask {x.label}", da.from_array(x.value, chunks=2), x.expect)
              for x in dense_variants(X)
              if isinstance(x.value, np.ndarray) and x.value.dtype.kind in "fiub"
              and x.label not in ("+1 mode", "NaN", "Inf")]
        vs += [Variant("numpy array", X, "error"), Variant("None", None, "error")]
    elif which == "memory_budget":
        vs = float_variants(1e6, none_ok=False)
    elif which == "split_every":
        vs = int_variants(4, lo=2, none_ok=True)
    else:
        vs = [Variant("'Y'", "Y", "ok"), Variant("3", 3, "either")]
    v = draw(one_of_variants(vs))
    if which == "X":
        Xv = v.value
    else:
        kw[which] = v.value

    def check(D):
        # ||X||^2 in X's floating dtype on the host: inf only where the squares overflow it
        Xd = np.asarray(D.X.compute())
        with np.errstate(over="ignore"):
            n, ref = D.norm_sq(), float(np.sum(Xd * Xd))
        require(n == ref or abs(n - ref) <= 1e-3 * ref, f"norm_sq {n} != {ref}")

    from tensorfact.formats import DaskDenseTensor

    return Case("DaskDenseTensor", "args", f"{which}={v.label}",
                partial(DaskDenseTensor, Xv, **kw), (which, "X"), v.expect, check=check)


@register("DaskSparseTensor", "store", needs="dask")
def _dask_sparse(draw):
    from tensorfact.formats import DaskSparseTensor

    good = _fresh_dir() / "store"
    DaskSparseTensor.from_sparse(planted_sparse_cp((4, 5, 6), 2, 20, rng=draw(seeds))[0], good) \
        if hasattr(DaskSparseTensor, "from_sparse") else None
    empty = _fresh_dir()
    f = _fresh_dir() / "file"
    f.write_text("x")
    vs = [Variant("a store", good, "ok" if good.exists() else "error"),
          Variant("empty dir", empty, "error"), Variant("a file", f, "error"),
          Variant("missing", empty / "none", "error"), Variant("None", None, "error"),
          Variant("3", 3, "error")]
    if good.exists():
        broken = _fresh_dir() / "broken"
        import shutil

        shutil.copytree(good, broken)
        meta = broken / "meta.json"
        if meta.exists():
            meta.write_text("{not json")
        vs.append(Variant("corrupt meta.json", broken, "error"))
    v = draw(one_of_variants(vs))

    def check(X):
        require(math.isfinite(X.norm_sq()), "norm_sq")

    return Case("DaskSparseTensor", "store", v.label, partial(DaskSparseTensor, v.value),
                ("store", str(v.value)), v.expect, check=check)
