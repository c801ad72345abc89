"""What the Cython graph walk saves: backward through many small ops.

Two graphs, both engines running the same source (engine.py; _engine.pyx compiles it), alternating,
median of many repeats:
- an LSTM cell written with raw ops (matmul, sigmoid, tanh, *, +, chunk), unrolled 50 steps: ~850 small
  nodes whose backward formulas (themselves Tensor ops) cost more than the walk;
- a chain of 10,000 additions, whose formulas are trivial, so the time is the walk itself.
Usage: python benchmarks/bench_engine.py [--steps 50] [--batch 8] [--hidden 32]
"""
import argparse
import statistics
import time

import minitensor as mt
from minitensor import autograd


def lstm_graph(steps, batch, hidden, seed=0):
    mt.manual_seed(seed)
    w_ih = mt.randn(hidden, 4 * hidden, requires_grad=True)
    w_hh = mt.randn(hidden, 4 * hidden, requires_grad=True)
    bias = mt.zeros(4 * hidden, requires_grad=True)
    xs = mt.randn(steps, batch, hidden)
    h = mt.zeros(batch, hidden)
    c = mt.zeros(batch, hidden)
    for t in range(steps):
        gates = xs[t] @ w_ih + h @ w_hh + bias
        i, f, g, o = gates.chunk(4, dim=1)
        c = f.sigmoid() * c + i.sigmoid() * g.tanh()
        h = o.sigmoid() * c.tanh()
    return h.sum(), (w_ih, w_hh, bias)


def add_chain(n):
    x = mt.tensor([1.0], requires_grad=True)
    y = x
    for _ in range(n):
        y = y + 1.0
    return y.sum(), (x,)


def count_nodes(loss):
    seen, stack = {loss.grad_fn}, [loss.grad_fn]
    while stack:
        for edge in stack.pop().next_functions:
            if edge is not None and edge[0] not in seen:
                seen.add(edge[0])
                stack.append(edge[0])
    return len(seen)


def measure(engine, build):
    autograd.set_engine(engine)
    loss, _ = build()
    t0 = time.perf_counter()
    loss.backward()
    return time.perf_counter() - t0


def compare(label, build, repeats):
    loss, _ = build()
    nodes = count_nodes(loss)
    times = {"python": [], "cython": []}
    for _ in range(2):  # warm-up
        measure("python", build), measure("cython", build)
    for _ in range(repeats):
        for engine in ("python", "cython"):
            times[engine].append(measure(engine, build))
    py, cy = statistics.median(times["python"]), statistics.median(times["cython"])
    print(f"{label}: {nodes} graph nodes")
    print(f"  {'engine':8s} {'backward ms':>12s} {'us/node':>8s}")
    print(f"  {'python':8s} {py * 1e3:12.2f} {py / nodes * 1e6:8.2f}")
    print(f"  {'cython':8s} {cy * 1e3:12.2f} {cy / nodes * 1e6:8.2f}")
    print(f"  cython / python = {cy / py:.2f}  (the Cython walk saves {100 * (1 - cy / py):.0f}% of backward)")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    if autograd._cython_engine is None:
        raise SystemExit("the Cython engine is not built; reinstall minitensor with a C compiler")
    print(f"backend {mt.get_backend()}, {mt.get_num_threads()} threads")
    compare(f"LSTM unrolled {args.steps} steps (batch {args.batch}, hidden {args.hidden})",
            lambda: lstm_graph(args.steps, args.batch, args.hidden), args.repeats)
    compare("chain of 10,000 additions", lambda: add_chain(10_000), max(args.repeats // 3, 5))
    autograd.set_engine("cython")

if __name__ == "__main__":
    main()
