"""Optimizer: param groups, per-parameter state, zero_grad, and state dicts in PyTorch's format.

Updates happen in place on the parameters' arrays, outside the graph; each bumps the parameter's version
counter, so a graph that saved the old value notices if it is used afterwards.
"""
import copy
from collections.abc import Mapping

import numpy as np

from ..autograd.grad_mode import enable_grad
from ..tensor import Tensor


class Optimizer:
    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = {}
        self.param_groups = []
        if isinstance(params, Tensor):
            raise TypeError("params argument given to the optimizer should be an iterable of Tensors or dicts, "
                            f"but got {type(params).__name__}")
        groups = list(params)
        if not groups:
            raise ValueError("optimizer got an empty parameter list")
        if not isinstance(groups[0], dict):
            groups = [{"params": groups}]
        for group in groups:
            self.add_param_group(group)

    def add_param_group(self, param_group):
        group = dict(param_group)
        params = group["params"]
        params = [params] if isinstance(params, Tensor) else list(params)
        if isinstance(group["params"], set):
            raise TypeError("optimizer parameters need to be organized in ordered collections, but the ordering of "
                            "tensors in sets will change between runs; use a list")
        for p in params:
            if not isinstance(p, Tensor):
                raise TypeError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise ValueError("can't optimize a non-leaf Tensor")
        seen = {id(p) for g in self.param_groups for p in g["params"]}
        if any(id(p) in seen for p in params) or len({id(p) for p in params}) != len(params):
            raise ValueError("some parameters appear in more than one parameter group")
        for key, value in self.defaults.items():
            group.setdefault(key, value)
        group["params"] = params
        self.param_groups.append(group)

    def zero_grad(self, set_to_none=True):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                else:
                    p.grad._data[...] = 0
                    p.grad._vc[0] += 1

    def step(self, closure=None):
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state.setdefault(p, {})
                grad = p.grad._data
                if grad.shape != p.shape:
                    raise RuntimeError(f"{type(self).__name__}: gradient of shape {grad.shape} for a parameter of "
                                       f"shape {tuple(p.shape)}")
                self._update(p._data, grad.astype(p.dtype, copy=False), state, group)
                p._vc[0] += 1
        return loss

    def _update(self, param, grad, state, group):
        """Update the array `param` in place from `grad`, keeping per-parameter `state` (a dict)."""
        raise TypeError(f"{type(self).__name__} must implement _update")

    # ------------------------------------------------------------------ state dicts
    def state_dict(self):
        """{'state': {index: {...}}, 'param_groups': [{..., 'params': [indices]}]}, as in PyTorch."""
        index, groups = {}, []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            packed["params"] = [index.setdefault(id(p), len(index)) for p in group["params"]]
            groups.append(packed)
        state = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p in self.state:
                    state[index[id(p)]] = {k: (v.detach() if isinstance(v, Tensor) else v)
                                           for k, v in self.state[p].items()}
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Load a state dict from state_dict() (this framework's or PyTorch's: tensors are converted).

        Everything is checked before anything changes: on a ValueError (which names the parameter and entry)
        the optimizer keeps its state and hyperparameters. Tensor state other than 'step' must have its
        parameter's shape (momentum buffers and Adam's moments do).
        """
        if not isinstance(state_dict, Mapping):
            raise ValueError(f"optimizer state dict must be a dict, got {type(state_dict).__name__}")
        if not {"state", "param_groups"} <= set(state_dict):
            raise ValueError("optimizer state dict must be a dict with 'state' and 'param_groups', got keys "
                             f"{sorted(map(str, state_dict))}")
        groups = state_dict["param_groups"]
        if not isinstance(groups, (list, tuple)) or not all(isinstance(g, Mapping) and isinstance(
                g.get("params"), (list, tuple)) for g in groups):
            raise ValueError("loaded state dict's param_groups must be a list of dicts with a 'params' list")
        if len(groups) != len(self.param_groups):
            raise ValueError(f"loaded state dict has {len(groups)} parameter groups, the optimizer has "
                             f"{len(self.param_groups)}")
        for mine, theirs in zip(self.param_groups, groups):
            if len(mine["params"]) != len(theirs["params"]):
                raise ValueError("loaded state dict contains a parameter group that doesn't match the size of "
                                 "the optimizer's group")
        params = {}
        for mine, theirs in zip(self.param_groups, groups):
            for p, i in zip(mine["params"], theirs["params"]):
                params[i] = p
        if not isinstance(state_dict["state"], Mapping):
            raise ValueError(f"loaded state dict's state must be a dict, got {type(state_dict['state']).__name__}")
        state = {}
        for i, values in state_dict["state"].items():
            i = int(i) if isinstance(i, str) and i.isdecimal() else i  # (keys that went through JSON)
            if i not in params or not isinstance(values, Mapping):
                raise ValueError(f"loaded optimizer state has an entry for parameter {i!r}, which "
                                 + ("is not a dict" if i in params else "no parameter group lists"))
            state[params[i]] = {k: _as_state_value(k, v, params[i], i) for k, v in values.items()}
        hyperparameters = [{k: copy.deepcopy(v) for k, v in theirs.items() if k != "params"} for theirs in groups]
        self.state = state  # only now, when nothing can fail any more
        for mine, loaded in zip(self.param_groups, hyperparameters):
            mine.update(loaded)

    def __repr__(self):
        lines = [f"{type(self).__name__} ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            lines.extend(f"    {k}: {v}" for k, v in sorted(group.items()) if k != "params")
        return "\n".join(lines) + "\n)"


def _as_state_value(key, value, param, index):
    """A loaded state entry as a minitensor tensor: floating state takes the parameter's dtype (PyTorch does
    the same); 'step' stays a float32 scalar. A ValueError names parameter `index` and `key` if it cannot be."""
    if value is None or isinstance(value, (int, float)):
        return value
    if isinstance(value, Tensor):
        arr = value._data
    elif isinstance(value, np.ndarray):
        arr = value
    elif hasattr(value, "detach") and hasattr(value, "numpy"):  # a PyTorch tensor
        value = value.detach().cpu()
        try:
            arr = value.numpy()
        except (TypeError, RuntimeError):  # bfloat16 and float8 have no numpy dtype: float32 holds them exactly
            if not value.is_floating_point():
                raise ValueError(f"loaded optimizer state {key!r} of parameter {index} has dtype {value.dtype}, "
                                 "which has no numpy equivalent") from None
            arr = value.float().numpy()
    else:
        raise ValueError(f"loaded optimizer state {key!r} of parameter {index} is a {type(value).__name__}, "
                         "not a number or tensor")
    if arr.dtype.kind not in "biuf":
        raise ValueError(f"loaded optimizer state {key!r} of parameter {index} has dtype {arr.dtype}, not a real "
                         "number dtype")
    if key == "step":
        if arr.size != 1:
            raise ValueError(f"loaded optimizer state 'step' of parameter {index} has shape {arr.shape}, not one "
                             "number")
        return Tensor._wrap(np.array(arr, dtype=np.float32))
    if arr.shape != tuple(param.shape):
        raise ValueError(f"loaded optimizer state {key!r} of parameter {index} has shape {arr.shape}, the "
                         f"parameter has shape {tuple(param.shape)}")
    if arr.dtype.kind == "f":
        arr = arr.astype(param.dtype)
    return Tensor._wrap(np.array(arr, copy=True))
