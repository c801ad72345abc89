"""Kernel benchmark: minitensor's native kernels beside numpy (OpenBLAS) and PyTorch CPU, in one run.

    python benchmarks/bench_kernels.py [--threads 1 2] [--rounds 7] [--markdown]

Each thread count runs in a child process with OMP_NUM_THREADS / OPENBLAS_NUM_THREADS set before any library
loads (and torch.set_num_threads), so all three libraries get the same number of threads. Within a child the
contenders alternate, round after round, and the median of the rounds is reported, which keeps a noisy shared
machine from favouring whoever ran first. Ratios are minitensor's speed over the other's (> 1: faster).

Peak FLOP/s is measured, not looked up: minitensor._C.peak_gflops runs independent FMA chains that stay in
registers (the clock under load is unknown on a VM). Bandwidth fractions use the best copy bandwidth
(read + write bytes) measured in the same run.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from timing import timeit

GEMM_CASES = [
    ("square 128", (128, 128, 128), None),
    ("square 256", (256, 256, 256), None),
    ("square 512", (512, 512, 512), None),
    ("square 1024", (1024, 1024, 1024), None),
    ("ViT-tiny qkv (17*128 x 64 x 192)", (17 * 128, 64, 192), None),
    ("ViT MLP (65*64 x 128 x 384)", (65 * 64, 128, 384), None),
    ("attention QK^T (256 x 17x16 @ 16x17)", (17, 16, 17), 256),
]


def race(contenders, rounds):
    """{name: median seconds per call}, contenders alternating within each round.

    Between contenders the process idles briefly: OpenBLAS, PyTorch's OpenMP and ours each keep worker threads
    spinning for a while after a call, and on a 2-core machine those spinning threads would steal the cores
    from whoever runs next (measured: up to 100x slower mid-size GEMMs without the pause)."""
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            time.sleep(0.05)
            times[name].append(timeit(fn))
    return {name: statistics.median(v) for name, v in times.items()}


def child(threads, rounds):
    import numpy as np

    import minitensor as mt
    from minitensor import _C
    from minitensor.backend import native

    try:
        import torch

        torch.set_num_threads(threads)
    except ImportError:
        torch = None
    mt.set_num_threads(threads)
    rng = np.random.default_rng(0)
    results = {"threads": threads, "isa": _C.info()["isa"], "torch": torch.__version__ if torch else None,
               "peak_f32": _C.peak_gflops("float32", None, threads), "gemm": [], "mem": []}

    for label, (m, k, n), batch in GEMM_CASES:
        shape_a = (batch, m, k) if batch else (m, k)
        shape_b = (batch, k, n) if batch else (k, n)
        a, b = rng.standard_normal(shape_a).astype(np.float32), rng.standard_normal(shape_b).astype(np.float32)
        contenders = {"minitensor": lambda: native.matmul(a, b), "numpy": lambda: np.matmul(a, b)}
        if torch:
            ta, tb = torch.from_numpy(a), torch.from_numpy(b)
            contenders["torch"] = lambda: torch.matmul(ta, tb)
        t = race(contenders, rounds)
        flops = 2 * m * n * k * (batch or 1)
        results["gemm"].append({"case": label, "gflops": {name: flops / s / 1e9 for name, s in t.items()}})

    # copy bandwidth: the reference for the memory-bound kernels
    src = rng.standard_normal(16 * 1024 * 1024).astype(np.float32)
    dst = np.empty_like(src)
    copies = {"numpy copy": lambda: np.copyto(dst, src)}
    if torch:
        tsrc, tdst = torch.from_numpy(src), torch.from_numpy(dst)
        copies["torch copy"] = lambda: tdst.copy_(tsrc)
    t = race(copies, rounds)
    results["copy_gbs"] = max(2 * src.nbytes / s / 1e9 for s in t.values())

    def softmax_case(shape):
        x = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        c = {"minitensor": lambda: native.softmax_backward(native.softmax(x), g)}
        if torch:
            tx, tg = torch.from_numpy(x), torch.from_numpy(g)
            c["torch"] = lambda: torch._softmax_backward_data(tg, torch.softmax(tx, -1), -1, torch.float32)
        return c, 5 * x.nbytes  # read x, write y; read y and g, write dx

    def layer_norm_case(shape):
        x = rng.standard_normal(shape).astype(np.float32)
        g = rng.standard_normal(shape).astype(np.float32)
        w, b = rng.standard_normal(shape[-1]).astype(np.float32), rng.standard_normal(shape[-1]).astype(np.float32)

        def ours():
            y, mean, rstd = native.layer_norm(x, w, b, 1e-5)
            return native.layer_norm_backward(g, x, mean, rstd, w)

        c = {"minitensor": ours}
        if torch:
            tx, tg, tw, tb = (torch.from_numpy(v) for v in (x, g, w, b))

            def theirs():
                y, mean, rstd = torch.ops.aten.native_layer_norm(tx, [shape[-1]], tw, tb, 1e-5)
                return torch.ops.aten.native_layer_norm_backward(tg, tx, [shape[-1]], mean, rstd, tw, tb, [True, True, True])

            c["torch"] = theirs
        return c, 5 * x.nbytes  # read x, write y; read x and g, write dx

    def conv_case(xs, ws, stride, padding):
        x, w = rng.standard_normal(xs).astype(np.float32), rng.standard_normal(ws).astype(np.float32)
        bias = rng.standard_normal(ws[0]).astype(np.float32)
        s, p, d = (stride, stride), (padding, padding), (1, 1)
        y = native.conv2d(x, w, bias, s, p, d)
        g = rng.standard_normal(y.shape).astype(np.float32)
        c = {"minitensor": lambda: (native.conv2d(x, w, bias, s, p, d),
                                    native.conv2d_backward(g, x, w, s, p, d, True, True, True))}
        if torch:
            tx, tw, tb, tg = (torch.from_numpy(v) for v in (x, w, bias, g))
            c["torch"] = lambda: (torch.nn.functional.conv2d(tx, tw, tb, stride, padding),
                                  torch.ops.aten.convolution_backward(tg, tx, tw, [ws[0]], list(s), list(p), list(d),
                                                                      False, [0, 0], 1, [True, True, True]))
        return c, None

    for label, (contenders, nbytes) in [
        ("softmax fwd+bwd (256, 4, 65, 65)", softmax_case((256, 4, 65, 65))),
        ("layer_norm fwd+bwd (64*65, 64)", layer_norm_case((64 * 65, 64))),
        ("layer_norm fwd+bwd (4096, 768)", layer_norm_case((4096, 768))),
        ("conv2d fwd+bwd (128,1,28,28) 64x7x7 s7", conv_case((128, 1, 28, 28), (64, 1, 7, 7), 7, 0)),
        ("conv2d fwd+bwd (32,16,32,32) 32x3x3 p1", conv_case((32, 16, 32, 32), (32, 16, 3, 3), 1, 1)),
    ]:
        t = race(contenders, rounds)
        results["mem"].append({"case": label, "ms": {k: v * 1e3 for k, v in t.items()},
                               "gbs": None if nbytes is None else nbytes / t["minitensor"] / 1e9})
    return results


def report(runs, markdown):
    lines = []
    out = lines.append
    for r in runs:
        out(f"\n### {r['threads']} thread(s) — ISA {r['isa']}, torch {r['torch']}")
        out(f"measured peak (FMA chains in registers): {r['peak_f32']:.0f} GFLOP/s float32; "
            f"copy bandwidth {r['copy_gbs']:.1f} GB/s\n")
        out("| GEMM float32 | minitensor GF/s | % of peak | numpy GF/s | torch GF/s | vs numpy | vs torch |")
        out("|---|---:|---:|---:|---:|---:|---:|")
        for g in r["gemm"]:
            f = g["gflops"]
            ours = f["minitensor"]
            torch_gf = f.get("torch")
            out(f"| {g['case']} | {ours:.1f} | {100 * ours / r['peak_f32']:.0f}% | {f['numpy']:.1f} | "
                f"{torch_gf:.1f} | {ours / f['numpy']:.2f} | {ours / torch_gf:.2f} |" if torch_gf else
                f"| {g['case']} | {ours:.1f} | {100 * ours / r['peak_f32']:.0f}% | {f['numpy']:.1f} | - | "
                f"{ours / f['numpy']:.2f} | - |")
        out("")
        out("| kernel | minitensor ms | torch ms | speed vs torch | bandwidth (fraction of copy) |")
        out("|---|---:|---:|---:|---:|")
        for m in r["mem"]:
            ms = m["ms"]
            bw = f"{m['gbs']:.1f} GB/s ({100 * m['gbs'] / r['copy_gbs']:.0f}%)" if m["gbs"] else "-"
            theirs = ms.get("torch")
            out(f"| {m['case']} | {ms['minitensor']:.2f} | {theirs:.2f} | {theirs / ms['minitensor']:.2f} | {bw} |"
                if theirs else f"| {m['case']} | {ms['minitensor']:.2f} | - | - | {bw} |")
    text = "\n".join(lines)
    print(text if markdown else text.replace("|---", "").replace("---:", ""))


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--markdown", action="store_true", help="print markdown tables (for RESULTS.md)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.rounds)))
        return
    runs = []
    for threads in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        proc = subprocess.run([sys.executable, __file__, "--child", str(threads), "--rounds", str(args.rounds)],
                              env=env, capture_output=True, text=True, check=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    report(runs, args.markdown)


if __name__ == "__main__":
    main()
