"""Mixed thread pools: minitensor's GEMM right after numpy's (OpenBLAS) and the reverse, in one process.

    python benchmarks/bench_threads_mixed.py [--threads 1 2] [--rounds 15] [--calls 8] [--size 512]
                                             [--openblas-thread-timeout N] [--markdown]

Users mix numpy and minitensor in one program, so this benchmark, unlike the others, runs the contenders in ONE
process on purpose: each library's thread pool meets the other's. A pool whose idle workers keep spinning after
a call takes cores from whatever runs next, and on a small machine that next call slows down many times over.

Each thread count runs in a child process with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS / MKL_NUM_THREADS set before
any library loads (and torch.set_num_threads, mt.set_num_threads). Every round has three phases, each after an
idle pause longer than any pool's spin (OpenBLAS spins 2^28 TSC cycles, ~0.13 s at 2 GHz):

- minitensor alone: a call, then `--calls` timed calls back to back;
- numpy alone: the same;
- mixed: numpy, minitensor, numpy, minitensor, ... each call timed ("minitensor after numpy", "numpy after
  minitensor"); with PyTorch installed, a second mixed phase pairs minitensor with torch.

Each call of an `n^3` float32 matmul is timed on its own (a 512^3 GEMM takes milliseconds); the table gives the min
and median of all calls of all rounds, and the slowdown: the median after the other library over the median alone
(1.00: no interference). The machine may be shared, so only medians over many alternating rounds mean much.

"idle CPU" is the CPU time a library's pool burns in the pause after one call while the caller does nothing: the
spinning that hurts the next library (the process's CPU time over the pause, measured separately for each).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTLE = 0.3  # seconds of idle before each phase: longer than OpenBLAS's (~0.13 s) and libgomp's spin


def timed_calls(fns, calls):
    """Call the functions in turn, `calls` times each; {name: [seconds of each call]}."""
    times = {name: [] for name in fns}
    for _ in range(calls):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return times


def idle_cpu(fn, pause=SETTLE):
    """CPU seconds the process burns during `pause` of idling right after one call of fn (spinning workers)."""
    time.sleep(pause)
    fn()
    c0 = time.process_time()
    time.sleep(pause)
    return time.process_time() - c0


def child(threads, rounds, calls, n):
    import numpy as np

    import minitensor as mt

    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        torch = None
    mt.set_num_threads(threads)
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((n, n)).astype(np.float32), rng.standard_normal((n, n)).astype(np.float32)
    ta, tb = mt.tensor(a), mt.tensor(b)
    fns = {"minitensor": lambda: ta @ tb, "numpy": lambda: a @ b}
    pairs = [("numpy", "minitensor")]
    if torch is not None:
        xa, xb = torch.from_numpy(a), torch.from_numpy(b)
        fns["torch"] = lambda: torch.matmul(xa, xb)
        pairs.append(("torch", "minitensor"))
    for fn in fns.values():  # warm up every pool and every code path once
        fn()

    samples = {}

    def add(key, values):
        samples.setdefault(key, []).extend(values)

    spin = {name: [] for name in fns}
    for r in range(rounds):
        phases = [("alone", name) for name in fns] + [("mixed", pair) for pair in pairs]
        for kind, what in phases[r % len(phases):] + phases[:r % len(phases)]:  # rotate the phase order
            time.sleep(SETTLE)
            if kind == "alone":
                fns[what]()
                add(f"{what} alone", timed_calls({what: fns[what]}, calls)[what])
            else:
                first, second = what
                t = timed_calls({first: fns[first], second: fns[second]}, calls + 1)
                add(f"{second} after {first}", t[second][:-1])  # call i of `second` follows call i of `first`
                add(f"{first} after {second}", t[first][1:])
        if r < 3:
            for name, fn in fns.items():
                spin[name].append(idle_cpu(fn))
    info = mt.backend_info()
    return {"threads": threads, "n": n, "torch": torch.__version__ if torch else None,
            "omp_wait": info.get("omp_wait"), "numpy": np.__version__,
            "samples": samples, "idle_cpu": {k: statistics.median(v) for k, v in spin.items()}}


ROWS = [  # (row, its "alone" baseline)
    ("minitensor alone", None), ("numpy alone", None), ("minitensor after numpy", "minitensor alone"),
    ("numpy after minitensor", "numpy alone"), ("torch alone", None), ("torch after minitensor", "torch alone"),
    ("minitensor after torch", "minitensor alone"),
]


def report(runs, markdown, env_notes):
    lines = []
    out = lines.append
    for note in env_notes:
        out(note)
    for r in runs:
        s = r["samples"]
        med = {k: statistics.median(v) for k, v in s.items()}
        out(f"\n### {r['threads']} thread(s), {r['n']}^3 float32 matmul — numpy {r['numpy']}, torch {r['torch']}, "
            f"minitensor's OpenMP wait: {r['omp_wait']}")
        out("")
        out("| calls | min ms | median ms | slowdown (median / alone) |")
        out("|---|---:|---:|---:|")
        for row, base in ROWS:
            if row not in s:
                continue
            ratio = f"{med[row] / med[base]:.2f}" if base else "-"
            out(f"| {row} | {min(s[row]) * 1e3:.2f} | {med[row] * 1e3:.2f} | {ratio} |")
        if r["torch"] is None:
            out("(torch rows skipped: PyTorch is not installed)")
        idle = ", ".join(f"{k} {v * 1e3:.1f} ms" for k, v in r["idle_cpu"].items())
        out(f"\nidle CPU burned in the {SETTLE:.1f} s after one call: {idle}")
    print("\n".join(line for line in lines if markdown or not line.startswith("|---")))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--calls", type=int, default=8, help="timed calls per phase and round")
    parser.add_argument("--size", type=int, default=512, help="n of the n^3 matmul")
    parser.add_argument("--openblas-thread-timeout", type=int, metavar="N",
                        help="run numpy with OPENBLAS_THREAD_TIMEOUT=N: its idle workers spin 2^N TSC cycles")
    parser.add_argument("--markdown", action="store_true", help="print markdown tables (for RESULTS.md)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rounds, args.calls, args.size)))
        return
    if args.openblas_thread_timeout is not None:
        os.environ["OPENBLAS_THREAD_TIMEOUT"] = str(args.openblas_thread_timeout)  # for the children only
    # OpenBLAS reads these when numpy loads: a forced core type (kernel family) or cache size changes numpy's
    # speed, and a thread timeout changes how long its idle workers spin; say so when they are set
    notes = [f"note: {k}={os.environ[k]} is set (it changes numpy's OpenBLAS)"
             for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OPENBLAS_THREAD_TIMEOUT") if k in os.environ]
    notes += [f"note: {k}={os.environ[k]} is set (it changes how OpenMP threads wait)"
              for k in ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT") if k in os.environ]
    runs = []
    for threads in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        proc = subprocess.run([sys.executable, __file__, "--child", str(threads), "--rounds", str(args.rounds),
                               "--calls", str(args.calls), "--size", str(args.size)],
                              env=env, capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report(runs, args.markdown, notes)


if __name__ == "__main__":
    main()
