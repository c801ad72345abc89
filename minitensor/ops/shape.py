"""Shape ops: reshape/view, permute, squeeze, expand, repeat, cat/stack/split, indexing, gather, tril/triu,
pad, flip, and the dtype cast.

Ops that numpy answers with a view (reshape, permute, basic slicing, expand, ...) return tensors that share
their input's memory and version counter, so an in-place change to either is seen by both.
"""
import builtins

import numpy as np

from .. import backend, dtypes
from ..autograd import grad_mode
from ..autograd.function import Function
from ..tensor import Tensor
from ._util import normalize_dim, unbroadcast


def size_arg(args, op="size"):
    """(2, 3), ((2, 3),) and ([2, 3],) all mean the shape (2, 3)."""
    if len(args) == 1 and isinstance(args[0], (tuple, list)):
        args = tuple(args[0])
    shape = []
    for n in args:
        if isinstance(n, Tensor):
            n = n.item()
        if not isinstance(n, (int, np.integer)) or isinstance(n, bool):
            raise TypeError(f"{op}: sizes must be ints, got {type(n).__name__} in {tuple(args)}")
        shape.append(int(n))
    return tuple(shape)


def _mark_view(out, x):
    """If `out` shares x's memory, make it a view of x: one version counter, and `_base` set."""
    if out._data.base is not None and np.may_share_memory(out._data, x._data):
        out._vc = x._vc
        out._base = x._base if x._base is not None else x
    return out


_BIG_COPY = 1 << 15  # elements: copies this big go to backend.kernels (contiguous, assign), which may thread them


class Reshape(Function):
    """y = x with a new shape (same elements, same order);  the gradient is g reshaped back."""

    @staticmethod
    def forward(ctx, x, shape, strict):
        ctx.shape = x.shape
        a = x._data
        if a.flags.c_contiguous or a.size < _BIG_COPY:
            out = a.reshape(shape)
        else:  # a view if the strides allow one; else the copy on the backend's (maybe threaded) copy
            try:
                out = a.reshape(shape, copy=False)
            except (ValueError, TypeError):  # TypeError: numpy < 2.1 has no copy=
                out = backend.kernels.contiguous(a).reshape(shape)
        if strict and out.size and not np.may_share_memory(out, a):
            raise RuntimeError(
                f"view: shape {shape} is not compatible with the input's size and strides (shape "
                f"{tuple(x.shape)}, strides {x.stride()}); use .reshape(...) instead"
            )
        return out

    @staticmethod
    def backward(ctx, g):
        return g.reshape(ctx.shape), None, None


class Permute(Function):
    """y = x with its dims reordered;  the gradient is g with the inverse order."""

    @staticmethod
    def forward(ctx, x, dims):
        ctx.inverse = tuple(np.argsort(dims))
        return np.transpose(x._data, dims)

    @staticmethod
    def backward(ctx, g):
        return g.permute(ctx.inverse), None


class Expand(Function):
    """y = x broadcast to `shape` (a read-only view);  the gradient is g summed back (unbroadcast)."""

    @staticmethod
    def forward(ctx, x, shape):
        ctx.shape = x.shape
        return np.broadcast_to(x._data, shape)

    @staticmethod
    def backward(ctx, g):
        return unbroadcast(g, ctx.shape), None


class Repeat(Function):
    """y = x tiled `repeats` times along each dim;  the gradient sums g over the tiles."""

    @staticmethod
    def forward(ctx, x, repeats):
        ctx.shape = x.shape
        return np.tile(x._data, repeats)

    @staticmethod
    def backward(ctx, g):
        shape = (1,) * (g.ndim - len(ctx.shape)) + tuple(ctx.shape)
        # (r0*s0, r1*s1, ...) -> (r0, s0, r1, s1, ...) and sum over the r axes
        split = [n for r_s in zip([gn // sn if sn else 0 for gn, sn in zip(g.shape, shape)], shape) for n in r_s]
        if 0 in g.shape:
            return g.new_zeros(ctx.shape), None
        return g.reshape(split).sum(dim=tuple(range(0, 2 * len(shape), 2))).reshape(ctx.shape), None


class Cat(Function):
    """y = the inputs joined along dim;  each input's gradient is its slice of g."""

    @staticmethod
    def forward(ctx, dim, *xs):
        ctx.dim = dim
        ctx.sizes = [x.shape[dim] for x in xs]
        return np.concatenate([x._data for x in xs], axis=dim)

    @staticmethod
    def backward(ctx, g):
        grads, start = [None], 0
        for size, need in zip(ctx.sizes, ctx.needs_input_grad[1:]):
            grads.append(narrow(g, ctx.dim, start, size) if need else None)
            start += size
        return tuple(grads)


_FROM_SAVED = object()  # in an index kept on ctx: the place of an item that went through save_for_backward


def _keep_index(ctx, index):
    """Keep an index (a tuple of ints, slices, None, Ellipsis and integer/bool Tensors) for backward: its Tensors
    through save_for_backward (an in-place change to one before backward is caught), the rest on ctx. Returns
    the index as numpy understands it (the Tensors as their arrays)."""
    tensors = [i for i in index if isinstance(i, Tensor)]
    if not tensors:  # basic indexing (x[t], x[:, 1:]), the usual case: nothing to save
        ctx.index_items = index
        return index
    ctx.index_items = tuple(_FROM_SAVED if isinstance(i, Tensor) else i for i in index)
    ctx.save_for_backward(*tensors)
    return tuple(i._data if isinstance(i, Tensor) else i for i in index)


def _kept_index(ctx):
    """The index kept by _keep_index (its Tensors version-checked)."""
    items = ctx.index_items
    if _FROM_SAVED not in items:
        return items
    saved = iter(ctx.saved_tensors)
    return tuple(next(saved) if i is _FROM_SAVED else i for i in items)


class Index(Function):
    """y = x[index];  the gradient is g added into zeros of x's shape at the same index."""

    @staticmethod
    def forward(ctx, x, index):
        ctx.shape = x.shape
        arrays = _keep_index(ctx, index)
        try:
            return x._data[arrays]
        except IndexError as exc:
            raise IndexError(f"index: {exc} (tensor of shape {tuple(x.shape)})") from None

    @staticmethod
    def backward(ctx, g):
        return IndexAdd.apply(g, _kept_index(ctx), ctx.shape), None


class Unbind(Function):
    """ys = the slices of x along dim (views, one output each);  the gradient is the slices' gradients stacked
    along dim, zeros for slices that got none. One node and one gradient array for all slices: taking the
    slices one by one (select) would give each a full-size zero-filled gradient, summed in the engine (quadratic
    in the number of slices, what an LSTM stepping over its projected inputs used to pay)."""

    @staticmethod
    def forward(ctx, x, dim):
        ctx.dim = dim
        ctx.set_materialize_grads(False)
        lead = (slice(None),) * dim
        return tuple(x._data[lead + (i,)] for i in range(x.shape[dim]))

    @staticmethod
    def backward(ctx, *grads):
        shape, dtype = ctx.input_meta[0]
        if grad_mode.is_grad_enabled():  # create_graph: the stack itself is differentiable
            zero = Tensor._wrap(np.zeros(shape[:ctx.dim] + shape[ctx.dim + 1:], dtype=dtype))
            return stack([zero if g is None else g for g in grads], ctx.dim), None
        out = np.empty(shape, dtype=dtype) if all(g is not None for g in grads) else np.zeros(shape, dtype=dtype)
        lead = (slice(None),) * ctx.dim
        for i, g in enumerate(grads):
            if g is not None:
                out[lead + (i,)] = g._data
        return Tensor._wrap(out), None


class Split(Function):
    """ys = consecutive slices of x along dim with the given sizes (views);  the gradient is the slices'
    gradients side by side, zeros for slices that got none. One node and one gradient array, like Unbind: taking
    each slice with its own narrow would give each a full-size zero-filled gradient (MultiheadAttention's q, k, v
    from one projection made three, each as big as the projection)."""

    @staticmethod
    def forward(ctx, x, dim, sizes):
        ctx.dim, ctx.sizes = dim, sizes
        ctx.set_materialize_grads(False)
        lead = (slice(None),) * dim
        out, start = [], 0
        for n in sizes:
            out.append(x._data[lead + (slice(start, start + n),)])
            start += n
        return tuple(out)

    @staticmethod
    def backward(ctx, *grads):
        shape, dtype = ctx.input_meta[0]
        d, sizes = ctx.dim, ctx.sizes
        if grad_mode.is_grad_enabled():  # create_graph: the concatenation itself is differentiable
            parts = [Tensor._wrap(np.zeros(shape[:d] + (n,) + shape[d + 1:], dtype=dtype)) if g is None else g
                     for g, n in zip(grads, sizes)]
            return cat(parts, d), None, None
        out = np.empty(shape, dtype=dtype) if all(g is not None for g in grads) else np.zeros(shape, dtype=dtype)
        lead, start = (slice(None),) * d, 0
        for g, n in zip(grads, sizes):
            if g is not None:
                backend.kernels.assign(out[lead + (slice(start, start + n),)], g._data)
            start += n
        return Tensor._wrap(out), None, None


def _add_rows(out, rows, g):
    """out[rows[k]] += g[k] for every k, rows a 1-D integer array (a gather's gradient, the usual case), without
    np.add.at's per-element loop (40x slower, measured on (1280, 64)). Distinct rows are one assignment (the same
    result as np.add.at); repeated ones are summed by np.add.reduceat over the rows sorted stably (the same terms,
    summed in another order: equal within float rounding)."""
    rows = np.where(rows < 0, rows + out.shape[0], rows)
    if len(rows) == 0:
        return
    if np.bincount(rows, minlength=out.shape[0]).max() <= 1:
        out[rows] = g
        return
    order = np.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = np.flatnonzero(np.r_[True, sorted_rows[1:] != sorted_rows[:-1]])
    out[sorted_rows[starts]] = np.add.reduceat(g[order], starts, axis=0)


class IndexAdd(Function):
    """y = zeros(shape) with g added at index (repeated indices add up);  the gradient is gy[index]."""

    @staticmethod
    def forward(ctx, g, index, shape):
        index = _keep_index(ctx, index)
        out = np.zeros(shape, dtype=g.dtype)
        if len(index) == 1 and isinstance(index[0], np.ndarray) and index[0].dtype.kind in "iu":
            rows = index[0]  # rows of out, any shape: g is (*rows.shape, *out.shape[1:])
            _add_rows(out, rows.reshape(-1), g._data.reshape((rows.size,) + tuple(shape[1:])))
        elif _is_advanced(index):
            np.add.at(out, index, g._data)
        else:
            out[index] = g._data
        return out

    @staticmethod
    def backward(ctx, gg):
        return Index.apply(gg, _kept_index(ctx)), None, None


class IndexPut(Function):
    """y = x with y[index] = v;  dy/dx = 1 outside index (0 inside), dy/dv = g[index] summed to v's shape."""

    @staticmethod
    def forward(ctx, x, index, v):
        ctx.v_shape = v.shape
        index = _keep_index(ctx, index)
        out = x._data.copy()
        try:
            out[index] = v._data
        except IndexError as exc:
            raise IndexError(f"index_put: {exc} (tensor of shape {tuple(x.shape)})") from None
        except ValueError:
            raise ValueError(
                f"index_put: a value of shape {tuple(v.shape)} cannot be assigned to x[index] of shape "
                f"{x._data[index].shape}"
            ) from None
        return out

    @staticmethod
    def backward(ctx, g):
        nx, _, nv = ctx.needs_input_grad
        index = _kept_index(ctx)
        gx = IndexPut.apply(g, index, g.new_zeros(())) if nx else None
        gv = unbroadcast(Index.apply(g, index), ctx.v_shape) if nv else None
        return gx, None, gv


class Gather(Function):
    """y[i][j] = x[index[i][j]][j] (for dim 0);  the gradient scatter-adds g back along dim."""

    @staticmethod
    def forward(ctx, x, dim, index):
        ctx.shape, ctx.dim = x.shape, dim
        ctx.save_for_backward(index)
        sub = x._data[tuple(slice(0, n) if d != dim else slice(None) for d, n in enumerate(index.shape))]
        return np.take_along_axis(sub, index._data, axis=dim)

    @staticmethod
    def backward(ctx, g):
        (index,) = ctx.saved_tensors
        return ScatterAdd.apply(g, ctx.dim, index, ctx.shape), None, None


class ScatterAdd(Function):
    """y = zeros(shape); y[index[i][j]][j] += g[i][j] (for dim 0);  the gradient is gather(gy, dim, index)."""

    @staticmethod
    def forward(ctx, g, dim, index, shape):
        ctx.dim = dim
        ctx.save_for_backward(index)
        out = np.zeros(shape, dtype=g.dtype)
        where = list(np.indices(index.shape, sparse=True))
        where[dim] = index._data
        np.add.at(out, tuple(where), g._data)
        return out

    @staticmethod
    def backward(ctx, gg):
        (index,) = ctx.saved_tensors
        return Gather.apply(gg, ctx.dim, index), None, None, None


class Triangle(Function):
    """y = tril(x, k) or triu(x, k);  the gradient is g with the same triangle kept."""

    @staticmethod
    def forward(ctx, x, k, lower):
        ctx.k, ctx.lower = k, lower
        return (np.tril if lower else np.triu)(x._data, k)

    @staticmethod
    def backward(ctx, g):
        return Triangle.apply(g, ctx.k, ctx.lower), None, None


class Pad(Function):
    """y = x surrounded by `value`;  the gradient is the slice of g where x sits."""

    @staticmethod
    def forward(ctx, x, widths, value):
        ctx.inner = tuple(slice(lo, lo + n) for (lo, _), n in zip(widths, x.shape))
        return np.pad(x._data, widths, mode="constant", constant_values=value)

    @staticmethod
    def backward(ctx, g):
        return g[ctx.inner], None, None


class Flip(Function):
    """y = x reversed along dims;  the gradient is g reversed the same way."""

    @staticmethod
    def forward(ctx, x, dims):
        ctx.dims = dims
        return np.flip(x._data, axis=dims)

    @staticmethod
    def backward(ctx, g):
        return Flip.apply(g, ctx.dims), None


class Cast(Function):
    """y = x converted to dtype;  the gradient is g converted back."""

    @staticmethod
    def forward(ctx, x, dtype):
        ctx.dtype = x.dtype
        return x._data.astype(dtype)

    @staticmethod
    def backward(ctx, g):
        return (g.to(ctx.dtype) if ctx.dtype.kind == "f" else None), None


class Clone(Function):
    """y = a copy of x (C-contiguous);  dy/dx = 1."""

    @staticmethod
    def forward(ctx, x):
        return np.array(x._data, order="C", copy=True)

    @staticmethod
    def backward(ctx, g):
        return g


# ---------------------------------------------------------------------------- the functions
def _infer_shape(shape, numel, op):
    shape = list(shape)
    if shape.count(-1) > 1:
        raise RuntimeError(f"{op}: only one dimension can be inferred (-1), got shape {tuple(shape)}")
    if any(n < -1 for n in shape):
        raise RuntimeError(f"{op}: invalid shape {tuple(shape)}")
    known = int(np.prod([n for n in shape if n != -1]))
    if -1 in shape:
        if known == 0 or numel % known:
            raise RuntimeError(f"{op}: shape {tuple(shape)} is invalid for input of size {numel}")
        shape[shape.index(-1)] = numel // known
    elif known != numel:
        raise RuntimeError(f"{op}: shape {tuple(shape)} is invalid for input of size {numel}")
    return tuple(shape)


def reshape(x, shape):
    shape = _infer_shape(size_arg(shape, "reshape"), x.numel(), "reshape")
    if shape == x.shape:
        return x
    return _mark_view(Reshape.apply(x, shape, False), x)


def view(x, shape):
    if len(shape) == 1 and isinstance(shape[0], (np.dtype, type)):
        raise TypeError("view(dtype) is not supported; use .to(dtype)")
    shape = _infer_shape(size_arg(shape, "view"), x.numel(), "view")
    return _mark_view(Reshape.apply(x, shape, True), x)


def flatten(x, start_dim=0, end_dim=-1):
    if x.ndim == 0:
        return reshape(x, (1,))
    s = normalize_dim(start_dim, x.ndim, "flatten")
    e = normalize_dim(end_dim, x.ndim, "flatten")
    if s > e:
        raise ValueError(f"flatten: start_dim ({start_dim}) comes after end_dim ({end_dim})")
    return reshape(x, x.shape[:s] + (-1 if x.numel() else int(np.prod(x.shape[s:e + 1])),) + x.shape[e + 1:])


def unflatten(x, dim, sizes):
    d = normalize_dim(dim, x.ndim, "unflatten")
    return reshape(x, x.shape[:d] + tuple(sizes) + x.shape[d + 1:])


def squeeze(x, dim=None):
    if dim is None:
        dims = [d for d, n in enumerate(x.shape) if n == 1]
    else:
        dims = [normalize_dim(d, x.ndim, "squeeze") for d in (dim if isinstance(dim, (tuple, list)) else (dim,))]
    shape = tuple(n for d, n in enumerate(x.shape) if not (d in dims and n == 1))
    return reshape(x, shape)


def unsqueeze(x, dim):
    d = normalize_dim(dim, x.ndim + 1, "unsqueeze")
    return reshape(x, x.shape[:d] + (1,) + x.shape[d:])


def permute(x, dims):
    dims = size_arg(dims, "permute")
    norm = tuple(normalize_dim(d, x.ndim, "permute") for d in dims)
    if sorted(norm) != list(range(x.ndim)):
        raise ValueError(f"permute: {dims} is not a permutation of the {x.ndim} dims of shape {tuple(x.shape)}")
    if norm == tuple(range(x.ndim)):
        return x
    return _mark_view(Permute.apply(x, norm), x)


def transpose(x, dim0, dim1):
    if x.ndim < 2 and dim0 in (0, -1) and dim1 in (0, -1):
        return x
    d0 = normalize_dim(dim0, x.ndim, "transpose")
    d1 = normalize_dim(dim1, x.ndim, "transpose")
    dims = list(range(x.ndim))
    dims[d0], dims[d1] = dims[d1], dims[d0]
    return permute(x, (tuple(dims),))


def expand(x, sizes):
    sizes = size_arg(sizes, "expand")
    if len(sizes) < x.ndim:
        raise ValueError(f"expand: the number of sizes ({len(sizes)}) must be at least the tensor's ndim ({x.ndim})")
    lead = len(sizes) - x.ndim
    shape = []
    for i, n in enumerate(sizes):
        if i < lead:
            if n < 0:
                raise ValueError(f"expand: size -1 is not allowed for a new leading dim (sizes {sizes})")
            shape.append(n)
            continue
        have = x.shape[i - lead]
        if n == -1:
            n = have
        if have != n and have != 1:
            raise ValueError(
                f"expand: the expanded size ({n}) must match the existing size ({have}) at non-singleton "
                f"dim {i}; target sizes {sizes}, tensor sizes {tuple(x.shape)}"
            )
        shape.append(n)
    shape = tuple(shape)
    if shape == x.shape:
        return x
    return _mark_view(Expand.apply(x, shape), x)


def repeat(x, repeats):
    repeats = size_arg(repeats, "repeat")
    if len(repeats) < x.ndim:
        raise ValueError(f"repeat: {len(repeats)} repeat counts given for a tensor of {x.ndim} dims")
    return Repeat.apply(x, repeats)


def cat(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("cat: expected a non-empty sequence of tensors")
    for t in tensors:
        if not isinstance(t, Tensor):
            raise TypeError(f"cat: expected Tensors, got {type(t).__name__}")
    # PyTorch lets 1-D empty tensors join tensors of any shape; skip them when they could not join otherwise
    kept = tensors
    if any(t.ndim != tensors[0].ndim for t in tensors):
        kept = [t for t in tensors if not (t.ndim == 1 and t.shape[0] == 0)] or tensors[:1]
    ref = kept[0]
    d = normalize_dim(dim, ref.ndim, "cat")
    for t in kept[1:]:
        if t.ndim != ref.ndim or any(a != b for i, (a, b) in enumerate(zip(t.shape, ref.shape)) if i != d):
            raise ValueError(
                f"cat: tensors must have the same shape except in dim {d}; got {tuple(ref.shape)} and {tuple(t.shape)}"
            )
    target = ref.dtype
    for t in kept[1:]:
        target = dtypes.promote(target, t.dtype)
    kept = [t if t.dtype == target else t.to(target) for t in kept]
    return Cat.apply(d, *kept)


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise ValueError("stack: expected a non-empty sequence of tensors")
    for t in tensors[1:]:
        if t.shape != tensors[0].shape:
            raise ValueError(f"stack: all tensors must have the same shape; got {tuple(tensors[0].shape)} and {tuple(t.shape)}")
    d = normalize_dim(dim, tensors[0].ndim + 1, "stack")
    return cat([unsqueeze(t, d) for t in tensors], d)


def narrow(x, dim, start, length):
    d = normalize_dim(dim, x.ndim, "narrow")
    if start < 0:
        start += x.shape[d]
    if not (0 <= start and length >= 0 and start + length <= x.shape[d]):
        raise IndexError(f"narrow: start {start} and length {length} exceed dim {d} of size {x.shape[d]}")
    return index(x, (slice(None),) * d + (slice(start, start + length),))


def select(x, dim, i):
    d = normalize_dim(dim, x.ndim, "select")
    return index(x, (slice(None),) * d + (i,))


def split(x, split_size_or_sections, dim=0):
    d = normalize_dim(dim, x.ndim, "split")
    n = x.shape[d]
    if isinstance(split_size_or_sections, (int, np.integer)):
        size = int(split_size_or_sections)
        if size <= 0:
            raise ValueError(f"split: split_size must be positive, got {size}")
        sizes = [builtins.min(size, n - s) for s in range(0, n, size)] or [0]
    else:
        sizes = [int(s) for s in split_size_or_sections]
        if builtins.sum(sizes) != n:
            raise ValueError(f"split: section sizes {sizes} do not add up to dim {d} of size {n}")
    if len(sizes) == 1:
        return (narrow(x, d, 0, sizes[0]),)
    return tuple(_mark_view(y, x) for y in Split.apply(x, d, tuple(sizes)))


def chunk(x, chunks, dim=0):
    if chunks <= 0:
        raise ValueError(f"chunk: the number of chunks must be positive, got {chunks}")
    n = x.shape[normalize_dim(dim, x.ndim, "chunk")]
    return split(x, builtins.max(-(-n // chunks), 1), dim)


def unbind(x, dim=0):
    """The slices of x along dim, as views: one op (Unbind), whose backward stacks their gradients."""
    d = normalize_dim(dim, x.ndim, "unbind")
    if x.shape[d] == 0:
        return ()
    return tuple(_mark_view(y, x) for y in Unbind.apply(x, d))


def _normalize_index(index, shape):
    """Lists and numpy arrays in an index become Tensors (copies: the op keeps them for backward); Tensors stay
    as they are (the op saves them, so an in-place change before backward is caught). Only integer and bool
    arrays are allowed."""
    items = index if isinstance(index, tuple) else (index,)
    out = []
    for item in items:
        if isinstance(item, list):
            item = Tensor._wrap(np.asarray(item) if len(item) else np.zeros(0, dtype=np.int64))
        elif isinstance(item, np.ndarray):
            item = Tensor._wrap(item.copy())
        if isinstance(item, Tensor):
            if item.dtype.kind not in "biu":
                raise IndexError(f"index: tensors used as indices must be integer or bool, got {item.dtype}")
        elif not (item is None or item is Ellipsis or isinstance(item, (slice, int, np.integer))):
            raise IndexError(f"index: unsupported index of type {type(item).__name__}")
        elif isinstance(item, slice) and item.step is not None and item.step == 0:
            raise ValueError("index: slice step cannot be zero")
        out.append(item)
    return tuple(out)


def _is_advanced(index):
    return any(isinstance(i, (np.ndarray, Tensor)) for i in index)


def index(x, idx):
    """x[idx]: ints, slices (with steps), None, Ellipsis, integer arrays and bool masks, as in numpy."""
    idx = _normalize_index(idx, x.shape)
    out = Index.apply(x, idx)
    return out if _is_advanced(idx) else _mark_view(out, x)


def index_put(x, idx, value):
    """The out-of-place form of `x[idx] = value`."""
    idx = _normalize_index(idx, x.shape)
    value = value.to(x.dtype) if isinstance(value, Tensor) else Tensor._wrap(np.asarray(value, dtype=x.dtype))
    return IndexPut.apply(x, idx, value)


def gather(x, dim, index):
    d = normalize_dim(dim, x.ndim, "gather")
    index = index if isinstance(index, Tensor) else Tensor._from_data(index)  # a Tensor is saved, an array copied
    idx = index._data
    if idx.dtype.kind not in "iu":
        raise TypeError(f"gather: index must be an integer tensor, got {idx.dtype}")
    if idx.ndim != x.ndim:
        raise ValueError(f"gather: index has {idx.ndim} dims but the input has {x.ndim}")
    for i, (a, b) in enumerate(zip(idx.shape, x.shape)):
        if i != d and a > b:
            raise ValueError(f"gather: index shape {idx.shape} exceeds input shape {tuple(x.shape)} in dim {i}")
    if idx.size and (idx.min() < 0 or idx.max() >= x.shape[d]):
        raise IndexError(
            f"gather: index values must be in [0, {x.shape[d]}) for dim {d} of shape {tuple(x.shape)}; "
            f"got values in [{idx.min()}, {idx.max()}]"
        )
    return Gather.apply(x, d, index if idx.dtype == np.int64 else Tensor._wrap(idx.astype(np.int64)))


def tril(x, diagonal=0):
    _need_matrix(x, "tril")
    return Triangle.apply(x, diagonal, True)


def triu(x, diagonal=0):
    _need_matrix(x, "triu")
    return Triangle.apply(x, diagonal, False)


def _need_matrix(x, op):
    if x.ndim < 2:
        raise ValueError(f"{op}: input must have at least 2 dims, got shape {tuple(x.shape)}")


def pad(x, pad, mode="constant", value=0.0):
    """Like torch.nn.functional.pad: `pad` lists (left, right) for the last dim, then the one before, ..."""
    if mode != "constant":
        raise ValueError(f"pad: only mode='constant' is supported, got {mode!r}")
    pad = size_arg(pad, "pad")
    if len(pad) % 2 or len(pad) // 2 > x.ndim:
        raise ValueError(f"pad: expected an even number of pads, at most 2 per dim ({x.ndim} dims), got {pad}")
    if any(p < 0 for p in pad):
        raise ValueError(f"pad: negative padding is not supported, got {pad}")
    widths = [(0, 0)] * x.ndim
    for i in range(len(pad) // 2):
        widths[x.ndim - 1 - i] = (pad[2 * i], pad[2 * i + 1])
    return Pad.apply(x, tuple(widths), value)


def flip(x, dims):
    dims = tuple(normalize_dim(d, x.ndim, "flip") for d in (dims if isinstance(dims, (tuple, list)) else (dims,)))
    return _mark_view(Flip.apply(x, dims), x)
