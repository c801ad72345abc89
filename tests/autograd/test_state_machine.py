"""A stateful test of the engine: hypothesis drives random sequences of op creation, backward (with and
without retain_graph), zero_grad, no_grad blocks, reused non-leaf nodes and in-place ops, and every
gradient is checked against a naive reference engine.

The reference knows nothing of minitensor's graph: every tensor carries its value and its dense Jacobian
with respect to each leaf (forward-mode chain rule, d(out)/d(leaf) = sum over inputs of local Jacobian @
d(input)/d(leaf)). A backward of (x * w).sum() must then add wᵀ J_x[leaf] to each leaf's gradient. It also
tracks which graph nodes a backward has freed and which saved tensors in-place ops have overwritten, to
predict exactly when minitensor must raise instead.
"""
import itertools

import numpy as np
import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, precondition, rule

import minitensor as mt

N = 3  # every tensor in the machine has shape (N,)
_ids = itertools.count()


class Ref:
    """A tensor in the machine, with the reference's view of it."""

    def __init__(self, tensor, value, jac, graph=frozenset(), deps=frozenset()):
        self.id = next(_ids)
        self.tensor = tensor
        self.value = value        # expected forward value
        self.jac = jac            # {leaf Ref id: (N, N) Jacobian d self / d leaf}
        self.graph = graph        # ids of the (reference) nodes behind this tensor
        self.deps = deps          # {(Ref id, version)}: saved tensors the backward of `graph` will read
        self.version = 0

    @property
    def requires_grad(self):
        return bool(self.jac)


def combine(*terms):
    """Sum of (matrix, jac dict) terms: sum_i M_i @ J_i, key by key."""
    out = {}
    for m, jac in terms:
        for leaf, j in jac.items():
            out[leaf] = out.get(leaf, 0) + m @ j
    return out


class EngineMachine(RuleBasedStateMachine):
    tensors = Bundle("tensors")

    def __init__(self):
        super().__init__()
        self.leaves = []
        self.expected_grad = {}   # leaf id -> expected .grad (None until first accumulation)
        self.freed = set()        # reference node ids whose saved state backward has freed
        self.refs = {}
        self.count = 0

    def _add(self, ref):
        self.refs[ref.id] = ref
        self.count += 1
        return ref

    def _node(self):
        return next(_ids)

    # ------------------------------------------------------------------ creating tensors
    @precondition(lambda self: self.count < 16)
    @rule(target=tensors, values=st.lists(st.floats(-1.5, 1.5), min_size=N, max_size=N))
    def new_leaf(self, values):
        t = mt.tensor(values, dtype=mt.float64, requires_grad=True)
        ref = Ref(t, np.array(values), None)
        ref.jac = {ref.id: np.eye(N)}
        self.leaves.append(ref)
        self.expected_grad[ref.id] = None
        return self._add(ref)

    @precondition(lambda self: self.count < 16)
    @rule(target=tensors, x=tensors, op=st.sampled_from(["tanh", "sin", "scale"]))
    def unary(self, x, op):
        node = self._node()
        if op == "tanh":
            t = x.tensor.tanh()
            value = np.tanh(x.value)
            local = np.diag(1 - value ** 2)
        elif op == "sin":
            t = x.tensor.sin()
            value = np.sin(x.value)
            local = np.diag(np.cos(x.value))
        else:
            t = x.tensor * 1.5
            value = 1.5 * x.value
            local = 1.5 * np.eye(N)
        ref = Ref(t, value, combine((local, x.jac)))
        if ref.requires_grad:
            ref.graph = x.graph | {node}
            saved = {"tanh": {ref}, "sin": {x}, "scale": set()}[op]  # what each backward reads
            ref.deps = x.deps | {(s.id, s.version) for s in saved}
        return self._add(ref)

    @precondition(lambda self: self.count < 16)
    @rule(target=tensors, a=tensors, b=tensors, op=st.sampled_from(["add", "mul", "sub"]))
    def binary(self, a, b, op):
        # a and b may be the same tensor: the reused-node case (b = a + a; c = b + b)
        node = self._node()
        if op == "add":
            t, value, jac = a.tensor + b.tensor, a.value + b.value, combine((np.eye(N), a.jac), (np.eye(N), b.jac))
        elif op == "sub":
            t, value, jac = a.tensor - b.tensor, a.value - b.value, combine((np.eye(N), a.jac), (-np.eye(N), b.jac))
        else:
            t, value = a.tensor * b.tensor, a.value * b.value
            jac = combine((np.diag(b.value), a.jac), (np.diag(a.value), b.jac))
        ref = Ref(t, value, jac)
        if ref.requires_grad:
            ref.graph = a.graph | b.graph | {node}
            saved = set()
            if op == "mul":  # MulBackward keeps b if a needs a gradient, and a if b does
                saved = ({b} if a.requires_grad else set()) | ({a} if b.requires_grad else set())
            ref.deps = a.deps | b.deps | {(s.id, s.version) for s in saved}
        return self._add(ref)

    @precondition(lambda self: self.count < 16)
    @rule(target=tensors, t=tensors)
    def reused_node(self, t):
        """b = t + t; c = b * b + (tanh(b) * sin(b) + b): b's node receives gradients over five edges from
        four different nodes, delivered at different points of the walk, and must wait for all of them."""
        b = self.binary(t, t, "add")
        square = self.binary(b, b, "mul")
        mixed = self.binary(self.binary(self.unary(b, "tanh"), self.unary(b, "sin"), "mul"), b, "add")
        return self.binary(square, mixed, "add")

    @precondition(lambda self: self.count < 16)
    @rule(target=tensors, t=tensors, op=st.sampled_from(["sin", "tanh"]))
    def saved_then_modified(self, t, op):
        """h = 1.5 t; y = op(h); h *= 0.5 in place: SinBackward saved h itself, TanhBackward saved y (not h),
        so a backward through y must raise for sin and must work for tanh."""
        h = self.unary(t, "scale")
        y = self.unary(h, op)
        self.inplace_scale(h)
        return y

    @precondition(lambda self: self.count < 16)
    @rule(target=tensors, a=tensors, b=tensors)
    def under_no_grad(self, a, b):
        with mt.no_grad():
            t = a.tensor * b.tensor + a.tensor
        assert not t.requires_grad and t.grad_fn is None
        return self._add(Ref(t, a.value * b.value + a.value, {}))

    # ------------------------------------------------------------------ in-place ops
    @rule(t=tensors, u=tensors)
    def inplace_add(self, t, u):
        if t.tensor.is_leaf and t.tensor.requires_grad:
            with pytest.raises(RuntimeError, match="leaf tensor that requires grad"):
                t.tensor.add_(u.tensor)
            return
        old_graph, old_deps, old_jac, u_jac, u_value = t.graph, t.deps, t.jac, u.jac, u.value
        t.tensor.add_(u.tensor)
        t.value = t.value + u_value
        t.version += 1
        t.jac = combine((np.eye(N), old_jac), (np.eye(N), u_jac))
        if t.requires_grad:  # clone of the old t, then an add: neither saves anything
            t.graph = old_graph | u.graph | {self._node(), self._node()}
            t.deps = old_deps | u.deps

    @rule(t=tensors)
    def inplace_scale(self, t):
        if t.tensor.is_leaf and t.tensor.requires_grad:
            return
        t.tensor.mul_(0.5)
        t.value = 0.5 * t.value
        t.version += 1
        t.jac = combine((0.5 * np.eye(N), t.jac))
        if t.requires_grad:
            t.graph = t.graph | {self._node(), self._node()}

    # ------------------------------------------------------------------ backward and friends
    @rule(x=tensors, weights=st.lists(st.floats(-2, 2), min_size=N, max_size=N), retain=st.booleans())
    def backward(self, x, weights, retain):
        w = np.array(weights)
        if not x.requires_grad:
            with pytest.raises(RuntimeError, match="does not require grad"):
                (x.tensor * mt.tensor(w)).sum().backward()
            return
        freed = bool(x.graph & self.freed)
        stale = any(self.refs[i].version != v for i, v in x.deps)
        if freed or stale:
            with pytest.raises(RuntimeError, match="second time|modified by an inplace operation"):
                (x.tensor * mt.tensor(w)).sum().backward(retain_graph=retain)
            self._resync()  # some leaves may have accumulated before the error: take them as they are
            return
        (x.tensor * mt.tensor(w)).sum().backward(retain_graph=retain)
        for leaf_id, j in x.jac.items():
            g = w @ j
            prev = self.expected_grad[leaf_id]
            self.expected_grad[leaf_id] = g if prev is None else prev + g
        if not retain:
            self.freed |= x.graph

    @rule()
    def zero_grad(self):
        for leaf in self.leaves:
            leaf.tensor.grad = None
            self.expected_grad[leaf.id] = None

    def _resync(self):
        for leaf in self.leaves:
            g = leaf.tensor.grad
            self.expected_grad[leaf.id] = None if g is None else g.numpy().copy()

    # ------------------------------------------------------------------ what must always hold
    @invariant()
    def gradients_match_the_reference(self):
        for leaf in self.leaves:
            expected, actual = self.expected_grad[leaf.id], leaf.tensor.grad
            if expected is None:
                assert actual is None, f"leaf {leaf.id} has a gradient but should have none"
            else:
                assert actual is not None, f"leaf {leaf.id} has no gradient"
                np.testing.assert_allclose(actual.numpy(), expected, rtol=1e-10, atol=1e-12)

    @invariant()
    def values_match_the_reference(self):
        for ref in self.refs.values():
            np.testing.assert_allclose(ref.tensor.detach().numpy(), ref.value, rtol=1e-12, atol=1e-12)
            assert ref.tensor.requires_grad == ref.requires_grad


EngineMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=30, deadline=None)
TestEngineMachine = EngineMachine.TestCase
