"""Running one bad-input case and classifying what happened.

A :class:`Case` is one call of a public entry point with one perturbed
argument. :func:`run_case` calls it under a time limit, snapshots its inputs
before and after, and classifies the outcome:

``ok-result``
    a result that passes the case's check (recomputed from the returned model,
    finite output);
``ok-error``
    ``ValueError``/``TypeError``/``OSError``/``FloatingPointError`` raised by
    tensorfact itself (not passed through from a dependency) whose message
    names the offending argument;
``crash``
    any other exception type, or an error raised inside a dependency (the
    dependency's words reach the user);
``silent-wrong``
    a result that fails its check (non-finite, or not what it claims);
``unnamed-error``
    an accepted exception type whose message does not name the argument;
``rejected-valid``
    an error for an input the documentation accepts;
``accepted-invalid``
    a result for an input that must be refused;
``mutated``
    an input differs after the call;
``hang``
    the call ran past the time limit.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import re
import signal
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

import tensorfact

OUTCOMES = ("ok-result", "ok-error", "crash", "silent-wrong", "unnamed-error",
            "rejected-valid", "accepted-invalid", "mutated", "hang")
GOOD = ("ok-result", "ok-error")
ALLOWED_ERRORS = (ValueError, TypeError, OSError, FloatingPointError)
TIME_LIMIT = 60.0
_PACKAGE_DIR = str(Path(tensorfact.__file__).resolve().parent)


class CheckFailed(AssertionError):
    """A result that is not what the call claims (raised by a case's check)."""


def require(cond: Any, why: str) -> None:
    """Raise :class:`CheckFailed` with ``why`` unless ``cond``."""
    if not cond:
        raise CheckFailed(why)


@dataclass
class Case:
    """One call of a public entry point.

    ``expect`` is ``"ok"`` (the input is valid: a result is required),
    ``"error"`` (the input must be refused) or ``"either"``. ``names`` are
    the words an error message may use to name the offending argument.
    ``inputs`` are the objects the call must leave unchanged.
    """

    target: str
    family: str
    label: str
    call: Callable[[], Any]
    names: tuple[str, ...]
    expect: str = "either"
    inputs: tuple[Any, ...] = ()
    check: Callable[[Any], None] | None = None
    files: tuple[Path, ...] = ()

    def __repr__(self) -> str:
        return f"Case({self.target}/{self.family}: {self.label}, expect={self.expect})"


@dataclass
class Outcome:
    """What one case did."""

    case: Case
    kind: str
    detail: str = ""
    seconds: float = 0.0
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def describe(self) -> str:
        return (f"{self.case.target}/{self.case.family} [{self.case.label}] -> {self.kind}: "
                f"{self.detail}")


# --------------------------------------------------------------------------- snapshots
def snapshot(obj: Any, depth: int = 0) -> Any:
    """A deep, comparable copy of ``obj`` (arrays, tensors, containers, modules)."""
    if depth > 6:
        return ("deep", id(obj))
    if isinstance(obj, np.ma.MaskedArray):
        return ("masked", np.array(obj.data, copy=True), np.array(obj.mask, copy=True),
                obj.flags.writeable)
    if isinstance(obj, np.ndarray):
        return ("ndarray", np.array(obj, copy=True), obj.flags.writeable)
    if type(obj).__module__.split(".")[0] == "torch":
        import torch

        if isinstance(obj, torch.Tensor):
            return ("torch", obj.detach().clone(), obj.requires_grad)
        if isinstance(obj, torch.nn.Module):
            return ("module", repr(obj),
                    {k: v.detach().clone() for k, v in obj.state_dict().items()},
                    {k: p.requires_grad for k, p in obj.named_parameters()})
    if isinstance(obj, tensorfact.CPTensor):
        return ("cp", snapshot(obj.weights, depth + 1),
                [snapshot(A, depth + 1) for A in obj.factors])
    if isinstance(obj, tensorfact.SparseTensor):
        return ("sparse", snapshot(obj.coords, depth + 1), snapshot(obj.values, depth + 1),
                obj.shape)
    if isinstance(obj, (tensorfact.KroneckerTensor, tensorfact.SeKronTensor)):
        return ("kron", [snapshot(F, depth + 1) for F in obj.factors])
    if isinstance(obj, (list, tuple)):
        return (type(obj).__name__, [snapshot(v, depth + 1) for v in obj])
    if isinstance(obj, dict):
        return ("dict", {k: snapshot(v, depth + 1) for k, v in obj.items()})
    if isinstance(obj, Path):
        return ("path", _file_state(obj))
    if hasattr(obj, "__array_namespace__") and hasattr(obj, "shape"):
        try:
            return ("array", np.array(tensorfact._backend.to_numpy(obj), copy=True))
        except Exception:
            return ("opaque", id(obj))
    return ("value", obj if _hashable_plain(obj) else id(obj))


def _hashable_plain(obj: Any) -> bool:
    return isinstance(obj, (type(None), bool, int, float, complex, str, bytes, np.generic))


def _file_state(p: Path) -> Any:
    try:
        if p.is_dir():
            return ("dir", sorted(x.name for x in p.iterdir()))
        return ("file", p.read_bytes())
    except OSError:
        return ("missing",)


def same(a: Any, b: Any) -> bool:
    """Whether two snapshots are equal (NaN equal to NaN)."""
    if type(a) is not type(b):
        return False
    if isinstance(a, np.ndarray):
        if a.shape != b.shape or a.dtype != b.dtype:
            return False
        if a.dtype.kind in "fc":
            return bool(np.array_equal(a, b, equal_nan=True))
        try:
            return bool(np.array_equal(a, b))
        except Exception:
            return all(x is y or x == y for x, y in zip(a.ravel(), b.ravel()))
    if type(a).__module__.split(".")[0] == "torch":
        import torch

        if isinstance(a, torch.Tensor):
            return (a.shape == b.shape and a.dtype == b.dtype
                    and bool(torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))
                             if a.is_floating_point() else torch.equal(a, b)))
    if isinstance(a, (list, tuple)):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, dict):
        return a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, float) and math.isnan(a):
        return isinstance(b, float) and math.isnan(b)
    try:
        return bool(a == b)
    except Exception:
        return a is b


# --------------------------------------------------------------------------- time limit
class _Timeout(BaseException):
    """Raised in the main thread when a case runs past its time limit."""


@contextlib.contextmanager
def _time_limit(seconds: float):
    if not hasattr(signal, "setitimer") or not _main_thread():
        yield
        return

    def handler(signum, frame):
        raise _Timeout()

    old = signal.signal(signal.SIGALRM, handler)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


# --------------------------------------------------------------------------- classification
def _raised_in_dependency(exc: BaseException) -> str | None:
    """The file of the innermost frame if it lies outside tensorfact (else None)."""
    tb = traceback.extract_tb(exc.__traceback__)
    if not tb:
        return None
    last = tb[-1].filename
    if os.path.realpath(last).startswith(_PACKAGE_DIR):
        return None
    if "/tests/robustness/" in last:  # the case's own helper (a user callback, ...)
        return None
    return f"{Path(last).name}:{tb[-1].lineno}"


def _names_argument(msg: str, names: Sequence[str]) -> bool:
    """Whether ``msg`` mentions one of ``names`` as a word (``factors[1]`` names ``factors``)."""
    for n in names:
        if not n:
            continue
        pattern = r"(?<![A-Za-z0-9_])" + re.escape(n) + r"(?![A-Za-z0-9_])"
        if re.search(pattern, msg):
            return True
    return False


def classify_error(case: Case, exc: BaseException) -> tuple[str, str]:
    text = f"{type(exc).__module__}.{type(exc).__name__}: {str(exc)[:300]}"
    if not isinstance(exc, ALLOWED_ERRORS):
        return "crash", text
    where = _raised_in_dependency(exc)
    module = type(exc).__module__
    if where is not None or not module.startswith(("builtins", "tensorfact", "_targets")):
        if where is not None:
            text += f" (raised in {where})"
        return "crash", text
    if case.expect == "ok":
        return "rejected-valid", text
    if not _names_argument(str(exc), case.names):
        return "unnamed-error", text + f" (expected one of {case.names})"
    return "ok-error", text


def run_case(case: Case, *, time_limit: float = TIME_LIMIT) -> Outcome:
    """Call ``case`` and classify the outcome (never raises, except on Ctrl-C)."""
    before = [snapshot(x) for x in case.inputs]
    t0 = time.perf_counter()
    caught: list[warnings.WarningMessage] = []
    result: Any = None
    exc: BaseException | None = None
    sink = io.StringIO()
    try:
        with _time_limit(time_limit), warnings.catch_warnings(record=True) as caught, \
                contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            warnings.simplefilter("always")
            result = case.call()
    except _Timeout:
        return Outcome(case, "hang", f"no answer after {time_limit:.0f} s",
                       time.perf_counter() - t0)
    except KeyboardInterrupt:
        raise
    except BaseException as e:  # noqa: BLE001 - classified below
        exc = e
    seconds = time.perf_counter() - t0
    warned = tuple(f"{w.category.__name__}: {str(w.message)[:120]}" for w in caught)
    if seconds > time_limit:
        return Outcome(case, "hang", f"took {seconds:.0f} s", seconds, warned)
    after = [snapshot(x) for x in case.inputs]
    for i, (a, b) in enumerate(zip(before, after)):
        if not same(a, b):
            return Outcome(case, "mutated", f"input {i} changed", seconds, warned)
    if exc is not None:
        kind, detail = classify_error(case, exc)
        return Outcome(case, kind, detail, seconds, warned)
    if case.expect == "error":
        return Outcome(case, "accepted-invalid", f"returned {type(result).__name__}", seconds,
                       warned)
    if case.check is not None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                case.check(result)
        except CheckFailed as e:
            return Outcome(case, "silent-wrong", str(e)[:300], seconds, warned)
        except Exception as e:  # noqa: BLE001 - the result is unusable
            return Outcome(case, "silent-wrong",
                           f"result unusable: {type(e).__name__}: {str(e)[:200]}", seconds,
                           warned)
    return Outcome(case, "ok-result", "", seconds, warned)


# --------------------------------------------------------------------------- tables
def count_table(outcomes: Sequence[Outcome]) -> dict[str, dict[str, int]]:
    """``{target: {outcome: count}}`` with every outcome present."""
    table: dict[str, dict[str, int]] = {}
    for o in outcomes:
        row = table.setdefault(o.case.target, dict.fromkeys(OUTCOMES, 0))
        row[o.kind] += 1
    return dict(sorted(table.items()))


def format_table(table: dict[str, dict[str, int]]) -> str:
    """A plain-text table of counts, one row per target and a total row."""
    short = {"ok-result": "ok-res", "ok-error": "ok-err", "silent-wrong": "silent",
             "unnamed-error": "unnamed", "rejected-valid": "rej-val",
             "accepted-invalid": "acc-inv"}
    cols = [short.get(k, k) for k in OUTCOMES]
    width = max([len("target"), len("TOTAL")] + [len(t) for t in table])
    lines = [f"{'target':<{width}} " + " ".join(f"{c:>8}" for c in cols) + f" {'cases':>6}"]
    total = dict.fromkeys(OUTCOMES, 0)
    for name, row in table.items():
        for k in OUTCOMES:
            total[k] += row[k]
        lines.append(f"{name:<{width}} " + " ".join(f"{row[k]:>8}" for k in OUTCOMES)
                     + f" {sum(row.values()):>6}")
    lines.append(f"{'TOTAL':<{width}} " + " ".join(f"{total[k]:>8}" for k in OUTCOMES)
                 + f" {sum(total.values()):>6}")
    return "\n".join(lines)
