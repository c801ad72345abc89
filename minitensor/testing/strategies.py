"""Hypothesis strategies shared by every test: shapes, broadcastable shapes, bounded arrays that avoid kinks,
memory layouts, index arrays and masks.

    from hypothesis import given
    from minitensor.testing import strategies as mts

    @given(mts.arrays(mts.shapes(max_dims=3), low=-2, high=2, avoid=(0.0,)))
    def test_relu(a): ...

Values are drawn as floats in [low, high]; `avoid` lists points where an op has a kink or a pole (relu and
abs at 0, log at 0, ...), and values closer than `margin` to one are pushed `margin` away, so finite
differences never straddle a kink.
"""
import numpy as np
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from ..tensor import Tensor


def shapes(min_dims=0, max_dims=3, min_side=1, max_side=4):
    """Array shapes; with min_side=0 some dims may be empty (size-0 tensors)."""
    return hnp.array_shapes(min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side)


def broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=3, min_side=1, max_side=4):
    """Tuples of `num_shapes` shapes that broadcast together (some dims 1, some missing)."""
    return hnp.mutually_broadcastable_shapes(
        num_shapes=num_shapes, min_dims=min_dims, max_dims=max_dims, min_side=min_side, max_side=max_side
    ).map(lambda bs: bs.input_shapes)


def push_away(values, avoid, margin):
    """Move values that lie within `margin` of a point in `avoid` to that point ± margin."""
    values = np.array(values, dtype=np.float64, copy=True)
    for p in avoid:
        near = np.abs(values - p) < margin
        values[near] = np.where(values[near] >= p, p + margin, p - margin)
    return values


@st.composite
def arrays(draw, shape, low=-2.0, high=2.0, avoid=(), margin=0.05, dtype=np.float64):
    """A float array of `shape` (a shape or a strategy of shapes) with values in [low, high], away from `avoid`.

    Drawn through a seed (not element by element), so large arrays stay cheap for hypothesis; the seed still
    shrinks, and small values/shapes come first.
    """
    if isinstance(shape, st.SearchStrategy):
        shape = draw(shape)
    seed = draw(st.integers(0, 2**32 - 1))
    values = np.random.default_rng(seed).uniform(low, high, size=shape)
    return push_away(values, avoid, margin).astype(dtype)


def layouts():
    """Names of memory layouts that `as_layout` can give an array without changing its values."""
    return st.sampled_from(["contiguous", "fortran", "strided", "reversed"])


def as_layout(a, layout):
    """The same values as `a` in another memory layout: C order, Fortran order, every-other-element strides,
    or negative strides. Ops must give the same answers for all of them."""
    if layout == "contiguous" or a.ndim == 0:
        return np.array(a, order="C")  # (np.ascontiguousarray would turn a 0-d array into 1-d)
    if layout == "fortran":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(a.shape + (2,), dtype=a.dtype)
        big[..., 0] = a
        return big[..., 0]
    if layout == "reversed":
        return np.flip(np.flip(a, axis=0).copy(), axis=0)
    raise ValueError(f"as_layout: unknown layout {layout!r}")


def tensors(shape, low=-2.0, high=2.0, avoid=(), dtype=np.float64, requires_grad=False):
    """minitensor Tensors built from `arrays(...)`."""
    return arrays(shape, low, high, avoid, dtype=dtype).map(lambda a: _tensor(a, requires_grad))


def _tensor(a, requires_grad):
    t = Tensor._wrap(a)
    if requires_grad:
        t.requires_grad = True
    return t


@st.composite
def index_arrays(draw, size, max_len=5, allow_negative=True):
    """An int64 index array into a dim of `size` (repeats allowed, negatives allowed if asked)."""
    n = draw(st.integers(0, max_len))
    low = -size if allow_negative else 0
    return np.array(draw(st.lists(st.integers(low, size - 1), min_size=n, max_size=n)), dtype=np.int64)


@st.composite
def bool_masks(draw, shape):
    """A boolean mask of `shape`."""
    seed = draw(st.integers(0, 2**32 - 1))
    return np.asarray(np.random.default_rng(seed).random(shape) < 0.5)


@st.composite
def dims(draw, ndim, allow_none=True, allow_tuple=True):
    """A dim argument for a reduction over an `ndim`-dim tensor: None, an int (maybe negative) or a tuple."""
    options = []
    if allow_none:
        options.append(st.none())
    if ndim > 0:
        options.append(st.integers(-ndim, ndim - 1))
        if allow_tuple:
            options.append(st.lists(st.integers(0, ndim - 1), min_size=1, max_size=ndim, unique=True).map(tuple))
    if not options:
        return None
    return draw(st.one_of(*options))
