"""The three models in models/ (ViT, TransformerClassifier, Seq2Seq) against PyTorch twins, in float64.

Each twin is written here from PyTorch modules of the same names, so the state-dict keys match exactly. The
minitensor model's weights are copied into the twin; the forward outputs and every parameter's gradient after
backward of a scalar loss must agree. The Seq2Seq twin encodes with pack_padded_sequence, an independent check
that minitensor's masked encoder stops at each sequence's last real token.
"""

import numpy as np
import pytest

import minitensor as mt
from minitensor.testing import assert_close

torch = pytest.importorskip("torch", reason="PyTorch is not installed: model parity tests need it (.ci/run installs it)")
from torch import nn as tnn  # noqa: E402
from torch.nn import functional as TF  # noqa: E402
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

from minitensor.models.seq2seq import Seq2Seq  # noqa: E402
from minitensor.models.transformer import TransformerClassifier  # noqa: E402
from minitensor.models.vit import ViT  # noqa: E402
from minitensor.nn.positional import sinusoidal_table  # noqa: E402
from minitensor.testing.torch_twins import TorchClassifier, TorchViT  # noqa: E402

RTOL, ATOL = 1e-7, 1e-9


@pytest.fixture(autouse=True)
def float64():
    torch.manual_seed(0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


# -- helpers ---------------------------------------------------------------------------------------------------
def perturb(model, seed=0, scale=0.1, keep_zero=()):
    """Add noise to every parameter, so zero-initialized biases, LayerNorm affines and [cls]/position embeddings
    take part in the comparison (rows listed in keep_zero, e.g. padding_idx rows, stay zero)."""
    rng = np.random.default_rng(seed)
    state = {}
    for name, p in model.named_parameters():
        value = p.detach().numpy() + scale * rng.standard_normal(p.shape)
        for key, row in keep_zero:
            if name == key:
                value[row] = 0.0
        state[name] = value
    result = model.load_state_dict(state, strict=False)
    assert not result.unexpected_keys
    return model


def twin_from(ours, theirs):
    """Check the state dicts have the same keys and shapes, then copy minitensor -> torch."""
    ours_sd, theirs_sd = ours.state_dict(), theirs.state_dict()
    assert set(ours_sd) == set(theirs_sd)
    for key in ours_sd:
        assert tuple(ours_sd[key].shape) == tuple(theirs_sd[key].shape), key
    theirs.load_state_dict({k: torch.from_numpy(np.array(v.numpy(), dtype=np.float64)) for k, v in ours_sd.items()})
    return theirs.double().train()  # train(): dropout is 0, and torch takes no inference fast path


def compare_grads(ours, theirs):
    tgrads = dict(theirs.named_parameters())
    names = [n for n, _ in ours.named_parameters()]
    assert set(names) == set(tgrads)
    for name, p in ours.named_parameters():
        tg = tgrads[name].grad
        assert p.grad is not None, f"{name}: no gradient"
        assert tg is not None, f"{name}: no torch gradient"
        assert_close(p.grad, tg, rtol=RTOL, atol=ATOL, msg=f"gradient of {name}: ")


def run_both(ours, theirs, m_inputs, t_inputs, reduce=lambda o: (o * o).sum()):
    m_out, t_out = ours(*m_inputs), theirs(*t_inputs)
    assert_close(m_out, t_out, rtol=RTOL, atol=ATOL, msg="output: ")
    reduce(m_out).backward()
    reduce(t_out).backward()
    compare_grads(ours, theirs)
    return m_out, t_out


def ids_with_trailing_pad(rng, vocab, lengths, total, pad=0, low=1):
    ids = np.full((len(lengths), total), pad, dtype=np.int64)
    for i, n in enumerate(lengths):
        ids[i, :n] = rng.integers(low, vocab, n)
    return ids


# -- ViT -------------------------------------------------------------------------------------------------------
def test_vit():
    config = dict(image_size=8, patch_size=4, in_channels=2, num_classes=5, dim=8, depth=2, heads=2, mlp_dim=16)
    mt.manual_seed(0)
    ours = perturb(ViT(**config).double())
    theirs = twin_from(ours, TorchViT(**config))
    images = np.random.default_rng(1).standard_normal((3, 2, 8, 8))
    m_out, _ = run_both(ours, theirs, [mt.tensor(images)], [torch.tensor(images)])
    assert m_out.shape == (3, 5)


# -- TransformerClassifier -------------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_transformer_classifier(pooling):
    config = dict(vocab_size=11, num_classes=3, dim=8, depth=2, heads=2, mlp_dim=16, pad_id=0)
    mt.manual_seed(0)
    ours = TransformerClassifier(**config, dropout=0.0, max_len=12, pooling=pooling).double()
    perturb(ours, keep_zero=[("embedding.weight", 0)])
    pe = ours.positional.pe.numpy()
    assert_close(pe, sinusoidal_table(13, 8).astype(np.float64))  # minitensor's table, float32 values
    theirs = twin_from(ours, TorchClassifier(pe, **config, pooling=pooling))
    ids = ids_with_trailing_pad(np.random.default_rng(2), 11, [6, 3, 1, 5], 6)
    ours.train()
    run_both(ours, theirs, [mt.tensor(ids)], [torch.tensor(ids)])
    # changing the token id of a <pad> position's embedding never reaches the output
    ours.zero_grad()
    with mt.no_grad():
        before = ours(mt.tensor(ids)).numpy()
        ours.embedding.weight[0] = 5.0
        after = ours(mt.tensor(ids)).numpy()
    np.testing.assert_allclose(after, before, rtol=1e-12, atol=1e-12)


# -- Seq2Seq ---------------------------------------------------------------------------------------------------
class TorchSeq2Seq(tnn.Module):
    def __init__(self, src_vocab_size, tgt_vocab_size, emb_dim, hidden_size, num_layers, attention, pad_id=0,
                 start_id=2, end_id=3):
        super().__init__()
        self.pad_id, self.start_id, self.end_id, self.attention = pad_id, start_id, end_id, attention
        self.src_embedding = tnn.Embedding(src_vocab_size, emb_dim, padding_idx=pad_id)
        self.tgt_embedding = tnn.Embedding(tgt_vocab_size, emb_dim, padding_idx=pad_id)
        self.encoder = tnn.LSTM(emb_dim, hidden_size, num_layers, batch_first=True)
        self.decoder = tnn.LSTM(emb_dim, hidden_size, num_layers, batch_first=True)
        if attention:
            self.combine = tnn.Linear(2 * hidden_size, hidden_size, bias=False)
        self.out = tnn.Linear(hidden_size, tgt_vocab_size)

    def encode(self, src):
        mask = src == self.pad_id
        lengths = (~mask).sum(1)
        packed = pack_padded_sequence(self.src_embedding(src), lengths, batch_first=True, enforce_sorted=False)
        outputs, state = self.encoder(packed)
        memory, _ = pad_packed_sequence(outputs, batch_first=True, total_length=src.shape[1])
        return memory, state, mask

    def readout(self, h, memory, mask):
        if not self.attention:
            return self.out(h)
        scores = (h @ memory.transpose(1, 2)).masked_fill(mask.unsqueeze(1), float("-inf"))
        context = torch.softmax(scores, dim=-1) @ memory
        return self.out(torch.tanh(self.combine(torch.cat([context, h], dim=-1))))

    def forward(self, src, tgt):
        memory, state, mask = self.encode(src)
        h, _ = self.decoder(self.tgt_embedding(tgt[:, :-1]), state)
        return self.readout(h, memory, mask)

    def loss(self, src, tgt):
        logits = self(src, tgt)
        return TF.cross_entropy(logits.reshape(-1, logits.shape[-1]), tgt[:, 1:].reshape(-1), ignore_index=self.pad_id)

    @torch.no_grad()
    def greedy_decode(self, src, max_len):
        memory, state, mask = self.encode(src)
        token = torch.full((src.shape[0],), self.start_id, dtype=torch.int64)
        done = torch.zeros(src.shape[0], dtype=torch.bool)
        out = []
        for _ in range(max_len):
            h, state = self.decoder(self.tgt_embedding(token).unsqueeze(1), state)
            token = self.readout(h, memory, mask)[:, 0].argmax(-1)
            ids = torch.where(done, torch.full_like(token, self.pad_id), token)
            out.append(ids)
            done |= ids == self.end_id
            if done.all():
                break
        return torch.stack(out, dim=1)


S2S = dict(src_vocab_size=9, tgt_vocab_size=10, emb_dim=5, hidden_size=6)


def seq2seq_pair(attention, num_layers, seed=0, scale=0.1):
    mt.manual_seed(seed)
    ours = Seq2Seq(**S2S, num_layers=num_layers, attention=attention).double()
    perturb(ours, seed=seed, scale=scale, keep_zero=[("src_embedding.weight", 0), ("tgt_embedding.weight", 0)])
    return ours, twin_from(ours, TorchSeq2Seq(**S2S, num_layers=num_layers, attention=attention))


def seq2seq_batch(seed=3):
    """Sources of lengths 5, 2, 4, 1 (trailing <pad>); targets <start> y.. <end> <pad>.. of different lengths."""
    rng = np.random.default_rng(seed)
    src = ids_with_trailing_pad(rng, 9, [5, 2, 4, 1], 5, low=4)
    tgt = np.zeros((4, 7), dtype=np.int64)
    for i, n in enumerate([5, 3, 1, 2]):
        tgt[i, 0], tgt[i, 1 : n + 1], tgt[i, n + 1] = 2, rng.integers(4, 10, n), 3
    return src, tgt


@pytest.mark.parametrize("attention", [True, False])
@pytest.mark.parametrize("num_layers", [1, 2])
def test_seq2seq_teacher_forcing(attention, num_layers):
    ours, theirs = seq2seq_pair(attention, num_layers)
    src, tgt = seq2seq_batch()
    m_src, m_tgt, t_src, t_tgt = mt.tensor(src), mt.tensor(tgt), torch.tensor(src), torch.tensor(tgt)
    # the encoder's final state is what packing gives: the state after each sequence's last real token
    _, (mh, mc), _ = ours.encode(m_src)
    _, (th, tc), _ = theirs.encode(t_src)
    assert_close(mh, th, rtol=RTOL, atol=ATOL, msg="h_n: ")
    assert_close(mc, tc, rtol=RTOL, atol=ATOL, msg="c_n: ")
    logits = ours(m_src, m_tgt)
    assert logits.shape == (4, 6, 10)
    assert_close(logits, theirs(t_src, t_tgt), rtol=RTOL, atol=ATOL, msg="logits: ")
    m_loss, t_loss = ours.loss(m_src, m_tgt), theirs.loss(t_src, t_tgt)
    assert_close(m_loss, t_loss, rtol=RTOL, atol=ATOL, msg="loss: ")
    m_loss.backward()
    t_loss.backward()
    compare_grads(ours, theirs)


@pytest.mark.parametrize("attention, seed", [(True, 6), (False, 35)])
def test_seq2seq_greedy_decode_and_beam_search(attention, seed):
    # larger weights and no output bias, so the untrained model's predictions depend on the input; the seeds
    # are ones where some rows stop at <end> early and others run to max_len
    ours, theirs = seq2seq_pair(attention, 2, seed=seed, scale=1.0)
    with torch.no_grad(), mt.no_grad():
        theirs.out.bias.zero_()
        ours.out.bias[...] = 0.0
    src, _ = seq2seq_batch(seed=4)
    m_ids = ours.greedy_decode(mt.tensor(src), max_len=8).numpy()
    t_ids = theirs.greedy_decode(torch.tensor(src), max_len=8).numpy()
    np.testing.assert_array_equal(m_ids, t_ids)
    ended = (m_ids == 3).any(1)
    assert ended.any() and not ended.all(), m_ids
    for i in range(src.shape[0]):
        row = ours.greedy_decode(mt.tensor(src[i : i + 1]), max_len=8).numpy()[0]
        stop = np.flatnonzero(row == 3)
        expected = row[: stop[0] + 1] if len(stop) else row
        np.testing.assert_array_equal(m_ids[i, : len(expected)], expected)  # batching changes nothing
        beam = ours.beam_search(mt.tensor(src[i]), beam_size=1, max_len=8).numpy()
        np.testing.assert_array_equal(beam, expected)
