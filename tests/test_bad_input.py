"""Bad input gets a clear error naming the argument, never a dependency's exception."""

from __future__ import annotations

import gzip

import numpy as np
import pytest

import tensorfact as tf
from tensorfact.datasets import read_tns, write_tns


@pytest.fixture
def F():
    gen = np.random.default_rng(0)
    return [gen.standard_normal((s, 2)) for s in (3, 4, 5)]


def test_khatri_rao_skip(F):
    np.testing.assert_array_equal(tf.khatri_rao(F, skip=-1), tf.khatri_rao(F[:2]))
    np.testing.assert_array_equal(tf.khatri_rao(F, skip=np.int64(0)), tf.khatri_rao(F[1:]))
    with pytest.raises(ValueError, match="skip=3 is out of range"):
        tf.khatri_rao(F, skip=3)
    with pytest.raises(TypeError, match="skip must be an integer"):
        tf.khatri_rao(F, skip=1.5)
    with pytest.raises(ValueError, match="weights must have shape"):
        tf.khatri_rao(F, weights=np.ones(3))


def test_sizes_no_machine_holds_are_refused_before_allocating():
    big = [np.ones((100_000, 2))] * 3
    with pytest.raises(ValueError, match="Khatri-Rao product would need .* GiB"):
        tf.khatri_rao(big)
    with pytest.raises(ValueError, match="n_samples=1000000000000 draws would need"):
        tf.sample_krp_rows([np.ones((5, 2)), np.ones((6, 2))], 10**12)


def test_mttkrp_promotes_mixed_torch_dtypes_and_numpy_scalars():
    torch = pytest.importorskip("torch")
    X = torch.ones((3, 4, 5), dtype=torch.float64)
    Fs = [torch.ones((3, 2)), torch.ones((4, 2), dtype=torch.float64), torch.ones((5, 2))]
    M = tf.mttkrp(X, Fs, np.int64(1))
    assert M.dtype == torch.float64 and float(M[0, 0]) == 15.0
    with pytest.raises(TypeError, match="mode must be an integer"):
        tf.mttkrp(X, Fs, 1.0)


@pytest.mark.parametrize("X, match", [
    (np.ma.array(np.ones((3, 4, 5))), "X is a NumPy masked array"),
    (np.ones((3, 4, 5), dtype=object), "X has dtype object"),
    (np.full((3, 4, 5), "a"), "X has dtype <U1"),
])
def test_solvers_reject_arrays_that_are_not_numbers(X, match):
    for solver in (tf.cp_als, tf.spals):
        with pytest.raises(TypeError, match=match):
            solver(X, 2)


def test_rhs_returning_none(F):
    with pytest.raises(TypeError, match="rhs must return an array .* got NoneType"):
        tf.sampled_krp_lstsq(F[:2], lambda idx: None, 5, rng=0)


def test_cp_tensor_weights(F):
    assert tf.CPTensor(F, weights=[1, 2]).weights.tolist() == [1.0, 2.0]
    with pytest.raises(TypeError, match="weights has complex dtype"):
        tf.CPTensor(F, weights=np.array([1 + 1j, 2]))
    with pytest.raises(TypeError, match="weights has dtype"):
        tf.CPTensor(F, weights=["a", "b"])


def test_read_tns_bad_files(tmp_path):
    p = tmp_path / "inf.tns"
    p.write_bytes(b"1 1 1 1.0\ninf 2 2 3.0\n")
    with pytest.raises(ValueError, match="line 2: index in column 1 is not an integer"):
        read_tns(p)
    p = tmp_path / "big.tns"
    p.write_bytes(b"1 1 1 1.0\n# comment\n2 2 2 1e300\n")
    with pytest.raises(ValueError, match="line 3: value 1e\\+300 does not fit in float32"):
        read_tns(p, dtype=np.float32)
    assert float(read_tns(p).values[-1]) == 1e300
    data = gzip.compress(b"1 1 1 1.0\n2 2 2 3.0\n" * 1000)
    p = tmp_path / "trunc.tns.gz"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="not a readable gzip file"):
        read_tns(p)
    p = tmp_path / "plain.tns.gz"
    p.write_bytes(b"1 1 1 1.0\n")
    with pytest.raises(ValueError, match="not a readable gzip file"):
        read_tns(p)


def test_empty_tensor_round_trip_and_integer_index_base(tmp_path):
    S = tf.SparseTensor(np.zeros((0, 3), dtype=np.int64), np.zeros(0), (3, 4, 5))
    p = tmp_path / "empty.tns"
    write_tns(p, S)
    back = read_tns(p, shape=S.shape)
    assert back.shape == (3, 4, 5) and back.nnz == 0
    with pytest.raises(ValueError, match="pass shape= to read an empty tensor"):
        read_tns(p)
    with pytest.raises(TypeError, match="index_base must be an integer"):
        write_tns(p, S, index_base=1.5)
