"""A worker process killed in the middle of a cp_als run on a real cluster.

The run must either finish with the result of an undisturbed run or raise;
it must never return something else. The cluster is this module's own, so
the killed workers never disturb other tests.
"""

from __future__ import annotations

import logging
import os
import signal
import sys

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
da = pytest.importorskip("dask.array")
cloudpickle = pytest.importorskip("cloudpickle")

from tensorfact import CPTensor, cp_als  # noqa: E402
from tensorfact.datasets import planted_cp  # noqa: E402
from tensorfact.formats import DaskDenseTensor  # noqa: E402

# the helpers below run on the workers, which cannot import this test module
cloudpickle.register_pickle_by_value(sys.modules[__name__])

MAX_ITER = 5


@pytest.fixture(scope="module")
def client():
    cluster = distributed.LocalCluster(n_workers=2, processes=True, threads_per_worker=1,
                                       dashboard_address=":0", silence_logs=logging.CRITICAL)
    c = distributed.Client(cluster, set_as_default=False)
    try:
        yield c
    finally:
        c.close()
        cluster.close()


@pytest.fixture
def problem(tmp_path):
    X, truth = planted_cp((14, 12, 10), rank=3, noise=0.01, rng=3)
    rng = np.random.default_rng(4)
    init = CPTensor([A + 0.1 * rng.standard_normal(A.shape) for A in truth.factors])
    path = tmp_path / "x.npy"
    np.save(path, X)
    return X, init, path


def _same(res, ref, tol):
    for A, B in zip(res.cp.factors, ref.cp.factors):
        np.testing.assert_allclose(A, B, rtol=0, atol=tol)
    np.testing.assert_allclose(res.cp.weights, ref.cp.weights, rtol=tol, atol=0)


def _die_once_when_armed(block, flag_dir):
    """Kill this worker's process the first time it runs after ``armed`` appears."""
    if os.path.exists(os.path.join(flag_dir, "armed")):
        try:
            fd = os.open(os.path.join(flag_dir, "fired"), os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return block
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)
    return block


def _run(client, data, init, callback=None):
    with client.as_current():
        return cp_als(data, 3, init=init, max_iter=MAX_ITER, tol=0, callback=callback)


def _outcome(client, data, init, callback, ref):
    try:
        res = _run(client, data, init, callback)
    except (distributed.KilledWorker, OSError) as exc:  # allowed: a clear error
        assert str(exc)
        return None
    finally:
        client.wait_for_workers(2, timeout=120)  # the nanny restarts the killed one
    _same(res, ref, 1e-12)
    assert res.n_iter == MAX_ITER
    return res


def test_worker_killed_inside_a_compute(client, problem, tmp_path):
    X, init, path = problem
    ref = cp_als(X, 3, init=init, max_iter=MAX_ITER, tol=0)
    flags = tmp_path / "flags"
    flags.mkdir()
    stored = DaskDenseTensor.from_npy(path, chunks=(7, 6, 5)).X
    chunks = stored.map_blocks(_die_once_when_armed, str(flags), dtype=stored.dtype)
    undisturbed = _run(client, DaskDenseTensor(chunks), init)
    _same(undisturbed, ref, 1e-10)

    def arm(iteration, cp, rel_error):
        if iteration == 2:  # the next MTTKRP's first chunk task kills its worker
            (flags / "armed").touch()

    res = _outcome(client, DaskDenseTensor(chunks), init, arm, undisturbed)
    assert (flags / "fired").exists()
    if res is not None:
        _same(res, ref, 1e-10)


def test_worker_killed_between_sweeps_with_the_tensor_persisted(client, problem):
    X, init, path = problem
    ref = cp_als(X, 3, init=init, max_iter=MAX_ITER, tol=0)
    # the chunks live in the workers' memory: the killed worker's share is lost
    with client.as_current():
        Xp = client.persist(da.from_array(X, chunks=(7, 6, 5)))
        distributed.wait(Xp)
    undisturbed = _run(client, Xp, init)
    _same(undisturbed, ref, 1e-10)
    killed = []

    def kill_a_worker(iteration, cp, rel_error):
        if iteration == 2:
            pids = client.run(os.getpid)
            victim = sorted(pids)[0]
            os.kill(pids[victim], signal.SIGKILL)
            killed.append(victim)

    res = _outcome(client, Xp, init, kill_a_worker, undisturbed)
    assert killed
    if res is not None:
        _same(res, ref, 1e-10)
