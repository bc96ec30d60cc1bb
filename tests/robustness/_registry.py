"""The campaign's families of cases, and the checks of returned results.

A family is one argument (or one group of related arguments) of one public
entry point; its strategy draws a whole :class:`~_harness.Case` (a valid base
call with that argument perturbed). Families in modules other engineers are
editing carry the defect they are known to have (``known``): their test is
marked ``xfail(strict=False)`` with that reason.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from _harness import Case, CheckFailed, require
from hypothesis import strategies as st

import tensorfact as tf
from tensorfact import _backend as B


@dataclass(frozen=True)
class Family:
    target: str
    family: str
    strategy: st.SearchStrategy[Case]
    needs: str | None = None  # an optional dependency ("torch")

    @property
    def id(self) -> str:
        return f"{self.target}/{self.family}"


REGISTRY: list[Family] = []


def register(target: str, family: str, *, needs: str | None = None
             ) -> Callable[[Callable[..., Case]], Callable[..., Case]]:
    """Register ``fn(draw) -> Case`` as the strategy of ``target``'s ``family``."""

    def deco(fn: Callable[..., Case]) -> Callable[..., Case]:
        REGISTRY.append(Family(target, family, st.composite(fn)(), needs))
        return fn

    return deco


def has_module(names: str) -> bool:
    """Whether every module in the comma-separated ``names`` imports."""
    for name in names.split(","):
        try:
            __import__(name)
        except ImportError:
            return False
    return True


# --------------------------------------------------------------------------- checks
def host(x: Any) -> np.ndarray:
    """A float64 NumPy copy of an array of any namespace (or of an array-like)."""
    if hasattr(x, "detach"):
        x = x.detach()
    if hasattr(x, "__array_namespace__") and not isinstance(x, np.ndarray):
        x = B.to_numpy(x)
    x = np.asarray(x)
    return np.array(x.real if np.iscomplexobj(x) else x, dtype=np.float64)


def finite(x: Any) -> bool:
    return bool(np.all(np.isfinite(host(x))))


def check_array(out: Any, shape: tuple[int, ...] | None = None, *,
                ref: np.ndarray | None = None, rtol: float = 1e-8, atol: float = 0.0) -> None:
    """An array of ``shape``, equal to ``ref`` when given (else finite).

    Non-finite entries are allowed only where the recomputation ``ref`` has
    them too (NaN in, NaN out, for the algebraic building blocks).
    """
    require(hasattr(out, "shape"), f"expected an array, got {type(out).__name__}")
    if shape is not None:
        require(tuple(int(s) for s in out.shape) == tuple(shape),
                f"shape {tuple(out.shape)} != {tuple(shape)}")
    h = host(out)
    if ref is None:
        require(np.all(np.isfinite(h)), "non-finite entries in the output")
        return
    ref = np.asarray(ref, dtype=np.float64)
    require(h.shape == ref.shape, f"shape {h.shape} != recomputation's {ref.shape}")
    ok = np.isfinite(ref)
    require(np.array_equal(np.isfinite(h), ok), "non-finite entries where the recomputation "
                                                "has none (or the reverse)")
    finite_ref = ref[ok]
    scale = float(np.max(np.abs(finite_ref))) if finite_ref.size else 0.0
    if not np.allclose(h[ok], finite_ref, rtol=rtol, atol=max(atol + rtol * scale, 1e-300)):
        raise CheckFailed("output differs from the recomputation by "
                          f"{np.max(np.abs(h[ok] - finite_ref)):.3g}")


def relative_error(X: Any, D: Any) -> float:
    """Exact ``||X - D|| / ||X||`` in float64, safe for data of any magnitude (0 for X = 0)."""
    X, D = host(X), host(D)
    s = float(np.max(np.abs(X))) if X.size else 0.0
    if s == 0.0:
        return 0.0 if not np.any(D) else math.inf
    return float(np.linalg.norm(X / s - D / s) / np.linalg.norm(X / s))


def dense_error(X: np.ndarray, cp: tf.CPTensor) -> float:
    """Exact ``||X - cp|| / ||X||`` in float64, safe for data of any magnitude."""
    X = np.asarray(X, dtype=np.float64)
    s = float(np.max(np.abs(X))) if X.size else 0.0
    w = host(cp.weights)
    facs = [host(A) for A in cp.factors]
    if s == 0.0:
        return 0.0 if not np.any(w) else math.inf
    model = tf.CPTensor(facs, weights=w / s).to_dense()
    Xs = X / s
    return float(np.linalg.norm(Xs - model) / np.linalg.norm(Xs))


def check_cp_result(X: Any, res: Any, rank: int, *, exact: bool, dtype_tol: float = 1e-6
                    ) -> None:
    """A :class:`CPALSResult` whose model is finite and whose error is the real one."""
    require(isinstance(res, tf.CPALSResult), f"expected CPALSResult, got {type(res).__name__}")
    cp = res.cp
    Xd = host(X.to_dense() if isinstance(X, tf.SparseTensor) else X)
    require(cp.shape == Xd.shape, f"model shape {cp.shape} != data shape {Xd.shape}")
    require(cp.rank == rank, f"model rank {cp.rank} != requested {rank}")
    require(finite(cp.weights), "non-finite weights")
    for n, A in enumerate(cp.factors):
        require(finite(A), f"non-finite factor {n}")
    require(isinstance(res.rel_error, float) and math.isfinite(res.rel_error)
            and res.rel_error >= 0, f"rel_error {res.rel_error!r}")
    require(len(res.history) >= res.n_iter, "history shorter than n_iter")
    if exact:
        true = dense_error(Xd, cp)
        require(abs(true - res.rel_error) <= dtype_tol * (1 + true),
                f"rel_error {res.rel_error:.6g} but the returned model's error is {true:.6g}")


def tol_for(X: Any) -> float:
    """A tolerance for comparing relative errors computed in ``X``'s precision."""
    dt = getattr(X, "dtype", None)
    name = str(dt)
    if "float32" in name or "float16" in name:
        return 2e-3
    return 1e-6
