"""im2col / col2im / conv2d forward and backward against the numpy reference, with canaries."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitensor.backend import numpy_ref

from .conftest import Canaried, rtol_for

geometry = st.tuples(
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9),   # n, c, h, w
    st.integers(1, 4), st.integers(1, 3), st.integers(1, 3),                       # oc, kh, kw
    st.tuples(st.integers(1, 3), st.integers(1, 3)), st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.integers(1, 2), st.integers(1, 2)),
)


@given(g=geometry, dtype=st.sampled_from([np.float32, np.float64]), bias=st.booleans())
@settings(max_examples=80)
def test_conv2d_forward_backward(C, g, dtype, bias):
    n, c, h, w, oc, kh, kw, s, p, d = g
    if h + 2 * p[0] < d[0] * (kh - 1) + 1 or w + 2 * p[1] < d[1] * (kw - 1) + 1:
        with pytest.raises(ValueError, match="does not fit"):
            C.conv2d_forward(np.ones((n, c, h, w), dtype), np.ones((oc, c, kh, kw), dtype), None, list(s), list(p),
                             list(d), np.empty((1,), dtype))
        return
    rng = np.random.default_rng(n + 10 * h + 100 * w)
    x = rng.standard_normal((n, c, h, w)).astype(dtype)
    wt = rng.standard_normal((oc, c, kh, kw)).astype(dtype)
    b = rng.standard_normal(oc).astype(dtype) if bias else None
    ref = numpy_ref.conv2d(x.astype(np.float64), wt.astype(np.float64), None if b is None else b.astype(np.float64), s, p, d)
    out = Canaried(ref.shape, dtype)
    C.conv2d_forward(x, wt, b, list(s), list(p), list(d), out.array)
    out.check()
    k = c * kh * kw
    np.testing.assert_allclose(out.array, ref, rtol=rtol_for(dtype, k) * 8, atol=rtol_for(dtype, k) * 8)

    gout = rng.standard_normal(ref.shape).astype(dtype)
    dx, dw, db = Canaried(x.shape, dtype), Canaried(wt.shape, dtype), Canaried((oc,), dtype)
    C.conv2d_backward(gout, x, wt, list(s), list(p), list(d), dx.array, dw.array, db.array)
    for buf in (dx, dw, db):
        buf.check()
    rdx, rdw, rdb = numpy_ref.conv2d_backward(gout.astype(np.float64), x.astype(np.float64), wt.astype(np.float64),
                                              s, p, d, True, True, True)
    kk = max(oc * kh * kw, n * ref.shape[2] * ref.shape[3])
    for got, want in ((dx.array, rdx), (dw.array, rdw), (db.array, rdb)):
        np.testing.assert_allclose(got, want, rtol=rtol_for(dtype, kk) * 8, atol=rtol_for(dtype, kk) * 8)


@given(g=geometry)
@settings(max_examples=40)
def test_im2col_col2im_match_reference(C, g):
    n, c, h, w, _, kh, kw, s, p, d = g
    if h + 2 * p[0] < d[0] * (kh - 1) + 1 or w + 2 * p[1] < d[1] * (kw - 1) + 1:
        return
    x = np.random.default_rng(h * w).standard_normal((n, c, h, w))
    ref = numpy_ref.im2col(x, kh, kw, s, p, d)
    cols = Canaried(ref.shape, np.float64)
    C.im2col(x, kh, kw, list(s), list(p), list(d), cols.array)
    cols.check()
    np.testing.assert_array_equal(cols.array, ref)
    back = Canaried(x.shape, np.float64)
    C.col2im(ref, list(x.shape), kh, kw, list(s), list(p), list(d), back.array)
    back.check()
    np.testing.assert_allclose(back.array, numpy_ref.col2im(ref, x.shape, kh, kw, s, p, d), rtol=1e-12, atol=1e-12)


def test_conv_errors(C):
    x = np.ones((1, 3, 8, 8), np.float32)
    with pytest.raises(ValueError, match=r"conv2d: expected input \(N, C, H, W\) and weight \(OC, C, kh, kw\)"):
        C.conv2d_forward(x, np.ones((4, 2, 3, 3), np.float32), None, [1, 1], [0, 0], [1, 1], np.empty((1, 4, 6, 6), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: out has shape \(1, 4, 5, 5\), expected \(1, 4, 6, 6\)"):
        C.conv2d_forward(x, np.ones((4, 3, 3, 3), np.float32), None, [1, 1], [0, 0], [1, 1], np.empty((1, 4, 5, 5), np.float32))
    with pytest.raises(ValueError, match="stride and dilation must be >= 1"):
        C.conv2d_forward(x, np.ones((4, 3, 3, 3), np.float32), None, [0, 1], [0, 0], [1, 1], np.empty((1, 4, 6, 6), np.float32))
    with pytest.raises(ValueError, match=r"conv2d: bias has shape \(3,\), expected \(4,\)"):
        C.conv2d_forward(x, np.ones((4, 3, 3, 3), np.float32), np.ones(3, np.float32), [1, 1], [0, 0], [1, 1],
                         np.empty((1, 4, 6, 6), np.float32))
