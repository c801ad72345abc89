"""Run under `mpiexec -n 2` by test_distributed_edges.py: the ranks disagree about a collective (argv[1]).

op           rank 0 all_reduces with SUM, rank 1 with MAX
collectives  rank 0 calls all_reduce, rank 1 broadcast
barrier      rank 0 calls all_reduce, rank 1 barrier (MPI alone would match the two and hand rank 0 garbage)
objects      rank 0 calls broadcast_object_list, rank 1 all_gather
Each rank must raise a ValueError at once (the timeout is far away); it prints it on one line, then the ranks
meet at a barrier and exit normally.
"""
import sys

import minitensor as mt
import minitensor.distributed as dist

mode = sys.argv[1]
dist.init(timeout=60)
dist.barrier()
R = dist.rank()
calls = {
    "op": lambda: dist.all_reduce(mt.ones(3), op=dist.ReduceOp.SUM if R == 0 else dist.ReduceOp.MAX),
    "collectives": lambda: dist.all_reduce(mt.ones(3)) if R == 0 else dist.broadcast(mt.ones(3), src=0),
    "barrier": lambda: dist.all_reduce(mt.ones(3)) if R == 0 else dist.barrier(),
    "objects": lambda: (dist.broadcast_object_list([1, 2]) if R == 0
                        else dist.all_gather([mt.ones(2), mt.ones(2)], mt.ones(2))),
}
try:
    calls[mode]()
except ValueError as e:
    print(f"rank {R} raised ValueError: {e}", flush=True)
else:
    print(f"rank {R}: the mismatched collective returned, which it must not", flush=True)
dist.barrier()
print(f"rank {R}: done", flush=True)
