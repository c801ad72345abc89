"""Fused ops against their reference twins made of the simple ops, on both backends: the LSTM layer recurrence
(ops.nn.LSTMRecurrence vs lstm_recurrence_reference: lstm_cell, matmul, where per step) and Linear + GELU
(ops.linalg.LinearGelu vs gelu(linear(...))). Values and every input's gradient, float64, hypothesis-chosen shapes,
padding masks and directions."""
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import minitensor as mt
from minitensor.nn import functional as F
from minitensor.ops.linalg import LinearGelu
from minitensor.ops.nn import lstm_recurrence, lstm_recurrence_reference


def _both(backend, fn, arrays):
    """fn's outputs and the gradients of a fixed random projection of them, for every array."""
    before = mt.get_backend()
    mt.set_backend(backend)
    try:
        ts = [mt.tensor(a, requires_grad=True) for a in arrays]
        outs = fn(*ts)
        outs = outs if isinstance(outs, tuple) else (outs,)
        rng = np.random.default_rng(7)
        loss = sum((o * mt.tensor(rng.standard_normal(o.shape))).sum() for o in outs)
        grads = mt.autograd.grad([loss], ts)
    finally:
        mt.set_backend(before)
    return [o.detach().numpy() for o in outs], [g.numpy() for g in grads]


@given(steps=st.integers(1, 5), n=st.integers(1, 4), h=st.integers(1, 5), masked=st.booleans(), reverse=st.booleans(),
       backend=st.sampled_from(["native", "numpy"]), seed=st.integers(0, 2 ** 16))
@settings(max_examples=40, deadline=None)
def test_lstm_recurrence_equals_its_reference_twin(steps, n, h, masked, reverse, backend, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-2, 2, (steps, n, 4 * h)), rng.uniform(-1, 1, (n, h)), rng.uniform(-1, 1, (n, h)),
              rng.uniform(-1, 1, (4 * h, h))]
    valid = rng.random((steps, n)) < 0.7 if masked else None
    fused = _both(backend, lambda *t: lstm_recurrence(*t, valid=valid, reverse=reverse), arrays)
    twin = _both(backend, lambda *t: lstm_recurrence_reference(*t, valid=valid, reverse=reverse), arrays)
    for a, b in zip(fused[0] + fused[1], twin[0] + twin[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


@given(lead=st.sampled_from([(1,), (3,), (2, 5)]), k=st.integers(1, 6), n=st.integers(1, 6),
       backend=st.sampled_from(["native", "numpy"]), seed=st.integers(0, 2 ** 16))
@settings(max_examples=30, deadline=None)
def test_linear_gelu_equals_linear_then_gelu(lead, k, n, backend, seed):
    rng = np.random.default_rng(seed)
    arrays = [rng.uniform(-2, 2, lead + (k,)), rng.uniform(-1, 1, (n, k)), rng.uniform(-1, 1, n)]
    fused = _both(backend, LinearGelu.apply, arrays)
    twin = _both(backend, lambda x, w, b: F.gelu(F.linear(x, w, b)), arrays)
    for a, b in zip(fused[0] + fused[1], twin[0] + twin[1]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
