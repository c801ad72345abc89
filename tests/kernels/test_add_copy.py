"""The threaded add and copy (minitensor._C.add / copy, elementwise.cpp) and their use by the ops (native.add,
assign, contiguous): exact, whatever the size, strides or thread count, with canaries around the output;
everything but big same-shape float arrays goes to numpy."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minitensor.backend import native, numpy_ref

from .conftest import Canaried


@given(n=st.sampled_from([0, 1, 7, 16384, 131071, 131072, 300001]), dtype=st.sampled_from([np.float32, np.float64]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 16))
@settings(max_examples=30)
def test_add_is_exact(C, n, dtype, threads, seed):
    rng = np.random.default_rng(seed)
    a, b = rng.standard_normal(n).astype(dtype), rng.standard_normal(n).astype(dtype)
    out = Canaried((n,), dtype)
    previous = C.get_num_threads()
    C.set_num_threads(threads)
    try:
        C.add(a, b, out.array)
    finally:
        C.set_num_threads(previous)
    out.check()
    np.testing.assert_array_equal(out.array, a + b)  # one rounding per element, as numpy's


def test_add_errors_name_the_op(C):
    a = np.ones((3, 4), np.float32)
    with pytest.raises(ValueError, match=r"add: a \(3, 4\) and b \(4, 3\) must have the same shape"):
        C.add(a, np.ones((4, 3), np.float32), np.empty_like(a))
    with pytest.raises(TypeError, match="add: b has dtype float64, expected float32"):
        C.add(a, np.ones((3, 4)), np.empty_like(a))
    with pytest.raises(ValueError, match="add"):
        C.add(a, a, np.empty((2, 2), np.float32))


@pytest.mark.parametrize("case", ["same shape", "broadcast", "strided", "int", "mixed dtypes"])
def test_native_add_matches_numpy_on_every_kind_of_input(C, case):
    rng = np.random.default_rng(0)
    big = (64, 65, 128)
    a = rng.standard_normal(big).astype(np.float32)
    b = {"same shape": rng.standard_normal(big).astype(np.float32),
         "broadcast": rng.standard_normal(big[-1]).astype(np.float32),
         "strided": rng.standard_normal((64, 65, 256)).astype(np.float32)[..., ::2],
         "int": np.arange(np.prod(big)).reshape(big),
         "mixed dtypes": rng.standard_normal(big)}[case]
    if case == "int":
        a = np.ones(big, dtype=np.int64)
    got, expected = native.add(a, b), numpy_ref.add(a, b)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_array_equal(got, expected)


@given(shape=st.sampled_from([(), (0, 3), (7,), (64, 65, 4, 32), (3, 1, 300)]), dtype=st.sampled_from([np.float32, np.float64]),
       src_layout=st.sampled_from(["contiguous", "transposed", "reversed", "broadcast"]), gap=st.sampled_from([0, 2]),
       threads=st.sampled_from([1, 2]), seed=st.integers(0, 2 ** 16))
@settings(max_examples=40)
def test_copy_any_strides(C, shape, dtype, src_layout, gap, threads, seed):
    rng = np.random.default_rng(seed)
    src = rng.standard_normal(shape).astype(dtype)
    if src_layout == "transposed" and src.ndim >= 2:
        src = np.ascontiguousarray(np.swapaxes(src, 0, -1)).swapaxes(0, -1)
    elif src_layout == "reversed" and src.ndim >= 1:
        src = np.ascontiguousarray(src[..., ::-1])[..., ::-1]
    elif src_layout == "broadcast" and src.ndim >= 1:
        src = np.broadcast_to(src[..., :1], shape)
    out = Canaried(shape, dtype, gap=gap if len(shape) else 0)  # a strided destination (rows spaced out)
    previous = C.get_num_threads()
    C.set_num_threads(threads)
    try:
        C.copy(src, out.array)
    finally:
        C.set_num_threads(previous)
    out.check()
    np.testing.assert_array_equal(out.array, src)


def test_copy_errors_name_the_op(C):
    with pytest.raises(ValueError, match=r"copy: src \(3, 4\) and dst \(4, 3\) must have the same shape"):
        C.copy(np.ones((3, 4), np.float32), np.empty((4, 3), np.float32))
    with pytest.raises(TypeError, match="copy: src has dtype float64, expected float32"):
        C.copy(np.ones((3, 4)), np.empty((3, 4), np.float32))
    with pytest.raises(ValueError, match="read-only"):
        C.copy(np.ones(3, np.float32), np.broadcast_to(np.empty(1, np.float32), (3,)))


def test_native_assign_and_contiguous_match_numpy(C):
    rng = np.random.default_rng(0)
    big = rng.standard_normal((64, 65, 128)).astype(np.float32)
    view = big.transpose(1, 0, 2)
    got = native.contiguous(view)
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, np.ascontiguousarray(view))
    assert native.contiguous(big) is big
    dst = np.zeros((65, 64, 256), np.float32)
    native.assign(dst[..., ::2], view)  # a strided destination
    np.testing.assert_array_equal(dst[..., ::2], view)
    assert not dst[..., 1::2].any()
    small = np.zeros(3)
    native.assign(small, 2)  # numpy's broadcasting for what the kernel does not take
    np.testing.assert_array_equal(small, [2, 2, 2])
