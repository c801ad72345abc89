"""GELU kernels (minitensor._C.gelu / gelu_backward, activations_body.h) against float64 references, on every ISA
body this CPU runs, with canaries around the outputs.

Bounds (eps = float32 machine epsilon), from the construction in activations_body.h:
- erf form, float32: Phi comes from erfc(z) = t P(t) exp(-z^2) (fit error 2e-8, below float32 rounding), then a
  handful of roundings, ~10 eps; exp(-z^2) also inherits the rounding of z^2 = x^2 / 2, a relative error of
  about x^2 / 2 * eps. Checked: |err| <= (16 + 2 x^2) eps times the magnitude of the terms (|gelu(x)| forward;
  Phi + |x| phi backward, since gelu' crosses zero near x = -0.75 where a relative bound means nothing).
- tanh form: tanh_reg is within ~3 ulp (test_lstm.py), so 16 eps of the terms' magnitude.
- float64 keeps std::erf: within a few u of the numpy reference (math.erf).
"""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitensor.backend import numpy_ref

from .conftest import Canaried, supported_isas

EPS32 = float(np.finfo(np.float32).eps)
K = math.sqrt(2 / math.pi)


def erfc_vec(x):
    return np.array([math.erfc(v) for v in np.asarray(x, dtype=np.float64).ravel()]).reshape(np.shape(x))


def exact(x):
    """gelu, gelu' and the magnitudes of their terms, in float64 from math.erfc (no cancellation in the tail)."""
    x = x.astype(np.float64)
    cdf = 0.5 * erfc_vec(-x / math.sqrt(2))
    pdf = np.exp(-0.5 * x * x) / math.sqrt(2 * math.pi)
    return x * cdf, cdf + x * pdf, np.abs(x * cdf), cdf + np.abs(x) * pdf


def exact_tanh(x):
    x = x.astype(np.float64)
    t = np.tanh(K * (x + 0.044715 * x ** 3))
    dt = 0.5 * np.abs(x) * (1 - t * t) * K * (1 + 3 * 0.044715 * x * x)
    return 0.5 * x * (1 + t), 0.5 * (1 + t) + 0.5 * x * (1 - t * t) * K * (1 + 3 * 0.044715 * x * x), \
        0.5 * np.abs(x) * (1 + np.abs(t)), 0.5 * (1 + np.abs(t)) + dt


def run(C, x, g, tanh, isa):
    out = Canaried(x.shape, x.dtype)
    C.gelu(x, out.array, tanh, isa)
    out.check()
    dx = Canaried(x.shape, x.dtype)
    C.gelu_backward(x, g, dx.array, tanh, isa)
    dx.check()
    return out.array, dx.array


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
@pytest.mark.parametrize("tanh", [False, True])
def test_gelu_float32_within_its_bound_on_a_dense_grid(C, isa, tanh):
    if isa not in supported_isas():
        pytest.skip(f"this CPU does not run the {isa} body")
    x = np.linspace(-10, 12, 100_003, dtype=np.float32)
    y, dy = run(C, x, np.ones_like(x), tanh, isa)
    ref, dref, mag, dmag = (exact_tanh if tanh else exact)(x)
    x64 = x.astype(np.float64)
    slack = 16 * EPS32 if tanh else (16 + 2 * x64 ** 2) * EPS32
    err, derr = np.abs(y - ref), np.abs(dy - dref)
    assert (err <= slack * mag + 1e-38).all(), f"gelu: worst {np.max(err / (mag + 1e-38)) / EPS32:.1f} eps"
    assert (derr <= slack * dmag + 1e-38).all(), f"gelu': worst {np.max(derr / (dmag + 1e-38)) / EPS32:.1f} eps"


@settings(max_examples=60)
@given(n=st.sampled_from([0, 1, 3, 15, 16, 17, 33, 4095, 4096, 4097, 9000]), seed=st.integers(0, 2 ** 16),
       dtype=st.sampled_from([np.float32, np.float64]), tanh=st.booleans(), isa=st.sampled_from(["scalar", "avx2", "avx512"]))
def test_gelu_any_length_matches_the_reference(C, n, seed, dtype, tanh, isa):
    if isa not in supported_isas():
        isa = supported_isas()[-1]
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 3).astype(dtype)
    g = rng.standard_normal(n).astype(dtype)
    y, dx = run(C, x, g, tanh, isa)
    approximate = "tanh" if tanh else "none"
    ref = numpy_ref.gelu(x.astype(np.float64), approximate)
    dref = numpy_ref.gelu_backward(x.astype(np.float64), g.astype(np.float64), approximate)
    tol = 64 * EPS32 if dtype == np.float32 else 64 * np.finfo(np.float64).eps
    scale = 1 + np.abs(x.astype(np.float64))
    np.testing.assert_array_less(np.abs(y - ref), tol * scale * (1 + np.abs(ref)) + 1e-300)
    np.testing.assert_array_less(np.abs(dx - dref), tol * scale * (1 + np.abs(dref)) * (1 + np.abs(g)) + 1e-300)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gelu_special_values(C, dtype):
    x = np.array([0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 40.0, -40.0], dtype=dtype)
    y = np.empty_like(x)
    C.gelu(x, y)
    with np.errstate(invalid="ignore"):
        ref = numpy_ref.gelu(x)  # 0.5 x (1 + erf): -inf * 0 is NaN, as in PyTorch
    np.testing.assert_array_equal(np.isnan(y), np.isnan(ref))
    finite = ~np.isnan(ref)
    np.testing.assert_allclose(y[finite], ref[finite], rtol=1e-6, atol=0)
    assert y[2] == np.inf and y[7] == 40.0 and y[8] == 0.0


def test_gelu_errors_name_the_op(C):
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match="gelu_backward: grad .* must have the same shape"):
        C.gelu_backward(x, np.ones((4, 3), np.float32), np.empty_like(x))
    with pytest.raises(ValueError, match="gelu"):
        C.gelu(x, np.empty((2, 2), np.float32))
    with pytest.raises(ValueError, match="isa"):
        C.gelu(x, np.empty_like(x), False, "avx1024")
