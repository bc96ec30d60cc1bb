"""Hypothesis strategies for bad (and borderline valid) arguments.

Every strategy draws a :class:`Variant`: a label for the table and the
report, the value, and what the documentation says must happen with it
(``"ok"``: a result; ``"error"``: an error naming the argument; ``"either"``).

Sizes are either tiny or far beyond any machine (at least ``10**12``
elements), never in between: a campaign must not allocate gigabytes.
"""

from __future__ import annotations

import gzip
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from hypothesis import strategies as st

HUGE = 10**6  # a dimension; three of them are 10**18 elements, refused before allocating


@dataclass(frozen=True)
class Variant:
    """One value for one argument."""

    label: str
    value: Any
    expect: str  # "ok" | "error" | "either"


def _v(label: str, value: Any, expect: str) -> Variant:
    return Variant(label, value, expect)


def one_of_variants(*groups: list[Variant]) -> st.SearchStrategy[Variant]:
    """Pick one of the given variants (labels stay readable when shrunk)."""
    flat = [v for g in groups for v in g]
    return st.sampled_from(flat)


# --------------------------------------------------------------------------- integers
def int_variants(valid: int, *, lo: int = 1, hi: int | None = None,
                 none_ok: bool = False) -> list[Variant]:
    """Integer-like arguments: NumPy integers are integers, bools and floats are not."""
    out = [
        _v(f"{valid}", valid, "ok"),
        _v(f"np.int64({valid})", np.int64(valid), "ok"),
        _v(f"np.int32({valid})", np.int32(valid), "ok"),
        _v("True", True, "error"),
        _v(f"{valid}.5", valid + 0.5, "error"),
        _v(f"float {valid}.0", float(valid), "error"),
        _v(f"np.float64({valid})", np.float64(valid), "error"),
        _v(f"str '{valid}'", str(valid), "error"),
        _v(f"list [{valid}]", [valid], "error"),
        _v("nan", math.nan, "error"),
        _v("complex", complex(valid, 0), "error"),
        _v(f"{lo - 1}", lo - 1, "error"),
        _v("-7", -7, "error" if lo > -7 else "either"),
    ]
    if 0 <= valid <= 255:
        out.append(_v(f"np.uint8({valid})", np.uint8(valid), "ok"))
    out.append(_v("None", None, "ok" if none_ok else "error"))
    if hi is not None:
        out += [_v(f"{hi + 1} (above the maximum)", hi + 1, "error"),
                _v("10**30", 10**30, "error")]
    return out


def float_variants(valid: float, *, lo: float = 0.0, lo_open: bool = False,
                   hi: float | None = None, hi_open: bool = False,
                   none_ok: bool = False, inf_ok: bool = False) -> list[Variant]:
    """Real arguments: NumPy floats and Python/NumPy ints are numbers, bools are not."""
    out = [
        _v(f"{valid}", valid, "ok"),
        _v(f"np.float32({valid})", np.float32(valid), "ok"),
        _v(f"np.float64({valid})", np.float64(valid), "ok"),
        _v("nan", math.nan, "error"),
        _v("-inf", -math.inf, "error"),
        _v("inf", math.inf, "ok" if inf_ok else "error"),
        _v("True", True, "error"),
        _v(f"str '{valid}'", str(valid), "error"),
        _v(f"list [{valid}]", [valid], "error"),
        _v("complex", complex(valid, 1.0), "error"),
        _v("None", None, "ok" if none_ok else "error"),
        _v(f"{lo}", lo, "error" if lo_open else "ok"),
        _v(f"{lo} - 1", lo - 1.0, "error"),
    ]
    if float(valid).is_integer():
        out.append(_v(f"int {int(valid)}", int(valid), "ok"))
        out.append(_v(f"np.int64({int(valid)})", np.int64(int(valid)), "ok"))
    if hi is not None:
        out += [_v(f"{hi}", hi, "error" if hi_open else "ok"),
                _v(f"{hi} + 1", hi + 1.0, "error")]
    return out


def choice_variants(valid: list[str], none_ok: bool = False) -> list[Variant]:
    """String options."""
    out = [_v(repr(s), s, "ok") for s in valid]
    out += [
        _v(f"np.str_({valid[0]!r})", np.str_(valid[0]), "ok"),
        _v("''", "", "error"),
        _v(f"{valid[0].upper()!r}", valid[0].upper(), "either"),
        _v("'bogus'", "bogus", "error"),
        _v("None", None, "ok" if none_ok else "error"),
        _v("3", 3, "error"),
        _v(f"[{valid[0]!r}]", [valid[0]], "error"),
        _v(f"bytes {valid[0]!r}", valid[0].encode(), "error"),
    ]
    return out


def rng_variants() -> list[Variant]:
    """``rng`` (SPEC 7): None, an int seed, a Generator (a SeedSequence too)."""
    return [
        _v("None", None, "ok"),
        _v("0", 0, "ok"),
        _v("np.int64(7)", np.int64(7), "ok"),
        _v("2**70", 2**70, "ok"),
        _v("Generator", np.random.default_rng(3), "ok"),
        _v("SeedSequence", np.random.SeedSequence(4), "ok"),
        _v("-1", -1, "error"),
        _v("1.5", 1.5, "error"),
        _v("'seed'", "seed", "error"),
        _v("True", True, "error"),
        _v("RandomState", np.random.RandomState(0), "error"),
        _v("[1, 2]", [1, 2], "error"),
    ]


def _raise_value_error(*args: Any) -> None:
    raise ValueError("callback: the user's own error")


def callback_variants() -> list[Variant]:
    """``callback``: None or a callable ``(iteration, model, rel_error)``."""
    return [
        _v("None", None, "ok"),
        _v("returns None", lambda it, m, e: None, "ok"),
        _v("returns True (stop)", lambda it, m, e: True, "ok"),
        _v("returns np.True_", lambda it, m, e: np.True_, "ok"),
        _v("3", 3, "error"),
        _v("'print'", "print", "error"),
        _v("[print]", [print], "error"),
        _v("raises ValueError", _raise_value_error, "error"),
    ]


def bool_variants(none_ok: bool = False) -> list[Variant]:
    """Flags."""
    return [
        _v("True", True, "ok"),
        _v("False", False, "ok"),
        _v("np.True_", np.True_, "ok"),
        _v("np.False_", np.False_, "ok"),
        _v("None", None, "ok" if none_ok else "either"),
        _v("'no'", "no", "either"),
    ]


def shape_variants(shape: tuple[int, ...], *, min_ndim: int = 2) -> list[Variant]:
    """Shape arguments: sequences of positive integers."""
    out = [
        _v(f"{shape}", shape, "ok"),
        _v("list", list(shape), "ok"),
        _v("np.int64 entries", tuple(np.int64(s) for s in shape), "ok"),
        _v("ndarray", np.array(shape), "ok"),
        _v("a 0", (0,) + shape[1:], "error"),
        _v("a -2", (-2,) + shape[1:], "error"),
        _v("a 2.5", (2.5,) + shape[1:], "error"),
        _v("a float 3.0", (float(shape[0]),) + shape[1:], "error"),
        _v("a True", (True,) + shape[1:], "error"),
        _v("a '3'", ("3",) + shape[1:], "error"),
        _v("a None", (None,) + shape[1:], "error"),
        _v("int", shape[0], "error"),
        _v("None", None, "error"),
        _v("()", (), "error"),
        _v("'34'", "34", "error"),
        _v(f"{HUGE}^3 entries", (HUGE, HUGE, HUGE), "error"),
    ]
    if min_ndim >= 2:
        out.append(_v("one mode", shape[:1], "error"))
    return out


# --------------------------------------------------------------------------- arrays
def dense_variants(X: np.ndarray, *, min_ndim: int = 2, name: str = "X",
                   finite_checked: bool = True) -> list[Variant]:
    """Dense-array arguments derived from a valid float64 array ``X``."""
    gen = np.random.default_rng(int(abs(X).sum() * 1000) % 2**31)
    Xn = X.copy()
    Xn.flat[int(gen.integers(X.size))] = np.nan
    Xi = X.copy()
    Xi.flat[int(gen.integers(X.size))] = np.inf
    ro = X.copy()
    ro.flags.writeable = False
    big = np.concatenate([X, X], axis=0)
    view = big[::2]  # non-contiguous, same shape as X
    out = [
        _v("float64", X, "ok"),
        _v("float32", X.astype(np.float32), "ok"),
        _v("float16", X.astype(np.float16), "ok"),
        _v("int64", np.round(X * 3).astype(np.int64), "ok"),
        _v("bool", X > 0, "ok"),
        _v("non-contiguous view", view, "ok"),
        _v("Fortran order", np.asfortranarray(X), "ok"),
        _v("read-only", ro, "ok"),
        _v("all zeros", np.zeros_like(X), "ok"),
        _v("times 1e300", X * 1e300, "ok"),
        _v("times 1e-300", X * 1e-300, "ok"),
        _v("times 2**-1070 (subnormal)", X * 2.0**-1070, "ok"),
        _v("float32 times 1e30", (X * 1e30).astype(np.float32), "ok"),
        _v("NaN", Xn, "error" if finite_checked else "either"),
        _v("Inf", Xi, "error" if finite_checked else "either"),
        _v("complex", X.astype(np.complex128), "error"),
        _v("object", X.astype(object), "error"),
        _v("str", X.astype(str), "error"),
        _v("datetime64", np.zeros(X.shape, dtype="M8[s]"), "error"),
        _v("masked", np.ma.array(X, mask=X > 0), "error"),
        _v("nested list", X.tolist(), "error"),
        _v("scalar 1.0", 1.0, "error"),
        _v("0-d array", np.array(1.0), "error"),
        _v("None", None, "error"),
        _v("empty mode", X[:0], "error"),
    ]
    if X.ndim > min_ndim - 1 and min_ndim > 1:
        out.append(_v(f"{min_ndim - 1}-D", X.reshape(-1) if min_ndim == 2
                      else X.reshape(X.shape[0], -1), "error"))
    if X.ndim >= 2:
        out.append(_v("+1 mode", X[..., None], "either"))
    return out


def algebra_variants(X: np.ndarray, *, min_ndim: int = 2) -> list[Variant]:
    """:func:`dense_variants` for building blocks, which let NaN/Inf propagate like NumPy."""
    return [v if v.label != "empty mode" else Variant(v.label, v.value, "either")
            for v in dense_variants(X, min_ndim=min_ndim, finite_checked=False)
            if v.label != "+1 mode"]


def torch_variant(X: np.ndarray) -> list[Variant]:
    """The same data as a torch tensor (another namespace), when torch is installed."""
    try:
        import torch
    except ImportError:
        return []
    out = [_v(f"torch {np.asarray(X).dtype}", torch.from_numpy(np.array(X)), "ok")]
    if np.asarray(X).dtype.kind == "f":
        out.append(_v("torch requires_grad",
                      torch.from_numpy(np.array(X)).requires_grad_(True), "either"))
    return out


# --------------------------------------------------------------------------- seeds for data
def small_shapes(min_ndim: int = 2, max_ndim: int = 4, max_dim: int = 6
                 ) -> st.SearchStrategy[tuple[int, ...]]:
    """Small tensor shapes (every mode at least 2)."""
    return st.lists(st.integers(2, max_dim), min_size=min_ndim, max_size=max_ndim).map(tuple)


seeds = st.integers(0, 2**16)


def normal(seed: int, shape: tuple[int, ...]) -> np.ndarray:
    """Standard normal data."""
    return np.random.default_rng(seed).standard_normal(shape)


# --------------------------------------------------------------------------- files
def tns_variants(seed: int) -> list[Variant]:
    """``.tns`` file contents (bytes, or a marker for a special file)."""
    gen = np.random.default_rng(seed)
    good = "".join(f"{i} {j} {k} {gen.standard_normal():.17g}\n"
                   for i, j, k in gen.integers(1, 5, size=(6, 3)))
    data = gzip.compress(good.encode() * 50)
    return [
        _v("valid", good.encode(), "ok"),
        _v("valid with comments and blanks", ("# header\n\n" + good + "# end\n").encode(), "ok"),
        _v("CRLF line ends", good.replace("\n", "\r\n").encode(), "ok"),
        _v("no final newline", good.rstrip("\n").encode(), "ok"),
        _v("tabs", good.replace(" ", "\t").encode(), "ok"),
        _v("empty", b"", "error"),
        _v("only comments", b"# nothing\n# here\n", "error"),
        _v("index 0", b"0 1 1 1.0\n", "error"),
        _v("negative index", b"-1 1 1 1.0\n", "error"),
        _v("float index", b"1.5 1 1 1.0\n", "error"),
        _v("index 1e30", b"1e30 1 1 1.0\n", "error"),
        _v("index 2**63", f"{2**63} 1 1 1.0\n".encode(), "error"),
        _v("NaN value", b"1 1 1 nan\n", "error"),
        _v("inf value", b"1 1 1 inf\n", "error"),
        _v("ragged columns", b"1 1 1 1.0\n1 1 2.0\n", "error"),
        _v("word", b"1 1 one 1.0\n", "error"),
        _v("binary garbage", bytes(gen.integers(0, 256, size=200, dtype=np.uint8)), "error"),
        _v("latin-1 text", "1 1 1 1.0 # caf\xe9\n".encode("latin-1"), "ok"),
        _v("utf-16", good.encode("utf-16"), "error"),
        _v("one column", b"1\n2\n", "error"),
        _v("gzip truncated", ("gz", data[: len(data) // 2]), "error"),
        _v("gzip of garbage", ("gz", gzip.compress(b"\x00\xff garbage\n")), "error"),
        _v("plain text named .gz", ("gz", good.encode()), "error"),
        _v("gzip valid", ("gz", gzip.compress(good.encode())), "ok"),
        _v("a directory", ("dir", b""), "error"),
        _v("missing file", ("missing", b""), "error"),
    ]
