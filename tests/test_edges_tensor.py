"""The edges of the Tensor class and grad mode (issue 12): the legacy constructor `Tensor(...)`, `to()` and
`device=` (the CPU only, said clearly), deepcopy of a non-leaf, and bare `@no_grad` / `@enable_grad`."""
import copy

import numpy as np
import pytest

import minitensor as mt
from minitensor import nn


# ---------------------------------------------------------------------------- the legacy constructor
@pytest.mark.parametrize("data", [[2, 3], [True, False], np.array([1.5, 2.5]), np.array([1, 2], dtype=np.int32),
                                  np.array([[1.0, 2.0]], dtype=np.float64), (4, 5), np.array(2.0)])
def test_tensor_class_gives_the_default_float_dtype(data):
    t = mt.Tensor(data)
    assert t.dtype == mt.get_default_dtype() == mt.float32
    np.testing.assert_array_equal(t.numpy(), np.asarray(data, dtype=np.float32))


def test_tensor_class_follows_the_default_dtype():
    mt.set_default_dtype(mt.float64)
    try:
        assert mt.Tensor([1, 2]).dtype == mt.float64
    finally:
        mt.set_default_dtype(mt.float32)


@pytest.mark.parametrize("size", [(2, 3), (4,), (0,), (2, 0, 3)])
def test_tensor_class_of_ints_is_a_size(size):
    t = mt.Tensor(*size)
    assert t.shape == size and t.dtype == mt.float32
    np.testing.assert_array_equal(t.numpy(), np.zeros(size))


def test_tensor_class_other_forms():
    assert mt.Tensor().shape == (0,)
    assert mt.Tensor(2, 3, dtype=mt.float64).dtype == mt.float64
    assert mt.Tensor([1, 2], dtype=mt.int64).dtype == mt.int64
    t = mt.Tensor([1.0, 2.0], requires_grad=True)
    assert t.requires_grad and t.is_leaf
    src = mt.tensor([1, 2])
    alias = mt.Tensor(src)  # as in PyTorch: a tensor argument keeps its dtype and shares its memory
    assert alias.dtype == mt.int64
    alias[0] = 7
    assert src.tolist() == [7, 2]


@pytest.mark.parametrize("args, error, match", [
    ((2.5,), TypeError, r"Tensor: data must be a sequence or an array, got float; for a 0-d tensor use "
                        r"minitensor.tensor\(2.5\)"),
    ((True,), TypeError, "data must be a sequence or an array, got bool"),
    (("ab",), TypeError, "data must be a sequence or an array, got str$"),
    ((-1,), ValueError, r"Tensor: cannot make a tensor with a negative dimension, got size \(-1,\)"),
    ((2, -3), ValueError, r"negative dimension, got size \(2, -3\)"),
    (([1, 2], mt.float64), TypeError, r"Tensor: expected the data as one argument .* got \(list, .*\); give a "
                                      "dtype as dtype="),
    ((2, 3.0), TypeError, r"got \(int, float\)"),
])
def test_tensor_class_errors(args, error, match):
    with pytest.raises(error, match=match):
        mt.Tensor(*args)


def test_internal_tensors_keep_their_dtype():
    """The ops build tensors from arrays with the factory, not the legacy constructor: dtypes survive."""
    x = mt.tensor([1.0, 2.0], dtype=mt.float64)
    assert (x + np.ones(2, dtype=np.float64)).dtype == mt.float64
    assert (mt.tensor([1.0, 2.0]) + np.ones(2)).dtype == mt.float64  # an array operand promotes like a tensor
    assert x.masked_fill(np.array([True, False]), 0.0).tolist() == [0.0, 2.0]
    assert x.new_tensor([1, 2]).dtype == mt.float64
    assert mt.as_tensor([1, 2]).dtype == mt.int64
    assert mt.tensor([2, 3]).dtype == mt.int64 and mt.tensor(np.zeros(2)).dtype == mt.float64
    assert mt.tensor([True]).dtype == mt.bool


# ---------------------------------------------------------------------------- to() and device=
def test_to_on_the_cpu():
    x = mt.ones(2)
    assert x.to("cpu") is x and x.to("cpu:0") is x and x.to(device="cpu") is x
    assert x.to("cpu", mt.float64).dtype == mt.float64
    assert x.to("cpu", dtype=mt.float64).dtype == mt.float64
    assert x.to(mt.zeros(1, dtype=mt.float64)).dtype == mt.float64
    assert x.to("float64").dtype == mt.float64
    assert x.to(mt.float32) is x
    copied = x.to(mt.float32, copy=True)
    assert copied is not x and copied.tolist() == x.tolist()


@pytest.mark.parametrize("call", [lambda x: x.to("cuda"), lambda x: x.to("cuda:1"), lambda x: x.to("mps"),
                                  lambda x: x.to(device="cuda"), lambda x: x.to("cuda", mt.float64)])
def test_to_another_device_says_cpu_only(call):
    with pytest.raises(ValueError, match=r"to\(\): minitensor runs on the CPU only, got device '(cuda|mps)"):
        call(mt.ones(2))


def test_to_with_a_bad_argument():
    with pytest.raises(TypeError, match=r"to\(\): expected a dtype, a device or a tensor, got 'foo'"):
        mt.ones(2).to("foo")
    with pytest.raises(TypeError, match=r"to\(\): expected a dtype, a device or a tensor, got 3"):
        mt.ones(2).to(3)
    with pytest.raises(ValueError, match=r"to\(\): expected a device such as 'cpu', got 'gpu0'"):
        mt.ones(2).to(device="gpu0")


def test_torch_devices_are_understood():
    torch = pytest.importorskip("torch", reason="torch.device objects need torch")
    x = mt.ones(2)
    assert x.to(torch.device("cpu")) is x
    with pytest.raises(ValueError, match="runs on the CPU only, got device 'cuda'"):
        x.to(torch.device("cuda"))


@pytest.mark.parametrize("make, name", [
    (lambda d: nn.Linear(2, 3, device=d), "Linear"), (lambda d: nn.Conv2d(1, 2, 3, device=d), "Conv2d"),
    (lambda d: nn.LayerNorm(4, device=d), "LayerNorm"), (lambda d: nn.Embedding(5, 2, device=d), "Embedding"),
    (lambda d: nn.LSTM(2, 3, device=d), "LSTM"), (lambda d: nn.LSTMCell(2, 3, device=d), "LSTMCell"),
    (lambda d: nn.MultiheadAttention(4, 2, device=d), "MultiheadAttention"),
    (lambda d: nn.TransformerEncoderLayer(4, 2, device=d), "TransformerEncoderLayer"),
])
def test_modules_take_the_cpu_device_only(make, name):
    assert make("cpu") is not None and make(None) is not None
    with pytest.raises(ValueError, match=f"{name}: minitensor runs on the CPU only, got device 'cuda'"):
        make("cuda")


def test_module_to():
    m = nn.Linear(2, 3)
    assert m.to("cpu") is m
    assert m.to("cpu", mt.float64).weight.dtype == mt.float64
    assert m.to(mt.zeros(1)).weight.dtype == mt.float32
    with pytest.raises(ValueError, match="Module.to: minitensor runs on the CPU only, got device 'cuda'"):
        m.to("cuda")


# ---------------------------------------------------------------------------- deepcopy
def test_deepcopy_of_a_non_leaf_raises():
    a = mt.randn(2, requires_grad=True)
    with pytest.raises(RuntimeError, match="deepcopy: only tensors created explicitly by the user \\(graph leaves\\) "
                                           "support the deepcopy protocol; this one was computed by MulBackward"):
        copy.deepcopy(a * 2)
    assert copy.deepcopy((a * 2).detach()).tolist() == (a * 2).detach().tolist()


def test_deepcopy_of_leaves_parameters_and_modules():
    a = mt.randn(3, requires_grad=True)
    (a * 2).sum().backward()
    b = copy.deepcopy(a)
    assert b is not a and b.requires_grad and b.is_leaf and b.tolist() == a.tolist()
    assert b.grad is not a.grad and b.grad.tolist() == [2.0, 2.0, 2.0]  # .grad is copied, as in PyTorch
    b.data.add_(1.0)
    assert b.tolist() != a.tolist()  # its own memory
    pair = copy.deepcopy([a, a])
    assert pair[0] is pair[1]  # the memo: one tensor stays one
    m = nn.Sequential(nn.Linear(2, 3), nn.LayerNorm(3))
    m2 = copy.deepcopy(m)
    for p, q in zip(m.parameters(), m2.parameters()):
        assert p is not q and isinstance(q, nn.Parameter) and np.array_equal(p.detach().numpy(), q.detach().numpy())
    with mt.no_grad():
        c = copy.deepcopy(a * 2)  # made under no_grad: a leaf
    assert not c.requires_grad


def test_pytorch_raises_on_a_non_leaf_deepcopy_too():
    torch = pytest.importorskip("torch", reason="the PyTorch comparison needs torch")
    with pytest.raises(RuntimeError, match="Only Tensors created explicitly by the user"):
        copy.deepcopy(torch.randn(2, requires_grad=True) * 2)
    assert torch.Tensor([2, 3]).dtype == torch.float32 and torch.Tensor(2, 3).shape == (2, 3)


# ---------------------------------------------------------------------------- bare grad-mode decorators
def test_bare_no_grad_and_enable_grad_decorators():
    @mt.no_grad
    def inference(x):
        return x * 2

    @mt.enable_grad
    def training(x):
        return x * 2

    @mt.no_grad()
    def called(x):
        return x * 2

    x = mt.randn(2, requires_grad=True)
    assert not inference(x).requires_grad and not called(x).requires_grad
    assert inference.__name__ == "inference"
    with mt.no_grad():
        assert training(x).requires_grad
    assert mt.is_grad_enabled()
    with mt.no_grad():  # the context managers still work
        assert not mt.is_grad_enabled()
    with mt.set_grad_enabled(False):
        assert not mt.is_grad_enabled()
    assert mt.is_grad_enabled()


def test_grad_mode_with_a_non_function_argument():
    with pytest.raises(TypeError, match="no_grad: takes no arguments, or a function to decorate; got 3"):
        mt.no_grad(3)
