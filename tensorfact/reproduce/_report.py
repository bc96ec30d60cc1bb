"""Output of the SPALS reproduction: header, tables, checks and plots.

Every table cell is formatted from the JSON result (``format_tables`` reads
nothing else), so the JSON holds every number the tables print.
"""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path
from typing import Any

__all__ = ["format_tables", "machine_info", "make_checks", "plot_results", "print_report"]


# --------------------------------------------------------------------------- #
# machine
# --------------------------------------------------------------------------- #
def machine_info() -> dict[str, Any]:
    """CPU model, cores, platform and the thread pools in effect (call inside the pin)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:  # pragma: no cover - non-Linux
        pass
    usable: int | None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - non-Linux
        usable = os.cpu_count()
    pools: list[dict[str, Any]] = []
    try:
        from threadpoolctl import threadpool_info

        pools = [dict(api=p.get("internal_api"), threads=p.get("num_threads"))
                 for p in threadpool_info()]
    except ImportError:  # pragma: no cover - threadpoolctl missing
        pass
    try:
        import numba

        pools.append(dict(api="numba", threads=int(numba.get_num_threads())))
    except ImportError:  # pragma: no cover - numba missing
        pass
    import numpy as np

    return dict(cpu_model=cpu, cpu_count=os.cpu_count(), cpus_usable=usable,
                platform=platform.platform(), python=platform.python_version(),
                numpy=np.__version__, thread_pools=pools)


# --------------------------------------------------------------------------- #
# tables
# --------------------------------------------------------------------------- #
def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    """Lines of a markdown table."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(cells) + " |" for cells in body])


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None or not math.isfinite(seconds) else f"{1e3 * seconds:.1f}"


def _s(seconds: float | None, none: str = "—") -> str:
    return none if seconds is None else f"{seconds:.2f}"


def _shape(shape: list[int]) -> str:
    return "x".join(str(s) for s in shape)


_COMPARE_HEADER = ["method", "init", "time/iter (ms)", "speed-up/iter vs ALS",
                   "iters (median, max)", "setup (s)", "time to stop (s)",
                   "final error (median)",
                   "final error (best)", "final <= 1.1 floor", "time to 1.01 best (s)",
                   "time to 1.1 floor (s)"]


def _compare_rows(summary: list[dict[str, Any]]) -> list[list[str]]:
    als = [s for s in summary if s["alpha"] is None]
    body = []
    for s in summary:
        ref = next((a for a in als if a["init"] == s["init"]), als[0] if als else None)
        speed = ("—" if ref is None or not s["time_per_iter"] > 0
                 else f"{ref['time_per_iter'] / s['time_per_iter']:.1f}x")
        n = s["runs"]
        body.append([
            s["method"], s["init"] + (f" x{n}" if n > 1 else ""), _ms(s["time_per_iter"]),
            speed, f"{s['n_iter_median']:g}, {s['n_iter_max']}"
            + ("" if s["converged"] == n else f" ({n - s['converged']} capped)"),
            _s(s["setup_time_median"]), _s(s["total_time_median"]),
            f"{s['final_error_median']:.5f}",
            f"{s['final_error_best']:.5f}", f"{s['within_floor']}/{n}",
            f"{_s(s['time_to_1pct_median'], 'never')} ({s['reached_1pct']}/{n})",
            f"{_s(s['time_to_floor_median'], 'never')} ({s['reached_floor']}/{n})",
        ])
    return body


def format_tables(result: dict[str, Any]) -> str:
    """The header and one markdown table per experiment, from the JSON result."""
    lines = list(result["header"])
    exp = result["experiments"]
    for block in exp.get("dense", []):
        lines += ["", f"Dense {_shape(block['shape'])}, rank {block['rank']}, "
                      f"sigma = {block['sigma']:g}: noise floor {block['noise_floor']:.5f}, "
                      f"best final error {block['best_final_error']:.5f}",
                  *_md_table(_COMPARE_HEADER, _compare_rows(block["summary"]))]
    sp = exp.get("sparse")
    if sp:
        lines += ["", f"Sparse {_shape(sp['shape'])}, {sp['nnz']} nonzeros, rank {sp['rank']}, "
                      f"noise {sp['noise']:g}, skew {sp['skew']:g}: noise floor "
                      f"{sp['noise_floor']:.5f}, best final error {sp['best_final_error']:.5f}",
                  *_md_table(_COMPARE_HEADER, _compare_rows(sp["summary"]))]
    sc = exp.get("scaling")
    if sc:
        body = [[str(r["n"]), r["dtype"], str(r["n_samples"]), _ms(r["als_time_per_iter"]),
                 _ms(r["spals_time_per_iter"]), f"{r['speedup']:.1f}x"] for r in sc["rows"]]
        lines += ["", f"Scaling: time per sweep on n x n x n, rank {sc['rank']}, "
                      f"sigma = {sc['sigma']:g}, SPALS alpha = {sc['alpha']:g}, "
                      f"median of {sc['iters']} sweeps from one shared random start",
                  *_md_table(["n", "dtype", "SPALS samples/update", "ALS time/iter (ms)",
                              "SPALS time/iter (ms)", "speed-up"], body)]
    am = exp.get("amazon")
    if am:
        body = [[r["method"], _ms(r["time_per_iter"]), f"{r['n_iter']}"
                 + ("" if r["converged"] else " (capped)"), _s(r["total_time"]),
                 f"{r['final_error']:.5f}", f"{1 - r['final_error']:.5f}",
                 f"{r['bytes_read_per_iter'] / 2**20:.1f}", f"{r['peak_rss_mib']:.0f}"]
                for r in am["runs"]]
        lines += ["", f"Amazon-shaped sparse {_shape(am['shape'])}, {am['nnz']} nonzeros on "
                      f"disk, rank {am['rank']}, noise {am['noise']:g}: noise floor "
                      f"{am['noise_floor']:.5f}",
                  *_md_table(["method", "time/iter (ms)", "iters", "time to stop (s)",
                              "final error", "fit", "MiB read/iter", "peak RSS (MiB)"], body)]
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# checks
# --------------------------------------------------------------------------- #
def _check(name: str, value: float | None, op: str, target: float, unit: str = ""
           ) -> dict[str, Any]:
    """A check; ``value`` may be ``math.inf`` (stored as ``None``, printed "inf")."""
    ok = value is not None and not math.isnan(value) and (
        value >= target if op == ">=" else value <= target)
    if value is None or math.isnan(value):
        text = "undefined (neither got there)"
    else:
        text = "inf" if math.isinf(value) else f"{value:.4g}{unit}"
    return dict(name=name, target=f"{op} {target:g}{unit}", op=op, threshold=target,
                value=None if value is None or not math.isfinite(value) else value,
                value_text=text, unit=unit, verdict="PASS" if ok else "FAIL")


def _shared(summary: list[dict[str, Any]], alpha: float | None, kind: str = "shared"
            ) -> dict[str, Any] | None:
    return next((s for s in summary if s["alpha"] == alpha and s["init"].startswith(kind)),
                None)


def _start_kind(summary: list[dict[str, Any]]) -> str:
    """``"shared"`` when the runs had shared starts, else ``"own"`` (``seeds=0``)."""
    return "shared" if any(s["init"].startswith("shared") for s in summary) else "own"


def _time_ratio(slow: float | None, fast: float | None) -> float | None:
    """``slow / fast`` for median times where ``None`` means never (infinitely late)."""
    a = math.inf if slow is None else slow
    b = math.inf if fast is None else fast
    if math.isinf(a) and math.isinf(b):
        return None
    return math.inf if b == 0 else a / b


def _speedup(als: dict[str, Any], s: dict[str, Any]) -> float | None:
    return als["time_per_iter"] / s["time_per_iter"] if s["time_per_iter"] > 0 else None


def _compare_checks(tag: str, summary: list[dict[str, Any]], floor: float | None,
                    targets: dict[str, float], speedup_key: str) -> list[dict[str, Any]]:
    checks: list[dict[str, Any]] = []
    kind = _start_kind(summary)
    als = _shared(summary, None, kind)
    sp = [s for s in summary if s["alpha"] is not None and s["init"].startswith(kind)]
    if als is None or not sp:
        return checks
    als_best = min(a["final_error_best"] for a in summary if a["alpha"] is None)
    if floor is not None:
        best = min(s["final_error_best"] for s in summary if s["alpha"] is not None)
        checks.append(_check(f"{tag}: best SPALS final error / noise floor", best / floor,
                             "<=", 1.1))
    for s in sp:
        checks.append(_check(
            f"{tag}: {s['method']} / exact ALS, median final error over the {kind} starts",
            s["final_error_median"] / als["final_error_median"], "<=", targets["error_ratio"]))
        checks.append(_check(f"{tag}: {s['method']} / exact ALS, best final error",
                             s["final_error_best"] / als_best, "<=", targets["error_ratio"]))
    fastest = min(sp, key=lambda s: s["alpha"])
    checks.append(_check(f"{tag}: {fastest['method']} time/iter speed-up vs exact ALS",
                         _speedup(als, fastest), ">=", targets[speedup_key], "x"))
    checks.append(_check(
        f"{tag}: time to 1.1 floor, exact ALS / {fastest['method']} (medians over the "
        f"{kind} starts, never = inf)",
        _time_ratio(als["time_to_floor_median"], fastest["time_to_floor_median"]), ">=", 1.0,
        "x"))
    return checks


def make_checks(result: dict[str, Any], targets: dict[str, float]) -> list[dict[str, Any]]:
    """Checks of the paper's claims: target, measured value, PASS/FAIL."""
    checks: list[dict[str, Any]] = []
    exp = result["experiments"]
    for block in exp.get("dense", []):
        checks += _compare_checks(f"dense sigma={block['sigma']:g}", block["summary"],
                                  block["noise_floor"], targets, "dense_speedup")
    sp = exp.get("sparse")
    if sp:
        checks += _compare_checks("sparse", sp["summary"], sp["noise_floor"], targets,
                                  "sparse_speedup")
        kind = _start_kind(sp["summary"])
        als = _shared(sp["summary"], None, kind)
        for s in sp["summary"]:
            if als is None or s["alpha"] is None or not s["init"].startswith(kind):
                continue
            fit_als = 1 - als["final_error_median"]
            checks.append(_check(
                f"sparse: {s['method']} median fit, relative change from sparse ALS's",
                (1 - s["final_error_median"] - fit_als) / fit_als, ">=", -targets["fit_loss"]))
    sc = exp.get("scaling")
    rows = [r for r in sc["rows"] if r["dtype"] == "float64"] if sc else []
    if len(rows) >= 2:
        a, b = rows[-2], rows[-1]
        growth = (b["n"] / a["n"]) ** targets["scaling_exponent"]
        checks.append(_check(f"scaling n={a['n']} -> {b['n']}: SPALS time/iter growth "
                             f"(exact ALS: {b['als_time_per_iter'] / a['als_time_per_iter']:.1f}x)",
                             b["spals_time_per_iter"] / a["spals_time_per_iter"], "<=",
                             round(growth, 2), "x"))
    am = exp.get("amazon")
    if am:
        als = am["runs"][0]
        for r in am["runs"][1:]:
            checks.append(_check(f"amazon: {r['method']} time/iter speed-up vs sparse ALS",
                                 als["time_per_iter"] / r["time_per_iter"], ">=",
                                 targets["sparse_speedup"], "x"))
            checks.append(_check(f"amazon: {r['method']} final error / sparse ALS's",
                                 r["final_error"] / als["final_error"], "<=",
                                 targets["error_ratio"]))
    return checks


# --------------------------------------------------------------------------- #
# plots
# --------------------------------------------------------------------------- #
def plot_results(result: dict[str, Any], out: Path, scale: str) -> list[str]:
    """Write the error-versus-time and scaling PNGs to ``out``; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    exp = result["experiments"]
    panels = [(f"dense {_shape(b['shape'])}, rank {b['rank']}, sigma = {b['sigma']:g}", b)
              for b in exp.get("dense", [])]
    if exp.get("sparse"):
        sp = exp["sparse"]
        panels.append((f"sparse {_shape(sp['shape'])} ({sp['nnz']} nnz), rank {sp['rank']}",
                       sp))
    if exp.get("amazon"):
        am = exp["amazon"]
        panels.append((f"Amazon-shaped {_shape(am['shape'])} ({am['nnz']} nnz on disk), "
                       f"rank {am['rank']}", am))
    files = []
    if panels:
        fig, axes = plt.subplots(len(panels), 1, figsize=(9.0, 3.4 * len(panels)),
                                 squeeze=False, layout="constrained")
        for ax, (title, block) in zip(axes[:, 0], panels):
            _error_panel(ax, title, block)
        files.append(_save(plt, fig, out / f"spals_error_vs_time_{scale}.png"))
    sc = exp.get("scaling")
    if sc:
        fig, ax = plt.subplots(figsize=(7.5, 3.8), layout="constrained")
        ns = [r["n"] for r in sc["rows"]]
        ax.loglog(ns, [r["als_time_per_iter"] for r in sc["rows"]], "s-", label="exact ALS")
        ax.loglog(ns, [r["spals_time_per_iter"] for r in sc["rows"]], "o-",
                  label=f"SPALS alpha={sc['alpha']:g}")
        n0, t0 = ns[0], sc["rows"][0]["als_time_per_iter"]
        ax.loglog(ns, [t0 * (n / n0) ** 3 for n in ns], "k:", lw=0.8, label="slope n^3")
        for r in sc["rows"]:
            if r["dtype"] != "float64":
                ax.annotate(r["dtype"], (r["n"], r["als_time_per_iter"]), fontsize=7)
        ax.set_xlabel("n (tensor n x n x n)")
        ax.set_ylabel("time per sweep (s)")
        ax.set_title(f"time per sweep, n x n x n, rank {sc['rank']}, sigma = {sc['sigma']:g}, "
                     f"SPALS alpha = {sc['alpha']:g}", fontsize=9)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))
        files.append(_save(plt, fig, out / f"spals_scaling_{scale}.png"))
    return files


def _error_panel(ax: Any, title: str, block: dict[str, Any]) -> None:
    methods = list(dict.fromkeys(r["method"] for r in block["runs"]))
    colours = {m: f"C{i}" for i, m in enumerate(methods)}
    labelled: set[tuple[str, bool]] = set()
    for r in block["runs"]:
        if not r["curve_time"]:
            continue
        own = r["init"].startswith("own")
        key = (r["method"], own)
        label = None if key in labelled else f"{r['method']}, {r['init']}"
        labelled.add(key)
        t = [max(x, 1e-4) for x in r["curve_time"]]
        ax.plot(t, r["curve_error"], "--" if own else "-", color=colours[r["method"]],
                lw=1.0, alpha=0.85, label=label)
    ax.axhline(block["noise_floor"], color="k", ls=":", lw=1.0,
               label=f"noise floor {block['noise_floor']:.4g}")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("time since the call (s), exact-error evaluation excluded")
    ax.set_ylabel("relative error (exact)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0))


def _save(plt: Any, fig: Any, path: Path) -> str:
    """Write and close ``fig`` (legends outside the axes included); return the file name."""
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path.name


# --------------------------------------------------------------------------- #
# console
# --------------------------------------------------------------------------- #
def format_checks(checks: list[dict[str, Any]]) -> list[str]:
    """One line per check: verdict, name, target and measured value."""
    lines = []
    for c in checks:
        lines.append(f"check {c['verdict']}: {c['name']}: target {c['target']}, "
                     f"measured {c['value_text']}")
    return lines


def print_report(result: dict[str, Any]) -> None:
    """Print the tables, the checks, the notes and where the files went."""
    print(result["tables_markdown"])
    print()
    for line in format_checks(result["checks"]):
        print(line)
    for note in result["notes"]:
        print(f"note: {note}")
    files = [result["json"], *result.get("files", [])]
    print(f"wrote {', '.join(files)} in {result['out']} ({result['total_seconds']:.1f} s, "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB)")
