"""to_dot(t): the autograd graph behind a tensor as Graphviz DOT source (no Graphviz needed to make it).

Boxes are backward nodes (the op name and the shapes of its inputs), ovals are leaves that receive a
.grad (AccumulateGrad, with the leaf's shape); edges run the way gradients flow, from the output down to
the leaves. Render with `dot -Tpng graph.dot -o graph.png`, or paste into any Graphviz viewer.
"""
from ..autograd.function import AccumulateGrad


def _shape(shape):
    return str(tuple(shape))


def to_dot(t, name="autograd"):
    if t.grad_fn is None and not t.requires_grad:
        raise ValueError("to_dot: this tensor has no graph (it does not require grad)")
    ids = {}

    def node_id(node):
        if node not in ids:
            ids[node] = f"n{len(ids)}"
        return ids[node]

    lines = [f"digraph {name} {{", "  rankdir=TB;", '  node [fontname="Helvetica", fontsize=11];']
    lines.append(f'  out [label="output {_shape(t.shape)}", shape=plaintext];')
    root = t.grad_fn if t.grad_fn is not None else t._grad_accumulator()
    lines.append(f"  out -> {node_id(root)};")
    seen, stack = {root}, [root]
    while stack:
        node = stack.pop()
        if type(node) is AccumulateGrad:
            lines.append(f'  {node_id(node)} [label="leaf {_shape(node.variable.shape)}", shape=ellipse, '
                         'style=filled, fillcolor="#cfe8cf"];')
            continue
        inputs = ", ".join(_shape(m[0]) for m in node.input_meta if m is not None)
        lines.append(f'  {node_id(node)} [label="{node.name()}\\n{inputs}", shape=box];')
        for edge in node.next_functions:
            if edge is None:
                continue
            nxt = edge[0]
            lines.append(f"  {node_id(node)} -> {node_id(nxt)};")
            if nxt not in seen:
                seen.add(nxt)
                stack.append(nxt)
    lines.append("}")
    return "\n".join(lines) + "\n"
