"""Vocabularies and tokenizers, with the special tokens sequence models need.

<pad> (id 0) fills sequences up to the length of the longest in a batch; <unk> stands for tokens not in the
vocabulary; <start> and <end> open and close a decoder's target sequence.
"""
from collections import Counter

import numpy as np

from ..tensor import Tensor

PAD, UNK, START, END = "<pad>", "<unk>", "<start>", "<end>"
SPECIALS = (PAD, UNK, START, END)


def word_tokenize(text):
    """Lowercased words split on whitespace (num2words phrases keep hyphens inside words: 'twenty-one')."""
    return text.lower().split()


def char_tokenize(text):
    """Lowercased characters, spaces included."""
    return list(" ".join(text.lower().split()))


class Vocab:
    """token <-> id. Specials come first (<pad> is 0), then tokens by decreasing frequency, ties alphabetical."""

    def __init__(self, tokens=(), specials=SPECIALS, min_freq=1):
        counts = tokens if isinstance(tokens, Counter) else Counter(tokens)
        ordered = sorted((t for t, c in counts.items() if c >= min_freq and t not in specials),
                         key=lambda t: (-counts[t], t))
        self.itos = list(specials) + ordered
        self.stoi = {t: i for i, t in enumerate(self.itos)}

    @classmethod
    def build(cls, texts, tokenizer=word_tokenize, min_freq=1, specials=SPECIALS):
        counts = Counter()
        for text in texts:
            counts.update(tokenizer(text))
        return cls(counts, specials, min_freq)

    def __len__(self):
        return len(self.itos)

    def __contains__(self, token):
        return token in self.stoi

    def __getitem__(self, token):
        return self.stoi.get(token, self.stoi.get(UNK, 0))

    def lookup_token(self, index):
        return self.itos[index]

    pad_id = property(lambda self: self.stoi[PAD])
    unk_id = property(lambda self: self.stoi[UNK])
    start_id = property(lambda self: self.stoi[START])
    end_id = property(lambda self: self.stoi[END])

    def encode(self, tokens, add_start=False, add_end=False):
        ids = [self[t] for t in tokens]
        return ([self.start_id] if add_start else []) + ids + ([self.end_id] if add_end else [])

    def decode(self, ids, strip_specials=True, stop_at_end=True):
        """ids -> tokens, stopping at the first <end> and dropping the other specials."""
        out = []
        for i in (ids.tolist() if hasattr(ids, "tolist") else ids):
            token = self.itos[int(i)]
            if stop_at_end and token == END:
                break
            if strip_specials and token in SPECIALS:
                continue
            out.append(token)
        return out

    def state_dict(self):
        return {"itos": list(self.itos)}

    @classmethod
    def from_state_dict(cls, state):
        vocab = cls.__new__(cls)
        vocab.itos = list(state["itos"])
        vocab.stoi = {t: i for i, t in enumerate(vocab.itos)}
        return vocab


def pad_batch(sequences, pad_id=0, max_len=None):
    """Lists of ids -> (ids (N, L) int64, padding_mask (N, L) bool, True at padding), L = the longest (or max_len,
    truncating longer sequences)."""
    if not sequences:
        raise ValueError("pad_batch: no sequences")
    longest = max(len(s) for s in sequences)
    length = longest if max_len is None else max_len
    ids = np.full((len(sequences), length), pad_id, dtype=np.int64)
    for i, seq in enumerate(sequences):
        seq = list(seq)[:length]
        ids[i, : len(seq)] = seq
    mask = np.zeros_like(ids, dtype=bool)
    for i, seq in enumerate(sequences):
        mask[i, min(len(seq), length):] = True
    return Tensor._wrap(ids), Tensor._wrap(mask)
