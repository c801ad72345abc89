"""conv2d: values against a direct loop, gradients against finite differences (first and second order)."""
import numpy as np
import pytest
from hypothesis import given, strategies as st

import minitensor as mt
from minitensor.ops.conv import conv2d
from minitensor.testing import gradcheck, gradgradcheck


def conv2d_loop(x, w, b, stride, padding, dilation):
    """The definition, one output element at a time."""
    n, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    xp = np.pad(x, ((0, 0), (0, 0), (padding[0],) * 2, (padding[1],) * 2))
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, oc, oh, ow))
    for i in range(oh):
        for j in range(ow):
            patch = xp[:, :, i * stride[0]: i * stride[0] + dilation[0] * (kh - 1) + 1: dilation[0],
                       j * stride[1]: j * stride[1] + dilation[1] * (kw - 1) + 1: dilation[1]]
            out[:, :, i, j] = np.einsum("nckl,ockl->no", patch, w)
    return out + (b.reshape(1, -1, 1, 1) if b is not None else 0)


geometry = st.tuples(
    st.integers(1, 2), st.integers(1, 3), st.integers(3, 7), st.integers(3, 7),  # n, c, h, w
    st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),                      # oc, kh, kw
    st.tuples(st.integers(1, 2), st.integers(1, 2)), st.tuples(st.integers(0, 2), st.integers(0, 2)),
    st.tuples(st.integers(1, 2), st.integers(1, 2)), st.booleans(),
)


@given(geometry)
def test_conv2d_matches_definition(g):
    n, c, h, w, oc, kh, kw, stride, padding, dilation, with_bias = g
    if h + 2 * padding[0] < dilation[0] * (kh - 1) + 1 or w + 2 * padding[1] < dilation[1] * (kw - 1) + 1:
        return
    r = np.random.default_rng(0)
    x, wt, b = r.standard_normal((n, c, h, w)), r.standard_normal((oc, c, kh, kw)), r.standard_normal(oc)
    b = b if with_bias else None
    out = conv2d(mt.tensor(x), mt.tensor(wt), mt.tensor(b) if b is not None else None, stride, padding, dilation)
    np.testing.assert_allclose(out.numpy(), conv2d_loop(x, wt, b, stride, padding, dilation), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("kwargs", [{}, {"stride": 2, "padding": 1}, {"stride": (2, 1), "padding": (1, 0), "dilation": (1, 2)}])
def test_conv2d_gradients(kwargs):
    r = np.random.default_rng(1)
    x = mt.tensor(r.standard_normal((2, 2, 5, 5)), requires_grad=True)
    w = mt.tensor(r.standard_normal((3, 2, 3, 2)), requires_grad=True)
    b = mt.tensor(r.standard_normal(3), requires_grad=True)
    fn = lambda x, w, b: conv2d(x, w, b, **kwargs)  # noqa: E731
    assert gradcheck(fn, (x, w, b))
    assert gradgradcheck(fn, (x, w, b), fast_mode=True)


def test_conv2d_errors_name_the_problem():
    x = mt.zeros(1, 3, 8, 8)
    with pytest.raises(ValueError, match="3 channels but weight expects 2"):
        conv2d(x, mt.zeros(4, 2, 3, 3))
    with pytest.raises(ValueError, match="does not fit"):
        conv2d(x, mt.zeros(4, 3, 9, 9))
    with pytest.raises(ValueError, match="expected input"):
        conv2d(mt.zeros(8, 8), mt.zeros(4, 3, 3, 3))
