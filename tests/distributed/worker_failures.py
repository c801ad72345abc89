"""Run under `mpiexec` by test_distributed.py: rank 1 misbehaves (argv[1]) while the others enter an all_reduce.

hang   rank 1 sleeps far past the 2 s timeout: the others must time out, name rank 1 and end the job
exit   rank 1 leaves early with exit code 0 (mpiexec does not tear the job down): the same
crash  rank 1 raises: its uncaught exception aborts the job at once (the timeout is 300 s)
"""
import sys
import time

import minitensor as mt
import minitensor.distributed as dist

mode = sys.argv[1]
dist.init(timeout=300 if mode == "crash" else 2)
dist.barrier()
if dist.rank() == 1:
    if mode == "hang":
        time.sleep(120)
    elif mode == "exit":
        sys.exit(0)
    elif mode == "crash":
        raise RuntimeError("rank 1 crashed on purpose")
print(f"rank {dist.rank()}: entering all_reduce", flush=True)
dist.all_reduce(mt.ones(3))
print(f"rank {dist.rank()}: all_reduce returned, which it must not", flush=True)
