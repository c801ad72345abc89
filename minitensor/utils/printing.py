"""repr() of a tensor, in PyTorch's style: tensor([1.0000, 2.5000], requires_grad=True)."""
import numpy as np

from .. import dtypes

_THRESHOLD = 1000  # more elements than this are summarised with "..."
_EDGE = 3


def _float_formatter(values):
    finite = values[np.isfinite(values)]
    nonzero = np.abs(finite[finite != 0])
    if finite.size and np.all(finite == np.round(finite)) and (nonzero.size == 0 or nonzero.max() < 1e8):
        fmt = lambda v: f"{v:.0f}." if np.isfinite(v) else str(v)  # noqa: E731
    elif nonzero.size and (nonzero.max() / nonzero.min() > 1000 or nonzero.max() > 1e8 or nonzero.min() < 1e-4):
        fmt = lambda v: f"{v:.4e}" if np.isfinite(v) else str(v)  # noqa: E731
    else:
        fmt = lambda v: f"{v:.4f}" if np.isfinite(v) else str(v)  # noqa: E731
    width = max((len(fmt(v)) for v in values.ravel()), default=0)
    return lambda v: fmt(v).rjust(width)


def tensor_repr(t):
    data = t._data
    suffix = []
    if data.size == 0 and data.shape != (0,):
        suffix.append(f"size={tuple(data.shape)}")
    if data.dtype not in (dtypes.get_default_dtype(), dtypes.int64, dtypes.bool_):
        suffix.append(f"dtype=minitensor.{data.dtype}")
    if t.grad_fn is not None:
        suffix.append(f"grad_fn=<{t.grad_fn.name()}>")
    elif t.requires_grad:
        suffix.append("requires_grad=True")
    prefix = "tensor("
    summarise = data.size > _THRESHOLD
    if data.dtype.kind == "f":
        sample = data if not summarise else _edges(data)
        formatter = {"float_kind": _float_formatter(np.asarray(sample, dtype=np.float64))}
    elif data.dtype.kind == "b":
        width = 5 if (~data).any() else 4  # right-aligned to the widest value, as PyTorch prints them
        formatter = {"bool": lambda v: ("True" if v else "False").rjust(width)}
    else:
        formatter = None
    body = np.array2string(
        data, separator=", ", prefix=prefix, formatter=formatter,
        threshold=_THRESHOLD, edgeitems=_EDGE, max_line_width=80,
    )
    return prefix + body + "".join(", " + s for s in suffix) + ")"


def _edges(data):
    """The values that a summarised print shows (the first and last few along each dim)."""
    for axis in range(data.ndim):
        if data.shape[axis] > 2 * _EDGE:
            data = np.concatenate(
                [np.take(data, range(_EDGE), axis), np.take(data, range(data.shape[axis] - _EDGE, data.shape[axis]), axis)],
                axis=axis,
            )
    return data
