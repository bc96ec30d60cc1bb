"""DaskSparseTensor: stores on disk, streaming builders, the protocol on partitions."""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("dask")

from tensorfact import cp_als, spals  # noqa: E402
from tensorfact._kernels.sparse import cp_values_numba  # noqa: E402
from tensorfact.datasets import (  # noqa: E402
    planted_sparse_cp,
    planted_sparse_store,
    read_tns,
    write_tns,
)
from tensorfact.formats import DaskSparseTensor, SparseTensor, as_format  # noqa: E402
from tensorfact.formats.dask_sparse import _store  # noqa: E402

TOL = 1e-12


def _tns_text(coords, values, base=1, comments=True):
    lines = ["# a test tensor\n"] if comments else []
    for c, v in zip(coords, values):
        lines.append(" ".join(str(int(i) + base) for i in c) + f" {v:.17g}\n")
        if comments and len(lines) % 7 == 0:
            lines.append("\n")
    return "".join(lines)


def _write(path, text):
    if str(path).endswith(".gz"):
        with gzip.open(path, "wt") as f:
            f.write(text)
    else:
        path.write_text(text)


def _random_entries(rng, shape, n, dup_frac=0.3):
    coords = np.stack([rng.integers(0, d, n) for d in shape], axis=1)
    k = int(dup_frac * n)
    coords[-k:] = coords[rng.integers(0, n - k, k)]  # repeated coordinates
    perm = rng.permutation(n)
    return coords[perm], rng.standard_normal(n)[perm]


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """A planted SparseTensor and the same data as a store of several partitions."""
    X, _ = planted_sparse_cp((23, 17, 19), 3, 1500, noise=0.1, rng=3)
    D = DaskSparseTensor.from_sparse(X, tmp_path_factory.mktemp("pair") / "s", 5)
    return X, D


# --------------------------------------------------------------------------- #
# builders and round trips
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("name", ["t.tns", "t.tns.gz"])
def test_tns_round_trip_is_exact(tmp_path, name):
    rng = np.random.default_rng(0)
    coords, values = _random_entries(rng, (9, 11, 7), 900)
    path = tmp_path / name
    _write(path, _tns_text(coords, values))
    D = DaskSparseTensor.from_tns(path, tmp_path / "store", partition_nnz=100)
    ref = read_tns(path)
    assert D.npartitions > 3 and D.nnz == ref.nnz < 900  # duplicates summed
    S = D.to_sparse()
    assert S.shape == ref.shape == (9, 11, 7)
    np.testing.assert_array_equal(S.coords, ref.coords)
    np.testing.assert_array_equal(S.values, ref.values)  # summed in file order, bitwise
    # primary partitions: consecutive key ranges, fiber partitions: sorted keys
    meta = _store.read_meta(D.store)
    for a, b in zip(meta.primary[:-1], meta.primary[1:]):
        assert a.last < b.first
    for n in range(3):
        keys = np.concatenate([p.arrays["keys"].open() for p in meta.fibers[n]])
        assert np.all(keys[1:] >= keys[:-1]) and keys.shape[0] == D.nnz
    assert not (D.store / "_tmp").exists()


def test_tns_shape_index_base_and_missing_values(tmp_path):
    path = tmp_path / "z.tns"
    path.write_text("0 0 0\n2 1 0\n0 0 0\n")
    D = DaskSparseTensor.from_tns(path, tmp_path / "s", index_base=0, shape=(4, 3, 2),
                                  has_values=False)
    ref = read_tns(path, index_base=0, shape=(4, 3, 2), has_values=False)
    np.testing.assert_array_equal(D.to_sparse().to_dense(), ref.to_dense())
    assert D.shape == (4, 3, 2) and D.to_sparse().values.tolist() == [2.0, 1.0]


def test_from_tns_matches_from_sparse(tmp_path):
    X, _ = planted_sparse_cp((15, 12, 10), 2, 600, rng=1)
    write_tns(tmp_path / "x.tns", X)
    a = DaskSparseTensor.from_tns(tmp_path / "x.tns", tmp_path / "a", partition_nnz=150)
    b = DaskSparseTensor.from_sparse(X, tmp_path / "b", 4)
    for D in (a, b):
        S = D.to_sparse()
        np.testing.assert_array_equal(S.coords, X.coords)
        np.testing.assert_array_equal(S.values, X.values)


def test_shape_beyond_int64_uses_several_key_words(tmp_path):
    # the Amazon tensor's shape: the C-order linear index exceeds int64
    shape = (4821207, 1774269, 1805187)
    rng = np.random.default_rng(5)
    coords, values = _random_entries(rng, shape, 400)
    coords[:50, 0] = 7  # many entries in one slice, with duplicates above
    path = tmp_path / "amazon.tns"
    _write(path, _tns_text(coords, values, comments=False))
    D = DaskSparseTensor.from_tns(path, tmp_path / "s", partition_nnz=60, shape=shape)
    ref = SparseTensor(coords, values, shape)
    S = D.to_sparse()
    np.testing.assert_array_equal(S.coords, ref.coords)
    np.testing.assert_allclose(S.values, ref.values, rtol=0, atol=1e-15)
    idx = ref.coords[::9][:, 1:]
    a, b = D.sampled_fibers(0, idx), ref.sampled_fibers(0, idx)
    np.testing.assert_array_equal(a.row, b.row)
    np.testing.assert_array_equal(a.col, b.col)
    np.testing.assert_allclose(a.val, b.val, rtol=0, atol=1e-15)


def test_mode_without_fiber_index(tmp_path):
    # 5 modes of 2^16: the other modes' linear index of any mode needs 64 bits
    shape = (1 << 16,) * 5
    rng = np.random.default_rng(2)
    X = SparseTensor(np.stack([rng.integers(0, 1 << 16, 50) for _ in shape], 1),
                     rng.standard_normal(50), shape)
    D = DaskSparseTensor.from_sparse(X, tmp_path / "s", 2)
    F = [rng.standard_normal((s, 2)) for s in shape]
    np.testing.assert_allclose(D.mttkrp(F, 3), X.mttkrp(F, 3), rtol=0, atol=TOL)
    with pytest.raises(NotImplementedError, match="fiber index"):
        D.sampled_fibers(0, np.zeros((1, 4), dtype=np.int64))


@pytest.mark.parametrize("text, line", [
    ("1 1 1 1.0\n2 2 2\n", 2),                 # wrong column count
    ("1 1 1 1.0\n# c\n2 x 2 1.0\n", 3),        # non-numeric
    ("1 1 1 1.0\n1 1 1.5 2.0\n", 2),           # non-integer index
    ("1 1 1 1.0\n\n1 0 1 2.0\n", 3),           # below index_base
    ("1 1 1 1.0\n1 1 1 nan\n", 2),             # non-finite value
])
@pytest.mark.parametrize("gz", [False, True])
def test_malformed_tns_keeps_read_tns_errors(tmp_path, text, line, gz):
    path = tmp_path / ("bad.tns.gz" if gz else "bad.tns")
    _write(path, text)
    with pytest.raises(ValueError) as ref:
        read_tns(path)
    store = tmp_path / "s"
    with pytest.raises(ValueError) as err:
        DaskSparseTensor.from_tns(path, store)
    assert str(err.value) == str(ref.value)
    assert f"line {line}:" in str(err.value) and str(path) in str(err.value)
    assert not store.exists()  # nothing left behind


def test_builders_refuse_bad_input(tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("")
    (tmp_path / "t.tns").write_text("1 1 1.0\n")
    with pytest.raises(ValueError, match="not an empty directory"):
        DaskSparseTensor.from_tns(tmp_path / "t.tns", tmp_path / "full")
    with pytest.raises(FileNotFoundError, match="nothere.tns"):
        DaskSparseTensor.from_tns(tmp_path / "nothere.tns", tmp_path / "s")
    with pytest.raises(ValueError, match="no data"):
        (tmp_path / "e.tns").write_text("# only a comment\n")
        DaskSparseTensor.from_tns(tmp_path / "e.tns", tmp_path / "s")
    with pytest.raises(TypeError, match="SparseTensor"):
        DaskSparseTensor.from_sparse(np.ones((2, 2)), tmp_path / "s2")
    with pytest.raises(ValueError, match="partition_nnz"):
        DaskSparseTensor.from_tns(tmp_path / "t.tns", tmp_path / "s3", partition_nnz=0)


# --------------------------------------------------------------------------- #
# damaged stores: a clear error naming the file, never a wrong answer
# --------------------------------------------------------------------------- #
@pytest.fixture
def small_store(tmp_path):
    X, _ = planted_sparse_cp((10, 9, 8), 2, 300, rng=0)
    return X, DaskSparseTensor.from_sparse(X, tmp_path / "s", 3)


@pytest.mark.parametrize("name", ["primary-00001-values.npy", "mode2-00000-keys.npy"])
def test_truncated_partition_file(small_store, name):
    X, D = small_store
    path = D.store / name
    data = path.read_bytes()
    path.write_bytes(data[:-16])
    with pytest.raises(ValueError, match=f"{name} is truncated"):
        DaskSparseTensor(D.store)
    # truncated after the store was opened: the read fails, no partial result
    F = [np.ones((s, 2)) for s in X.shape]
    with pytest.raises(ValueError, match=f"{name} is truncated"):
        D.mttkrp(F, 0) if name.startswith("primary") else D.sampled_fibers(
            2, X.coords[:, :2])


def test_missing_partition_file(small_store):
    X, D = small_store
    (D.store / "primary-00002-coords.npy").unlink()
    with pytest.raises(FileNotFoundError, match="primary-00002-coords.npy is missing"):
        DaskSparseTensor.from_store(D.store)
    with pytest.raises(FileNotFoundError, match="primary-00002-coords.npy"):
        D.residual_norm_sq(np.ones(2), [np.ones((s, 2)) for s in X.shape])


def test_corrupted_file_is_caught_by_checksums(small_store):
    _, D = small_store
    path = D.store / "mode1-00000-values.npy"
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF
    path.write_bytes(bytes(data))
    DaskSparseTensor(D.store)  # sizes agree
    with pytest.raises(ValueError, match="mode1-00000-values.npy is corrupted"):
        D.verify()
    with pytest.raises(ValueError, match="corrupted"):
        DaskSparseTensor(D.store, verify=True)


@pytest.mark.parametrize("edit, match", [
    (lambda m: m.update(version=99), "unsupported version"),
    (lambda m: m.update(format="other"), "format"),
    (lambda m: m["primary"][0]["files"]["values"].update(name="../x.npy"), "plain .npy"),
    (lambda m: m.update(nnz=m["nnz"] + 1), "hold"),
    (lambda m: m["primary"][1].update(first=m["primary"][0]["first"]), "overlaps"),
    (lambda m: m.update(dtype="object"), "dtype"),
])
def test_malformed_meta(small_store, edit, match):
    _, D = small_store
    path = D.store / "meta.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=match):
        DaskSparseTensor(D.store)


def test_no_store(tmp_path):
    with pytest.raises(FileNotFoundError, match="not a sparse tensor store"):
        DaskSparseTensor(tmp_path)


# --------------------------------------------------------------------------- #
# the protocol, against SparseTensor
# --------------------------------------------------------------------------- #
def test_protocol_members_equal_sparse_tensor(pair):
    X, D = pair
    assert as_format(D) is D
    assert D.xp is X.xp and D.dtype == X.dtype and D.shape == X.shape
    assert abs(D.norm_sq() - X.norm_sq()) <= TOL * X.norm_sq()
    rng = np.random.default_rng(1)
    F = [rng.standard_normal((s, 4)) for s in X.shape]
    w = rng.random(4) + 0.5
    for n in range(3):
        np.testing.assert_allclose(D.mttkrp(F, n), X.mttkrp(F, n), rtol=0, atol=TOL)
        np.testing.assert_allclose(D.mode_gram(n), X.mode_gram(n), rtol=0, atol=TOL)
        np.testing.assert_allclose(np.abs(D.leading_subspace(n, 3, None)),
                                   np.abs(X.leading_subspace(n, 3, None)), rtol=0, atol=1e-10)
        idx = np.stack([rng.integers(0, X.shape[m], 40) for m in range(3) if m != n], 1)
        idx[:10] = X.coords[rng.integers(0, X.nnz, 10)][:, [m for m in range(3) if m != n]]
        a, b = D.sampled_fibers(n, idx), X.sampled_fibers(n, idx)
        assert a.n_columns == b.n_columns == X.shape[n] and a.val.shape[0] > 10
        np.testing.assert_array_equal(a.row, b.row)
        np.testing.assert_array_equal(a.col, b.col)
        np.testing.assert_array_equal(a.val, b.val)
    r1, r2 = D.residual_norm_sq(w, F), X.residual_norm_sq(w, F)
    assert abs(r1 - r2) <= TOL * r2
    D.check_finite("X")


def test_mttkrp_float32_and_4_way(tmp_path):
    rng = np.random.default_rng(4)
    shape = (6, 5, 7, 4)
    X = SparseTensor(np.stack([rng.integers(0, d, 300) for d in shape], 1),
                     rng.standard_normal(300).astype(np.float32), shape)
    D = DaskSparseTensor.from_sparse(X, tmp_path / "s", 3)
    assert D.dtype == np.float32
    F = [rng.standard_normal((s, 3)).astype(np.float32) for s in shape]
    for n in range(4):
        out = D.mttkrp(F, n)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, X.mttkrp(F, n), rtol=1e-5, atol=1e-5)
    assert abs(D.norm_sq() - X.norm_sq()) <= 1e-6 * X.norm_sq()


def test_argument_errors(pair):
    X, D = pair
    F = [np.ones((s, 2)) for s in X.shape]
    with pytest.raises(ValueError, match="out of range"):
        D.mttkrp(F, 3)
    with pytest.raises(ValueError, match=r"factors\[1\] must have shape"):
        D.mttkrp([F[0], F[0], F[2]], 0)
    with pytest.raises(ValueError, match=r"other_idx\[0, 1\] = 99"):
        D.sampled_fibers(0, np.array([[0, 99]]))
    with pytest.raises(ValueError, match="other_idx must have shape"):
        D.sampled_fibers(0, np.zeros((3, 3), dtype=int))
    with pytest.raises(TypeError, match="integer"):
        D.sampled_fibers(0, np.zeros((3, 2)))
    with pytest.raises(ValueError, match="weights"):
        D.residual_norm_sq(np.ones(3), F)


def test_large_mode_gram_is_refused(pair, monkeypatch):
    X, D = pair
    monkeypatch.setattr(DaskSparseTensor, "MAX_GRAM_SIZE", 18)
    D.mode_gram(1)  # 17 <= 18
    with pytest.raises(ValueError, match="init='random'"):
        D.mode_gram(0)
    # the SVD start of a large mode is a range-finder sketch (one MTTKRP): orthonormal
    # columns in the range of the unfolding, zero on rows without data
    U = D.leading_subspace(0, 2, np.random.default_rng(0))
    np.testing.assert_allclose(U.T @ U, np.eye(2), atol=1e-12)
    empty = np.setdiff1d(np.arange(X.shape[0]), np.asarray(X.coords)[:, 0])
    np.testing.assert_allclose(U[empty], 0.0, atol=1e-12)
    assert cp_als(D, 2, init="svd", max_iter=3).rel_error < 1.0


def test_check_finite_finds_nan(tmp_path):
    X = SparseTensor([[0, 0], [1, 1]], [1.0, 2.0], (2, 2))
    D = DaskSparseTensor.from_sparse(X, tmp_path / "s", 2)
    v = D.store / "primary-00001-values.npy"
    arr = np.load(v)
    arr[0] = np.nan
    np.save(v, arr)  # same size: passes the size check, values are read again
    D = DaskSparseTensor(D.store)
    with pytest.raises(ValueError, match="T contains NaN"):
        D.check_finite("T")


def test_bytes_read_counter(pair):
    X, D = pair
    D.reset_bytes_read()
    D.mttkrp([np.ones((s, 2)) for s in X.shape], 1)
    assert D.bytes_read == D.primary_nbytes == X.nnz * (3 * 4 + 8)
    assert D.reset_bytes_read() == D.primary_nbytes and D.bytes_read == 0
    assert D.store_nbytes > D.primary_nbytes


def test_sampled_fibers_open_only_the_partitions_hit(tmp_path, monkeypatch):
    X, _ = planted_sparse_cp((40, 30, 20), 2, 4000, rng=7)
    D = DaskSparseTensor.from_sparse(X, tmp_path / "s", 8)
    parts = _store.read_meta(D.store).fibers[0]
    assert len(parts) >= 6
    target = parts[3]
    # samples whose keys fall in partition 3's range: existing fibers there and a gap key
    keys = target.arrays["keys"].open()
    sel = np.unique(keys)[::3]
    gap = np.setdiff1d(np.arange(keys[0], keys[-1]), keys)[:1]  # no fiber at that key
    sel = np.concatenate([sel, gap])
    idx = np.stack(np.unravel_index(sel, (30, 20)), axis=1)
    opened = []
    real_open = _store.ArrayRef.open

    def spy(self):
        opened.append(os.path.basename(self.path))
        return real_open(self)

    monkeypatch.setattr(_store.ArrayRef, "open", spy)
    D.reset_bytes_read()
    rows = D.sampled_fibers(0, idx)
    assert sorted(set(opened)) == ["mode0-00003-index.npy", "mode0-00003-keys.npy",
                                   "mode0-00003-values.npy"]
    n_s = idx.shape[0]
    probes = 2 * int(np.ceil(np.log2(target.nnz + 1))) * n_s * 8
    assert D.bytes_read == probes + rows.val.shape[0] * (4 + 8)
    assert D.bytes_read < sum(r.data_nbytes for r in target.arrays.values())
    ref = X.sampled_fibers(0, idx)
    np.testing.assert_array_equal(rows.val, ref.val)


# --------------------------------------------------------------------------- #
# solvers: same iterates as on the in-memory SparseTensor
# --------------------------------------------------------------------------- #
def _run_solvers(X, D):
    out = {}
    for name, data in (("mem", X), ("store", D)):
        als = cp_als(data, 3, init="svd", max_iter=6, tol=0, rng=0)
        sp = spals(data, 3, max_iter=4, rng=0, exact_fit_every=2)
        out[name] = (als, sp)
    for a, b in zip(out["mem"], out["store"]):
        assert a.n_iter == b.n_iter
        np.testing.assert_allclose(b.cp.weights, a.cp.weights, rtol=1e-10)
        for A, B_ in zip(a.cp.factors, b.cp.factors):
            np.testing.assert_allclose(B_, A, rtol=0, atol=1e-10)
        assert abs(a.rel_error - b.rel_error) < 1e-10


def test_solvers_match_sparse_tensor_threaded(pair):
    _run_solvers(*pair)


def test_solvers_match_sparse_tensor_distributed(pair, dask_client):
    X, D = pair
    from tensorfact.formats.dask_sparse._graph import active_client

    with dask_client.as_current():
        assert active_client() is dask_client
        _run_solvers(X, D)
    # the graphs ran on the worker processes: they imported the partition kernels
    mods = dask_client.run(lambda: "tensorfact.formats.dask_sparse._kernels" in sys.modules)
    assert len(mods) == 2 and all(mods.values())


# --------------------------------------------------------------------------- #
# planted stores
# --------------------------------------------------------------------------- #
def test_planted_store_matches_its_model(tmp_path):
    X, truth = planted_sparse_store(tmp_path / "a", (60, 30, 20), 3, 3000, rng=0,
                                    partition_nnz=500)
    assert X.nnz == 3000 and X.npartitions >= 5
    S = X.to_sparse()
    assert np.unique(S.coords, axis=0).shape[0] == 3000
    w, F = truth
    np.testing.assert_allclose(S.values, cp_values_numba(S.coords, w, list(F)), rtol=0,
                               atol=1e-15)
    # with noise: relative noise over the stored entries
    Y, plant = planted_sparse_store(tmp_path / "b", (60, 30, 20), 3, 3000, noise=0.2, rng=0,
                                    partition_nnz=500)
    T = Y.to_sparse()
    m = cp_values_numba(T.coords, plant.weights, list(plant.factors))
    assert np.linalg.norm(T.values - m) / np.linalg.norm(m) == pytest.approx(0.2, rel=1e-12)


def test_planted_store_exact_equals_its_plant(tmp_path):
    X, truth = planted_sparse_store(tmp_path / "e", (40, 30, 20), 2, 1500, exact=True, rng=1,
                                    partition_nnz=300)
    assert X.npartitions >= 2
    np.testing.assert_allclose(X.to_sparse().to_dense(), truth.to_dense(), rtol=0,
                               atol=1e-15)
    res = cp_als(X, 2, init="svd", max_iter=200, tol=1e-14, rng=0)
    assert res.rel_error < 1e-6


def test_planted_store_is_reproducible_and_checked(tmp_path):
    a, ta = planted_sparse_store(tmp_path / "a", (20, 10, 10), 2, 300, rng=5,
                                 partition_nnz=100)
    b, tb = planted_sparse_store(tmp_path / "b", (20, 10, 10), 2, 300, rng=5,
                                 partition_nnz=100)
    np.testing.assert_array_equal(a.to_sparse().values, b.to_sparse().values)
    with pytest.raises(ValueError, match="exceeds"):
        planted_sparse_store(tmp_path / "c", (2, 2), 1, 5)
    with pytest.raises(ValueError, match="not an empty directory"):
        planted_sparse_store(tmp_path / "a", (20, 10, 10), 2, 300, rng=5)


def test_import_tensorfact_does_not_import_dask():
    code = ("import sys, tensorfact, tensorfact.datasets; "
            "assert 'dask' not in sys.modules; tensorfact.formats.DaskSparseTensor; "
            "assert 'dask' in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("stride", [1, 2, 3, 16])
def test_fenced_search_equals_searchsorted(stride):
    # runs of equal keys across fence blocks, queries below, between and above
    from tensorfact.formats.dask_sparse._kernels import fenced_search

    rng = np.random.default_rng(stride)
    for _ in range(50):
        keys = np.sort(rng.integers(0, 20, int(rng.integers(1, 200)))).astype(np.int64)
        q = rng.integers(-2, 23, 40).astype(np.int64)
        lo, hi = fenced_search(keys, keys[::stride].copy(), stride, q)
        np.testing.assert_array_equal(lo, np.searchsorted(keys, q, "left"))
        np.testing.assert_array_equal(hi, np.searchsorted(keys, q, "right"))


def test_sampled_fibers_of_a_store_rebuilt_at_the_same_place(tmp_path):
    # the in-memory fences of the fiber index follow the files, not their path
    import shutil

    from tensorfact.formats import DaskSparseTensor, SparseTensor

    rng = np.random.default_rng(3)
    shape = (30, 20, 10)
    idx = np.stack([rng.integers(0, 10, 8), rng.integers(0, 10, 8)], axis=1)
    for seed in (0, 1):
        S, _ = planted_sparse_cp(shape, 2, 2000, rng=seed)
        store = tmp_path / "store"
        if store.exists():
            shutil.rmtree(store)
        X = DaskSparseTensor.from_sparse(S, store, 3)
        got = X.sampled_fibers(0, idx)
        want = SparseTensor(S.coords, S.values, shape).sampled_fibers(0, idx)
        np.testing.assert_array_equal(got.row, want.row)
        np.testing.assert_array_equal(got.col, want.col)
        np.testing.assert_array_equal(got.val, want.val)
