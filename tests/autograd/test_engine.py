"""The engine's contract: accumulation, topological order, freeing, version checks, hooks, grad(),
higher order, no_grad, iterative walk, and the Python and Cython engines agreeing."""
import time

import numpy as np
import pytest

import minitensor as mt
from minitensor import autograd
from minitensor.autograd import Function


def leaf(*values):
    return mt.tensor(np.array(values, dtype=np.float64), requires_grad=True)


def test_gradients_accumulate_across_backward_calls(engine):
    x = leaf(1.0, 2.0)
    (x * x).sum().backward()
    (x * 3).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 + 3, 4 + 3])


def test_reused_node_waits_for_all_its_consumers(engine):
    # b = a + a; c = b + b: b's node must collect both edges from c before running, so dc/da = 4
    a = leaf(1.5)
    b = a + a
    c = b + b
    c.backward()
    assert a.grad.item() == 4.0


def test_diamond_graph(engine):
    x = leaf(2.0)
    y = x * x          # 4
    z = y.exp() + y * 3
    z.backward()
    np.testing.assert_allclose(x.grad.item(), (np.exp(4.0) + 3) * 4.0)


def test_second_backward_without_retain_graph_raises(engine):
    x = leaf(1.0, 2.0)
    y = (x.exp() * 2).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time"):
        y.backward()


def test_retain_graph_allows_second_backward(engine):
    x = leaf(1.0, 2.0)
    y = (x.exp() * 2).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 4 * np.exp([1.0, 2.0]))


def test_saved_tensors_are_freed_after_backward(engine):
    x = leaf(1.0, 2.0)
    h = x * 2
    y = (h * h).sum()
    node = y.grad_fn.next_functions[0][0]  # MulBackward of h * h
    assert node._saved is not None
    y.backward()
    assert node._saved is None


def test_inplace_change_of_saved_tensor_is_detected(engine):
    x = leaf(1.0, 2.0)
    h = x * 2
    y = (h * h).sum()
    with mt.no_grad():
        h.add_(1)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_inplace_on_view_bumps_the_shared_version(engine):
    x = leaf(1.0, 2.0, 3.0)
    h = x * 1
    y = (h * h).sum()
    with mt.no_grad():
        h[1:].mul_(2)  # a view of h: same version counter
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        y.backward()


def test_differentiable_inplace_on_non_leaf(engine):
    x = leaf(1.0, 2.0)
    h = x * 3
    h.mul_(x)  # h = 3 x²
    h.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 12.0])


def test_inplace_on_leaf_requiring_grad_raises(engine):
    x = leaf(1.0)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        x.add_(1)


def test_setitem_records_the_graph(engine):
    x = leaf(1.0, 2.0, 3.0)
    buf = mt.zeros(2, 3, dtype=mt.float64)
    buf[0] = x * 2
    buf[1] = x * x
    buf.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 + 2.0, 2 + 4.0, 2 + 6.0])


def test_long_chain_no_recursion_and_linear_time(engine):
    def run(n):
        x = leaf(1.0)
        y = x
        for _ in range(n):
            y = y + 1.0
        t0 = time.perf_counter()
        y.backward()
        return time.perf_counter() - t0, x.grad.item()

    t_small, g_small = run(10_000)
    t_big, g_big = run(100_000)
    assert g_small == 1.0 and g_big == 1.0
    # linear: 10x the nodes should cost about 10x, far from the 100x of a quadratic walk
    assert t_big < 40 * max(t_small, 1e-3), (t_small, t_big)


def test_backward_of_non_scalar_needs_gradient(engine):
    x = leaf(1.0, 2.0)
    with pytest.raises(RuntimeError, match="only for scalar outputs"):
        (x * 2).backward()
    (x * 2).backward(mt.tensor([1.0, 10.0], dtype=mt.float64))
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 20.0])


def test_backward_of_tensor_not_requiring_grad_raises(engine):
    with pytest.raises(RuntimeError, match="does not require grad"):
        mt.tensor([1.0]).sum().backward()


def test_grad_returns_without_touching_dot_grad(engine):
    x, y = leaf(1.0, 2.0), leaf(3.0)
    z = (x * y).sum()
    gx, gy = autograd.grad(z, [x, y])
    np.testing.assert_allclose(gx.numpy(), [3.0, 3.0])
    np.testing.assert_allclose(gy.numpy(), [3.0])
    assert x.grad is None and y.grad is None


def test_grad_allow_unused(engine):
    x, unused = leaf(1.0), leaf(2.0)
    z = (x * 2).sum()
    with pytest.raises(RuntimeError, match="not used"):
        autograd.grad(z, [x, unused], retain_graph=True)
    gx, gu = autograd.grad(z, [x, unused], allow_unused=True)
    assert gu is None and gx.item() == 2.0


def test_grad_of_non_leaf_input(engine):
    x = leaf(1.0, 2.0)
    h = x * x
    z = (h * 3).sum()
    (gh,) = autograd.grad(z, h)
    np.testing.assert_allclose(gh.numpy(), [3.0, 3.0])


def test_hessian_vector_product(engine):
    x = leaf(1.0, 2.0, 3.0)
    y = (x ** 3).sum()
    (g,) = autograd.grad(y, x, create_graph=True)
    v = mt.tensor([1.0, 0.5, -1.0], dtype=mt.float64)
    (hv,) = autograd.grad((g * v).sum(), x)
    np.testing.assert_allclose(hv.numpy(), 6 * x.detach().numpy() * v.numpy())


def test_gradient_penalty_flows_to_parameters(engine):
    w = leaf(0.5, -1.0)
    x = leaf(1.0, 2.0)
    out = ((w * x).tanh()).sum()
    (gx,) = autograd.grad(out, x, create_graph=True)
    penalty = (gx * gx).sum()
    penalty.backward()
    # d/dw sum((w (1 - tanh²(w x)))²), checked by finite differences
    def f(wv):
        t = np.tanh(wv * x.detach().numpy())
        return np.sum((wv * (1 - t * t)) ** 2)
    eps = 1e-6
    wv = w.detach().numpy()
    num = [(f(wv + eps * e) - f(wv - eps * e)) / (2 * eps) for e in np.eye(2)]
    np.testing.assert_allclose(w.grad.numpy(), num, rtol=1e-6)


def test_hooks_and_retain_grad(engine):
    x = leaf(1.0, 2.0)
    y = x * 2
    y.retain_grad()
    handle = y.register_hook(lambda g: g * 10)
    y.sum().backward()
    np.testing.assert_allclose(y.grad.numpy(), [10.0, 10.0])  # retain_grad sees the hooked gradient
    np.testing.assert_allclose(x.grad.numpy(), [20.0, 20.0])
    handle.remove()
    x.grad = None
    (x * 2).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])


def test_leaf_hook_replaces_gradient(engine):
    x = leaf(1.0, 2.0)
    x.register_hook(lambda g: g * 0 + 7)
    (x * 5).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [7.0, 7.0])


def test_post_accumulate_grad_hook_sees_the_accumulated_grad_once_per_backward(engine):
    x = leaf(1.0, 2.0)
    seen = []
    handle = x.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.numpy().copy()))
    (x * 3 + x * x).sum().backward()  # two uses of x: summed first, then one accumulation, one call
    (x * 2).sum().backward()  # accumulates onto the previous .grad
    np.testing.assert_allclose(seen, [[5.0, 7.0], [7.0, 9.0]])
    handle.remove()
    (x * 2).sum().backward()
    assert len(seen) == 2
    with pytest.raises(RuntimeError, match="is not a leaf"):
        (x * 2).register_post_accumulate_grad_hook(lambda t: None)


def test_no_grad_and_enable_grad(engine):
    x = leaf(1.0)
    with mt.no_grad():
        y = x * 2
        with mt.enable_grad():
            z = x * 2
    assert not y.requires_grad and y.grad_fn is None
    assert z.requires_grad

    @mt.no_grad()
    def f(t):
        return t * 2

    assert not f(x).requires_grad
    assert mt.is_grad_enabled()


def test_set_grad_enabled_takes_effect_immediately(engine):
    x = leaf(1.0)
    mt.set_grad_enabled(False)
    try:
        assert not (x * 2).requires_grad
    finally:
        mt.set_grad_enabled(True)
    assert (x * 2).requires_grad


class CubeWithSavedOutput(Function):
    @staticmethod
    def forward(ctx, x):
        y = x * x * x
        ctx.save_for_backward(x)
        return y

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * 3 * x * x


class SplitTwo(Function):
    @staticmethod
    def forward(ctx, x, scale):
        ctx.scale = scale
        return x * scale, x + 1

    @staticmethod
    def backward(ctx, ga, gb):
        return ga * ctx.scale + gb, None


def test_custom_function_like_torch(engine):
    x = leaf(1.0, 2.0)
    y = CubeWithSavedOutput.apply(x)
    assert y.grad_fn.name() == "CubeWithSavedOutputBackward"
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 12.0])
    # higher order through a custom Function
    x2 = leaf(2.0)
    (g,) = autograd.grad(CubeWithSavedOutput.apply(x2).sum(), x2, create_graph=True)
    (gg,) = autograd.grad(g.sum(), x2)
    assert gg.item() == pytest.approx(12.0)


def test_custom_function_multiple_outputs_and_unused_output(engine):
    x = leaf(1.0, 2.0)
    a, b = SplitTwo.apply(x, 5.0)
    a.sum().backward()  # b unused: its gradient reaches backward as zeros
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0])
    assert SplitTwo.apply(x, 2.0)[0].grad_fn.needs_input_grad == (True, False)


def test_custom_function_wrong_number_of_gradients(engine):
    class Bad(Function):
        @staticmethod
        def forward(ctx, x, y):
            return x * y

        @staticmethod
        def backward(ctx, g):
            return g

    with pytest.raises(RuntimeError, match="returned 1 gradients"):
        Bad.apply(leaf(1.0), leaf(2.0)).sum().backward()


def test_custom_function_wrong_gradient_shape(engine):
    class Bad(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return g.sum()

    with pytest.raises(RuntimeError, match="shape"):
        Bad.apply(leaf(1.0, 2.0)).sum().backward()


def test_function_subclass_must_define_forward_and_backward():
    with pytest.raises(TypeError, match="must define"):
        class NoBackward(Function):  # noqa: F841
            @staticmethod
            def forward(ctx, x):
                return x


def test_detect_anomaly_names_the_op(engine):
    x = mt.tensor([0.0, 1.0], dtype=mt.float64, requires_grad=True)
    with autograd.detect_anomaly():
        y = x.sqrt().sum()
        with pytest.raises(RuntimeError, match="SqrtBackward.*inf") as info:
            y.backward()
    assert "forward call" in str(info.value)


def test_engines_agree_exactly():
    if autograd._cython_engine is None:
        pytest.skip("the Cython engine is not built")
    results = []
    for name in ("python", "cython"):
        autograd.set_engine(name)
        mt.manual_seed(0)
        w = mt.randn(8, 8, dtype=mt.float64, requires_grad=True)
        h = mt.randn(4, 8, dtype=mt.float64)
        for _ in range(10):
            h = (h @ w).tanh() + h
        h.pow(2).mean().backward()
        results.append(w.grad.numpy().copy())
    autograd.set_engine("cython")
    np.testing.assert_array_equal(results[0], results[1])


def test_to_dot_shows_ops_shapes_and_leaves():
    from minitensor.utils.viz import to_dot

    x = mt.ones(2, 3, requires_grad=True)
    dot = to_dot((x * 2).sum())
    assert dot.startswith("digraph") and "MulBackward" in dot and "SumBackward" in dot
    assert "leaf (2, 3)" in dot
