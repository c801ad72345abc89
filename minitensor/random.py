"""Random numbers: one default generator, seeded by manual_seed, so runs are reproducible.

A Generator wraps numpy's PCG64 generator; functions that draw random numbers take `generator=` to use
another one (as in PyTorch), e.g. a DataLoader's shuffling.
"""
import numpy as np


class Generator:
    """A seedable source of random numbers (like torch.Generator)."""

    def __init__(self, seed=None):
        self.manual_seed(np.random.SeedSequence().entropy % (2**63) if seed is None else seed)

    def manual_seed(self, seed):
        seed = int(seed)
        if seed < 0:
            raise ValueError(f"manual_seed: the seed must be non-negative, got {seed}")
        self._seed = seed
        self._rng = np.random.Generator(np.random.PCG64(seed))
        return self

    def initial_seed(self):
        return self._seed

    def get_state(self):
        return self._rng.bit_generator.state

    def set_state(self, state):
        self._rng.bit_generator.state = state
        return self

    # numpy-level draws used by the creation functions, the init functions and dropout
    def uniform(self, low, high, shape, dtype):
        return self._rng.uniform(low, high, shape).astype(dtype, copy=False)

    def normal(self, mean, std, shape, dtype):
        if dtype.kind == "f" and dtype.itemsize in (4, 8):
            return (self._rng.standard_normal(shape, dtype=dtype) * dtype.type(std) + dtype.type(mean))
        return (self._rng.standard_normal(shape) * std + mean).astype(dtype)

    def random(self, shape, dtype):
        if dtype.kind == "f" and dtype.itemsize in (4, 8):
            return self._rng.random(shape, dtype=dtype)
        return self._rng.random(shape).astype(dtype)

    def integers(self, low, high, shape, dtype):
        return self._rng.integers(low, high, shape, dtype=dtype)

    def permutation(self, n):
        return self._rng.permutation(n)


default_generator = Generator(0)


def manual_seed(seed):
    """Seed the default generator (and return it), so everything random after this is reproducible."""
    return default_generator.manual_seed(seed)


def seed():
    """Re-seed the default generator from fresh entropy; returns the seed used."""
    s = int(np.random.SeedSequence().entropy % (2**63))
    default_generator.manual_seed(s)
    return s


def initial_seed():
    return default_generator.initial_seed()


def get_rng_state():
    return default_generator.get_state()


def set_rng_state(state):
    default_generator.set_state(state)


def get_generator(generator=None):
    if generator is None:
        return default_generator
    if not isinstance(generator, Generator):
        raise TypeError(f"expected a minitensor.Generator, got {type(generator).__name__}")
    return generator
