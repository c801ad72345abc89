"""Grad mode: whether ops record the graph. Per thread, as in PyTorch.

`no_grad`, `enable_grad` and `set_grad_enabled` work as context managers and as decorators (`@no_grad()`,
and bare `@no_grad` / `@enable_grad` as in PyTorch).
The engine switches grad mode to `create_graph` while it runs backward formulas, which is all it
takes for higher-order gradients: the formulas are Tensor ops, so with grad mode on they record a graph.
"""
import functools
import threading

_state = threading.local()


def is_grad_enabled():
    return getattr(_state, "enabled", True)


def _set_enabled(mode):
    """Set grad mode; return the previous mode (for try/finally restores on hot paths)."""
    prev = getattr(_state, "enabled", True)
    _state.enabled = bool(mode)
    return prev


class _GradModeContext:
    _mode = True

    def __new__(cls, func=None):
        """`no_grad()` is the context manager (or decorator); `no_grad(func)`, which bare `@no_grad` calls, is
        func wrapped, as in PyTorch."""
        self = super().__new__(cls)
        if func is None:
            return self
        if not callable(func):
            raise TypeError(f"{cls.__name__}: takes no arguments, or a function to decorate; got {func!r}")
        return self(func)

    def __enter__(self):
        self._prev = _set_enabled(self._mode)
        return self

    def __exit__(self, *exc):
        _set_enabled(self._prev)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradModeContext):
    """Ops inside record no graph: for inference and for optimizer updates."""

    _mode = False


class enable_grad(_GradModeContext):
    """Turn recording back on inside a no_grad block."""

    _mode = True


class set_grad_enabled(_GradModeContext):
    """set_grad_enabled(mode): takes effect at once (like PyTorch) and restores on exit when used with `with`."""

    def __new__(cls, mode):
        return object.__new__(cls)

    def __init__(self, mode):
        self._mode = bool(mode)
        self._prev = _set_enabled(self._mode)

    def __enter__(self):
        return self

    def __call__(self, fn):
        mode = self._mode
        _set_enabled(self._prev)  # used as a decorator: do not leave the mode changed

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            prev = _set_enabled(mode)
            try:
                return fn(*args, **kwargs)
            finally:
                _set_enabled(prev)

        return wrapper
