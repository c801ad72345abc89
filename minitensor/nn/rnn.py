"""LSTMCell and LSTM, with PyTorch's gate order (i, f, g, o), parameter names and shapes.

One step:  [i, f, g, o] = x W_ihᵀ + b_ih + h W_hhᵀ + b_hh
           c' = sigmoid(f) * c + sigmoid(i) * tanh(g),   h' = sigmoid(o) * tanh(c')
The second line is F.lstm_cell, one fused op forward and backward.
"""
import math

import numpy as np

from .. import creation
from ..ops._util import check_same_dtype
from ..ops.nn import lstm_recurrence
from ..tensor import check_device
from .utils.rnn import PackedSequence, pack_like, packed_lengths, pad_packed_sequence
from ..ops.shape import cat, stack
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter


def _uniform_init(module, hidden_size):
    bound = 1.0 / math.sqrt(hidden_size) if hidden_size > 0 else 0
    for p in module.parameters():
        init.uniform_(p, -bound, bound)


class LSTMCell(Module):
    """One LSTM step: input (N, input_size) [or (input_size,)], hx = (h, c) each (N, hidden_size) -> (h', c')."""

    def __init__(self, input_size, hidden_size, bias=True, device=None, dtype=None):
        super().__init__()
        check_device(device, "LSTMCell")
        self.input_size, self.hidden_size, self.bias = input_size, hidden_size, bias
        self.weight_ih = Parameter(creation.empty(4 * hidden_size, input_size, dtype=dtype))
        self.weight_hh = Parameter(creation.empty(4 * hidden_size, hidden_size, dtype=dtype))
        if bias:
            self.bias_ih = Parameter(creation.empty(4 * hidden_size, dtype=dtype))
            self.bias_hh = Parameter(creation.empty(4 * hidden_size, dtype=dtype))
        else:
            self.register_parameter("bias_ih", None)
            self.register_parameter("bias_hh", None)
        _uniform_init(self, hidden_size)

    def forward(self, input, hx=None):
        batched = input.ndim == 2
        if input.ndim not in (1, 2) or input.shape[-1] != self.input_size:
            raise ValueError(f"LSTMCell: expected input (N, {self.input_size}) or ({self.input_size},), "
                             f"got {tuple(input.shape)}")
        check_same_dtype("LSTMCell", input=input, weight_ih=self.weight_ih,
                         h_0=None if hx is None else hx[0], c_0=None if hx is None else hx[1])
        if not batched:
            input = input.unsqueeze(0)
            hx = None if hx is None else (hx[0].unsqueeze(0), hx[1].unsqueeze(0))
        if hx is None:
            zeros = creation.zeros(input.shape[0], self.hidden_size, dtype=input.dtype)
            hx = (zeros, zeros)
        h, c = hx
        gates = F.linear(input, self.weight_ih, self.bias_ih) + F.linear(h, self.weight_hh, self.bias_hh)
        h, c = F.lstm_cell(gates, c)
        return (h, c) if batched else (h.squeeze(0), c.squeeze(0))

    def extra_repr(self):
        return f"{self.input_size}, {self.hidden_size}" + ("" if self.bias else ", bias=False")


class LSTM(Module):
    """A multi-layer LSTM over a sequence.

    input (L, N, input_size) (or (N, L, input_size) with batch_first, or unbatched (L, input_size));
    hx = (h_0, c_0), each (num_layers * D, N, hidden_size), D = 2 if bidirectional else 1, zeros by default.
    Returns (output (L, N, D * hidden_size), (h_n, c_n)). Dropout (training only) applies between layers.
    """

    def __init__(self, input_size, hidden_size, num_layers=1, bias=True, batch_first=False, dropout=0.0,
                 bidirectional=False, proj_size=0, device=None, dtype=None):
        super().__init__()
        check_device(device, "LSTM")
        if proj_size:
            raise ValueError("LSTM: proj_size is not supported")
        if not 0.0 <= dropout <= 1.0:
            raise ValueError(f"LSTM: dropout must be in [0, 1], got {dropout}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.bias, self.batch_first, self.dropout, self.bidirectional = bias, batch_first, dropout, bidirectional
        directions = 2 if bidirectional else 1
        for layer in range(num_layers):
            for direction in range(directions):
                suffix = f"_l{layer}" + ("_reverse" if direction else "")
                layer_in = input_size if layer == 0 else hidden_size * directions
                setattr(self, "weight_ih" + suffix, Parameter(creation.empty(4 * hidden_size, layer_in, dtype=dtype)))
                setattr(self, "weight_hh" + suffix, Parameter(creation.empty(4 * hidden_size, hidden_size, dtype=dtype)))
                if bias:
                    setattr(self, "bias_ih" + suffix, Parameter(creation.empty(4 * hidden_size, dtype=dtype)))
                    setattr(self, "bias_hh" + suffix, Parameter(creation.empty(4 * hidden_size, dtype=dtype)))
        _uniform_init(self, hidden_size)

    def _weights(self, layer, direction):
        suffix = f"_l{layer}" + ("_reverse" if direction else "")
        bias = (getattr(self, "bias_ih" + suffix), getattr(self, "bias_hh" + suffix)) if self.bias else (None, None)
        return getattr(self, "weight_ih" + suffix), getattr(self, "weight_hh" + suffix), *bias

    def forward(self, input, hx=None):
        check_same_dtype("LSTM", input=input.data if isinstance(input, PackedSequence) else input,
                         weight_ih_l0=self.weight_ih_l0, h_0=None if hx is None else hx[0],
                         c_0=None if hx is None else hx[1])
        if isinstance(input, PackedSequence):
            # every sequence runs to its own length: the steps past it leave its state as it was (valid mask)
            if input.data.ndim != 2 or input.data.shape[1] != self.input_size:
                raise ValueError(f"LSTM: expected packed data (sum of lengths, {self.input_size}), got "
                                 f"{tuple(input.data.shape)}")
            lengths = packed_lengths(input)
            padded, _ = pad_packed_sequence(input)  # (T, B, input_size), the original batch order
            valid = np.arange(padded.shape[0])[:, None] < lengths[None, :]
            output, state = self._layers(padded, hx, valid)
            return pack_like(output, input), state
        batched = input.ndim == 3
        if input.ndim not in (2, 3) or input.shape[-1] != self.input_size:
            raise ValueError(f"LSTM: expected input (L, N, {self.input_size}) (or batch_first / unbatched), "
                             f"got {tuple(input.shape)}")
        x = input if batched else input.unsqueeze(1)
        if batched and self.batch_first:
            x = x.transpose(0, 1)
        if hx is not None and not batched:
            hx = (hx[0].unsqueeze(1), hx[1].unsqueeze(1))
        output, (h_n, c_n) = self._layers(x, hx, None)
        if batched and self.batch_first:
            output = output.transpose(0, 1)
        if not batched:
            output, h_n, c_n = output.squeeze(1), h_n.squeeze(1), c_n.squeeze(1)
        return output, (h_n, c_n)

    def _layers(self, x, hx, valid):
        """x (L, N, input_size) time-major -> (output (L, N, D * H), (h_n, c_n)); valid (L, N) bool or None."""
        steps, batch = x.shape[0], x.shape[1]
        directions = 2 if self.bidirectional else 1
        if hx is None:
            zeros = creation.zeros(self.num_layers * directions, batch, self.hidden_size, dtype=x.dtype)
            hx = (zeros, zeros)
        expected = (self.num_layers * directions, batch, self.hidden_size)
        for name, state in zip(("h_0", "c_0"), hx):
            if tuple(state.shape) != expected:
                raise ValueError(f"LSTM: {name} has shape {tuple(state.shape)}, expected {expected}")
        h_n, c_n = [], []
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(directions):
                w_ih, w_hh, b_ih, b_hh = self._weights(layer, direction)
                # every step's input projection, and both biases, in one GEMM: (L, N, 4H); then the recurrence
                # as one op (ops.nn.LSTMRecurrence: the steps run on arrays, W_hh's gradient is one GEMM)
                projected = F.linear(x, w_ih, None if b_ih is None else b_ih + b_hh)
                h, c = hx[0][layer * directions + direction], hx[1][layer * directions + direction]
                if steps:
                    hs, h, c = lstm_recurrence(projected, h, c, w_hh, valid, reverse=bool(direction))
                    outputs.append(hs)
                else:
                    outputs.append(projected[..., : self.hidden_size] * 0)
                h_n.append(h)
                c_n.append(c)
            x = outputs[0] if directions == 1 else cat(outputs, dim=-1)
            if self.dropout and self.training and layer < self.num_layers - 1:
                x = F.dropout(x, self.dropout, True)
        return x, (stack(h_n), stack(c_n))

    def extra_repr(self):
        s = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            s += f", num_layers={self.num_layers}"
        if self.batch_first:
            s += ", batch_first=True"
        if self.dropout:
            s += f", dropout={self.dropout}"
        if self.bidirectional:
            s += ", bidirectional=True"
        return s
