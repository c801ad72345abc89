"""Autograd at its edges: what an op keeps for backward is version-checked (DESIGN: everything kept goes through
save_for_backward), each leaf owns a writable contiguous .grad, and a hook that returns a wrong gradient is named.

The first two rules are checked mechanically over the whole op registry (minitensor/testing/op_db.py), so an op
added later is held to them without a test of its own.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import invariant, precondition, rule

import minitensor as mt
from minitensor import autograd
from minitensor.autograd.function import Context
from minitensor.testing.op_db import OPS
from tests.autograd.test_state_machine import EngineMachine

IDS = [info.name for info in OPS]
VERSION_ERROR = "modified by an inplace operation"


def _inputs(info, sample):
    diff = info.diff_indices(sample)
    tensors = [mt.tensor(a, dtype=mt.float64) for a in sample.arrays]
    for i in diff:
        tensors[i].requires_grad = True
    return tensors, [tensors[i] for i in diff]


def _nodes(*outputs):
    """Every Context reachable from the outputs' grad_fn (an iterative walk)."""
    seen, stack = set(), [t.grad_fn for t in outputs if t is not None and t.grad_fn is not None]
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Context):
            yield node
        stack.extend(edge[0] for edge in node.next_functions if edge is not None)


def _arrays_in(value, path):
    """(path, value) of every ndarray or Tensor inside value (through tuples, lists and dicts)."""
    if isinstance(value, (np.ndarray, mt.Tensor)):
        yield path, value
    elif isinstance(value, (tuple, list)):
        for i, v in enumerate(value):
            yield from _arrays_in(v, f"{path}[{i}]")
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _arrays_in(v, f"{path}[{k!r}]")


# ----------------------------------------------------------------- 1. what an op keeps goes through save_for_backward
@pytest.mark.parametrize("info", OPS, ids=IDS)
@settings(max_examples=6)
@given(data=st.data())
def test_every_op_keeps_arrays_only_through_save_for_backward(info, data):
    """No node of an op's graph (nor of its gradient's graph, made with create_graph) holds an array or a Tensor as
    a plain attribute: each goes through save_for_backward, where backward's read checks its version."""
    sample = data.draw(info.sample, label="sample")
    if not info.supports_size0 and not all(a.size for a in sample.arrays):
        return
    tensors, diff = _inputs(info, sample)
    out = info.op(*tensors, **sample.kwargs)
    nodes = list(_nodes(out))
    if out.requires_grad and diff:
        grads = autograd.grad(out, diff, mt.ones(out.shape, dtype=out.dtype), create_graph=True, allow_unused=True)
        nodes += list(_nodes(*grads))
    for node in nodes:
        for path, value in _arrays_in(vars(node), node.name()):
            raise AssertionError(f"{info.name}: {path} keeps a {type(value).__name__} outside save_for_backward")
        for i, value in enumerate(node._saved or ()):
            assert value is None or isinstance(value, mt.Tensor), \
                f"{info.name}: {node.name()} saved a {type(value).__name__} as saved tensor {i}"


@pytest.mark.parametrize("info", OPS, ids=IDS)
@settings(max_examples=4)
@given(data=st.data())
def test_an_inplace_edit_before_backward_raises_or_changes_nothing(info, engine, data):
    """Edit the output or an input in place between forward and backward: backward must raise the version error,
    or give exactly the gradients it gives without the edit (the edited value was not needed). Never a silently
    different gradient."""
    sample = data.draw(info.sample, label="sample")
    if not all(a.size for a in sample.arrays):
        return
    tensors, diff = _inputs(info, sample)
    out = info.op(*tensors, **sample.kwargs)
    if not out.requires_grad:
        return
    g = mt.tensor(np.random.default_rng(0).uniform(0.5, 1.5, out.shape))
    clean = autograd.grad(out, diff, g, allow_unused=True)
    for target in ["output"] + list(range(len(tensors))):
        tensors, diff = _inputs(info, sample)
        out = info.op(*tensors, **sample.kwargs)
        edited = out if target == "output" else tensors[target]
        if edited.numel() == 0 or not edited._data.flags.writeable:
            continue
        with mt.no_grad():
            edited.mul_(1.5).add_(0.25)
        try:
            grads = autograd.grad(out, diff, g, allow_unused=True)
        except RuntimeError as e:
            assert VERSION_ERROR in str(e), f"{info.name}, {target} edited: {e}"
            continue
        for i, (a, b) in enumerate(zip(clean, grads)):
            assert (a is None) == (b is None), f"{info.name}, {target} edited: gradient {i} appeared or vanished"
            if a is not None:
                np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-12, atol=1e-12, err_msg=(
                    f"{info.name}: editing {target} in place changed gradient {i} without an error"))


def _lstm(batch_first=False):
    mt.manual_seed(0)
    return mt.nn.LSTM(3, 4, batch_first=batch_first), mt.randn(5, 2, 3)


@pytest.mark.parametrize("batch_first", [False, True])
def test_lstm_output_edited_in_place_before_backward_raises(engine, batch_first):
    lstm, x = _lstm(batch_first)
    out, (h_n, c_n) = lstm(x)
    with mt.no_grad():
        out.mul_(3.0)
    with pytest.raises(RuntimeError, match=r"LSTMRecurrenceBackward: one of the variables needed for gradient "
                                           r"computation has been modified by an inplace operation: saved tensor \d+ "
                                           r"\(float32 of shape \((5, 2|2, 5), 4\)\) is at version 1; expected version 0"):
        out.sum().backward()


def test_lstm_state_outputs_are_copies_an_edit_of_which_changes_nothing(engine):
    lstm, x = _lstm()
    out, (h_n, c_n) = lstm(x)
    (out.sum() + h_n.sum()).backward()
    expected = lstm.weight_hh_l0.grad.numpy().copy()
    lstm.zero_grad()
    out, (h_n, c_n) = lstm(x)
    with mt.no_grad():
        h_n.mul_(3.0)
        c_n.mul_(3.0)
    (out.sum() + h_n.sum()).backward()  # the gradient does not depend on h_n's value: nothing is kept of it
    np.testing.assert_allclose(lstm.weight_hh_l0.grad.numpy(), expected, rtol=1e-5, atol=1e-7)


def _edited_index_tensors():
    """(name, make): make() returns (loss, the index-like tensor the op used): editing it must fail backward."""
    def lstm_valid():
        from minitensor.ops.nn import lstm_recurrence

        w = mt.randn(8, 2, requires_grad=True)
        valid = mt.tensor([[True, True], [True, False]])
        hs, _, _ = lstm_recurrence(mt.randn(2, 2, 8), mt.zeros(2, 2), mt.zeros(2, 2), w, valid)
        return hs.sum(), valid

    def max_indices():
        values, indices = mt.randn(3, 4, requires_grad=True).max(1, keepdim=True)
        return values.sum(), indices

    def where_cond():
        cond = mt.tensor([True, False, True])
        return mt.where(cond, mt.randn(3, requires_grad=True), mt.zeros(3)).sum(), cond

    def masked_fill_mask():
        mask = mt.tensor([True, False, True])
        return mt.randn(3, requires_grad=True).masked_fill(mask, 0.0).sum(), mask

    def gather_index():
        index = mt.tensor([[0, 1], [1, 0]])
        return mt.randn(2, 2, requires_grad=True).gather(1, index).sum(), index

    def embedding_ids():
        ids = mt.tensor([0, 2, 2])
        return mt.nn.functional.embedding(ids, mt.randn(3, 2, requires_grad=True)).sum(), ids

    def index_tensor():
        idx = mt.tensor([0, 0, 2])
        return mt.randn(3, requires_grad=True)[idx].sum(), idx

    return [lstm_valid, max_indices, where_cond, masked_fill_mask, gather_index, embedding_ids, index_tensor]


@pytest.mark.parametrize("make", _edited_index_tensors(), ids=lambda f: f.__name__)
def test_an_index_mask_or_condition_edited_before_backward_raises(engine, make):
    """The integer and bool tensors an op reads in backward (indices, masks, conditions) are version-checked too,
    as in PyTorch: an edit would silently send the gradient to other places."""
    loss, used = make()
    with mt.no_grad():
        used.copy_(used[tuple(slice(None, None, -1) for _ in used.shape)].clone())
    with pytest.raises(RuntimeError, match=VERSION_ERROR + r".* is at version 1; expected version 0"):
        loss.backward()


def test_numpy_indices_are_copied_so_editing_them_changes_nothing(engine):
    x = mt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    idx = np.array([0, 0, 2])
    y = x[idx] * mt.tensor([1.0, 2.0, 3.0])
    idx[:] = 1  # numpy arrays have no version counter: the op works on its own copy
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [3.0, 0.0, 3.0])


def test_clamp_bounds_given_as_arrays_are_not_kept_by_reference(engine):
    x = mt.tensor([0.5, 2.0, -1.0], requires_grad=True)
    lo = np.zeros(3, dtype=np.float32)
    y = mt.clamp(x, lo)
    lo[:] = 5.0  # numpy has no version counter: the op must not read this array again in backward
    y.sum().backward()
    np.testing.assert_array_equal(x.grad.numpy(), [1.0, 1.0, 0.0])
    hi = mt.tensor([1.0, 1.0, 1.0])
    y = mt.clamp(x, max=hi)
    with mt.no_grad():
        hi.zero_()
    with pytest.raises(RuntimeError, match=VERSION_ERROR):
        y.sum().backward()


def test_the_version_error_reads_like_pytorchs(engine):
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    y = x.exp()
    with mt.no_grad():
        y.mul_(2)
    with pytest.raises(RuntimeError) as err:
        y.sum().backward()
    assert str(err.value).startswith(
        "ExpBackward: one of the variables needed for gradient computation has been modified by an inplace "
        "operation: saved tensor 0 (float32 of shape (2,)) is at version 1; expected version 0 instead."), err.value


# ----------------------------------------------------------------- 2. each leaf owns its .grad
def _assert_own_grads(leaves):
    for i, t in enumerate(leaves):
        g = t.grad
        assert g is not None
        assert g._data.flags.writeable and g.is_contiguous(), f"leaf {i}: .grad is a read-only or strided view"
        for j, u in enumerate(leaves[:i]):
            assert not np.shares_memory(g._data, u.grad._data), f"leaves {j} and {i} share one .grad"


@pytest.mark.parametrize("create_graph", [False, True])
def test_two_leaves_of_one_add_get_their_own_writable_grad(engine, create_graph):
    a = mt.tensor([1.0, 2.0], requires_grad=True)
    b = mt.tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward(create_graph=create_graph)
    assert a.grad is not b.grad
    _assert_own_grads([a, b])
    a.grad.zero_()
    np.testing.assert_array_equal(a.grad.detach().numpy(), [0.0, 0.0])
    np.testing.assert_array_equal(b.grad.detach().numpy(), [1.0, 1.0])


def test_create_graph_grads_stay_differentiable(engine):
    x = mt.tensor([1.0, 2.0], requires_grad=True)
    y = mt.tensor([3.0, 4.0], requires_grad=True)
    (x * x * y).sum().backward(create_graph=True)  # x.grad = 2 x y, y.grad = x²
    assert x.grad.requires_grad and x.grad is not y.grad
    (gx,) = autograd.grad(x.grad.sum(), [y])  # d/dy sum(2 x y) = 2 x
    np.testing.assert_array_equal(gx.numpy(), [2.0, 4.0])


@pytest.mark.parametrize("make", [
    lambda w: (w[None].expand(4, 2, 3) * 1.0).sum(),  # expand's backward: a sum; the leaf used through a broadcast
    lambda w: w.sum(),                                # sum's backward: a read-only broadcast of the scalar
    lambda w: (w.T * 2).sum(),                        # a transpose's gradient: an F-ordered view
    lambda w: (w[None] + w[None]).sum(),              # one leaf reached twice, each through a view
], ids=["expand", "sum", "transpose", "views"])
def test_a_leaf_grad_is_contiguous_and_writable_whatever_its_gradient_was(engine, make):
    w = mt.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], requires_grad=True)
    make(w).backward()
    assert w.grad._data.flags.writeable and w.grad._data.flags.c_contiguous
    w.grad.add_(1.0)  # clip_grad_norm_ and optimizers write into .grad like this


def test_an_f_ordered_leaf_gets_an_f_ordered_grad_as_in_pytorch(engine):
    w = mt.Tensor._wrap(np.asfortranarray(np.arange(6.0).reshape(2, 3)))
    w.requires_grad = True
    (w * 2).sum().backward()
    assert w.grad._data.flags.f_contiguous and w.grad._data.flags.writeable
    np.testing.assert_array_equal(w.grad.numpy(), np.full((2, 3), 2.0))


class GradOwnershipMachine(EngineMachine):
    """The engine's state machine, plus backward with create_graph and from an unweighted sum (where the add's two
    inputs receive one gradient object), in-place writes into a .grad, and the invariant that every leaf's .grad
    is its own writable contiguous array."""

    @rule(x=EngineMachine.tensors, create_graph=st.booleans())
    def backward_of_sum(self, x, create_graph):
        if not x.requires_grad or x.graph & self.freed or any(self.refs[i].version != v for i, v in x.deps):
            return  # the parent machine covers the errors
        x.tensor.sum().backward(create_graph=create_graph)
        for leaf_id, j in x.jac.items():
            g = np.ones(3) @ j
            prev = self.expected_grad[leaf_id]
            self.expected_grad[leaf_id] = g if prev is None else prev + g
        if not create_graph:  # create_graph keeps the graph (retain_graph defaults to it)
            self.freed |= x.graph

    @precondition(lambda self: self.leaves)
    @rule(data=st.data())
    def scale_one_grad_in_place(self, data):
        leaf = data.draw(st.sampled_from(self.leaves))
        if leaf.tensor.grad is not None:
            leaf.tensor.grad.mul_(0.5)
            self.expected_grad[leaf.id] = self.expected_grad[leaf.id] * 0.5

    def _resync(self):
        for leaf in self.leaves:
            g = leaf.tensor.grad
            self.expected_grad[leaf.id] = None if g is None else g.detach().numpy().copy()

    @invariant()
    def gradients_match_the_reference(self):
        for leaf in self.leaves:
            expected, actual = self.expected_grad[leaf.id], leaf.tensor.grad
            assert (expected is None) == (actual is None), f"leaf {leaf.id}: expected {expected}, got {actual}"
            if expected is not None:
                np.testing.assert_allclose(actual.detach().numpy(), expected, rtol=1e-10, atol=1e-12)

    @invariant()
    def every_grad_is_owned_writable_and_contiguous(self):
        _assert_own_grads([leaf.tensor for leaf in self.leaves if leaf.tensor.grad is not None])


GradOwnershipMachine.TestCase.settings = settings(max_examples=40, stateful_step_count=25, deadline=None)
TestGradOwnershipMachine = GradOwnershipMachine.TestCase


# ----------------------------------------------------------------- 3. hooks that return a wrong gradient are named
def shrink(g):
    return g.sum()


def to_float(g):
    return 3.0


def widen(g):
    return g.to(mt.float64)


@pytest.mark.parametrize("leaf", [True, False], ids=["leaf", "non-leaf"])
@pytest.mark.parametrize("hook, error, message", [
    (shrink, RuntimeError, r"hook 'shrink' has changed the size of value: it returned a gradient of shape \(\), "
                           r"expected shape \(3,\)"),
    (to_float, TypeError, r"hook 'to_float' returned float; expected a Tensor of shape \(3,\) \(the gradient\) "
                          r"or None"),
    (widen, RuntimeError, r"hook 'widen' has changed the type of value: it returned a gradient of dtype float64, "
                          r"expected float32"),
], ids=["size", "type", "dtype"])
def test_a_hook_returning_a_wrong_gradient_is_named(engine, leaf, hook, error, message):
    a = mt.tensor([1.0, 2.0, 3.0], requires_grad=True)
    t = a if leaf else a * 2
    t.register_hook(hook)
    with pytest.raises(error, match=message):
        (t * 2).sum().backward()


def test_a_hook_error_names_a_lambda_and_a_method_by_qualname(engine):
    class Scaler:
        def bad(self, g):
            return g[:1]

    a = mt.tensor([1.0, 2.0], requires_grad=True)
    a.register_hook(Scaler().bad)
    with pytest.raises(RuntimeError, match=r"hook '.*Scaler\.bad' has changed the size of value"):
        a.sum().backward()
    b = mt.tensor([1.0, 2.0], requires_grad=True)
    b.register_hook(lambda g: None)  # None keeps the gradient
    b.register_hook(lambda g: g * 2)  # a correct replacement is used
    b.sum().backward()
    np.testing.assert_array_equal(b.grad.numpy(), [2.0, 2.0])
