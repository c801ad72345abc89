"""Autograd at its edges: what an op keeps for backward is version-checked (DESIGN: everything kept goes through
save_for_backward).

The rule is checked mechanically over the whole op registry (minitensor/testing/op_db.py), so an op added later
is held to it without a test of its own.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitensor as mt
from minitensor import autograd
from minitensor.autograd.function import Context
from minitensor.testing.op_db import OPS

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
