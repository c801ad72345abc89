"""Thread safety and determinism: results are bitwise identical for 1 and 2 threads (every kernel, the
reductions included: they sum fixed-size chunks in a fixed order), and kernels called from several Python
threads at once (the GIL is released inside) give correct results."""
import threading

import numpy as np
import pytest

import minitensor as mt

from .conftest import _C


def run_all(C, rng_seed=0):
    rng = np.random.default_rng(rng_seed)
    out = {}
    a, b = rng.standard_normal((300, 257)).astype(np.float32), rng.standard_normal((257, 190)).astype(np.float32)
    c = np.empty((300, 190), np.float32)
    C.gemm(a, b, c)
    out["gemm"] = c
    # a long K (a weight gradient, gᵀ @ x): each thread computes whole rows, or whole columns, of C on its own
    g, xs = rng.standard_normal((1100, 96)).astype(np.float32), rng.standard_normal((1100, 70)).astype(np.float32)
    by_rows, by_cols = np.empty((96, 70), np.float32), np.empty((70, 96), np.float32)
    C.gemm(g.T, xs, by_rows, bias=rng.standard_normal(70).astype(np.float32))
    C.gemm(xs.T, g, by_cols, bias=rng.standard_normal(96).astype(np.float32))
    out.update(gemm_long_k_rows=by_rows, gemm_long_k_cols=by_cols)
    big = rng.standard_normal((2, 300001)).astype(np.float32)
    out["add"] = np.empty(300001, np.float32)
    C.add(big[0], big[1], out["add"])
    q, k = rng.standard_normal((256, 17, 16)).astype(np.float32), rng.standard_normal((256, 16, 17)).astype(np.float32)
    s = np.empty((256, 17, 17), np.float32)
    C.gemm(q, k, s)
    out["batched"] = s
    x = rng.standard_normal((4096, 65)).astype(np.float32)
    y = np.empty_like(x)
    C.softmax_forward(x, y)
    out["softmax"] = y.copy()
    dx = np.empty_like(x)
    C.softmax_backward(y, x, dx)
    out["softmax_backward"] = dx
    w, bias = rng.standard_normal(65).astype(np.float32), rng.standard_normal(65).astype(np.float32)
    ln, mean, rstd = np.empty_like(x), np.empty(4096, np.float32), np.empty(4096, np.float32)
    C.layer_norm_forward(x, w, bias, 1e-5, ln, mean, rstd)
    out["layer_norm"] = ln
    gx, gw, gb = np.empty_like(x), np.empty(65, np.float32), np.empty(65, np.float32)
    C.layer_norm_backward(y, x, mean, rstd, w, gx, gw, gb)
    out.update(ln_dx=gx, ln_dw=gw, ln_db=gb)
    img, wt = rng.standard_normal((16, 3, 12, 12)).astype(np.float32), rng.standard_normal((8, 3, 3, 3)).astype(np.float32)
    conv = np.empty((16, 8, 12, 12), np.float32)
    C.conv2d_forward(img, wt, None, [1, 1], [1, 1], [1, 1], conv)
    out["conv"] = conv
    cdx, cdw, cdb = np.empty_like(img), np.empty_like(wt), np.empty(8, np.float32)
    C.conv2d_backward(conv, img, wt, [1, 1], [1, 1], [1, 1], cdx, cdw, cdb)
    out.update(conv_dx=cdx, conv_dw=cdw, conv_db=cdb)
    gates, cell = rng.standard_normal((203, 4 * 67)).astype(np.float32), rng.standard_normal((203, 67)).astype(np.float32)
    h, c_next = np.empty_like(cell), np.empty_like(cell)
    C.lstm_cell_forward(gates, cell, h, c_next)
    d_gates, d_cell = np.empty_like(gates), np.empty_like(cell)
    C.lstm_cell_backward(gates, cell, h, c_next, d_gates, d_cell)
    out.update(lstm_h=h, lstm_c=c_next, lstm_d_gates=d_gates, lstm_d_c=d_cell)
    return out


def test_one_and_two_threads_give_bitwise_identical_results(C):
    if not C.info()["openmp"]:
        pytest.skip("built without OpenMP: kernels are single-threaded, nothing to compare")
    before = mt.get_num_threads()
    try:
        mt.set_num_threads(1)
        single = run_all(C)
        mt.set_num_threads(2)
        double = run_all(C)
    finally:
        mt.set_num_threads(before)
    for name in single:
        np.testing.assert_array_equal(single[name], double[name], err_msg=f"{name} depends on the thread count")


def test_kernels_from_several_python_threads(C):
    expected = run_all(C, rng_seed=7)
    results, errors = [None] * 4, []

    def worker(i):
        try:
            results[i] = run_all(C, rng_seed=7)
        except Exception as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for r in results:
        for name in expected:
            np.testing.assert_array_equal(r[name], expected[name])


def test_set_num_threads_validates():
    with pytest.raises(ValueError, match="positive"):
        mt.set_num_threads(0)
    if _C is not None:
        assert mt.backend_info()["threads"] == mt.get_num_threads()


def _isa_in_subprocess(value):
    import os
    import subprocess
    import sys

    env = dict(os.environ, MINITENSOR_ISA=value)
    return subprocess.run([sys.executable, "-c", "import minitensor as mt; print(mt.backend_info()['isa'])"],
                          env=env, capture_output=True, text=True, timeout=120)


def test_minitensor_isa_caps_the_path(C):
    supported = C.info()["isa_supported"]
    for isa in supported:
        out = _isa_in_subprocess(isa)
        assert out.returncode == 0 and out.stdout.split() == [isa], out.stderr
    if "avx512" not in supported:  # a cap above what the CPU has never raises the path
        out = _isa_in_subprocess("avx512")
        assert out.stdout.split() == [supported[-1]], out.stderr
    # an unknown value: test_boundary.py::test_a_bad_environment_variable_stops_every_kernel_until_set_backend


def test_kernels_flush_subnormals_and_leave_the_callers_mode_alone(C):
    """Kernels run with subnormals flushed to zero (FlushSubnormals in common.h); the calling thread's mode is
    restored, so numpy arithmetic afterwards still produces subnormals."""
    tiny = np.float32(1e-39)  # subnormal in float32
    a = np.full((1, 1), tiny, np.float32)
    out = np.empty((1, 1), np.float32)
    C.gemm(a, np.ones((1, 1), np.float32), out)
    assert out[0, 0] == 0.0  # flushed inside the kernel
    assert np.multiply(np.float32(1e-38), np.float32(0.1)) != 0.0  # still subnormal out here
    assert (np.array([1e-38], np.float32) * np.float32(0.1))[0] != 0.0


def test_minitensor_malloc_setting(C):
    import os
    import platform
    import subprocess
    import sys

    def run(value):
        env = dict(os.environ, MINITENSOR_MALLOC=value)
        return subprocess.run([sys.executable, "-c", "import minitensor as mt; print(mt.backend_info()['malloc'])"],
                              env=env, capture_output=True, text=True, timeout=120)

    # glibc's malloc takes the setting; another allocator (AddressSanitizer's, in .ci/sanitize.sh) refuses it
    glibc = platform.libc_ver()[0] == "glibc" and "asan" not in os.environ.get("LD_PRELOAD", "")
    out = run("retain")
    assert out.returncode == 0 and out.stdout.split() == ["retain" if glibc else "default"], out.stderr
    out = run("default")
    assert out.returncode == 0 and out.stdout.split() == ["default"], out.stderr
    # an unknown value: test_boundary.py::test_a_bad_environment_variable_stops_every_kernel_until_set_backend
