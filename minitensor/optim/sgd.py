"""SGD with momentum, dampening, Nesterov momentum and weight decay (PyTorch's formulation).

    d = g + weight_decay * p                    (g negated first when maximize)
    buf = d (first step) or momentum * buf + (1 - dampening) * d
    d = d + momentum * buf (nesterov) or buf    (when momentum != 0)
    p = p - lr * d
"""
import numpy as np

from ..tensor import Tensor
from .optimizer import Optimizer


class SGD(Optimizer):
    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *, maximize=False):
        if lr < 0.0:
            raise ValueError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise ValueError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise ValueError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise ValueError("Nesterov momentum requires a momentum and zero dampening")
        super().__init__(params, dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                                      nesterov=nesterov, maximize=maximize))

    def _update(self, param, grad, state, group):
        d = -grad if group["maximize"] else grad
        if group["weight_decay"]:
            d = d + group["weight_decay"] * param
        momentum = group["momentum"]
        if momentum:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = Tensor._wrap(np.array(d, copy=True))
            else:
                b = buf._data
                b *= momentum
                b += (1 - group["dampening"]) * d
            d = d + momentum * buf._data if group["nesterov"] else buf._data
        param -= group["lr"] * d
