"""softmax / log_softmax (with masks) and layer_norm, forward and backward, against the numpy reference,
with canaries around every output."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitensor.backend import numpy_ref

from .conftest import Canaried, rtol_for

shapes = st.sampled_from([(1, 1), (3, 1), (5, 7), (2, 3, 17), (4, 65), (2, 2, 3, 33), (1, 1000), (0, 5), (7, 0)])
dtypes = st.sampled_from([np.float32, np.float64])


def close(actual, expected, dtype, n):
    np.testing.assert_allclose(actual, expected, rtol=rtol_for(dtype, n) * 8, atol=rtol_for(dtype, n) * 8)


@given(shape=shapes, dtype=dtypes, log=st.booleans(), mask_kind=st.sampled_from(["none", "causal", "padding", "full_row"]))
@settings(max_examples=80)
def test_softmax_forward(C, shape, dtype, log, mask_kind):
    rng = np.random.default_rng(sum(shape))
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    n = shape[-1]
    mask = None
    if mask_kind == "causal" and n:
        mask = np.triu(np.full((shape[-2] if len(shape) > 1 else 1, n), -np.inf, dtype), 1)
    elif mask_kind == "padding" and n:
        mask = np.where(rng.random((1,) * (len(shape) - 1) + (n,)) < 0.3, -np.inf, 0).astype(dtype)
    elif mask_kind == "full_row" and n and shape[0]:
        mask = np.zeros(shape, dtype)
        mask[0] = -np.inf
    full_mask = None if mask is None else np.broadcast_to(mask, shape)
    out = Canaried(shape, dtype)
    C.softmax_forward(x, out.array, full_mask, log)
    out.check()
    expected = (numpy_ref.log_softmax if log else numpy_ref.softmax)(x.astype(np.float64), full_mask)
    finite = np.isfinite(expected)
    close(out.array[finite], expected[finite], dtype, n)
    np.testing.assert_array_equal(np.isnan(out.array), np.isnan(expected))  # fully masked rows: NaN, as PyTorch
    if mask is not None and not log:
        assert (out.array[np.isneginf(full_mask) & ~np.isnan(expected)] == 0).all(), "masked positions get weight"


@given(shape=shapes, dtype=dtypes, log=st.booleans())
@settings(max_examples=40)
def test_softmax_backward(C, shape, dtype, log):
    rng = np.random.default_rng(sum(shape) + 1)
    x = rng.standard_normal(shape)
    y = (numpy_ref.log_softmax if log else numpy_ref.softmax)(x).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    out = Canaried(shape, dtype)
    C.softmax_backward(y, g, out.array, log)
    out.check()
    ref = (numpy_ref.log_softmax_backward if log else numpy_ref.softmax_backward)(y.astype(np.float64), g.astype(np.float64))
    close(out.array, ref, dtype, shape[-1])


@given(shape=st.sampled_from([(1, 1), (3, 7), (2, 5, 64), (33, 768), (130, 3)]), dtype=dtypes,
       affine=st.booleans())
@settings(max_examples=40)
def test_layer_norm_forward_and_backward(C, shape, dtype, affine):
    rng = np.random.default_rng(sum(shape))
    n = shape[-1]
    x = (rng.standard_normal(shape) * 2 + 1).astype(dtype)
    w = rng.standard_normal(n).astype(dtype) if affine else None
    b = rng.standard_normal(n).astype(dtype) if affine else None
    y, mean, rstd = Canaried(shape, dtype), Canaried(shape[:-1], dtype), Canaried(shape[:-1], dtype)
    C.layer_norm_forward(x, w, b, 1e-5, y.array, mean.array, rstd.array)
    for c in (y, mean, rstd):
        c.check()
    ry, rm, rr = numpy_ref.layer_norm(x.astype(np.float64), None if w is None else w.astype(np.float64),
                                      None if b is None else b.astype(np.float64), 1e-5)
    close(y.array, ry, dtype, n)
    close(rstd.array, rr, dtype, n)
    g = rng.standard_normal(shape).astype(dtype)
    dx, dw, db = Canaried(shape, dtype), Canaried((n,), dtype), Canaried((n,), dtype)
    C.layer_norm_backward(g, x, mean.array, rstd.array, w, dx.array, dw.array if affine else None,
                          db.array if affine else None)
    for c in (dx, dw, db):
        c.check()
    rdx, rdw, rdb = numpy_ref.layer_norm_backward(g.astype(np.float64), x.astype(np.float64), rm, rr,
                                                  None if w is None else w.astype(np.float64))
    rows = int(np.prod(shape[:-1]))
    # dx multiplies a difference of nearly equal terms by rstd (up to 1/sqrt(eps) ~ 316): scale the bound
    scale = np.abs(rr).max() * np.abs(g).max() * (np.abs(w).max() if affine else 1.0)
    np.testing.assert_allclose(dx.array, rdx, rtol=rtol_for(dtype, n) * 8, atol=rtol_for(dtype, n) * 8 * max(scale, 1))
    if affine:
        close(dw.array, rdw, dtype, rows)
        close(db.array, rdb, dtype, rows)


def test_row_kernel_errors(C):
    x = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"softmax: out has shape \(3, 5\), expected \(3, 4\)"):
        C.softmax_forward(x, np.empty((3, 5), np.float32))
    with pytest.raises(ValueError, match=r"softmax: mask has shape \(4,\), expected the input's shape \(3, 4\)"):
        C.softmax_forward(x, np.empty((3, 4), np.float32), np.zeros(4, np.float32))
    with pytest.raises(TypeError, match="softmax: out has dtype float64, expected float32"):
        C.softmax_forward(x, np.empty((3, 4), np.float64))
    with pytest.raises(ValueError, match="must be C-contiguous"):
        C.softmax_forward(x, np.empty((4, 3), np.float32).T)
    with pytest.raises(ValueError, match=r"layer_norm: weight has shape \(3,\), expected \(4,\)"):
        C.layer_norm_forward(x, np.ones(3, np.float32), None, 1e-5, np.empty_like(x), np.empty(3, np.float32),
                             np.empty(3, np.float32))
    with pytest.raises(ValueError, match="non-empty last dim"):
        C.layer_norm_forward(np.ones((3, 0), np.float32), None, None, 1e-5, np.empty((3, 0), np.float32),
                             np.empty(3, np.float32), np.empty(3, np.float32))


def test_non_contiguous_inputs_are_read_correctly(C):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((8, 6)).astype(np.float32)[:, ::-2]  # strided and negative: copied once inside
    out = np.empty(x.shape, np.float32)
    C.softmax_forward(x, out)
    close(out, numpy_ref.softmax(x.astype(np.float64)), np.float32, 3)
