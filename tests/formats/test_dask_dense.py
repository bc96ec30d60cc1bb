"""DaskDenseTensor: the protocol against DenseTensor, the solvers on chunked data."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter

import numpy as np
import pytest

da = pytest.importorskip("dask.array")
dask = pytest.importorskip("dask")

from tensorfact import CPTensor, cp_als, spals  # noqa: E402
from tensorfact.datasets import planted_cp  # noqa: E402
from tensorfact.formats import DaskDenseTensor, DenseTensor, TensorFormat, as_format  # noqa: E402

SHAPE = (13, 11, 17)
#: irregular chunks: unequal sizes in every mode, several chunks per mode
CHUNKS = ((5, 8), (3, 4, 4), (6, 2, 9))


def _close(a, b, tol=1e-12):
    a, b = np.asarray(a), np.asarray(b)
    assert a.shape == b.shape
    scale = max(float(np.max(np.abs(b))), 1.0)
    np.testing.assert_allclose(a, b, rtol=0, atol=tol * scale)


def _factors_close(res_a, res_b, tol=1e-10):
    for A, B in zip(res_a.cp.factors, res_b.cp.factors):
        _close(A, B, tol)
    _close(res_a.cp.weights, res_b.cp.weights, tol)


@pytest.fixture(autouse=True)
def _threaded():
    # the local threaded scheduler, whatever another test module configured
    with dask.config.set(scheduler="threads"):
        yield


@pytest.fixture
def tensor():
    rng = np.random.default_rng(0)
    return rng.standard_normal(SHAPE)


@pytest.fixture
def planted():
    X, truth = planted_cp((14, 12, 10), rank=3, noise=0.01, rng=1)
    rng = np.random.default_rng(2)
    # an initial guess near the truth: both runs converge, so the comparison
    # measures the data format, not the sensitivity of a transient
    init = CPTensor([A + 0.1 * rng.standard_normal(A.shape) for A in truth.factors])
    return X, truth, init


class CountingSource:
    """An in-memory array that counts how often each chunk is read."""

    def __init__(self, arr):
        self.arr = arr
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim
        self.reads: Counter = Counter()
        self._lock = threading.Lock()

    def __getitem__(self, index):
        key = tuple((s.start, s.stop) for s in index)
        with self._lock:
            self.reads[key] += 1
        return self.arr[index].copy()


def _counting(arr, chunks):
    src = CountingSource(arr)
    X = da.from_array(src, chunks=chunks, asarray=False, lock=False, name="counting",
                      meta=np.empty((0,) * arr.ndim, dtype=arr.dtype))
    return X, src


# --------------------------------------------------------------------------- #
# the protocol, member by member, against DenseTensor
# --------------------------------------------------------------------------- #
def test_as_format_returns_a_dask_dense_tensor(tensor):
    X = da.from_array(tensor, chunks=CHUNKS)
    data = as_format(X)
    assert isinstance(data, DaskDenseTensor)
    assert isinstance(data, TensorFormat)
    assert data.shape == SHAPE and data.dtype == np.float64
    assert isinstance(data.like, np.ndarray)
    assert as_format(data) is data


def test_norm_and_mttkrp_match_dense(tensor):
    dense = DenseTensor(tensor)
    rng = np.random.default_rng(3)
    F = [rng.standard_normal((s, 4)) for s in SHAPE]
    for budget in (0, 10**9):
        data = DaskDenseTensor(da.from_array(tensor, chunks=CHUNKS), memory_budget=budget)
        _close(data.norm_sq(), dense.norm_sq())
        for n in (0, 1, 2, 1, 0, 2, -1):  # any order, repeated modes
            _close(data.mttkrp(F, n), dense.mttkrp(F, n))


def test_dimension_tree_follows_factor_updates(tensor):
    # an ALS-like sweep that replaces each factor after its MTTKRP: the kept
    # intermediate must be rebuilt whenever a factor it used has changed
    rng = np.random.default_rng(4)
    data = DaskDenseTensor(da.from_array(tensor, chunks=CHUNKS), memory_budget=10**9)
    F = [rng.standard_normal((s, 3)) for s in SHAPE]
    for _ in range(2):
        for n in range(3):
            M = data.mttkrp(F, n)
            _close(M, DenseTensor(tensor).mttkrp(F, n))
            F[n] = M / np.linalg.norm(M, axis=0)


def test_four_way_protocol_matches_dense():
    rng = np.random.default_rng(5)
    T = rng.standard_normal((5, 6, 4, 7))
    X = da.from_array(T, chunks=((2, 3), (6,), (1, 3), (4, 3)))
    dense = DenseTensor(T)
    F = [rng.standard_normal((s, 3)) for s in T.shape]
    for budget in (0, 10**9):
        data = DaskDenseTensor(X, memory_budget=budget, split_every=2)
        for n in range(4):
            _close(data.mttkrp(F, n), dense.mttkrp(F, n))
    data = DaskDenseTensor(X)
    for n in range(4):
        _close(data.mode_gram(n), dense.mode_gram(n))
    w = rng.standard_normal(3)
    _close(data.residual_norm_sq(w, F), dense.residual_norm_sq(w, F))


def test_mode_gram_residual_and_fibers_match_dense(tensor):
    data = as_format(da.from_array(tensor, chunks=CHUNKS))
    dense = DenseTensor(tensor)
    rng = np.random.default_rng(6)
    for n in range(3):
        _close(data.mode_gram(n), dense.mode_gram(n))
    F = [rng.standard_normal((s, 2)) for s in SHAPE]
    w = rng.standard_normal(2)
    _close(data.residual_norm_sq(w, F), dense.residual_norm_sq(w, F))
    for n in range(3):
        others = [m for m in range(3) if m != n]
        idx = np.stack([rng.integers(0, SHAPE[m], 40) for m in others], axis=1)
        got, want = data.sampled_fibers(n, idx), dense.sampled_fibers(n, idx)
        np.testing.assert_array_equal(got, want)  # a gather: exact
        assert got.strides == want.strides  # same layout for the sampled solve
    empty = data.sampled_fibers(1, np.zeros((0, 2), dtype=np.int64))
    assert empty.shape == (0, SHAPE[1])


@pytest.mark.parametrize("shape,chunks", [
    ((13, 11, 17), CHUNKS),  # Gram path
    ((70, 9, 8), ((30, 40), (4, 5), (8,))),  # range finder, chunks split the mode
    ((70, 9, 8), ((70,), (4, 5), (3, 5))),  # range finder, chunks span the mode
])
def test_leading_subspace_matches_dense(shape, chunks):
    T = np.random.default_rng(7).standard_normal(shape)
    data = DaskDenseTensor(da.from_array(T, chunks=chunks))
    dense = DenseTensor(T)
    for n in range(3):
        k = min(3, shape[n])
        got = data.leading_subspace(n, k, np.random.default_rng(8))
        want = dense.leading_subspace(n, k, np.random.default_rng(8))
        _close(got, want)


def test_check_finite_names_the_argument_and_shares_the_norm_pass(tensor):
    bad = tensor.copy()
    bad[9, 5, 3] = np.nan
    with pytest.raises(ValueError, match="Y contains NaN or Inf"):
        as_format(da.from_array(bad, chunks=CHUNKS), name="Y")
    bad[9, 5, 3] = np.inf
    with pytest.raises(ValueError, match="NaN or Inf"):
        cp_als(da.from_array(bad, chunks=CHUNKS), 2)
    as_format(da.from_array(bad, chunks=CHUNKS), check_finite=False)  # no pass at all
    huge = np.full((4, 4, 4), 1e300)  # squares overflow, values finite: accepted
    as_format(da.from_array(huge, chunks=2))
    X, src = _counting(tensor, CHUNKS)
    data = as_format(X)
    assert data.norm_sq() == pytest.approx(float(np.sum(tensor**2)), rel=1e-12)
    assert set(src.reads.values()) == {1} and len(src.reads) == 18  # one pass for both


def test_a_sweep_reads_each_chunk_n_times_or_twice_with_a_budget(tensor):
    rng = np.random.default_rng(9)
    for budget, reads in ((0, 3), (10**9, 2)):
        X, src = _counting(tensor, CHUNKS)
        data = DaskDenseTensor(X, memory_budget=budget)
        F = [rng.standard_normal((s, 3)) for s in SHAPE]
        for n in range(3):
            F[n] = data.mttkrp(F, n) + 0.0  # a new array, as the solvers make
        assert len(src.reads) == 18
        assert set(src.reads.values()) == {reads}


def test_memory_budget_too_small_for_the_intermediate_reads_per_mode(tensor):
    # R * 11 * 17 * 8 bytes does not fit: modes 1 and 2 get one pass each
    X, src = _counting(tensor, CHUNKS)
    data = DaskDenseTensor(X, memory_budget=1000)
    F = [np.ones((s, 3)) for s in SHAPE]
    for n in range(3):
        F[n] = data.mttkrp(F, n) + 0.0
    assert set(src.reads.values()) == {3}


def test_sampled_fibers_read_only_the_chunks_they_hit(tensor):
    X, src = _counting(tensor, CHUNKS)
    data = DaskDenseTensor(X)
    # mode 1 fibers at (i0, i2) with i0 < 5 and 8 <= i2 < 17: chunks (0, *, 2) only
    idx = np.array([[0, 8], [4, 16], [2, 10], [0, 8]])
    rows = data.sampled_fibers(1, idx)
    np.testing.assert_array_equal(rows, DenseTensor(tensor).sampled_fibers(1, idx))
    assert sorted(src.reads) == [((0, 5), (0, 3), (8, 17)), ((0, 5), (3, 7), (8, 17)),
                                 ((0, 5), (7, 11), (8, 17))]
    assert set(src.reads.values()) == {1}


def test_bad_arguments_are_named(tensor):
    X = da.from_array(tensor, chunks=CHUNKS)
    with pytest.raises(TypeError, match="X must be a dask array"):
        DaskDenseTensor(tensor)
    with pytest.raises(ValueError, match="at least 2 modes"):
        as_format(da.ones(5, chunks=2))
    with pytest.raises(ValueError, match="empty mode"):
        as_format(da.ones((3, 0, 2), chunks=2))
    with pytest.raises(TypeError, match="complex"):
        as_format(X.astype(np.complex128))
    unknown = X[X[:, 0, 0] > 0]
    with pytest.raises(ValueError, match="unknown chunk sizes"):
        as_format(unknown)
    with pytest.raises(ValueError, match="memory_budget"):
        DaskDenseTensor(X, memory_budget=-1)
    with pytest.raises(ValueError, match="split_every"):
        DaskDenseTensor(X, split_every=1)
    data = DaskDenseTensor(X)
    with pytest.raises(ValueError, match=r"factors\[2\]"):
        data.mttkrp([np.ones((13, 2)), np.ones((11, 2)), np.ones((5, 2))], 0)
    with pytest.raises(ValueError, match="mode=3"):
        data.mttkrp([np.ones((s, 2)) for s in SHAPE], 3)
    with pytest.raises(ValueError, match="out of range"):
        data.sampled_fibers(0, np.array([[0, 17]]))


def test_max_abs_and_scaled_match_dense(tensor):
    data = DaskDenseTensor(da.from_array(tensor, chunks=CHUNKS), memory_budget=10**9)
    dense = DenseTensor(tensor)
    assert data.max_abs() == float(np.max(np.abs(tensor)))
    half = data.scaled(0.5)
    assert isinstance(half, DaskDenseTensor) and half.memory_budget == 10**9
    assert half.norm_sq() == pytest.approx(data.norm_sq() / 4, rel=1e-14)
    F = [np.ones((s, 2)) for s in SHAPE]
    _close(half.mttkrp(F, 1), 0.5 * dense.mttkrp(F, 1))


def test_tensorfact_imports_and_runs_without_dask():
    code = (
        "import sys\n"
        "sys.modules['dask'] = None\n"  # makes 'import dask' fail
        "sys.modules['distributed'] = None\n"
        "import numpy as np, tensorfact\n"
        "from tensorfact.decomposition._checkpoint import Checkpoint\n"
        "tensorfact.cp_als(np.ones((3, 4, 5)), 1, max_iter=1)\n"
        "try:\n"
        "    from tensorfact.formats import DaskDenseTensor\n"
        "except ImportError as exc:\n"
        "    assert 'tensorfact[dask]' in str(exc)\n"
        "else:\n"
        "    raise SystemExit('imported without dask')\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_integer_data_is_promoted_lazily():
    T = np.arange(24, dtype=np.int32).reshape(2, 3, 4)
    data = as_format(da.from_array(T, chunks=2))
    assert data.dtype == np.float64
    assert data.norm_sq() == float(np.sum(T.astype(np.float64) ** 2))


# --------------------------------------------------------------------------- #
# the solvers on chunked data (local threaded scheduler)
# --------------------------------------------------------------------------- #
def test_cp_als_on_dask_matches_numpy(planted):
    X, truth, init = planted
    ref = cp_als(X, 3, init=init, max_iter=15, tol=0)
    chunks = ((6, 8), (5, 7), (3, 3, 4))
    for data in (da.from_array(X, chunks=chunks),
                 DaskDenseTensor(da.from_array(X, chunks=chunks), memory_budget=10**8)):
        res = cp_als(data, 3, init=init, max_iter=15, tol=0)
        _factors_close(res, ref)
        assert res.rel_error == pytest.approx(ref.rel_error, rel=1e-10)
    # the SVD initialisation makes the same draws and reads
    a = cp_als(X, 3, max_iter=5, tol=0, rng=0)
    b = cp_als(da.from_array(X, chunks=chunks), 3, max_iter=5, tol=0, rng=0)
    _factors_close(a, b)


def test_spals_on_dask_matches_numpy(planted):
    X, truth, init = planted
    Xd = da.from_array(X, chunks=((6, 8), (5, 7), (3, 3, 4)))
    a = spals(X, 3, init=init, max_iter=8, exact_fit_every=4, rng=np.random.default_rng(11))
    b = spals(Xd, 3, init=init, max_iter=8, exact_fit_every=4, rng=np.random.default_rng(11))
    _factors_close(a, b)
    assert b.rel_error == pytest.approx(a.rel_error, rel=1e-10)
    # from a random start too (same draws: same samples, identical fibers)
    a = spals(X, 3, max_iter=6, rng=np.random.default_rng(12))
    b = spals(Xd, 3, max_iter=6, rng=np.random.default_rng(12))
    _factors_close(a, b)


def test_inputs_are_not_mutated(planted):
    X, truth, init = planted
    X0 = X.copy()
    F0 = [A.copy() for A in init.factors]
    w0 = np.array(init.weights, copy=True)
    Xd = da.from_array(X, chunks=5)
    cp_als(Xd, 3, init=init, max_iter=3, tol=0)
    spals(Xd, 3, init=init, max_iter=3, rng=0, exact_fit_every=1)
    np.testing.assert_array_equal(X, X0)
    for A, A0 in zip(init.factors, F0):
        np.testing.assert_array_equal(A, A0)
    np.testing.assert_array_equal(init.weights, w0)


def test_memory_mapped_npy_store(planted, tmp_path):
    X, truth, init = planted
    path = tmp_path / "x.npy"
    np.save(path, X)
    ref = cp_als(X, 3, init=init, max_iter=10, tol=0)
    mm = np.load(path, mmap_mode="r")
    res = cp_als(da.from_array(mm, chunks=(5, 7, 4)), 3, init=init, max_iter=10, tol=0)
    _factors_close(res, ref)
    data = DaskDenseTensor.from_npy(path, chunks=(5, 7, 4))
    assert data.X.numblocks == (3, 2, 3)
    res = cp_als(data, 3, init=init, max_iter=10, tol=0)
    _factors_close(res, ref)
    np.testing.assert_array_equal(np.load(path), X)  # the store is only read


def test_zarr_store(planted, tmp_path):
    zarr = pytest.importorskip("zarr")
    X, truth, init = planted
    z = zarr.create_array(store=str(tmp_path / "x.zarr"), shape=X.shape, chunks=(5, 6, 4),
                          dtype="float64")
    z[...] = X
    ref = cp_als(X, 3, init=init, max_iter=8, tol=0)
    res = cp_als(da.from_zarr(str(tmp_path / "x.zarr")), 3, init=init, max_iter=8, tol=0)
    _factors_close(res, ref)


# --------------------------------------------------------------------------- #
# the same on a real distributed cluster (two worker processes)
# --------------------------------------------------------------------------- #
def test_protocol_on_a_local_cluster(dask_client, tensor):
    distributed = pytest.importorskip("distributed")
    X = da.from_array(tensor, chunks=CHUNKS)
    dense = DenseTensor(tensor)
    rng = np.random.default_rng(13)
    F = [rng.standard_normal((s, 3)) for s in SHAPE]
    with dask_client.as_current(), distributed.get_task_stream(client=dask_client) as ts:
        data = as_format(X)
        _close(data.norm_sq(), dense.norm_sq())
        for n in range(3):
            _close(data.mttkrp(F, n), dense.mttkrp(F, n))
        _close(data.mode_gram(1), dense.mode_gram(1))
        _close(data.residual_norm_sq(np.ones(3), F), dense.residual_norm_sq(np.ones(3), F))
        idx = np.stack([rng.integers(0, 13, 30), rng.integers(0, 11, 30)], axis=1)
        np.testing.assert_array_equal(data.sampled_fibers(2, idx),
                                      dense.sampled_fibers(2, idx))
    assert len(ts.data) > 0  # the graphs ran on the cluster's workers


def test_cp_als_and_spals_on_a_local_cluster(dask_client, planted, tmp_path):
    X, truth, init = planted
    path = tmp_path / "x.npy"
    np.save(path, X)
    chunks = (7, 6, 5)
    ref = cp_als(X, 3, init=init, max_iter=5, tol=0)
    ref_s = spals(X, 3, init=init, max_iter=4, rng=np.random.default_rng(14))
    with dask_client.as_current():
        # the graph holds the file's path: the workers read their chunks themselves
        res = cp_als(DaskDenseTensor.from_npy(path, chunks=chunks), 3, init=init,
                     max_iter=5, tol=0)
        res_t = cp_als(DaskDenseTensor(da.from_array(X, chunks=chunks), memory_budget=10**8),
                       3, init=init, max_iter=5, tol=0)
        res_s = spals(da.from_array(X, chunks=chunks), 3, init=init, max_iter=4,
                      rng=np.random.default_rng(14))
    _factors_close(res, ref)
    _factors_close(res_t, ref)
    _factors_close(res_s, ref_s)
