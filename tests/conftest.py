"""Shared fixtures: the backend matrix (namespace x device x dtype) and seeds.

``xp`` runs a test over numpy, array_api_strict and torch (CPU), plus cupy and
torch on CUDA when a GPU is present; absent libraries are skipped with a
reason. ``dtype_name`` runs it over float32 and float64. Use
``to_xp(xp, numpy_array)`` to move data into the backend under test.
"""

from __future__ import annotations

import importlib

import numpy as np
import pytest


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_configure(config):
    config.addinivalue_line("markers", "slow: long-running cases (run with --runslow)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip_slow)


def _cuda_available() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def _torch_cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:
        return False


BACKENDS = ["numpy", "array_api_strict", "torch", "torch_cuda", "cupy"]


class Backend:
    """A namespace under test plus how to move NumPy data into it."""

    def __init__(self, name: str):
        self.name = name
        if name == "numpy":
            import array_api_compat.numpy as xp

            self.xp = xp
            self.device = "cpu"
        elif name == "array_api_strict":
            self.xp = importlib.import_module("array_api_strict")
            self.device = None
        elif name in ("torch", "torch_cuda"):
            import array_api_compat.torch as xp

            self.xp = xp
            self.device = "cuda" if name == "torch_cuda" else "cpu"
        elif name == "cupy":
            import array_api_compat.cupy as xp

            self.xp = xp
            self.device = None
        else:  # pragma: no cover
            raise ValueError(name)

    def asarray(self, a, dtype=None):
        a = np.asarray(a)
        if dtype is None and np.issubdtype(a.dtype, np.floating):
            dtype = getattr(self.xp, a.dtype.name)
        elif isinstance(dtype, str):
            dtype = getattr(self.xp, dtype)
        if self.name == "numpy":
            return np.asarray(a, dtype=dtype)
        if self.name in ("torch", "torch_cuda"):
            import torch

            t = torch.from_numpy(np.array(a, order="C", copy=True))
            if dtype is not None:
                t = t.to(dtype)
            return t.to(self.device)
        if self.name == "cupy":
            import cupy

            return cupy.asarray(a, dtype=dtype)
        return self.xp.asarray(np.array(a, order="C", copy=True), dtype=dtype)

    def __repr__(self):
        return self.name


@pytest.fixture(params=BACKENDS)
def backend(request):
    name = request.param
    if name == "array_api_strict":
        pytest.importorskip("array_api_strict")
    elif name == "torch":
        pytest.importorskip("torch")
    elif name == "torch_cuda":
        pytest.importorskip("torch")
        if not _torch_cuda():
            pytest.skip("torch CUDA not available")
    elif name == "cupy":
        if not _cuda_available():
            pytest.skip("cupy with a CUDA device not available")
    return Backend(name)


@pytest.fixture
def xp(backend):
    return backend.xp


@pytest.fixture(params=["float32", "float64"])
def dtype_name(request):
    return request.param


@pytest.fixture
def rng():
    return np.random.default_rng(12345)


@pytest.fixture(scope="session")
def dask_client():
    """A real ``distributed`` cluster: two worker processes of one thread each.

    The client is not made the default: a test runs its graphs on it inside
    ``with dask_client.as_current():`` (what the library sees is then the
    user's active client), and tests outside keep the local schedulers.
    """
    distributed = pytest.importorskip("distributed")
    import logging

    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       dashboard_address=":0", silence_logs=logging.ERROR)
    client = distributed.Client(cluster, set_as_default=False)
    try:
        yield client
    finally:
        client.close()
        cluster.close()
