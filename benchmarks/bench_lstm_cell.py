"""Microbenchmark: one LSTM cell step, forward + backward, beside PyTorch.

    python benchmarks/bench_lstm_cell.py [--threads 1 2] [--batch 64] [--hidden 128] [--rounds 9]

The step is the state update alone, from pre-activation gates (N, 4H) and c (N, H) to (h', c'), then the backward
from given gradients of both outputs to the gradients of gates and c (float32), as each library runs it inside an
LSTM layer:
- minitensor fused:      F.lstm_cell, one Function (a C++ kernel each way on the native backend);
- minitensor composite:  the same formula from public ops (chunk, sigmoid, tanh, mul, add), what LSTM ran before;
- torch:                 the same formula in torch ops (PyTorch's CPU LSTMCell runs it this way: its fused
                         _thnn_fused_lstm_cell kernel is CUDA-only);
- kernels only:          minitensor's forward + backward kernels on numpy arrays, no autograd (the floor).
Each thread count runs in a child process (OMP_NUM_THREADS set before any library loads); contenders alternate
within each round with a short pause between them, and the median over rounds is reported, in microseconds.
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from timing import timeit


def child(threads, n, h, rounds):
    import numpy as np
    import torch

    import minitensor as mt
    from minitensor import autograd
    from minitensor.backend import native
    from minitensor.nn import functional as F

    torch.set_num_threads(threads)
    mt.set_num_threads(threads)
    rng = np.random.default_rng(0)
    gates_np = rng.standard_normal((n, 4 * h)).astype(np.float32)
    c_np = rng.standard_normal((n, h)).astype(np.float32)
    dh_np, dc_np = (rng.standard_normal((n, h)).astype(np.float32) for _ in range(2))

    gates, c = mt.tensor(gates_np, requires_grad=True), mt.tensor(c_np, requires_grad=True)
    dh, dc = mt.tensor(dh_np), mt.tensor(dc_np)

    def mt_fused():
        gates.grad = c.grad = None
        autograd.backward(list(F.lstm_cell(gates, c)), [dh, dc])

    def mt_composite():
        gates.grad = c.grad = None
        i, f, g, o = gates.chunk(4, dim=-1)
        c_next = f.sigmoid() * c + i.sigmoid() * g.tanh()
        autograd.backward([o.sigmoid() * c_next.tanh(), c_next], [dh, dc])

    tg, tc = torch.tensor(gates_np, requires_grad=True), torch.tensor(c_np, requires_grad=True)
    tdh, tdc = torch.tensor(dh_np), torch.tensor(dc_np)

    def torch_step():
        tg.grad = tc.grad = None
        i, f, g, o = tg.chunk(4, dim=-1)
        c_next = torch.sigmoid(f) * tc + torch.sigmoid(i) * torch.tanh(g)
        torch.autograd.backward([torch.sigmoid(o) * torch.tanh(c_next), c_next], [tdh, tdc])

    def kernels():
        native.lstm_cell(gates_np, c_np)
        native.lstm_cell_backward(gates_np, c_np, dh_np, dc_np)

    # same answers before timing anything
    mt_fused()
    torch_step()
    np.testing.assert_allclose(gates.grad.numpy(), tg.grad.numpy(), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(c.grad.numpy(), tc.grad.numpy(), rtol=1e-4, atol=1e-5)

    contenders = {"minitensor fused": mt_fused, "minitensor composite": mt_composite, "torch": torch_step,
                  "kernels only": kernels}
    times = {name: [] for name in contenders}
    for _ in range(rounds):
        for name, fn in contenders.items():
            time.sleep(0.05)
            times[name].append(timeit(fn))
    return {"threads": threads, "us": {k: statistics.median(v) * 1e6 for k, v in times.items()}}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.batch, args.hidden, args.rounds)))
        return
    print(f"LSTM cell step fwd+bwd, N={args.batch}, H={args.hidden}, float32: median us per step "
          "(ratio: / torch)")
    for threads in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads))
        proc = subprocess.run([sys.executable, __file__, "--child", str(threads), "--batch", str(args.batch),
                               "--hidden", str(args.hidden), "--rounds", str(args.rounds)],
                              env=env, capture_output=True, text=True, check=True)
        us = json.loads(proc.stdout.strip().splitlines()[-1])["us"]
        cells = "  ".join(f"{k} {v:8.1f} ({v / us['torch']:.2f})" for k, v in us.items())
        print(f"  {threads} thread(s): {cells}")


if __name__ == "__main__":
    main()
