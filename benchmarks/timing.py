"""What the benchmark scripts share (they run as `python benchmarks/NAME.py`, so this directory is on sys.path)."""
import time


def timeit(fn, min_time=0.05):
    """Seconds per call of fn: one warm-up call, then enough calls to fill min_time."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        elapsed = time.perf_counter() - t0
        if elapsed >= min_time:
            return elapsed / n
