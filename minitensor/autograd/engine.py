"""The engine: reverse-mode autograd as one iterative walk of the graph.

The graph is made of nodes (the `ctx` of each Function call, and one AccumulateGrad per leaf); each node
has `next_functions`, one edge (node, output_nr) per input. backward() walks it from the output:

  1. plan     find every node reachable from the roots and count, for each, how many edges bring it a
              gradient (its dependencies). With targets (autograd.grad), keep only the nodes that lead to them.
  2. walk     a node is ready once all its dependencies have delivered: then its gradient is complete, so
              run its backward and send each input's gradient along its edge, summing where edges meet.

Counting dependencies is what makes the order topological. In `b = a + a; c = b + b`, b's node must wait for
*both* edges from c before it runs; a depth-first walk that visited b after the first edge would send on
half of b's gradient. No recursion anywhere, so a chain of 100,000 ops is fine, and each node and edge is
touched a constant number of times, so the walk is linear in the size of the graph.

Backward formulas are Tensor ops run with grad mode set to `create_graph`: with True they record a graph of
their own, which is how higher-order gradients work. This file is also compiled by Cython, unchanged
(minitensor/autograd/_engine.pyx includes it), as the faster twin; `set_engine` picks one.
"""
import numpy as np

from . import anomaly, grad_mode
from .function import AccumulateGrad, _edge

# The active minitensor.profiler.profile, or None (set on both engines by the profiler).
_profiler = None


def backward(tensors, grad_tensors=None, retain_graph=None, create_graph=False, inputs=None):
    """Accumulate d(tensors)/d(leaf) into the .grad of every leaf that requires grad (or only `inputs`)."""
    tensors = _as_list(tensors)
    grads = _root_grads(tensors, grad_tensors, "backward")
    if retain_graph is None:
        retain_graph = create_graph
    roots = [_edge(t) for t in tensors]
    if inputs is None:
        _run(roots, grads, retain_graph, create_graph, None)
        return
    inputs = _as_list(inputs)
    if not inputs:
        raise RuntimeError("backward: `inputs` was given but is empty")
    captured = _run(roots, grads, retain_graph, create_graph, [_edge(_needs_grad(t, "backward")) for t in inputs])
    for t, g in zip(inputs, captured):
        if g is not None:
            AccumulateGrad(t).accumulate(g, create_graph)


def grad(outputs, inputs, grad_outputs=None, retain_graph=None, create_graph=False, allow_unused=False):
    """Return d(outputs)/d(inputs) as a tuple, without touching any .grad."""
    outputs = _as_list(outputs)
    inputs = _as_list(inputs)
    grads = _root_grads(outputs, grad_outputs, "grad")
    if retain_graph is None:
        retain_graph = create_graph
    targets = [_edge(_needs_grad(t, "grad")) for t in inputs]
    captured = _run([_edge(t) for t in outputs], grads, retain_graph, create_graph, targets)
    for i, g in enumerate(captured):
        if g is None and not allow_unused:
            raise RuntimeError(
                f"grad: input {i} (shape {tuple(inputs[i].shape)}) was not used to compute the outputs; "
                "pass allow_unused=True to get None for it"
            )
    return tuple(captured)


def _run(roots, root_grads, keep_graph, create_graph, targets):
    """Propagate root_grads from the root edges. With `targets` (a list of edges), return the gradient
    arriving at each target instead of accumulating into leaves."""
    root_nodes = []
    for node, _ in roots:
        if node not in root_nodes:
            root_nodes.append(node)
    runs, deps = _plan(root_nodes, None if targets is None else {n for n, _ in targets})

    buffers = {}  # node -> list of gradients, one per output, summed as they arrive
    for (node, nr), g in zip(roots, root_grads):
        buf = buffers.setdefault(node, [None] * node.num_outputs)
        buf[nr] = g if buf[nr] is None else buf[nr] + g
    captured = {} if targets is None else {edge: None for edge in targets}
    ready = [node for node in root_nodes if deps.get(node, 0) == 0]

    prev_mode = grad_mode._set_enabled(create_graph)
    try:
        while ready:
            node = ready.pop()
            grads = buffers.pop(node, None)
            if grads is None:
                grads = [None] * node.num_outputs
            if node._pre_hooks is not None or type(node) is AccumulateGrad:
                grads = _run_hooks(node, grads)
            if targets is not None:
                for i in range(len(grads)):
                    if (node, i) in captured:
                        captured[(node, i)] = grads[i]
            if node not in runs:
                continue
            if type(node) is AccumulateGrad:
                if grads[0] is not None:
                    node.accumulate(grads[0], create_graph)
                continue
            input_grads = _call_backward(node, grads, keep_graph)
            for edge, g in zip(node.next_functions, input_grads):
                if edge is None:
                    continue
                nxt, nr = edge
                if g is not None:
                    buf = buffers.get(nxt)
                    if buf is None:
                        buf = buffers[nxt] = [None] * nxt.num_outputs
                    buf[nr] = g if buf[nr] is None else buf[nr] + g
                left = deps[nxt] - 1
                deps[nxt] = left
                if left == 0:
                    ready.append(nxt)
    finally:
        grad_mode._set_enabled(prev_mode)
    if targets is None:
        return None
    return [captured[edge] for edge in targets]


def _plan(root_nodes, target_nodes):
    """Return (nodes whose backward runs, {node: number of gradient edges it waits for})."""
    users = {}  # node -> the nodes that send it a gradient, once per edge
    seen = set(root_nodes)
    stack = list(root_nodes)
    while stack:
        node = stack.pop()
        for edge in node.next_functions:
            if edge is None:
                continue
            nxt = edge[0]
            if nxt in users:
                users[nxt].append(node)
            else:
                users[nxt] = [node]
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    if target_nodes is None:
        runs = seen
    else:
        # Only nodes from which a target can be reached run (walk the edges backwards from the targets);
        # leaves' AccumulateGrad never runs, so autograd.grad leaves every .grad alone.
        runs = set()
        stack = [n for n in target_nodes if n in seen]
        while stack:
            node = stack.pop()
            for user in users.get(node, ()):
                if user not in runs:
                    runs.add(user)
                    stack.append(user)
    deps = {}
    for node, node_users in users.items():
        deps[node] = len(node_users) if runs is seen else sum(1 for u in node_users if u in runs)
    return runs, deps


def _call_backward(node, grads, keep_graph):
    """Run one node's backward and check what it returns: one gradient per forward argument."""
    n_inputs = len(node.next_functions)
    missing = 0  # (plain loops: this runs for every node, and all()/any() over generators cost more)
    for g in grads:
        if g is None:
            missing += 1
    if missing == len(grads):
        return (None,) * n_inputs  # no gradient reached this node: nothing flows on
    if node._freed:
        raise RuntimeError(
            f"{node.name()}: trying to backward through the graph a second time. backward() frees the "
            "graph it walks; pass retain_graph=True to the first call if you need to walk it again."
        )
    if missing and node._materialize_grads:
        grads = [g if g is not None else _zeros(meta) for g, meta in zip(grads, node.output_meta)]
    if _profiler is None:
        result = node.fn.backward(node, *grads)
    else:
        result = _profiler._backward(node, grads)
    if type(result) is not tuple:
        result = (result,)
    if len(result) != n_inputs:
        raise RuntimeError(
            f"{node.name()}: backward returned {len(result)} gradients, but forward had {n_inputs} arguments "
            "(return None for arguments that need no gradient)"
        )
    if not keep_graph:
        node.release()
    for i, (g, meta) in enumerate(zip(result, node.input_meta)):
        if g is None or meta is None:
            continue
        data = getattr(g, "_data", None)
        if data is None:
            raise TypeError(f"{node.name()}: backward returned {type(g).__name__} for input {i}; expected a Tensor")
        if data.shape != meta[0]:
            raise RuntimeError(
                f"{node.name()}: backward returned a gradient of shape {tuple(g.shape)} for input {i}, "
                f"which has shape {tuple(meta[0])}"
            )
        if data.dtype != meta[1]:
            result = result[:i] + (g.to(meta[1]),) + result[i + 1:]
    if getattr(anomaly._state, "enabled", False):  # anomaly.is_enabled(), without the call
        anomaly.check_gradients(node, result)
    return result


def _run_hooks(node, grads):
    """Tensor hooks: on a leaf they live on the tensor, on a non-leaf on its node (per output)."""
    if type(node) is AccumulateGrad:
        hooks = {0: node.variable._hooks} if node.variable._hooks else None
        retained = None
    else:
        hooks, retained = node._pre_hooks, node._retained
    grads = list(grads)
    for nr, fns in (hooks or {}).items():
        for fn in list(fns):
            if grads[nr] is None:
                break
            out = fn(grads[nr])
            if out is not None:
                grads[nr] = _checked_hook_result(fn, out, grads[nr])
    for nr, ref in (retained or {}).items():  # retain_grad() sees the gradient after every hook
        t = ref()
        if t is not None and grads[nr] is not None:
            AccumulateGrad(t).accumulate(grads[nr], grad_mode.is_grad_enabled())
    return grads


def _checked_hook_result(hook, out, grad):
    """A hook's replacement gradient must look like the one it was given (PyTorch's rule): a Tensor of the
    same shape and dtype. Anything else would fail later, in a backward that knows nothing of the hook."""
    name = getattr(hook, "__qualname__", None) or getattr(hook, "__name__", None) or repr(hook)
    data = getattr(out, "_data", None)
    if data is None or not isinstance(data, np.ndarray):
        raise TypeError(f"hook {name!r} returned {type(out).__name__}; expected a Tensor of shape "
                        f"{tuple(grad.shape)} (the gradient) or None")
    if data.shape != grad._data.shape:
        raise RuntimeError(f"hook {name!r} has changed the size of value: it returned a gradient of shape "
                           f"{tuple(data.shape)}, expected shape {tuple(grad.shape)}")
    if data.dtype != grad._data.dtype:
        raise RuntimeError(f"hook {name!r} has changed the type of value: it returned a gradient of dtype "
                           f"{data.dtype}, expected {grad.dtype}")
    return out


def _root_grads(tensors, grad_tensors, op):
    from ..tensor import Tensor

    if grad_tensors is None:
        grad_tensors = [None] * len(tensors)
    else:
        grad_tensors = _as_list(grad_tensors)
        if len(grad_tensors) != len(tensors):
            raise RuntimeError(f"{op}: got {len(tensors)} tensors but {len(grad_tensors)} gradients")
    grads = []
    for i, (t, g) in enumerate(zip(tensors, grad_tensors)):
        if not isinstance(t, Tensor):
            raise TypeError(f"{op}: expected Tensors, got {type(t).__name__} at position {i}")
        if not t.requires_grad:
            raise RuntimeError(
                f"{op}: element {i} of the tensors does not require grad and has no grad_fn: "
                "nothing to differentiate (did you forget requires_grad=True, or run under no_grad?)"
            )
        if g is None:
            if t.numel() != 1:
                raise RuntimeError(
                    f"{op}: the gradient can be created implicitly only for scalar outputs; this output has "
                    f"shape {tuple(t.shape)}, so pass `gradient` (a tensor of that shape)"
                )
            g = Tensor._wrap(np.ones(t.shape, dtype=t.dtype))
        else:
            if not isinstance(g, Tensor):
                g = Tensor._wrap(np.asarray(g, dtype=t.dtype))
            if g.shape != t.shape:
                raise RuntimeError(
                    f"{op}: gradient {i} has shape {tuple(g.shape)} but the output has shape {tuple(t.shape)}"
                )
        grads.append(g)
    return grads


def _needs_grad(t, op):
    if not t.requires_grad:
        raise RuntimeError(f"{op}: one of the inputs (shape {tuple(t.shape)}) does not require grad")
    return t


def _zeros(meta):
    from ..tensor import Tensor

    return Tensor._wrap(np.zeros(meta[0], dtype=meta[1]))


def _as_list(x):
    if isinstance(x, (list, tuple)):
        return list(x)
    return [x]
