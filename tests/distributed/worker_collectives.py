"""Run under `mpiexec -n N` (N = 2 or 3) by test_distributed.py: collectives, their errors, DistributedDataParallel
against a single process, no_sync, unused parameters, DistributedSampler and checkpoints. Any failed assertion
is an uncaught exception, which aborts the job with a non-zero exit code. argv[1]: a directory shared by the ranks.
"""
import copy
import os
import sys

import numpy as np

import minitensor as mt
import minitensor.distributed as dist
from minitensor import nn
from minitensor.data import DistributedSampler
from minitensor.models.vit import vit_tiny
from minitensor.nn import functional as F

dist.init(timeout=60)
R, W = dist.rank(), dist.world_size()
ranks = np.arange(W, dtype=np.float64)


def raises(fn, error, *fragments):
    try:
        fn()
    except error as e:
        for fragment in fragments:
            assert fragment in str(e), f"{fragment!r} not in {str(e)!r}"
        return
    raise AssertionError(f"rank {R}: expected {error.__name__}")


# --------------------------------------------------------------------------------------------- collectives
t = mt.tensor([1.0, -2.0, 3.0], dtype=mt.float64) * (R + 1)
buffer = t._data
version = t._vc[0]
dist.all_reduce(t)
assert t._data is buffer and t._vc[0] == version + 1  # in place, in the tensor's own buffer
np.testing.assert_array_equal(t.numpy(), np.array([1.0, -2.0, 3.0]) * (ranks + 1).sum())
for op, expected in [(dist.ReduceOp.PRODUCT, np.prod(ranks + 2)), (dist.ReduceOp.MIN, 2.0),
                     (dist.ReduceOp.MAX, W + 1.0), (dist.ReduceOp.AVG, (ranks + 2).mean())]:
    t = mt.tensor([R + 2.0], dtype=mt.float64)
    dist.all_reduce(t, op=op)
    assert t.item() == expected, (op, t.item(), expected)
ints = mt.tensor([R, 10 * R], dtype=mt.int64)
dist.all_reduce(ints)
assert ints.tolist() == [int(ranks.sum()), int(10 * ranks.sum())]

base = mt.arange(12, dtype=mt.float32).reshape(3, 4) * (R + 1)  # a strided view is reduced into its base
view = base[:, 1::2]
dist.all_reduce(view)
expected = np.arange(12, dtype=np.float32).reshape(3, 4) * (R + 1)
expected[:, 1::2] = np.arange(12, dtype=np.float32).reshape(3, 4)[:, 1::2] * (ranks + 1).sum()
np.testing.assert_array_equal(base.numpy(), expected)

work = dist.all_reduce(mt.ones(2), async_op=True)
assert work.wait() and work.is_completed()

src = W - 1
b = mt.full((2, 3), float(R), dtype=mt.float32)
dist.broadcast(b, src=src)
np.testing.assert_array_equal(b.numpy(), np.full((2, 3), src, dtype=np.float32))

gathered = [mt.zeros(2, dtype=mt.int64) for _ in range(W)]
dist.all_gather(gathered, mt.tensor([R, R * R], dtype=mt.int64))
assert [g.tolist() for g in gathered] == [[r, r * r] for r in range(W)]

objects = [None, {"rank": R}]
dist.broadcast_object_list(objects, src=1)
assert objects == [None, {"rank": 1}]
dist.barrier()

# ---------------------------------------------------------------------------------- errors on every rank
raises(lambda: dist.broadcast(mt.zeros(2, 2 + R), src=0), ValueError,
       "broadcast: every rank must pass the same shape", "rank 0: float32 (2, 2)", "rank 1: float32 (2, 3)")
raises(lambda: dist.all_reduce(mt.zeros(3, dtype=mt.float32 if R == 0 else mt.float64)), ValueError,
       "all_reduce", "rank 0: float32 (3,)", "rank 1: float64 (3,)")
raises(lambda: dist.all_reduce(mt.zeros(1), op=dist.ReduceOp.MAX if R == 1 else dist.ReduceOp.SUM), ValueError,
       "all_reduce: every rank must pass the same op; got rank 0: ReduceOp.SUM, rank 1: ReduceOp.MAX")
bad_list = [mt.zeros(2) for _ in range(W - (R == 1))]  # rank 1 alone passes one tensor too few
raises(lambda: dist.all_gather(bad_list, mt.zeros(2)), ValueError,
       "all_gather: rank(s) [1] passed a tensor_list that is not")
raises(lambda: dist.broadcast(mt.zeros(1), src=W), ValueError, f"src {W} is not a rank of this world of {W}")
raises(lambda: dist.all_reduce(np.zeros(2)), TypeError, "all_reduce: expected a minitensor Tensor, got ndarray")
raises(lambda: dist.all_reduce(mt.zeros(3).expand(2, 3)), ValueError, "read-only view")
raises(lambda: dist.DistributedDataParallel(nn.Linear(2, 2 + R)), ValueError,
       "DistributedDataParallel: the model differs across ranks")

# ------------------------------------------------------- DDP gradients == one process's on the global batch
mt.set_default_dtype(mt.float64)
B = 10  # W = 3: local batches of 4, 3, 3
mt.manual_seed(0)
x_global, y_global = mt.randn(B, 1, 28, 28), mt.randint(0, 10, (B,))
lo, hi = [(int(s[0]), int(s[-1]) + 1) for s in np.array_split(np.arange(B), W)][R]


def loss_of(model, x, y):
    return F.cross_entropy(model(x), y, label_smoothing=0.1)


for bucket_cap_mb in (25, 0.002):  # one bucket; many small ones (reduced in order, overlapping backward)
    mt.manual_seed(100 + R)  # different weights on every rank: DDP must start from rank 0's
    model = vit_tiny(dim=16, depth=1, heads=2, mlp_dim=32)
    ddp = dist.DistributedDataParallel(model, bucket_cap_mb=bucket_cap_mb)
    assert (len(ddp.buckets) > 3) == (bucket_cap_mb < 1), len(ddp.buckets)
    reference = copy.deepcopy(model)
    mt.manual_seed(100)
    np.testing.assert_array_equal(reference.patch_embed.weight.detach().numpy(), vit_tiny(
        dim=16, depth=1, heads=2, mlp_dim=32).patch_embed.weight.detach().numpy())  # rank 0's initial weights
    loss_of(reference, x_global, y_global).backward()
    for step in range(2):  # the second step checks that the state is reset between iterations
        model.zero_grad()
        loss = loss_of(ddp, x_global[lo:hi], y_global[lo:hi])
        ddp.set_grad_weight(hi - lo)
        loss.backward()
        for (name, p), q in zip(model.named_parameters(), reference.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-10, atol=1e-13, err_msg=name)
    assert ddp.comm_seconds >= 0.0

# default weights: torch's plain mean of the ranks' gradients
mt.manual_seed(1)
model = nn.Linear(4, 3)
ddp = dist.DistributedDataParallel(model)
xs = [mt.randn(2, 4) for _ in range(W)]
(ddp(xs[R]) ** 2).sum().backward()
expected = 0
for r in range(W):
    ref = copy.deepcopy(model)
    ref.zero_grad()
    (ref(xs[r]) ** 2).sum().backward()
    expected = expected + ref.weight.grad.numpy() / W
np.testing.assert_allclose(model.weight.grad.numpy(), expected, rtol=1e-12)
assert list(ddp.state_dict()) == ["module.weight", "module.bias"]

# no_sync: the first micro-batch stays local, the second step averages the sum of both
model.zero_grad()
with ddp.no_sync():
    (ddp(xs[R]) ** 2).sum().backward()
local = copy.deepcopy(model)
local.zero_grad()
(local(xs[R]) ** 2).sum().backward()
np.testing.assert_allclose(model.weight.grad.numpy(), local.weight.grad.numpy(), rtol=1e-12)  # not reduced
(ddp(2 * xs[R]) ** 2).sum().backward()
expected = 0
for r in range(W):
    ref = copy.deepcopy(model)
    ref.zero_grad()
    ((ref(xs[r]) ** 2).sum() + (ref(2 * xs[r]) ** 2).sum()).backward()
    expected = expected + ref.weight.grad.numpy() / W
np.testing.assert_allclose(model.weight.grad.numpy(), expected, rtol=1e-12)


# unused parameters: an error naming them at the next forward, unless find_unused_parameters=True
class TwoHeads(nn.Module):
    def __init__(self):
        super().__init__()
        self.used, self.unused = nn.Linear(3, 1), nn.Linear(3, 1)

    def forward(self, x):
        return self.used(x)


ddp = dist.DistributedDataParallel(TwoHeads())
ddp(mt.ones(1, 3)).sum().backward()
raises(lambda: ddp(mt.ones(1, 3)), RuntimeError, "finished reducing gradients in the prior iteration",
       "unused.weight", "find_unused_parameters=True")
ddp = dist.DistributedDataParallel(TwoHeads(), find_unused_parameters=True)
for _ in range(2):
    ddp(mt.ones(1, 3) * (R + 1)).sum().backward()
assert ddp.module.unused.weight.grad is None
np.testing.assert_allclose(ddp.module.used.weight.grad.numpy(), 2 * np.full((1, 3), (ranks + 1).mean()))
mt.set_default_dtype(mt.float32)

# ------------------------------------------------------------------------------------- DistributedSampler
n = 11
for drop_last in (False, True):
    sampler = DistributedSampler(list(range(n)), drop_last=drop_last, seed=5)
    sampler.set_epoch(3)
    mine = mt.tensor(list(sampler), dtype=mt.int64)
    shards = [mt.zeros(len(sampler), dtype=mt.int64) for _ in range(W)]
    dist.all_gather(shards, mine)
    every = np.concatenate([s.numpy() for s in shards])
    if drop_last:
        assert len(set(every.tolist())) == len(every) == n - n % W  # disjoint
    else:
        assert set(every.tolist()) == set(range(n)) and len(every) == W * -(-n // W)  # all, padded
    ranks_order = np.stack([s.numpy() for s in shards], axis=1).reshape(-1)[:n - n % W if drop_last else n]
    assert ranks_order.tolist() == mt.Generator(5 + 3).permutation(n).tolist()[:len(ranks_order)]

# ---------------------------------------------------------------------------- rank 0's checkpoint anywhere
path = os.path.join(sys.argv[1], "ddp.safetensors")
mt.manual_seed(7 + R)
ddp = dist.DistributedDataParallel(nn.Linear(3, 2))
if R == 0:
    mt.save(ddp.module.state_dict(), path)
dist.barrier()
fresh = nn.Linear(3, 2)
fresh.load_state_dict(mt.load(path))
np.testing.assert_array_equal(fresh.weight.detach().numpy(), ddp.module.weight.detach().numpy())
print(f"rank {R} of {W}: all checks passed", flush=True)
