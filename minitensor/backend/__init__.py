"""Backend selection: the one place that knows whether a kernel is C++ or numpy.

Ops call `backend.kernels.<name>(...)` on numpy arrays. `kernels` is the native backend (minitensor._C) when it
was built, else the numpy reference; MINITENSOR_BACKEND=numpy or set_backend("numpy") switches.

The environment is read here, once, at import:
    MINITENSOR_BACKEND  'native' or 'numpy' (unset: native when built)
    MINITENSOR_ISA      'scalar', 'avx2' or 'avx512': a cap on the kernels' instruction set
    MINITENSOR_MALLOC   'retain' (the default) or 'default' (leave the C library's allocator alone)
    OMP_NUM_THREADS     a positive int; more than the cores this process may use is capped there, with a warning
Importing minitensor never fails on a bad value, and never silently falls back either: the first invalid value is
recorded, environment_error() returns its message, and every kernel (so every tensor op) raises
ValueError(message) until set_backend() picks a backend explicitly.
"""
import numbers
import os
import warnings

from . import numpy_ref


def _check_choice(var, allowed, why):
    """The value of `var` (stripped, lower-case; None when unset or empty) and the error message when it is not
    one of `allowed`."""
    raw = os.environ.get(var)
    value = raw.strip().lower() if raw is not None else ""
    if not value:
        return None, None
    if value not in allowed:
        names = ", ".join(repr(a) for a in allowed[:-1]) + f" or {allowed[-1]!r}"
        return None, f"{var}={raw!r}: expected {names} ({why})"
    return value, None


def _available_cores():
    """The cores this process may run on (its affinity mask, which containers and taskset narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _capped_threads(n, source, stacklevel=3):
    """n, a positive thread count, capped at the cores available (more only time-slice one core between threads,
    and an absurd count makes the OpenMP runtime abort the process), warning once when it caps."""
    cores = _available_cores()
    if n <= cores:
        return n
    warnings.warn(f"{source}: {n} threads requested, but this process may use {cores} core(s); using {cores}",
                  RuntimeWarning, stacklevel=stacklevel)
    return cores


def _check_omp_num_threads():
    """(threads to set or None, error message or None) from OMP_NUM_THREADS: a positive int, or OpenMP's list of
    positive ints for nested levels (its first entry is the count minitensor's kernels use)."""
    raw = os.environ.get("OMP_NUM_THREADS")
    if raw is None or not raw.strip():
        return None, None
    try:
        counts = [int(part) for part in raw.split(",")]
    except ValueError:
        counts = [0]
    if min(counts) < 1:
        return None, f"OMP_NUM_THREADS={raw!r}: expected a positive int (the threads minitensor's kernels use)"
    return counts[0], None


def _read_environment():
    """(backend requested, malloc setting, OMP thread count, error messages) from the environment; a setting is
    None when unset (or invalid: its message is then among the errors)."""
    _, isa_error = _check_choice("MINITENSOR_ISA", ("scalar", "avx2", "avx512"),  # _C reads the cap itself
                                 "a cap on the kernels' instruction set; unset it to use the best the CPU supports")
    requested, backend_error = _check_choice("MINITENSOR_BACKEND", ("native", "numpy"), "the kernels every op runs on")
    malloc, malloc_error = _check_choice("MINITENSOR_MALLOC", ("retain", "default"),
                                         "'retain' keeps freed memory for reuse, 'default' leaves the C library's "
                                         "allocator as it is")
    threads, threads_error = _check_omp_num_threads()
    errors = [e for e in (isa_error, backend_error, malloc_error, threads_error) if e is not None]
    return requested, malloc, threads, errors


_requested, _malloc_setting, _omp_threads, _errors = _read_environment()

try:
    from . import native
except ImportError as exc:  # the C++ extension was not built (no compiler): run on numpy
    native = None
    _native_error = str(exc)
else:
    _native_error = None

if _requested == "native" and native is None:
    _errors.append(f"MINITENSOR_BACKEND='native', but minitensor._C is not available ({_native_error}): "
                   "unset it or set it to 'numpy'")
_env_error = _errors[0] if _errors else None

_BACKENDS = {"numpy": numpy_ref}
if native is not None:
    _BACKENDS["native"] = native
    if _omp_threads is not None:  # capped even when another variable is invalid: set_backend() must not crash
        native.set_num_threads(_capped_threads(_omp_threads, "OMP_NUM_THREADS", stacklevel=2))

# Freed memory kept mapped for reuse (glibc; see tune_malloc in csrc/bindings.cpp): training reallocates the same
# activations every step, and returning them to the OS costs a page fault per 4 KiB page on the next step. Not
# applied while the environment is invalid (a bad MINITENSOR_MALLOC must not be guessed at).
_malloc = "default"
if _env_error is None and (_malloc_setting or "retain") == "retain" and native is not None and native.tune_malloc():
    _malloc = "retain"


class _InvalidEnvironment:
    """Stands in for the backend while an environment variable is invalid: any kernel it is asked for raises
    ValueError with the message (a missing attribute is the only path here, so ops pay nothing for the check)."""

    def __init__(self, message):
        self._message = message

    def __getattr__(self, name):
        raise ValueError(self._message)


def environment_error():
    """The message naming an invalid MINITENSOR_BACKEND / MINITENSOR_ISA / MINITENSOR_MALLOC / OMP_NUM_THREADS
    value seen at import (the variable, its value and the allowed values), or None when the environment is valid."""
    return _env_error


def _initial():
    if _env_error is not None:
        return _InvalidEnvironment(_env_error)
    if _requested:
        return _BACKENDS[_requested]
    if native is None:
        warnings.warn(
            f"minitensor: compiled kernels are not available ({_native_error}); using the numpy backend. "
            "Reinstall with a C++ compiler for speed.",
            RuntimeWarning,
            stacklevel=3,
        )
        return numpy_ref
    return native


kernels = _initial()


def set_backend(name):
    """Switch every op to the 'native' (C++) or 'numpy' (reference) kernels."""
    global kernels
    if name not in ("numpy", "native"):
        raise ValueError(f"set_backend: expected 'numpy' or 'native', got {name!r}")
    if name not in _BACKENDS:
        raise RuntimeError(f"set_backend('native'): minitensor._C is not available ({_native_error})")
    kernels = _BACKENDS[name]


def get_backend():
    """'native' or 'numpy'; raises ValueError while the environment is invalid (see environment_error)."""
    return kernels.NAME


def backend_info():
    """What runs the kernels: backend name (None while the environment is invalid, see environment_error), whether
    _C is built, the ISA path, OpenMP and thread count."""
    from ..autograd import get_engine

    name = kernels.NAME if not isinstance(kernels, _InvalidEnvironment) else None
    info = {"backend": name, "compiled": native is not None, "engine": get_engine(), "malloc": _malloc,
            "environment_error": _env_error}
    if native is not None:
        info.update(native.info())
    else:
        info.update({"isa": None, "openmp": False, "threads": 1, "reason": _native_error})
    return info


def set_num_threads(n):
    """Threads used by the C++ kernels (OpenMP); OMP_NUM_THREADS sets the starting value. More than the cores
    this process may use (os.sched_getaffinity) is capped there, with a RuntimeWarning."""
    if isinstance(n, bool) or not isinstance(n, numbers.Integral):
        raise TypeError(f"set_num_threads: expected a positive int, got {n!r} ({type(n).__name__})")
    if n < 1:
        raise ValueError(f"set_num_threads: expected a positive int, got {n!r}")
    n = _capped_threads(int(n), "set_num_threads")
    if native is not None:
        native.set_num_threads(n)


def get_num_threads():
    return native.get_num_threads() if native is not None else 1
