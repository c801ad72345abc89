"""DataLoader: batches from a dataset, in order or shuffled with a seedable generator (PyTorch semantics).

With shuffle and no generator, each epoch draws its seed from minitensor's default generator, so
minitensor.manual_seed makes the order reproducible; with a Generator, the order is reproducible from its seed.
The dataset is only ever indexed, never copied. Data loads in the main process (num_workers=0).
"""
import collections.abc
import math

import numpy as np

from .. import dtypes
from ..ops.shape import stack
from ..random import Generator, get_generator
from ..tensor import Tensor


class SequentialSampler:
    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler:
    """A fresh random permutation each epoch (or num_samples draws with replacement)."""

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None):
        self.data_source, self.replacement, self.generator = data_source, replacement, generator
        self._num_samples = num_samples
        if num_samples is not None and not replacement:
            raise ValueError("RandomSampler: num_samples needs replacement=True")

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def __iter__(self):
        gen = self.generator
        if gen is None:  # a seed from the default generator: reproducible after manual_seed
            gen = Generator(int(get_generator().integers(0, 2**62, (), np.dtype(np.int64))))
        n = len(self.data_source)
        if self.replacement:
            return iter(gen.integers(0, n, (self.num_samples,), np.dtype(np.int64)).tolist())
        return iter(gen.permutation(n).tolist())

    def __len__(self):
        return self.num_samples


class BatchSampler:
    def __init__(self, sampler, batch_size, drop_last):
        if not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size should be a positive integer, got {batch_size!r}")
        self.sampler, self.batch_size, self.drop_last = sampler, batch_size, drop_last

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        n = len(self.sampler)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)


def default_collate(batch):
    """Stack a list of samples: tensors/arrays/numbers become one tensor with a batch dim, strings a list, and
    tuples, lists and dicts are collated field by field."""
    elem = batch[0]
    if isinstance(elem, Tensor):
        return stack(batch)
    if isinstance(elem, np.ndarray):
        return Tensor._wrap(np.stack(batch))
    if isinstance(elem, (bool, np.bool_)):
        return Tensor._wrap(np.array(batch, dtype=dtypes.bool_))
    if isinstance(elem, (int, np.integer)):
        return Tensor._wrap(np.array(batch, dtype=dtypes.int64))
    if isinstance(elem, (float, np.floating)):
        return Tensor._wrap(np.array(batch, dtype=dtypes.float64))
    if isinstance(elem, str):
        return list(batch)
    if isinstance(elem, collections.abc.Mapping):
        return {key: default_collate([d[key] for d in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(list(field)) for field in zip(*batch)))
    if isinstance(elem, (tuple, list)):
        if any(len(s) != len(elem) for s in batch):
            raise RuntimeError("default_collate: each element in the batch should be of equal size")
        return [default_collate(list(field)) for field in zip(*batch)]
    raise TypeError(f"default_collate: cannot batch elements of type {type(elem).__name__}")


class DataLoader:
    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None, num_workers=0,
                 collate_fn=None, pin_memory=False, drop_last=False, timeout=0, worker_init_fn=None,
                 generator=None, prefetch_factor=None, persistent_workers=False):
        if num_workers != 0:
            raise ValueError("DataLoader: num_workers > 0 is not supported; minitensor loads data in the main process")
        if batch_sampler is not None and (batch_size != 1 or shuffle or sampler is not None or drop_last):
            raise ValueError("DataLoader: batch_sampler is mutually exclusive with batch_size, shuffle, sampler and "
                             "drop_last")
        if sampler is not None and shuffle:
            raise ValueError("DataLoader: sampler option is mutually exclusive with shuffle")
        self.dataset, self.batch_size, self.drop_last, self.generator = dataset, batch_size, drop_last, generator
        if sampler is None:
            sampler = RandomSampler(dataset, generator=generator) if shuffle else SequentialSampler(dataset)
        if batch_sampler is None and batch_size is not None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.sampler, self.batch_sampler = sampler, batch_sampler
        self.collate_fn = collate_fn if collate_fn is not None else default_collate

    def __iter__(self):
        fetch_many = getattr(self.dataset, "__getitems__", None)
        if self.batch_sampler is None:  # batch_size=None: samples one at a time, uncollated
            for index in self.sampler:
                yield self.dataset[index]
            return
        for indices in self.batch_sampler:
            samples = fetch_many(indices) if fetch_many is not None else [self.dataset[i] for i in indices]
            yield self.collate_fn(samples)

    def __len__(self):
        return len(self.batch_sampler) if self.batch_sampler is not None else len(self.sampler)
