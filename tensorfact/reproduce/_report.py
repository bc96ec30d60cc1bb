"""Output of the SPALS reproduction: markdown table, summary ratios, plots, console report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["format_table", "plot_results", "print_report", "summary_ratios"]


def _md_table(header: list[str], body: list[list[str]]) -> list[str]:
    """Lines of a markdown table."""
    return (["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(cells) + " |" for cells in body])


def _ms(seconds: float) -> str:
    return f"{1e3 * seconds:.1f}"


def format_table(rows: list[dict[str, Any]]) -> str:
    """Paper-style markdown tables (dense, sparse, scaling) of the result rows."""
    lines: list[str] = []
    dense = [r for r in rows if r["experiment"] == "dense"]
    if dense:
        n = dense[0]["n"]
        body = []
        for r in dense:
            als = next(a for a in dense
                       if a["sigma"] == r["sigma"] and a["method"].startswith("ALS"))
            body.append([r["method"], f"{r['sigma']:g}", _ms(r["time_per_iter"]),
                         f"{als['time_per_iter'] / r['time_per_iter']:.1f}x",
                         f"{r['rel_error']:.4f}"])
        lines += [f"Dense {n}x{n}x{n} tensors",
                  *_md_table(["method", "sigma", "time/iter (ms)", "speedup vs ALS",
                              "rel. error"], body)]
    sparse = [r for r in rows if r["experiment"] == "sparse"]
    if sparse:
        t_als = sparse[0]["time_per_iter"]
        body = [[r["method"], _ms(r["time_per_iter"]), f"{t_als / r['time_per_iter']:.2f}x",
                 f"{r['rel_error']:.4f}", f"{1 - r['rel_error']:.4f}"] for r in sparse]
        lines += ["", *_md_table(["sparse method", "time/iter (ms)", "speedup vs sparse ALS",
                                  "rel. error", "fit"], body)]
    scaling = [r for r in rows if r["experiment"] == "scaling"]
    if scaling:
        body = [[str(r["n"]), r["dtype"], _ms(r["als_time_per_iter"]),
                 _ms(r["spals_time_per_iter"]),
                 f"{r['als_time_per_iter'] / r['spals_time_per_iter']:.1f}x"] for r in scaling]
        lines += ["", *_md_table(["n", "dtype", "ALS time/iter (ms)", "SPALS time/iter (ms)",
                                  "speedup"], body)]
    return "\n".join(lines)


def summary_ratios(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Speed-up, error and fit ratios of SPALS against exact ALS (and ALS against pyttb)."""
    acc: dict[str, Any] = {}
    dense = [r for r in rows if r["experiment"] == "dense" and r["sigma"] == 0.1]
    if dense:
        als = next(r for r in dense if r["method"].startswith("ALS"))
        acc["dense"] = [
            dict(method=r["method"], speedup=als["time_per_iter"] / r["time_per_iter"],
                 error_ratio=r["rel_error"] / als["rel_error"])
            for r in dense if r["method"].startswith("SPALS")
        ]
    sparse = [r for r in rows if r["experiment"] == "sparse"]
    if sparse:
        als = sparse[0]
        fit_als = 1 - als["rel_error"]
        acc["sparse"] = [
            dict(method=r["method"], speedup=als["time_per_iter"] / r["time_per_iter"],
                 fit=1 - r["rel_error"], fit_als=fit_als,
                 fit_relative_change=(1 - r["rel_error"] - fit_als) / fit_als)
            for r in sparse[1:] if r["method"].startswith("SPALS")
        ]
        peer = [r for r in sparse if r["method"].startswith("pyttb")]
        if peer:
            acc["sparse_als_vs_pyttb"] = peer[0]["time_per_iter"] / als["time_per_iter"]
    scaling = {r["n"]: r for r in rows if r["experiment"] == "scaling" and r["dtype"] == "float64"}
    ns = sorted(scaling)
    if len(ns) >= 2:
        a, b = ns[-2], ns[-1]
        acc["scaling"] = dict(
            from_n=a, to_n=b,
            spals_growth=scaling[b]["spals_time_per_iter"] / scaling[a]["spals_time_per_iter"],
            als_growth=scaling[b]["als_time_per_iter"] / scaling[a]["als_time_per_iter"])
    return acc


def plot_results(rows: list[dict[str, Any]], out: Path, scale: str) -> list[str]:
    """Write the error-versus-time and scaling PNGs to ``out``; return their file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    files = []
    dense = [r for r in rows if r["experiment"] == "dense"]
    sparse = [r for r in rows if r["experiment"] == "sparse"]
    sigmas = sorted({r["sigma"] for r in dense})
    panels = len(sigmas) + (1 if sparse else 0)
    fig, axes = plt.subplots(1, max(panels, 1), figsize=(4.2 * max(panels, 1), 3.6), squeeze=False)
    groups = [(f"dense n={dense[0]['n']}, sigma={s:g}", [r for r in dense if r["sigma"] == s])
              for s in sigmas]
    if sparse:
        groups.append(("sparse", sparse))
    for ax, (title, rs) in zip(axes[0], groups):
        for r in rs:
            t, e = r.get("curve_time", []), r.get("curve_error", [])
            if not t:
                continue
            style = "o" if len(t) == 1 else ".-"
            ax.plot(t, e, style, label=r["method"], ms=4)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("time (s)")
        ax.set_ylabel("relative error")
        ax.set_title(title, fontsize=9)
        ax.legend(fontsize=6)
    files.append(_save(plt, fig, out / f"spals_error_vs_time_{scale}.png"))
    scaling = [r for r in rows if r["experiment"] == "scaling"]
    if scaling:
        fig, ax = plt.subplots(figsize=(4.8, 3.6))
        ns = [r["n"] for r in scaling]
        ax.loglog(ns, [r["als_time_per_iter"] for r in scaling], "s-", label="exact ALS")
        ax.loglog(ns, [r["spals_time_per_iter"] for r in scaling], "o-",
                  label=f"SPALS alpha={scaling[0]['alpha']:g}")
        n0, t0 = ns[0], scaling[0]["als_time_per_iter"]
        ax.loglog(ns, [t0 * (n / n0) ** 3 for n in ns], "k:", lw=0.8, label="n^3")
        for r in scaling:
            if r["dtype"] == "float32":
                ax.annotate("float32", (r["n"], r["als_time_per_iter"]), fontsize=7)
        ax.set_xlabel("n (tensor n x n x n)")
        ax.set_ylabel("time per iteration (s)")
        ax.legend(fontsize=7)
        files.append(_save(plt, fig, out / f"spals_scaling_{scale}.png"))
    return files


def _save(plt: Any, fig: Any, path: Path) -> str:
    """Lay out, write and close ``fig``; return the file name."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name


def print_report(result: dict[str, Any], out_dir: Path) -> None:
    """Print the table, the summary ratios, the notes and where the files went."""
    print(result["table_markdown"])
    print()
    for k, v in result["acceptance"].items():
        print(f"acceptance {k}: {json.dumps(v, default=float)}")
    for note in result["notes"]:
        print(f"note: {note}")
    print(f"wrote {result['json']} and {', '.join(str(out_dir / f) for f in result['plots'])} "
          f"({result['total_seconds']:.1f} s, {result['threads']} thread(s), "
          f"peak RSS {result['peak_rss_mib']:.0f} MiB)")
