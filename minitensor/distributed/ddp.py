"""DistributedDataParallel: every rank runs the whole model on its share of the batch; backward averages the
gradients across ranks, so every rank takes the same optimizer step.

How the averaging overlaps backward: the trainable parameters are grouped into buckets, in reverse order of
registration (roughly the order backward produces their gradients; the first bucket is small so that
communication starts early). Each parameter has a post-accumulate-grad hook: once its gradient is in `.grad`,
the hook copies it into its bucket's flat buffer, and once a bucket is full a non-blocking allreduce of the
whole bucket starts while backward goes on with the rest of the graph. Buckets start in the same order on every
rank (a later bucket that fills first waits for the earlier ones), as MPI requires. When the last bucket has
started, the hook waits for all of them and writes the averaged gradients back into `.grad`.

Averaging: each bucket carries, after the gradients, one "used" flag per parameter and this rank's weight w
(set_grad_weight, default 1); the allreduce sums w * grad, the flags and w, and the result is divided by the sum
of the weights: sum_r(w_r g_r) / sum_r(w_r). With w = 1 that is torch's mean over ranks; with w = the local
batch size it is exactly the gradient of the mean loss over the global batch, even when ranks hold batches of
different sizes.
"""
import contextlib
import hashlib

import numpy as np

from ..autograd import grad_mode
from ..autograd.function import AccumulateGrad
from ..nn.module import Module
from ..tensor import Tensor
from . import comm

_FIRST_BUCKET_BYTES = 1 << 20  # torch's: a small first bucket, so its allreduce starts early in backward


class _Flat:
    """Tensors of one dtype laid end to end in one array (plus `extra` trailing slots)."""

    def __init__(self, tensors, dtype, extra=0):
        self.tensors = tensors
        sizes = [t.numel() for t in tensors]
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(int)
        self.array = np.zeros(int(self.offsets[-1]) + extra, dtype=dtype)

    def view(self, i):
        return self.array[self.offsets[i]:self.offsets[i + 1]]

    def pack(self):
        for i, t in enumerate(self.tensors):
            self.view(i)[...] = t._data.reshape(-1)

    def unpack(self):
        for i, t in enumerate(self.tensors):
            t._data[...] = self.view(i).reshape(t.shape)
            t._vc[0] += 1


def _broadcast_flat(tensors, what):
    """Rank 0's values of `tensors` on every rank: one broadcast per dtype."""
    for dtype in sorted({str(t.dtype) for t in tensors}):
        flat = _Flat([t for t in tensors if str(t.dtype) == dtype], dtype)
        if comm._world.rank == 0:
            flat.pack()
        comm._wait(*comm._start_broadcast(flat.array, 0, f"{what} ({dtype}, {flat.array.size} elements)"))
        flat.unpack()


class _Bucket(_Flat):
    """Parameters whose gradients are reduced together: [grads..., used flags (one per parameter), weight]."""

    def __init__(self, params, names, dtype):
        super().__init__(params, dtype, extra=len(params) + 1)
        self.names = names
        self.ready = np.zeros(len(params), dtype=bool)
        self.request = self.what = None

    def used(self):
        return self.array[self.offsets[-1]:-1]


class DistributedDataParallel(Module):
    """Wrap `module` for data-parallel training over the ranks of minitensor.distributed (init() first).

    Rank 0's parameters and buffers are broadcast at construction; during each backward the gradients are
    averaged across ranks (see the module docstring). `.module` is the wrapped model; state_dict keys are
    prefixed `module.` as in PyTorch (save `ddp.module.state_dict()` for a checkpoint that loads anywhere).
    find_unused_parameters: look for parameters the forward did not use, so their buckets can still complete.
    broadcast_buffers: broadcast rank 0's buffers before every forward (torch's default).
    """

    def __init__(self, module, device_ids=None, output_device=None, dim=0, broadcast_buffers=True, init_sync=True,
                 process_group=None, bucket_cap_mb=25, find_unused_parameters=False, check_reduction=False,
                 gradient_as_bucket_view=False, static_graph=False):
        super().__init__()
        world = comm._require("DistributedDataParallel")
        if device_ids or output_device is not None:
            raise ValueError(f"DistributedDataParallel: device_ids={device_ids!r} / output_device={output_device!r} "
                             "select GPUs; minitensor runs on the CPU (leave them None)")
        comm._check_group("DistributedDataParallel", process_group)
        if dim != 0:
            raise ValueError(f"DistributedDataParallel: only dim=0 (the batch dimension) is supported, got {dim}")
        if not bucket_cap_mb > 0:
            raise ValueError(f"DistributedDataParallel: bucket_cap_mb must be positive, got {bucket_cap_mb}")
        self.module = module
        self.broadcast_buffers, self.find_unused_parameters = broadcast_buffers, find_unused_parameters
        self.require_backward_grad_sync = True
        self.comm_seconds = 0.0  # time spent waiting for gradient allreduces (for benchmarks)
        named = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
        self._check_same_model(world, named)
        if init_sync:
            _broadcast_flat([p for _, p in module.named_parameters()], "DistributedDataParallel initial parameters")
            if module_buffers(module):
                _broadcast_flat(module_buffers(module), "DistributedDataParallel initial buffers")
        self.buckets = _make_buckets(named, bucket_cap_mb * 2**20)
        for b, bucket in enumerate(self.buckets):
            for i, p in enumerate(bucket.tensors):
                p.register_post_accumulate_grad_hook(self._hook(b, i))
        self._armed = False  # reducing gradients in this iteration's backward
        self._next = 0  # the next bucket to start
        self._weight = 1.0

    # --------------------------------------------------------------------------------- setup
    @staticmethod
    def _check_same_model(world, named):
        layout = ";".join(f"{n}:{p.dtype}:{tuple(p.shape)}" for n, p in named).encode()
        digest = int.from_bytes(hashlib.sha256(layout).digest()[:8], "little", signed=True)
        mine = np.array([len(named), sum(p.numel() for _, p in named), digest], dtype=np.int64)
        every = np.empty((world.size, 3), dtype=np.int64)
        comm._wait(world.comm.Iallgather(mine, every), world.next("DistributedDataParallel (comparing models)"))
        if (every != every[0]).any():
            seen = ", ".join(f"rank {r}: {every[r, 0]} parameters, {every[r, 1]} elements" for r in range(world.size))
            raise ValueError("DistributedDataParallel: the model differs across ranks (every rank must build the "
                             f"same parameters, names, shapes and dtypes, in the same order): {seen}")

    def _hook(self, b, i):
        return lambda param: self._grad_ready(b, i, param)

    # --------------------------------------------------------------------------------- forward
    def forward(self, *inputs, **kwargs):
        sync = grad_mode.is_grad_enabled() and self.require_backward_grad_sync
        if grad_mode.is_grad_enabled():
            self._prepare(sync)
        if self.broadcast_buffers and module_buffers(self.module):
            _broadcast_flat(module_buffers(self.module), "DistributedDataParallel buffers")
        out = self.module(*inputs, **kwargs)
        if sync and self.find_unused_parameters:
            self._mark_unused(out)
        return out

    def _prepare(self, sync):
        unfinished = self._armed and any(b.ready.any() for b in self.buckets)
        missing = [n for b in self.buckets for n, r in zip(b.names, b.ready) if not r] if unfinished else []
        self._armed, self._next, self._weight = sync, 0, 1.0
        for b in self.buckets:
            b.ready[:] = False
            b.used()[:] = 0
        if unfinished:
            raise RuntimeError(
                "DistributedDataParallel: expected to have finished reducing gradients in the prior iteration "
                f"before starting a new one; these parameters received no gradient: {missing}. Pass "
                "find_unused_parameters=True if the forward does not use them all, and make sure every output "
                "that depends on them goes into the loss.")

    def _mark_unused(self, out):
        """Parameters unreachable from the outputs get no hook call: mark them ready (with a zero gradient)."""
        reached, stack, seen = set(), [], set()
        for t in _tensors(out):
            if t.grad_fn is not None:
                stack.append(t.grad_fn)
            elif t.requires_grad:
                reached.add(id(t))
        while stack:
            node = stack.pop()
            if type(node) is AccumulateGrad:
                reached.add(id(node.variable))
                continue
            for edge in node.next_functions:
                if edge is not None and edge[0] not in seen:
                    seen.add(edge[0])
                    stack.append(edge[0])
        for b, bucket in enumerate(self.buckets):
            for i, p in enumerate(bucket.tensors):
                if id(p) not in reached:
                    bucket.view(i)[:] = 0
                    self._mark_ready(b, i, used=False)

    # --------------------------------------------------------------------------------- backward
    def set_grad_weight(self, weight):
        """This rank's weight in this iteration's gradient average (call between forward and backward):
        grad = sum_r(w_r g_r) / sum_r(w_r). Default 1 (the mean over ranks); the number of samples (or tokens)
        this rank's loss averages over gives the gradient of the mean loss over the global batch."""
        if not weight >= 0:
            raise ValueError(f"set_grad_weight: weight must be >= 0, got {weight!r}")
        self._weight = float(weight)

    def _grad_ready(self, b, i, param):
        if not self._armed:
            return
        bucket = self.buckets[b]
        if bucket.ready[i]:
            raise RuntimeError(f"DistributedDataParallel: parameter {bucket.names[i]} received a second gradient "
                               "in one iteration (a second backward through the same forward?); run the forward "
                               "again for each backward")
        bucket.view(i)[...] = param.grad._data.reshape(-1)
        self._mark_ready(b, i, used=True)

    def _mark_ready(self, b, i, used):
        bucket = self.buckets[b]
        bucket.ready[i] = True
        bucket.used()[i] = used
        while self._next < len(self.buckets) and self.buckets[self._next].ready.all():
            self._start(self.buckets[self._next])
            self._next += 1
        if self._next == len(self.buckets):
            self._finish()
        else:  # let MPI progress the allreduces in flight while backward goes on
            for started in self.buckets[:self._next]:
                started.request.Test()

    def _start(self, bucket):
        if self._weight != 1.0:
            grads = bucket.array[:bucket.offsets[-1]]
            np.multiply(grads, self._weight, out=grads)
        bucket.array[-1] = self._weight
        bucket.request, bucket.what = comm._start_sum(
            bucket.array, f"DistributedDataParallel gradient bucket ({bucket.array.dtype}, {bucket.array.size} "
                          "elements)")

    def _finish(self):
        self._armed = False
        for bucket in self.buckets:
            self.comm_seconds += comm._wait(bucket.request, bucket.what)
            total = bucket.array[-1]
            if total == 0:
                raise RuntimeError("DistributedDataParallel: the gradient weights of all ranks sum to 0 "
                                   "(set_grad_weight(0) everywhere); there is no average to take")
            used = bucket.used()
            for i, p in enumerate(bucket.tensors):
                if p.grad is None and used[i] == 0:
                    continue  # unused on every rank: no gradient, as in a single process
                mean = bucket.view(i).reshape(p.shape) / total
                if p.grad is None:
                    p.grad = Tensor._wrap(mean.astype(p.dtype, copy=False))
                else:
                    p.grad._data[...] = mean
                    p.grad._vc[0] += 1

    @contextlib.contextmanager
    def no_sync(self):
        """Backward passes of forwards run in this context only accumulate local gradients (for gradient
        accumulation); the first forward/backward after it averages the accumulated gradients."""
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous


def module_buffers(module):
    return [b for b in module.buffers() if b is not None]


def _make_buckets(named, cap_bytes):
    """Buckets over the parameters in reverse order, one dtype each, the first up to 1 MiB, then up to cap_bytes
    (a bucket closes once it reaches its cap)."""
    buckets, current = [], {}  # dtype -> (names, params, bytes) being filled
    for name, p in reversed(named):
        names, params, size = current.get(str(p.dtype), ([], [], 0))
        names, params, size = names + [name], params + [p], size + p.numel() * p.dtype.itemsize
        current[str(p.dtype)] = (names, params, size)
        if size >= (min(_FIRST_BUCKET_BYTES, cap_bytes) if not buckets else cap_bytes):
            buckets.append(_Bucket(params, names, p.dtype))
            del current[str(p.dtype)]
    for dtype, (names, params, _) in current.items():
        buckets.append(_Bucket(params, names, params[0].dtype))
    return buckets


def _tensors(out):
    if isinstance(out, Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for item in out for t in _tensors(item)]
    return []
