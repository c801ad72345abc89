"""Run under `mpiexec -n N` by test_distributed.py: `python -m minitensor train vit --distributed` on the small
ViT recipe of the CLI tests (argv[1]: output directory), then a distributed run interrupted after one epoch and
resumed (argv[2]), which must end where the uninterrupted one ends. test_distributed.py compares both with a
single process."""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import minitensor as mt  # noqa: E402
import minitensor.distributed as dist  # noqa: E402
import minitensor.models.recipes as recipes  # noqa: E402
from minitensor import cli  # noqa: E402
from minitensor.training import fit  # noqa: E402
from tests.models.test_cli import TinyVit  # noqa: E402

recipes.RECIPES["vit"] = TinyVit
out, resumed = sys.argv[1], sys.argv[2]
code = cli.main(["train", "vit", "--distributed", "--epochs", "2", "--seed", "3", "--out", out, "--quiet"])
assert code == 0, code

fit(TinyVit(epochs=2, seed=3), resumed, 1, seed=3, progress=False, distributed=True)  # stops after epoch 1
summary = fit(TinyVit(epochs=2, seed=3), resumed, 2, seed=3, resume=True, progress=False, distributed=True)
assert (summary is None) == (dist.rank() != 0)
a, b = (mt.load(os.path.join(d, "checkpoint.safetensors"))["model"] for d in (out, resumed))  # any rank reads
for k in a:
    np.testing.assert_array_equal(a[k].numpy(), b[k].numpy(), err_msg=k)
print(f"rank {dist.rank()}: done", flush=True)
