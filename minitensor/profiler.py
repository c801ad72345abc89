"""The op profiler: where the time of a forward and backward pass goes, op by op.

    with minitensor.profiler.profile() as prof:
        loss = model(x).sum()
        loss.backward()
    print(prof.table(sort_by="total", row_limit=20))

While a profile is active, Function.apply and the engine's call of each backward formula hand the op to it;
when none is, each pays one module-level `is None` test, which is all profiling costs. Per op name (the
Function class: Matmul, Add, LayerNorm, ...) it records:

  calls        forward calls
  forward_ms   time in Function.apply: the forward plus recording the graph node (the op's whole cost)
  backward_ms  time in the op's backward formula during the engine's walk
  flops        forward FLOPs where known, else None: 2·M·N·K per matrix product for Matmul (batch included)
               and Linear (a Linear layer with a bias: the GEMM with the bias add fused; the add is not counted),
               and the same for Conv2d's GEMM (M = out channels, K = in channels·kh·kw, N = batch·OH·OW; the
               bias is not counted). A matmul's backward costs about twice its forward.
  bytes        nbytes of the forward's tensor inputs plus outputs: a rough traffic figure (views count in full)
  backend      "native" if a C++ kernel (minitensor._C) ran inside the op, "numpy" if only numpy did (elementwise
               arithmetic is numpy ufuncs under either backend), "native+numpy" if its calls differed

Nested ops count once, for the outermost op: the ops that a backward formula runs (Matmul's backward runs two
matmuls) or that a forward runs are timed as part of it and not recorded on their own, so the rows add up to
the time spent in ops with nothing counted twice. The engine's walk, gradient accumulation into leaves and
Python between ops (module code, the optimizer) are outside every op: the table's last line gives them as
wall time minus ops, apart from the profiler's own bookkeeping.

One profile at a time: entering a second one raises. The hooks are process-wide, so profile single-threaded
code (the usual training loop; the C++ kernels' OpenMP threads are fine).
"""
import math
import time

import numpy as np

from .autograd import _cython_engine, _python_engine, function
from .backend import native
from .ops.conv import Conv2d
from .ops.linalg import Linear, Matmul
from .tensor import Tensor

_ENGINES = tuple(engine for engine in (_python_engine, _cython_engine) if engine is not None)
_active = None  # the profile inside its `with`, if any (the hooks are switched off while an op runs)


def _set_hooks(prof):
    function._profiler = prof
    for engine in _ENGINES:
        engine._profiler = prof


def _matmul_flops(args, out):
    a, b = args
    m = a.shape[-2] if a.ndim > 1 else 1
    n = b.shape[-1] if b.ndim > 1 else 1
    batch = np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    return 2 * math.prod(batch) * m * n * a.shape[-1]


def _conv2d_flops(args, out):
    n, oc, oh, ow = out.shape
    return 2 * oc * math.prod(args[1].shape[1:]) * n * oh * ow


def _linear_flops(args, out):
    x, w = args[0], args[1]
    return 2 * math.prod(x.shape[:-1]) * w.shape[0] * w.shape[1]


_FLOPS = {Matmul: _matmul_flops, Linear: _linear_flops, Conv2d: _conv2d_flops}


def _nbytes(values):
    return sum(v._data.nbytes for v in values if isinstance(v, Tensor))


class _OpStats:
    __slots__ = ("calls", "forward_ns", "backward_ns", "flops", "bytes", "backends")

    def __init__(self):
        self.calls = self.forward_ns = self.backward_ns = self.bytes = 0
        self.flops = None
        self.backends = set()


class _NativeSpy:
    """Stands in for minitensor._C inside backend/native.py while profiling: notes that a C++ kernel ran."""

    def __init__(self, module, prof):
        self._module = module
        self._prof = prof

    def __getattr__(self, name):
        self._prof._native_ran = True
        return getattr(self._module, name)


class profile:
    """Record every op run inside the `with`; read the result with table(), print(prof) or key_averages()."""

    _SORT_KEYS = {"total": "total_ms", "forward": "forward_ms", "backward": "backward_ms", "calls": "calls",
                  "flops": "flops", "bytes": "bytes"}

    def __init__(self):
        self._stats = {}  # op name -> _OpStats
        self._wall_ns = 0
        self._own_ns = 0  # the profiler's bookkeeping around each op, so that it is not blamed on the model
        self._native_ran = False

    def __enter__(self):
        global _active
        if _active is not None:
            raise RuntimeError("profile: another profile() is already active; nested profiles are not supported "
                               "(one profiler sees every op: exit the outer one first)")
        _active = self
        if native is not None:
            self._real_C = native._C
            native._C = _NativeSpy(native._C, self)
        _set_hooks(self)
        self._start = time.perf_counter_ns()
        return self

    def __exit__(self, *exc):
        global _active
        self._wall_ns += time.perf_counter_ns() - self._start
        _set_hooks(None)
        if native is not None:
            native._C = self._real_C
        _active = None
        return False

    # --- the hooks: Function.apply and the engine call these instead of running the op -------------------------
    def _forward(self, cls, args):
        entered = time.perf_counter_ns()
        _set_hooks(None)  # the ops this one runs are part of it
        self._native_ran = False
        start = time.perf_counter_ns()
        try:
            out = cls.apply(*args)
        finally:
            elapsed = time.perf_counter_ns() - start
            _set_hooks(self)
        stats = self._op(cls.__name__)
        stats.calls += 1
        stats.forward_ns += elapsed
        stats.bytes += _nbytes(args) + _nbytes(out if type(out) is tuple else (out,))
        flops = _FLOPS.get(cls)
        if flops is not None:
            stats.flops = (stats.flops or 0) + flops(args, out)
        self._own_ns += time.perf_counter_ns() - entered - elapsed
        return out

    def _backward(self, node, grads):
        entered = time.perf_counter_ns()
        _set_hooks(None)
        self._native_ran = False
        start = time.perf_counter_ns()
        try:
            result = node.fn.backward(node, *grads)
        finally:
            elapsed = time.perf_counter_ns() - start
            _set_hooks(self)
        self._op(node.fn.__name__).backward_ns += elapsed
        self._own_ns += time.perf_counter_ns() - entered - elapsed
        return result

    def _op(self, name):
        stats = self._stats.get(name)
        if stats is None:
            stats = self._stats[name] = _OpStats()
        stats.backends.add("native" if self._native_ran else "numpy")
        return stats

    # --- results -----------------------------------------------------------------------------------------------
    def key_averages(self):
        """One dict per op, by total (forward + backward) time, longest first: name, calls, forward_ms,
        backward_ms, total_ms, flops (None where unknown), bytes (None if it never ran forward), backend."""
        rows = [{
            "name": name, "calls": s.calls, "forward_ms": s.forward_ns / 1e6, "backward_ms": s.backward_ns / 1e6,
            "total_ms": (s.forward_ns + s.backward_ns) / 1e6, "flops": s.flops, "bytes": s.bytes if s.calls else None,
            "backend": "+".join(sorted(s.backends)),
        } for name, s in self._stats.items()]
        return sorted(rows, key=lambda r: -r["total_ms"])

    def table(self, sort_by="total", row_limit=None):
        """The per-op table, sorted by sort_by ('total', 'forward', 'backward', 'calls', 'flops' or 'bytes'),
        longest/largest first; row_limit cuts the rows shown, while the total row still sums every op."""
        if sort_by not in self._SORT_KEYS:
            raise ValueError(f"profile.table: sort_by must be one of {', '.join(self._SORT_KEYS)}, got {sort_by!r}")
        key = self._SORT_KEYS[sort_by]
        rows = sorted(self.key_averages(), key=lambda r: -(r[key] or 0))
        ops_ms = sum(r["total_ms"] for r in rows)
        known_flops = [r["flops"] for r in rows if r["flops"] is not None]
        total = {"name": "total", "backend": "", "calls": sum(r["calls"] for r in rows),
                 "forward_ms": sum(r["forward_ms"] for r in rows), "backward_ms": sum(r["backward_ms"] for r in rows),
                 "total_ms": ops_ms, "flops": sum(known_flops) if known_flops else None,
                 "bytes": sum(r["bytes"] or 0 for r in rows)}
        shown = rows if row_limit is None else rows[:row_limit]
        width = max([len(r["name"]) for r in shown] + [6])
        header = (f"{'op':<{width}}  {'backend':<12} {'calls':>7} {'forward ms':>11} {'backward ms':>12} "
                  f"{'total ms':>10} {'%':>6} {'fwd MFLOP':>10} {'fwd GFLOP/s':>12} {'fwd MB':>9}")
        lines = [header, "-" * len(header)]
        for r in shown + [total]:
            flops, fwd_ms = r["flops"], r["forward_ms"]
            mflop = "" if flops is None else f"{flops / 1e6:.1f}"
            # (no rate on the total row: its FLOPs are Matmul's, Linear's and Conv2d's, its time every op's)
            gflops = "" if flops is None or not fwd_ms or r is total else f"{flops / fwd_ms / 1e6:.1f}"
            mb = "" if r["bytes"] is None else f"{r['bytes'] / 1e6:.1f}"
            share = 100 * r["total_ms"] / ops_ms if ops_ms else 0.0
            lines.append(f"{r['name']:<{width}}  {r['backend']:<12} {r['calls']:>7} {fwd_ms:>11.3f} "
                         f"{r['backward_ms']:>12.3f} {r['total_ms']:>10.3f} {share:>6.1f} {mflop:>10} {gflops:>12} {mb:>9}")
        if len(shown) < len(rows):
            lines.insert(-1, f"... {len(rows) - len(shown)} more ops (counted in the total)")
        wall_ns = self._wall_ns + (time.perf_counter_ns() - self._start if _active is self else 0)
        wall_ms, own_ms = wall_ns / 1e6, self._own_ns / 1e6
        lines.append(f"wall {wall_ms:.3f} ms: ops {ops_ms:.3f} ms, outside ops (Python between ops, the engine's "
                     f"walk, the optimizer) {wall_ms - ops_ms - own_ms:.3f} ms, profiler bookkeeping {own_ms:.3f} ms")
        return "\n".join(lines)

    def __str__(self):
        return self.table()
