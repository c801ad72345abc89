"""Generic tests generated from the op registry (minitensor/testing/op_db.py): every entry gets all of them.

- forward against the numpy reference, on contiguous and strided/reversed inputs, float64 and float32
- the vector-Jacobian product against float64 finite differences (random projection), both backends
- the full Jacobian on tiny inputs
- second derivatives for twice-differentiable ops
- gradients have the inputs' shapes and dtypes; inputs and grad_output are never mutated
- size-0 inputs work forward and backward
"""
import numpy as np
import pytest
from hypothesis import HealthCheck, assume, find, given, settings
from hypothesis import strategies as st

import minitensor as mt
from minitensor import autograd
from minitensor.testing import gradcheck, gradgradcheck
from minitensor.testing import strategies as mts
from minitensor.testing.op_db import OPS

IDS = [info.name for info in OPS]


def make_tensors(info, sample, dtype=np.float64, layout="contiguous", requires_grad=True):
    diff = info.diff_indices(sample)
    tensors = []
    for i, a in enumerate(sample.arrays):
        t = mt.Tensor._wrap(mts.as_layout(a.astype(dtype), layout))
        if requires_grad and i in diff:
            t.requires_grad = True
        tensors.append(t)
    return tensors


def call(info, tensors, sample):
    return info.op(*tensors, **sample.kwargs)


def _sizes_ok(info, sample):
    return info.supports_size0 or all(a.size for a in sample.arrays)


@pytest.mark.parametrize("info", OPS, ids=IDS)
@given(data=st.data())
def test_forward_matches_reference(info, backend, data):
    sample = data.draw(info.sample, label="sample")
    assume(_sizes_ok(info, sample))
    layout = data.draw(mts.layouts(), label="layout")
    dtype = data.draw(st.sampled_from(info.dtypes), label="dtype")
    expected = np.asarray(info.ref(*sample.arrays, **sample.kwargs), dtype=np.float64)
    out = call(info, make_tensors(info, sample, dtype, layout, requires_grad=False), sample)
    assert out.dtype == dtype, f"{info.name}: output dtype {out.dtype}, expected {dtype}"
    assert out.shape == expected.shape, f"{info.name}: output shape {out.shape}, expected {expected.shape}"
    rtol, atol = (1e-9, 1e-12) if dtype == np.float64 else info.float32_tol
    np.testing.assert_allclose(out.numpy().astype(np.float64), expected, rtol=rtol, atol=atol)


@pytest.mark.parametrize("info", OPS, ids=IDS)
@given(data=st.data())
def test_vjp_matches_finite_differences(info, backend, data):
    sample = data.draw(info.sample, label="sample")
    assume(_sizes_ok(info, sample))
    tensors = make_tensors(info, sample)
    rtol, atol = info.grad_tol
    gradcheck(lambda *ts: call(info, ts, sample), tensors, fast_mode=True, rtol=rtol, atol=atol,
              seed=data.draw(st.integers(0, 1000), label="projection seed"))


@pytest.mark.parametrize("info", OPS, ids=IDS)
@settings(max_examples=10, suppress_health_check=[HealthCheck.filter_too_much, HealthCheck.too_slow])
@given(data=st.data())
def test_full_jacobian_on_tiny_inputs(info, data):
    sample = data.draw(info.tiny_sample or info.sample, label="sample")
    assume(_sizes_ok(info, sample) and sum(a.size for a in sample.arrays) <= 24)
    rtol, atol = info.grad_tol
    gradcheck(lambda *ts: call(info, ts, sample), make_tensors(info, sample), rtol=rtol, atol=atol)


@pytest.mark.parametrize("info", [i for i in OPS if i.twice_differentiable], ids=[i.name for i in OPS if i.twice_differentiable])
@settings(max_examples=15)
@given(data=st.data())
def test_second_derivatives(info, data):
    sample = data.draw(info.sample, label="sample")
    assume(_sizes_ok(info, sample) and all(a.size for a in sample.arrays))
    rtol, atol = info.grad_tol
    gradgradcheck(lambda *ts: call(info, ts, sample), make_tensors(info, sample), fast_mode=True,
                  rtol=rtol, atol=atol)


@pytest.mark.parametrize("info", OPS, ids=IDS)
@given(data=st.data())
def test_gradient_shapes_and_no_mutation(info, backend, data):
    sample = data.draw(info.sample, label="sample")
    assume(_sizes_ok(info, sample))
    dtype = data.draw(st.sampled_from(info.dtypes), label="dtype")
    tensors = make_tensors(info, sample, dtype)
    before = [t.detach().numpy().copy() for t in tensors]
    out = call(info, tensors, sample)
    grad_output = mt.Tensor._wrap(np.random.default_rng(0).standard_normal(out.shape).astype(dtype))
    grad_before = grad_output.numpy().copy()
    diff = [tensors[i] for i in info.diff_indices(sample)]
    grads = autograd.grad(out, diff, grad_output, allow_unused=True)
    for t, g in zip(diff, grads):
        assert g is not None, f"{info.name}: no gradient for an input of shape {t.shape}"
        assert g.shape == t.shape and g.dtype == t.dtype, (
            f"{info.name}: gradient {g.shape}/{g.dtype} for input {t.shape}/{t.dtype}")
    for t, b in zip(tensors, before):
        np.testing.assert_array_equal(t.detach().numpy(), b, err_msg=f"{info.name} mutated an input")
    np.testing.assert_array_equal(grad_output.numpy(), grad_before, err_msg=f"{info.name} mutated grad_output")


@pytest.mark.parametrize("info", [i for i in OPS if i.supports_size0], ids=[i.name for i in OPS if i.supports_size0])
def test_size_zero_inputs(info):
    try:
        sample = find(info.sample, lambda s: any(a.size == 0 for a in s.arrays),
                      settings=settings(database=None, derandomize=True, max_examples=300))
    except Exception:
        pytest.fail(f"{info.name}: declares supports_size0 but its sample strategy never produces an empty tensor")
    tensors = make_tensors(info, sample)
    out = call(info, tensors, sample)
    expected = np.asarray(info.ref(*sample.arrays, **sample.kwargs))
    assert out.shape == expected.shape
    np.testing.assert_allclose(out.detach().numpy(), expected)
    if out.requires_grad:
        out.sum().backward()
        for i in info.diff_indices(sample):
            assert tensors[i].grad is not None and tensors[i].grad.shape == tensors[i].shape
