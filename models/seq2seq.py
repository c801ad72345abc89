"""An LSTM encoder-decoder (Sutskever et al., 2014) with optional dot attention (Luong et al., 2015).

    source ids (N, S)  -> embedding -> LSTM encoder              outputs (N, S, H), final state (h, c)
    target ids (N, T)  = <start> y1 ... yk <end> <pad> ...
    decoder: starts from the encoder's final state; input at step t is <start> then, with teacher forcing,
             the true previous token y_{t-1} (else its own previous prediction)
        h_t            = LSTM(embedding(input_t), state)
        attention on:  a_t = softmax_j(h_t . s_j) over non-<pad> source positions j  (dot score)
                       context_t = sum_j a_tj s_j;  h~_t = tanh(W_c [context_t; h_t])
        logits_t       = W_o h~_t  (or W_o h_t without attention)
    the loss ignores <pad> targets; inference decodes greedily or with beam search until <end>.

The encoder never reads <pad>: the source batch is packed (pack_padded_sequence, as in PyTorch), so each
sequence's state is the one after its last real token. Built only on minitensor's public API; state-dict keys follow PyTorch's
modules of the same names (nn.Embedding, nn.LSTM, nn.Linear).
"""
import numpy as np

import minitensor as mt
from minitensor import nn
from minitensor.nn import functional as F
from minitensor.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence


class Seq2Seq(nn.Module):
    def __init__(self, src_vocab_size, tgt_vocab_size, emb_dim=64, hidden_size=128, num_layers=1, attention=True,
                 pad_id=0, start_id=2, end_id=3, dropout=0.0):
        super().__init__()
        self.config = dict(src_vocab_size=src_vocab_size, tgt_vocab_size=tgt_vocab_size, emb_dim=emb_dim,
                           hidden_size=hidden_size, num_layers=num_layers, attention=attention, pad_id=pad_id,
                           start_id=start_id, end_id=end_id, dropout=dropout)
        self.pad_id, self.start_id, self.end_id = pad_id, start_id, end_id
        self.attention = attention
        self.src_embedding = nn.Embedding(src_vocab_size, emb_dim, padding_idx=pad_id)
        self.tgt_embedding = nn.Embedding(tgt_vocab_size, emb_dim, padding_idx=pad_id)
        self.encoder = nn.LSTM(emb_dim, hidden_size, num_layers, batch_first=True, dropout=dropout)
        self.decoder = nn.LSTM(emb_dim, hidden_size, num_layers, batch_first=True, dropout=dropout)
        if attention:
            self.combine = nn.Linear(2 * hidden_size, hidden_size, bias=False)
        self.out = nn.Linear(hidden_size, tgt_vocab_size)

    # -- encoder -------------------------------------------------------------------------------------------
    def encode(self, src, src_padding_mask=None):
        """src (N, S) -> (outputs (N, S, H), (h, c) each (num_layers, N, H), padding mask (N, S)).

        The sequences are packed (nn.utils.rnn.pack_padded_sequence), so each runs exactly to its length and its
        final state is the state after its last real token; outputs are zero at the <pad> positions (attention
        never reads them). The padding must come after each sequence's tokens, and no sequence may be empty."""
        if src.ndim != 2:
            raise ValueError(f"Seq2Seq: expected source ids of shape (N, S), got {tuple(src.shape)}")
        if src_padding_mask is None:
            src_padding_mask = src == self.pad_id
        pad = src_padding_mask.numpy()
        lengths = (~pad).sum(axis=1)
        if (pad != (np.arange(pad.shape[1]) >= lengths[:, None])).any():
            raise ValueError("Seq2Seq: the source padding must come after each sequence's tokens (<pad> only at "
                             "the end of a row)")
        if pad.shape[0] and lengths.min() == 0:
            raise ValueError(f"Seq2Seq: source sequence {int(lengths.argmin())} has no tokens (all <pad>)")
        packed = pack_padded_sequence(self.src_embedding(src), lengths, batch_first=True, enforce_sorted=False)
        output, state = self.encoder(packed)
        memory = pad_packed_sequence(output, batch_first=True, total_length=src.shape[1])[0]
        return memory, state, src_padding_mask

    # -- decoder -------------------------------------------------------------------------------------------
    def _readout(self, h, memory, src_padding_mask):
        """decoder outputs h (N, T, H) -> logits (N, T, V), and the attention weights (N, T, S) or None."""
        if not self.attention:
            return self.out(h), None
        scores = h @ memory.mT  # (N, T, S): dot score of each decoder step with each encoder output
        scores = scores.masked_fill(src_padding_mask.unsqueeze(1), float("-inf"))
        weights = F.softmax(scores, dim=-1)
        context = weights @ memory  # (N, T, H)
        return self.out(self.combine(mt.cat([context, h], dim=-1)).tanh()), weights

    def forward(self, src, tgt, teacher_forcing=1.0, src_padding_mask=None, generator=None):
        """Training forward: logits (N, T-1, V) predicting tgt[:, 1:] from tgt[:, :-1] (tgt starts with <start>).

        teacher_forcing: the probability that a step is fed the true previous token rather than the model's own
        prediction (drawn per step for the whole batch). 1.0 runs the decoder over the whole sequence at once.
        """
        if tgt.ndim != 2 or tgt.shape[0] != src.shape[0]:
            raise ValueError(f"Seq2Seq: expected target ids (N, T) with N = {src.shape[0]}, got {tuple(tgt.shape)}")
        if not 0.0 <= teacher_forcing <= 1.0:
            raise ValueError(f"Seq2Seq: teacher_forcing must be in [0, 1], got {teacher_forcing}")
        memory, state, src_padding_mask = self.encode(src, src_padding_mask)
        inputs = tgt[:, :-1]
        if teacher_forcing >= 1.0:
            h, _ = self.decoder(self.tgt_embedding(inputs), state)
            return self._readout(h, memory, src_padding_mask)[0]
        draws = mt.rand(inputs.shape[1], generator=generator).numpy()
        token, logits = inputs[:, 0], []
        for t in range(inputs.shape[1]):
            if t > 0 and draws[t] < teacher_forcing:
                token = inputs[:, t]
            h, state = self.decoder(self.tgt_embedding(token).unsqueeze(1), state)
            step_logits = self._readout(h, memory, src_padding_mask)[0]
            logits.append(step_logits)
            token = step_logits[:, 0].argmax(-1).detach()
        return mt.cat(logits, dim=1)

    def loss(self, src, tgt, teacher_forcing=1.0, label_smoothing=0.0):
        """Mean cross-entropy over the non-<pad> target tokens (the <end> token included)."""
        logits = self(src, tgt, teacher_forcing)
        return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=self.pad_id,
                               label_smoothing=label_smoothing)

    def _step(self, token, state, memory, src_padding_mask):
        h, state = self.decoder(self.tgt_embedding(token).unsqueeze(1), state)
        logits, weights = self._readout(h, memory, src_padding_mask)
        return logits[:, 0], state, (None if weights is None else weights[:, 0])

    @mt.no_grad()
    def greedy_decode(self, src, max_len=32, src_padding_mask=None, return_attention=False):
        """src (N, S) -> predicted ids (N, <= max_len), without <start>; each row ends at its first <end>
        (then <pad>). With return_attention, also the attention weights (N, T, S) (attention models only)."""
        memory, state, src_padding_mask = self.encode(src, src_padding_mask)
        n = src.shape[0]
        token = mt.full((n,), self.start_id, dtype=mt.int64)
        done = np.zeros(n, dtype=bool)
        out, attn = [], []
        for _ in range(max_len):
            logits, state, weights = self._step(token, state, memory, src_padding_mask)
            token = logits.argmax(-1)
            ids = np.where(done, self.pad_id, token.numpy())
            out.append(ids)
            if weights is not None:
                attn.append(weights.numpy())
            done |= ids == self.end_id
            if done.all():
                break
        ids = mt.tensor(np.stack(out, axis=1), dtype=mt.int64)
        if return_attention:
            return ids, (mt.tensor(np.stack(attn, axis=1)) if attn else None)
        return ids

    @mt.no_grad()
    def beam_search(self, src, beam_size=4, max_len=32, length_penalty=1.0):
        """One source sequence src (S,) or (1, S) -> the best target ids (without <start>, ending with <end> if
        one was produced), by beam search with scores sum(log p) / length ** length_penalty."""
        if src.ndim == 1:
            src = src.unsqueeze(0)
        if src.ndim != 2 or src.shape[0] != 1:
            raise ValueError(f"Seq2Seq.beam_search: decodes one sequence, (S,) or (1, S); got {tuple(src.shape)}")
        if beam_size < 1:
            raise ValueError(f"Seq2Seq.beam_search: beam_size must be at least 1, got {beam_size}")
        memory, state, mask = self.encode(src)
        beams = [([], 0.0)]  # (tokens, sum of log-probabilities) of the live hypotheses
        finished = []
        for _ in range(max_len):
            k = len(beams)
            token = mt.tensor([b[0][-1] if b[0] else self.start_id for b in beams], dtype=mt.int64)
            logits, new_state, _ = self._step(token, state, memory.expand(k, -1, -1), mask.expand(k, -1))
            logp = F.log_softmax(logits, dim=-1).numpy()  # (k, V)
            total = np.array([b[1] for b in beams])[:, None] + logp
            order = np.argsort(-total, axis=None, kind="stable")[: 2 * beam_size]
            candidates = []
            for flat in order:
                beam, tok = divmod(int(flat), logp.shape[1])
                tokens = beams[beam][0] + [tok]
                if tok == self.end_id:
                    finished.append((tokens, float(total[beam, tok])))
                else:
                    candidates.append((tokens, float(total[beam, tok]), beam))
                if len(candidates) == beam_size:
                    break
            if len(finished) >= beam_size or not candidates:
                break
            keep = mt.tensor([c[2] for c in candidates], dtype=mt.int64)
            state = (new_state[0][:, keep], new_state[1][:, keep])
            beams = [(c[0], c[1]) for c in candidates]
        pool = finished or [(b[0], b[1]) for b in beams]
        best = max(pool, key=lambda b: b[1] / max(len(b[0]), 1) ** length_penalty)
        return mt.tensor(best[0], dtype=mt.int64)

