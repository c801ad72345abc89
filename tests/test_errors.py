"""Bad input gets a clear error naming the op, what it saw and what it expected: never a crash or a silent
wrong answer."""
import numpy as np
import pytest

import minitensor as mt
from minitensor import autograd


def test_broadcast_mismatch_names_op_and_both_shapes():
    a, b = mt.ones(2, 3), mt.ones(4)
    for op, fn in [("add", lambda: a + b), ("sub", lambda: a - b), ("mul", lambda: a * b), ("div", lambda: a / b),
                   ("maximum", lambda: mt.maximum(a, b)), ("lt", lambda: a < b)]:
        with pytest.raises(ValueError, match=rf"{op}: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
            fn()


def test_matmul_mismatch_names_both_shapes():
    with pytest.raises(ValueError, match=r"matmul: shapes \(3, 4\) and \(5, 2\) do not align: 4 != 5"):
        mt.ones(3, 4) @ mt.ones(5, 2)
    with pytest.raises(ValueError, match=r"matmul: batch dims of shapes \(2, 3, 4\) and \(3, 4, 5\)"):
        mt.ones(2, 3, 4) @ mt.ones(3, 4, 5)
    with pytest.raises(ValueError, match="at least 1-D"):
        mt.tensor(2.0) @ mt.ones(3)


def test_backward_of_non_scalar_without_gradient():
    x = mt.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"only for scalar outputs; this output has shape \(3,\)"):
        (x * 2).backward()


def test_gradient_of_wrong_shape():
    x = mt.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match=r"gradient 0 has shape \(2,\) but the output has shape \(3,\)"):
        (x * 2).backward(mt.ones(2))


def test_grad_of_tensor_not_requiring_grad():
    x = mt.ones(3)
    y = mt.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="does not require grad"):
        autograd.grad((y * 2).sum(), x)
    with pytest.raises(RuntimeError, match="does not require grad"):
        (x * 2).sum().backward()


def test_requires_grad_only_for_floats_and_leaves():
    with pytest.raises(RuntimeError, match="only floating-point tensors can require gradients"):
        mt.tensor([1, 2]).requires_grad_()
    y = mt.ones(2, requires_grad=True) * 2
    with pytest.raises(RuntimeError, match="only be changed on leaf tensors"):
        y.requires_grad = False


def test_index_with_wrong_dtype():
    x = mt.arange(6.0)
    with pytest.raises(IndexError, match="must be integer or bool, got float32"):
        x[mt.tensor([0.0, 1.0])]
    with pytest.raises(TypeError, match="gather: index must be an integer tensor"):
        x.gather(0, mt.tensor([0.5]))
    with pytest.raises(TypeError, match="mask/condition must be a bool tensor"):
        x.masked_fill(mt.ones(6), 0.0)


def test_out_of_range_indices():
    x = mt.arange(6.0).reshape(2, 3)
    with pytest.raises(IndexError, match=r"index 5 is out of bounds.*shape \(2, 3\)"):
        x[5]
    with pytest.raises(IndexError, match="out of bounds"):
        x[mt.tensor([0, 7])]
    with pytest.raises(IndexError, match=r"gather: index values must be in \[0, 3\)"):
        x.gather(1, mt.tensor([[0, 3], [1, 1]]))
    with pytest.raises(IndexError, match=r"dimension out of range \(expected to be in range of \[-2, 1\], but got 2\)"):
        x.sum(2)
    with pytest.raises(IndexError, match="out of bounds"):
        x[0, 3] = 1.0


def test_shape_errors():
    x = mt.ones(2, 3)
    with pytest.raises(RuntimeError, match=r"reshape: shape \(4, 2\) is invalid for input of size 6"):
        x.reshape(4, 2)
    with pytest.raises(RuntimeError, match="view: shape .* is not compatible"):
        x.T.view(6)
    with pytest.raises(ValueError, match="expand: the expanded size"):
        x.expand(2, 4)
    with pytest.raises(ValueError, match=r"cat: tensors must have the same shape except in dim 0; got \(2, 3\) and \(2, 4\)"):
        mt.cat([x, mt.ones(2, 4)])
    with pytest.raises(ValueError, match="split: section sizes"):
        x.split([1, 1], 1)
    with pytest.raises(ValueError, match="permute"):
        x.permute(0, 0)


def test_reductions_refuse_what_they_cannot_do():
    with pytest.raises(TypeError, match="mean\\(\\): input dtype must be floating point"):
        mt.tensor([1, 2]).mean()
    with pytest.raises(RuntimeError, match="max\\(\\): cannot reduce an empty tensor"):
        mt.zeros(0).max()
    with pytest.raises(RuntimeError, match="item\\(\\): only one-element tensors"):
        mt.ones(2).item()
    with pytest.raises(RuntimeError, match="truth value of a tensor with 2 elements is ambiguous"):
        bool(mt.ones(2))


def test_inplace_errors():
    leaf = mt.ones(3, requires_grad=True)
    with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
        leaf.mul_(2)
    with pytest.raises(RuntimeError, match="read-only"):
        mt.ones(3).expand(2, 3).add_(1)
    h = leaf * 2
    with pytest.raises(RuntimeError, match="in-place operation on a view"):
        h[0:2].mul_(mt.ones(2, requires_grad=True))
    with pytest.raises(RuntimeError, match="cannot be cast"):
        mt.tensor([1, 2]).add_(0.5)


def test_dtype_and_creation_errors():
    with pytest.raises(TypeError, match="not supported"):
        mt.zeros(2, dtype=np.complex64)
    with pytest.raises(TypeError, match="sizes must be ints"):
        mt.zeros(2.5)
    with pytest.raises(TypeError, match="from_numpy: expected a numpy.ndarray"):
        mt.from_numpy([1, 2])
    with pytest.raises(ValueError, match="randint: empty range"):
        mt.randint(3, 3, (2,))
    with pytest.raises(TypeError, match="cannot make a tensor"):
        mt.tensor(["a", "b"])


def test_custom_function_misuse():
    from minitensor.autograd import Function

    class Twice(Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, g):
            return np.ones(3)  # not a Tensor

    with pytest.raises(TypeError, match="expected a Tensor"):
        Twice.apply(mt.ones(3, requires_grad=True)).sum().backward()
    with pytest.raises(TypeError, match="do not instantiate a Function"):
        Twice()


def test_lstm_layer_and_packed_input_errors():
    from minitensor.ops.nn import lstm_recurrence

    x, h = mt.zeros(3, 2, 8), mt.zeros(2, 2)
    with pytest.raises(ValueError, match=r"lstm_recurrence: xproj must be \(L, N, 4H\) with L > 0, got \(3, 2, 7\)"):
        lstm_recurrence(mt.zeros(3, 2, 7), h, h, mt.zeros(8, 2))
    with pytest.raises(ValueError, match=r"lstm_recurrence: w_hh has shape \(8, 3\), expected \(8, 2\)"):
        lstm_recurrence(x, h, h, mt.zeros(8, 3))
    with pytest.raises(ValueError, match="lstm_recurrence: c0 has dtype float64, expected float32"):
        lstm_recurrence(x, h, mt.zeros(2, 2, dtype=mt.float64), mt.zeros(8, 2))
    with pytest.raises(ValueError, match=r"lstm_recurrence: valid must be a bool array of shape \(3, 2\)"):
        lstm_recurrence(x, h, h, mt.zeros(8, 2), valid=np.ones((2, 3), bool))
    lstm = mt.nn.LSTM(4, 2)
    packed = mt.nn.utils.rnn.pack_padded_sequence(mt.zeros(3, 2, 5), [3, 2])
    with pytest.raises(ValueError, match=r"LSTM: expected packed data \(sum of lengths, 4\), got \(5, 5\)"):
        lstm(packed)


def test_seq2seq_source_padding_must_be_trailing():
    from minitensor.models.seq2seq import Seq2Seq

    model = Seq2Seq(10, 10, emb_dim=4, hidden_size=4)
    with pytest.raises(ValueError, match="Seq2Seq: the source padding must come after each sequence's tokens"):
        model.encode(mt.tensor([[5, 0, 6]]))
    with pytest.raises(ValueError, match=r"Seq2Seq: source sequence 1 has no tokens \(all <pad>\)"):
        model.encode(mt.tensor([[5, 6, 0], [0, 0, 0]]))
