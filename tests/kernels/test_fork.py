"""Fork safety: libgomp's thread pool does not survive fork(), so before the pthread_atfork handler in
csrc/bindings.cpp a kernel in a child forked after a 2-thread kernel waited forever for the pool's threads. The
child now runs kernels on one thread, and set_num_threads(n > 1) there raises RuntimeError. Each case runs in
a fresh interpreter under a timeout, so a hang fails the test instead of hanging the suite."""
import os
import subprocess
import sys
import textwrap

import pytest

from .conftest import _C

TIMEOUT = 60  # seconds: the whole script takes well under one; a hang never ends

# The parent runs a 512x512 matmul on 2 threads (big enough for the GEMM to start its thread team), then forks.
# The child reports over a pipe: a result that is not 'ok ...' names the step that failed.
SCRIPT = textwrap.dedent("""
    import os, sys, threading
    import numpy as np
    import minitensor as mt

    mt.set_num_threads(2)
    rng = np.random.default_rng(0)
    a = rng.standard_normal((512, 512)).astype(np.float32)
    b = rng.standard_normal((512, 512)).astype(np.float32)
    expect = (mt.tensor(a) @ mt.tensor(b)).numpy()  # the 2-thread kernel, before the fork
    assert mt.get_num_threads() == 2

    def child():
        checks = []
        checks.append(("threads after fork", mt.get_num_threads() == 1))
        got = (mt.tensor(a) @ mt.tensor(b)).numpy()  # hung here before the fix
        checks.append(("matmul in child", np.array_equal(got, expect)))
        # a thread started in the child has OpenMP's default count, not the forking thread's: it runs serial too
        box = []
        t = threading.Thread(target=lambda: box.append((mt.tensor(b) @ mt.tensor(a)).numpy()))
        t.start(); t.join()
        checks.append(("matmul in a new thread", np.allclose(box[0], b @ a, rtol=1e-4, atol=1e-3)))
        try:
            mt.set_num_threads(2)
            checks.append(("set_num_threads(2) raises", False))
        except RuntimeError as e:
            checks.append(("set_num_threads(2) raises", "fork" in str(e)))
        mt.set_num_threads(1)  # allowed: it is what the child has
        checks.append(("threads still 1", mt.get_num_threads() == 1))
        bad = [name for name, ok in checks if not ok]
        return "ok" if not bad else "failed: " + ", ".join(bad)

    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            msg = child()
        except BaseException as e:
            msg = f"failed: {type(e).__name__}: {e}"
        os.write(w, msg.encode())
        os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        msg = f.read()
    _, status = os.waitpid(pid, 0)
    print(msg)
    # the parent keeps its 2 threads: the handler runs in the child only
    print("parent threads", mt.get_num_threads(), "status", status)
""")


def test_kernel_in_forked_child_runs_on_one_thread():
    if _C is None:
        pytest.skip("minitensor._C is not built (no C++ compiler at install time): no OpenMP kernels to fork after")
    if not hasattr(os, "fork"):
        pytest.skip(f"os.fork is not available on this platform ({sys.platform})")
    if not _C.info()["openmp"]:
        pytest.skip("minitensor._C was built without OpenMP: kernels are single-threaded, nothing to hang")
    if (len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1) < 2:
        pytest.skip("fewer than 2 cores available: set_num_threads(2) is capped to 1 and no thread team starts")
    env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MINITENSOR_BACKEND")}
    try:
        run = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=TIMEOUT, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"the forked child did not finish within {TIMEOUT} s: a kernel hung on OpenMP's lost thread pool")
    assert run.returncode == 0, run.stderr
    lines = run.stdout.strip().splitlines()
    assert lines[0] == "ok", run.stdout + run.stderr
    assert lines[1] == "parent threads 2 status 0", run.stdout
