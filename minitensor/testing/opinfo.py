"""OpInfo: how an op declares itself to the generic tests (in the spirit of PyTorch's OpInfo).

An entry says how to call the op, what it should compute (a numpy reference and, optionally, the PyTorch
equivalent), and which inputs make sense (a hypothesis strategy of `Sample`s: float64 arrays for the tensor
arguments plus keyword arguments). From that alone, tests/ops/test_op_db.py checks the forward against the
reference on contiguous and strided inputs, vector-Jacobian products against finite differences, the full
Jacobian on tiny inputs, second derivatives, gradient shapes, no mutation of inputs or grad_output, size-0
inputs, both backends; tests/ops/test_parity_torch.py checks values and gradients against PyTorch.
"""
from dataclasses import dataclass, field
from typing import Any, Callable, NamedTuple, Optional, Tuple

import numpy as np
from hypothesis import strategies as st

from . import strategies as mts


class Sample(NamedTuple):
    arrays: Tuple[np.ndarray, ...]  # the tensor arguments, as float64 arrays (positional)
    kwargs: dict                    # everything else: dims, masks, index arrays, scalars


@dataclass
class OpInfo:
    name: str
    op: Callable[..., Any]                     # op(*tensors, **kwargs) -> Tensor
    ref: Callable[..., np.ndarray]             # ref(*arrays, **kwargs) -> array (computed in float64)
    sample: st.SearchStrategy                  # strategy of Sample
    tiny_sample: Optional[st.SearchStrategy] = None  # small inputs for the full-Jacobian check (default: sample)
    torch_op: Optional[Callable[..., Any]] = None    # torch_op(*torch_tensors, **kwargs); None: no parity test
    differentiable: Tuple[int, ...] = None     # indices of the arrays that get gradients (default: all)
    twice_differentiable: bool = True
    supports_size0: bool = True                # may sample() produce empty tensors?
    dtypes: Tuple[np.dtype, ...] = (np.dtype(np.float64), np.dtype(np.float32))
    float32_tol: Tuple[float, float] = (1e-5, 1e-5)   # (rtol, atol) for float32 forward vs the float64 reference
    grad_tol: Tuple[float, float] = (1e-4, 1e-6)      # (rtol, atol) for float64 gradient checks
    extra: dict = field(default_factory=dict)

    def diff_indices(self, sample):
        return self.differentiable if self.differentiable is not None else tuple(range(len(sample.arrays)))


# ---------------------------------------------------------------------------- sample builders
def unary(low=-2.0, high=2.0, avoid=(), min_side=0, max_dims=3, kwargs=None):
    """One tensor of any shape (size-0 dims when min_side=0)."""
    return st.builds(
        lambda a, kw: Sample((a,), kw),
        mts.arrays(mts.shapes(0, max_dims, min_side, 4), low, high, avoid),
        st.just(kwargs or {}) if not isinstance(kwargs, st.SearchStrategy) else kwargs,
    )


@st.composite
def binary(draw, low=(-2.0, -2.0), high=(2.0, 2.0), avoid=((), ()), min_side=0, max_dims=3):
    """Two tensors whose shapes broadcast together."""
    sa, sb = draw(mts.broadcastable_shapes(2, 0, max_dims, min_side, 4))
    a = draw(mts.arrays(sa, low[0], high[0], avoid[0]))
    b = draw(mts.arrays(sb, low[1], high[1], avoid[1]))
    return Sample((a, b), {})


@st.composite
def reduction(draw, low=-2.0, high=2.0, min_side=1, allow_none=True, allow_tuple=True, keepdim=True, max_dims=3):
    """One tensor plus `dim` (None, int or tuple) and `keepdim`."""
    shape = draw(mts.shapes(0, max_dims, min_side, 4))
    dim = draw(mts.dims(len(shape), allow_none=allow_none or len(shape) == 0, allow_tuple=allow_tuple))
    kw = {"dim": dim}
    if keepdim:
        kw["keepdim"] = draw(st.booleans())
    return Sample((draw(mts.arrays(shape, low, high)),), kw)


@st.composite
def last_dim(draw, low=-3.0, high=3.0, min_dims=1, max_dims=3):
    """One tensor (at least 1-D, no empty dims) plus a `dim` for ops like softmax."""
    shape = draw(mts.shapes(min_dims, max_dims, 1, 5))
    dim = draw(st.integers(-len(shape), len(shape) - 1))
    return Sample((draw(mts.arrays(shape, low, high)),), {"dim": dim})


def tiny(strategy_fn, **kwargs):
    """The same sample builder restricted to tensors of at most 2 dims of size <= 3 (full Jacobians are cheap)."""
    return strategy_fn(max_dims=2, **kwargs)


def reduce_dims(dim, ndim):
    """numpy's axis argument for a minitensor dim (None, int or tuple)."""
    if dim is None:
        return None
    if isinstance(dim, tuple):
        return tuple(d % ndim for d in dim)
    return dim % ndim if ndim else None
