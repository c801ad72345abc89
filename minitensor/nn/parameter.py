"""Parameter: a Tensor that a Module registers as one of its learnable parameters."""
import numpy as np

from ..tensor import Tensor, _rebuild


class Parameter(Tensor):
    """Parameter(data, requires_grad=True): shares memory with `data` (a Tensor or array), like PyTorch's."""

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        if data is None:
            arr = np.empty(0, dtype=np.float32)
        elif isinstance(data, Tensor):
            arr = data._data
        else:
            arr = np.asarray(data)
        self._data = arr
        self._requires_grad = False
        self.grad = None
        self.grad_fn = None
        self._output_nr = 0
        self._vc = data._vc if isinstance(data, Tensor) else [0]
        self._base = None
        self._hooks = None
        self._acc = None
        self._post_acc_hooks = None
        if requires_grad:
            self.requires_grad = True

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol):
        return (_rebuild_parameter, (self._data, self._requires_grad))

    def __deepcopy__(self, memo):
        if id(self) in memo:
            return memo[id(self)]
        copy = Parameter(self._data.copy(), self._requires_grad)
        memo[id(self)] = copy
        return copy


def _rebuild_parameter(data, requires_grad):
    return Parameter(_rebuild(data, False), requires_grad)
