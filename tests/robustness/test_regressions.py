"""The root fixes the campaign led to, one explicit case each."""

from __future__ import annotations

import numpy as np
import pytest

import tensorfact as tf
from tensorfact._validation import (
    ArgumentTypeError,
    check_choice,
    check_int,
    check_real,
)
from tensorfact.datasets import planted_cp, read_tns
from tensorfact.formats import SparseRows


@pytest.fixture(scope="module")
def X():
    return planted_cp((5, 6, 7), 2, noise=0.1, rng=0)[0]


# --------------------------------------------------------------------------- shared helpers
@pytest.mark.parametrize("value", [3, np.int64(3), np.int32(3), np.uint8(3)])
def test_integers_of_any_kind_are_integers(value):
    assert check_int(value, "rank") == 3 and type(check_int(value, "rank")) is int


@pytest.mark.parametrize("value", [True, np.True_, 1.5, 2.0, np.float64(2), "2", None, [2], 1j])
def test_bools_floats_and_others_are_not(value):
    with pytest.raises(ArgumentTypeError, match="rank must be an integer"):
        check_int(value, "rank")


def test_argument_type_error_is_both_type_and_value_error():
    assert issubclass(ArgumentTypeError, TypeError) and issubclass(ArgumentTypeError, ValueError)


@pytest.mark.parametrize("value", [0.3, np.float32(0.3), np.float16(0.3), 1, np.int64(1)])
def test_reals_of_any_kind_are_reals(value):
    assert check_real(value, "alpha", low=0.0, low_open=True) == pytest.approx(float(value))


@pytest.mark.parametrize("value, exc", [(True, TypeError), ("0.3", TypeError), (1j, TypeError),
                                        (float("nan"), ValueError), (float("inf"), ValueError),
                                        (0.0, ValueError)])
def test_reals_refused_by_name(value, exc):
    with pytest.raises(exc, match="alpha"):
        check_real(value, "alpha", low=0.0, low_open=True)


def test_choices():
    assert check_choice(np.str_("qr"), "method", ("qr", "gram")) == "qr"
    with pytest.raises(ArgumentTypeError, match="method must be one of 'qr', 'gram'"):
        check_choice(np.ones(3), "method", ("qr", "gram"))


# --------------------------------------------------------------------------- solvers
def test_numpy_scalars_for_rank_and_alpha(X):
    ref = tf.spals(X, 2, alpha=0.3, rng=0, max_iter=3)
    got = tf.spals(X, np.int64(2), alpha=np.float32(0.3), rng=np.int64(0), max_iter=np.int32(3))
    assert got.rel_error == pytest.approx(ref.rel_error, rel=1e-6)


def test_negative_seed_named(X):
    with pytest.raises(ValueError, match="rng must be None, a non-negative int seed"):
        tf.cp_als(X, 2, rng=-1)


def test_array_init_named(X):
    with pytest.raises(TypeError, match="init must be"):
        tf.cp_als(X, 2, init=np.ones(3))


def test_nan_without_check_is_a_floating_point_error(X):
    Xn = X.copy()
    Xn[0, 0, 0] = np.nan
    with pytest.raises(FloatingPointError):
        tf.cp_als(Xn, 2, check_finite=False, max_iter=3)


def test_spals_sample_count_validates():
    with pytest.raises(ValueError, match="shape"):
        tf.spals_sample_count((3, 0, 5), 2, 0, alpha=0.5)
    with pytest.raises(ValueError, match="mode"):
        tf.spals_sample_count((3, 4, 5), 2, 7, alpha=0.5)
    with pytest.raises(ValueError, match="alpha"):
        tf.spals_sample_count((3, 4, 5), 2, 0, alpha=-1.0)


# --------------------------------------------------------------------------- sampled least squares
@pytest.fixture(scope="module")
def krp_problem():
    gen = np.random.default_rng(0)
    A, Bm, C = (gen.standard_normal(s) for s in ((6, 3), (5, 3), (4, 3)))
    Y = tf.khatri_rao([A, Bm]) @ C.T
    return [A, Bm], Y + 0.1 * gen.standard_normal(Y.shape), C


@pytest.mark.parametrize("y_scale, f_scale", [(1e300, 1.0), (1e-300, 1.0), (1.0, 1e200),
                                              (1e150, 1e-150)])
def test_sampled_lstsq_at_extreme_magnitudes(krp_problem, y_scale, f_scale):
    (A, Bm), Y, C = krp_problem
    ref = tf.sampled_krp_lstsq([A, Bm], Y, 40, rng=0)
    got = tf.sampled_krp_lstsq([A * f_scale, Bm], Y * y_scale, 40, rng=0)
    np.testing.assert_allclose(np.asarray(got.coef) * f_scale / y_scale, ref.coef, rtol=1e-10,
                               atol=1e-12)
    assert got.rel_error == pytest.approx(ref.rel_error, rel=1e-8)


def test_sampled_lstsq_non_finite_is_an_error(krp_problem):
    factors, Y, _ = krp_problem
    with pytest.raises(FloatingPointError, match="non-finite"):
        tf.sampled_krp_lstsq(factors, Y * np.nan, 30, rng=0, check_finite=False)


def test_sampled_lstsq_coo_indices_checked(krp_problem):
    factors, _, _ = krp_problem
    bad = {"column out of range": (np.zeros(1, int), np.full(1, 7), np.ones(1)),
           "float indices": (np.zeros(1), np.zeros(1), np.ones(1))}
    for triplet in bad.values():
        with pytest.raises((TypeError, ValueError), match="rhs"):
            tf.sampled_krp_lstsq(factors, lambda idx, t=triplet: t, 20, rng=0, n_columns=2)


# --------------------------------------------------------------------------- building blocks
def test_krp_rows_refuses_out_of_range_rows():
    F = [np.ones((3, 2)), np.ones((4, 2))]
    for rows in (np.array([12]), np.array([-1]), np.array([[0, 4]])):
        with pytest.raises(ValueError, match="rows"):
            tf.krp_rows(F, rows)
    with pytest.raises(TypeError, match="rows must have an integer dtype"):
        tf.krp_rows(F, np.array([0.5]))


def test_unfold_and_fold_take_numpy_modes():
    X = np.arange(24.0).reshape(2, 3, 4)
    M = tf.unfold(X, np.int64(1))
    np.testing.assert_array_equal(tf.fold(M, np.int64(1), X.shape), X)
    with pytest.raises(TypeError, match="shape"):
        tf.fold(M, 1, (2, 3.5, 4))


def test_mixed_namespaces_named():
    torch = pytest.importorskip("torch")
    with pytest.raises(TypeError, match="^factors: arrays from different namespaces"):
        tf.khatri_rao([np.ones((2, 2)), torch.ones((2, 2), dtype=torch.float64)])


def test_sparse_rows_checked():
    with pytest.raises(ValueError, match="col holds index 5"):
        SparseRows(np.zeros(1, np.int64), np.full(1, 5), np.ones(1), 4)
    with pytest.raises(TypeError, match="n_columns must be a positive integer"):
        SparseRows(np.zeros(1, np.int64), np.zeros(1, np.int64), np.ones(1), 4.0)


def test_leading_subspace_k_bounded(X):
    with pytest.raises(ValueError, match="k must be an integer in"):
        tf.DenseTensor(X).leading_subspace(0, X.shape[0] + 1, 0)


def test_read_tns_block_bytes_checked(tmp_path):
    p = tmp_path / "t.tns"
    p.write_text("1 1 1 1.0\n")
    with pytest.raises(ValueError, match="block_bytes"):
        read_tns(p, block_bytes=0)
    with pytest.raises(TypeError, match="path must be a str or path-like"):
        read_tns(3)
