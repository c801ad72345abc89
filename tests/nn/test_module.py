"""The Module API, default initialisations, dropout, position encodings and nn.utils."""
import copy

import numpy as np
import pytest

import minitensor as mt
from minitensor import nn

from optional_torch import needs_torch, torch
from .conftest import assert_same


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.norm = nn.LayerNorm(4)
        self.scale = nn.Parameter(mt.ones(1))
        self.register_buffer("steps", mt.zeros(1))
        self.register_buffer("cache", mt.zeros(2), persistent=False)
        self.plain = 5

    def forward(self, x):
        return self.norm(self.fc(x)) * self.scale


def _torch_block():
    """PyTorch's twin of Block (its parameters and buffers, registered in the same order)."""
    block = torch.nn.Module()
    block.fc = torch.nn.Linear(3, 4)
    block.norm = torch.nn.LayerNorm(4)
    block.scale = torch.nn.Parameter(torch.ones(1))
    block.register_buffer("steps", torch.zeros(1))
    block.register_buffer("cache", torch.zeros(2), persistent=False)
    return block


def test_registration_and_traversal():
    m = nn.Sequential(Block(), nn.ReLU(), Block())
    names = [n for n, _ in m.named_parameters()]
    assert names == ["0.scale", "0.fc.weight", "0.fc.bias", "0.norm.weight", "0.norm.bias",
                     "2.scale", "2.fc.weight", "2.fc.bias", "2.norm.weight", "2.norm.bias"]
    assert [n for n, _ in m.named_buffers()] == ["0.steps", "0.cache", "2.steps", "2.cache"]
    # as in PyTorch: each module's own parameters, then its persistent buffers, then its children
    assert list(m.state_dict())[:6] == ["0.scale", "0.steps", "0.fc.weight", "0.fc.bias", "0.norm.weight", "0.norm.bias"]
    assert [n for n, _ in m.named_modules()] == ["", "0", "0.fc", "0.norm", "1", "2", "2.fc", "2.norm"]
    assert len(list(m.children())) == 3 and m[0].plain == 5
    shared = nn.Linear(2, 2)
    twice = nn.Sequential(shared, shared)
    assert len(list(twice.parameters())) == 2  # shared parameters are listed once


@needs_torch
def test_state_dict_keys_match_pytorch():
    ours = nn.Sequential(Block(), nn.ReLU(), Block())
    theirs = torch.nn.Sequential(_torch_block(), torch.nn.ReLU(), _torch_block())
    assert list(ours.state_dict()) == list(theirs.state_dict())


@needs_torch
def test_state_dict_keys_match_pytorch_for_a_composite_model():
    ours = nn.TransformerEncoder(nn.TransformerEncoderLayer(8, 2, 16), 2)
    theirs = torch.nn.TransformerEncoder(torch.nn.TransformerEncoderLayer(8, 2, 16), 2, enable_nested_tensor=False)
    assert list(ours.state_dict()) == list(theirs.state_dict())
    for k, v in theirs.state_dict().items():
        assert ours.state_dict()[k].shape == tuple(v.shape), k


def test_load_state_dict_reports_every_problem():
    m = Block()
    sd = m.state_dict()
    sd.pop("fc.bias")
    sd["extra"] = mt.zeros(1)
    sd["fc.weight"] = mt.zeros(5, 3)
    with pytest.raises(RuntimeError) as info:
        m.load_state_dict(sd)
    msg = str(info.value)
    assert 'Missing key(s) in state_dict: "fc.bias"' in msg
    assert 'Unexpected key(s) in state_dict: "extra"' in msg
    assert "size mismatch for fc.weight: copying a param with shape (5, 3) from checkpoint, the shape in current " \
           "model is (4, 3)" in msg
    sd["fc.weight"] = mt.ones(4, 3)
    result = m.load_state_dict(sd, strict=False)
    assert result.missing_keys == ["fc.bias"] and result.unexpected_keys == ["extra"]
    np.testing.assert_array_equal(m.fc.weight.detach().numpy(), np.ones((4, 3)))


def test_load_state_dict_copies_in_place_and_casts():
    m = nn.Linear(2, 2)
    weight = m.weight
    m.load_state_dict({"weight": np.arange(4.0).reshape(2, 2), "bias": np.zeros(2)})
    assert m.weight is weight and m.weight.dtype == mt.float32
    np.testing.assert_array_equal(weight.detach().numpy(), [[0, 1], [2, 3]])


def test_to_dtype_train_eval_zero_grad_apply():
    m = Block()
    m.double()
    assert all(p.dtype == mt.float64 for p in m.parameters()) and m.steps.dtype == mt.float64
    m(mt.randn(2, 3, dtype=mt.float64)).sum().backward()
    assert m.fc.weight.grad is not None
    m.zero_grad()
    assert m.fc.weight.grad is None
    m.eval()
    assert not m.training and not m.fc.training
    m.train()
    assert m.norm.training
    seen = []
    m.apply(lambda mod: seen.append(type(mod).__name__))
    assert seen == ["Linear", "LayerNorm", "Block"]


def test_forward_hooks():
    m = nn.Linear(2, 2)
    calls = []
    pre = m.register_forward_pre_hook(lambda mod, inp: calls.append("pre"))
    post = m.register_forward_hook(lambda mod, inp, out: out * 0)
    out = m(mt.ones(1, 2))
    assert calls == ["pre"] and out.abs().sum().item() == 0
    pre.remove()
    post.remove()
    assert m(mt.ones(1, 2)).abs().sum().item() > 0


@needs_torch
def test_repr_matches_pytorch():
    pairs = [(nn.Linear(3, 4), torch.nn.Linear(3, 4)), (nn.Conv2d(1, 64, 7, stride=7), torch.nn.Conv2d(1, 64, 7, stride=7)),
             (nn.Sequential(nn.Linear(3, 4), nn.ReLU()), torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU())),
             (nn.LSTM(4, 8, num_layers=2, batch_first=True), torch.nn.LSTM(4, 8, num_layers=2, batch_first=True)),
             (nn.Embedding(10, 3, padding_idx=0), torch.nn.Embedding(10, 3, padding_idx=0)),
             (nn.Dropout(0.1), torch.nn.Dropout(0.1)), (nn.GELU(), torch.nn.GELU())]
    for ours, theirs in pairs:
        assert repr(ours) == repr(theirs)


def test_deepcopy_gives_independent_parameters():
    m = nn.Linear(2, 2)
    c = copy.deepcopy(m)
    assert isinstance(c.weight, nn.Parameter) and c.weight is not m.weight
    with mt.no_grad():
        c.weight.fill_(3.0)
    assert m.weight.detach().numpy().max() < 3.0


def test_assigning_wrong_types_is_an_error():
    m = nn.Linear(2, 2)
    with pytest.raises(TypeError, match="cannot assign"):
        m.weight = mt.zeros(2, 2)  # a plain tensor where a Parameter is registered
    with pytest.raises(TypeError, match="does not define forward"):
        nn.Module()(mt.ones(1))


@pytest.mark.parametrize("make,name,bound", [
    (lambda: nn.Linear(100, 50), "weight", 1 / np.sqrt(100)),
    (lambda: nn.Linear(100, 50), "bias", 1 / np.sqrt(100)),
    (lambda: nn.Conv2d(4, 8, 3), "weight", 1 / np.sqrt(36)),
    (lambda: nn.LSTM(10, 20), "weight_hh_l0", 1 / np.sqrt(20)),
    (lambda: nn.MultiheadAttention(16, 4), "in_proj_weight", np.sqrt(6 / (16 + 48))),
])
def test_default_init_is_uniform_in_pytorch_bounds(make, name, bound):
    values = np.concatenate([getattr(make(), name).detach().numpy().ravel() for _ in range(5)])
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.95 * bound            # the range is filled
    assert abs(values.std() - bound / np.sqrt(3)) < 0.05 * bound  # uniform: std = bound / sqrt(3)


def test_other_default_inits():
    e = nn.Embedding(1000, 20, padding_idx=3)
    w = e.weight.detach().numpy()
    assert abs(w.std() - 1) < 0.02 and np.all(w[3] == 0)
    ln = nn.LayerNorm(5)
    assert np.all(ln.weight.detach().numpy() == 1) and np.all(ln.bias.detach().numpy() == 0)
    mha = nn.MultiheadAttention(8, 2)
    assert np.all(mha.in_proj_bias.detach().numpy() == 0) and np.all(mha.out_proj.bias.detach().numpy() == 0)
    t = mt.empty(10_000)
    nn.init.trunc_normal_(t, std=1.0, a=-1.0, b=1.5)
    assert t.numpy().min() >= -1.0 and t.numpy().max() <= 1.5
    nn.init.kaiming_normal_(w2 := mt.empty(200, 100), nonlinearity="relu")
    assert abs(w2.numpy().std() - np.sqrt(2 / 100)) < 0.01
    nn.init.xavier_normal_(w3 := mt.empty(200, 100))
    assert abs(w3.numpy().std() - np.sqrt(2 / 300)) < 0.005


def test_manual_seed_makes_initialisation_reproducible():
    mt.manual_seed(11)
    a = nn.Linear(4, 4).weight.detach().numpy().copy()
    mt.manual_seed(11)
    np.testing.assert_array_equal(a, nn.Linear(4, 4).weight.detach().numpy())


def test_dropout_statistics_and_eval():
    d = nn.Dropout(0.3)
    x = mt.ones(200_000)
    y = d(x).numpy()
    assert abs((y == 0).mean() - 0.3) < 0.01
    np.testing.assert_allclose(y[y != 0], 1 / 0.7, rtol=1e-6)
    d.eval()
    assert d(x) is x
    mt.manual_seed(1)
    a = nn.Dropout(0.5)(mt.ones(100)).numpy()
    mt.manual_seed(1)
    np.testing.assert_array_equal(a, nn.Dropout(0.5)(mt.ones(100)).numpy())


def test_position_encodings():
    pe = nn.SinusoidalPositionalEncoding(16, max_len=50)
    x = mt.zeros(2, 10, 16)
    table = pe(x).numpy()[0]
    pos, i = 7, 3
    np.testing.assert_allclose(table[pos, 2 * i], np.sin(pos / 10000 ** (2 * i / 16)), rtol=1e-5)
    np.testing.assert_allclose(table[pos, 2 * i + 1], np.cos(pos / 10000 ** (2 * i / 16)), rtol=1e-5)
    assert "pe" not in pe.state_dict()
    learned = nn.LearnedPositionalEmbedding(10, 4)
    out = learned(mt.zeros(3, 6, 4))
    np.testing.assert_array_equal(out.detach().numpy()[1], learned.weight.detach().numpy()[:6])
    with pytest.raises(ValueError, match="exceeds max_len"):
        learned(mt.zeros(1, 11, 4))


@needs_torch
def test_clip_grad_norm_and_value_match_pytorch():
    rng = np.random.default_rng(0)
    grads = [rng.standard_normal((3, 4)), rng.standard_normal(5)]
    for norm_type in (2.0, 1.0, float("inf")):
        ours = [nn.Parameter(mt.zeros(*g.shape, dtype=mt.float64)) for g in grads]
        theirs = [torch.zeros(*g.shape, dtype=torch.float64, requires_grad=True) for g in grads]
        for p, q, g in zip(ours, theirs, grads):
            p.grad = mt.tensor(g)
            q.grad = torch.tensor(g)
        n1 = nn.utils.clip_grad_norm_(ours, 1.5, norm_type)
        n2 = torch.nn.utils.clip_grad_norm_(theirs, 1.5, norm_type)
        assert_same(n1, n2, 1e-12)
        for p, q in zip(ours, theirs):
            assert_same(p.grad, q.grad, 1e-9)
    p = nn.Parameter(mt.zeros(4, dtype=mt.float64))
    p.grad = mt.tensor([-3.0, 0.5, 2.0, -0.1], dtype=mt.float64)
    nn.utils.clip_grad_value_([p], 1.0)
    np.testing.assert_array_equal(p.grad.numpy(), [-1.0, 0.5, 1.0, -0.1])


def test_parameters_to_vector_and_back():
    m = nn.Linear(3, 2)
    v = nn.utils.parameters_to_vector(m.parameters())
    assert v.shape == (8,)
    nn.utils.vector_to_parameters(v * 0 + 1, m.parameters())
    assert np.all(m.weight.detach().numpy() == 1)
    with pytest.raises(ValueError, match="too few"):
        nn.utils.vector_to_parameters(mt.zeros(3), m.parameters())


@needs_torch
def test_load_pytorch_weights_saved_with_safetensors(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
    theirs = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.GELU(), torch.nn.Linear(8, 3))
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(theirs.state_dict(), str(path))
    ours = nn.Sequential(nn.Linear(4, 8), nn.GELU(), nn.Linear(8, 3))
    nn.utils.load_torch_safetensors(ours, path)
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    assert_same(ours(mt.tensor(x)), theirs(torch.tensor(x)), 1e-5, 1e-6)


@needs_torch
def test_load_pytorch_bfloat16_weights_saved_with_safetensors(tmp_path):
    safetensors_torch = pytest.importorskip("safetensors.torch", reason="safetensors is not installed")
    theirs = torch.nn.Linear(4, 3).to(torch.bfloat16)
    path = tmp_path / "model.safetensors"
    safetensors_torch.save_file(theirs.state_dict(), str(path))
    ours = nn.Linear(4, 3)
    nn.utils.load_torch_safetensors(ours, path)  # bf16 -> float32 is exact
    np.testing.assert_array_equal(ours.weight.detach().numpy(), theirs.weight.float().detach().numpy())
    assert ours.weight.dtype == mt.float32
