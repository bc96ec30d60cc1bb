"""Families of the ``tensorfact`` command (``cp`` and ``compress``), run in-process.

A non-zero exit with a message is the command's error (it must name the
option or file); an exception escaping ``main`` is a traceback: a crash.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import math
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
from _harness import Case, require
from _registry import register
from _strategies import Variant, one_of_variants, seeds
from hypothesis import strategies as st

from tensorfact.datasets import planted_cp

_TMP = Path(tempfile.mkdtemp(prefix="tensorfact-cli-"))
atexit.register(shutil.rmtree, _TMP, ignore_errors=True)


class CommandFailed(ValueError):
    """The command exited non-zero; the message is what it printed."""


class Traceback(RuntimeError):
    """An exception escaped the command's ``main``."""


def _run(argv: list[str]) -> str:
    from tensorfact.cli import main

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(argv)
    except SystemExit as exc:
        code = exc.code
        if isinstance(code, str):
            err.write(code)
            code = 1
    except Exception as exc:
        raise Traceback(f"{type(exc).__module__}.{type(exc).__name__}: {exc}") from exc
    if code not in (0, None):
        raise CommandFailed(f"exit {code}: {err.getvalue().strip()[-400:]}")
    return out.getvalue()


def _dir() -> Path:
    return Path(tempfile.mkdtemp(dir=_TMP))


def _npy_variants(seed: int) -> list[Variant]:
    d = _dir()
    X = planted_cp((4, 5, 6), 2, noise=0.05, rng=seed)[0]

    def save(name, arr):
        p = d / name
        np.save(p, arr, allow_pickle=True)
        return p

    trunc = save("trunc.npy", X)
    trunc.write_bytes(trunc.read_bytes()[:100])
    text = d / "text.npy"
    text.write_text("1 2 3\n")
    npz = d / "two.npz"
    np.savez(npz, a=X, b=X)
    one = d / "one.npz"
    np.savez(one, a=X)
    empty_dir = d / "emptydir"
    empty_dir.mkdir()
    Xn = X.copy()
    Xn[0, 0, 0] = np.nan
    return [
        Variant("valid .npy", [str(save("x.npy", X))], "ok"),
        Variant("valid .npz, one array", [str(one)], "ok"),
        Variant(".npz with --key", [str(npz), "--key", "b"], "ok"),
        Variant("int .npy", [str(save("i.npy", np.round(X * 5).astype(np.int64)))], "ok"),
        Variant("float32 .npy", [str(save("f.npy", X.astype(np.float32)))], "ok"),
        Variant("all zeros", [str(save("z.npy", np.zeros((4, 5, 6))))], "ok"),
        Variant("huge values", [str(save("h.npy", X * 1e300))], "ok"),
        Variant("NaN", [str(save("n.npy", Xn))], "error"),
        Variant("complex", [str(save("c.npy", X.astype(complex)))], "error"),
        Variant("object array (pickle)", [str(save("o.npy", X.astype(object)))], "error"),
        Variant("1-D", [str(save("v.npy", X.ravel()))], "error"),
        Variant("0-d", [str(save("s.npy", np.array(1.0)))], "error"),
        Variant("empty mode", [str(save("e.npy", X[:0]))], "error"),
        Variant("string array", [str(save("t.npy", X.astype(str)))], "error"),
        Variant("truncated .npy", [str(trunc)], "error"),
        Variant("text named .npy", [str(text)], "error"),
        Variant(".npz, two arrays, no --key", [str(npz)], "error"),
        Variant(".npz, missing --key", [str(npz), "--key", "zz"], "error"),
        Variant("missing file", [str(d / "none.npy")], "error"),
        Variant("empty directory", [str(empty_dir)], "error"),
    ]


@register("cli cp", "file")
def _cli_cp_file(draw):
    v = draw(one_of_variants(_npy_variants(draw(seeds))))
    method = draw(st.sampled_from(["als", "spals"]))
    argv = ["cp", *v.value, "--rank", "2", "--max-iter", "3", "--method", method]
    names = tuple(a for a in v.value if "/" in a) + ("file", "key", "X")
    return Case("cli cp", "file", f"{v.label} ({method})", lambda: _run(argv), names, v.expect,
                check=_check_cp_output)


def _check_cp_output(out: str) -> None:
    m = re.search(r"rel\. error\s+(\S+)", out)
    require(m is not None, "no 'rel. error' line")
    require(math.isfinite(float(m.group(1))), f"rel. error {m.group(1)}")


@register("cli cp", "options")
def _cli_cp_options(draw):
    d = _dir()
    X = planted_cp((4, 5, 6), 2, noise=0.05, rng=draw(seeds))[0]
    p = d / "x.npy"
    np.save(p, X)
    opt = draw(st.sampled_from(["--rank", "--max-iter", "--tol", "--seed", "--method",
                                "--init", "--out"]))
    values = {
        "--rank": [("2", "ok"), ("0", "error"), ("-1", "error"), ("1.5", "error"),
                   ("abc", "error"), ("21", "error"), (str(10**30), "error"), ("20", "ok")],
        "--max-iter": [("1", "ok"), ("0", "error"), ("-3", "error"), ("x", "error")],
        "--tol": [("0", "ok"), ("1e-3", "ok"), ("-1", "error"), ("nan", "error"),
                  ("inf", "either"), ("x", "error")],
        "--seed": [("0", "ok"), ("-1", "error"), (str(2**70), "ok"), ("1.5", "error")],
        "--method": [("als", "ok"), ("spals", "ok"), ("SPALS", "error"), ("", "error")],
        "--init": [("svd", "ok"), ("random", "ok"), ("joint_schur", "error")],
        "--out": [(str(d / "f.npz"), "ok"), (str(d / "missing" / "f.npz"), "error"),
                  (str(d), "error")],
    }[opt]
    value, expect = draw(st.sampled_from(values))
    argv = ["cp", str(p), "--rank", "2", "--max-iter", "3"]
    if opt == "--rank":
        argv[3] = value
    elif opt == "--max-iter":
        argv[5] = value
    else:
        argv += [opt, value]
    names = (opt, opt.strip("-").replace("-", "_"), value) if value else (opt,)
    return Case("cli cp", "options", f"{opt} {value!r}", lambda: _run(argv), names, expect,
                check=_check_cp_output)


@register("cli compress", "args", needs="torch,safetensors")
def _cli_compress(draw):
    try:
        import torch  # noqa: F401
        from safetensors.numpy import save_file
    except ImportError:  # pragma: no cover - the family is skipped without them
        raise
    d = _dir()
    gen = np.random.default_rng(draw(seeds))
    ckpt = d / "m.safetensors"
    save_file({"w": gen.standard_normal((16, 12)).astype(np.float32),
               "b": np.zeros(16, np.float32)}, str(ckpt))
    bad = d / "bad.safetensors"
    bad.write_bytes(b"\x00\x01garbage")
    nan = d / "nan.safetensors"
    save_file({"w": np.full((16, 12), np.nan, np.float32)}, str(nan))
    out = d / "out.safetensors"
    which = draw(st.sampled_from(["checkpoint", "--out", "--compression", "--method",
                                  "--include"]))
    options = {
        "checkpoint": [(str(ckpt), "ok"), (str(d / "none.safetensors"), "error"),
                       (str(bad), "error"), (str(nan), "error"), (str(d), "error"),
                       (str(d / "m.npy"), "error")],
        "--out": [(str(out), "ok"), (str(d / "missing" / "o.safetensors"), "error"),
                  (str(d / "o.npy"), "error")],
        "--compression": [("2", "ok"), ("4.5", "ok"), ("1", "error"), ("0", "error"),
                          ("-2", "error"), ("nan", "error"), ("inf", "error"), ("x", "error")],
        "--method": [("kronecker", "ok"), ("gkpd", "ok"), ("cp", "error")],
        "--include": [("w", "ok"), ("(", "error"), ("nothing", "error")],
    }[which]
    value, expect = draw(st.sampled_from(options))
    argv = ["compress", str(ckpt), "--out", str(out)]
    if which == "checkpoint":
        argv[1] = value
    elif which == "--out":
        argv[3] = value
    else:
        argv += [which, value]
    names = (which, which.strip("-"), value, "checkpoint", "safetensors")
    return Case("cli compress", "args", f"{which} {value!r}"[:60], lambda: _run(argv), names,
                expect, check=lambda text: require("wrote" in text, "no 'wrote' line"))
