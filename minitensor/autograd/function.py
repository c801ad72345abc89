"""Function and Context: how an op records itself in the graph.

A differentiable op is a subclass of `Function` with two static methods, exactly as in PyTorch:

    class Exp(Function):
        @staticmethod
        def forward(ctx, x):              # x: Tensor; runs with grad mode off
            y = x.exp()
            ctx.save_for_backward(y)
            return y
        @staticmethod
        def backward(ctx, g):             # g: Tensor, the gradient of the loss w.r.t. y
            (y,) = ctx.saved_tensors
            return g * y                  # one gradient per forward argument (None where there is none)

    y = Exp.apply(x)

`apply` runs forward and, when grad mode is on and an input requires grad, links the outputs to a node
in the graph. The node is the `ctx` itself (as in PyTorch): it keeps what forward saved and the edges to
the nodes that produced the inputs. minitensor's own ops (minitensor/ops/) are Functions too; their forward
computes on the inputs' numpy arrays (`x._data`) and returns arrays, which `apply` wraps into Tensors.
"""
import traceback

import numpy as np

from . import anomaly, float_errors, grad_mode

# The active minitensor.profiler.profile, or None: the only thing profiling costs when it is off.
_profiler = None


class SavedTensorsFreedError(RuntimeError):
    pass


_Tensor = None  # minitensor.tensor.Tensor, bound on first use (tensor.py imports this module)


def _tensor_cls():
    global _Tensor
    if _Tensor is None:
        from ..tensor import Tensor

        _Tensor = Tensor
    return _Tensor


class Context:
    """A node of the graph and the `ctx` of one Function call.

    fn                the Function class whose backward this node runs
    next_functions    one edge per forward argument: (node, output_nr) of the input's producer, or None
                      for arguments that are not tensors requiring grad
    needs_input_grad  per forward argument: does it need a gradient?
    """

    __slots__ = ("fn", "next_functions", "needs_input_grad", "input_meta", "_saved", "__dict__", "__weakref__")

    # Rarely set, so class-level defaults (an instance sets its own only when it needs one): every op call makes
    # a Context, and each attribute set in __init__ is paid on every call, graph or no graph.
    num_outputs = 1
    output_meta = None
    _saved_versions = None
    _freed = False
    _pre_hooks = None
    _retained = None
    _materialize_grads = True
    _non_differentiable = None
    _trace = None

    def __init__(self, fn, needs_input_grad):
        self.fn = fn
        self.needs_input_grad = needs_input_grad
        self.next_functions = ()
        self.input_meta = ()
        self._saved = None

    # --- what forward may call -------------------------------------------------------------
    def save_for_backward(self, *tensors):
        """Keep tensors for backward. Each is checked, when read back, against in-place changes."""
        self._saved = tensors
        self._saved_versions = tuple(None if t is None else t._vc[0] for t in tensors)

    def mark_non_differentiable(self, *tensors):
        self._non_differentiable = tuple(id(t) for t in tensors)

    def set_materialize_grads(self, value):
        """With True (the default), gradients of unused outputs reach backward as zeros, not None."""
        self._materialize_grads = bool(value)

    # --- what backward may call ------------------------------------------------------------
    @property
    def saved_tensors(self):
        if self._freed:
            raise RuntimeError(
                f"{self.name()}: trying to backward through the graph a second time, or to read saved "
                "tensors after they were freed. The graph is freed by backward() unless you pass "
                "retain_graph=True."
            )
        if self._saved is None:
            return ()
        for i, (t, version) in enumerate(zip(self._saved, self._saved_versions)):
            if t is not None and t._vc[0] != version:
                raise RuntimeError(
                    f"{self.name()}: one of the variables needed for gradient computation has been modified by "
                    f"an inplace operation: saved tensor {i} ({t.dtype} of shape {tuple(t.shape)}) is at version "
                    f"{t._vc[0]}; expected version {version} instead. Use an out-of-place op, or clone() it first."
                )
        return self._saved

    # --- the engine's side -------------------------------------------------------------------
    def name(self):
        return self.fn.__name__ + "Backward"

    def release(self):
        """Free what forward saved (after a backward without retain_graph)."""
        self._saved = None
        self._freed = True

    def register_prehook(self, output_nr, hook):
        """A hook on the gradient of output `output_nr`, run before this node's backward."""
        if self._pre_hooks is None:
            self._pre_hooks = {}
        self._pre_hooks.setdefault(output_nr, []).append(hook)
        return RemovableHandle(self._pre_hooks[output_nr], hook)

    def retain_grad_of(self, output_nr, tensor_ref):
        """Store output `output_nr`'s gradient into the tensor behind weakref `tensor_ref` (after all hooks)."""
        if self._retained is None:
            self._retained = {}
        self._retained[output_nr] = tensor_ref
        if self._pre_hooks is None:
            self._pre_hooks = {}

    def __repr__(self):
        return f"<{self.name()}>"


class AccumulateGrad:
    """The node at a leaf that requires grad: adds the incoming gradient into `leaf.grad`.

    One per leaf, cached weakly on the tensor, so every use of the leaf in a graph points to the same
    node and the engine sums their contributions before accumulating once.
    """

    __slots__ = ("variable", "next_functions", "_pre_hooks", "__weakref__")
    num_outputs = 1

    def __init__(self, variable):
        self.variable = variable
        self.next_functions = ()
        self._pre_hooks = None

    def name(self):
        return "AccumulateGrad"

    def accumulate(self, grad, create_graph):
        leaf = self.variable
        if leaf.grad is None:
            # Store our own copy, in both modes: `grad` may be shared with other leaves (the two inputs of an add
            # get the same gradient object) or be a read-only broadcast view (a sum's backward), and later
            # accumulations, clip_grad_norm_ and zero_() write into leaf.grad in place. The copy is contiguous:
            # C order, or F order for an F-ordered leaf (PyTorch's grad layout follows a dense leaf's layout).
            # With create_graph it is a recorded clone, so the gradient stays differentiable.
            if create_graph:
                leaf.grad = grad.clone()
            else:
                data = leaf._data
                order = "F" if data.flags.f_contiguous and not data.flags.c_contiguous else "C"
                buf = np.empty(data.shape, dtype=data.dtype, order=order)
                np.copyto(buf, grad._data, casting="unsafe")
                leaf.grad = _tensor_cls()._wrap(buf)
        elif create_graph or leaf.grad.requires_grad:
            leaf.grad = leaf.grad + grad
        else:
            np.add(leaf.grad._data, grad._data, out=leaf.grad._data, casting="unsafe")
        if leaf._post_acc_hooks:
            for hook in list(leaf._post_acc_hooks):
                hook(leaf)

    def __repr__(self):
        return "<AccumulateGrad>"


class RemovableHandle:
    """Returned by register_hook: `handle.remove()` unregisters the hook."""

    def __init__(self, hooks, hook):
        self._hooks = hooks
        self._hook = hook

    def remove(self):
        hooks = self._hooks
        if self._hook in hooks:
            hooks.remove(self._hook)


def _edge(t):
    """The graph edge to where the gradient of tensor `t` must go."""
    if t.grad_fn is not None:
        return (t.grad_fn, t._output_nr)
    return (t._grad_accumulator(), 0)


class Function:
    """Base class of differentiable ops; subclass it with static forward(ctx, ...) and backward(ctx, ...)."""

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        for method in ("forward", "backward"):
            if not callable(getattr(cls, method, None)):
                raise TypeError(f"Function subclass {cls.__name__} must define a static {method}(ctx, ...)")

    def __init__(self, *args, **kwargs):
        raise TypeError(
            f"{type(self).__name__}: do not instantiate a Function; call {type(self).__name__}.apply(...)"
        )

    @classmethod
    def apply(cls, *args):
        if _profiler is not None:
            return _profiler._forward(cls, args)  # times this very call, with the hook off
        Tensor = _Tensor or _tensor_cls()
        tracking = False
        if getattr(grad_mode._state, "enabled", True):  # grad_mode.is_grad_enabled(), without the call
            for a in args:
                if isinstance(a, Tensor) and a._requires_grad:
                    tracking = True
                    break
        if not tracking:
            # No input needs a gradient, so no op inside forward can record one either: grad mode stays as it
            # is (no switching), and nothing is kept for a backward that will never run.
            quiet = float_errors.silence()  # log(0), 1/0: right answers, no numpy warning (as in PyTorch)
            try:
                out = cls.forward(Context(cls, _NO_GRAD.get(len(args)) or (False,) * len(args)), *args)
            finally:
                float_errors.restore(quiet)
            if type(out) is np.ndarray:  # the usual result, wrapped without the checks of _as_output
                return Tensor._wrap(out)
            if type(out) is tuple:
                return tuple(_as_output(o, args, Tensor, None, 0) for o in out)
            return _as_output(out, args, Tensor, None, 0)
        # the node's inputs in one pass: which need a gradient, the edge each one's gradient goes to, its meta
        needs, edges, metas = [], [], []
        for a in args:
            if isinstance(a, Tensor) and a._requires_grad:
                needs.append(True)
                edges.append(_edge(a))
                metas.append((a._data.shape, a._data.dtype))
            else:
                needs.append(False)
                edges.append(None)
                metas.append(None)
        ctx = Context(cls, tuple(needs))
        ctx.next_functions, ctx.input_meta = tuple(edges), tuple(metas)
        state = grad_mode._state  # forward records nothing itself: grad mode off while it runs (set directly,
        state.enabled = False     # as grad_mode._set_enabled does, without two calls per op)
        quiet = float_errors.silence()
        try:
            out = cls.forward(ctx, *args)
        finally:
            state.enabled = True
            float_errors.restore(quiet)

        if getattr(anomaly._state, "enabled", False):  # anomaly.is_enabled(), without the call
            ctx._trace = "".join(traceback.format_stack()[:-1])
        if type(out) is np.ndarray and out.dtype.kind == "f" and ctx._non_differentiable is None:
            t = Tensor._wrap(out)  # the usual result: _as_output's work, inline
            t.grad_fn = ctx
            t._requires_grad = True
            return t
        if type(out) is tuple:
            outs = tuple(_as_output(o, args, Tensor, ctx, i) for i, o in enumerate(out))
            ctx.num_outputs = len(outs)
            ctx.output_meta = tuple((o.shape, o.dtype) if isinstance(o, Tensor) else None for o in outs)
            return outs
        return _as_output(out, args, Tensor, ctx, 0)


_NO_GRAD = {n: (False,) * n for n in range(1, 5)}  # needs_input_grad of an untracked call, by input count


def _as_output(out, args, Tensor, ctx, output_nr):
    """Wrap one forward result as an output Tensor, linked to node `ctx` (None: not tracked)."""
    if isinstance(out, np.ndarray):
        t = Tensor._wrap(out)
    elif isinstance(out, Tensor):
        # forward returned a fresh tensor (keep it: it may be saved for backward) or one of its inputs
        # (alias it, so the input's own place in the graph is not overwritten).
        t = out if not any(out is a for a in args) else Tensor._wrap(out._data)
    elif isinstance(out, np.generic):
        t = Tensor._wrap(np.asarray(out))
    else:
        return out  # non-tensor outputs pass through
    if ctx is not None and t.dtype.kind == "f":
        if ctx._non_differentiable is None or id(out) not in ctx._non_differentiable:
            t.grad_fn = ctx
            t._output_nr = output_nr
            t._requires_grad = True
    return t

