"""The Tensor surface: creation, dtypes, metadata, conversion, numpy interop, repr, randomness."""
import numpy as np
import pytest

import minitensor as mt

from optional_torch import needs_torch, torch


def test_default_dtypes_follow_pytorch():
    assert mt.tensor([1.0, 2.0]).dtype == mt.float32
    assert mt.tensor([1, 2]).dtype == mt.int64
    assert mt.tensor([True, False]).dtype == mt.bool
    assert mt.tensor(np.zeros(2)).dtype == mt.float64          # numpy arrays keep their dtype
    assert mt.zeros(2).dtype == mt.float32 and mt.arange(3).dtype == mt.int64 and mt.arange(3.0).dtype == mt.float32
    assert mt.full((2,), 7).dtype == mt.int64 and mt.full((2,), 0.5).dtype == mt.float32
    assert (mt.tensor([1, 2]) / 2).dtype == mt.float32          # true division of ints gives floats
    assert (mt.tensor([1, 2]) * 2.5).dtype == mt.float32
    assert (mt.ones(2) + mt.ones(2, dtype=mt.float64)).dtype == mt.float64
    assert (mt.ones(2, dtype=mt.float64) * 2).dtype == mt.float64


def test_creation_functions():
    assert mt.zeros(2, 3).shape == (2, 3) and mt.zeros((2, 3)).shape == (2, 3) and mt.ones([4]).shape == (4,)
    np.testing.assert_array_equal(mt.full((2, 2), 3.0).numpy(), np.full((2, 2), 3.0))
    np.testing.assert_array_equal(mt.arange(1, 7, 2).numpy(), [1, 3, 5])
    np.testing.assert_allclose(mt.linspace(0, 1, 5).numpy(), [0, 0.25, 0.5, 0.75, 1])
    np.testing.assert_array_equal(mt.eye(3).numpy(), np.eye(3))
    assert mt.empty(3, 2).shape == (3, 2)
    x = mt.randn(4, 5, dtype=mt.float64)
    for like in (mt.zeros_like, mt.ones_like, mt.empty_like, mt.rand_like, mt.randn_like):
        y = like(x)
        assert y.shape == x.shape and y.dtype == x.dtype
    assert mt.full_like(x, 2.0).numpy().max() == 2.0
    r = mt.randint(0, 10, (1000,))
    assert r.dtype == mt.int64 and r.numpy().min() >= 0 and r.numpy().max() <= 9
    assert mt.randint(5, (3,)).numpy().max() < 5
    u = mt.rand(10_000)
    assert 0 <= u.numpy().min() and u.numpy().max() < 1 and abs(u.numpy().mean() - 0.5) < 0.02
    n = mt.randn(10_000)
    assert abs(n.numpy().mean()) < 0.05 and abs(n.numpy().std() - 1) < 0.05
    assert sorted(mt.randperm(5).tolist()) == [0, 1, 2, 3, 4]


def test_manual_seed_makes_runs_reproducible():
    mt.manual_seed(123)
    a = (mt.randn(3), mt.rand(2), mt.randint(0, 100, (4,)))
    mt.manual_seed(123)
    b = (mt.randn(3), mt.rand(2), mt.randint(0, 100, (4,)))
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x.numpy(), y.numpy())
    g = mt.Generator().manual_seed(5)
    first = mt.randn(3, generator=g).numpy()
    np.testing.assert_array_equal(first, mt.randn(3, generator=mt.Generator().manual_seed(5)).numpy())


def test_metadata_and_conversion():
    x = mt.arange(6.0).reshape(2, 3)
    assert x.shape == (2, 3) and x.size() == (2, 3) and x.size(1) == 3 and x.size(-1) == 3
    assert x.ndim == 2 and x.dim() == 2 and x.numel() == 6 and x.device == "cpu"
    assert x.tolist() == [[0.0, 1.0, 2.0], [3.0, 4.0, 5.0]]
    assert x[1, 2].item() == 5.0 and isinstance(x[1, 2].item(), float)
    assert x.T.shape == (3, 2) and x.T.tolist() == [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    assert float(mt.tensor(2.5)) == 2.5 and int(mt.tensor(3)) == 3 and len(x) == 2
    assert [row.tolist() for row in x] == x.tolist()
    assert x.double().dtype == mt.float64 and x.long().dtype == mt.int64 and x.float().dtype == mt.float32
    assert x.to(mt.float64).dtype == mt.float64 and x.to(mt.float32) is x


def test_autograd_attributes():
    x = mt.ones(2, requires_grad=True)
    assert x.is_leaf and x.grad_fn is None and x.grad is None and x.requires_grad
    y = x * 2
    assert not y.is_leaf and y.grad_fn.name() == "MulBackward" and y.requires_grad
    d = y.detach()
    assert d.is_leaf and not d.requires_grad and np.shares_memory(d.numpy(), y._data)
    z = mt.zeros(2).requires_grad_()
    assert z.requires_grad and z.is_leaf
    w = mt.ones(3)
    assert w.zero_() is w and w.tolist() == [0.0, 0.0, 0.0]


def test_numpy_interop_shares_memory_both_ways():
    a = np.arange(4.0)
    t = mt.from_numpy(a)
    a[0] = 10.0
    assert t[0].item() == 10.0
    t.numpy()[1] = 20.0
    assert a[1] == 20.0
    assert np.asarray(t) is a or np.shares_memory(np.asarray(t), a)
    assert isinstance(np.ones(4) + t, mt.Tensor)       # numpy defers to the tensor's operators
    np.testing.assert_array_equal((np.ones(4) + t).numpy(), a + 1)
    assert isinstance(np.exp(t), np.ndarray)            # a numpy function on a tensor gives an array
    with pytest.raises(RuntimeError, match="requires grad"):
        mt.ones(2, requires_grad=True).numpy()


def test_tensor_copies_its_input():
    a = np.arange(3.0)
    t = mt.tensor(a)
    a[0] = 99
    assert t[0].item() == 0.0


@pytest.mark.parametrize("make", [
    lambda m: m.tensor([1.0, 2.0, 3.0]),
    lambda m: m.tensor([[1.5, -2.25], [3.0, 4.125]]),
    lambda m: m.tensor([1, 2, 3]),
    lambda m: m.tensor(3.5),
    lambda m: m.tensor([True, False]),
    lambda m: m.tensor([1.0, 2.0], dtype=m.float64),
    lambda m: m.tensor([1e-6, 1.0, 1e6]),
    lambda m: m.zeros(0, 3),
    lambda m: m.tensor([[1.0, 2.0]], requires_grad=True),
    lambda m: m.arange(12.0).reshape(2, 2, 3),
], ids=["floats", "matrix", "ints", "scalar", "bools", "float64", "sci", "empty", "requires_grad", "3d"])
@needs_torch
def test_repr_matches_pytorch(make):
    assert repr(make(mt)) == repr(make(torch)).replace("torch.", "minitensor.")
