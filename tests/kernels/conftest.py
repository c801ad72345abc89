"""Kernel tests call minitensor._C directly. Every output buffer is surrounded by canaries (`canaried`), so a
kernel writing one element past its bounds fails the test; .ci/run also runs these tests against a build
with -fsanitize=address,undefined."""
import numpy as np
import pytest

try:
    from minitensor import _C
except ImportError:  # no compiler at install time
    _C = None

SENTINEL = 1234.5678  # no kernel computes this by accident in these tests
PAD = 64


@pytest.fixture
def C():
    if _C is None:
        pytest.skip("minitensor._C is not built (no C++ compiler at install time): no native kernels to test")
    return _C


def supported_isas():
    return list(_C.info()["isa_supported"]) if _C is not None else ["scalar"]


class Canaried:
    """An output array living inside a bigger buffer filled with a sentinel; `check()` asserts nothing but
    the array itself was written. With `gap`, rows are spaced out (a strided output), gaps checked too."""

    def __init__(self, shape, dtype, gap=0):
        shape = tuple(shape)
        rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
        cols = shape[-1] if shape else 1
        self.buffer = np.full(2 * PAD + rows * (cols + gap), SENTINEL, dtype=dtype)
        inner = self.buffer[PAD: PAD + rows * (cols + gap)].reshape(rows, cols + gap)[:, :cols]
        self.array = inner.reshape(shape)
        assert self.array.size == 0 or np.shares_memory(self.array, self.buffer), "Canaried: not a view into the buffer"
        self.mask = np.ones(self.buffer.shape, dtype=bool)
        self.mask[PAD: PAD + rows * (cols + gap)].reshape(rows, cols + gap)[:, :cols] = False

    def check(self):
        outside = self.buffer[self.mask]
        bad = outside != self.buffer.dtype.type(SENTINEL)
        assert not bad.any(), f"kernel wrote {int(bad.sum())} element(s) outside its output"


@pytest.fixture
def canaried():
    return Canaried


def rtol_for(dtype, k=1):
    """Tolerance for a result built from sums of k products: the standard bound |error| <= k * u * sum|terms|
    (u the unit roundoff), with a factor 4 for the different summation orders of kernel and reference."""
    u = np.finfo(dtype).eps / 2
    return 4 * max(k, 1) * u
