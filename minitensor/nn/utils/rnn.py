"""Packed sequences, as in torch.nn.utils.rnn: a batch of sequences of different lengths, without their padding.

    packed = pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
    output, (h_n, c_n) = lstm(packed)              # each sequence stops at its own last step
    y, lengths = pad_packed_sequence(output, batch_first=True)

The layout is PyTorch's: `data` holds step 0 of every sequence, then step 1 of those still running, and so on,
longest sequences first (`sorted_indices` gives that order, `unsorted_indices` undoes it); `batch_sizes[t]` is
how many sequences have a step t. Packing and unpacking are one gather each (differentiable). nn.LSTM takes a
PackedSequence, runs every sequence exactly to its length (the state of a finished sequence is frozen, so
h_n and c_n are each sequence's state after its last real step) and returns a PackedSequence.
"""
from typing import NamedTuple, Optional

import numpy as np

from ...ops.shape import cat
from ...tensor import Tensor


class PackedSequence(NamedTuple):
    data: Tensor                        # (sum(lengths), *)
    batch_sizes: Tensor                 # (max length,) int64
    sorted_indices: Optional[Tensor] = None    # longest first; None when the input was already sorted
    unsorted_indices: Optional[Tensor] = None  # the inverse permutation


def _lengths_array(lengths):
    if isinstance(lengths, Tensor):
        lengths = lengths._data
    lengths = np.asarray(lengths)
    if lengths.ndim != 1 or lengths.dtype.kind not in "iu":
        raise ValueError(f"pack_padded_sequence: lengths must be a 1-D sequence of ints, got {lengths.dtype} "
                         f"with shape {lengths.shape}")
    return lengths.astype(np.int64)


def _packed_rows(batch_sizes, order, batch):
    """Where each packed row comes from in a time-major (T, B) layout, as flat indices t * B + n: step t holds the
    first batch_sizes[t] sequences of `order`."""
    steps = np.repeat(np.arange(len(batch_sizes)), batch_sizes)
    rank = np.arange(len(steps)) - np.repeat(np.cumsum(batch_sizes) - batch_sizes, batch_sizes)
    return steps * batch + np.asarray(order, dtype=np.int64)[rank]


def _batch_sizes(sorted_lengths):
    """How many of the sequences (longest first) have a step t, for every t < the longest length."""
    steps = int(sorted_lengths.max(initial=0))
    return (sorted_lengths[:, None] > np.arange(steps)).sum(axis=0).astype(np.int64)


def _order(sequence):
    batch = int(sequence.batch_sizes._data[0]) if len(sequence.batch_sizes._data) else 0
    return np.arange(batch) if sequence.sorted_indices is None else sequence.sorted_indices._data


def pack_like(padded, sequence):
    """A time-major (T, B, *) tensor packed with the layout (batch_sizes, order) of `sequence` (nn.LSTM's output)."""
    batch = padded.shape[1]
    index = _packed_rows(sequence.batch_sizes._data, _order(sequence), batch)
    return PackedSequence(padded.reshape(padded.shape[0] * batch, *padded.shape[2:])[index], sequence.batch_sizes,
                          sequence.sorted_indices, sequence.unsorted_indices)


def pack_padded_sequence(input, lengths, batch_first=False, enforce_sorted=True):
    """input (T, B, *) (or (B, T, *) with batch_first) with each sequence's steps first and padding after;
    lengths (B,) the real lengths. With enforce_sorted, lengths must be in decreasing order."""
    lengths = _lengths_array(lengths)
    if input.ndim < 2:
        raise ValueError(f"pack_padded_sequence: expected input (T, B, *) or (B, T, *), got {tuple(input.shape)}")
    x = input.transpose(0, 1) if batch_first else input
    steps, batch = x.shape[0], x.shape[1]
    if len(lengths) != batch:
        raise ValueError(f"pack_padded_sequence: {len(lengths)} lengths for a batch of {batch} sequences")
    if batch and lengths.min() <= 0:
        raise ValueError("pack_padded_sequence: length of all samples has to be greater than 0, but found an "
                         f"element in 'lengths' that is <= 0: {lengths.tolist()}")
    if batch and lengths.max() > steps:
        raise ValueError(f"pack_padded_sequence: a length of {int(lengths.max())} exceeds the {steps} steps of input "
                         f"{tuple(input.shape)}")
    if enforce_sorted:
        if np.any(np.diff(lengths) > 0):
            raise ValueError("pack_padded_sequence: `lengths` array must be sorted in decreasing order when "
                             f"`enforce_sorted` is True, got {lengths.tolist()}; pass enforce_sorted=False to pack "
                             "unsorted sequences")
        order, sorted_indices, unsorted_indices = np.arange(batch), None, None
    else:
        order = np.argsort(-lengths, kind="stable")
        sorted_indices = Tensor._wrap(order.astype(np.int64))
        unsorted_indices = Tensor._wrap(np.argsort(order, kind="stable").astype(np.int64))
    batch_sizes = _batch_sizes(lengths[order])
    index = _packed_rows(batch_sizes, order, batch)
    return PackedSequence(x.reshape(steps * batch, *x.shape[2:])[index], Tensor._from_data(batch_sizes), sorted_indices,
                          unsorted_indices)


def pad_packed_sequence(sequence, batch_first=False, padding_value=0.0, total_length=None):
    """The inverse of pack_padded_sequence: (padded (T, B, *) or (B, T, *), lengths (B,) int64), sequences in
    their original order, padding_value after each one's end; T = total_length if given (at least the longest)."""
    data, batch_sizes = sequence.data, sequence.batch_sizes._data
    steps = len(batch_sizes)
    order = _order(sequence)
    batch = len(order)
    if total_length is not None:
        if total_length < steps:
            raise ValueError(f"pad_packed_sequence: total_length {total_length} is less than the longest sequence "
                             f"({steps} steps)")
        steps_out = int(total_length)
    else:
        steps_out = steps
    # each padded position (t, n) reads packed row k, or the extra row of padding_value appended at the end
    source = np.full(steps_out * batch, data.shape[0], dtype=np.int64)
    source[_packed_rows(batch_sizes, order, batch)] = np.arange(data.shape[0])
    pad_row = Tensor._wrap(np.full((1,) + tuple(data.shape[1:]), padding_value, dtype=data.dtype))
    padded = cat([data, pad_row])[source].reshape(steps_out, batch, *data.shape[1:])
    if batch_first:
        padded = padded.transpose(0, 1)
    return padded, Tensor._from_data(packed_lengths(sequence))


def packed_lengths(sequence):
    """Each sequence's length, in the original batch order (an int64 array)."""
    batch_sizes, order = sequence.batch_sizes._data, _order(sequence)
    lengths = np.empty(len(order), dtype=np.int64)
    lengths[order] = (batch_sizes[:, None] > np.arange(len(order))).sum(axis=0)  # the j-th longest: steps with > j
    return lengths


__all__ = ["PackedSequence", "pack_padded_sequence", "pad_packed_sequence"]
