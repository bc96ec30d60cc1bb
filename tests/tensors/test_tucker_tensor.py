"""TuckerTensor: construction, dense form, norm without densifying, TensorLy interop."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tensorfact import TuckerTensor
from tensorfact import _backend as B


def _random(shape, ranks, seed=0, orthonormal=False):
    g = np.random.default_rng(seed)
    core = g.standard_normal(ranks)
    facs = [g.standard_normal((s, r)) for s, r in zip(shape, ranks)]
    if orthonormal:
        facs = [np.linalg.qr(A)[0] for A in facs]
    return TuckerTensor(core, facs)


def test_dense_form_matches_tensorly():
    import tensorly as tl

    tt = _random((5, 6, 7), (2, 3, 4))
    np.testing.assert_allclose(tt.to_dense(), tl.tucker_to_tensor((tt.core, list(tt.factors))),
                               rtol=1e-12, atol=1e-12)


def test_unpacks_and_properties():
    tt = _random((5, 6, 7), (2, 3, 4))
    core, factors = tt
    assert core is tt.core and len(factors) == 3 and len(tt) == 2
    assert tt[0] is tt.core
    assert tt.shape == (5, 6, 7) and tt.ranks == (2, 3, 4) and tt.ndim == 3
    assert tt.dtype == np.float64
    assert tt.n_params == 24 + 5 * 2 + 6 * 3 + 7 * 4
    assert "ranks=(2, 3, 4)" in repr(tt)
    assert TuckerTensor((core, factors)).shape == tt.shape
    assert TuckerTensor(tt).ranks == tt.ranks
    with pytest.raises(AttributeError):
        tt.core = core


@pytest.mark.parametrize("orthonormal", [True, False])
def test_norm_matches_dense(orthonormal):
    tt = _random((5, 6, 7, 3), (2, 3, 2, 2), seed=1, orthonormal=orthonormal)
    assert float(tt.norm()) == pytest.approx(np.linalg.norm(tt.to_dense()), rel=1e-12)


@settings(max_examples=25, deadline=None)
@given(shape=st.lists(st.integers(2, 6), min_size=2, max_size=4),
       seed=st.integers(0, 2**16), data=st.data())
def test_norm_equals_core_norm_for_orthonormal_factors(shape, seed, data):
    ranks = [data.draw(st.integers(1, s)) for s in shape]
    tt = _random(tuple(shape), tuple(ranks), seed=seed, orthonormal=True)
    assert float(tt.norm()) == pytest.approx(float(np.linalg.norm(tt.core)), rel=1e-12)


@pytest.mark.parametrize("e", [-1000, 1000, -1070])
def test_norm_is_scale_safe(e):
    tt = _random((4, 5, 6), (2, 2, 3), seed=2)
    ref = float(tt.norm())
    scaled = TuckerTensor(tt.core * 2.0**e, list(tt.factors))
    if e == -1070:  # subnormal core: a few digits are lost in the data itself
        assert float(scaled.norm()) == pytest.approx(math.ldexp(ref, e), rel=1e-3)
    else:
        assert float(scaled.norm()) == pytest.approx(math.ldexp(ref, e), rel=1e-12)
    big = TuckerTensor(tt.core, [A * 2.0**400 for A in tt.factors])
    assert math.isinf(float(big.norm()))  # 2^1200 times the norm: not representable


def test_tensorly_roundtrip():
    tt = _random((4, 5, 6), (2, 3, 2))
    tl_tt = tt.to_tensorly()
    from tensorly.tucker_tensor import TuckerTensor as TLTuckerTensor

    assert isinstance(tl_tt, TLTuckerTensor)
    back = TuckerTensor.from_tensorly(tl_tt)
    assert back.core is tt.core
    np.testing.assert_array_equal(back.to_dense(), tt.to_dense())


def test_backends(backend):
    tt = _random((4, 5, 6), (2, 3, 2), seed=3)
    core = backend.asarray(tt.core)
    facs = [backend.asarray(A) for A in tt.factors]
    t2 = TuckerTensor(core, facs)
    dense = t2.to_dense()
    assert type(dense) is type(core)
    np.testing.assert_allclose(B.to_numpy(dense), tt.to_dense(), rtol=1e-12, atol=1e-12)
    assert B.to_float(t2.norm()) == pytest.approx(float(tt.norm()), rel=1e-12)


def test_bad_input():
    g = np.random.default_rng(4)
    core = g.standard_normal((2, 3))
    A, Bm = g.standard_normal((4, 2)), g.standard_normal((5, 3))
    with pytest.raises(ValueError, match=r"factors\[1\]"):
        TuckerTensor(core, [A, g.standard_normal((5, 2))])
    with pytest.raises(ValueError, match="core has 2 modes"):
        TuckerTensor(core, [A, Bm, Bm])
    with pytest.raises(ValueError, match=r"factors\[0\]"):
        TuckerTensor(core, [np.ones(2), Bm])
    with pytest.raises(TypeError, match="core"):
        TuckerTensor(core.astype(np.float32), [A, Bm])
    with pytest.raises(TypeError, match=r"factors\[1\]"):
        TuckerTensor(core, [A, Bm.astype(np.float32)])
    with pytest.raises(TypeError, match="core"):
        TuckerTensor([[1.0]], [np.ones((1, 1)), np.ones((1, 1))])
    with pytest.raises(ValueError, match="factors"):
        TuckerTensor(core, [])
    with pytest.raises(TypeError, match="core and factors"):
        TuckerTensor(core)
