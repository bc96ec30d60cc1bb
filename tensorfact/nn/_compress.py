"""Compress the layers of a pretrained model with Kronecker decompositions.

`compress` swaps chosen ``nn.Linear`` / ``nn.Embedding`` / ``nn.Conv2d``
modules of a copy of a model for structured ones initialised from their
weights, and returns a frozen `CompressionReport`.
`compress_state_dict` does the same to the 2-D weights of a checkpoint
(the ``tensorfact compress`` command, safetensors in and out).
"""

from __future__ import annotations

import copy
import json
import math
import numbers
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from functools import partial
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from .._io import atomic_write
from .._validation import check_choice
from ._common import check_compression, check_count, check_module, set_submodule
from ._kronecker import KroneckerEmbedding, KroneckerLinear
from ._planner import KroneckerFit, KroneckerPlan, fit_kronecker

__all__ = ["CompressionReport", "LayerReport", "compress", "compress_state_dict"]

_T = TypeVar("_T")

#: method -> module types it compresses (others are left as they are)
_METHOD_TYPES: dict[str, tuple[str, ...]] = {
    "kronecker": ("Linear", "Embedding", "Conv2d"),
    "gkpd": ("Linear", "Embedding", "Conv2d"),
    "sekron": ("Conv2d",),
    "cp": ("Linear",),
}

#: default of ``max_rel_error``: a structured weight keeping less than 19% of the
#: weight's energy is left dense (random, structureless weights at 2x to 4x lose
#: 60% to 77% of it, trained transformer weights at 2x about 60%)
MAX_REL_ERROR = 0.9
#: default of ``min_features``: layers with fewer input or output features (channels,
#: table rows) than this stay dense
MIN_FEATURES = 4


@dataclass(frozen=True)
class LayerReport:
    """One selected layer (a row of `CompressionReport`).

    Attributes
    ----------
    name : str
        Module name in the model (or tensor name in a checkpoint); the first
        of its names when the module is used at several places.
    type : str
        Original module type (``"Linear"``, ``"Embedding"``, ``"Conv2d"``).
    new_type : str
        Replacement type (e.g. ``"KroneckerLinear"``); ``type`` when the
        layer was left dense.
    shape : tuple of int
        Shape of the original weight.
    params_before, params_after : int
        Parameters of the module (bias included) before and after.
    rel_error : float
        ``||W - W_hat||_F / ||W||_F`` of the weight, as reported by the
        decomposition (optimal for the chosen shapes and rank with GKPD); for
        a layer left dense, that of the structured layer it was not replaced
        by (NaN when none was computed).
    detail : str
        Shapes and rank of the factorization.
    reason : str or None
        Why the layer was left dense (``None`` when it was replaced).
    aliases : tuple of str
        The module's other names (weight tying: one module object at several
        places of the model is replaced everywhere by one structured module).
    """

    name: str
    type: str
    new_type: str
    shape: tuple[int, ...]
    params_before: int
    params_after: int
    rel_error: float
    detail: str
    reason: str | None = None
    aliases: tuple[str, ...] = ()

    @property
    def skipped(self) -> bool:
        """Whether the layer was left dense (see `reason`)."""
        return self.reason is not None

    @property
    def ratio(self) -> float:
        """``params_before / params_after``."""
        return self.params_before / max(self.params_after, 1)


@dataclass(frozen=True)
class CompressionReport:
    """What `compress` did: per-layer rows and totals.

    Attributes
    ----------
    layers : tuple of LayerReport
        Replaced layers, in module order.
    kept_dense : tuple of LayerReport
        Selected layers left dense, each with its `LayerReport.reason`.
    method : str
    compression : float
        Target ratio per layer.
    model_params_before, model_params_after : int
        Parameters of the whole model (0 for a checkpoint).
    seconds : float
        Wall time of the decompositions.
    max_rel_error : float or None
        The error above which a layer was left dense (``None``: no limit).
    min_features : int
        The feature count below which a layer was left dense.
    """

    layers: tuple[LayerReport, ...]
    kept_dense: tuple[LayerReport, ...]
    method: str
    compression: float
    model_params_before: int
    model_params_after: int
    seconds: float
    max_rel_error: float | None = MAX_REL_ERROR
    min_features: int = MIN_FEATURES

    @property
    def skipped(self) -> tuple[tuple[str, str], ...]:
        """``(name, reason)`` of every selected layer left dense."""
        return tuple((r.name, r.reason or "") for r in self.kept_dense)

    @property
    def params_before(self) -> int:
        """Parameters of the compressed layers before compression."""
        return sum(r.params_before for r in self.layers)

    @property
    def params_after(self) -> int:
        """Parameters of the compressed layers after compression."""
        return sum(r.params_after for r in self.layers)

    def to_table(self, *, markdown: bool = False) -> str:
        """Per-layer table with a total line (plain text, or GitHub markdown)."""
        header = ["layer", "type", "shape", "params", "compressed", "ratio", "rel. error",
                  "factorization"]
        rows = [[r.name, f"{r.type}->{r.new_type}", "x".join(map(str, r.shape)),
                 str(r.params_before), str(r.params_after), f"{r.ratio:.2f}",
                 f"{r.rel_error:.4f}", r.detail] for r in self.layers]
        after = max(self.params_after, 1)
        rows.append(["total", "", "", str(self.params_before), str(self.params_after),
                     f"{self.params_before / after:.2f}", "", ""])
        if markdown:
            lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            lines += ["| " + " | ".join(r) + " |" for r in rows]
            text = "\n".join(lines)
        else:
            widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
            fmt = [" ".join(c.ljust(w) if i in (0, 1, 7) else c.rjust(w)
                            for i, (c, w) in enumerate(zip(r, widths))).rstrip()
                   for r in [header, *rows]]
            fmt.insert(1, " ".join("-" * w for w in widths))
            fmt.insert(len(fmt) - 1, " ".join("-" * w for w in widths))
            text = "\n".join(fmt)
        extra = []
        if self.model_params_before:
            extra.append(f"model parameters: {self.model_params_before} -> "
                         f"{self.model_params_after} "
                         f"({self.model_params_before / max(self.model_params_after, 1):.2f}x)")
        extra.append(f"method {self.method}, target compression {self.compression:g} per layer, "
                     f"{self.seconds:.2f} s")
        for r in self.layers:
            if r.aliases:
                extra.append(f"{r.name} is also at {', '.join(r.aliases)} (one shared module)")
        for name, why in self.skipped:
            extra.append(f"kept dense {name}: {why}")
        return text + "\n" + "\n".join(extra)

    def __str__(self) -> str:
        return self.to_table()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable; an unknown error is ``None``, not NaN)."""
        d = asdict(self)
        for row in d["kept_dense"]:
            if math.isnan(row["rel_error"]):
                row["rel_error"] = None
        d["skipped"] = [list(p) for p in self.skipped]
        d["params_before"], d["params_after"] = self.params_before, self.params_after
        return d


def _selected(name: str, include: str | None, exclude: str | None) -> bool:
    if include is not None and re.search(include, name) is None:
        return False
    return not (exclude is not None and re.search(exclude, name) is not None)


def _check_common(method: str, compression: float, include: Any, exclude: Any,
                  max_rel_error: Any, min_features: Any, max_candidates: Any
                  ) -> tuple[float, float | None, int]:
    check_choice(method, "method", tuple(sorted(_METHOD_TYPES)))
    check_count(max_candidates, "max_candidates")
    c = check_compression(compression, above=1.0)
    for label, pat in (("include", include), ("exclude", exclude)):
        if pat is not None:
            if not isinstance(pat, str):
                raise TypeError(f"{label} must be a regular expression string, got {pat!r}")
            try:
                re.compile(pat)
            except re.error as exc:
                raise ValueError(f"{label} is not a valid regular expression: {exc}") from exc
    limit = None
    if max_rel_error is not None:
        if isinstance(max_rel_error, bool) or not isinstance(max_rel_error, numbers.Real):
            raise TypeError(f"max_rel_error must be a number or None, got {max_rel_error!r}")
        limit = float(max_rel_error)
        if not limit >= 0:
            raise ValueError(f"max_rel_error must be >= 0, got {max_rel_error!r}")
    return c, limit, check_count(min_features, "min_features")


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _features(module: nn.Module) -> dict[str, int]:
    if isinstance(module, nn.Embedding):
        return {"num_embeddings": module.num_embeddings, "embedding_dim": module.embedding_dim}
    if isinstance(module, nn.Conv2d):
        return {"in_channels": module.in_channels, "out_channels": module.out_channels}
    if isinstance(module, nn.Linear):
        return {"in_features": module.in_features, "out_features": module.out_features}
    raise TypeError(f"cannot compress a {type(module).__name__}")  # pragma: no cover


def _too_small(features: Mapping[str, int], min_features: int) -> str | None:
    name, n = min(features.items(), key=lambda kv: kv[1])
    if n < min_features:
        return f"too small to gain from compression ({name} = {n} < min_features = {min_features})"
    return None


def _replace(module: nn.Module, method: str, compression: float,
             max_candidates: int) -> tuple[nn.Module, Any]:
    """The structured module and its plan (``rel_error`` and ``detail``)."""
    new: Any
    if method == "cp" and isinstance(module, nn.Linear):
        from ._cp import CPLinear

        new = CPLinear.from_linear(module, compression=compression, rng=0)
    elif isinstance(module, nn.Linear):
        new = KroneckerLinear.from_linear(module, compression=compression,
                                          max_candidates=max_candidates)
    elif isinstance(module, nn.Embedding):
        new = KroneckerEmbedding.from_embedding(module, compression=compression,
                                                max_candidates=max_candidates)
    elif isinstance(module, nn.Conv2d):
        from ._conv import GKPDConv2d, SeKronConv2d

        cls = SeKronConv2d if method == "sekron" else GKPDConv2d
        new = cls.from_conv(module, compression=compression)
    else:  # pragma: no cover - compress selects these types only
        raise TypeError(f"cannot compress a {type(module).__name__}")
    if new.plan is None:  # pragma: no cover - the from_* constructors always set it
        raise RuntimeError("layer was not initialised from a dense layer")
    return new, new.plan


def _attempt(build: Callable[[], tuple[_T, Any]], limit: float | None
             ) -> tuple[_T | None, float, str, str | None]:
    """``(structured, rel_error, detail, None)``, or ``(None, ..., reason)`` to stay dense."""
    try:
        new, plan = build()
    except ValueError as exc:  # no structure reaches the target
        return None, math.nan, "", str(exc)
    err = float(plan.rel_error)
    if limit is not None and err > limit:
        return None, err, plan.detail, f"relative error {err:.4f} > max_rel_error {limit:g}"
    return new, err, plan.detail, None


def _places(model: nn.Module, types: tuple[str, ...]) -> list[list[str]]:
    """Every name of every candidate module, one list per module object (tied ones share)."""
    places: dict[int, list[str]] = {}
    for name, mod in model.named_modules(remove_duplicate=False):
        if (name and type(mod).__name__ in types
                and isinstance(mod, (nn.Linear, nn.Embedding, nn.Conv2d))):
            places.setdefault(id(mod), []).append(name)
    return list(places.values())


def _weight_owners(model: nn.Module) -> dict[int, list[str]]:
    """``id(parameter) -> names of the modules holding it directly``."""
    owners: dict[int, list[str]] = {}
    for name, mod in model.named_modules():
        for p in mod.parameters(recurse=False):
            owners.setdefault(id(p), []).append(name)
    return owners


def compress(model: nn.Module, /, *, method: str = "kronecker", compression: float = 2.0,
             include: str | None = None, exclude: str | None = None,
             max_candidates: int = 4, max_rel_error: float | None = MAX_REL_ERROR,
             min_features: int = MIN_FEATURES) -> tuple[nn.Module, CompressionReport]:
    """Replace layers of a pretrained model by Kronecker-structured ones, where it pays.

    A deep copy of ``model`` is made; in it, every selected module is swapped
    for a structured module initialised from its weights by the optimal
    decomposition:

    ========== ============================ ==========================================
    method     module                       replacement
    ========== ============================ ==========================================
    kronecker  ``nn.Linear``                `KroneckerLinear` (GKPD / Van Loan)
    (= gkpd)   ``nn.Embedding``             `KroneckerEmbedding`
               ``nn.Conv2d``                ``GKPDConv2d.from_conv``
    sekron     ``nn.Conv2d``                ``SeKronConv2d.from_conv``
    cp         ``nn.Linear``                `CPLinear` (CP-ALS, achieved error)
    ========== ============================ ==========================================

    For each layer the factor shapes and the rank are chosen so that the
    layer's weight has at most ``1 / compression`` of its parameters, taking
    among a few balanced candidate shapes the one with the smallest optimal
    error. With ``method="cp"`` the weight, reshaped to a 4-way tensor of
    balanced modes, is fitted by `tensorfact.cp_als` (SVD
    initialisation, seeded, deterministic) and the report's error is the one
    achieved, not an optimum; ``nn.Embedding`` and ``nn.Conv2d`` modules are
    left dense (not selected) by this method. Unselected modules are the deep
    copy's and stay bit-identical.

    Each selected layer is decided on its own and left dense, with the reason
    in its `LayerReport` (``report.kept_dense``), when

    * it is too small to gain: fewer than ``min_features`` input or output
      features (channels of a convolution, rows or columns of a table), like
      the 3-channel or 1-channel input convolution of a CNN or a 2-row
      token-type table, which hold few parameters and feed everything after
      them;
    * no structure reaches the target (rank 1 already has too many parameters);
    * its best structured approximation is poor: relative weight error above
      ``max_rel_error`` (the optimal error the decomposition reports);
    * its weight is shared with another module (parameter tying), or only
      some of the names of a module used at several places are selected.

    A module used at several places of the model (the same object under
    several names) is replaced at every place by one shared structured module.

    Parameters
    ----------
    model : torch.nn.Module
        Left unchanged.
    method : {"kronecker", "gkpd", "sekron", "cp"}, default "kronecker"
    compression : float, default 2.0
        Target per-layer ratio of weight parameters, > 1.
    include, exclude : str, optional
        Regular expressions searched (`re.search`) in module names:
        a module is compressed when it matches ``include`` (all do when
        omitted) and does not match ``exclude``.
    max_candidates : int >= 1, default 4
        Factor shapes compared per linear or embedding layer (one SVD each;
        convolutions compare the default of ``from_conv``).
    max_rel_error : float or None, default 0.9
        Layers whose structured weight would have a larger relative error stay
        dense. 0.9 means keeping less than 19% of the weight's energy: random
        (structureless) weights lose 60% to 77% of it at 2x to 4x, trained
        transformer weights about 60% at 2x, so the default only catches
        layers the structure does not describe at all. ``None``: no limit.
    min_features : int, default 4
        Layers with fewer input or output features stay dense.

    Returns
    -------
    new_model : torch.nn.Module
    report : CompressionReport
        Per-layer shapes, parameters and relative errors, and the layers kept
        dense with the reason; ``print(report)`` shows a table.

    Raises
    ------
    ValueError
        Unknown method, ``compression <= 1``, a bad regular expression, a
        negative ``max_rel_error``, or nothing to compress.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10), nn.Linear(10, 2))
    >>> small, report = compress(net, compression=2, exclude=r"^2$")
    >>> type(small[0]).__name__, type(small[2]).__name__, type(small[3]).__name__
    ('KroneckerLinear', 'Linear', 'Linear')
    >>> bool(torch.equal(small[2].weight, net[2].weight))
    True
    >>> report.layers[0].params_after <= report.layers[0].params_before
    True
    >>> report.kept_dense[0].reason
    'too small to gain from compression (out_features = 2 < min_features = 4)'
    """
    check_module(model)
    c, limit, min_feat = _check_common(method, compression, include, exclude, max_rel_error,
                                       min_features, max_candidates)
    types = _METHOD_TYPES[method]
    new = copy.deepcopy(model)
    chosen = []
    for names in _places(new, types):
        selected = [n for n in names if _selected(n, include, exclude)]
        if selected:
            chosen.append((names, len(selected) == len(names)))
    if not chosen:
        raise ValueError(
            f"no {'/'.join(types)} module of the model matches include={include!r}, "
            f"exclude={exclude!r}")
    before = _n_params(model)
    owners = _weight_owners(new)
    rows, kept = [], []
    t0 = time.perf_counter()
    for names, all_selected in chosen:
        mod = new.get_submodule(names[0])
        weight = mod.weight
        if not isinstance(weight, torch.Tensor):  # pragma: no cover - Linear/Embedding/Conv2d
            raise TypeError(f"{names[0]} has no weight tensor")
        others = [n for n in owners.get(id(weight), []) if n not in names]
        unselected = [n for n in names if not _selected(n, include, exclude)]
        reason: str | None = None
        if not all_selected:
            reason = f"also used as {', '.join(unselected)}, which is not selected"
        elif others:
            reason = f"its weight is shared with {', '.join(others)}"
        else:
            reason = _too_small(_features(mod), min_feat)
        rep: nn.Module | None = None
        err, detail = math.nan, ""
        if reason is None:
            rep, err, detail, reason = _attempt(
                partial(_replace, mod, method, c, max_candidates), limit)
        row = LayerReport(name=names[0], type=type(mod).__name__, new_type=type(mod).__name__,
                          shape=tuple(int(s) for s in weight.shape),
                          params_before=_n_params(mod), params_after=_n_params(mod),
                          rel_error=err, detail=detail, reason=reason, aliases=tuple(names[1:]))
        if rep is None:
            kept.append(row)
            continue
        for name in names:
            set_submodule(new, name, rep)
        rows.append(replace(row, new_type=type(rep).__name__, params_after=_n_params(rep)))
    seconds = time.perf_counter() - t0
    report = CompressionReport(layers=tuple(rows), kept_dense=tuple(kept), method=method,
                               compression=c, model_params_before=before,
                               model_params_after=_n_params(new), seconds=seconds,
                               max_rel_error=limit, min_features=min_feat)
    return new, report


# --------------------------------------------------------------------------- #
# checkpoints (the ``tensorfact compress`` command)
# --------------------------------------------------------------------------- #
def compress_state_dict(tensors: Mapping[str, np.ndarray], /, *, compression: float = 2.0,
                        include: str | None = None, exclude: str | None = None,
                        method: str = "kronecker", max_candidates: int = 4,
                        max_rel_error: float | None = MAX_REL_ERROR,
                        min_features: int = MIN_FEATURES
                        ) -> tuple[dict[str, np.ndarray], CompressionReport]:
    """Factor every selected 2-D weight of a checkpoint into Kronecker factors.

    A tensor ``X.weight`` of shape ``(m, n)`` becomes ``X.kron_a`` of shape
    ``(rank, m1, n1)`` and ``X.kron_b`` of shape ``(rank, m2, n2)`` (the
    parameter names of `KroneckerLinear`, so a model whose layer ``X``
    is a KroneckerLinear of these shapes loads them directly); a tensor not
    ending in ``.weight`` gets the suffixes appended. Everything else
    (biases, norms, 1-D and N-D tensors, unselected matrices) is copied as it
    is, and so are selected matrices left dense for the reasons of
    `compress` (fewer than ``min_features`` rows or columns, no
    structure reaching the target, relative error above ``max_rel_error``).
    Factors keep the tensor's dtype; the decomposition runs in float64.

    Parameters
    ----------
    tensors : mapping of str to numpy.ndarray
        E.g. ``safetensors.numpy.load_file(path)``.
    compression, include, exclude, max_candidates, max_rel_error, min_features
        As in `compress` (patterns match tensor names).
    method : {"kronecker", "gkpd"}

    Returns
    -------
    new_tensors : dict of str to numpy.ndarray
    report : CompressionReport
    """
    if method not in ("kronecker", "gkpd"):
        raise ValueError(f"method must be 'kronecker' or 'gkpd' for checkpoints, got {method!r}")
    c, limit, min_feat = _check_common(method, compression, include, exclude, max_rel_error,
                                       min_features, max_candidates)
    out: dict[str, np.ndarray] = {}
    rows, kept = [], []
    t0 = time.perf_counter()
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating) or not _selected(
                name, include, exclude):
            out[name] = arr
            continue
        out[name] = arr
        fit, err, detail = None, math.nan, ""
        reason = _too_small({"rows": arr.shape[0], "columns": arr.shape[1]}, min_feat)
        if reason is None:
            fit, err, detail, reason = _attempt(
                partial(_fit_matrix, arr, c, max_candidates), limit)
        row = LayerReport(name=name, type="matrix", new_type="matrix",
                          shape=tuple(int(s) for s in arr.shape), params_before=int(arr.size),
                          params_after=int(arr.size), rel_error=err, detail=detail,
                          reason=reason)
        if fit is None:
            kept.append(row)
            continue
        del out[name]
        A, Bf = (np.ascontiguousarray(f.astype(arr.dtype)) for f in fit.factors)
        stem = name[: -len(".weight")] if name.endswith(".weight") else name
        out[f"{stem}.kron_a"], out[f"{stem}.kron_b"] = A, Bf
        rows.append(replace(row, new_type="kronecker", params_after=int(A.size + Bf.size)))
    if not rows and not kept:
        raise ValueError(
            f"no 2-D floating tensor matches include={include!r}, exclude={exclude!r}")
    report = CompressionReport(layers=tuple(rows), kept_dense=tuple(kept), method=method,
                               compression=c, model_params_before=0, model_params_after=0,
                               seconds=time.perf_counter() - t0, max_rel_error=limit,
                               min_features=min_feat)
    return out, report


def _fit_matrix(W: np.ndarray, compression: float, max_candidates: int
                ) -> tuple[KroneckerFit, KroneckerPlan]:
    fit = fit_kronecker(W, compression=compression, max_candidates=max_candidates)
    return fit, fit.plan


def run_cli(args: Any) -> str:
    """Body of ``tensorfact compress``; returns the text the command prints."""
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    src = Path(args.checkpoint)
    if not src.exists():
        raise SystemExit(f"tensorfact: no such file: {src}")
    if src.suffix != ".safetensors" or Path(args.out).suffix != ".safetensors":
        raise SystemExit("tensorfact: compress reads and writes .safetensors files only")
    try:
        tensors = load_file(str(src))
    except (SafetensorError, OSError, TypeError, ValueError) as exc:
        raise SystemExit(f"tensorfact: cannot read {src} as safetensors: {exc}") from exc
    for name, t in tensors.items():
        if np.issubdtype(t.dtype, np.floating) and not bool(np.isfinite(t).all()):
            raise SystemExit(f"tensorfact: tensor {name!r} of {src} contains NaN or Inf values; "
                             "nothing was written")
    new, report = compress_state_dict(tensors, compression=args.compression,
                                      include=args.include, exclude=args.exclude,
                                      method=args.method)
    meta = {"tensorfact_compress": json.dumps(report.to_dict())}
    out = Path(args.out)
    report_path = Path(args.report) if args.report else out.with_suffix(".json")
    from safetensors.numpy import save

    atomic_write(out, lambda f: f.write(save(new, metadata=meta)))
    atomic_write(report_path, lambda f: f.write(
        (json.dumps(report.to_dict(), indent=2) + "\n").encode("utf-8")))
    return f"{report.to_table()}\nwrote {out} and {report_path}"

