"""Backend selection: the one place that knows whether a kernel is C++ or numpy.

Ops call `backend.kernels.<name>(...)` on numpy arrays. `kernels` is the native backend (minitensor._C)
when it was built, else the numpy reference; MINITENSOR_BACKEND=numpy or set_backend("numpy") switches.
"""
import os
import warnings

from . import numpy_ref

_isa = os.environ.get("MINITENSOR_ISA")
if _isa is not None and _isa not in ("scalar", "avx2", "avx512"):
    raise ValueError(f"MINITENSOR_ISA={_isa!r}: expected 'scalar', 'avx2' or 'avx512' (a cap on the kernels' "
                     "instruction set; unset it to use the best the CPU supports)")

try:
    from . import native
except ImportError as exc:  # the C++ extension was not built (no compiler): run on numpy
    native = None
    _native_error = str(exc)
else:
    _native_error = None

_BACKENDS = {"numpy": numpy_ref}
if native is not None:
    _BACKENDS["native"] = native

# Freed memory kept mapped for reuse (glibc; see tune_malloc in csrc/bindings.cpp): training reallocates the same
# activations every step, and returning them to the OS costs a page fault per 4 KiB page on the next step.
_malloc = os.environ.get("MINITENSOR_MALLOC", "retain").strip().lower()
if _malloc not in ("retain", "default"):
    raise ValueError(f"MINITENSOR_MALLOC={_malloc!r}: expected 'retain' (keep freed memory for reuse, the default) "
                     "or 'default' (leave the C library's allocator as it is)")
_malloc = "retain" if _malloc == "retain" and native is not None and native.tune_malloc() else "default"


def _initial():
    requested = os.environ.get("MINITENSOR_BACKEND", "").strip().lower()
    if requested:
        if requested not in ("numpy", "native"):
            raise ValueError(f"MINITENSOR_BACKEND={requested!r}: expected 'numpy' or 'native'")
        if requested == "native" and native is None:
            raise ImportError(f"MINITENSOR_BACKEND=native, but minitensor._C is not available: {_native_error}")
        return _BACKENDS[requested]
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
    return kernels.NAME


def backend_info():
    """What runs the kernels: backend name, whether _C is built, the ISA path, OpenMP and thread count."""
    from ..autograd import get_engine

    info = {"backend": kernels.NAME, "compiled": native is not None, "engine": get_engine(), "malloc": _malloc}
    if native is not None:
        info.update(native.info())
    else:
        info.update({"isa": None, "openmp": False, "threads": 1, "reason": _native_error})
    return info


def set_num_threads(n):
    """Threads used by the C++ kernels (OpenMP). OMP_NUM_THREADS sets the starting value."""
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"set_num_threads: expected a positive int, got {n!r}")
    if native is not None:
        native.set_num_threads(n)


def get_num_threads():
    return native.get_num_threads() if native is not None else 1
