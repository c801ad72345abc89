"""Datasets and the DataLoader: integrity of the bundled MNIST, the IDX reader, loader determinism and coverage,
the number-words datasets, vocabularies and padding."""
import gzip
import hashlib
import os
import urllib.error

import numpy as np
import pytest

import minitensor as mt
from minitensor.data import (MNIST, DataLoader, LanguageOfNumberWords, NumberWords, Subset, TensorDataset, Vocab,
                             char_tokenize, default_collate, number_to_words, pad_batch, random_split, read_idx,
                             word_tokenize, write_idx)
from minitensor.data import mnist as mnist_module

from optional_torch import needs_torch, torch

BUNDLED_SHA256 = {
    "train-images-idx3-ubyte.gz": "e3eade0eaea87b4de9e834e4cdbe9fd59dee184933a81e933afd9266a585518c",
    "train-labels-idx1-ubyte.gz": "588fd70c0d2dc4725ae7718f331fe88cff7986b2cfd16a7b350da1709badbf27",
    "t10k-images-idx3-ubyte.gz": "5f22083271bf0885f814a22b7568d75956742b0276f525a87c7215209a822e4e",
    "t10k-labels-idx1-ubyte.gz": "7a3e2b81e941703f15d8c19d40605d5d86ce4ee6cee3fec8880c2b7a877a144f",
}


def test_bundled_mnist_files_are_the_known_ones():
    for name, digest in BUNDLED_SHA256.items():
        with open(os.path.join(mnist_module.BUNDLED, name), "rb") as f:
            assert hashlib.sha256(f.read()).hexdigest() == digest, name
    assert os.path.exists(os.path.join(mnist_module.BUNDLED, "README.md"))


@pytest.mark.parametrize("train,n", [(True, 4000), (False, 1000)])
def test_bundled_mnist_integrity(train, n):
    ds = MNIST(train=train)
    assert len(ds) == n and ds.data.shape == (n, 28, 28) and ds.data.dtype == mt.uint8
    counts = np.bincount(ds.targets.numpy(), minlength=10)
    assert counts.tolist() == [n // 10] * 10  # stratified: 400 / 100 per digit
    image, label = ds[0]
    assert image.shape == (1, 28, 28) and image.dtype == mt.float32 and isinstance(label, int)
    assert 0.0 <= image.numpy().min() and image.numpy().max() <= 1.0 and image.numpy().max() > 0.5
    pixels = ds.data.numpy()
    assert pixels.min() == 0 and pixels.max() == 255 and 0.05 < (pixels > 0).mean() < 0.4  # real digits, not noise


def test_train_and_test_images_do_not_overlap():
    train, test = MNIST().data.numpy().reshape(4000, -1), MNIST(train=False).data.numpy().reshape(1000, -1)
    train_rows = {row.tobytes() for row in train}
    assert not any(row.tobytes() in train_rows for row in test)


def test_idx_round_trip_gzipped_and_raw(tmp_path):
    array = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for compress in (True, False):
        path = tmp_path / f"x-{compress}.idx"
        write_idx(path, array, compress=compress)
        np.testing.assert_array_equal(read_idx(path), array)
    raw = tmp_path / "x-False.idx"
    raw.write_bytes(raw.read_bytes()[:-3])
    with pytest.raises(ValueError, match="truncated or corrupted"):
        read_idx(raw)
    (tmp_path / "junk").write_bytes(b"PK\x03\x04junk")
    with pytest.raises(ValueError, match="not an IDX file"):
        read_idx(tmp_path / "junk")


def test_mnist_download_offline_gives_a_clear_message(tmp_path, monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(mnist_module.urllib.request, "urlopen", offline)
    with pytest.raises(RuntimeError, match="could not download train-images-idx3-ubyte.gz.*bundled"):
        MNIST(tmp_path, download=True)
    with pytest.raises(RuntimeError, match="not found; pass download=True"):
        MNIST(tmp_path)


def test_mnist_download_verifies_checksums(tmp_path, monkeypatch):
    class Response:
        def __enter__(self):
            return self

        def __exit__(self, *a):
            return False

        def read(self):
            return gzip.compress(b"not mnist")

    monkeypatch.setattr(mnist_module.urllib.request, "urlopen", lambda *a, **k: Response())
    with pytest.raises(RuntimeError, match="checksum mismatch"):
        MNIST(tmp_path, download=True)


def small_dataset(n=10):
    return TensorDataset(mt.arange(n), mt.arange(n) * 10)


def test_dataloader_batches_in_order():
    batches = list(DataLoader(small_dataset(), batch_size=4))
    assert [b[0].tolist() for b in batches] == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert batches[0][1].tolist() == [0, 10, 20, 30]
    assert [len(b[0]) for b in DataLoader(small_dataset(), batch_size=4, drop_last=True)] == [4, 4]
    assert len(DataLoader(small_dataset(), batch_size=4)) == 3 and len(DataLoader(small_dataset(), 4, drop_last=True)) == 2


def test_shuffle_is_a_permutation_each_epoch_and_deterministic_for_a_seed():
    loader = DataLoader(small_dataset(50), batch_size=7, shuffle=True, generator=mt.Generator(3))
    epoch1 = [i for b in loader for i in b[0].tolist()]
    epoch2 = [i for b in loader for i in b[0].tolist()]
    assert sorted(epoch1) == list(range(50)) and sorted(epoch2) == list(range(50))
    assert epoch1 != epoch2  # reshuffled every epoch
    again = DataLoader(small_dataset(50), batch_size=7, shuffle=True, generator=mt.Generator(3))
    assert [i for b in again for i in b[0].tolist()] == epoch1
    mt.manual_seed(5)
    a = [i for b in DataLoader(small_dataset(20), batch_size=5, shuffle=True) for i in b[0].tolist()]
    mt.manual_seed(5)
    assert a == [i for b in DataLoader(small_dataset(20), batch_size=5, shuffle=True) for i in b[0].tolist()]


def test_collate_fn_and_default_collate():
    ds = [({"x": np.ones(2) * i, "name": f"s{i}"}, i) for i in range(3)]
    batch = next(iter(DataLoader(ds, batch_size=3)))
    assert batch[0]["x"].shape == (3, 2) and batch[0]["name"] == ["s0", "s1", "s2"] and batch[1].tolist() == [0, 1, 2]
    loader = DataLoader(ds, batch_size=2, collate_fn=lambda samples: len(samples))
    assert list(loader) == [2, 1]
    assert default_collate([1.5, 2.5]).dtype == mt.float64


def test_loader_never_copies_the_dataset():
    data = mt.arange(12.0).reshape(6, 2)
    ds = TensorDataset(data)
    next(iter(DataLoader(ds, batch_size=2)))
    assert ds.tensors[0] is data


def test_subset_and_random_split():
    ds = small_dataset(10)
    parts = random_split(ds, [7, 3], generator=mt.Generator(0))
    assert [len(p) for p in parts] == [7, 3]
    assert sorted(parts[0].indices + parts[1].indices) == list(range(10))
    fractions = random_split(ds, [0.5, 0.3, 0.2], generator=mt.Generator(0))
    assert [len(p) for p in fractions] == [5, 3, 2]
    assert Subset(ds, [4, 2])[1][0].item() == 2
    with pytest.raises(ValueError, match="do not add up"):
        random_split(ds, [3, 3])


def test_dataloader_rejects_workers():
    with pytest.raises(ValueError, match="num_workers"):
        DataLoader(small_dataset(), num_workers=2)


def test_number_words_examples_and_normalisation():
    assert number_to_words(21, "vi") == "hai mươi mốt"
    assert number_to_words(21, "en") == "twenty-one"
    assert number_to_words(1234567, "en") == \
        "one million two hundred and thirty-four thousand five hundred and sixty-seven"
    with pytest.raises(ValueError, match="does not support"):
        number_to_words(3, "xx")


def test_number_words_splits_are_disjoint_and_deterministic():
    train = NumberWords("train", num_train=3000, num_test=300, seed=1)
    test = NumberWords("test", num_train=3000, num_test=300, seed=1)
    assert len(train) == 3000 and len(test) == 300
    assert not set(train.numbers) & set(test.numbers)
    assert len(set(train.numbers)) == 3000
    assert NumberWords("test", num_train=3000, num_test=300, seed=1).pairs == test.pairs
    assert NumberWords("test", num_train=3000, num_test=300, seed=2).pairs != test.pairs
    assert max(train.numbers) < 10**9 and min(train.numbers) >= 0
    digits = np.bincount([len(str(n)) for n in train.numbers])
    assert digits[1] + digits[2] == 10 + 90 - sum(len(str(n)) <= 2 for n in test.numbers)  # every small number
    assert digits[3:].min() > 200  # and each longer digit count is well represented
    assert train[0][1] == number_to_words(train.numbers[0], "en")


def test_language_of_number_words():
    train = LanguageOfNumberWords("train", num_train=100, num_test=20)
    test = LanguageOfNumberWords("test", num_train=100, num_test=20)
    assert len(train.classes) >= 8 and len(train) == 100 * len(train.classes)
    assert not set(train.numbers) & set(test.numbers)
    labels = np.bincount([label for _, label in train.samples])
    assert labels.tolist() == [100] * len(train.classes)


def test_vocab_round_trip_and_specials():
    texts = ["twenty-one", "two hundred and three", "twenty-one thousand"]
    vocab = Vocab.build(texts, word_tokenize)
    assert vocab.itos[:4] == ["<pad>", "<unk>", "<start>", "<end>"] and vocab.pad_id == 0
    assert vocab.itos[4] == "twenty-one"  # the most frequent word first
    ids = vocab.encode(word_tokenize("twenty-one thousand"), add_start=True, add_end=True)
    assert ids[0] == vocab.start_id and ids[-1] == vocab.end_id
    assert vocab.decode(ids + [vocab["two"]]) == ["twenty-one", "thousand"]  # stops at <end>
    assert vocab["never-seen"] == vocab.unk_id
    restored = Vocab.from_state_dict(vocab.state_dict())
    assert restored.itos == vocab.itos and restored["thousand"] == vocab["thousand"]
    assert char_tokenize("Hai  Mươi") == list("hai mươi")


def test_pad_batch_and_padding_mask():
    ids, mask = pad_batch([[5, 6, 7], [8], []], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [8, 0, 0], [0, 0, 0]]
    assert mask.tolist() == [[False, False, False], [False, True, True], [True, True, True]]
    ids, mask = pad_batch([[1, 2, 3, 4]], max_len=2)
    assert ids.tolist() == [[1, 2]] and mask.tolist() == [[False, False]]


@pytest.mark.parametrize("n, replicas, drop_last", [(10, 3, False), (10, 3, True), (2, 3, False), (12, 4, False)])
@needs_torch
def test_distributed_sampler_shards_like_torch(n, replicas, drop_last):
    from minitensor.data import DistributedSampler

    for rank in range(replicas):
        ours = DistributedSampler(range(n), num_replicas=replicas, rank=rank, shuffle=False, drop_last=drop_last)
        theirs = torch.utils.data.DistributedSampler(range(n), num_replicas=replicas, rank=rank, shuffle=False,
                                                     drop_last=drop_last)
        assert list(ours) == list(theirs) and len(ours) == len(theirs)


@pytest.mark.parametrize("n, replicas, drop_last", [(10, 3, False), (10, 3, True), (2, 3, False), (12, 4, False)])
def test_distributed_sampler_shuffled_shards_partition_one_permutation(n, replicas, drop_last):
    from minitensor.data import DistributedSampler

    shards = []
    for rank in range(replicas):  # shuffled: the ranks' shards partition one permutation (padded by wrapping)
        sampler = DistributedSampler(range(n), num_replicas=replicas, rank=rank, seed=4, drop_last=drop_last)
        sampler.set_epoch(2)
        shards.append(list(sampler))
    order = [i for step in zip(*shards) for i in step]
    permutation = mt.Generator(4 + 2).permutation(n).tolist()
    if drop_last:
        assert order == permutation[:len(order)] and len(order) == n - n % replicas
    else:
        assert order == (permutation * replicas)[:len(order)] and len(order) == replicas * -(-n // replicas)
    sampler.set_epoch(3)
    assert list(sampler) != shards[-1] or n < 3  # reshuffled


def test_distributed_sampler_errors():
    from minitensor.data import DistributedSampler

    with pytest.raises(ValueError, match=r"invalid rank 3, rank should be in the interval \[0, 2\]"):
        DistributedSampler(range(5), num_replicas=3, rank=3)
    with pytest.raises(RuntimeError, match="not initialized; call minitensor.distributed.init"):
        DistributedSampler(range(5))
