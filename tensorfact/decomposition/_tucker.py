"""Tucker decomposition: sequentially truncated HOSVD and HOOI."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np

from .. import _backend as B
from .._validation import check_choice, check_nonneg_float, check_positive_int
from ..formats import DenseTensor, TensorFormat, as_format
from ..formats._scale import unscaled_product
from ..tenalg._ttm import TuckerTree, mode_dot
from ..tensors.tucker import TuckerTensor
from . import _tucker_ops as ops
from ._cp_als import scaled_data
from ._monitor import ConvergenceHistory, IterationMonitor, check_callback
from ._results import TuckerResult

__all__ = ["hosvd", "tucker"]

logger = logging.getLogger("tensorfact.tucker")

Callback = Callable[[int, TuckerTensor, float], Any]


def hosvd(
    X: Any,
    /,
    ranks: int | tuple[int, ...],
    *,
    mode_order: tuple[int, ...] | None = None,
    svd: str = "exact",
    rng: None | int | np.random.Generator = None,
    check_finite: bool = True,
) -> TuckerResult:
    """Sequentially truncated higher-order SVD (ST-HOSVD).

    For each mode ``n`` in ``mode_order``, ``U_n`` holds the leading
    ``ranks[n]`` left singular vectors of the mode-``n`` unfolding of the
    current (already truncated) tensor, which is then projected,
    ``Y <- Y x_n U_n^T``; the core is the last ``Y``. Each step works on a
    smaller tensor than the last, and the error obeys
    ``||X - T||^2 <= sum_n (sum of the discarded squared singular values of
    unfold(X, n))``, the bound of the (non-sequential) HOSVD.

    Parameters
    ----------
    X : array of shape (I_0, ..., I_{N-1}), N >= 2, or a SparseTensor
        Any array API namespace; integers are promoted to the default float.
        A ``SparseTensor`` gets the truncated HOSVD: every ``U_n`` from the
        sparse unfolding of ``X`` itself (its ``leading_subspace``), the core
        from one TTM chain on the nonzeros, so ``X`` is never densified (the
        sequential projections would be dense); ``mode_order`` is then
        irrelevant.
    ranks : int or sequence of int
        Multilinear ranks, one per mode (an int means the same for every
        mode); ``1 <= ranks[n] <= I_n`` and ``ranks[n] <=`` the product of
        the other ranks.
    mode_order : sequence of int, optional
        The order in which the modes are truncated (default ``0, ..., N-1``);
        truncating the largest reductions first is cheapest.
    svd : {"exact", "randomized"}
        ``"exact"``: an SVD of the unfolding when it is small, else the
        eigenvectors of its Gram matrix. ``"randomized"``: the range finder
        of Halko et al. (``ranks[n] + 10`` Gaussian test vectors, two power
        iterations), for large modes.
    rng : None, int or numpy.random.Generator
        Randomness of ``svd="randomized"`` (drawn on the host).
    check_finite : bool
        Reject NaN/Inf in ``X``.

    Returns
    -------
    TuckerResult
        ``(tucker, n_iter=0, converged=True, rel_error, history)`` with an
        empty history.

    Raises
    ------
    ValueError
        ``ranks`` of the wrong length, larger than a mode or than the product
        of the other ranks; ``mode_order`` not a permutation of the modes;
        NaN/Inf in ``X``; a bad ``svd``.
    TypeError
        ``ranks`` or ``mode_order`` entries that are not integers; complex or
        non-array ``X``.

    References
    ----------
    De Lathauwer, De Moor & Vandewalle, "A multilinear singular value
    decomposition", SIAM J. Matrix Anal. Appl., 2000.
    Vannieuwenhoven, Vandebril & Meerbergen, "A new truncation strategy for
    the higher-order singular value decomposition", SIAM J. Sci. Comput., 2012.
    Halko, Martinsson & Tropp, "Finding structure with randomness", SIAM
    Review, 2011.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> core = rng.standard_normal((2, 3, 2))
    >>> U = [np.linalg.qr(rng.standard_normal((s, r)))[0] for s, r in [(6, 2), (7, 3), (8, 2)]]
    >>> X = TuckerTensor(core, U).to_dense()
    >>> res = hosvd(X, (2, 3, 2))
    >>> res.tucker.ranks, res.rel_error < 1e-10
    ((2, 3, 2), True)
    """
    data, R, gen = _prepare(X, ranks, svd, rng, check_finite)
    order = ops.check_mode_order(mode_order, len(R))
    data, scale, normX2 = _scaled(data)
    if normX2 == 0.0:
        return _zero_result(data, R)
    core, factors = _sthosvd(data, R, order, svd, gen)
    rel = _rel_error(data, core, factors, normX2)
    return TuckerResult(_model(core, factors, scale), 0, True, rel,
                        ConvergenceHistory((), ()))


def tucker(
    X: Any,
    /,
    ranks: int | tuple[int, ...],
    *,
    method: str = "hooi",
    init: str | TuckerTensor = "hosvd",
    max_iter: int = 100,
    tol: float = 1e-8,
    svd: str = "exact",
    rng: None | int | np.random.Generator = None,
    callback: Callback | None = None,
    verbose: bool = False,
    check_finite: bool = True,
) -> TuckerResult:
    """Tucker decomposition by higher-order orthogonal iteration (HOOI).

    Fits ``X ≈ G x_0 U_0 ... x_{N-1} U_{N-1}`` with orthonormal ``U_n``
    (``I_n x R_n``). Each sweep replaces, mode by mode, ``U_n`` by the
    leading ``R_n`` left singular vectors of the mode-``n`` unfolding of
    ``Y = X x_{m != n} U_m^T``, a small ``I_n x prod_{m != n} R_m``
    matrix; the core of the sweep is ``G = Y x_{N-1} U_{N-1}^T`` and the
    error ``||X - T||^2 = ||X||^2 - ||G||^2`` (orthonormal factors), recomputed
    exactly for dense ``X`` when that difference would lose precision.

    ``Y`` comes from a copy-free TTM chain (`tensorfact.tenalg.multi_mode_dot`)
    that keeps the partial product of one half of the modes between modes
    (`tensorfact.tenalg.TuckerTree`): a sweep reads a dense ``X`` twice. For a
    ``SparseTensor``, ``Y`` is computed on the nonzeros (memory: the nonzeros
    plus ``Y``).

    Parameters
    ----------
    X : array of shape (I_0, ..., I_{N-1}), N >= 2, or a SparseTensor
        Any array API namespace; integers are promoted to the default float.
    ranks : int or sequence of int
        Multilinear ranks (see `hosvd`).
    method : {"hooi"}
        The algorithm (HOOI is the only one so far).
    init : {"hosvd", "random"} or TuckerTensor
        ``"hosvd"``: the factors of `hosvd` (ST-HOSVD). ``"random"``: random
        orthonormal factors. A ``TuckerTensor`` of the requested shape and
        ranks: its factors (never modified; mode 0 is updated first, so
        ``factors[0]`` is not read).
    max_iter : int
        Maximum number of sweeps.
    tol : float
        Stop when the relative error changes by less than ``tol`` between
        sweeps; ``tol=0`` runs exactly ``max_iter`` sweeps.
    svd : {"exact", "randomized"}
        How leading singular vectors are computed (see `hosvd`); the
        randomised range finder pays off for large modes.
    rng : None, int or numpy.random.Generator
        Randomness of ``init="random"`` and ``svd="randomized"``.
    callback : callable, optional
        Called as ``callback(iteration, tucker, rel_error)`` after every
        sweep; returning ``True`` stops the run.
    verbose : bool
        Show a progress bar (tqdm) with the current error.
    check_finite : bool
        Reject NaN/Inf in ``X``.

    Returns
    -------
    TuckerResult
        ``(tucker, n_iter, converged, rel_error, history)``.

    Raises
    ------
    ValueError
        Bad ``ranks``, ``max_iter``, ``tol``, ``method``, ``init`` or
        ``svd``; an ``init`` TuckerTensor of the wrong shape or ranks;
        NaN/Inf in ``X``.
    TypeError
        Non-integer ranks, complex ``X``, ``init`` from another namespace or
        dtype, a data format without a TTM (``multi_mode_dot``).
    FloatingPointError
        If an iterate becomes non-finite.

    References
    ----------
    De Lathauwer, De Moor & Vandewalle, "On the best rank-1 and rank-(R1, R2,
    ..., RN) approximation of higher-order tensors", SIAM J. Matrix Anal.
    Appl., 2000.
    Kolda & Bader, "Tensor decompositions and applications", SIAM Review, 2009.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).standard_normal((6, 7, 8))
    >>> res = tucker(X, (2, 3, 2))
    >>> res.tucker.ranks, res.converged, len(res.history) == res.n_iter
    ((2, 3, 2), True, True)
    >>> bool(res.rel_error <= hosvd(X, (2, 3, 2)).rel_error)  # HOOI improves on its start
    True
    """
    data, R, gen = _prepare(X, ranks, svd, rng, check_finite)
    check_choice(method, "method", ("hooi",))
    max_iter = check_positive_int(max_iter, "max_iter")
    tol = check_nonneg_float(tol, "tol")
    check_callback(callback)
    init = ops.check_init(init, data, R)
    data, scale, normX2 = _scaled(data)
    if normX2 == 0.0:
        return _zero_result(data, R)
    xp = data.xp
    if isinstance(init, TuckerTensor):
        factors = list(init.factors)
    elif init == "random":
        factors = [ops.random_orthonormal(xp, s, r, gen, dtype=data.dtype, like=data.like)
                   for s, r in zip(data.shape, R)]
    else:
        factors = _sthosvd(data, R, tuple(range(len(R))), svd, gen)[1]
    return _hooi(data, R, factors, normX2, scale, max_iter=max_iter, tol=tol, svd=svd,
                 gen=gen, callback=callback, verbose=verbose)


def _prepare(X: Any, ranks: Any, svd: Any, rng: Any, check_finite: bool
             ) -> tuple[TensorFormat, tuple[int, ...], np.random.Generator]:
    data = as_format(X, check_finite=check_finite)
    _ttm_source(data)
    R = ops.check_ranks(ranks, data.shape)
    check_choice(svd, "svd", ("exact", "randomized"))
    return data, R, B.check_rng(rng)


def _scaled(data: TensorFormat) -> tuple[TensorFormat, float, float]:
    """`scaled_data`, refusing non-finite data (passed with ``check_finite=False``)."""
    data, scale, normX2 = scaled_data(data)
    if not math.isfinite(normX2):
        raise ValueError("X contains NaN or Inf values (check_finite=False was passed); clean "
                         "the data")
    return data, scale, normX2


def _ttm_source(data: TensorFormat) -> Any:
    """What the TTM chains run on: the dense array, or a format's own ``multi_mode_dot``."""
    if isinstance(data, DenseTensor):
        return data.X
    if hasattr(data, "multi_mode_dot"):
        return data
    raise TypeError(f"the Tucker solvers need a dense array or a data format with "
                    f"multi_mode_dot (SparseTensor), got {type(data).__name__}")


def _sthosvd(data: TensorFormat, R: tuple[int, ...], order: tuple[int, ...], svd: str,
             gen: np.random.Generator) -> tuple[Any, list[Any]]:
    """``(core, factors)`` of the ST-HOSVD (dense) or the truncated HOSVD (other formats)."""
    xp = data.xp
    src = _ttm_source(data)
    N = len(R)
    factors: list[Any] = [None] * N
    if not isinstance(data, DenseTensor):
        for n in range(N):
            factors[n] = data.leading_subspace(n, R[n], gen)
        core = src.multi_mode_dot(factors, list(range(N)), transpose=True)
        return core, factors
    Y = src
    for n in order:
        factors[n] = ops.leading_left(xp, Y, n, R[n], svd, gen)
        Y = mode_dot(xp, Y, xp.matrix_transpose(factors[n]), n)
    return Y, factors


def _rel_error(data: TensorFormat, core: Any, factors: list[Any], normX2: float) -> float:
    """``||X - T|| / ||X||`` from ``||X||^2 - ||G||^2``, exact (dense) when that cancels."""
    xp = data.xp
    flat = xp.reshape(core, (-1,))
    resid = normX2 - B.to_float(xp.vecdot(flat, flat))
    eps = B.finfo_eps(xp, data.dtype)
    if resid < 100.0 * eps * normX2 and isinstance(data, DenseTensor):
        resid = ops.dense_residual_sq(xp, data.X, core, factors)
    return math.sqrt(max(resid, 0.0) / normX2)


def _model(core: Any, factors: list[Any], scale: float) -> TuckerTensor:
    """The decomposition in the data's units from a solve on ``scale * X``.

    Usually the core divided by ``scale`` with the orthonormal factors. When
    that core would hold subnormal entries (data of subnormal magnitude), the
    power of two is shared out exactly between the core and the factors
    instead (orthogonal columns of a power-of-two norm; `unscaled_product`),
    so that no entry loses precision.
    """
    if scale == 1.0:
        return TuckerTensor(core, list(factors))
    *facs, unscaled_core = unscaled_product(B.namespace(core), list(factors) + [core], scale)
    return TuckerTensor(unscaled_core, facs)


def _zero_result(data: TensorFormat, R: tuple[int, ...]) -> TuckerResult:
    """The exact answer for an all-zero tensor: a zero core, error 0."""
    xp = data.xp
    dev = B.device(data.like)
    core = xp.zeros(R, dtype=data.dtype, device=dev)
    factors = [xp.eye(s, r, dtype=data.dtype, device=dev) for s, r in zip(data.shape, R)]
    return TuckerResult(TuckerTensor(core, factors), 0, True, 0.0, ConvergenceHistory((), ()))


def _hooi(data: TensorFormat, R: tuple[int, ...], factors: list[Any], normX2: float,
          scale: float, *, max_iter: int, tol: float, svd: str, gen: np.random.Generator,
          callback: Callback | None, verbose: bool) -> TuckerResult:
    xp: ModuleType = data.xp
    N = len(R)
    tree = TuckerTree(xp, _ttm_source(data))
    monitor = IterationMonitor("tucker", max_iter=max_iter, tol=tol, callback=callback,
                               verbose=verbose, logger=logger,
                               hint="check the data for extreme values")
    core = None
    with monitor:
        for _ in monitor.iterations():
            for n in range(N):
                Y = tree.other_modes(factors, n)
                factors[n] = ops.leading_left(xp, Y, n, R[n], svd, gen)
            core = mode_dot(xp, Y, xp.matrix_transpose(factors[N - 1]), N - 1)
            rel = _rel_error(data, core, factors, normX2)
            if monitor.record(rel, partial(_model, core, list(factors), scale)):
                break
    return TuckerResult(_model(core, factors, scale), monitor.n_iter, monitor.converged,
                        monitor.rel_error, monitor.history)
