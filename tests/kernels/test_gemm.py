"""GEMM against float64 numpy on shapes that stress the blocking: 1, primes, sizes straddling MR/NR/KC/MC,
size 0, long K; both dtypes, both transposes, strided/negative/broadcast operands, every ISA path, alpha/beta,
and canaries around C (contiguous and strided)."""
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minitensor.backend import numpy_ref

from .conftest import Canaried, rtol_for, supported_isas

# sizes around the blocking parameters (MR 4/6, NR 8/16/32, KC 128/256, MC 120/240/480), primes, 0 and 1
EDGE_SIZES = [0, 1, 2, 3, 5, 6, 7, 13, 16, 17, 31, 32, 33, 47, 97, 127, 128, 129, 241]
sizes = st.sampled_from(EDGE_SIZES)


def reference(a, b, ta, tb, alpha=1.0, beta=0.0, c0=None):
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    a64 = np.swapaxes(a64, -1, -2) if ta else a64
    b64 = np.swapaxes(b64, -1, -2) if tb else b64
    out = alpha * (a64 @ b64)
    return out if beta == 0 else out + beta * c0.astype(np.float64)


def bound(a, b, ta, tb, k, dtype):
    """Elementwise error bound k * u * (|A| @ |B|) (+ a tiny absolute floor)."""
    return rtol_for(dtype, k) * np.abs(reference(np.abs(a), np.abs(b), ta, tb)) + 1e-30


def layout(rng, shape, dtype, kind):
    """An operand of `shape` in a given memory layout, same values whatever the layout."""
    base = rng.standard_normal(shape).astype(dtype)
    if kind == "contiguous":
        return base
    if kind == "fortran":
        return np.asfortranarray(base)
    if kind == "strided":  # every other column of a wider array
        wide = np.zeros(shape[:-1] + (2 * shape[-1] + 1,), dtype=dtype)
        wide[..., : 2 * shape[-1]: 2] = base
        return wide[..., : 2 * shape[-1]: 2]
    if kind == "negative":
        return np.flip(np.flip(base, -1).copy(), -1)
    raise ValueError(kind)


@given(m=sizes, n=sizes, k=st.sampled_from(EDGE_SIZES + [255, 256, 257, 300, 1100]), dtype=st.sampled_from([np.float32, np.float64]),
       ta=st.booleans(), tb=st.booleans(), la=st.sampled_from(["contiguous", "fortran", "strided", "negative"]),
       lb=st.sampled_from(["contiguous", "fortran", "strided", "negative"]), isa=st.sampled_from(supported_isas()),
       gap=st.sampled_from([0, 3]))
@example(m=241, n=129, k=1100, dtype=np.float32, ta=False, tb=False, la="contiguous", lb="contiguous", isa="avx512", gap=0)
@settings(max_examples=120)
def test_gemm_matches_reference(C, m, n, k, dtype, ta, tb, la, lb, isa, gap):
    if isa not in supported_isas():
        isa = supported_isas()[-1]
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a = layout(rng, (k, m) if ta else (m, k), dtype, la)
    b = layout(rng, (n, k) if tb else (k, n), dtype, lb)
    out = Canaried((m, n), dtype, gap=gap)
    C.gemm(a, b, out.array, trans_a=ta, trans_b=tb, isa=isa)
    out.check()
    err = np.abs(out.array - reference(a, b, ta, tb))
    assert (err <= bound(a, b, ta, tb, k, dtype)).all(), f"max error {err.max()}"


@given(alpha=st.sampled_from([1.0, -0.5, 2.0]), beta=st.sampled_from([0.0, 1.0, 0.25]),
       dtype=st.sampled_from([np.float32, np.float64]))
def test_gemm_alpha_beta(C, alpha, beta, dtype):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((37, 300)).astype(dtype), rng.standard_normal((300, 19)).astype(dtype)
    out = Canaried((37, 19), dtype)
    c0 = rng.standard_normal((37, 19)).astype(dtype)
    out.array[...] = c0
    C.gemm(a, b, out.array, alpha=alpha, beta=beta)
    out.check()
    expected = reference(a, b, False, False, alpha, beta, c0)
    np.testing.assert_allclose(out.array, expected, rtol=rtol_for(dtype, 300) * 10, atol=rtol_for(dtype, 300) * 30)


@given(m=sizes, n=sizes, k=st.sampled_from([0, 1, 16, 64, 300]), dtype=st.sampled_from([np.float32, np.float64]),
       tb=st.booleans(), beta=st.sampled_from([0.0, 1.0]), gap=st.sampled_from([0, 3]),
       c_layout=st.sampled_from(["rows", "columns"]), batch=st.sampled_from([(), (3,)]),
       isa=st.sampled_from(supported_isas()), threads=st.sampled_from([1, 2]),
       activation=st.sampled_from(["none", "gelu"]))
@example(m=241, n=129, k=300, dtype=np.float32, tb=True, beta=0.0, gap=0, c_layout="rows", batch=(), isa="avx512",
         threads=2, activation="none")  # a parallel product whose bias must be added once, with the first k block
@example(m=241, n=129, k=300, dtype=np.float32, tb=False, beta=1.0, gap=0, c_layout="columns", batch=(),
         isa="avx512", threads=2, activation="gelu")  # GELU once, after the last k block, strided C
@settings(max_examples=80)
def test_gemm_bias_epilogue(C, m, n, k, dtype, tb, beta, gap, c_layout, batch, isa, threads, activation):
    # c = act(a @ op(b) + beta * c + bias): the bias added to every row as the tiles are stored (Linear's forward)
    # and GELU applied to each finished block (activation="gelu"), on every ISA, with row-major or transposed
    # (strided) C, edge tiles and K = 0
    if isa not in supported_isas():
        isa = supported_isas()[-1]
    rng = np.random.default_rng(m * 7 + n * 3 + k)
    a = rng.standard_normal(batch + (m, k)).astype(dtype)
    b = rng.standard_normal(batch + ((n, k) if tb else (k, n))).astype(dtype)
    bias = rng.standard_normal(n).astype(dtype)
    c0 = rng.standard_normal(batch + (m, n)).astype(dtype)
    if c_layout == "rows":
        out = Canaried(batch + (m, n), dtype, gap=gap)
        c = out.array
    else:  # C transposed in memory: the micro-kernel's element-by-element store
        out = Canaried(batch + (n, m), dtype, gap=gap)
        c = np.swapaxes(out.array, -1, -2)
    c[...] = c0
    previous = C.get_num_threads()
    C.set_num_threads(threads)
    try:
        C.gemm(a, b, c, trans_b=tb, beta=beta, bias=bias, isa=isa, activation=activation)
    finally:
        C.set_num_threads(previous)
    out.check()
    expected = reference(a, b, False, tb) + beta * c0.astype(np.float64) + bias
    tol = rtol_for(dtype, k + 2) * (np.abs(reference(np.abs(a), np.abs(b), False, tb)) + np.abs(c0) + np.abs(bias))
    if activation == "gelu":  # |gelu'| <= 1.13; the float32 GELU's own error (test_activations) on top
        expected = numpy_ref.gelu(expected)
        tol = 1.13 * tol + 64 * np.finfo(dtype).eps * (np.abs(expected) + 1)
    assert (np.abs(c - expected) <= tol + 1e-30).all()


def test_gemm_activation_must_be_known(C):
    with pytest.raises(ValueError, match="gemm: activation must be 'none' or 'gelu', got 'relu'"):
        C.gemm(np.ones((3, 4), np.float32), np.ones((4, 5), np.float32), np.empty((3, 5), np.float32), activation="relu")


def test_gemm_bias_must_match_c(C):
    a, b = np.ones((3, 4), np.float32), np.ones((4, 5), np.float32)
    c = np.empty((3, 5), np.float32)
    with pytest.raises(ValueError, match=r"gemm: bias must be a contiguous 1-D array of 5 elements.*got \(4,\)"):
        C.gemm(a, b, c, bias=np.ones(4, np.float32))
    with pytest.raises(ValueError, match=r"gemm: bias must be a contiguous 1-D array"):
        C.gemm(a, b, c, bias=np.ones(10, np.float32)[::2])
    with pytest.raises(TypeError, match="gemm: bias has dtype float64, expected float32"):
        C.gemm(a, b, c, bias=np.ones(5, np.float64))


def test_gemm_beta_zero_ignores_garbage_in_c(C):
    a, b = np.ones((5, 4), np.float32), np.ones((4, 3), np.float32)
    out = np.full((5, 3), np.nan, np.float32)
    C.gemm(a, b, out)
    np.testing.assert_array_equal(out, np.full((5, 3), 4.0, np.float32))


@given(batch=st.sampled_from([(1,), (3,), (2, 3), (256,)]), m=st.sampled_from([1, 17, 65]),
       k=st.sampled_from([1, 16, 64]), n=st.sampled_from([1, 17, 65]), broadcast=st.sampled_from(["none", "a", "b"]),
       dtype=st.sampled_from([np.float32, np.float64]))
@example(batch=(1,), m=1, k=16, n=1, broadcast="none", dtype=np.float32)  # size-1 dims get stride 0 from
# broadcast_to: once read as "A is packed" (a stride-0 sentinel), which read past A
@settings(max_examples=30)
def test_batched_gemm_with_broadcast_batch_dims(C, batch, m, k, n, broadcast, dtype):
    rng = np.random.default_rng(1)
    a = rng.standard_normal((1,) * len(batch) + (m, k) if broadcast == "a" else batch + (m, k)).astype(dtype)
    b = rng.standard_normal((1,) * len(batch) + (k, n) if broadcast == "b" else batch + (k, n)).astype(dtype)
    out = Canaried(batch + (m, n), dtype)
    C.gemm(np.broadcast_to(a, batch + (m, k)), np.broadcast_to(b, batch + (k, n)), out.array)
    out.check()
    err = np.abs(out.array - reference(a, b, False, False))
    assert (err <= rtol_for(dtype, k) * np.abs(reference(np.abs(a), np.abs(b), False, False)) + 1e-30).all()


def test_gemm_errors_name_op_and_shapes(C):
    a, b = np.ones((3, 4), np.float32), np.ones((5, 2), np.float32)
    with pytest.raises(ValueError, match=r"gemm: shapes a \(3, 4\).*b \(5, 2\).*c \(3, 2\)"):
        C.gemm(a, b, np.empty((3, 2), np.float32))
    with pytest.raises(TypeError, match="gemm: a has dtype float64, expected float32"):
        C.gemm(a.astype(np.float64), np.ones((4, 2), np.float32), np.empty((3, 2), np.float32))
    with pytest.raises(TypeError, match="must be float32 or float64"):
        C.gemm(a, b, np.empty((3, 2), np.int64))
    with pytest.raises(ValueError, match="read-only"):
        C.gemm(a, np.ones((4, 2), np.float32), np.broadcast_to(np.empty((1, 2), np.float32), (3, 2)))
    with pytest.raises(ValueError, match="does not support isa|isa must be"):
        C.gemm(a, np.ones((4, 2), np.float32), np.empty((3, 2), np.float32), isa="avx1024")


def test_gemm_refuses_misaligned_and_odd_strides(C):
    raw = np.zeros(4 * 13 + 1, dtype=np.uint8)
    misaligned = np.frombuffer(raw.data, dtype=np.float32, count=12, offset=1).reshape(3, 4)
    with pytest.raises(ValueError, match="not aligned"):
        C.gemm(misaligned, np.ones((4, 2), np.float32), np.empty((3, 2), np.float32))


def test_native_matmul_copies_misaligned_inputs_once():
    from minitensor.backend import native

    raw = np.zeros(4 * 13 + 1, dtype=np.uint8)
    misaligned = np.frombuffer(raw.data, dtype=np.float32, count=12, offset=1).reshape(3, 4)
    b = np.arange(8, dtype=np.float32).reshape(4, 2)
    np.testing.assert_array_equal(native.matmul(misaligned, b), misaligned @ b)


def test_gemm_with_empty_output_writes_nothing(C):
    # numpy gives empty arrays arbitrary (even zero) strides; an empty C must simply be left alone
    for c in (np.empty((0, 4), np.float32), np.broadcast_to(np.empty((1, 4), np.float32), (0, 4)).copy()):
        C.gemm(np.ones((0, 3), np.float32), np.ones((3, 4), np.float32), c)
    from minitensor.backend import native

    assert native.matmul(np.ones((0, 3)), np.ones((3, 4))).shape == (0, 4)


GUARD_CHILD = r"""
import ctypes, mmap, sys
import numpy as np
from minitensor import _C

libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
PAGE = mmap.PAGESIZE


def before_guard(shape, dtype, rng):
    # an array whose last byte is the last byte before an unmapped page: reading one element past it faults
    nbytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
    pages = (nbytes + PAGE - 1) // PAGE + 1
    base = libc.mmap(None, pages * PAGE, mmap.PROT_READ | mmap.PROT_WRITE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    assert libc.mprotect(base + (pages - 1) * PAGE, PAGE, 0) == 0  # PROT_NONE
    start = base + (pages - 1) * PAGE - nbytes
    buf = (ctypes.c_char * nbytes).from_address(start)
    out = np.frombuffer(buf, dtype=dtype).reshape(shape)
    out[...] = rng.standard_normal(shape)
    return out


rng = np.random.default_rng(0)
for isa in _C.info()["isa_supported"]:
    for dtype in (np.float32, np.float64):
        for batch, m, k, n in [((), 17, 16, 17), ((), 5, 3, 1), ((), 33, 7, 19), ((), 6, 16, 33), ((4,), 17, 16, 17),
                               ((), 13, 64, 63), ((), 129, 40, 47), ((), 17, 17, 16), ((), 4, 9, 8)]:
            a = before_guard(batch + (m, k), dtype, rng)
            b = before_guard(batch + (k, n), dtype, rng)
            c = np.empty(batch + (m, n), dtype)
            _C.gemm(a, b, c, isa=isa)
            np.testing.assert_allclose(c, a.astype(np.float64) @ b.astype(np.float64), rtol=1e-4, atol=1e-4)
print("ok")
"""


def test_gemm_reads_nothing_past_its_operands(C):
    # A and B each end right before an unmapped page, in the shapes where the kernel reads them in place (small
    # row-major products: B with masked loads for its last columns): one element read past either would crash.
    # A child process, so a crash is a failed test rather than a dead test run.
    import subprocess
    import sys

    done = subprocess.run([sys.executable, "-c", GUARD_CHILD], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.strip() == "ok", (done.returncode, done.stdout, done.stderr[-2000:])
