"""Every layer against PyTorch in float64: PyTorch's state dict loaded into ours gives the same outputs and the
same input and parameter gradients."""
import numpy as np
import pytest
torch = pytest.importorskip("torch", reason="PyTorch is not installed: nn parity tests need it (.ci/run installs it)")
from hypothesis import given, settings
from hypothesis import strategies as st

import minitensor as mt
from minitensor import nn

from .conftest import assert_same, compare_grads, copy_weights, to_mt


@pytest.fixture(autouse=True)
def float64():
    torch.manual_seed(0)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


def run_both(theirs, ours, *inputs, out=lambda o: o, reduce=lambda o: (o * o).sum(), modules=None):
    """Forward both on the same inputs, backward a quadratic of the output, compare outputs and gradients
    (of the inputs, and of the parameters of `modules` = (theirs, ours), default the callables themselves)."""
    t_in = [torch.tensor(x, requires_grad=np.issubdtype(np.asarray(x).dtype, np.floating)) for x in inputs]
    m_in = [mt.tensor(x, requires_grad=np.issubdtype(np.asarray(x).dtype, np.floating)) for x in inputs]
    t_out, m_out = out(theirs(*t_in)), out(ours(*m_in))
    assert_same(m_out, t_out, msg="output")
    reduce(t_out).backward()
    reduce(m_out).backward()
    for i, (a, b) in enumerate(zip(m_in, t_in)):
        if b.requires_grad:
            assert_same(a.grad, b.grad, 1e-9, 1e-11, msg=f"gradient of input {i}")
    t_mod, m_mod = modules if modules is not None else (theirs, ours)
    if hasattr(t_mod, "named_parameters"):
        compare_grads(t_mod, m_mod)


def rand(*shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def test_linear():
    t = torch.nn.Linear(5, 3)
    run_both(t, copy_weights(t, nn.Linear(5, 3).double()), rand(4, 2, 5))


def test_linear_without_bias():
    t = torch.nn.Linear(5, 3, bias=False)
    run_both(t, copy_weights(t, nn.Linear(5, 3, bias=False).double()), rand(4, 5))


@pytest.mark.parametrize("kwargs", [dict(), dict(stride=2, padding=1), dict(stride=(7, 7)), dict(padding=1, dilation=2),
                                    dict(bias=False)])
def test_conv2d(kwargs):
    t = torch.nn.Conv2d(3, 4, 3 if "stride" not in kwargs or kwargs["stride"] != (7, 7) else 7, **kwargs)
    ours = copy_weights(t, nn.Conv2d(3, 4, t.kernel_size, **kwargs).double())
    run_both(t, ours, rand(2, 3, 14, 14))


def test_layer_norm():
    t = torch.nn.LayerNorm(6)
    with torch.no_grad():
        t.weight.uniform_(0.5, 1.5)
        t.bias.uniform_(-0.5, 0.5)
    run_both(t, copy_weights(t, nn.LayerNorm(6).double()), rand(3, 4, 6))


def test_layer_norm_over_two_dims_without_affine():
    t = torch.nn.LayerNorm((4, 6), elementwise_affine=False)
    ours = nn.LayerNorm((4, 6), elementwise_affine=False).double()
    run_both(t, ours, rand(3, 4, 6))


@pytest.mark.parametrize("padding_idx", [None, 0, 3])
def test_embedding(padding_idx):
    t = torch.nn.Embedding(7, 4, padding_idx=padding_idx)
    ours = copy_weights(t, nn.Embedding(7, 4, padding_idx=padding_idx).double())
    ids = np.array([[0, 3, 3], [6, 0, 1]])
    run_both(t, ours, ids)


@pytest.mark.parametrize("module", ["ReLU", "GELU", "Tanh", "Sigmoid", "SiLU"])
def test_activations(module):
    run_both(getattr(torch.nn, module)(), getattr(nn, module)(), rand(3, 5))


def test_gelu_tanh_and_softmax_modules():
    run_both(torch.nn.GELU(approximate="tanh"), nn.GELU(approximate="tanh"), rand(3, 5))
    run_both(torch.nn.Softmax(dim=0), nn.Softmax(dim=0), rand(3, 5))
    run_both(torch.nn.LogSoftmax(dim=1), nn.LogSoftmax(dim=1), rand(3, 5))


def test_sequential_state_dict_keys_match():
    t = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    ours = nn.Sequential(nn.Linear(3, 4), nn.ReLU(), nn.Linear(4, 2)).double()
    assert list(ours.state_dict()) == list(t.state_dict())
    run_both(t, copy_weights(t, ours), rand(5, 3))


def test_lstm_cell():
    t = torch.nn.LSTMCell(4, 6)
    ours = copy_weights(t, nn.LSTMCell(4, 6).double())
    x, h, c = rand(3, 4), rand(3, 6, seed=1), rand(3, 6, seed=2)
    run_both(lambda *a: t(a[0], (a[1], a[2])), lambda *a: ours(a[0], (a[1], a[2])), x, h, c,
             out=lambda o: o[0] * 2 + o[1], reduce=lambda o: (o * o).sum(), modules=(t, ours))


@pytest.mark.parametrize("kwargs", [dict(), dict(num_layers=2), dict(batch_first=True), dict(bidirectional=True),
                                    dict(num_layers=2, bidirectional=True, batch_first=True), dict(bias=False)])
@pytest.mark.parametrize("with_state", [False, True])
def test_lstm(kwargs, with_state):
    t = torch.nn.LSTM(4, 5, **kwargs)
    ours = copy_weights(t, nn.LSTM(4, 5, **kwargs).double())
    assert list(ours.state_dict()) == list(t.state_dict())
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    x = rand(2, 6, 4) if kwargs.get("batch_first") else rand(6, 2, 4)
    h0, c0 = rand(layers, 2, 5, seed=1), rand(layers, 2, 5, seed=2)

    def call(module):
        if with_state:
            return lambda x, h, c: module(x, (h, c))
        return lambda x, h, c: module(x)

    flatten = lambda o: o[0].sum() + (o[1][0] * 3).sum() + (o[1][1] * 5).sum()  # noqa: E731
    ti = [torch.tensor(v, requires_grad=True) for v in (x, h0, c0)]
    mi = [mt.tensor(v, requires_grad=True) for v in (x, h0, c0)]
    to, mo = call(t)(*ti), call(ours)(*mi)
    assert_same(mo[0], to[0], msg="output")
    assert_same(mo[1][0], to[1][0], msg="h_n")
    assert_same(mo[1][1], to[1][1], msg="c_n")
    flatten(to).backward()
    flatten(mo).backward()
    for name, a, b in zip(("x", "h0", "c0"), mi, ti):
        if b.grad is not None:
            assert_same(a.grad, b.grad, 1e-9, 1e-11, msg=f"gradient of {name}")
    compare_grads(t, ours)


@given(lengths=st.lists(st.integers(1, 6), min_size=1, max_size=5), sort=st.booleans(),
       kwargs=st.sampled_from([dict(), dict(num_layers=2, bidirectional=True), dict(batch_first=True)]),
       with_state=st.booleans())
@settings(max_examples=25, deadline=None)
def test_lstm_on_packed_sequences(lengths, sort, kwargs, with_state):
    # pack_padded_sequence -> LSTM -> pad_packed_sequence against PyTorch's: the packed layout, each sequence's
    # final state (both directions), the padded output, and every gradient
    from minitensor.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    if sort:
        lengths = sorted(lengths, reverse=True)
    batch_first = kwargs.get("batch_first", False)
    steps, batch = max(lengths), len(lengths)
    layers = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    x = rand(batch, steps, 3) if batch_first else rand(steps, batch, 3)
    h0, c0 = rand(layers, batch, 4, seed=1), rand(layers, batch, 4, seed=2)
    t = torch.nn.LSTM(3, 4, **kwargs)
    ours = copy_weights(t, nn.LSTM(3, 4, **kwargs).double())
    outs = []
    for lib, module, pack, pad in ((torch, t, torch.nn.utils.rnn.pack_padded_sequence,
                                    torch.nn.utils.rnn.pad_packed_sequence),
                                   (mt, ours, pack_padded_sequence, pad_packed_sequence)):
        inputs = [lib.tensor(v, requires_grad=True) for v in (x, h0, c0)]
        packed = pack(inputs[0], lib.tensor(lengths), batch_first=batch_first, enforce_sorted=sort)
        out, (h, c) = module(packed, (inputs[1], inputs[2])) if with_state else module(packed)
        padded, out_lengths = pad(out, batch_first=batch_first, padding_value=-2.0, total_length=steps + 1)
        (padded.sin().sum() + (h * 3).sum() + (c * 5).sum()).backward()
        outs.append((packed, out, padded, out_lengths, h, c, inputs))
    (tp, to, tpad, tlen, th, tc, ti), (mp, mo, mpad, mlen, mh, mc, mi) = outs
    assert_same(mp.data, tp.data, msg="packed data")
    np.testing.assert_array_equal(mp.batch_sizes.numpy(), tp.batch_sizes.numpy())
    if not sort:
        np.testing.assert_array_equal(mp.sorted_indices.numpy(), tp.sorted_indices.numpy())
        np.testing.assert_array_equal(mp.unsorted_indices.numpy(), tp.unsorted_indices.numpy())
    assert_same(mo.data, to.data, msg="packed output")
    assert_same(mpad, tpad, msg="padded output")
    np.testing.assert_array_equal(mlen.numpy(), tlen.numpy())
    assert_same(mh, th, msg="h_n")
    assert_same(mc, tc, msg="c_n")
    for name, a, b in zip(("x", "h0", "c0"), mi, ti):
        if b.grad is not None:
            assert_same(a.grad, b.grad, 1e-9, 1e-11, msg=f"gradient of {name}")
    compare_grads(t, ours)


def test_pack_padded_sequence_errors():
    from minitensor.nn.utils.rnn import pack_padded_sequence

    x = mt.zeros(4, 3, 2)
    with pytest.raises(ValueError, match="must be sorted in decreasing order when `enforce_sorted` is True"):
        pack_padded_sequence(x, [1, 3, 2])
    with pytest.raises(ValueError, match="greater than 0"):
        pack_padded_sequence(x, [3, 0, 2], enforce_sorted=False)
    with pytest.raises(ValueError, match="exceeds the 4 steps"):
        pack_padded_sequence(x, [5, 1, 1])
    with pytest.raises(ValueError, match="3 lengths for a batch of 2"):
        pack_padded_sequence(mt.zeros(4, 2, 2), [3, 2, 1])


def test_lstm_unbatched():
    t = torch.nn.LSTM(3, 4, num_layers=2)
    ours = copy_weights(t, nn.LSTM(3, 4, num_layers=2).double())
    run_both(lambda x: t(x)[0], lambda x: ours(x)[0], rand(5, 3), modules=(t, ours))


@pytest.mark.parametrize("batch_first", [False, True])
@pytest.mark.parametrize("masks", ["none", "padding", "causal_bool", "float_attn", "both", "per_head"])
@pytest.mark.parametrize("average", [True, False])
def test_multihead_self_attention(batch_first, masks, average):
    E, H, L, N = 8, 2, 5, 3
    t = torch.nn.MultiheadAttention(E, H, batch_first=batch_first)
    with torch.no_grad():
        t.in_proj_bias.uniform_(-0.5, 0.5)
        t.out_proj.bias.uniform_(-0.5, 0.5)
    ours = copy_weights(t, nn.MultiheadAttention(E, H, batch_first=batch_first).double())
    rng = np.random.default_rng(3)
    kpm = rng.random((N, L)) < 0.3
    kpm[:, 0] = False
    causal = np.triu(np.ones((L, L), bool), 1)
    kwargs = {"none": {}, "padding": {"key_padding_mask": kpm}, "causal_bool": {"attn_mask": causal},
              "float_attn": {"attn_mask": rng.uniform(-1, 1, (L, L))},
              "both": {"attn_mask": causal, "key_padding_mask": kpm},
              "per_head": {"attn_mask": rng.uniform(-1, 1, (N * H, L, L))}}[masks]
    x = rand(N, L, E) if batch_first else rand(L, N, E)
    tx, mx = torch.tensor(x, requires_grad=True), mt.tensor(x, requires_grad=True)
    tk = {k: torch.tensor(v) for k, v in kwargs.items()}
    to, tw = t(tx, tx, tx, average_attn_weights=average, **tk)
    mo, mw = ours(mx, mx, mx, average_attn_weights=average, **kwargs)
    assert_same(mo, to, msg="output")
    assert_same(mw, tw, msg="attention weights")
    ((to * to).sum() + (tw * 3).sum()).backward()
    ((mo * mo).sum() + (mw * 3).sum()).backward()
    assert_same(mx.grad, tx.grad, 1e-9, 1e-11)
    compare_grads(t, ours)


def test_multihead_cross_attention_and_unbatched():
    E, H = 6, 3
    t = torch.nn.MultiheadAttention(E, H)
    ours = copy_weights(t, nn.MultiheadAttention(E, H).double())
    q, kv = rand(4, 2, E), rand(7, 2, E, seed=1)
    run_both(lambda q, k: t(q, k, k)[0], lambda q, k: ours(q, k, k)[0], q, kv, modules=(t, ours))
    t.zero_grad()
    ours.zero_grad()
    run_both(lambda q, k: t(q, k, k)[0], lambda q, k: ours(q, k, k)[0], rand(4, E), rand(7, E, seed=1),
             modules=(t, ours))


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_transformer_encoder(norm_first, activation):
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=activation, norm_first=norm_first,
                                             batch_first=True)
    t = torch.nn.TransformerEncoder(layer, 2, norm=torch.nn.LayerNorm(8), enable_nested_tensor=False)
    ours_layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation=activation, norm_first=norm_first,
                                            batch_first=True)
    ours = copy_weights(t, nn.TransformerEncoder(ours_layer, 2, norm=nn.LayerNorm(8)).double())
    assert list(ours.state_dict()) == list(t.state_dict())
    kpm = np.zeros((3, 5), bool)
    kpm[1, 3:] = True
    t.train(False)
    ours.eval()
    run_both(lambda x: t(x, src_key_padding_mask=torch.tensor(kpm)),
             lambda x: ours(x, src_key_padding_mask=kpm), rand(3, 5, 8), modules=(t, ours))


@pytest.mark.parametrize("backend", ["native", "numpy"])
def test_transformer_encoder_inference_matches_pytorch(backend):
    # without a graph the GELU feed-forward is one kernel call (the GEMM's GELU epilogue) and attention runs
    # batch-major: the same outputs as PyTorch's inference
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", norm_first=True,
                                             batch_first=True)
    t = torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).eval()
    ours_layer = nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, activation="gelu", norm_first=True, batch_first=True)
    ours = copy_weights(t, nn.TransformerEncoder(ours_layer, 2).double()).eval()
    x = rand(3, 5, 8)
    before = mt.get_backend()
    mt.set_backend(backend)
    try:
        with torch.no_grad():
            want = t(torch.tensor(x))
        with mt.no_grad():
            got = ours(mt.tensor(x))
        with_graph = ours(mt.tensor(x, requires_grad=True))  # the unfused path
    finally:
        mt.set_backend(before)
    assert_same(got, want, msg="inference output")
    assert_same(got, with_graph.detach(), msg="fused vs unfused")


def test_losses_as_modules():
    logits, target = rand(4, 3), np.array([0, 2, 1, 2])
    for theirs, ours in [(torch.nn.CrossEntropyLoss(label_smoothing=0.1), nn.CrossEntropyLoss(label_smoothing=0.1)),
                         (torch.nn.NLLLoss(reduction="sum"), nn.NLLLoss(reduction="sum"))]:
        run_both(lambda x: theirs(x, torch.tensor(target)), lambda x: ours(x, mt.tensor(target)), logits,
                 reduce=lambda o: o * 1)
    y = rand(4, 3, seed=5)
    run_both(lambda x: torch.nn.MSELoss()(x, torch.tensor(y)), lambda x: nn.MSELoss()(x, mt.tensor(y)), logits,
             reduce=lambda o: o * 1)
    run_both(lambda x: torch.nn.L1Loss()(x, torch.tensor(y)), lambda x: nn.L1Loss()(x, mt.tensor(y)), logits,
             reduce=lambda o: o * 1)
    p = np.random.default_rng(0).uniform(0, 1, (4, 3))
    run_both(lambda x: torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0, 2.0, 0.5]))(x, torch.tensor(p)),
             lambda x: nn.BCEWithLogitsLoss(pos_weight=mt.tensor([1.0, 2.0, 0.5], dtype=mt.float64))(x, mt.tensor(p)),
             logits, reduce=lambda o: o * 1)


@settings(max_examples=15)
@given(n=st.integers(1, 5), c=st.integers(2, 6), ignore=st.booleans(), smoothing=st.sampled_from([0.0, 0.2]),
       weighted=st.booleans(), reduction=st.sampled_from(["mean", "sum", "none"]))
def test_cross_entropy_options_match_pytorch(n, c, ignore, smoothing, weighted, reduction):
    rng = np.random.default_rng(n * 10 + c)
    logits, target = rng.standard_normal((n, c)), rng.integers(0, c, n)
    if ignore and n > 1:
        target[0] = 1 if c > 1 else 0
        target[-1] = -100
    w = rng.uniform(0.5, 2, c) if weighted else None
    kw = dict(reduction=reduction, label_smoothing=smoothing)
    t = torch.nn.functional.cross_entropy(torch.tensor(logits), torch.tensor(target),
                                          None if w is None else torch.tensor(w), **kw)
    m = mt.nn.functional.cross_entropy(mt.tensor(logits), mt.tensor(target), None if w is None else mt.tensor(w), **kw)
    assert_same(m, t, 1e-10, 1e-12)
