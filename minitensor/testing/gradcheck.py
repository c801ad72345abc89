"""gradcheck / gradgradcheck: compare autograd's gradients with central finite differences, in float64.

Two modes, as in PyTorch:
- full (fast_mode=False): build the whole Jacobian both ways, one backward per output element and two
  forwards per input element. Exact about *where* a mismatch is; for small tensors.
- fast (fast_mode=True): the random-projection test. For random u (input space) and v (output space),
  v . (J u) from two forwards along u must equal (vᵀ J) . u from one backward with v. Cheap at any size,
  so property-based tests can afford hundreds of examples.
"""
import numpy as np

from ..autograd import grad as autograd_grad
from ..autograd.grad_mode import enable_grad, no_grad
from ..tensor import Tensor


class GradcheckError(AssertionError):
    pass


def _outputs(fn, inputs):
    out = fn(*inputs)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [o for o in outs if isinstance(o, Tensor)]


def _diff_inputs(inputs, allow_float32):
    diff = []
    for i, t in enumerate(inputs):
        if isinstance(t, Tensor) and t.requires_grad:
            if t.dtype != np.float64 and not allow_float32:
                raise ValueError(
                    f"gradcheck: input {i} is {t.dtype}; finite differences need float64 "
                    "(pass allow_float32=True to check anyway, with loose tolerances)"
                )
            diff.append(i)
    if not diff:
        raise ValueError("gradcheck: no input requires grad")
    return diff


def _numerical_directional(fn, inputs, diff, direction, eps):
    """d/dt fn(inputs + t * direction) at t=0, by central differences (one array per output)."""
    with no_grad():
        originals = [inputs[i]._data.copy() for i in diff]
        try:
            for i, d in zip(diff, direction):
                inputs[i]._data += eps * d
            plus = [o._data.astype(np.float64) for o in _outputs(fn, inputs)]
            for i, d, orig in zip(diff, direction, originals):
                inputs[i]._data[...] = orig - eps * d
            minus = [o._data.astype(np.float64) for o in _outputs(fn, inputs)]
        finally:
            for i, orig in zip(diff, originals):
                inputs[i]._data[...] = orig
    return [(p - m) / (2 * eps) for p, m in zip(plus, minus)]


def _vjp(fn, inputs, diff, v):
    outs = _outputs(fn, inputs)
    pairs = [(o, vv) for o, vv in zip(outs, v) if o.requires_grad]
    if not pairs:
        return [np.zeros(inputs[i].shape) for i in diff]
    grads = autograd_grad(
        [o for o, _ in pairs], [inputs[i] for i in diff],
        [Tensor._wrap(vv.astype(o.dtype)) for o, vv in pairs], allow_unused=True,
    )
    return [np.zeros(inputs[i].shape) if g is None else g._data.astype(np.float64) for i, g in zip(diff, grads)]


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True, fast_mode=False,
              allow_float32=False, seed=0):
    """Check autograd's gradients of fn(*inputs) against finite differences; True if they agree.

    Raises GradcheckError (with the worst element) on a mismatch unless raise_exception=False.
    """
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    diff = _diff_inputs(inputs, allow_float32)
    outs = _outputs(fn, inputs)
    rng = np.random.default_rng(seed)
    try:
        if fast_mode:
            _check_fast(fn, inputs, diff, outs, eps, atol, rtol, rng)
        else:
            _check_full(fn, inputs, diff, outs, eps, atol, rtol)
    except GradcheckError:
        if raise_exception:
            raise
        return False
    return True


def _check_fast(fn, inputs, diff, outs, eps, atol, rtol, rng):
    u = [rng.standard_normal(inputs[i].shape) for i in diff]
    v = [rng.standard_normal(o.shape) for o in outs]
    numerical = _numerical_directional(fn, inputs, diff, u, eps)
    lhs = sum(float(np.sum(vv * n)) for vv, n in zip(v, numerical))
    analytical = _vjp(fn, inputs, diff, v)
    rhs = sum(float(np.sum(a * uu)) for a, uu in zip(analytical, u))
    if not abs(lhs - rhs) <= atol + rtol * abs(lhs):
        raise GradcheckError(
            f"gradcheck (fast mode): v.(J u) by finite differences is {lhs:.10g} but (vᵀJ).u by autograd is "
            f"{rhs:.10g} (difference {abs(lhs - rhs):.3g}, allowed {atol + rtol * abs(lhs):.3g}); input shapes "
            f"{[tuple(inputs[i].shape) for i in diff]}. Run with fast_mode=False to locate the element."
        )


def _check_full(fn, inputs, diff, outs, eps, atol, rtol):
    for k, i in enumerate(diff):
        x = inputs[i]
        n_in = x.numel()
        numerical = [np.zeros((o.numel(), n_in)) for o in outs]
        for j in range(n_in):
            direction = [np.zeros(inputs[d].shape) for d in diff]
            direction[k].reshape(-1)[j] = 1.0
            cols = _numerical_directional(fn, inputs, diff, direction, eps)
            for o, col in enumerate(cols):
                numerical[o][:, j] = col.reshape(-1)
        for o, out in enumerate(outs):
            analytical = np.zeros((out.numel(), n_in))
            for r in range(out.numel()):
                v = [np.zeros(oo.shape) for oo in outs]
                v[o].reshape(-1)[r] = 1.0
                analytical[r] = _vjp(fn, inputs, diff, v)[k].reshape(-1)
            err = np.abs(analytical - numerical[o])
            bad = err > atol + rtol * np.abs(numerical[o])
            if bad.any():
                r, c = np.unravel_index(np.argmax(np.where(bad, err, -1)), err.shape)
                raise GradcheckError(
                    f"gradcheck: Jacobian mismatch for output {o} w.r.t. input {i} (shape {tuple(x.shape)}): "
                    f"at output element {r}, input element {c}: numerical {numerical[o][r, c]:.10g}, "
                    f"analytical {analytical[r, c]:.10g} ({int(bad.sum())} of {bad.size} elements differ)"
                )


def gradgradcheck(fn, inputs, grad_outputs=None, eps=1e-6, atol=1e-5, rtol=1e-3, raise_exception=True,
                  fast_mode=False, seed=0):
    """Check second derivatives: gradcheck the function (inputs, v) -> vᵀ J, computed with create_graph=True."""
    inputs = tuple(inputs) if isinstance(inputs, (tuple, list)) else (inputs,)
    outs = _outputs(fn, inputs)
    rng = np.random.default_rng(seed + 1)
    if grad_outputs is None:
        grad_outputs = [Tensor._from_data(rng.standard_normal(o.shape), requires_grad=True) for o in outs]
    n = len(inputs)
    diff = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]

    def first_derivative(*args):
        xs, vs = args[:n], args[n:]
        with enable_grad():  # also inside gradcheck's no_grad finite differences
            res = _outputs(fn, xs)
            grads = autograd_grad(res, [xs[i] for i in diff], list(vs), create_graph=True, allow_unused=True)
        return tuple(g for g in grads if g is not None)

    return gradcheck(first_derivative, tuple(inputs) + tuple(grad_outputs), eps=eps, atol=atol, rtol=rtol,
                     raise_exception=raise_exception, fast_mode=fast_mode, seed=seed)
