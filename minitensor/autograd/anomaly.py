"""detect_anomaly(): find the first op whose backward produced NaN or Inf.

While it is on, every Function call records where in your code it was made, and the engine checks each
backward's gradients; the first non-finite one raises a RuntimeError naming the op, its shapes and that
place. It slows everything down: use it to debug, not to train.
"""
import threading

_state = threading.local()


def is_enabled():
    return getattr(_state, "enabled", False)


class detect_anomaly:
    """Context manager (and decorator) that turns anomaly detection on."""

    def __init__(self, check_nan=True):
        self.check_nan = check_nan

    def __enter__(self):
        self._prev = is_enabled()
        _state.enabled = self.check_nan
        return self

    def __exit__(self, *exc):
        _state.enabled = self._prev
        return False

    def __call__(self, fn):
        import functools

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with detect_anomaly(self.check_nan):
                return fn(*args, **kwargs)

        return wrapper


def check_gradients(node, grads):
    """Raise if any gradient returned by `node`'s backward holds NaN or Inf."""
    import numpy as np

    for i, g in enumerate(grads):
        if g is None or g._data.dtype.kind != "f":
            continue
        if not np.isfinite(g._data).all():
            bad = "nan" if np.isnan(g._data).any() else "inf"
            shapes = ", ".join(str(tuple(m[0])) for m in node.input_meta if m is not None)
            where = f"\nThe forward call that created it:\n{node._trace}" if node._trace else ""
            raise RuntimeError(
                f"Function '{node.name()}' returned {bad} values in its gradient for input {i} "
                f"(input shapes: {shapes}).{where}"
            )
