"""minitensor.distributed: data-parallel training across processes and machines, over MPI.

The story, from the command line down:

  mpiexec -n 4 python train.py             # 4 processes (ranks 0..3), on this machine or on a hostfile's

  import minitensor.distributed as dist
  dist.init()                                # join the job: rank() in 0..world_size()-1
  model = dist.DistributedDataParallel(model)        # rank 0's weights everywhere
  sampler = DistributedSampler(dataset)              # (minitensor.data) each rank a disjoint shard
  for epoch in range(epochs):
      sampler.set_epoch(epoch)                       # a new shuffle each epoch, the same on every rank
      for x, y in DataLoader(dataset, batch_size=b, sampler=sampler):
          loss = F.cross_entropy(model(x), y)
          optimizer.zero_grad()
          loss.backward()                            # gradients averaged across ranks during backward
          optimizer.step()                           # so every rank takes the same step
  if dist.rank() == 0:
      mt.save(model.module.state_dict(), "model.safetensors")   # loads in a single process

MPI is the engine (mpi4py over MPICH from `pip install minitensor[distributed]`, or a cluster's own MPI):
minitensor adds only what MPI lacks for training. Collectives (comm.py) work in place on a tensor's own buffer
and compare shapes and dtypes across ranks first; every one has a deadline, so a rank that died or hangs ends
the job with an error naming it instead of leaving the others waiting forever. DistributedDataParallel
(ddp.py) overlaps the gradient allreduces with backward. `python -m minitensor train MODEL --distributed`
(minitensor.training) splits each global batch across the ranks so that the run matches a single process
with the same batch. mpi4py is imported only when used: `import minitensor` never needs it.
"""
from .comm import (
    DEFAULT_TIMEOUT, TIMEOUT_ENV, DistributedError, DistributedTimeoutError, ReduceOp, Work, all_gather, all_reduce,
    barrier, broadcast, broadcast_object_list, destroy_process_group, get_rank, get_world_size, init,
    init_process_group, is_available, is_initialized, rank, world_size,
)
from .ddp import DistributedDataParallel

__all__ = [
    "init", "init_process_group", "destroy_process_group", "is_available", "is_initialized", "rank", "world_size",
    "get_rank", "get_world_size", "barrier", "all_reduce", "broadcast", "all_gather", "broadcast_object_list",
    "ReduceOp", "Work", "DistributedDataParallel", "DistributedError", "DistributedTimeoutError",
    "DEFAULT_TIMEOUT", "TIMEOUT_ENV",
]
