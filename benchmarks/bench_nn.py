"""Benchmark tensorfact.nn layers against dense layers and materialise-then-multiply.

For every registered case, three ways of computing the same function are
timed on the same input (CPU, float32, torch threads pinned):

- ``structured``: the tensorfact layer (never forms the dense weight);
- ``dense``: the equivalent dense torch layer (``layer.to_dense()``);
- ``materialise``: form the dense weight from the factors on every call and
  then apply the dense operation (what PEFT's LoKr does), with gradients
  flowing to the factors.

Forward and forward+backward medians are reported, and the peak extra
resident memory of one forward+backward call, measured in a fresh subprocess
per (case, variant) (``ru_maxrss`` after the call minus before it; torch's CPU
allocator is invisible to tracemalloc).

Layer registry: :data:`REGISTRY` maps a layer name to a function
``cases(quick: bool) -> list[Case]``; other layers add their own entry with a
small edit (see the ``# --- registry`` section).

Usage::

    python benchmarks/bench_nn.py            # full run, writes results/nn.json
    python benchmarks/bench_nn.py --quick    # small subset (smoke test)
    python benchmarks/bench_nn.py --only kronecker_linear
    python benchmarks/bench_nn.py --threads 2    # default 1 thread
"""

from __future__ import annotations

import sys

import _common  # noqa: I001  (must precede numpy)


def _threads_from_argv(default: int = 1) -> int:
    """``--threads N`` read before NumPy/torch load (the pools are sized at import)."""
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return default


N_THREADS = _common.pin_threads(_threads_from_argv())

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import resource  # noqa: E402
import subprocess  # noqa: E402
from collections.abc import Callable  # noqa: E402
from dataclasses import dataclass  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

import _nn_b_cases  # noqa: E402
import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402
from torch.nn import functional as F  # noqa: E402

torch.set_num_threads(N_THREADS)


@dataclass
class Case:
    """One benchmark case.

    ``build()`` returns ``(variants, x)``: ``variants`` maps ``"structured"``,
    ``"dense"`` and (optionally) ``"materialise"`` to callables ``f(x)`` whose
    parameters require grad; ``x`` is the input (float32, or indices).
    """

    layer: str
    label: str
    build: Callable[[], tuple[dict[str, Callable[[Tensor], Tensor]], Tensor]]
    params: dict[str, Any]


# --------------------------------------------------------------------------- #
# registry
# --------------------------------------------------------------------------- #
def _kron_shapes(out_f: int, in_f: int) -> tuple[tuple[int, ...], ...]:
    from tensorfact.nn._planner import matmul_candidates

    return matmul_candidates((out_f, in_f))[0]


def _kronecker_linear_cases(quick: bool) -> list[Case]:
    from tensorfact.nn import KroneckerLinear
    from tensorfact.nn._common import kron_dense

    sizes = [(4096, 4096, 1, 256)]
    if not quick:
        sizes += [(768, 768, 1, 256), (3072, 768, 1, 256), (768, 3072, 1, 256),
                  (4096, 4096, 8, 256), (768, 768, 24, 256),
                  (1000, 2048, 1, 64), (1000, 512, 1, 64)]  # ResNet-50 / -18 classifier heads
    cases = []
    for out_f, in_f, rank, batch in sizes:
        def build(out_f: int = out_f, in_f: int = in_f, rank: int = rank,
                  batch: int = batch) -> tuple[dict[str, Callable[[Tensor], Tensor]], Tensor]:
            torch.manual_seed(0)
            a_shape, _ = _kron_shapes(out_f, in_f)
            layer = KroneckerLinear(in_f, out_f, a_shape=a_shape, rank=rank)
            dense = layer.to_dense()

            def materialise(x: Tensor) -> Tensor:
                return F.linear(x, kron_dense(layer.kron_a, layer.kron_b), layer.bias)

            x = torch.randn(batch, in_f)
            return {"structured": layer, "dense": dense, "materialise": materialise}, x

        cases.append(Case("KroneckerLinear", f"{in_f}->{out_f} r={rank} batch={batch}", build,
                          {"in": in_f, "out": out_f, "rank": rank, "batch": batch}))
    return cases


def _phm_linear_cases(quick: bool) -> list[Case]:
    from tensorfact.nn import PHMLinear

    sizes = [] if quick else [(768, 768, 4, None), (3072, 768, 4, None),
                              (4096, 4096, 4, None), (768, 768, 4, 1)]
    cases = []
    for out_f, in_f, n, rank in sizes:
        def build(out_f: int = out_f, in_f: int = in_f, n: int = n, rank: int | None = rank
                  ) -> tuple[dict[str, Callable[[Tensor], Tensor]], Tensor]:
            torch.manual_seed(0)
            layer = PHMLinear(in_f, out_f, n=n, rank=rank)
            dense = layer.to_dense()

            def materialise(x: Tensor) -> Tensor:
                return F.linear(x, layer.weight(), layer.bias)

            return ({"structured": layer, "dense": dense, "materialise": materialise},
                    torch.randn(256, in_f))

        cases.append(Case("PHMLinear", f"{in_f}->{out_f} n={n} rank={rank} batch=256", build,
                          {"in": in_f, "out": out_f, "n": n, "rank": rank, "batch": 256}))
    return cases


def _kronecker_embedding_cases(quick: bool) -> list[Case]:
    from tensorfact.nn import KroneckerEmbedding

    sizes = [] if quick else [(30522, 768, 1), (30522, 768, 16)]
    cases = []
    for num, dim, rank in sizes:
        def build(num: int = num, dim: int = dim, rank: int = rank
                  ) -> tuple[dict[str, Callable[[Tensor], Tensor]], Tensor]:
            torch.manual_seed(0)
            layer = KroneckerEmbedding(num, dim, a_shape=(175, 32), rank=rank)
            dense = layer.to_dense()

            def materialise(idx: Tensor) -> Tensor:
                return F.embedding(idx, layer.weight())

            return ({"structured": layer, "dense": dense, "materialise": materialise},
                    torch.randint(0, num, (32, 128)))

        cases.append(Case("KroneckerEmbedding", f"{num}x{dim} r={rank} tokens=32x128", build,
                          {"num": num, "dim": dim, "rank": rank, "tokens": 32 * 128}))
    return cases


#: layer name -> function(quick) returning its cases.
REGISTRY: dict[str, Callable[[bool], list[Case]]] = {
    "kronecker_linear": _kronecker_linear_cases,
    "phm_linear": _phm_linear_cases,
    "kronecker_embedding": _kronecker_embedding_cases,
    # nn-B layers (cases in _nn_b_cases.py)
    "gkpd_conv2d": lambda quick: _nn_b_cases.gkpd_conv_cases(Case, quick),
    "sekron_conv2d": lambda quick: _nn_b_cases.sekron_conv_cases(Case, quick),
    "cprnn": lambda quick: _nn_b_cases.cprnn_cases(Case, quick),
    "rosa_linear": lambda quick: _nn_b_cases.rosa_cases(Case, quick),
}


# --------------------------------------------------------------------------- #
# timing
# --------------------------------------------------------------------------- #
def _step(fn: Callable[[Tensor], Tensor], x: Tensor, backward: bool) -> None:
    if backward:
        xin = x.requires_grad_(True) if x.is_floating_point() else x
        out = fn(xin)
        out.sum().backward()
    else:
        with torch.no_grad():
            fn(x)


def _params(fn: Any) -> list[Tensor]:
    if isinstance(fn, nn.Module):
        return list(fn.parameters())
    return []


def _time_interleaved(variants: dict[str, Callable[[Tensor], Tensor]], x: Tensor,
                      repeat: int, params: list[Tensor]) -> dict[tuple[str, bool], float]:
    """Median seconds per (variant, backward), the variants timed in alternation.

    Each round runs every (variant, mode) once, so slow drifts of a shared
    machine's load hit all of them alike.
    """
    import time

    def once(fn: Callable[[Tensor], Tensor], backward: bool) -> float:
        if backward:
            for p in params:
                p.grad = None
            if x.is_floating_point():
                x.grad = None
        t0 = time.perf_counter()
        _step(fn, x, backward)
        return time.perf_counter() - t0

    keys = [(v, bwd) for bwd in (False, True) for v in variants]
    for v, bwd in keys:  # warm-up
        once(variants[v], bwd)
    times: dict[tuple[str, bool], list[float]] = {k: [] for k in keys}
    for _ in range(repeat):
        for v, bwd in keys:
            times[(v, bwd)].append(once(variants[v], bwd))
    return {k: sorted(t)[len(t) // 2] for k, t in times.items()}


def _all_cases(quick: bool, only: list[str] | None) -> list[Case]:
    out: list[Case] = []
    for name, make in REGISTRY.items():
        if only and name not in only:
            continue
        out.extend(make(quick))
    return out


def _status_kib(field: str) -> int:
    with open("/proc/self/status", encoding="ascii") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def _memory_child(index: int, variant: str, quick: bool, only: list[str] | None) -> None:
    """Subprocess entry: peak extra RSS (bytes) of one forward+backward call.

    The peak RSS (``VmHWM``) is reset through ``/proc/self/clear_refs`` right
    before the call, so the result is the high-water mark of the call minus
    the resident memory before it (Linux only; ``ru_maxrss`` otherwise).
    """
    case = _all_cases(quick, only)[index]
    variants, x = case.build()
    fn = variants[variant]
    del variants
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        before = _status_kib("VmRSS")
        _step(fn, x, backward=True)
        peak = _status_kib("VmHWM")
    except OSError:  # pragma: no cover - not Linux
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        _step(fn, x, backward=True)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"peak_extra_bytes": max(peak - before, 0) * 1024}))


def _measure_memory(index: int, variant: str, quick: bool, only: list[str] | None
                    ) -> int | None:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--memory-child", str(index),
           "--variant", variant, "--threads", str(N_THREADS)]
    if quick:
        cmd.append("--quick")
    if only:
        cmd += ["--only", *only]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=600,
                             env=dict(os.environ), check=True)
        return int(json.loads(res.stdout.strip().splitlines()[-1])["peak_extra_bytes"])
    except (subprocess.SubprocessError, ValueError, KeyError, IndexError):
        return None


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; write ``results/nn.json`` and print a table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small subset, few repeats")
    ap.add_argument("--only", nargs="*", default=None, help=f"layers among {sorted(REGISTRY)}")
    ap.add_argument("--repeat", type=int, default=None)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch/BLAS threads (default 1: stable timings on a shared machine)")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory subprocesses")
    ap.add_argument("--out", default=None, help="JSON path (default results/nn.json)")
    ap.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.memory_child is not None:
        _memory_child(args.memory_child, args.variant, args.quick, args.only)
        return 0
    repeat = args.repeat or (7 if args.quick else 15)
    rows, records = [], []
    with _common.blas_limits(N_THREADS):
        for index, case in enumerate(_all_cases(args.quick, args.only)):
            variants, x = case.build()
            rec: dict[str, Any] = {"layer": case.layer, "case": case.label, **case.params}
            params = [p for fn in variants.values() for p in _params(fn)]
            med = _time_interleaved(variants, x, repeat, params)
            for variant in variants:
                fwd, fb = med[(variant, False)], med[(variant, True)]
                mem = None if args.no_memory else _measure_memory(index, variant, args.quick,
                                                                  args.only)
                rec[variant] = {"forward_s": fwd, "forward_backward_s": fb,
                                "peak_extra_bytes_fwd_bwd": mem}
            s = rec["structured"]
            for ref in ("dense", "materialise"):
                if ref in rec:
                    rec[f"speedup_vs_{ref}"] = {
                        "forward": rec[ref]["forward_s"] / s["forward_s"],
                        "forward_backward": rec[ref]["forward_backward_s"]
                        / s["forward_backward_s"],
                    }
            records.append(rec)

            def ms(v: str, k: str, rec: dict[str, Any] = rec) -> float | None:
                return rec[v][k] * 1e3 if v in rec else None

            def mib(v: str, rec: dict[str, Any] = rec) -> float | None:
                b = rec.get(v, {}).get("peak_extra_bytes_fwd_bwd")
                return None if b is None else b / 2**20

            rows.append([
                case.layer, case.label,
                ms("structured", "forward_s"), ms("dense", "forward_s"),
                ms("materialise", "forward_s"),
                ms("structured", "forward_backward_s"), ms("dense", "forward_backward_s"),
                ms("materialise", "forward_backward_s"),
                rec.get("speedup_vs_dense", {}).get("forward"),
                rec.get("speedup_vs_dense", {}).get("forward_backward"),
                rec.get("speedup_vs_materialise", {}).get("forward"),
                rec.get("speedup_vs_materialise", {}).get("forward_backward"),
                mib("structured"), mib("dense"), mib("materialise"),
            ])
            print(f"done: {case.layer} {case.label}", file=sys.stderr, flush=True)
    header = ["layer", "case", "fwd ms", "dense fwd", "mat. fwd", "fwd+bwd ms", "dense f+b",
              "mat. f+b", "x dense fwd", "x dense f+b", "x mat. fwd", "x mat. f+b",
              "MiB", "dense MiB", "mat. MiB"]
    print(_common.format_table(rows, header))
    payload = {
        "benchmark": "nn",
        "description": "tensorfact.nn layers vs dense torch layers and materialise-then-multiply",
        "dtype": "float32",
        "device": "cpu",
        "repeat": repeat,
        "quick": args.quick,
        "machine": _common.machine_info(N_THREADS),
        "torch_threads": torch.get_num_threads(),
        "results": records,
        "markdown_table": _common.format_table(rows, header, markdown=True),
    }
    out = Path(args.out) if args.out else None
    name = "nn_quick" if args.quick else "nn"
    target = out if out is not None else _common.RESULTS_DIR / f"{name}.json"
    if args.only and target.exists():
        # a partial run (--only) replaces its layers' rows and keeps the others
        try:
            old = json.loads(target.read_text(encoding="utf-8"))
            ran = {r["layer"] for r in records}
            kept = [r for r in old.get("results", []) if r.get("layer") not in ran]
            payload["results"] = kept + records
            payload["markdown_table"] = old.get("markdown_table", "") + "\n" + "\n".join(
                payload["markdown_table"].splitlines()[2:])
        except (ValueError, KeyError, TypeError):
            pass
    path = _common.write_json(name, payload, out=out)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
