"""numpy's floating-point warnings, off while an op computes.

log(0) = -inf, sqrt(-1) = nan and 1/0 = inf are the right answers of those ops, and PyTorch gives them without
a word; numpy would print a RuntimeWarning for each. Function.apply silences them around every forward (the one
place every op passes through) and restores the caller's setting after, so user code that calls numpy itself
keeps numpy's warnings.

    token = silence()
    try: ...op's forward...
    finally: restore(token)

On numpy >= 2 this sets, directly, the context variable that np.errstate(all="ignore") sets: about 0.1 us, where
entering and leaving an np.errstate costs about 1.4 us, as much as half of a small op's whole overhead.
"""
import functools

import numpy as np

try:
    from numpy._core.umath import _extobj_contextvar, _make_extobj
except ImportError:  # numpy < 2: the public context manager (slower, the same effect)
    def silence():
        state = np.errstate(all="ignore")
        state.__enter__()
        return state

    def restore(state):
        state.__exit__(None, None, None)
else:
    # both C calls, no Python frame: silence() returns the token restore() takes
    silence = functools.partial(_extobj_contextvar.set, _make_extobj(all="ignore"))
    restore = _extobj_contextvar.reset
