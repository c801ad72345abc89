"""DistributedSampler: each rank of a minitensor.distributed job draws a disjoint shard of the dataset."""
import math

from ..random import Generator


class DistributedSampler:
    """The indices of rank `rank`'s shard, PyTorch's semantics: every epoch one permutation (seed + epoch, the
    same on every rank, so set_epoch(e) on every rank before iterating), padded by wrapping around to a
    multiple of num_replicas (or cut with drop_last), then rank r takes every num_replicas-th index from r.
    num_replicas and rank default to minitensor.distributed's world_size() and rank()."""

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None or rank is None:
            from .. import distributed

            num_replicas = distributed.world_size() if num_replicas is None else num_replicas
            rank = distributed.rank() if rank is None else rank
        if not isinstance(num_replicas, int) or num_replicas < 1:
            raise ValueError(f"DistributedSampler: num_replicas must be a positive int, got {num_replicas!r}")
        if not 0 <= rank < num_replicas:
            raise ValueError(f"DistributedSampler: invalid rank {rank}, rank should be in the interval "
                             f"[0, {num_replicas - 1}]")
        self.dataset, self.num_replicas, self.rank = dataset, num_replicas, rank
        self.shuffle, self.seed, self.drop_last, self.epoch = shuffle, seed, drop_last, 0
        n = len(dataset)
        if drop_last and n % num_replicas:
            self.num_samples = math.ceil((n - num_replicas) / num_replicas)
        else:
            self.num_samples = math.ceil(n / num_replicas)
        self.total_size = self.num_samples * num_replicas

    def __iter__(self):
        n = len(self.dataset)
        indices = Generator(self.seed + self.epoch).permutation(n).tolist() if self.shuffle else list(range(n))
        if not self.drop_last:
            padding = self.total_size - len(indices)
            indices += (indices * math.ceil(padding / max(len(indices), 1)))[:padding]
        else:
            indices = indices[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        """Reshuffle: epoch e's order depends only on (seed, e)."""
        self.epoch = epoch
