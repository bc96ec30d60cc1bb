"""Checkpoint: atomic npz snapshots of a CP run, resumed through ``init=`` and ``rng=``."""

from __future__ import annotations

import os
import pickle
import zipfile

import numpy as np
import pytest

from tensorfact import CPTensor, cp_als, spals
from tensorfact.datasets import planted_cp
from tensorfact.decomposition import _checkpoint
from tensorfact.decomposition._checkpoint import Checkpoint, CheckpointState

MAX_ITER = 10


class Crash(Exception):
    """Stands for the process being killed."""


@pytest.fixture
def X():
    return planted_cp((15, 14, 13), rank=3, noise=0.05, rng=0)[0]


def _crashing(checkpoint, at):
    def callback(iteration, cp, rel_error):
        checkpoint(iteration, cp, rel_error)
        if iteration == at:
            raise Crash
    return callback


def _same(res, ref, tol=1e-10):
    for A, B in zip(res.cp.factors, ref.cp.factors):
        np.testing.assert_allclose(A, B, rtol=0, atol=tol)
    np.testing.assert_allclose(res.cp.weights, ref.cp.weights, rtol=tol, atol=0)


def test_resumed_cp_als_equals_an_uninterrupted_run(X, tmp_path):
    path = tmp_path / "run.npz"
    ref = cp_als(X, 3, init="random", max_iter=MAX_ITER, tol=0, rng=1)
    with pytest.raises(Crash):
        cp_als(X, 3, init="random", max_iter=MAX_ITER, tol=0, rng=1,
               callback=_crashing(Checkpoint(path, every=3), at=5))
    state = Checkpoint.load(path)
    assert isinstance(state, CheckpointState)
    assert state.iteration == 3 and state.rng is None
    assert state.rel_error == ref.history.rel_error[2]
    res = cp_als(X, 3, init=state.cp, max_iter=MAX_ITER - state.iteration, tol=0)
    _same(res, ref)


def test_resumed_spals_equals_an_uninterrupted_run(X, tmp_path):
    path = tmp_path / "run.npz"
    ref = spals(X, 3, max_iter=MAX_ITER, rng=np.random.default_rng(2))
    gen = np.random.default_rng(2)
    with pytest.raises(Crash):
        spals(X, 3, max_iter=MAX_ITER, rng=gen,
              callback=_crashing(Checkpoint(path, every=2, rng=gen), at=5))
    state = Checkpoint.load(path)
    assert state.iteration == 4
    res = spals(X, 3, init=state.cp, rng=state.rng, max_iter=MAX_ITER - state.iteration)
    _same(res, ref)
    # without the generator's state the continuation draws other samples
    other = spals(X, 3, init=state.cp, rng=np.random.default_rng(2),
                  max_iter=MAX_ITER - state.iteration)
    assert not np.allclose(other.cp.factors[0], ref.cp.factors[0], rtol=0, atol=1e-10)


def test_resumed_run_on_a_dask_array(X, tmp_path):
    da = pytest.importorskip("dask.array")
    dask = pytest.importorskip("dask")
    path = tmp_path / "run.npz"
    init = CPTensor([np.random.default_rng(3).standard_normal((s, 3)) for s in X.shape])
    ref = cp_als(X, 3, init=init, max_iter=6, tol=0)
    with dask.config.set(scheduler="threads"):
        Xd = da.from_array(X, chunks=(8, 7, 13))
        with pytest.raises(Crash):
            cp_als(Xd, 3, init=init, max_iter=6, tol=0,
                   callback=_crashing(Checkpoint(path, every=2), at=3))
        state = Checkpoint.load(path)
        res = cp_als(Xd, 3, init=state.cp, max_iter=6 - state.iteration, tol=0,
                     callback=Checkpoint(path, every=2, start=state.iteration))
    _same(res, ref)
    assert Checkpoint.load(path).iteration == 6


def test_the_file_is_a_plain_npz(X, tmp_path):
    path = tmp_path / "run.npz"
    gen = np.random.default_rng(4)
    spals(X, 2, max_iter=2, rng=gen, callback=Checkpoint(path, rng=gen))
    with np.load(path, allow_pickle=False) as f:
        arrays = {k: f[k] for k in f.files}
    assert all(a.dtype.kind in "fiuU" for a in arrays.values())
    assert zipfile.is_zipfile(path)
    assert int(arrays["iteration"]) == 2
    assert '"bit_generator": "PCG64"' in str(arrays["rng_state"])
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]  # no temporary file left
    state = Checkpoint.load(path)
    assert state.rng.random() == gen.random()  # the same state as the solver's generator


def test_every_and_start_number_the_iterations(tmp_path):
    cp = CPTensor([np.ones((3, 2)), np.ones((4, 2))])
    ck = Checkpoint(tmp_path / "c.npz", every=2, start=3)
    ck(1, cp, 0.5)  # iteration 4 overall: saved
    assert ck.last_saved == 4
    ck(2, cp, 0.25)  # 5: not saved
    assert ck.last_saved == 4
    assert Checkpoint.load(tmp_path / "c.npz").rel_error == 0.5


def _failing_savez(fh, **arrays):
    fh.write(b"PK\x03\x04 a partial archive")
    raise OSError("disk full")


def test_a_failed_save_leaves_the_previous_checkpoint_and_no_partial_file(tmp_path,
                                                                        monkeypatch):
    path = tmp_path / "run.npz"
    cp = CPTensor([np.ones((3, 2)), np.full((4, 2), 2.0)], weights=np.array([1.0, 3.0]))
    Checkpoint(path)(1, cp, 0.5)
    before = path.read_bytes()
    monkeypatch.setattr(_checkpoint.np, "savez", _failing_savez)
    with pytest.raises(OSError, match="disk full"):
        Checkpoint(path)(2, cp, 0.25)
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]
    assert Checkpoint.load(path).iteration == 1
    # a first save that fails leaves nothing at all
    fresh = tmp_path / "fresh.npz"
    with pytest.raises(OSError):
        Checkpoint(fresh)(1, cp, 0.5)
    assert not fresh.exists()
    assert sorted(os.listdir(tmp_path)) == ["run.npz"]


@pytest.mark.parametrize("bit_generator", ["PCG64", "PCG64DXSM", "MT19937", "Philox", "SFC64"])
def test_every_numpy_bit_generator_is_restored(tmp_path, bit_generator):
    gen = np.random.Generator(getattr(np.random, bit_generator)(5))
    gen.standard_normal(7)
    ck = Checkpoint(tmp_path / "c.npz", rng=gen)
    ck(1, CPTensor([np.ones((2, 1)), np.ones((3, 1))]), 0.0)
    restored = Checkpoint.load(tmp_path / "c.npz").rng
    np.testing.assert_array_equal(restored.standard_normal(5), gen.standard_normal(5))


def test_load_into_another_dtype_with_like(tmp_path):
    cp = CPTensor([np.ones((3, 2)), np.ones((4, 2))])
    Checkpoint(tmp_path / "c.npz")(1, cp, 0.0)
    state = Checkpoint.load(tmp_path / "c.npz", like=np.zeros(1, dtype=np.float32))
    assert all(A.dtype == np.float32 for A in state.cp.factors)
    assert state.cp.weights.dtype == np.float32


def test_bad_arguments_are_named(tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        Checkpoint(tmp_path / "missing" / "c.npz")
    with pytest.raises(ValueError, match="is a folder"):
        Checkpoint(tmp_path)
    with pytest.raises(TypeError, match="path must be"):
        Checkpoint(3)
    with pytest.raises(ValueError, match="every"):
        Checkpoint(tmp_path / "c.npz", every=0)
    with pytest.raises(TypeError, match="every"):
        Checkpoint(tmp_path / "c.npz", every=1.5)
    with pytest.raises(ValueError, match="start"):
        Checkpoint(tmp_path / "c.npz", start=-1)
    with pytest.raises(TypeError, match="rng must be the numpy.random.Generator"):
        Checkpoint(tmp_path / "c.npz", rng=0)
    with pytest.raises(TypeError, match="CPTensor"):
        Checkpoint(tmp_path / "c.npz")(1, np.ones((2, 2)), 0.1)


def test_load_rejects_what_is_not_a_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError):
        Checkpoint.load(tmp_path / "absent.npz")
    other = tmp_path / "other.npz"
    np.savez(other, a=np.ones(3))
    with pytest.raises(ValueError, match="not a tensorfact checkpoint"):
        Checkpoint.load(other)
    pickled = tmp_path / "pickled.npy"
    pickled.write_bytes(pickle.dumps({"factors": [1, 2]}))
    with pytest.raises(ValueError, match="not a tensorfact checkpoint"):
        Checkpoint.load(pickled)
    objects = tmp_path / "objects.npy"
    np.save(objects, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="not a tensorfact checkpoint"):
        Checkpoint.load(objects)
    cp = CPTensor([np.ones((2, 1)), np.ones((3, 1))])
    path = tmp_path / "c.npz"
    Checkpoint(path)(1, cp, 0.0)
    with np.load(path) as f:
        arrays = {k: f[k] for k in f.files if k != "factor_1"}
    np.savez(path, **arrays)
    with pytest.raises(ValueError, match="incomplete checkpoint"):
        Checkpoint.load(path)
