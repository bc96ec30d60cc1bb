"""The README's tour runs as written and prints what the README shows."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARK = "----- end of README block -----"
#: lines whose value is a wall time, not a computed number
TIMING = re.compile(r"\d+(\.\d+)? s$")


def _blocks() -> list[tuple[str, str | None]]:
    """``(python source, expected output or None)`` of every python block, in order."""
    fences = re.findall(r"```(\w+)\n(.*?)```", README.read_text(encoding="utf-8"), re.S)
    out = []
    for k, (lang, body) in enumerate(fences):
        if lang == "python":
            nxt = fences[k + 1] if k + 1 < len(fences) else None
            out.append((body, nxt[1] if nxt is not None and nxt[0] == "text" else None))
    return out


def _normalise(text: str) -> list[str]:
    return [line.rstrip() for line in text.strip().splitlines() if not TIMING.search(line)]


def test_the_tour_runs_and_prints_what_the_readme_shows(tmp_path):
    pytest.importorskip("torch")
    blocks = _blocks()
    assert len(blocks) >= 6
    script = "\n".join(f"{src}\nprint({MARK!r})" for src, _ in blocks)
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    outputs = proc.stdout.split(MARK + "\n")
    assert len(outputs) == len(blocks) + 1
    for (src, expected), got in zip(blocks, outputs):
        if expected is not None:
            assert _normalise(got) == _normalise(expected), src
    assert list(tmp_path.iterdir()) == []  # the tour writes no files
