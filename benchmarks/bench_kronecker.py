"""Benchmark: Kronecker-structured products and Kronecker decompositions.

Part 1 times ``y = x @ W.T`` for ``W = sum_r A_r ⊗ B_r`` (float32) three ways, in
the same process on the same data:

* ``kron_matmul``  -- tensorfact, never forms W;
* ``dense``        -- ``x @ W.T`` with W precomputed (a plain dense layer);
* ``materialise``  -- form W from the factors then multiply, as PEFT's LoKr
  (``torch.kron(w1, w2)`` then ``F.linear``) and Compacter's PHM reference
  code (batched outer product, reshape, sum over the rank, matmul) do on every
  forward pass. NumPy's version uses ``numpy.kron``.

for NumPy and torch (CPU), shapes 1024x1024 = (32x32)⊗(32x32),
4096x4096 = (64x64)⊗(64x64) and 8192x2048 = (128x32)⊗(64x64), ranks 1/4/16,
batches 1/64/256.

Part 2 times ``nearest_kronecker`` (exact and randomized SVD) and ``sekron``
(3 factors) on the weight shapes of ResNet-50 and BERT-base layers (generated
Gaussian weights; the timing does not depend on the values).

BLAS threads are pinned (``--threads``, default 1) before NumPy is imported.
Medians of repeated runs; NumPy peak memory by ``tracemalloc``. Writes
``benchmarks/results/kronecker.json`` and prints tables.

Usage: ``python benchmarks/bench_kronecker.py [--quick] [--threads N]``
"""

from __future__ import annotations

import argparse
import os
import sys


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="the 4096x4096 shape only")
    p.add_argument("--threads", type=int, default=1, help="BLAS / torch threads (default 1)")
    p.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                 "kronecker.json"))
    p.add_argument("--skip-matmul", action="store_true")
    p.add_argument("--skip-decomp", action="store_true")
    p.add_argument("--markdown-only", action="store_true",
                   help="print the markdown tables of an existing results file and exit")
    return p.parse_args()


ARGS = _parse()
for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMEXPR_NUM_THREADS"):
    os.environ[_v] = str(ARGS.threads)

import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import time  # noqa: E402
import tracemalloc  # noqa: E402

import numpy as np  # noqa: E402
import scipy.linalg  # noqa: E402, F401  (load SciPy's BLAS so threadpoolctl can pin it)
from threadpoolctl import threadpool_limits  # noqa: E402

import tensorfact as tf  # noqa: E402

try:
    import torch  # noqa: E402

    torch.set_num_threads(ARGS.threads)
except ImportError:  # pragma: no cover
    torch = None


def timeit(fn, *, min_repeat=3, max_repeat=15, budget=2.0):
    """Medians of wall time and of process CPU time of ``fn()`` after a warm-up call.

    With one BLAS/torch thread the CPU time is the work done; on a shared,
    oversubscribed machine the wall time also counts the time the process
    waited for a core (a few-ms call preempted once takes 10 ms), so the
    ratios are computed from CPU times and both are stored.
    """
    fn()
    wall, cpu = [], []
    start = time.perf_counter()
    while len(wall) < max_repeat:
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        wall.append(time.perf_counter() - t0)
        cpu.append(time.process_time() - c0)
        if len(wall) >= min_repeat and time.perf_counter() - start > budget:
            break
    return Timing(statistics.median(wall), statistics.median(cpu), min(wall))


class Timing:
    """Median wall / median CPU / best wall seconds of one measured call."""

    def __init__(self, wall, cpu, best):
        self.wall, self.cpu, self.best = wall, cpu, best

    def as_dict(self):
        return {"wall_median_s": self.wall, "cpu_median_s": self.cpu, "wall_min_s": self.best}


def peak_numpy(fn):
    tracemalloc.start()
    fn()
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak


# --------------------------------------------------------------------------- roofline
def roofline():
    """How far a rank-1 4096x4096 (64x64 ⊗ 64x64) ``kron_matmul`` can beat LoKr-style
    materialise-then-multiply on this machine, whatever its implementation.

    ``kron_matmul`` must do ``2 * 2 * b * 64^3`` flops (two 64-wide GEMMs per
    row), the dense product ``2 * b * 4096^2`` (32x more). If ``kron_matmul``
    ran at the rate of the best large square SGEMM measured here, the
    speed-up over ``torch.kron`` + ``F.linear`` could not exceed
    ``(t_kron + t_linear) / (flops / peak)``; the measured rate of its
    64-wide GEMMs is reported next to it.
    """
    if torch is None:
        return None
    out = {"threads": ARGS.threads}
    rates = {}
    for n in (2048, 4096):
        a, b = torch.randn(n, n), torch.randn(n, n)
        rates[f"torch_sgemm_{n}"] = 2 * n**3 / timeit(lambda a=a, b=b: a @ b).cpu / 1e9
        an, bn = a.numpy(), b.numpy()
        rates[f"numpy_sgemm_{n}"] = 2 * n**3 / timeit(lambda a=an, b=bn: a @ b).cpu / 1e9
    out["sgemm_gflops"] = rates
    peak = max(rates.values())
    A, Bm, x = torch.randn(64, 64), torch.randn(64, 64), torch.randn(256, 4096)
    W = torch.kron(A, Bm)
    t_kron = timeit(lambda: torch.kron(A, Bm)).cpu
    t_lin = timeit(lambda: torch.nn.functional.linear(x, W)).cpu
    t_km = timeit(lambda: tf.kron_matmul(x, [A[None], Bm[None]])).cpu
    flops = 2 * 2 * 256 * 64**3
    out.update({
        "torch_kron_s": t_kron, "f_linear_s": t_lin, "kron_matmul_s": t_km,
        "kron_matmul_gflops": flops / t_km / 1e9,
        "f_linear_gflops": 2 * 256 * 4096**2 / t_lin / 1e9,
        "lokr_speedup_measured": (t_kron + t_lin) / t_km,
        "lokr_speedup_at_f_linear_rate": (t_kron + t_lin) / (t_lin / 32),
        "lokr_speedup_ceiling_at_peak_sgemm": (t_kron + t_lin) / (flops / (peak * 1e9)),
        "peak_sgemm_gflops": peak,
    })
    print(f"roofline ({ARGS.threads} thread(s)): best SGEMM {peak:.0f} GFLOP/s, F.linear "
          f"{out['f_linear_gflops']:.0f}, kron_matmul {out['kron_matmul_gflops']:.0f}; "
          f"torch.kron {t_kron * 1e3:.1f} ms + F.linear {t_lin * 1e3:.1f} ms; speed-up over "
          f"LoKr-style measured {out['lokr_speedup_measured']:.1f}x, at F.linear's rate "
          f"{out['lokr_speedup_at_f_linear_rate']:.1f}x, at the best SGEMM rate "
          f"{out['lokr_speedup_ceiling_at_peak_sgemm']:.1f}x", flush=True)
    return out


# --------------------------------------------------------------------------- part 1
MATMUL_SHAPES = {
    "1024x1024": ((32, 32), (32, 32)),
    "4096x4096": ((64, 64), (64, 64)),
    "8192x2048": ((128, 32), (64, 64)),
}


def bench_matmul(quick):
    rng = np.random.default_rng(0)
    rows = []
    shapes = {"4096x4096": MATMUL_SHAPES["4096x4096"]} if quick else MATMUL_SHAPES
    ranks = (1, 4) if quick else (1, 4, 16)
    batches = (256,) if quick else (1, 64, 256)
    for name, (a, b) in shapes.items():
        m, n = a[0] * b[0], a[1] * b[1]
        for R in ranks:
            A = rng.standard_normal((R,) + a).astype(np.float32)
            Bf = rng.standard_normal((R,) + b).astype(np.float32)
            W = tf.KroneckerTensor([A, Bf]).to_dense()
            for bs in batches:
                x = rng.standard_normal((bs, n)).astype(np.float32)
                res = _matmul_case(name, m, n, R, bs, A, Bf, W, x)
                rows.append(res)
                _print_matmul_row(res)
    return rows


def _matmul_case(name, m, n, R, bs, A, Bf, W, x):
    res = {"shape": name, "m": m, "n": n, "rank": R, "batch": bs}
    # ---- NumPy
    facs = [A, Bf]
    t_k = timeit(lambda: tf.kron_matmul(x, facs))
    t_d = timeit(lambda: x @ W.T)

    def np_materialise():
        Wm = np.kron(A[0], Bf[0])
        for r in range(1, R):
            Wm += np.kron(A[r], Bf[r])
        return x @ Wm.T

    t_m = timeit(np_materialise, max_repeat=5)
    y_ref = x.astype(np.float64) @ W.T.astype(np.float64)
    err = float(np.abs(tf.kron_matmul(x, facs) - y_ref).max()
                / np.abs(y_ref).max())
    res["numpy"] = {
        "kron_matmul": t_k.as_dict(), "dense": t_d.as_dict(),
        "materialise": t_m.as_dict(),
        "speedup_vs_dense": t_d.cpu / t_k.cpu,
        "speedup_vs_materialise": t_m.cpu / t_k.cpu,
        "speedup_vs_dense_wall": t_d.wall / t_k.wall,
        "speedup_vs_materialise_wall": t_m.wall / t_k.wall,
        "kron_matmul_peak_bytes": peak_numpy(lambda: tf.kron_matmul(x, facs)),
        "materialise_peak_bytes": peak_numpy(np_materialise),
        "max_rel_error_vs_float64": err,
    }
    # ---- torch
    if torch is not None:
        At, Bt, xt, Wt = (torch.from_numpy(v) for v in (A, Bf, x, W))
        tfacs = [At, Bt]
        with torch.no_grad():
            t_k = timeit(lambda: tf.kron_matmul(xt, tfacs))
            t_d = timeit(lambda: torch.nn.functional.linear(xt, Wt))

            def lokr():  # PEFT LoKr style: torch.kron per term, then F.linear
                Wm = torch.kron(At[0], Bt[0])
                for r in range(1, R):
                    Wm = Wm + torch.kron(At[r], Bt[r])
                return torch.nn.functional.linear(xt, Wm)

            def compacter():  # Compacter PHM style: batched outer product, sum
                Wm = (At[:, :, None, :, None] * Bt[:, None, :, None, :]).reshape(
                    R, m, n).sum(0)
                return torch.matmul(xt, Wm.T)

            t_l = timeit(lokr, max_repeat=5)
            t_c = timeit(compacter, max_repeat=5)
        res["torch"] = {
            "kron_matmul": t_k.as_dict(), "dense": t_d.as_dict(),
            "lokr_materialise": t_l.as_dict(), "compacter_materialise": t_c.as_dict(),
            "speedup_vs_dense": t_d.cpu / t_k.cpu,
            "speedup_vs_lokr": t_l.cpu / t_k.cpu,
            "speedup_vs_compacter": t_c.cpu / t_k.cpu,
            "speedup_vs_dense_wall": t_d.wall / t_k.wall,
            "speedup_vs_lokr_wall": t_l.wall / t_k.wall,
        }
    return res


def _print_matmul_row(r):
    npr = r["numpy"]
    line = (
        f"{r['shape']:>10} R={r['rank']:<2} b={r['batch']:<3} | numpy kron "
        f"{npr['kron_matmul']['cpu_median_s'] * 1e3:8.3f} ms"
        f" dense {npr['dense']['cpu_median_s'] * 1e3:8.2f} ms ({npr['speedup_vs_dense']:6.1f}x)"
        f" materialise {npr['speedup_vs_materialise']:7.1f}x"
    )
    if "torch" in r:
        t = r["torch"]
        line += (
            f" | torch kron {t['kron_matmul']['cpu_median_s'] * 1e3:8.3f} ms"
            f" dense {t['speedup_vs_dense']:6.1f}x lokr {t['speedup_vs_lokr']:7.1f}x"
            f" compacter {t['speedup_vs_compacter']:7.1f}x"
        )
    print(line, flush=True)


# --------------------------------------------------------------------------- part 2
# (name, weight shape, GKPD a_shape, rank, SeKron shapes (3 factors), SeKron ranks)
DECOMP_CASES = [
    ("resnet50.layer1.conv2 3x3", (64, 64, 3, 3), (8, 8, 3, 3), 8,
     [(4, 4, 1, 1), (4, 4, 1, 1), (4, 4, 3, 3)], (8, 8)),
    ("resnet50.layer3.conv2 3x3", (256, 256, 3, 3), (16, 16, 3, 3), 8,
     [(8, 8, 1, 1), (4, 4, 1, 1), (8, 8, 3, 3)], (8, 8)),
    ("resnet50.layer4.conv2 3x3", (512, 512, 3, 3), (16, 16, 3, 3), 8,
     [(8, 8, 1, 1), (8, 8, 1, 1), (8, 8, 3, 3)], (8, 8)),
    ("resnet50.layer4.conv3 1x1", (2048, 512, 1, 1), (64, 16, 1, 1), 8,
     [(16, 8, 1, 1), (8, 8, 1, 1), (16, 8, 1, 1)], (8, 8)),
    ("resnet50.fc", (1000, 2048), (25, 32), 8, [(10, 16), (10, 8), (10, 16)], (8, 8)),
    ("bert-base attention 768x768", (768, 768), (24, 32), 8,
     [(8, 8), (8, 12), (12, 8)], (8, 8)),
    ("bert-base ffn up 3072x768", (3072, 768), (48, 24), 8,
     [(16, 8), (12, 8), (16, 12)], (8, 8)),
    ("bert-base ffn down 768x3072", (768, 3072), (24, 48), 8,
     [(8, 16), (8, 12), (12, 16)], (8, 8)),
]


def bench_decomp(quick):
    rng = np.random.default_rng(1)
    rows = []
    cases = DECOMP_CASES[2:4] + DECOMP_CASES[5:6] if quick else DECOMP_CASES
    for name, shape, a, R, sk_shapes, sk_ranks in cases:
        W = rng.standard_normal(shape).astype(np.float32)

        def run_svd(W=W, a=a, R=R):
            return tf.nearest_kronecker(W, a, rank=R)

        def run_rnd(W=W, a=a, R=R):
            return tf.nearest_kronecker(W, a, rank=R, method="randomized", rng=0)

        def run_sk(W=W, sk_shapes=sk_shapes, sk_ranks=sk_ranks):
            return tf.sekron(W, sk_shapes, sk_ranks)

        t_svd = timeit(run_svd, max_repeat=3, budget=5)
        t_rnd = timeit(run_rnd, max_repeat=3, budget=5)
        t_sk = timeit(run_sk, max_repeat=5, budget=5)
        nk, rnd, sk = run_svd(), run_rnd(), run_sk()
        row = {
            "layer": name, "shape": list(shape), "gkpd_a_shape": list(a), "gkpd_rank": R,
            "gkpd_svd": t_svd.as_dict(), "gkpd_randomized": t_rnd.as_dict(),
            "gkpd_compression": nk.kt.compression_ratio, "gkpd_rel_error": nk.rel_error,
            "gkpd_randomized_rel_error": rnd.rel_error,
            "sekron_shapes": [list(s) for s in sk_shapes], "sekron_ranks": list(sk_ranks),
            "sekron": t_sk.as_dict(), "sekron_compression": sk.compression_ratio,
            "sekron_rel_error": sk.rel_error,
        }
        rows.append(row)
        print(
            f"{name:>30} {str(shape):>20} | GKPD svd {t_svd.cpu * 1e3:8.1f} ms"
            f" rand {t_rnd.cpu * 1e3:8.1f} ms (x{row['gkpd_compression']:.0f})"
            f" | SeKron {t_sk.cpu * 1e3:8.1f} ms (wall {t_sk.wall * 1e3:8.1f} ms,"
            f" x{row['sekron_compression']:.0f})",
            flush=True,
        )
    return rows


def markdown(out):
    """Markdown tables of the results (CPU-time medians, one thread)."""
    lines = []
    if out.get("matmul"):
        lines += [
            "| W (m x n) | R | batch | kron_matmul (ms) | vs dense | vs materialise"
            " (numpy.kron) | torch: vs dense | vs LoKr-style | vs Compacter-style |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in out["matmul"]:
            npr, t = r["numpy"], r.get("torch", {})
            lines.append(
                f"| {r['shape']} | {r['rank']} | {r['batch']} |"
                f" {npr['kron_matmul']['cpu_median_s'] * 1e3:.3f} |"
                f" {npr['speedup_vs_dense']:.1f}x | {npr['speedup_vs_materialise']:.1f}x |"
                f" {t.get('speedup_vs_dense', float('nan')):.1f}x |"
                f" {t.get('speedup_vs_lokr', float('nan')):.1f}x |"
                f" {t.get('speedup_vs_compacter', float('nan')):.1f}x |"
            )
    if out.get("decomposition"):
        lines += [
            "",
            "| layer | shape | GKPD A shape, rank | exact SVD (ms) | randomized (ms) | GKPD ratio"
            " | SeKron shapes, ranks | SeKron (ms) | SeKron ratio |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in out["decomposition"]:
            sk = " ⊗ ".join("x".join(map(str, s)) for s in r["sekron_shapes"])
            lines.append(
                f"| {r['layer']} | {'x'.join(map(str, r['shape']))} |"
                f" {'x'.join(map(str, r['gkpd_a_shape']))}, {r['gkpd_rank']} |"
                f" {r['gkpd_svd']['cpu_median_s'] * 1e3:.1f} |"
                f" {r['gkpd_randomized']['cpu_median_s'] * 1e3:.1f} |"
                f" {r['gkpd_compression']:.0f}x | {sk}, {tuple(r['sekron_ranks'])} |"
                f" {r['sekron']['cpu_median_s'] * 1e3:.1f} | {r['sekron_compression']:.0f}x |"
            )
    return "\n".join(lines)


def main():
    if ARGS.markdown_only:
        with open(ARGS.out) as fh:
            print(markdown(json.load(fh)))
        return
    info = {
        "python": sys.version.split()[0], "numpy": np.__version__,
        "torch": getattr(torch, "__version__", None), "tensorfact": tf.__version__,
        "machine": platform.machine(), "cpu_count": os.cpu_count(), "threads": ARGS.threads,
        "quick": ARGS.quick,
        "load_average_start": os.getloadavg() if hasattr(os, "getloadavg") else None,
    }
    out = {"info": info}
    if (ARGS.skip_matmul or ARGS.skip_decomp) and os.path.exists(ARGS.out):
        # partial rerun: keep the sections not rerun from the previous results
        with open(ARGS.out) as fh:
            prev = json.load(fh)
        out.update({k: v for k, v in prev.items() if k != "info"})
        out["info_previous"] = prev.get("info")
    with threadpool_limits(ARGS.threads):
        if not ARGS.skip_matmul:
            print("== kron_matmul vs dense vs materialise-then-multiply (float32) ==")
            out["matmul"] = bench_matmul(ARGS.quick)
            out["roofline"] = roofline()
        if not ARGS.skip_decomp:
            print("== decomposition time (float32, generated weights) ==")
            out["decomposition"] = bench_decomp(ARGS.quick)
    info["load_average_end"] = os.getloadavg() if hasattr(os, "getloadavg") else None
    os.makedirs(os.path.dirname(ARGS.out), exist_ok=True)
    with open(ARGS.out, "w") as fh:
        json.dump(out, fh, indent=1)
    print(f"wrote {ARGS.out}")
    print(markdown(out))


if __name__ == "__main__":
    main()
