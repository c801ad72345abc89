"""Creating tensors: from data, filled, ranges, and random (from the seeded default generator)."""
import numpy as np

from . import dtypes
from .ops.shape import size_arg
from .random import get_generator
from .tensor import Tensor


def _finish(arr, requires_grad):
    t = Tensor._wrap(arr)
    if requires_grad:
        t.requires_grad = True
    return t


def _float_dtype(dtype, op):
    dt = dtypes.to_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()
    if dt.kind != "f":
        raise TypeError(f"{op}: dtype must be floating point, got {dt}")
    return dt


def tensor(data, dtype=None, requires_grad=False):
    """A new tensor holding a copy of `data` (nested lists, numbers, numpy arrays or tensors); an array in
    non-native byte order is converted to native order."""
    return Tensor._from_data(data, dtype=dtype, requires_grad=requires_grad)


def as_tensor(data, dtype=None):
    """Like tensor(), but shares memory with a numpy array (or returns a tensor) when no conversion is needed."""
    if isinstance(data, Tensor) and (dtype is None or dtypes.to_dtype(dtype) == data.dtype):
        return data
    if isinstance(data, np.ndarray) and data.dtype in dtypes.SUPPORTED and (
            dtype is None or dtypes.to_dtype(dtype) == data.dtype):
        return Tensor._wrap(data)
    return Tensor._from_data(data, dtype=dtype)


def from_numpy(array):
    """A tensor sharing memory with `array`: writes to one show in the other."""
    if not isinstance(array, np.ndarray):
        raise TypeError(f"from_numpy: expected a numpy.ndarray, got {type(array).__name__}")
    if not array.dtype.isnative:  # sharing memory rules out converting it (as in PyTorch)
        raise ValueError(f"from_numpy: the array has non-native byte order (dtype {array.dtype.str!r}); convert it "
                         "first with array.astype(array.dtype.newbyteorder('=')), or use minitensor.tensor(array)")
    if array.dtype not in dtypes.SUPPORTED:
        raise TypeError(f"from_numpy: numpy dtype {array.dtype} is not supported")
    return Tensor._wrap(array)


def from_dlpack(ext_tensor):
    """A tensor sharing memory with any DLPack exporter on the CPU (a PyTorch tensor, a numpy array, ...)."""
    try:
        array = np.from_dlpack(ext_tensor)
    except (TypeError, BufferError, RuntimeError) as exc:
        raise TypeError(f"from_dlpack: cannot import a {type(ext_tensor).__name__}: {exc}") from None
    if array.dtype not in dtypes.SUPPORTED:
        raise TypeError(f"from_dlpack: dtype {array.dtype} is not supported")
    return Tensor._wrap(array)


def zeros(*size, dtype=None, requires_grad=False):
    return _finish(np.zeros(size_arg(size, "zeros"), dtype=_dtype(dtype)), requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    return _finish(np.ones(size_arg(size, "ones"), dtype=_dtype(dtype)), requires_grad)


def empty(*size, dtype=None, requires_grad=False):
    return _finish(np.empty(size_arg(size, "empty"), dtype=_dtype(dtype)), requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    if dtype is None:
        dtype = dtypes.bool_ if isinstance(fill_value, bool) else (
            dtypes.int64 if isinstance(fill_value, int) else dtypes.get_default_dtype())
    return _finish(np.full(size_arg((size,), "full"), fill_value, dtype=dtypes.to_dtype(dtype)), requires_grad)


def _dtype(dtype):
    return dtypes.to_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()


def zeros_like(t, dtype=None, requires_grad=False):
    return zeros(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    return ones(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def empty_like(t, dtype=None, requires_grad=False):
    return empty(t.shape, dtype=dtype or t.dtype, requires_grad=requires_grad)


def full_like(t, fill_value, dtype=None, requires_grad=False):
    return full(t.shape, fill_value, dtype=dtype or t.dtype, requires_grad=requires_grad)


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    """arange(end) or arange(start, end, step): int64 for int arguments, else the default float dtype."""
    if end is None:
        start, end = 0, start
    if step == 0:
        raise ValueError("arange: step must be non-zero")
    if dtype is None:
        ints = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in (start, end, step))
        dtype = dtypes.int64 if ints else dtypes.get_default_dtype()
    return _finish(np.arange(start, end, step).astype(dtypes.to_dtype(dtype)), requires_grad)


def linspace(start, end, steps, dtype=None, requires_grad=False):
    if steps < 0:
        raise ValueError(f"linspace: steps must be non-negative, got {steps}")
    return _finish(np.linspace(start, end, steps).astype(_dtype(dtype)), requires_grad)


def eye(n, m=None, dtype=None, requires_grad=False):
    return _finish(np.eye(n, m, dtype=_dtype(dtype)), requires_grad)


def rand(*size, generator=None, dtype=None, requires_grad=False):
    """Uniform on [0, 1)."""
    dt = _float_dtype(dtype, "rand")
    return _finish(get_generator(generator).random(size_arg(size, "rand"), dt), requires_grad)


def randn(*size, generator=None, dtype=None, requires_grad=False):
    """Standard normal."""
    dt = _float_dtype(dtype, "randn")
    return _finish(get_generator(generator).normal(0.0, 1.0, size_arg(size, "randn"), dt), requires_grad)


def randint(low, high=None, size=None, generator=None, dtype=None, requires_grad=False):
    """randint(high, size) or randint(low, high, size): integers in [low, high)."""
    if size is None:
        if high is None or not isinstance(high, (tuple, list)):
            raise TypeError("randint: expected randint(high, size) or randint(low, high, size)")
        low, high, size = 0, low, high
    if high <= low:
        raise ValueError(f"randint: empty range [{low}, {high})")
    dt = dtypes.to_dtype(dtype) if dtype is not None else dtypes.int64
    return _finish(get_generator(generator).integers(low, high, size_arg((size,), "randint"), dt), requires_grad)


def randperm(n, generator=None, dtype=None):
    return Tensor._wrap(get_generator(generator).permutation(n).astype(dtype or dtypes.int64))


def rand_like(t, generator=None, dtype=None):
    return rand(t.shape, generator=generator, dtype=dtype or t.dtype)


def randn_like(t, generator=None, dtype=None):
    return randn(t.shape, generator=generator, dtype=dtype or t.dtype)


def randint_like(t, low, high=None, generator=None, dtype=None):
    if high is None:
        low, high = 0, low
    return randint(low, high, t.shape, generator=generator, dtype=dtype or t.dtype)
