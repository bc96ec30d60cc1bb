"""Smoke tests: every script in examples/ runs to completion with ``--quick``."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytest.importorskip("matplotlib")


def test_cp_als_quickstart(tmp_path: Path) -> None:
    """Runs on Indian Pines (shipped inside TensorLy) and a planted tensor; writes the PNG."""
    out = tmp_path / "cp_als_convergence.png"
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "cp_als_quickstart.py"), "--quick", "--out",
         str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "Indian Pines" in proc.stdout
    # the planted line reports a factor match score close to 1
    fms = float(proc.stdout.split("factor match score vs truth")[1].split()[0])
    assert fms > 0.99


def _git_status(root: Path) -> str | None:
    try:
        proc = subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                              cwd=root, capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout if proc.returncode == 0 else None


@pytest.mark.parametrize("script", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_examples_leave_the_repository_clean(script: str) -> None:
    """Run from the repository root with default outputs: git status does not change."""
    root = EXAMPLES.parent
    before = _git_status(root)
    if before is None:
        pytest.skip("not a git checkout")
    env = dict(os.environ, MPLBACKEND="Agg", OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run([sys.executable, str(EXAMPLES / script), "--quick"],
                          capture_output=True, text=True, timeout=600, env=env, cwd=root)
    if proc.returncode != 0 and "No module named" in proc.stderr:
        pytest.skip(f"{script} needs an optional extra: {proc.stderr.splitlines()[-1]}")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert _git_status(root) == before


def _quick_table(script: str, table: str, tmp_path: Path) -> list[str]:
    """Run ``script --quick --out tmp_path`` (one BLAS thread); the lines of its ``table``."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1")
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--quick", "--out", str(tmp_path)],
        capture_output=True, text=True, timeout=300, env=env, cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr
    return (tmp_path / table).read_text().splitlines()


def test_kinetic_missing(tmp_path: Path) -> None:
    """Runs on the Kinetic data (shipped inside TensorLy, with its missing-value mask)."""
    table = _quick_table("kinetic_missing.py", "kinetic_missing.txt", tmp_path)
    assert [row.split()[0] for row in table[1:]] == ["weighted", "em"]
    for row in table[1:]:
        fit, held_out = float(row.split()[2]), float(row.split()[3])
        # a rank-3 model of fluorescence data: a few percent off, on fitted and held-out entries
        assert 0 < fit < 0.1 and 0 < held_out < 0.1


def test_indian_pines(tmp_path: Path) -> None:
    """Non-negative CP and Tucker on Indian Pines (shipped inside TensorLy)."""
    table = _quick_table("indian_pines.py", "indian_pines.txt", tmp_path)
    assert [row.split()[0] for row in table[1:]] == ["nonnegative_cp", "tucker"]
    for row in table[1:]:
        compression, err = float(row.split()[3]), float(row.split()[4])
        # a few thousand parameters for 4.2 million entries, about 10% off
        assert compression > 100 and 0 < err < 0.15
