"""minitensor: a small, fast, honest deep-learning framework for the CPU.

Tensor and reverse-mode autograd over numpy storage, C++/OpenMP kernels where speed matters, and a
PyTorch-shaped API: `import minitensor as mt` and write what you would write with `torch`.
"""
from . import autograd, data, distributed, dtypes, nn, optim, profiler
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .backend import backend_info, get_backend, get_num_threads, set_backend, set_num_threads
from .creation import (
    arange, as_tensor, empty, empty_like, eye, from_dlpack, from_numpy, full, full_like, linspace, ones, ones_like,
    rand, rand_like, randint, randint_like, randn, randn_like, randperm, tensor, zeros, zeros_like,
)
from .dtypes import get_default_dtype, set_default_dtype
from .ops.elementwise import (
    abs, add, clamp, cos, div, eq, erf, exp, ge, gelu, gt, isfinite, isnan, le, log, logical_and, logical_not,
    logical_or, lt, masked_fill, maximum, minimum, mul, ne, neg, pow, relu, rsqrt, sigmoid, sign, sin, softplus,
    sqrt, sub, tanh, where,
)
from .ops.conv import conv2d
from .ops.linalg import bmm, matmul, mm
from .ops.nn import layer_norm, log_softmax, softmax
from .ops.reduction import all, amax, amin, any, argmax, argmin, logsumexp, max, mean, min, std, sum, var
from .ops.shape import (
    cat, chunk, flatten, flip, gather, narrow, permute, reshape, select, split, squeeze, stack, transpose, tril,
    triu, unbind, unflatten, unsqueeze,
)
from .random import Generator, default_generator, get_rng_state, initial_seed, manual_seed, seed, set_rng_state
from .tensor import Tensor
from .utils.checkpoint import load, save

float16 = half = dtypes.float16
float32 = float = dtypes.float32
float64 = double = dtypes.float64
int8 = dtypes.int8
int16 = dtypes.int16
int32 = int = dtypes.int32
int64 = long = dtypes.int64
uint8 = dtypes.uint8
bool = dtypes.bool_

clip = clamp
concat = concatenate = cat
divide = true_divide = div
multiply = mul
subtract = sub
negative = neg
swapaxes = transpose

__version__ = "0.1.0"
