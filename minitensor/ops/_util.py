"""Shape bookkeeping shared by every op: broadcasting's backward, dim normalisation, operand conversion."""
import numpy as np

from ..autograd import grad_mode

from .. import dtypes
from ..tensor import Tensor


def unbroadcast(grad, shape):
    """Sum `grad` down to `shape`: the backward of broadcasting, and the only place that does it.

    Broadcasting added leading dims and stretched size-1 dims; their gradients are sums over those dims.
    """
    if grad.shape == shape:
        return grad
    lead = grad.ndim - len(shape)
    axes = tuple(range(lead)) + tuple(
        lead + i for i, n in enumerate(shape) if n == 1 and grad.shape[lead + i] != 1
    )
    if not grad_mode.is_grad_enabled():  # a plain backward records nothing: numpy directly, no op calls
        g = grad._data.sum(axis=axes, keepdims=True) if axes else grad._data
        return Tensor._wrap(g.reshape(shape))
    if axes:
        grad = grad.sum(dim=axes, keepdim=True)
    return grad.reshape(shape)


def normalize_dim(dim, ndim, op):
    """Turn a possibly negative dim into 0..ndim-1, or raise IndexError naming the op."""
    n = max(ndim, 1)  # a 0-d tensor accepts dim 0 and -1, as in PyTorch
    if not isinstance(dim, (int, np.integer)) or isinstance(dim, bool):
        raise TypeError(f"{op}: dim must be an int, got {type(dim).__name__}")
    if not -n <= dim < n:
        raise IndexError(f"{op}: dimension out of range (expected to be in range of [{-n}, {n - 1}], but got {dim})")
    return int(dim) % n if ndim > 0 else 0


def normalize_dims(dim, ndim, op):
    """dim=None -> all dims; an int or a sequence -> a sorted tuple of distinct non-negative dims."""
    if dim is None:
        return tuple(range(ndim))
    if isinstance(dim, (list, tuple)):
        dims = tuple(sorted(normalize_dim(d, ndim, op) for d in dim))
        if len(set(dims)) != len(dims):
            raise ValueError(f"{op}: dim {tuple(dim)} names a dimension twice")
        return dims if ndim > 0 else ()
    return (normalize_dim(dim, ndim, op),) if ndim > 0 else ()


def arr(x):
    """The numpy value of an operand: a Tensor's storage, or a Python number as is."""
    return x._data if isinstance(x, Tensor) else x


def binary_operands(a, b, op, true_div=False):
    """Two Tensors of one dtype for a binary op, following PyTorch's type promotion.

    A Python number takes the tensor's dtype (so float32 * 2.5 stays float32), except that a float
    number with an int tensor gives the default float dtype; a float tensor beats an int tensor; true
    division of ints gives floats. Lists and arrays become tensors.
    """
    ta, tb = isinstance(a, Tensor), isinstance(b, Tensor)
    if ta and tb and a._data.dtype == b._data.dtype and (not true_div or a._data.dtype.kind == "f"):
        return a, b  # the usual case: two tensors of one dtype (for true division, one float dtype)
    if not ta:
        a = _operand(a, b if tb else None, op)
    if not tb:
        b = _operand(b, a, op)
    da, db = a._data.dtype, b._data.dtype
    target = da if da == db else dtypes.promote(da, db)
    if true_div and target.kind != "f":
        target = dtypes.get_default_dtype()
    if a._data.dtype != target:
        a = a.to(target) if ta else Tensor._wrap(a._data.astype(target))
    if b._data.dtype != target:
        b = b.to(target) if tb else Tensor._wrap(b._data.astype(target))
    return a, b


_RANK = {"b": 0, "i": 1, "u": 1, "f": 2}


def _operand(x, other, op):
    """A Python number as a 0-d tensor: of the other tensor's dtype when the number's kind fits in it
    (bool < int < float), else of the number's own default dtype (int64 or the default float)."""
    if isinstance(x, (bool, int, float)):
        kind = "b" if isinstance(x, bool) else "i" if isinstance(x, int) else "f"
        if other is not None and _RANK[kind] <= _RANK[other._data.dtype.kind]:
            dt = other._data.dtype
        else:
            dt = {"b": dtypes.bool_, "i": dtypes.int64, "f": dtypes.get_default_dtype()}[kind]
        return Tensor._wrap(np.array(x, dtype=dt))
    if isinstance(x, (np.ndarray, np.generic, list, tuple)):
        return Tensor._from_data(x)
    raise TypeError(f"{op}: unsupported operand type {type(x).__name__}")


def broadcast_error(op, a, b):
    sa = tuple(a.shape) if isinstance(a, Tensor) else ()
    sb = tuple(b.shape) if isinstance(b, Tensor) else ()
    return ValueError(f"{op}: shapes {sa} and {sb} cannot be broadcast together")


def check_broadcast(op, a, b):
    """Raise the op's own error when two operands' shapes do not broadcast."""
    if isinstance(a, Tensor) and isinstance(b, Tensor) and a._data.shape != b._data.shape:
        try:
            np.broadcast_shapes(a._data.shape, b._data.shape)
        except ValueError:
            raise broadcast_error(op, a, b) from None


def grads_by_recompute(ctx, inputs, recompute, grad_outputs):
    """The backward of a fused op that keeps only its inputs: rebuild its outputs from `inputs` with the simple ops
    (`recompute(*inputs)`, a tuple) and differentiate them with autograd.grad against `grad_outputs` (None where an
    output got no gradient). With create_graph (grad mode on inside backward) the gradients are themselves
    differentiable. Returns one gradient per forward argument (len(ctx.needs_input_grad)), None where not needed."""
    from ..autograd import grad as autograd_grad

    wanted = [i for i, need in enumerate(ctx.needs_input_grad) if need]
    create_graph = grad_mode.is_grad_enabled()
    with grad_mode.enable_grad():
        outs = recompute(*inputs)
    pairs = [(o, g) for o, g in zip(outs, grad_outputs) if g is not None]
    grads = autograd_grad([o for o, _ in pairs], [inputs[i] for i in wanted], [g for _, g in pairs],
                          create_graph=create_graph, allow_unused=True)
    result = [None] * len(ctx.needs_input_grad)
    for i, g in zip(wanted, grads):
        result[i] = g
    return tuple(result)


def check_same_dtype(op, **tensors):
    """Raise TypeError unless the given tensors (None skipped) share one dtype: an op with weights promotes nothing
    (as in PyTorch), since a float64 input meeting float32 weights, or an int input cast on the way, is nearly
    always a bug, and silently promoting it doubles the work. The message names the op and every dtype seen:
    `linear: expected input, weight and bias of one dtype, got input float64, weight float32, bias float32`."""
    given = [(name, t) for name, t in tensors.items() if t is not None]
    first = given[0][1].dtype
    if any(t.dtype != first for _, t in given[1:]):
        names = [name for name, _ in given]
        listed = ", ".join(names[:-1]) + " and " + names[-1]
        seen = ", ".join(f"{name} {t.dtype}" for name, t in given)
        raise TypeError(f"{op}: expected {listed} of one dtype, got {seen}")
