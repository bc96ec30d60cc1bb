"""The campaign's helper modules live beside its tests (importlib mode: put them on the path)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_HERE = str(Path(__file__).resolve().parent)
if _HERE not in sys.path:
    sys.path.insert(0, _HERE)


@pytest.fixture(autouse=True, scope="module")
def _single_blas_thread():
    # tiny LAPACK calls on a contended machine are far slower with several threads
    threadpoolctl = pytest.importorskip("threadpoolctl")
    import scipy.linalg  # noqa: F401  (load SciPy's BLAS before limiting it)

    with threadpoolctl.threadpool_limits(1):
        yield
