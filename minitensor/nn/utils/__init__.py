"""nn.utils: gradient clipping, flattening parameters, and loading PyTorch weights saved with safetensors."""
import math

import numpy as np

from ...autograd.grad_mode import no_grad
from ...tensor import Tensor


def _grads(parameters):
    if isinstance(parameters, Tensor):
        parameters = [parameters]
    return [p.grad for p in parameters if p.grad is not None]


def clip_grad_norm_(parameters, max_norm, norm_type=2.0, error_if_nonfinite=False):
    """Scale all gradients together so their combined norm is at most max_norm; return the norm before clipping."""
    grads = _grads(parameters)
    norm_type = float(norm_type)
    if not grads:
        return Tensor._wrap(np.asarray(0.0, dtype=np.float32))
    if math.isinf(norm_type):
        total = max(float(np.abs(g._data).max()) if g.numel() else 0.0 for g in grads)
    else:
        total = sum(float(np.sum(np.abs(g._data.astype(np.float64)) ** norm_type)) for g in grads) ** (1.0 / norm_type)
    if error_if_nonfinite and not math.isfinite(total):
        raise RuntimeError(f"clip_grad_norm_: the total norm of order {norm_type} of the gradients is {total}")
    coef = max_norm / (total + 1e-6)
    if coef < 1:
        with no_grad():
            for g in grads:
                g._data *= g._data.dtype.type(coef)
                g._vc[0] += 1
    return Tensor._wrap(np.asarray(total, dtype=grads[0].dtype))


def clip_grad_value_(parameters, clip_value):
    """Clamp every gradient element to [-clip_value, clip_value] in place."""
    with no_grad():
        for g in _grads(parameters):
            np.clip(g._data, -clip_value, clip_value, out=g._data)
            g._vc[0] += 1


def parameters_to_vector(parameters):
    """All parameters flattened into one 1-D tensor (a copy)."""
    return Tensor._wrap(np.concatenate([p.detach()._data.reshape(-1) for p in parameters]))


def vector_to_parameters(vec, parameters):
    """The inverse of parameters_to_vector: copy slices of vec into the parameters, in place."""
    data = vec._data
    offset = 0
    with no_grad():
        for p in parameters:
            n = p.numel()
            if offset + n > data.size:
                raise ValueError(f"vector_to_parameters: vec has {data.size} elements, too few for the parameters")
            p._data[...] = data[offset: offset + n].reshape(p.shape)
            p._vc[0] += 1
            offset += n
    if offset != data.size:
        raise ValueError(f"vector_to_parameters: vec has {data.size} elements, parameters take {offset}")


def load_torch_safetensors(module, path, strict=True):
    """Load a PyTorch state_dict saved with `safetensors.torch.save_file(model.state_dict(), path)` into the
    minitensor module of the same architecture (keys and shapes match by construction). BF16 weights load as
    float32; a damaged file is a ValueError naming it (minitensor.load's checks)."""
    from ...utils.checkpoint import load

    return module.load_state_dict(load(path), strict=strict)


from . import rnn  # noqa: E402  (nn.utils.rnn: packed sequences)
