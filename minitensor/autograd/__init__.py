"""Reverse-mode automatic differentiation: Function, backward, grad, grad modes, anomaly detection.

The graph walk exists twice from one source: engine.py (pure Python, the readable one) and its Cython
compilation _engine (faster, used by default when built). `set_engine("python")` picks the readable twin,
for stepping through it in a debugger.
"""
from . import engine as _python_engine
from .anomaly import detect_anomaly
from .function import Context, Function
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled

try:
    from . import _engine as _cython_engine
except ImportError:  # not built (no compiler): the pure-Python engine does the same job
    _cython_engine = None
else:
    def _source_sha256():
        import hashlib

        with open(_python_engine.__file__, "rb") as f:
            return hashlib.sha256(f.read()).hexdigest()

    if getattr(_cython_engine, "SOURCE_SHA256", None) != _source_sha256():
        import warnings

        warnings.warn("minitensor: the compiled autograd engine was built from another version of engine.py; "
                      "using the Python engine until it is rebuilt (pip install -e . or python setup.py "
                      "build_ext --inplace)", RuntimeWarning, stacklevel=2)
        _cython_engine = None

_active = _cython_engine if _cython_engine is not None else _python_engine


def set_engine(name):
    """Run backward with the 'cython' or the 'python' engine (same algorithm, same results)."""
    global _active
    if name == "python":
        _active = _python_engine
    elif name == "cython":
        if _cython_engine is None:
            raise RuntimeError("set_engine('cython'): the Cython engine was not built; reinstall with a C compiler")
        _active = _cython_engine
    else:
        raise ValueError(f"set_engine: expected 'python' or 'cython', got {name!r}")


def get_engine():
    return "cython" if _active is _cython_engine and _cython_engine is not None else "python"


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Like torch.autograd.backward: accumulate gradients of `tensors` into the leaves' .grad."""
    _active.backward(tensors, grad_tensors, retain_graph, create_graph, inputs)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """Like torch.autograd.grad: return the gradients of `outputs` w.r.t. `inputs` as a tuple."""
    return _active.grad(outputs, inputs, grad_outputs, retain_graph, create_graph, allow_unused)


__all__ = [
    "Context", "Function", "backward", "grad", "no_grad", "enable_grad", "set_grad_enabled",
    "is_grad_enabled", "detect_anomaly", "set_engine", "get_engine",
]
