"""Compress the layers of a pretrained model with Kronecker decompositions.

:func:`compress` swaps chosen ``nn.Linear`` / ``nn.Embedding`` / ``nn.Conv2d``
modules of a copy of a model for structured ones initialised from their
weights, and returns a frozen :class:`CompressionReport`.
:func:`compress_state_dict` does the same to the 2-D weights of a checkpoint
(the ``tensorfact compress`` command, safetensors in and out).
"""

from __future__ import annotations

import copy
import json
import math
import re
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from ._kronecker import KroneckerEmbedding, KroneckerLinear, KroneckerPlan, plan_kronecker

__all__ = ["CompressionReport", "LayerReport", "compress", "compress_state_dict"]

#: method -> module types it compresses (others are left as they are)
_METHOD_TYPES: dict[str, tuple[str, ...]] = {
    "kronecker": ("Linear", "Embedding", "Conv2d"),
    "gkpd": ("Linear", "Embedding", "Conv2d"),
    "sekron": ("Conv2d",),
    "cp": ("Linear",),
}


@dataclass(frozen=True)
class LayerReport:
    """One compressed layer (a row of :class:`CompressionReport`).

    Attributes
    ----------
    name : str
        Module name in the model (or tensor name in a checkpoint).
    type : str
        Original module type (``"Linear"``, ``"Embedding"``, ``"Conv2d"``).
    new_type : str
        Replacement type (e.g. ``"KroneckerLinear"``).
    shape : tuple of int
        Shape of the original weight.
    params_before, params_after : int
        Parameters of the module (bias included) before and after.
    rel_error : float
        ``||W - W_hat||_F / ||W||_F`` of the weight, as reported by the
        decomposition (optimal for the chosen shapes and rank with GKPD).
    detail : str
        Shapes and rank of the factorization.
    """

    name: str
    type: str
    new_type: str
    shape: tuple[int, ...]
    params_before: int
    params_after: int
    rel_error: float
    detail: str

    @property
    def ratio(self) -> float:
        """``params_before / params_after``."""
        return self.params_before / max(self.params_after, 1)


@dataclass(frozen=True)
class CompressionReport:
    """What :func:`compress` did: per-layer rows and totals.

    Attributes
    ----------
    layers : tuple of LayerReport
        Compressed layers, in module order.
    skipped : tuple of (str, str)
        ``(name, reason)`` for selected layers that were left dense (for
        example, too small to reach the compression target).
    method : str
    compression : float
        Target ratio per layer.
    model_params_before, model_params_after : int
        Parameters of the whole model (0 for a checkpoint).
    seconds : float
        Wall time of the decompositions.
    """

    layers: tuple[LayerReport, ...]
    skipped: tuple[tuple[str, str], ...]
    method: str
    compression: float
    model_params_before: int
    model_params_after: int
    seconds: float

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
        for name, why in self.skipped:
            extra.append(f"skipped {name}: {why}")
        return text + "\n" + "\n".join(extra)

    def __str__(self) -> str:
        return self.to_table()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON-serialisable)."""
        d = asdict(self)
        d["params_before"], d["params_after"] = self.params_before, self.params_after
        return d


def _selected(name: str, include: str | None, exclude: str | None) -> bool:
    if include is not None and re.search(include, name) is None:
        return False
    return not (exclude is not None and re.search(exclude, name) is not None)


def _check_common(method: str, compression: float, include: Any, exclude: Any) -> float:
    if method not in _METHOD_TYPES:
        raise ValueError(f"method must be one of {sorted(_METHOD_TYPES)}, got {method!r}")
    try:
        c = float(compression)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"compression must be a number, got {compression!r}") from exc
    if not (c > 1.0 and math.isfinite(c)):
        raise ValueError(f"compression must be a finite number > 1, got {compression!r}")
    for label, pat in (("include", include), ("exclude", exclude)):
        if pat is not None:
            if not isinstance(pat, str):
                raise TypeError(f"{label} must be a regular expression string, got {pat!r}")
            try:
                re.compile(pat)
            except re.error as exc:
                raise ValueError(f"{label} is not a valid regular expression: {exc}") from exc
    return c


def _n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _plan_of(layer: KroneckerLinear | KroneckerEmbedding) -> KroneckerPlan:
    if layer.plan is None:  # pragma: no cover - from_linear / from_embedding always set it
        raise RuntimeError("layer was not initialised from a dense layer")
    return layer.plan


def _replace(module: nn.Module, method: str, compression: float,
             max_candidates: int) -> tuple[nn.Module, float, str]:
    """The compressed module, its weight's relative error and a description."""
    if method == "cp" and isinstance(module, nn.Linear):
        from ._cp import CPLinear

        cp = CPLinear.from_linear(module, compression=compression, rng=0)
        if cp.plan is None:  # pragma: no cover - from_linear always sets it
            raise RuntimeError("layer was not initialised from a dense layer")
        q = cp.plan
        return cp, q.rel_error, f"{q.out_shape}x{q.in_shape} CP rank {q.rank}"
    if isinstance(module, nn.Linear):
        new = KroneckerLinear.from_linear(module, compression=compression,
                                          max_candidates=max_candidates)
        p = _plan_of(new)
        return new, p.rel_error, f"{p.a_shape}x{p.b_shape} rank {p.rank}"
    if isinstance(module, nn.Embedding):
        emb = KroneckerEmbedding.from_embedding(module, compression=compression,
                                                max_candidates=max_candidates)
        p = _plan_of(emb)
        return emb, p.rel_error, f"{p.a_shape}x{p.b_shape} rank {p.rank}"
    if isinstance(module, nn.Conv2d):
        import tensorfact.nn as tnn

        cls_name = "SeKronConv2d" if method == "sekron" else "GKPDConv2d"
        cls = getattr(tnn, cls_name, None)
        if cls is None:
            raise ValueError(f"{cls_name} is not available in this version of tensorfact.nn")
        conv = cls.from_conv(module, compression=compression)
        err = _conv_error(module, conv)
        return conv, err, repr(conv).split("(", 1)[-1].rstrip(")")[:60]
    raise TypeError(f"cannot compress a {type(module).__name__}")


def _conv_error(old: nn.Conv2d, new: nn.Module) -> float:
    """Relative kernel error, from the layer's own report when it has one."""
    for attr in ("rel_error",):
        val = getattr(new, attr, None)
        if isinstance(val, float):
            return val
    plan = getattr(new, "plan", None)
    if plan is not None and isinstance(getattr(plan, "rel_error", None), float):
        return float(plan.rel_error)
    dense = new.to_dense()  # type: ignore[operator]
    W = old.weight.detach().double()
    return float(torch.linalg.norm(dense.weight.detach().double() - W) / torch.linalg.norm(W))


def compress(model: nn.Module, /, *, method: str = "kronecker", compression: float = 2.0,
             include: str | None = None, exclude: str | None = None,
             max_candidates: int = 4) -> tuple[nn.Module, CompressionReport]:
    """Replace layers of a pretrained model by Kronecker-structured ones.

    A deep copy of ``model`` is made; in it, every selected module is swapped
    for a structured module initialised from its weights by the optimal
    decomposition:

    ========== ============================ ==========================================
    method     module                       replacement
    ========== ============================ ==========================================
    kronecker  ``nn.Linear``                :class:`KroneckerLinear` (GKPD / Van Loan)
    (= gkpd)   ``nn.Embedding``             :class:`KroneckerEmbedding`
               ``nn.Conv2d``                ``GKPDConv2d.from_conv``
    sekron     ``nn.Conv2d``                ``SeKronConv2d.from_conv``
    cp         ``nn.Linear``                :class:`CPLinear` (CP-ALS, achieved error)
    ========== ============================ ==========================================

    For each layer the factor shapes and the rank are chosen so that the
    layer's weight has at most ``1 / compression`` of its parameters, taking
    among a few balanced candidate shapes the one with the smallest optimal
    error. With ``method="cp"`` the weight, reshaped to a 4-way tensor of
    balanced modes, is fitted by :func:`tensorfact.cp_als` (SVD
    initialisation, seeded, deterministic) and the report's error is the one
    achieved, not an optimum; ``nn.Embedding`` and ``nn.Conv2d`` modules are
    left dense (not selected) by this method. Unselected modules are the deep
    copy's and stay bit-identical.

    Parameters
    ----------
    model : torch.nn.Module
        Left unchanged.
    method : {"kronecker", "gkpd", "sekron", "cp"}, default "kronecker"
    compression : float, default 2.0
        Target per-layer ratio of weight parameters, > 1.
    include, exclude : str, optional
        Regular expressions searched (:func:`re.search`) in module names:
        a module is compressed when it matches ``include`` (all do when
        omitted) and does not match ``exclude``.
    max_candidates : int, default 4
        Factor shapes compared per layer (one SVD each).

    Returns
    -------
    new_model : torch.nn.Module
    report : CompressionReport
        Per-layer shapes, parameters and relative errors;
        ``print(report)`` shows a table.

    Raises
    ------
    ValueError
        Unknown method, ``compression <= 1``, a bad regular expression, or
        nothing to compress.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0) and None
    >>> net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    >>> small, report = compress(net, compression=2, exclude=r"^2$")
    >>> type(small[0]).__name__, type(small[2]).__name__
    ('KroneckerLinear', 'Linear')
    >>> bool(torch.equal(small[2].weight, net[2].weight))
    True
    >>> report.layers[0].params_after <= report.layers[0].params_before
    True
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    c = _check_common(method, compression, include, exclude)
    types = _METHOD_TYPES[method]
    new = copy.deepcopy(model)
    chosen = [(name, mod) for name, mod in new.named_modules()
              if name and type(mod).__name__ in types
              and isinstance(mod, (nn.Linear, nn.Embedding, nn.Conv2d))
              and _selected(name, include, exclude)]
    if not chosen:
        raise ValueError(
            f"no {'/'.join(types)} module of the model matches include={include!r}, "
            f"exclude={exclude!r}")
    before = _n_params(model)
    rows, skipped = [], []
    t0 = time.perf_counter()
    for name, mod in chosen:
        try:
            rep, err, detail = _replace(mod, method, c, max_candidates)
        except ValueError as exc:
            skipped.append((name, str(exc)))
            continue
        parent_name, _, child = name.rpartition(".")
        parent = new.get_submodule(parent_name) if parent_name else new
        setattr(parent, child, rep)
        rows.append(LayerReport(name=name, type=type(mod).__name__, new_type=type(rep).__name__,
                                shape=tuple(int(s) for s in mod.weight.shape),
                                params_before=_n_params(mod), params_after=_n_params(rep),
                                rel_error=float(err), detail=detail))
    seconds = time.perf_counter() - t0
    report = CompressionReport(layers=tuple(rows), skipped=tuple(skipped), method=method,
                               compression=c, model_params_before=before,
                               model_params_after=_n_params(new), seconds=seconds)
    return new, report


# --------------------------------------------------------------------------- #
# checkpoints (the ``tensorfact compress`` command)
# --------------------------------------------------------------------------- #
def compress_state_dict(tensors: Mapping[str, np.ndarray], /, *, compression: float = 2.0,
                        include: str | None = None, exclude: str | None = None,
                        method: str = "kronecker", max_candidates: int = 4
                        ) -> tuple[dict[str, np.ndarray], CompressionReport]:
    """Factor every selected 2-D weight of a checkpoint into Kronecker factors.

    A tensor ``X.weight`` of shape ``(m, n)`` becomes ``X.kron_a`` of shape
    ``(rank, m1, n1)`` and ``X.kron_b`` of shape ``(rank, m2, n2)`` (the
    parameter names of :class:`KroneckerLinear`, so a model whose layer ``X``
    is a KroneckerLinear of these shapes loads them directly); a tensor not
    ending in ``.weight`` gets the suffixes appended. Everything else
    (biases, norms, 1-D and N-D tensors, unselected matrices) is copied as it
    is. Factors keep the tensor's dtype; the decomposition runs in float64.

    Parameters
    ----------
    tensors : mapping of str to numpy.ndarray
        E.g. ``safetensors.numpy.load_file(path)``.
    compression, include, exclude, max_candidates
        As in :func:`compress` (patterns match tensor names).
    method : {"kronecker", "gkpd"}

    Returns
    -------
    new_tensors : dict of str to numpy.ndarray
    report : CompressionReport
    """
    if method not in ("kronecker", "gkpd"):
        raise ValueError(f"method must be 'kronecker' or 'gkpd' for checkpoints, got {method!r}")
    c = _check_common(method, compression, include, exclude)
    from .. import nearest_kronecker

    out: dict[str, np.ndarray] = {}
    rows, skipped = [], []
    t0 = time.perf_counter()
    for name, arr in tensors.items():
        arr = np.asarray(arr)
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.floating) or not _selected(
                name, include, exclude):
            out[name] = arr
            continue
        W = arr.astype(np.float64)
        try:
            plan = plan_kronecker(W, compression=c, max_candidates=max_candidates)
        except ValueError as exc:
            skipped.append((name, str(exc)))
            out[name] = arr
            continue
        res = nearest_kronecker(W, plan.a_shape, plan.b_shape, rank=plan.rank)
        A, Bf = (np.ascontiguousarray(np.asarray(f).astype(arr.dtype)) for f in res.kt.factors)
        stem = name[: -len(".weight")] if name.endswith(".weight") else name
        out[f"{stem}.kron_a"], out[f"{stem}.kron_b"] = A, Bf
        rows.append(LayerReport(name=name, type="matrix", new_type="kronecker",
                                shape=tuple(int(s) for s in arr.shape),
                                params_before=int(arr.size), params_after=int(A.size + Bf.size),
                                rel_error=float(res.rel_error),
                                detail=f"{plan.a_shape}x{plan.b_shape} rank {plan.rank}"))
    if not rows and not skipped:
        raise ValueError(
            f"no 2-D floating tensor matches include={include!r}, exclude={exclude!r}")
    report = CompressionReport(layers=tuple(rows), skipped=tuple(skipped), method=method,
                               compression=c, model_params_before=0, model_params_after=0,
                               seconds=time.perf_counter() - t0)
    return out, report


def run_cli(args: Any) -> str:
    """Body of ``tensorfact compress``; returns the text the command prints."""
    from pathlib import Path

    from safetensors import SafetensorError
    from safetensors.numpy import load_file, save_file

    src = Path(args.checkpoint)
    if not src.exists():
        raise SystemExit(f"tensorfact: no such file: {src}")
    if src.suffix != ".safetensors" or Path(args.out).suffix != ".safetensors":
        raise SystemExit("tensorfact: compress reads and writes .safetensors files only")
    try:
        tensors = load_file(str(src))
    except (SafetensorError, OSError, TypeError, ValueError) as exc:
        raise SystemExit(f"tensorfact: cannot read {src} as safetensors: {exc}") from exc
    new, report = compress_state_dict(tensors, compression=args.compression,
                                      include=args.include, exclude=args.exclude,
                                      method=args.method)
    meta = {"tensorfact_compress": json.dumps(report.to_dict())}
    save_file(new, str(args.out), metadata=meta)
    report_path = Path(args.report) if args.report else Path(args.out).with_suffix(".json")
    report_path.write_text(json.dumps(report.to_dict(), indent=2) + "\n", encoding="utf-8")
    return f"{report.to_table()}\nwrote {args.out} and {report_path}"
