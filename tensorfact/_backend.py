"""Array-namespace dispatch and every operation outside the array API standard.

This is the only module of tensorfact that asks which array library it holds.
Public functions call `namespace` once and pass ``xp`` down; the helpers
here take ``xp`` explicitly.

Native fast paths:

* NumPy: SciPy/LAPACK (Cholesky, Schur, ``expm``), ``numpy.einsum`` with a
  contraction path, ``numpy.add.at``/``bincount`` for scatter-add.
* CuPy: ``cupy``/``cupyx`` equivalents.
* torch: ``torch.einsum``, ``torch.linalg.cholesky_ex``, ``index_add_``.
* any other array API library: portable fallbacks written against the
  standard (pairwise ``einsum`` through ``matmul``, sort-based scatter-add);
  operations with no portable formulation (real Schur form) take a documented
  host round trip for small matrices only.

Random numbers are drawn on the host from a `numpy.random.Generator`
(SPEC 7) and moved to the target device, so one seed gives the same numbers on
every backend.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

import array_api_compat
import numpy as np

__all__ = [
    "namespace",
    "is_numpy",
    "is_torch",
    "is_cupy",
    "is_dask_array",
    "device",
    "to_numpy",
    "from_numpy",
    "default_float",
    "as_float_array",
    "check_real_dtype",
    "linalg_guard",
    "finfo_eps",
    "einsum",
    "scatter_add",
    "spd_solve",
    "spd_solve_right",
    "schur",
    "expm",
    "check_rng",
    "random_normal",
    "to_float",
    "thin_svd",
    "coo_matmul",
]

Array = Any


# --------------------------------------------------------------------------- #
# namespace / device
# --------------------------------------------------------------------------- #
def _library_name(x: Any) -> str:
    mod = type(x).__module__.split(".")[0]
    return mod


def namespace(*arrays: Any, name: str | None = None) -> ModuleType:
    """Return the array namespace shared by ``arrays``.

    ``None`` entries and Python scalars are ignored. NumPy arrays get
    ``array_api_compat.numpy``, torch tensors ``array_api_compat.torch``, CuPy
    arrays ``array_api_compat.cupy``; any library implementing
    ``__array_namespace__`` gets its own namespace.

    Raises
    ------
    TypeError
        If the arrays come from different libraries, or live on different
        devices; the message names both (and starts with ``name``, the
        arguments the arrays came from, when given).
    """
    try:
        return _namespace(arrays)
    except TypeError as exc:
        if name is None:
            raise
        raise TypeError(f"{name}: {exc}") from None


def _namespace(arrays: tuple[Any, ...]) -> ModuleType:
    arrs = [a for a in arrays if a is not None and not isinstance(a, (int, float, bool, complex))]
    if not arrs:
        return array_api_compat.array_namespace(np.empty(0))
    first = arrs[0]
    try:
        xp = array_api_compat.array_namespace(first)
    except TypeError as exc:
        raise TypeError(
            f"expected an array (NumPy, CuPy, torch or an array API library), "
            f"got {type(first).__name__}"
        ) from exc
    dev0 = array_api_compat.device(first)
    for a in arrs[1:]:
        try:
            xpa = array_api_compat.array_namespace(a)
        except TypeError as exc:
            raise TypeError(
                f"expected an array (NumPy, CuPy, torch or an array API library), "
                f"got {type(a).__name__}"
            ) from exc
        if xpa is not xp:
            raise TypeError(
                "arrays from different namespaces cannot be mixed: "
                f"{xp.__name__} ({type(first).__name__}) and "
                f"{xpa.__name__} ({type(a).__name__}); convert them to one library first"
            )
        deva = array_api_compat.device(a)
        if deva != dev0:
            raise TypeError(
                f"arrays on different devices cannot be mixed: {dev0} and {deva}; "
                "move them to one device first"
            )
    return xp


def is_array(x: Any) -> bool:
    """Whether ``x`` is an array of a supported array library (not a list or scalar)."""
    return bool(array_api_compat.is_array_api_obj(x)) and not isinstance(x, (int, float, complex))


def is_numpy(xp: ModuleType) -> bool:
    """Whether ``xp`` is NumPy (plain or the array-api-compat wrapper)."""
    return bool(array_api_compat.is_numpy_namespace(xp))


def is_torch(xp: ModuleType) -> bool:
    """Whether ``xp`` is torch (plain or the array-api-compat wrapper)."""
    return bool(array_api_compat.is_torch_namespace(xp))


def is_cupy(xp: ModuleType) -> bool:
    """Whether ``xp`` is CuPy (plain or the array-api-compat wrapper)."""
    return bool(array_api_compat.is_cupy_namespace(xp))


def is_dask_array(x: Any) -> bool:
    """Whether ``x`` is a ``dask.array.Array`` (never imports dask itself)."""
    return bool(array_api_compat.is_dask_array(x))


def device(x: Array) -> Any:
    """Device of ``x`` (``"cpu"`` for NumPy)."""
    return array_api_compat.device(x)


def to_numpy(x: Array) -> np.ndarray:
    """Copy ``x`` to a host NumPy array.

    Used only for small objects (sample indices, R x R matrices, scalars);
    never on a user's tensor.
    """
    if isinstance(x, np.ndarray):
        return x
    mod = _library_name(x)
    if mod == "torch":
        return x.detach().cpu().numpy()
    if mod == "cupy":
        return x.get()
    try:
        return np.asarray(x)
    except Exception:  # pragma: no cover - exotic libraries
        return np.from_dlpack(x)


def from_numpy(xp: ModuleType, arr: np.ndarray, *, like: Array | None = None,
               dtype: Any = None) -> Array:
    """Move a host NumPy array into namespace ``xp`` (on ``like``'s device)."""
    kwargs: dict[str, Any] = {}
    if like is not None:
        kwargs["device"] = device(like)
        if dtype is None and np.issubdtype(arr.dtype, np.floating):
            dtype = like.dtype
    if dtype is not None:
        kwargs["dtype"] = dtype
    if is_numpy(xp):
        return np.asarray(arr, dtype=dtype)
    return xp.asarray(np.ascontiguousarray(arr), **kwargs)


def default_float(xp: ModuleType, dev: Any = None) -> Any:
    """The default real floating dtype of ``xp`` (float64 for NumPy, float32 for torch)."""
    try:
        info = xp.__array_namespace_info__()
        return info.default_dtypes(device=dev)["real floating"]
    except Exception:  # pragma: no cover - very old namespaces
        return xp.float64


def check_real_dtype(x: Array, xp: ModuleType, *, name: str = "X") -> None:
    """Raise ``TypeError`` naming ``name`` unless ``x`` holds real numbers.

    Refuses NumPy masked arrays (the mask would be ignored), complex dtypes
    and non-numeric ones (object, string, datetime, structured).
    """
    if isinstance(x, np.ma.MaskedArray):
        raise TypeError(
            f"{name} is a NumPy masked array; its mask would be ignored: pass "
            f"{name}.filled(value) or the plain data"
        )
    dt = x.dtype
    if isinstance(dt, np.dtype) and dt.kind not in "biufc":
        raise TypeError(f"{name} has dtype {dt}; expected a real numeric dtype")
    if xp.isdtype(dt, "complex floating"):
        raise TypeError(f"{name} has complex dtype {dt}; only real floating tensors are supported")


def as_float_array(x: Array, xp: ModuleType, *, name: str = "X") -> Array:
    """Return ``x`` with a real floating dtype.

    Booleans and integers are promoted to the namespace's default float,
    half precision to float32; complex input raises ``TypeError``. Floating
    float32/float64 input is returned unchanged (no copy).
    """
    check_real_dtype(x, xp, name=name)
    dt = x.dtype
    if xp.isdtype(dt, "real floating"):
        if dt == xp.float32 or dt == xp.float64:
            return x
        return xp.astype(x, xp.float32)
    if xp.isdtype(dt, "bool") or xp.isdtype(dt, "integral"):
        return xp.astype(x, default_float(xp, device(x)))
    raise TypeError(f"{name} has unsupported dtype {dt}; expected a real numeric dtype")


def finfo_eps(xp: ModuleType, dtype: Any) -> float:
    """Machine epsilon of ``dtype`` as a Python float."""
    return float(xp.finfo(dtype).eps)


def to_float(x: Array) -> float:
    """Python float from a 0-d array (one host synchronisation)."""
    if isinstance(x, (int, float)):
        return float(x)
    return float(to_numpy(x).reshape(()))


# --------------------------------------------------------------------------- #
# einsum
# --------------------------------------------------------------------------- #
def einsum(xp: ModuleType, subscripts: str, *operands: Array) -> Array:
    """Einstein summation in namespace ``xp``.

    NumPy uses ``numpy.einsum(optimize=True)``, torch ``torch.einsum``, CuPy
    ``cupy.einsum``. Other namespaces use a portable pairwise implementation
    (``permute_dims`` + ``matmul``) supporting explicit-output subscripts
    without repeated indices inside one operand.
    """
    if is_numpy(xp):
        return np.einsum(subscripts, *operands, optimize=len(operands) > 2)
    if is_torch(xp):
        import torch

        return torch.einsum(subscripts, *operands)
    if is_cupy(xp):
        import cupy

        return cupy.einsum(subscripts, *operands)
    return _einsum_portable(xp, subscripts, *operands)


def _einsum_portable(xp: ModuleType, subscripts: str, *operands: Array) -> Array:
    subscripts = subscripts.replace(" ", "")
    if "->" not in subscripts:
        raise NotImplementedError("portable einsum needs an explicit output ('...->...')")
    lhs, out = subscripts.split("->")
    terms = lhs.split(",")
    if len(terms) != len(operands):
        raise ValueError("einsum: number of subscripts does not match number of operands")
    for t in terms:
        if len(set(t)) != len(t):
            raise NotImplementedError(
                "portable einsum does not support repeated indices (diagonals)"
            )
    cur, cur_idx = operands[0], terms[0]
    for k in range(1, len(operands)):
        later = set(out).union(*terms[k + 1:])
        cur, cur_idx = _pair_contract(xp, cur, cur_idx, operands[k], terms[k], later)
    # sum remaining indices not in output, then permute
    drop = [i for i, c in enumerate(cur_idx) if c not in out]
    if drop:
        cur = xp.sum(cur, axis=tuple(drop))
        cur_idx = "".join(c for c in cur_idx if c in out)
    perm = tuple(cur_idx.index(c) for c in out)
    if perm != tuple(range(len(perm))):
        cur = xp.permute_dims(cur, perm)
    return cur


def _pair_contract(xp, a, ia, b, ib, keep):
    # pre-sum indices only in one operand and not needed later
    def presum(x, ix, other):
        drop = [i for i, c in enumerate(ix) if c not in other and c not in keep]
        if drop:
            x = xp.sum(x, axis=tuple(drop))
            ix = "".join(c for c in ix if c not in other and c in keep or c in other)
        return x, ix

    a, ia = presum(a, ia, ib)
    b, ib = presum(b, ib, ia)
    batch = [c for c in ia if c in ib and c in keep]
    contr = [c for c in ia if c in ib and c not in keep]
    fa = [c for c in ia if c not in ib]
    fb = [c for c in ib if c not in ia]
    size = {c: a.shape[i] for i, c in enumerate(ia)}
    size.update({c: b.shape[i] for i, c in enumerate(ib)})
    nb = math.prod(size[c] for c in batch)
    nc = math.prod(size[c] for c in contr)
    na = math.prod(size[c] for c in fa)
    nbb = math.prod(size[c] for c in fb)
    a2 = xp.permute_dims(a, tuple(ia.index(c) for c in batch + fa + contr))
    b2 = xp.permute_dims(b, tuple(ib.index(c) for c in batch + contr + fb))
    a2 = xp.reshape(a2, (nb, na, nc))
    b2 = xp.reshape(b2, (nb, nc, nbb))
    res = xp.matmul(a2, b2)
    res = xp.reshape(res, tuple(size[c] for c in batch + fa + fb))
    return res, "".join(batch + fa + fb)


# --------------------------------------------------------------------------- #
# scatter-add
# --------------------------------------------------------------------------- #
def scatter_add(xp: ModuleType, n_out: int, indices: Array, values: Array) -> Array:
    """Sum rows of ``values`` into ``n_out`` bins given by integer ``indices``.

    ``out[k] = sum_{j : indices[j] == k} values[j]``; ``values`` has shape
    ``(n,)`` or ``(n, m)``. NumPy uses ``bincount``/``add.at``, torch
    ``index_add``, CuPy ``cupyx.scatter_add``; other namespaces a sort +
    cumulative-sum formulation.
    """
    shape = (n_out,) + tuple(values.shape[1:])
    if is_numpy(xp):
        if values.ndim == 1:
            return np.bincount(indices, weights=values, minlength=n_out).astype(values.dtype)
        out = np.zeros(shape, dtype=values.dtype)
        np.add.at(out, indices, values)
        return out
    if is_torch(xp):
        out = xp.zeros(shape, dtype=values.dtype, device=device(values))
        return out.index_add_(0, indices, values)
    if is_cupy(xp):
        import cupyx

        out = xp.zeros(shape, dtype=values.dtype)
        cupyx.scatter_add(out, indices, values)
        return out
    order = xp.argsort(indices)
    sidx = xp.take(indices, order)
    sval = xp.take(values, order, axis=0)
    zero = xp.zeros((1,) + tuple(values.shape[1:]), dtype=values.dtype, device=device(values))
    csum = xp.concat([zero, xp.cumulative_sum(sval, axis=0)], axis=0)
    targets = xp.arange(n_out, dtype=sidx.dtype, device=device(values))
    lo = xp.searchsorted(sidx, targets, side="left")
    hi = xp.searchsorted(sidx, targets, side="right")
    return xp.take(csum, hi, axis=0) - xp.take(csum, lo, axis=0)


# --------------------------------------------------------------------------- #
# linear algebra
# --------------------------------------------------------------------------- #
class SingularGramWarning(RuntimeWarning):
    """A symmetric positive semidefinite system was singular to working precision."""


@contextmanager
def linalg_guard(what: str) -> Iterator[None]:
    """Turn a dense solver's failure (``LinAlgError``) inside the block into ``FloatingPointError``.

    Eigensolvers, SVDs and QR factorisations of NumPy, SciPy, CuPy and torch
    signal non-convergence (in practice: NaN/Inf in the matrix) with their own
    ``LinAlgError``; tensorfact reports it in its own words, naming ``what``.
    """
    try:
        yield
    except Exception as exc:
        if type(exc).__name__.lstrip("_") != "LinAlgError":
            raise
        raise FloatingPointError(
            f"{what}: the dense linear-algebra solver failed ({type(exc).__name__}); the matrix "
            "holds NaN/Inf or is too ill-conditioned (data with NaN/Inf passed with "
            "check_finite=False, or a diverging iterate)"
        ) from exc


def scaled_norm(xp: ModuleType, x: Array, axis: int | None = None) -> Array:
    """Euclidean norm that neither overflows nor underflows (scaled like LAPACK's ``nrm2``).

    ``max|x| * sqrt(sum((x / max|x|)^2))`` along ``axis`` (all entries when
    ``None``); 0 where ``x`` is all zero. One extra elementwise pass: meant
    for factor matrices and vectors, not for whole tensors.
    """
    m = xp.max(xp.abs(x), axis=axis, keepdims=True)
    safe = xp.where(m > 0, m, xp.ones_like(m))
    y = x / safe
    out = safe * xp.sqrt(xp.sum(y * y, axis=axis, keepdims=True))
    out = xp.where(m > 0, out, xp.zeros_like(out))
    if axis is None:
        return xp.reshape(out, ())
    return xp.squeeze(out, axis=axis)


def spd_solve(xp: ModuleType, G: Array, B: Array, *, what: str = "Gram matrix") -> Array:
    """Solve ``G X = B`` for symmetric positive (semi)definite ``G`` (R x R).

    Cholesky first; if it fails or the matrix is singular to working
    precision (reciprocal condition estimate below ``R * eps``), an
    eigendecomposition pseudo-inverse that discards eigenvalues below
    ``R * eps * max_eigenvalue`` is used and a `SingularGramWarning`
    is emitted. A non-finite ``G`` raises ``FloatingPointError``.
    """
    R = G.shape[0]
    eps = finfo_eps(xp, G.dtype)
    if is_numpy(xp):
        # NumPy's own LAPACK only: SciPy ships a second OpenBLAS whose thread pool
        # contends with NumPy's right after a large GEMM (docs/cp-als.md).
        try:
            L = np.linalg.cholesky(G)
            d = np.abs(np.diag(L))
            if d.min() ** 2 > R * eps * d.max() ** 2 and np.all(np.isfinite(d)):
                Linv = np.linalg.inv(L)
                return Linv.T @ (Linv @ B)
        except np.linalg.LinAlgError:
            pass
    elif is_torch(xp):
        import torch

        L, info = torch.linalg.cholesky_ex(G)
        if int(info) == 0:
            dt = torch.abs(torch.diagonal(L))
            dmin, dmax = float(dt.min()), float(dt.max())
            if dmin**2 > R * eps * dmax**2 and math.isfinite(dmax):
                return torch.cholesky_solve(B, L)
    else:
        try:
            L = xp.linalg.cholesky(G)
            d = to_numpy(xp.abs(xp.linalg.diagonal(L)))
            if np.all(np.isfinite(d)) and d.min() ** 2 > R * eps * d.max() ** 2:
                return xp.linalg.solve(G, B)
        except Exception:
            pass
    if not bool(xp.all(xp.isfinite(G))):
        raise FloatingPointError(
            f"{what} contains NaN or Inf: the iterate has become non-finite (the problem may "
            "be ill-posed: try a lower rank or regularisation)"
        )
    warnings.warn(
        f"{what} is singular to working precision; solving with a pseudo-inverse "
        "(components may be collinear or the rank too large)",
        SingularGramWarning,
        stacklevel=3,
    )
    with linalg_guard(what):
        w, V = xp.linalg.eigh((G + xp.matrix_transpose(G)) / 2)
    wmax = xp.max(xp.abs(w))
    cut = wmax * (R * eps)
    safe = xp.where(w > cut, w, xp.ones_like(w))
    winv = xp.where(w > cut, 1.0 / safe, xp.zeros_like(w))
    return V @ (winv[:, None] * (xp.matrix_transpose(V) @ B))


def spd_solve_right(xp: ModuleType, M: Array, G: Array, *, what: str = "Gram matrix") -> Array:
    """Return ``M @ inv(G)`` for symmetric positive (semi)definite ``G``."""
    return xp.matrix_transpose(spd_solve(xp, G, xp.matrix_transpose(M), what=what))


def schur(xp: ModuleType, A: Array) -> tuple[Array, Array]:
    """Real Schur decomposition ``A = Z T Z^T`` of a square matrix.

    NumPy calls LAPACK through SciPy. Other namespaces have no real Schur
    routine, so the (small, d x d) matrix takes a documented host round trip.
    """
    import scipy.linalg as sla

    if is_numpy(xp):
        T, Z = sla.schur(A, output="real")
        return T, Z
    An = to_numpy(A)
    T, Z = sla.schur(An, output="real")
    return from_numpy(xp, T, like=A), from_numpy(xp, Z, like=A)


def expm(xp: ModuleType, A: Array, *, skew: bool = False) -> Array:
    """Matrix exponential of a square matrix.

    SciPy for NumPy, ``torch.linalg.matrix_exp`` for torch, a host round trip
    (small matrices only) otherwise. ``skew=True`` declares ``A`` real
    skew-symmetric (not checked): the exponential is then taken from the
    eigendecomposition of the Hermitian ``1j * A = W diag(w) W^H``,
    ``expm(A) = Re(W diag(exp(-1j w)) W^H)``, which is orthogonal to working
    precision (a Pade approximant is not exactly).
    """
    if skew:
        if is_numpy(xp):
            w, W = np.linalg.eigh(1j * A)
            return np.real((W * np.exp(-1j * w)[None, :]) @ W.conj().T)
        if is_torch(xp):
            import torch

            w, W = torch.linalg.eigh(1j * A)
            return torch.real((W * torch.exp(-1j * w)[None, :]) @ W.mH)
        return from_numpy(xp, expm(np, to_numpy(A), skew=True), like=A)
    import scipy.linalg as sla

    if is_numpy(xp):
        return sla.expm(A)
    if is_torch(xp):
        import torch

        return torch.linalg.matrix_exp(A)
    return from_numpy(xp, sla.expm(to_numpy(A)), like=A)


# --------------------------------------------------------------------------- #
# random numbers (SPEC 7)
# --------------------------------------------------------------------------- #
def check_rng(rng: None | int | np.random.Generator) -> np.random.Generator:
    """Normalise ``rng`` (None, int seed or Generator) to a NumPy Generator."""
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)) and not isinstance(rng, bool):
        if rng < 0:
            raise ValueError(f"rng must be None, a non-negative int seed or a "
                             f"numpy.random.Generator, got {int(rng)}")
        return np.random.default_rng(int(rng))
    if rng is None:
        return np.random.default_rng()
    if isinstance(rng, np.random.SeedSequence):
        return np.random.default_rng(rng)
    raise TypeError(
        f"rng must be None, an int seed or a numpy.random.Generator, got {type(rng).__name__}"
    )


def random_normal(xp: ModuleType, shape: Sequence[int], rng: np.random.Generator, *,
                  dtype: Any, like: Array | None = None) -> Array:
    """Standard normal draws made on the host and moved to ``like``'s device."""
    arr = rng.standard_normal(tuple(shape))
    return from_numpy(xp, arr, like=like, dtype=dtype)


# --------------------------------------------------------------------------- #
# thin SVD
# --------------------------------------------------------------------------- #
def thin_svd(xp: ModuleType, M: Array) -> tuple[Array, Array, Array]:
    """Thin SVD ``M = U diag(s) Vh`` of a matrix or a stack ``(..., p, q)``.

    NumPy calls LAPACK ``gesdd`` through SciPy one matrix at a time, falling
    back to ``gesvd`` if ``gesdd`` does not converge; other namespaces use
    ``xp.linalg.svd(full_matrices=False)``. Singular values descend.
    """
    if is_numpy(xp):
        import scipy.linalg as sla

        def one(A: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            if A.shape[0] < A.shape[1]:
                # wide C-ordered matrix: its transpose is Fortran-ordered and tall, which
                # LAPACK takes without a copy
                Ut, st, Vht = one(A.T)
                return Vht.T, st, Ut.T
            try:
                return sla.svd(A, full_matrices=False, check_finite=False, lapack_driver="gesdd")
            except np.linalg.LinAlgError:  # pragma: no cover - rare gesdd failure
                return sla.svd(A, full_matrices=False, check_finite=False, lapack_driver="gesvd")

        if M.ndim == 2:
            return one(M)
        lead = M.shape[:-2]
        flat = M.reshape((-1,) + M.shape[-2:])
        parts = [one(A) for A in flat]
        k = min(M.shape[-2:])
        U = np.stack([p[0] for p in parts]).reshape(lead + (M.shape[-2], k))
        s = np.stack([p[1] for p in parts]).reshape(lead + (k,))
        Vh = np.stack([p[2] for p in parts]).reshape(lead + (k, M.shape[-1]))
        return U, s, Vh
    return xp.linalg.svd(M, full_matrices=False)


def coo_matmul(xp: ModuleType, n_out: int, out_idx: Array, in_idx: Array, values: Array,
               M: Array) -> Array:
    """``out[out_idx[t], :] += values[t] * M[in_idx[t], :]``, a sparse-times-dense product.

    ``out`` has shape ``(n_out, M.shape[1])``. NumPy builds a SciPy CSR matrix
    (sums duplicates, C loop); other namespaces use ``take`` + `scatter_add`.
    """
    if is_numpy(xp):
        import scipy.sparse as sp

        S = sp.csr_matrix((values, (out_idx, in_idx)), shape=(n_out, M.shape[0]))
        return np.asarray(S @ M)
    contrib = xp.take(M, in_idx, axis=0) * values[:, None]
    return scatter_add(xp, n_out, out_idx, contrib)
