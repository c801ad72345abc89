"""minitensor.profiler: per-op calls, times, FLOPs and backend; nothing recorded outside the context, no double
counting of nested ops, no effect on results, on both engines and both backends."""
import numpy as np
import pytest

import minitensor as mt
from minitensor import autograd, nn
from minitensor.autograd import Function, function
from minitensor.profiler import profile

ROW_KEYS = {"name", "calls", "forward_ms", "backward_ms", "total_ms", "flops", "bytes", "backend"}


class Block(nn.Module):
    """One attention head and an MLP on (B, T, D) tokens: 3 Linear layers (bias fused into the GEMM) and 2
    matmuls."""

    def __init__(self, d, hidden):
        super().__init__()
        self.qkv = nn.Linear(d, 3 * d)
        self.fc1 = nn.Linear(d, hidden)
        self.fc2 = nn.Linear(hidden, d)

    def forward(self, x):
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        attn = mt.softmax(q @ k.mT * q.shape[-1] ** -0.5, dim=-1)
        x = x + attn @ v
        return x + self.fc2(mt.gelu(self.fc1(x)))


B, T, D, H = 2, 5, 8, 16
MATMUL_FLOPS = (2 * B * T * T * D          # q @ kᵀ: B products (T, D) @ (D, T)
                + 2 * B * T * D * T)       # attn @ v: B products (T, T) @ (T, D)
LINEAR_FLOPS = (2 * B * T * D * 3 * D      # qkv: (B*T, D) @ (D, 3D)
                + 2 * B * T * D * H        # fc1
                + 2 * B * T * H * D)       # fc2


def run_block(seed=0):
    mt.manual_seed(seed)
    block = Block(D, H)
    x = mt.randn(B, T, D, requires_grad=True)
    out = block(x)
    (out * out).mean().backward()
    return out, [x.grad] + [p.grad for p in block.parameters()]


def test_block_records_matmul_calls_flops_backward_and_backend(engine, backend):
    with profile() as prof:
        run_block()
    rows = {r["name"]: r for r in prof.key_averages()}
    assert all(set(r) == ROW_KEYS for r in rows.values())
    matmul, linear = rows["Matmul"], rows["Linear"]
    # the backward formulas run matmuls of their own: they belong to their op, so the counts stay at the forward calls
    assert (matmul["calls"], linear["calls"]) == (2, 3)
    assert (matmul["flops"], linear["flops"]) == (MATMUL_FLOPS, LINEAR_FLOPS)
    assert matmul["backend"] == linear["backend"] == backend
    assert rows["Add"]["backend"] == "numpy"  # numpy ufuncs under either backend
    for name in ("Matmul", "Linear", "Softmax", "Gelu", "Add", "Mean"):
        assert rows[name]["forward_ms"] > 0 and rows[name]["backward_ms"] > 0, name
        assert rows[name]["total_ms"] == pytest.approx(rows[name]["forward_ms"] + rows[name]["backward_ms"])
        assert rows[name]["flops"] is None or name in ("Matmul", "Linear")
    assert rows["Gelu"]["bytes"] == 2 * B * T * H * 4  # float32 in and out
    times = [r["total_ms"] for r in prof.key_averages()]
    assert times == sorted(times, reverse=True)


def test_profiling_leaves_results_bitwise_equal(engine, backend):
    out, grads = run_block()
    with profile():
        out_p, grads_p = run_block()
    assert out.detach().numpy().tobytes() == out_p.detach().numpy().tobytes()
    for g, g_p in zip(grads, grads_p):
        assert g.numpy().tobytes() == g_p.numpy().tobytes()


@pytest.mark.parametrize("a_shape, b_shape, flops", [
    ((3,), (3, 4), 2 * 1 * 4 * 3),
    ((4,), (4,), 2 * 4),
    ((2, 3, 4), (4, 5), 2 * 2 * 3 * 5 * 4),
    ((5, 1, 3, 4), (2, 4, 6), 2 * (5 * 2) * 3 * 6 * 4),  # broadcast batch dims
])
def test_matmul_flops_by_shape(a_shape, b_shape, flops):
    a, b = mt.randn(*a_shape), mt.randn(*b_shape)
    with profile() as prof:
        a @ b
    (row,) = prof.key_averages()
    assert (row["name"], row["calls"], row["flops"]) == ("Matmul", 1, flops)
    assert row["bytes"] == (a.numel() + b.numel() + (a @ b).numel()) * 4
    assert row["backward_ms"] == 0


def test_conv2d_flops_are_its_gemm():
    x, w = mt.randn(2, 3, 9, 9), mt.randn(4, 3, 3, 3)
    with profile() as prof:
        y = mt.conv2d(x, w, mt.randn(4), stride=2, padding=1)
    assert y.shape == (2, 4, 5, 5)
    row = next(r for r in prof.key_averages() if r["name"] == "Conv2d")
    assert row["flops"] == 2 * 4 * (3 * 3 * 3) * (2 * 5 * 5)  # (OC, C·kh·kw) @ (C·kh·kw, N·OH·OW)


def test_nothing_recorded_outside_the_context(engine):
    x = mt.randn(3, requires_grad=True)
    before = x.exp()
    with profile() as prof:
        inside = x * 2
    after = (before + inside).tanh().sum()
    after.backward()
    rows = prof.key_averages()
    assert [(r["name"], r["calls"], r["backward_ms"]) for r in rows] == [("Mul", 1, 0)]
    assert function._profiler is None and autograd._python_engine._profiler is None


def test_backward_time_only_for_ops_that_ran_backward(engine):
    x = mt.randn(4, requires_grad=True)
    with profile() as prof:
        y = (x * 2).exp().sum()
        with mt.no_grad():
            x.tanh()
        y.backward()
    rows = {r["name"]: r for r in prof.key_averages()}
    assert all(rows[name]["backward_ms"] > 0 for name in ("Mul", "Exp", "Sum"))
    assert rows["Tanh"]["calls"] == 1 and rows["Tanh"]["backward_ms"] == 0


def test_ops_inside_an_op_count_for_the_outermost_op(engine):
    class MyTanh(Function):
        @staticmethod
        def forward(ctx, x):
            y = x.tanh()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, g):
            (y,) = ctx.saved_tensors
            return g * (1 - y * y)

    x = mt.randn(3, requires_grad=True)
    with profile() as prof:
        MyTanh.apply(x).sum().backward()
    rows = {r["name"]: r for r in prof.key_averages()}
    assert set(rows) == {"MyTanh", "Sum"}
    assert rows["MyTanh"]["calls"] == 1 and rows["MyTanh"]["backward_ms"] > 0


def test_nested_profiles_raise_and_the_outer_one_keeps_working():
    x = mt.randn(3)
    with profile() as outer:
        with pytest.raises(RuntimeError, match="nested profiles are not supported"):
            with profile():
                pass
        x + x
    assert [r["name"] for r in outer.key_averages()] == ["Add"]


def test_an_op_that_raises_leaves_the_profile_working_and_exit_removes_the_hooks():
    class Boom(Function):
        @staticmethod
        def forward(ctx, x):
            raise ValueError("boom")

        @staticmethod
        def backward(ctx, g):
            return g

    x = mt.randn(3)
    with pytest.raises(KeyError):
        with profile() as prof:
            with pytest.raises(ValueError, match="boom"):
                Boom.apply(x)
            x + x
            raise KeyError("leaving the with by an exception")
    assert [(r["name"], r["calls"]) for r in prof.key_averages()] == [("Add", 1)]
    assert function._profiler is None and autograd._python_engine._profiler is None
    with profile():  # and a new profile can start
        pass


def test_table_sorts_limits_and_totals():
    x = mt.randn(64, 64)
    with profile() as prof:
        for _ in range(3):
            x = (x @ x).tanh()
        x.sum()
    by_calls = prof.table(sort_by="calls", row_limit=2).splitlines()
    assert by_calls[0].split()[:3] == ["op", "backend", "calls"]
    assert {by_calls[2].split()[0], by_calls[3].split()[0]} == {"Matmul", "Tanh"}
    assert by_calls[4] == "... 1 more ops (counted in the total)"
    total = by_calls[5].split()
    assert total[:2] == ["total", "7"]
    assert float(total[6]) == pytest.approx(3 * 2 * 64 ** 3 / 1e6, abs=0.05)  # fwd MFLOP of the 3 matmuls
    assert by_calls[6].startswith("wall ")
    assert str(prof) == prof.table()
    with pytest.raises(ValueError, match="sort_by must be one of"):
        prof.table(sort_by="time")
