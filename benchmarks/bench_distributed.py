"""Data-parallel training on one machine: 1 process x 2 threads against 2 processes x 1 thread (MPI).

    python benchmarks/bench_distributed.py [--steps 30] [--rounds 3] [--markdown]

The work is the ViT-tiny training step of `python -m minitensor train vit` (the recipe's own step: shifted
MNIST images, label smoothing, AdamW, one-cycle schedule) at a global batch of 128. The distributed run splits
each batch 64 / 64 across two ranks under `mpiexec -n 2` through DistributedDataParallel, as `train vit
--distributed` does. Each configuration runs in a fresh job with OMP_NUM_THREADS set before anything loads;
the configurations alternate for --rounds rounds and the median round is reported (the host is shared).

Reported per configuration: samples/s (128 / median step time) and, for the distributed run, the time per
step spent inside the gradient allreduce waits (DistributedDataParallel.comm_seconds on rank 0: the transfer
itself plus any time rank 0 waits for rank 1 to finish its backward).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np

BATCH = 128
WARMUP = 3


def worker(steps, distributed):
    import minitensor as mt
    from minitensor.models.recipes import VitRecipe

    rank, world = 0, 1
    if distributed:
        import minitensor.distributed as dist

        dist.init()
        rank, world = dist.rank(), dist.world_size()
    mt.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    recipe = VitRecipe(epochs=1, batch_size=BATCH, seed=0)
    if distributed:
        recipe.distribute()
    batches = recipe.train_batches(np.random.default_rng(0))[:WARMUP + steps]
    batches = [tuple(np.array_split(part, world)[rank] for part in b) for b in batches]
    times = []
    for i, batch in enumerate(batches):
        if i == WARMUP and distributed:
            recipe.ddp.comm_seconds = 0.0
        t0 = time.perf_counter()
        recipe.train_step(batch)
        times.append(time.perf_counter() - t0)
    step = statistics.median(times[WARMUP:])
    comm = recipe.ddp.comm_seconds / steps if distributed else 0.0
    if rank == 0:
        print("RESULT " + json.dumps(dict(step=step, comm=comm, threads=mt.get_num_threads(), world=world)))


def launch(processes, threads, steps):
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--steps", str(steps)]
    if processes > 1:
        cmd = [os.path.join(os.path.dirname(sys.executable), "mpiexec"), "-n", str(processes)] + cmd + ["--distributed"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    lines = [line for line in out.stdout.splitlines() if line.startswith("RESULT ")]
    if out.returncode != 0 or not lines:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}):\n{out.stdout}\n{out.stderr}")
    return json.loads(lines[0][len("RESULT "):])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--markdown", action="store_true")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--distributed", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        return worker(args.steps, args.distributed)
    configs = [(1, 2), (2, 1)]
    runs = {c: [] for c in configs}
    for _ in range(args.rounds):
        for processes, threads in configs:
            runs[(processes, threads)].append(launch(processes, threads, args.steps))
    rows = []
    for (processes, threads), results in runs.items():
        median = sorted(results, key=lambda r: r["step"])[len(results) // 2]
        rows.append((f"{processes} process{'es' if processes > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}",
                     BATCH / median["step"], 1e3 * median["step"], 1e3 * median["comm"]))
    header = "| configuration | samples/s | ms/step | allreduce wait ms/step |\n|---|---|---|---|"
    lines = [f"| {name} | {rate:.0f} | {step:.1f} | {comm:.1f} |" if name.startswith("2") else
             f"| {name} | {rate:.0f} | {step:.1f} | - |" for name, rate, step, comm in rows]
    if not args.markdown:
        print(f"ViT-tiny training step, global batch {BATCH}, median of {args.rounds} rounds of {args.steps} steps")
    print("\n".join([header] + lines))


if __name__ == "__main__":
    main()
