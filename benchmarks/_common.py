"""Shared helpers for the benchmark scripts in ``benchmarks/``.

Import this module FIRST in a benchmark script, before NumPy or anything that
imports NumPy, and call :func:`pin_threads` at the very top::

    import _common  # noqa: I001  (must precede numpy)
    N_THREADS = _common.pin_threads()   # sets OMP/OPENBLAS/MKL_NUM_THREADS
    import numpy as np

``pin_threads`` sets the BLAS environment variables (effective only when NumPy
has not yet been imported) and, once NumPy is loaded, :func:`blas_limits`
returns a ``threadpoolctl`` context manager that pins the loaded BLAS pools to
the same count for the timed region.

Helpers
-------
- :func:`pin_threads` / :func:`blas_limits`: thread pinning.
- :func:`time_call`: median wall time of a callable over repeats.
- :func:`peak_memory`: tracemalloc peak (bytes) of a call, beyond the memory
  allocated when the call starts. NumPy reports its buffers to tracemalloc, so
  this counts array temporaries; it does not see memory allocated inside BLAS
  or by libraries that bypass Python's allocator hooks (e.g. torch).
- :func:`machine_info`: CPU, thread count and library versions for the JSON.
- :func:`write_json`: write ``benchmarks/results/<name>.json``.
- :func:`format_table`: plain-text/markdown table.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import sys
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"

_THREAD_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "NUMBA_NUM_THREADS",
)


def pin_threads(n_threads: int | None = None) -> int:
    """Set the BLAS/OpenMP thread environment variables; return the count.

    Defaults to the number of cores this process may run on. Must run before
    NumPy is imported to affect the environment-variable route; a warning is
    printed to stderr otherwise (``blas_limits`` still pins at run time).
    """
    if n_threads is None:
        try:
            n_threads = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - non-Linux
            n_threads = os.cpu_count() or 1
    already = all(os.environ.get(var) == str(n_threads) for var in _THREAD_VARS)
    for var in _THREAD_VARS:
        os.environ[var] = str(n_threads)
    if "numpy" in sys.modules and not already:
        print(
            "warning: numpy was imported before pin_threads(); relying on threadpoolctl",
            file=sys.stderr,
        )
    return n_threads


def blas_limits(n_threads: int) -> Any:
    """Return a threadpoolctl context manager limiting BLAS/OpenMP pools."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=n_threads)


def blas_info() -> list[dict[str, Any]]:
    """Describe the loaded thread pools (BLAS library, version, threads)."""
    from threadpoolctl import threadpool_info

    keys = ("user_api", "internal_api", "version", "num_threads", "threading_layer")
    return [{k: p.get(k) for k in keys} for p in threadpool_info()]


def time_call(fn: Callable[[], Any], *, repeat: int = 3, warmup: int = 0) -> dict[str, Any]:
    """Run ``fn`` ``warmup + repeat`` times; return median/min seconds and all times."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def peak_memory(fn: Callable[[], Any]) -> tuple[Any, int]:
    """Call ``fn`` under tracemalloc; return ``(result, peak_extra_bytes)``.

    ``peak_extra_bytes`` is the tracemalloc peak minus the traced memory at the
    start of the call, i.e. the largest amount of memory the call held beyond
    what already existed (the input tensor is allocated before, so excluded).
    tracemalloc slows pure-Python code; never combine it with timing runs.
    """
    was_tracing = tracemalloc.is_tracing()
    if not was_tracing:
        tracemalloc.start()
    tracemalloc.reset_peak()
    base, _ = tracemalloc.get_traced_memory()
    try:
        result = fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        if not was_tracing:
            tracemalloc.stop()
    return result, max(peak - base, 0)


def machine_info(n_threads: int) -> dict[str, Any]:
    """Machine and library description stored next to the numbers."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": n_threads,
        "time_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    info["cpu_model"] = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for mod in ("numpy", "scipy", "tensorly", "pyttb", "torch", "tensorfact"):
        m = sys.modules.get(mod)
        if m is not None:
            versions[mod] = getattr(m, "__version__", "?")
    info["versions"] = versions
    try:
        info["blas"] = blas_info()
    except ImportError:  # pragma: no cover - threadpoolctl missing
        pass
    return info


def write_json(name: str, payload: dict[str, Any], *, out: Path | None = None) -> Path:
    """Write ``payload`` to ``benchmarks/results/<name>.json`` (or ``out``)."""
    path = out if out is not None else RESULTS_DIR / f"{name}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=_jsonable) + "\n", encoding="utf-8")
    return path


def _jsonable(obj: Any) -> Any:
    if hasattr(obj, "item"):
        return obj.item()
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def format_table(
    rows: Sequence[Sequence[Any]], header: Sequence[str], *, markdown: bool = False
) -> str:
    """Format rows as an aligned text table, or a GitHub markdown table."""
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in r] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
        return "\n".join(lines)
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    out = ["  ".join(c.rjust(w) for c, w in zip(r, widths)) for r in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def _fmt(c: Any) -> str:
    if c is None:
        return "-"
    if isinstance(c, float):
        if c == 0 or 1e-3 <= abs(c) < 1e4:
            return f"{c:.3g}" if abs(c) < 10 else f"{c:.1f}"
        return f"{c:.2e}"
    return str(c)
