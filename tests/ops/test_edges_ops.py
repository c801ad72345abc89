"""The edges of the ops (issue 12): bool masks, attention's and the weighted layers' input errors, layer_norm's
bias without a weight, extreme and empty inputs on both backends, numpy's warnings, and the small semantics where
minitensor now matches PyTorch (int / int, every target ignored, sign's gradient)."""
import math
import warnings

import numpy as np
import pytest
from hypothesis import given, strategies as st

import minitensor as mt
import minitensor.nn.functional as F
from minitensor import nn
from minitensor.testing import strategies as mts


def _np_softmax_ref(x, keep):
    """softmax of x over the last dim with the positions where keep is False at -inf: the definition of a mask."""
    s = np.where(keep, x, -np.inf)
    with np.errstate(invalid="ignore"):
        e = np.exp(s - s.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------- 1. bool masks
@st.composite
def _masked_rows(draw):
    shape = draw(mts.shapes(1, 3, 1, 5))
    x = draw(mts.arrays(shape, -5.0, 5.0))
    mask_shape = draw(st.sampled_from([shape, shape[-1:], (1,) * (len(shape) - 1) + shape[-1:]]))
    return x, draw(mts.bool_masks(mask_shape))


@given(_masked_rows())
def test_softmax_bool_mask_removes_the_false_positions(backend, sample):
    x, keep = sample
    got = mt.softmax(mt.tensor(x), -1, mask=keep).numpy()
    want = _np_softmax_ref(x, np.broadcast_to(keep, x.shape))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-12)  # (a row with nothing kept is NaN in both)
    assert np.all(got[~np.broadcast_to(keep, x.shape) & np.isfinite(got)] == 0)


@given(_masked_rows())
def test_log_softmax_bool_mask_is_the_log_of_the_masked_softmax(backend, sample):
    x, keep = sample
    got = mt.log_softmax(mt.tensor(x), -1, mask=mt.tensor(keep)).numpy()
    with np.errstate(divide="ignore"):
        want = np.log(_np_softmax_ref(x, np.broadcast_to(keep, x.shape)))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-9)


def test_softmax_float_mask_is_still_added():
    x = mt.tensor([[1.0, 2.0, 3.0]], dtype=mt.float64)
    bias = np.array([0.5, -1.0, 0.0])
    np.testing.assert_allclose(mt.softmax(x, -1, mask=bias).numpy(), _np_softmax_ref(x.numpy() + bias, True))
    # a 0/1 float mask is a bias of 0 and 1, not a keep/remove mask (that takes bool)
    ones = np.array([1.0, 0.0, 1.0])
    np.testing.assert_allclose(mt.softmax(x, -1, mask=ones).numpy(), _np_softmax_ref(x.numpy() + ones, True))


def test_masked_softmax_gradient_is_zero_at_removed_positions():
    x = mt.tensor([[0.3, -1.0, 2.0, 0.5]], dtype=mt.float64, requires_grad=True)
    keep = np.array([True, False, True, True])
    (mt.softmax(x, -1, mask=keep) * mt.tensor([[1.0, 2.0, 3.0, 4.0]], dtype=mt.float64)).sum().backward()
    assert x.grad.numpy()[0, 1] == 0
    assert np.all(x.grad.numpy()[0, [0, 2, 3]] != 0)


def test_mask_errors_name_the_op():
    x = mt.randn(2, 3)
    with pytest.raises(TypeError, match=r"softmax: mask must be bool \(True = keep\) or floating point.*int64"):
        mt.softmax(x, -1, mask=np.ones(3, dtype=np.int64))
    with pytest.raises(ValueError, match=r"log_softmax: mask of shape \(4,\) does not broadcast to .*\(2, 3\)"):
        mt.log_softmax(x, -1, mask=np.ones(4, dtype=bool))
    with pytest.raises(ValueError, match="softmax: a mask is supported for the last dim only"):
        mt.softmax(x, 0, mask=np.ones(3, dtype=bool))


def test_attention_bool_masks_keep_pytorchs_conventions():
    """scaled_dot_product_attention: True = takes part; MultiheadAttention: True = masked out (as in PyTorch)."""
    mt.manual_seed(0)
    q, k, v = (mt.randn(1, 1, 2, 4, dtype=mt.float64) for _ in range(3))
    k2, v2 = k[..., :1, :], v[..., :1, :]
    take_first = np.array([[True, False], [True, False]])
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=take_first)
    np.testing.assert_allclose(out.numpy(), F.scaled_dot_product_attention(q, k2, v2).numpy(), atol=1e-12)
    mha = nn.MultiheadAttention(4, 1, dtype=mt.float64)
    x = mt.randn(2, 1, 4, dtype=mt.float64)  # (L, N, E)
    masked_second = np.array([[False, True], [False, True]])
    out, w = mha(x, x, x, attn_mask=masked_second)
    np.testing.assert_allclose(w.detach().numpy()[0, :, 1], 0.0)
    np.testing.assert_allclose(w.detach().numpy()[0, :, 0], 1.0)


# ---------------------------------------------------------------------------- 2. attention's errors
def test_attention_rejects_integer_and_mixed_dtypes():
    q = mt.tensor(np.arange(24).reshape(1, 2, 3, 4))
    with pytest.raises(TypeError, match="scaled_dot_product_attention: expected floating-point query, key and "
                                        "value, got int64"):
        F.scaled_dot_product_attention(q, q, q)
    f32, f64 = mt.randn(1, 2, 3, 4), mt.randn(1, 2, 3, 4, dtype=mt.float64)
    with pytest.raises(TypeError, match="scaled_dot_product_attention: expected query, key and value of one dtype, "
                                        "got query float32, key float64, value float32"):
        F.scaled_dot_product_attention(f32, f64, f32)
    with pytest.raises(TypeError, match="value float64"):
        F.scaled_dot_product_attention(f32, f32, f64)


def test_attention_shape_errors_name_the_shapes():
    q = mt.randn(2, 2, 3, 4)
    k = mt.randn(3, 2, 3, 4)
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: the batch dims of query \(2, 2, 3, 4\), "
                                         r"key \(3, 2, 3, 4\) and value \(3, 2, 3, 4\)"):
        F.scaled_dot_product_attention(q, k, k)
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: attn_mask of shape \(5, 5\) does not "
                                         r"broadcast to the attention scores' shape \(2, 2, 3, 3\)"):
        F.scaled_dot_product_attention(q, q, q, attn_mask=np.zeros((5, 5), dtype=bool))
    with pytest.raises(ValueError, match=r"attn_mask of shape \(2, 2, 3, 3, 3\)"):  # would broadcast the output up
        F.scaled_dot_product_attention(q, q, q, attn_mask=mt.zeros(2, 2, 3, 3, 3))


def test_attention_with_head_size_zero_averages_the_values(backend):
    """E = 0: every score is an empty dot product, 0, so each query gets the mean of the values (as in PyTorch)."""
    v = mt.randn(2, 3, 5, 4, dtype=mt.float64)
    out = F.scaled_dot_product_attention(mt.zeros(2, 3, 6, 0, dtype=mt.float64), mt.zeros(2, 3, 5, 0,
                                         dtype=mt.float64), v)
    np.testing.assert_allclose(out.numpy(), np.broadcast_to(v.numpy().mean(axis=2, keepdims=True), (2, 3, 6, 4)))


# ---------------------------------------------------------------------------- 3. dtypes of the layers with weights
@pytest.mark.parametrize("dtype", [mt.float64, mt.int64])
def test_linear_rejects_an_input_of_another_dtype(dtype):
    layer = nn.Linear(4, 3)
    x = mt.ones(2, 4, dtype=dtype)
    with pytest.raises(TypeError, match=f"linear: expected input, weight and bias of one dtype, got input {dtype}, "
                                        "weight float32, bias float32"):
        layer(x)
    with pytest.raises(TypeError, match=f"linear: expected input and weight of one dtype, got input {dtype}, "
                                        "weight float32"):
        F.linear(x, layer.weight)
    with pytest.raises(TypeError, match="bias float64"):
        F.linear(mt.ones(2, 4), layer.weight, mt.zeros(3, dtype=mt.float64))
    assert layer(x.to(mt.float32)).dtype == mt.float32
    assert layer.to(mt.float64)(mt.ones(2, 4, dtype=mt.float64)).dtype == mt.float64


@pytest.mark.parametrize("make, call, op", [
    (lambda: nn.Conv2d(2, 3, 3), lambda m, dt: m(mt.ones(1, 2, 5, 5, dtype=dt)), "conv2d"),
    (lambda: nn.LayerNorm(4), lambda m, dt: m(mt.ones(2, 4, dtype=dt)), "layer_norm"),
    (lambda: nn.LSTM(4, 3), lambda m, dt: m(mt.ones(5, 2, 4, dtype=dt)), "LSTM"),
    (lambda: nn.LSTMCell(4, 3), lambda m, dt: m(mt.ones(2, 4, dtype=dt)), "LSTMCell"),
])
@pytest.mark.parametrize("dtype", [mt.float64, mt.int64])
def test_layers_with_weights_reject_an_input_of_another_dtype(make, call, op, dtype):
    with pytest.raises(TypeError, match=f"{op}: expected input(,| and) .* of one dtype, got input {dtype}, .*float32"):
        call(make(), dtype)


def test_lstm_rejects_a_state_of_another_dtype():
    lstm = nn.LSTM(4, 3)
    h0 = mt.zeros(1, 2, 3, dtype=mt.float64)
    with pytest.raises(TypeError, match="LSTM: .*h_0 float64, c_0 float32"):
        lstm(mt.ones(5, 2, 4), (h0, mt.zeros(1, 2, 3)))


def test_embedding_indices_must_be_integers():
    with pytest.raises(TypeError, match="embedding: indices must be an integer tensor, got float32"):
        nn.Embedding(4, 3)(mt.tensor([1.0, 2.0]))
    assert nn.Embedding(4, 3)(mt.tensor([1, 2], dtype=mt.int32)).shape == (2, 3)


# ---------------------------------------------------------------------------- 4. layer_norm's bias without a weight
def test_layer_norm_bias_without_weight_gets_its_gradient(backend, engine):
    x = mt.randn(3, 5, 4, dtype=mt.float64, requires_grad=True)
    bias = mt.randn(4, dtype=mt.float64, requires_grad=True)
    g = np.random.default_rng(0).standard_normal((3, 5, 4))
    (F.layer_norm(x, (4,), None, bias) * mt.tensor(g)).sum().backward()
    np.testing.assert_allclose(bias.grad.numpy(), g.sum(axis=(0, 1)))
    # and differentiable again (create_graph): d/dbias of sum(dbias) is 0, d/dx too
    bias.grad = None
    (gb,) = mt.autograd.grad((F.layer_norm(x, (4,), None, bias) * mt.tensor(g)).sum(), [bias], create_graph=True)
    np.testing.assert_allclose(gb.numpy(), g.sum(axis=(0, 1)))


# ---------------------------------------------------------------------------- 5. extremes and empty batches
def test_attention_with_huge_queries_matches_on_both_backends(backend):
    """q = 1e38 in float32: q kᵀ alone overflows to inf (then inf - inf = NaN) where (scale q) kᵀ does not."""
    q = mt.full((1, 1, 2, 4), 1e38)
    k = mt.ones(1, 1, 3, 4)
    k[..., 1, :] = 0.5
    v = mt.tensor(np.arange(12.0, dtype=np.float32).reshape(1, 1, 3, 4))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = F.scaled_dot_product_attention(q, k, v).numpy()
    # scores 2e38, 1e38, 2e38: the weights are 1/2, 0, 1/2
    np.testing.assert_allclose(out, np.broadcast_to((v.numpy()[0, 0, 0] + v.numpy()[0, 0, 2]) / 2, (1, 1, 2, 4)))


@pytest.mark.parametrize("create_graph", [False, True])
def test_conv2d_with_batch_zero_has_zero_sized_gradients(backend, create_graph):
    x = mt.randn(0, 2, 5, 5, requires_grad=True)
    w = mt.randn(3, 2, 3, 3, requires_grad=True)
    b = mt.randn(3, requires_grad=True)
    y = F.conv2d(x, w, b, padding=1)
    assert y.shape == (0, 3, 5, 5)
    gx, gw, gb = mt.autograd.grad(y.sum(), [x, w, b], create_graph=create_graph)
    assert gx.shape == (0, 2, 5, 5)
    np.testing.assert_array_equal(gw.numpy() if not gw.requires_grad else gw.detach().numpy(), np.zeros((3, 2, 3, 3)))
    np.testing.assert_array_equal(gb.detach().numpy(), np.zeros(3))


# ---------------------------------------------------------------------------- 6. numpy's warnings
@pytest.mark.parametrize("op, want", [
    (lambda: mt.log(mt.tensor([0.0])), -np.inf),
    (lambda: mt.sqrt(mt.tensor([-1.0])), np.nan),
    (lambda: mt.tensor([1.0]) / 0, np.inf),
    (lambda: mt.tensor([1.0]) / mt.tensor([0.0]), np.inf),
    (lambda: mt.tensor([0.0]) / mt.tensor([0.0]), np.nan),
    (lambda: mt.exp(mt.tensor([1000.0])), np.inf),
    (lambda: mt.tensor([0.0], requires_grad=True).log(), -np.inf),  # the recorded path too
])
def test_ops_give_inf_and_nan_without_a_warning(op, want):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = op()
    np.testing.assert_array_equal(out.detach().numpy(), [want])


def test_silencing_ends_with_the_op():
    """Only the op's own computation is silenced: numpy code of the caller keeps its warnings, even after an
    op that raised."""
    mt.log(mt.tensor([0.0]))
    with pytest.raises(ValueError):
        mt.tensor([1.0, 2.0]) + mt.tensor([1.0, 2.0, 3.0])
    with pytest.warns(RuntimeWarning, match="divide by zero"):
        np.log(np.zeros(1))


def test_backward_through_log_of_zero_is_silent():
    x = mt.tensor([0.0, 1.0], dtype=mt.float64, requires_grad=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        x.log().sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [np.inf, 1.0])


# ---------------------------------------------------------------------------- 7. promotion and small semantics
@pytest.mark.parametrize("a_dtype, b_dtype", [(mt.int64, mt.int64), (mt.int32, mt.int32), (mt.int64, mt.int32),
                                              (mt.bool, mt.bool), (mt.uint8, mt.uint8)])
def test_true_division_of_ints_gives_the_default_float(a_dtype, b_dtype):
    a, b = mt.tensor([1, 2, 3], dtype=a_dtype), mt.tensor([2, 2, 1], dtype=b_dtype)
    out = a / b
    assert out.dtype == mt.get_default_dtype() == mt.float32
    np.testing.assert_allclose(out.numpy(), a.numpy() / b.numpy())
    assert (mt.tensor([1, 2]) / 2).dtype == mt.float32
    assert (mt.tensor([1.0, 2.0], dtype=mt.float64) / mt.tensor([1, 2])).dtype == mt.float64


@pytest.mark.parametrize("loss", ["nll_loss", "cross_entropy", "cross_entropy_smoothed", "cross_entropy_weighted"])
def test_every_target_ignored_gives_nan_mean_and_zero_gradient(loss, engine):
    x = mt.randn(3, 4, dtype=mt.float64, requires_grad=True)
    target = mt.tensor([-100, -100, -100])
    call = {
        "nll_loss": lambda r: F.nll_loss(x, target, reduction=r),
        "cross_entropy": lambda r: F.cross_entropy(x, target, reduction=r),
        "cross_entropy_smoothed": lambda r: F.cross_entropy(x, target, reduction=r, label_smoothing=0.1),
        "cross_entropy_weighted": lambda r: F.cross_entropy(x, target, mt.ones(4, dtype=mt.float64), reduction=r),
    }[loss]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value = call("mean")
        value.backward()
    assert math.isnan(value.item())
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((3, 4)))
    x.grad = None
    value = call("sum")
    value.backward()
    assert value.item() == 0
    np.testing.assert_array_equal(x.grad.numpy(), np.zeros((3, 4)))


def test_partly_ignored_targets_are_unchanged():
    logp = mt.tensor(np.log(np.full((2, 3), 1 / 3)), requires_grad=True)
    loss = F.nll_loss(logp, mt.tensor([1, -100]))
    assert loss.item() == pytest.approx(math.log(3))
    loss.backward()
    np.testing.assert_allclose(logp.grad.numpy(), [[0, -1, 0], [0, 0, 0]])


def test_sign_requires_grad_with_a_zero_gradient(engine):
    x = mt.tensor([-2.0, 0.0, 3.0], requires_grad=True)
    s = x.sign()
    assert s.requires_grad and s.grad_fn is not None
    np.testing.assert_array_equal(s.detach().numpy(), [-1, 0, 1])
    (s * mt.tensor([np.inf, 1.0, 2.0])).sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [0, 0, 0])
    assert not mt.tensor([1.0]).sign().requires_grad
    assert mt.tensor([-3, 4]).sign().tolist() == [-1, 1]


def test_pytorch_agrees_on_these_semantics():
    torch = pytest.importorskip("torch", reason="the PyTorch comparison needs torch")
    assert (torch.tensor([1, 2]) / torch.tensor([2, 2])).dtype == torch.float32
    x = torch.randn(3, 4, requires_grad=True)
    loss = torch.nn.functional.cross_entropy(x, torch.tensor([-100, -100, -100]))
    loss.backward()
    assert math.isnan(loss.item()) and not x.grad.any()
    assert torch.randn(3, requires_grad=True).sign().requires_grad
    v = torch.randn(2, 3, 5, 4, dtype=torch.float64)
    out = torch.nn.functional.scaled_dot_product_attention(torch.zeros(2, 3, 6, 0, dtype=torch.float64),
                                                           torch.zeros(2, 3, 5, 0, dtype=torch.float64), v)
    ours = F.scaled_dot_product_attention(mt.zeros(2, 3, 6, 0, dtype=mt.float64), mt.zeros(2, 3, 5, 0,
                                          dtype=mt.float64), mt.tensor(v.numpy()))
    np.testing.assert_allclose(ours.numpy(), out.numpy())
    keep = torch.rand(3, 5) < 0.6
    keep[:, 0] = True
    xs = torch.randn(3, 5, dtype=torch.float64)
    np.testing.assert_allclose(mt.softmax(mt.tensor(xs.numpy()), -1, mask=keep.numpy()).numpy(),
                               torch.masked.softmax(xs, -1, mask=keep).numpy(), rtol=1e-12)
