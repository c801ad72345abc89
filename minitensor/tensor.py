"""The Tensor: a numpy array plus what autograd needs (requires_grad, grad, grad_fn, a version counter).

Storage is a plain numpy array (`t._data`); ops compute on it and wrap the result. Tensors that view the
same memory (reshape, transpose, slicing, detach) share one version counter, bumped by every in-place
change, so a backward that needs an overwritten value can notice and say so.
"""
import weakref

import numpy as np

from . import dtypes
from .autograd import grad_mode
from .autograd.function import AccumulateGrad, RemovableHandle


def _as_array(data, dtype=None):
    """Array for `minitensor.tensor(data)`: Python floats become the default dtype, ints int64 (like PyTorch);
    numpy arrays keep their dtype, in native byte order ('>f4' on a little-endian machine becomes float32: every
    kernel reads native order, and a copy is made anyway). Always a fresh copy."""
    if isinstance(data, Tensor):
        arr = data._data
    elif isinstance(data, np.ndarray):
        arr = data if data.dtype.isnative else data.astype(data.dtype.newbyteorder("="))
    else:
        if isinstance(data, (list, tuple)) and any(isinstance(x, Tensor) for x in _flat(data)):
            data = _nested_tensors_to_lists(data)
        arr = np.asarray(data)
        if arr.dtype == np.float64 and dtype is None:
            arr = arr.astype(dtypes.get_default_dtype())
        elif arr.dtype.kind in "iu" and arr.dtype != np.uint8 and dtype is None:
            arr = arr.astype(np.int64)
        elif arr.dtype.kind not in "biuf":
            raise TypeError(f"tensor: cannot make a tensor from {type(data).__name__} (numpy dtype {arr.dtype})")
    dt = dtypes.to_dtype(dtype) if dtype is not None else arr.dtype
    if dt not in dtypes.SUPPORTED:
        raise TypeError(f"tensor: dtype {dt} is not supported")
    return np.array(arr, dtype=dt, copy=True)


def _legacy_array(args, dtype):
    """The array of Tensor(*args) (see Tensor.__init__)."""
    dt = dtypes.to_dtype(dtype) if dtype is not None else dtypes.get_default_dtype()
    if not args:
        return np.zeros(0, dtype=dt)
    if all(isinstance(a, (int, np.integer)) and not isinstance(a, (bool, np.bool_)) for a in args):
        if any(a < 0 for a in args):
            raise ValueError(f"Tensor: cannot make a tensor with a negative dimension, got size {tuple(args)}")
        return np.zeros(tuple(int(a) for a in args), dtype=dt)
    if len(args) != 1:
        raise TypeError("Tensor: expected the data as one argument (a list, array or tensor) or the size as ints, "
                        f"got ({', '.join(type(a).__name__ for a in args)}); give a dtype as dtype=")
    data = args[0]
    if isinstance(data, Tensor):
        return data._data if dtype is None else _as_array(data, dt)
    if not isinstance(data, (list, tuple, np.ndarray)):
        hint = f"; for a 0-d tensor use minitensor.tensor({data!r})" if isinstance(data, (float, np.generic)) else ""
        raise TypeError(f"Tensor: data must be a sequence or an array, got {type(data).__name__}{hint}")
    return _as_array(data, dt)


def _flat(seq):
    stack = [seq]
    while stack:
        x = stack.pop()
        if isinstance(x, (list, tuple)):
            stack.extend(x)
        else:
            yield x


def _nested_tensors_to_lists(seq):
    if isinstance(seq, Tensor):
        return seq._data
    if isinstance(seq, (list, tuple)):
        return [_nested_tensors_to_lists(x) for x in seq]
    return seq


class Tensor:
    __slots__ = ("_data", "_requires_grad", "grad", "grad_fn", "_output_nr", "_vc", "_base", "_hooks", "_acc",
                 "_post_acc_hooks", "__weakref__")
    # Make numpy defer to us: `ndarray + tensor` calls Tensor.__radd__ and returns a Tensor.
    __array_priority__ = 1000

    def __init__(self, *args, dtype=None, requires_grad=False):
        """The legacy constructor, as torch.Tensor: `Tensor(2, 3)` is a (2, 3) tensor (of zeros) and `Tensor(data)`
        a copy of data (a list or a numpy array) in the default float dtype, whatever data's dtype; `Tensor(t)` of a
        Tensor shares t's memory and keeps its dtype. `dtype=` overrides either. For a tensor that keeps the type of
        its data (ints stay int64), use minitensor.tensor(data)."""
        self._data = _legacy_array(args, dtype)
        self._vc = args[0]._vc if len(args) == 1 and isinstance(args[0], Tensor) and dtype is None else [0]
        self._requires_grad = False
        self.grad = None
        self.grad_fn = None
        self._output_nr = 0
        self._base = None
        self._hooks = None
        self._acc = None
        self._post_acc_hooks = None
        if requires_grad:
            self.requires_grad = True

    @classmethod
    def _from_data(cls, data, dtype=None, requires_grad=False):
        """A new tensor holding a copy of `data`, keeping its type (minitensor.tensor): Python floats become the
        default dtype, ints int64, numpy arrays keep theirs."""
        t = cls._wrap(_as_array(data, dtype))
        if requires_grad:
            t.requires_grad = True
        return t

    @classmethod
    def _wrap(cls, arr):
        """A Tensor over `arr` without copying: the fast path every op output takes."""
        t = object.__new__(cls)
        t._data = arr
        t._requires_grad = False
        t.grad = None
        t.grad_fn = None
        t._output_nr = 0
        t._vc = [0]
        t._base = None
        t._hooks = None
        t._acc = None
        t._post_acc_hooks = None
        return t

    # ------------------------------------------------------------------ metadata
    @property
    def shape(self):
        return self._data.shape

    @property
    def dtype(self):
        return self._data.dtype

    @property
    def ndim(self):
        return self._data.ndim

    @property
    def device(self):
        return "cpu"

    def size(self, dim=None):
        if dim is None:
            return self._data.shape
        return self._data.shape[_dim(dim, self._data.ndim, "size")]

    def dim(self):
        return self._data.ndim

    def numel(self):
        return self._data.size

    nelement = numel

    def element_size(self):
        return self._data.itemsize

    def is_floating_point(self):
        return self._data.dtype.kind == "f"

    def is_contiguous(self):
        return self._data.flags.c_contiguous

    def stride(self, dim=None):
        strides = tuple(s // self._data.itemsize for s in self._data.strides)
        return strides if dim is None else strides[_dim(dim, self._data.ndim, "stride")]

    @property
    def _version(self):
        return self._vc[0]

    # ------------------------------------------------------------------ autograd
    @property
    def requires_grad(self):
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value):
        if self.grad_fn is not None:
            raise RuntimeError(
                "requires_grad can only be changed on leaf tensors; this tensor was computed by "
                f"{self.grad_fn.name()}. Use .detach() to get a leaf."
            )
        if value and self._data.dtype.kind != "f":
            raise RuntimeError(f"only floating-point tensors can require gradients, this one is {self.dtype}")
        self._requires_grad = bool(value)

    def requires_grad_(self, requires_grad=True):
        self.requires_grad = requires_grad
        return self

    @property
    def is_leaf(self):
        return self.grad_fn is None

    def backward(self, gradient=None, retain_graph=None, create_graph=False, inputs=None):
        """Accumulate the gradient of this tensor w.r.t. every leaf that requires grad into their `.grad`."""
        from . import autograd

        autograd.backward(self, gradient, retain_graph, create_graph, inputs)

    def register_hook(self, hook):
        """`hook(grad)` runs when this tensor's gradient is computed; it may return a replacement."""
        if not self._requires_grad:
            raise RuntimeError("register_hook: cannot register a hook on a tensor that does not require grad")
        if self.grad_fn is not None:
            return self.grad_fn.register_prehook(self._output_nr, hook)
        if self._hooks is None:
            self._hooks = []
        self._hooks.append(hook)
        return RemovableHandle(self._hooks, hook)

    def register_post_accumulate_grad_hook(self, hook):
        """`hook(tensor)` runs on this leaf after its gradient of the current backward has been added into
        `.grad` (once per backward, however many uses): where DistributedDataParallel starts reducing it."""
        if not self._requires_grad or self.grad_fn is not None:
            raise RuntimeError("register_post_accumulate_grad_hook: only leaf tensors that require grad accumulate "
                               "a .grad; this one " + ("is not a leaf" if self.grad_fn is not None
                                                       else "does not require grad"))
        if self._post_acc_hooks is None:
            self._post_acc_hooks = []
        self._post_acc_hooks.append(hook)
        return RemovableHandle(self._post_acc_hooks, hook)

    def retain_grad(self):
        """Keep the gradient of this non-leaf tensor in `.grad` after backward (leaves always keep it)."""
        if not self._requires_grad:
            raise RuntimeError("retain_grad: cannot retain the gradient of a tensor that does not require grad")
        if self.grad_fn is not None:
            self.grad_fn.retain_grad_of(self._output_nr, weakref.ref(self))

    @property
    def retains_grad(self):
        fn = self.grad_fn
        return fn is not None and fn._retained is not None and self._output_nr in fn._retained

    def _grad_accumulator(self):
        """This leaf's AccumulateGrad node, shared by all its uses (cached weakly: the graph owns it)."""
        acc = self._acc() if self._acc is not None else None
        if acc is None:
            acc = AccumulateGrad(self)
            self._acc = weakref.ref(acc)
        return acc

    def detach(self):
        """A tensor sharing this one's storage (and version counter), cut off from the graph."""
        t = Tensor._wrap(self._data)
        t._vc = self._vc
        return t

    def detach_(self):
        if self._base is not None and self._base.requires_grad:
            raise RuntimeError("detach_: cannot detach a view in place; use detach()")
        self.grad_fn = None
        self._requires_grad = False
        return self

    @property
    def data(self):
        """Like PyTorch's `.data`: a detached tensor over the same storage."""
        return self.detach()

    @data.setter
    def data(self, value):
        value = value if isinstance(value, Tensor) else Tensor(value)
        self._data = value._data

    # ------------------------------------------------------------------ conversion
    def numpy(self):
        if self._requires_grad:
            raise RuntimeError("numpy(): this tensor requires grad; call tensor.detach().numpy() instead")
        return self._data

    def __array__(self, dtype=None, copy=None):
        if dtype is not None and np.dtype(dtype) != self._data.dtype:
            return self._data.astype(dtype)
        return self._data.copy() if copy else self._data

    def __dlpack__(self, stream=None, **kwargs):
        """Export the storage through DLPack (no copy): torch.from_dlpack(t) and np.from_dlpack(t) share memory."""
        if self._requires_grad:
            raise RuntimeError("__dlpack__: this tensor requires grad; export tensor.detach() instead")
        return self._data.__dlpack__(stream=stream, **kwargs)

    def __dlpack_device__(self):
        return self._data.__dlpack_device__()

    def item(self):
        if self._data.size != 1:
            raise RuntimeError(f"item(): only one-element tensors can be converted, this one has shape {self.shape}")
        return self._data.reshape(()).item()

    def tolist(self):
        return self._data.tolist()

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self._data.dtype.kind not in "iu" or self._data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __bool__(self):
        if self._data.size != 1:
            raise RuntimeError(f"the truth value of a tensor with {self._data.size} elements is ambiguous")
        return bool(self._data.reshape(()))

    def __len__(self):
        if self._data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self._data.shape[0]

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self._data.shape[0]))

    __hash__ = object.__hash__

    def __repr__(self):
        from .utils.printing import tensor_repr

        return tensor_repr(self)

    __str__ = __repr__

    def __format__(self, spec):
        if self._data.ndim == 0:
            return format(self.item(), spec)
        return format(repr(self), spec)

    def __reduce_ex__(self, protocol):
        return (_rebuild, (self._data, self._requires_grad))

    def __deepcopy__(self, memo):
        """copy.deepcopy of a leaf: a new leaf over a copy of the data (and of .grad), like PyTorch's. A tensor
        computed by an op is an error, as in PyTorch: its copy could not be part of the graph it came from."""
        if self.grad_fn is not None:
            raise RuntimeError(
                "deepcopy: only tensors created explicitly by the user (graph leaves) support the deepcopy protocol; "
                f"this one was computed by {self.grad_fn.name()}. Deep-copy tensor.detach() instead")
        if id(self) in memo:
            return memo[id(self)]
        new = Tensor._wrap(self._data.copy())
        new._requires_grad = self._requires_grad
        memo[id(self)] = new
        if self.grad is not None:
            new.grad = self.grad.__deepcopy__(memo)
        return new

    # ------------------------------------------------------------------ dtype and copies
    def to(self, *args, dtype=None, device=None, non_blocking=False, copy=False):
        """to(dtype), to(device[, dtype]), to(other) (other's dtype), to(device=..., dtype=...): a cast
        (differentiable), or self when nothing changes (a copy with copy=True). minitensor runs on the CPU only:
        any other device is an error."""
        dtype = to_args(args, dtype, device, "to()")
        if dtype is not None:
            try:
                dtype = dtypes.to_dtype(dtype)
            except TypeError:
                raise TypeError(f"to(): expected a dtype, a device or a tensor, got {dtype!r}") from None
        if dtype is None or dtype == self.dtype:
            return self.clone() if copy else self
        return _shape.Cast.apply(self, dtype)

    def type(self, dtype=None):
        return str(self.dtype) if dtype is None else self.to(dtype)

    def type_as(self, other):
        return self.to(other.dtype)

    def float(self):
        return self.to(dtypes.float32)

    def double(self):
        return self.to(dtypes.float64)

    def half(self):
        return self.to(dtypes.float16)

    def long(self):
        return self.to(dtypes.int64)

    def int(self):
        return self.to(dtypes.int32)

    def bool(self):
        return self.to(dtypes.bool_)

    def cpu(self):
        return self

    def clone(self):
        return _shape.Clone.apply(self)

    def contiguous(self):
        return self if self._data.flags.c_contiguous else _shape.Clone.apply(self)

    def new_tensor(self, data, dtype=None, requires_grad=False):
        return Tensor._from_data(data, dtype=dtype or self.dtype, requires_grad=requires_grad)

    def new_zeros(self, *size, dtype=None):
        return Tensor._wrap(np.zeros(_shape.size_arg(size), dtype=dtype or self.dtype))

    def new_ones(self, *size, dtype=None):
        return Tensor._wrap(np.ones(_shape.size_arg(size), dtype=dtype or self.dtype))

    def new_full(self, size, fill_value, dtype=None):
        return Tensor._wrap(np.full(_shape.size_arg((size,)), fill_value, dtype=dtype or self.dtype))

    def new_empty(self, *size, dtype=None):
        return Tensor._wrap(np.empty(_shape.size_arg(size), dtype=dtype or self.dtype))

    # ------------------------------------------------------------------ in-place ops
    def _write(self, result, op):
        """Write `result` (the out-of-place result of `op` on self) into self's storage.

        With grad mode on and a gradient to track, self takes result's place in the graph (its grad_fn
        becomes result's), so later uses of self differentiate through the in-place op.
        """
        if not self._data.flags.writeable:
            raise RuntimeError(
                f"{op}: this tensor's memory is read-only (it is an expand()ed or broadcast view); "
                "clone() it before writing"
            )
        if result.dtype != self.dtype and not np.can_cast(result.dtype, self.dtype, "same_kind"):
            raise RuntimeError(f"{op}: result type {result.dtype} cannot be cast to this tensor's dtype {self.dtype}")
        if result.grad_fn is not None:
            if self.grad_fn is None and self._requires_grad:
                raise RuntimeError(
                    f"{op}: a leaf tensor that requires grad is being used in an in-place operation; "
                    "do it under `with minitensor.no_grad():` or on a clone"
                )
            if self._base is not None:
                raise RuntimeError(
                    f"{op}: a differentiable in-place operation on a view is not supported (the gradient of "
                    "the tensor it views would be wrong); use an out-of-place op such as index_put or cat"
                )
        np.copyto(self._data, result._data, casting="unsafe")
        self._vc[0] += 1
        if result.grad_fn is not None:
            self.grad_fn = result.grad_fn
            self._output_nr = result._output_nr
            self._requires_grad = True
        return self

    def _inplace(self, fn, *args, op):
        if grad_mode.is_grad_enabled() and (self._requires_grad or any(
                isinstance(a, Tensor) and a._requires_grad for a in args)):
            # fn may save its input for backward; give it a copy of self, since self is about to change
            return self._write(fn(self.clone(), *args), op)
        with grad_mode.no_grad():
            return self._write(fn(self, *args), op)

    def zero_(self):
        return self.fill_(0)

    def fill_(self, value):
        if isinstance(value, Tensor):
            return self.copy_(value)
        with grad_mode.no_grad():
            return self._write(Tensor._wrap(np.full(self.shape, value, dtype=self.dtype)), "fill_")

    def copy_(self, src):
        """Copy src (broadcast to self's shape, cast to self's dtype) into self; the gradient goes to src."""
        src = src if isinstance(src, Tensor) else Tensor(src)
        return self._inplace(lambda s, v: v.to(s.dtype).expand(s.shape), src, op="copy_")

    def add_(self, other, alpha=1):
        return self._inplace(lambda s, o: _ew.add(s, o if alpha == 1 else o * alpha), other, op="add_")

    def sub_(self, other, alpha=1):
        return self._inplace(lambda s, o: _ew.sub(s, o if alpha == 1 else o * alpha), other, op="sub_")

    def mul_(self, other):
        return self._inplace(_ew.mul, other, op="mul_")

    def div_(self, other):
        return self._inplace(_ew.div, other, op="div_")

    def pow_(self, exponent):
        return self._inplace(_ew.pow, exponent, op="pow_")

    def clamp_(self, min=None, max=None):
        return self._inplace(lambda s: _ew.clamp(s, min, max), op="clamp_")

    clip_ = clamp_

    def masked_fill_(self, mask, value):
        return self._inplace(lambda s, v: _ew.masked_fill(s, mask, v), value, op="masked_fill_")

    def relu_(self):
        return self._inplace(_ew.relu, op="relu_")

    def uniform_(self, a=0.0, b=1.0, generator=None):
        from .random import get_generator

        with grad_mode.no_grad():
            data = get_generator(generator).uniform(a, b, self.shape, self.dtype)
            return self._write(Tensor._wrap(data), "uniform_")

    def normal_(self, mean=0.0, std=1.0, generator=None):
        from .random import get_generator

        with grad_mode.no_grad():
            data = get_generator(generator).normal(mean, std, self.shape, self.dtype)
            return self._write(Tensor._wrap(data), "normal_")

    def __setitem__(self, index, value):
        self._inplace(lambda s, v: _shape.index_put(s, index, v), value, op="__setitem__")

    def __iadd__(self, other):
        return self.add_(other)

    def __isub__(self, other):
        return self.sub_(other)

    def __imul__(self, other):
        return self.mul_(other)

    def __itruediv__(self, other):
        return self.div_(other)

    # ------------------------------------------------------------------ arithmetic (ops/elementwise.py)
    def __add__(self, other):
        return _ew.add(self, other)

    def __radd__(self, other):
        return _ew.add(other, self)

    def __sub__(self, other):
        return _ew.sub(self, other)

    def __rsub__(self, other):
        return _ew.sub(other, self)

    def __mul__(self, other):
        return _ew.mul(self, other)

    def __rmul__(self, other):
        return _ew.mul(other, self)

    def __truediv__(self, other):
        return _ew.div(self, other)

    def __rtruediv__(self, other):
        return _ew.div(other, self)

    def __pow__(self, other):
        return _ew.pow(self, other)

    def __rpow__(self, other):
        return _ew.pow(other, self)

    def __neg__(self):
        return _ew.neg(self)

    def __pos__(self):
        return self

    def __abs__(self):
        return _ew.abs(self)

    def __matmul__(self, other):
        return _linalg.matmul(self, other)

    def __rmatmul__(self, other):
        return _linalg.matmul(other, self)

    def __lt__(self, other):
        return _ew.lt(self, other)

    def __le__(self, other):
        return _ew.le(self, other)

    def __gt__(self, other):
        return _ew.gt(self, other)

    def __ge__(self, other):
        return _ew.ge(self, other)

    def __eq__(self, other):
        return _ew.eq(self, other)

    def __ne__(self, other):
        return _ew.ne(self, other)

    def __invert__(self):
        return _ew.logical_not(self)

    def __and__(self, other):
        return _ew.logical_and(self, other)

    def __or__(self, other):
        return _ew.logical_or(self, other)

    def __xor__(self, other):
        return _ew.logical_xor(self, other)

    def __getitem__(self, index):
        return _shape.index(self, index)

    # Named methods, each the same as the function of the same name in minitensor.
    def add(self, other, alpha=1):
        return _ew.add(self, other if alpha == 1 else other * alpha)

    def sub(self, other, alpha=1):
        return _ew.sub(self, other if alpha == 1 else other * alpha)

    def mul(self, other):
        return _ew.mul(self, other)

    def div(self, other):
        return _ew.div(self, other)

    def pow(self, exponent):
        return _ew.pow(self, exponent)

    def neg(self):
        return _ew.neg(self)

    def abs(self):
        return _ew.abs(self)

    def exp(self):
        return _ew.exp(self)

    def log(self):
        return _ew.log(self)

    def sqrt(self):
        return _ew.sqrt(self)

    def rsqrt(self):
        return _ew.rsqrt(self)

    def sin(self):
        return _ew.sin(self)

    def cos(self):
        return _ew.cos(self)

    def tanh(self):
        return _ew.tanh(self)

    def sigmoid(self):
        return _ew.sigmoid(self)

    def relu(self):
        return _ew.relu(self)

    def clamp(self, min=None, max=None):
        return _ew.clamp(self, min, max)

    clip = clamp

    def maximum(self, other):
        return _ew.maximum(self, other)

    def minimum(self, other):
        return _ew.minimum(self, other)

    def masked_fill(self, mask, value):
        return _ew.masked_fill(self, mask, value)

    def lt(self, other):
        return _ew.lt(self, other)

    def le(self, other):
        return _ew.le(self, other)

    def gt(self, other):
        return _ew.gt(self, other)

    def ge(self, other):
        return _ew.ge(self, other)

    def eq(self, other):
        return _ew.eq(self, other)

    def ne(self, other):
        return _ew.ne(self, other)

    def logical_not(self):
        return _ew.logical_not(self)

    def sign(self):
        return _ew.sign(self)

    def isnan(self):
        return _ew.isnan(self)

    def isfinite(self):
        return _ew.isfinite(self)

    def equal(self, other):
        return self.shape == other.shape and bool(np.array_equal(self._data, other._data))

    def allclose(self, other, rtol=1e-05, atol=1e-08, equal_nan=False):
        return bool(np.allclose(self._data, other._data, rtol=rtol, atol=atol, equal_nan=equal_nan))

    # ------------------------------------------------------------------ reductions (ops/reduction.py)
    def sum(self, dim=None, keepdim=False, dtype=None):
        return _red.sum(self, dim, keepdim, dtype)

    def mean(self, dim=None, keepdim=False):
        return _red.mean(self, dim, keepdim)

    def var(self, dim=None, unbiased=None, keepdim=False, correction=None):
        return _red.var(self, dim, unbiased, keepdim, correction)

    def std(self, dim=None, unbiased=None, keepdim=False, correction=None):
        return _red.std(self, dim, unbiased, keepdim, correction)

    def max(self, dim=None, keepdim=False):
        return _red.max(self, dim, keepdim)

    def min(self, dim=None, keepdim=False):
        return _red.min(self, dim, keepdim)

    def amax(self, dim=None, keepdim=False):
        return _red.amax(self, dim, keepdim)

    def amin(self, dim=None, keepdim=False):
        return _red.amin(self, dim, keepdim)

    def argmax(self, dim=None, keepdim=False):
        return _red.argmax(self, dim, keepdim)

    def argmin(self, dim=None, keepdim=False):
        return _red.argmin(self, dim, keepdim)

    def logsumexp(self, dim, keepdim=False):
        return _red.logsumexp(self, dim, keepdim)

    def all(self, dim=None, keepdim=False):
        return _red.all(self, dim, keepdim)

    def any(self, dim=None, keepdim=False):
        return _red.any(self, dim, keepdim)

    def softmax(self, dim):
        return _nnops.softmax(self, dim)

    def log_softmax(self, dim):
        return _nnops.log_softmax(self, dim)

    # ------------------------------------------------------------------ linear algebra (ops/linalg.py)
    def matmul(self, other):
        return _linalg.matmul(self, other)

    def mm(self, other):
        return _linalg.mm(self, other)

    def bmm(self, other):
        return _linalg.bmm(self, other)

    # ------------------------------------------------------------------ shapes (ops/shape.py)
    def reshape(self, *shape):
        return _shape.reshape(self, shape)

    def view(self, *shape):
        return _shape.view(self, shape)

    def view_as(self, other):
        return _shape.view(self, (other.shape,))

    def reshape_as(self, other):
        return _shape.reshape(self, (other.shape,))

    def flatten(self, start_dim=0, end_dim=-1):
        return _shape.flatten(self, start_dim, end_dim)

    def transpose(self, dim0, dim1):
        return _shape.transpose(self, dim0, dim1)

    swapaxes = transpose

    def permute(self, *dims):
        return _shape.permute(self, dims)

    @property
    def T(self):
        return _shape.permute(self, (tuple(range(self.ndim - 1, -1, -1)),))

    @property
    def mT(self):
        return _shape.transpose(self, -2, -1)

    def t(self):
        if self.ndim > 2:
            raise RuntimeError(f"t(): expects a tensor with <= 2 dimensions, got {self.ndim}")
        return self.T

    def squeeze(self, dim=None):
        return _shape.squeeze(self, dim)

    def unsqueeze(self, dim):
        return _shape.unsqueeze(self, dim)

    def expand(self, *sizes):
        return _shape.expand(self, sizes)

    def expand_as(self, other):
        return _shape.expand(self, (other.shape,))

    def repeat(self, *repeats):
        return _shape.repeat(self, repeats)

    def gather(self, dim, index):
        return _shape.gather(self, dim, index)

    def split(self, split_size_or_sections, dim=0):
        return _shape.split(self, split_size_or_sections, dim)

    def chunk(self, chunks, dim=0):
        return _shape.chunk(self, chunks, dim)

    def unbind(self, dim=0):
        return _shape.unbind(self, dim)

    def narrow(self, dim, start, length):
        return _shape.narrow(self, dim, start, length)

    def tril(self, diagonal=0):
        return _shape.tril(self, diagonal)

    def triu(self, diagonal=0):
        return _shape.triu(self, diagonal)

    def flip(self, dims):
        return _shape.flip(self, dims)


# PyTorch's device types (the prefix of a device string such as "cuda:0"): naming one is asking for a device
_DEVICE_TYPES = ("cpu", "cuda", "mps", "xpu", "xla", "meta", "hip", "ipu", "hpu", "mtia", "maia", "vulkan", "lazy",
                 "fpga", "ve", "mkldnn", "opengl", "opencl", "ideep", "privateuseone")


def _is_device(a):
    """Does `a` name a device (a device string such as 'cpu' or 'cuda:0', or a torch.device)?"""
    if type(a).__name__ == "device":  # torch.device, without importing torch
        return True
    return isinstance(a, str) and a.split(":")[0] in _DEVICE_TYPES


def check_device(device, op):
    """Accept device=None, 'cpu', 'cpu:0' or torch.device('cpu'); anything else is an error that says why:
    minitensor runs on the CPU only."""
    if device is None:
        return
    name = str(device)
    if not _is_device(device):
        raise ValueError(f"{op}: expected a device such as 'cpu', got {device!r}")
    if name.split(":")[0] != "cpu":
        raise ValueError(f"{op}: minitensor runs on the CPU only, got device {name!r}")


def to_args(args, dtype, device, op):
    """The dtype asked for by `to(*args, dtype=, device=)` (of a Tensor or a Module): the positional arguments are
    dtypes, devices or a tensor (its dtype) in any order; a device other than the CPU is an error."""
    for a in args:
        if isinstance(a, Tensor):
            dtype = a.dtype
        elif _is_device(a):
            device = a
        else:
            dtype = a
    check_device(device, op)
    return dtype


def _rebuild(data, requires_grad):
    t = Tensor._wrap(data)
    t._requires_grad = requires_grad
    return t


def _dim(dim, ndim, op):
    from .ops._util import normalize_dim

    return normalize_dim(dim, ndim, op)


# The ops import Tensor from this module, so they are imported after the class exists.
from .ops import elementwise as _ew  # noqa: E402
from .ops import linalg as _linalg  # noqa: E402
from .ops import nn as _nnops  # noqa: E402
from .ops import reduction as _red  # noqa: E402
from .ops import shape as _shape  # noqa: E402
