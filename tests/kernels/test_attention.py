"""The fused scaled-dot-product attention kernels (minitensor._C.sdpa_forward / sdpa_backward) against the numpy
reference (backend/numpy_ref.py: the plain formulas on whole score matrices), on every ISA body this CPU runs:
shapes around the kernel's padding (16) and row blocking (4), strided and broadcast operands, masks (padding,
-inf, float, fully masked rows), causal, both dtypes, the head-concat output layout, canaries around every output,
errors at the boundary. The op-level tests (gradients by finite differences, the fused op against its composite
twin, PyTorch parity) are in tests/ops and tests/nn.

Tolerance: every output is a sum of at most max(S, E, Ev) products of softmax weights (<= 1) and inputs, the
weights themselves within a few ulp: 16 * n * u relative to the sum of magnitudes, n = S + E + Ev (derived like
rtol_for in conftest.py, with room for the exp and the two-level sums of the backward).
"""
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from minitensor.backend import numpy_ref

from .conftest import Canaried, supported_isas

SIZES = [1, 2, 3, 4, 5, 15, 16, 17, 33]


def operand(rng, shape, dtype, layout):
    base = rng.standard_normal(shape).astype(dtype)
    if layout == "contiguous":
        return base
    if layout == "strided":  # every other feature of a wider array (a last-dim stride of 2)
        wide = np.zeros(shape[:-1] + (2 * shape[-1],), dtype)
        wide[..., ::2] = base
        return wide[..., ::2]
    if layout == "seq_major":  # the head-split view of a projection: (L, N, H, E) in memory
        return np.ascontiguousarray(base.transpose(2, 0, 1, 3)).transpose(1, 2, 0, 3)
    raise ValueError(layout)


def make_mask(rng, kind, N, H, L, S, dtype):
    if kind == "none":
        return None
    if kind == "padding":  # (N, 1, 1, S) broadcast over heads and queries, about 30% -inf, never key 0
        m = np.where(rng.random((N, 1, 1, S)) < 0.3, -np.inf, 0.0).astype(dtype)
        m[..., 0] = 0
        return np.broadcast_to(m, (N, H, L, S))
    if kind == "float":
        return np.broadcast_to(rng.uniform(-2, 2, (L, S)).astype(dtype), (N, H, L, S))
    if kind == "one_row_masked":
        m = np.zeros((N, H, L, S), dtype)
        m[0, H - 1, L - 1, :] = -np.inf
        return m
    raise ValueError(kind)


def tol(dtype, *dims):
    return 16 * sum(dims) * np.finfo(dtype).eps / 2


def assert_close(got, want, magnitude, t, what):
    bad = np.isnan(got) != np.isnan(want)
    assert not bad.any(), f"{what}: NaN where the reference has none (or the other way round)"
    with np.errstate(invalid="ignore"):  # inf - inf where both are -inf (the lse of a fully masked row)
        err = np.where(got == want, 0.0, np.abs(got - want))
        ok = np.isnan(want) | (err <= t * magnitude + 1e-300)
        assert ok.all(), f"{what}: worst error {np.nanmax(err / (magnitude + 1e-300)):.3g} of the magnitude"


@given(N=st.sampled_from([1, 2]), H=st.sampled_from([1, 3]), L=st.sampled_from(SIZES), S=st.sampled_from(SIZES), E=st.sampled_from(SIZES),
       Ev=st.sampled_from(SIZES), dtype=st.sampled_from([np.float32, np.float64]),
       mask=st.sampled_from(["none", "padding", "float", "one_row_masked"]), causal=st.booleans(),
       layout=st.sampled_from(["contiguous", "strided", "seq_major"]), out_layout=st.sampled_from(["nhle", "lnhe", "nlhe"]),
       isa=st.sampled_from(["scalar", "avx2", "avx512"]), seed=st.integers(0, 2 ** 16))
@example(N=2, H=2, L=17, S=17, E=16, Ev=16, dtype=np.float32, mask="padding", causal=False, layout="seq_major",
         out_layout="lnhe", isa="avx512", seed=0)
@example(N=1, H=2, L=65, S=65, E=32, Ev=32, dtype=np.float32, mask="one_row_masked", causal=True, layout="strided",
         out_layout="nlhe", isa="avx512", seed=1)  # ViT-small's length: blocks of 32, 32 and a one-vector block
@settings(max_examples=150)
def test_sdpa_matches_reference(C, N, H, L, S, E, Ev, dtype, mask, causal, layout, out_layout, isa, seed):
    if isa not in supported_isas():
        isa = supported_isas()[-1]
    rng = np.random.default_rng(seed)
    q, k, v = (operand(rng, s, dtype, layout) for s in ((N, H, L, E), (N, H, S, E), (N, H, S, Ev)))
    g = operand(rng, (N, H, L, Ev), dtype, layout)
    m = make_mask(rng, mask, N, H, L, S, dtype)
    scale = 1 / np.sqrt(E)
    want_out, want_lse = numpy_ref.sdpa(q.astype(np.float64), k.astype(np.float64), v.astype(np.float64),
                                        None if m is None else m.astype(np.float64), causal, scale)
    # out stored in one of the orders MultiheadAttention asks for (the heads side by side after a transpose)
    memory, back = {"nhle": ((N, H, L, Ev), (0, 1, 2, 3)), "lnhe": ((L, N, H, Ev), (1, 2, 0, 3)),
                    "nlhe": ((N, L, H, Ev), (0, 2, 1, 3))}[out_layout]
    out = Canaried(memory, dtype)
    out_view = out.array.transpose(back)
    lse = Canaried((N, H, L), dtype)
    C.sdpa_forward(q, k, v, m, causal, scale, out_view, lse.array, isa)
    out.check()
    lse.check()
    t = tol(dtype, S, E, Ev)
    assert_close(out_view, want_out, np.abs(v).max() + 1, t, "out")
    assert_close(lse.array, want_lse, np.abs(want_lse) + 1, t, "lse")

    q64, k64, v64, o64, g64 = (a.astype(np.float64) for a in (q, k, v, want_out, g))
    want = numpy_ref.sdpa_backward(q64, k64, v64, None if m is None else m.astype(np.float64), causal, scale, o64,
                                   want_lse, g64)
    grads = [Canaried(a.shape, dtype) for a in (q, k, v)]
    C.sdpa_backward(q, k, v, m, causal, scale, out_view, lse.array, g, *(x.array for x in grads), isa)
    size = (np.abs(q).max() + np.abs(k).max() + 1) * (np.abs(v).max() + 1) * (np.abs(g).max() + 1)
    for name, got, w in zip(("dq", "dk", "dv"), grads, want):
        got.check()
        assert_close(got.array, w, size * max(L, S, 1), t, name)


def test_sdpa_fully_masked_row_is_nan_and_spreads_like_softmax(C):
    rng = np.random.default_rng(1)
    q, k, v = (rng.standard_normal(s) for s in ((1, 1, 3, 4), (1, 1, 5, 4), (1, 1, 5, 2)))
    m = np.zeros((1, 1, 3, 5))
    m[0, 0, 1] = -np.inf
    out, lse = np.empty((1, 1, 3, 2)), np.empty((1, 1, 3))
    C.sdpa_forward(q, k, v, m, False, 0.5, out, lse)
    assert np.isnan(out[0, 0, 1]).all() and np.isfinite(out[0, 0, [0, 2]]).all()
    assert lse[0, 0, 1] == -np.inf
    dq, dk, dv = np.empty(q.shape), np.empty(k.shape), np.empty(v.shape)
    C.sdpa_backward(q, k, v, m, False, 0.5, out, lse, np.ones_like(out), dq, dk, dv)
    assert np.isnan(dq[0, 0, 1]).all() and np.isfinite(dq[0, 0, [0, 2]]).all()
    assert np.isnan(dk).all() and np.isnan(dv).all()  # as the unfused softmax backward: NaN reaches every key


def test_sdpa_results_do_not_depend_on_the_thread_count(C):
    import minitensor as mt

    rng = np.random.default_rng(2)
    q, k, v = (rng.standard_normal((16, 4, 17, 16)).astype(np.float32) for _ in range(3))
    results = []
    for n in (1, 2):
        before = mt.get_num_threads()
        mt.set_num_threads(n)
        try:
            out, lse = np.empty((16, 4, 17, 16), np.float32), np.empty((16, 4, 17), np.float32)
            C.sdpa_forward(q, k, v, None, True, 0.25, out, lse)
            grads = [np.empty_like(a) for a in (q, k, v)]
            C.sdpa_backward(q, k, v, None, True, 0.25, out, lse, out, *grads)
        finally:
            mt.set_num_threads(before)
        results.append((out, lse, *grads))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_sdpa_errors_name_the_op_and_shapes(C):
    q, k, v = (np.ones(s, np.float32) for s in ((2, 1, 3, 4), (2, 1, 5, 4), (2, 1, 5, 6)))
    out, lse = np.empty((2, 1, 3, 6), np.float32), np.empty((2, 1, 3), np.float32)
    with pytest.raises(ValueError, match=r"scaled_dot_product_attention: shapes q \(2, 1, 3, 4\), k \(2, 1, 5, 3\) "
                                         r"and v \(2, 1, 5, 6\) do not fit"):
        C.sdpa_forward(q, k[..., :3], v, None, False, 1.0, out, lse)
    with pytest.raises(ValueError, match=r"shapes q \(2, 3, 4\)"):
        C.sdpa_forward(q[:, 0], k[:, 0], v[:, 0], None, False, 1.0, out, lse)
    with pytest.raises(ValueError, match=r"attn_mask has shape \(2, 1, 3, 4\), expected \(2, 1, 3, 5\)"):
        C.sdpa_forward(q, k, v, np.zeros((2, 1, 3, 4), np.float32), False, 1.0, out, lse)
    with pytest.raises(ValueError, match=r"out has shape \(2, 1, 3, 4\), expected \(2, 1, 3, 6\)"):
        C.sdpa_forward(q, k, v, None, False, 1.0, np.empty((2, 1, 3, 4), np.float32), lse)
    with pytest.raises(ValueError, match=r"out must have unit stride along its last dim \(Ev\), got strides \(18, 18, 1, 3\)"):
        C.sdpa_forward(q, k, v, None, False, 1.0, np.empty((2, 1, 6, 3), np.float32).transpose(0, 1, 3, 2), lse)
    with pytest.raises(TypeError, match="key has dtype float64, expected float32"):
        C.sdpa_forward(q, k.astype(np.float64), v, None, False, 1.0, out, lse)
    with pytest.raises(ValueError, match=r"dk has shape \(2, 1, 5, 3\), expected \(2, 1, 5, 4\)"):
        C.sdpa_backward(q, k, v, None, False, 1.0, out, lse, out, np.empty_like(q),
                        np.empty((2, 1, 5, 3), np.float32), np.empty_like(v))
    with pytest.raises(ValueError, match=r"lse has shape \(2, 1, 4\), expected \(2, 1, 3\)"):
        C.sdpa_backward(q, k, v, None, False, 1.0, out, np.empty((2, 1, 4), np.float32), out, np.empty_like(q),
                        np.empty_like(k), np.empty_like(v))


@pytest.mark.parametrize("shape", [(0, 3, 4, 5, 2), (2, 0, 4, 5, 2), (2, 3, 4, 0, 2)])
def test_sdpa_size_zero(C, shape):
    B, L, E, S, Ev = shape
    q, k, v = np.ones((B, 1, L, E)), np.ones((B, 1, S, E)), np.ones((B, 1, S, Ev))
    out, lse = np.full((B, 1, L, Ev), 7.0), np.full((B, 1, L), 7.0)
    C.sdpa_forward(q, k, v, None, False, 1.0, out, lse)
    assert np.isnan(out).all() and (lse == -np.inf).all()  # no keys: every row fully masked (NaN, as softmax)


# ---------------------------------------------------------------------------- the op: fused vs its composite twin
def _composite_sdpa(q, k, v, mask, is_causal, scale):
    """softmax(q kᵀ scale + mask) v in plain Tensor ops: the twin the fused op must equal."""
    import minitensor as mt

    scores = (q @ k.mT) * scale
    L, S = q.shape[-2], k.shape[-2]
    if is_causal:
        scores = scores + mt.tensor(np.triu(np.full((L, S), -np.inf), 1))
    elif mask is not None:
        scores = scores + mt.tensor(np.where(mask, 0.0, -np.inf) if mask.dtype == np.bool_ else mask)
    return scores.softmax(-1) @ v


@given(batch_q=st.sampled_from([(), (2,), (2, 3), (1, 3)]), batch_kv=st.sampled_from([(), (2, 1), (3,)]),
       L=st.sampled_from([1, 4, 17]), S=st.sampled_from([1, 5, 17]), E=st.sampled_from([1, 3, 16]),
       Ev=st.sampled_from([2, 16]), mask=st.sampled_from(["none", "bool", "float", "causal"]),
       backend=st.sampled_from(["native", "numpy"]), seed=st.integers(0, 2 ** 16))
@settings(max_examples=60)
def test_fused_op_equals_its_composite_twin_values_and_gradients(batch_q, batch_kv, L, S, E, Ev, mask, backend, seed):
    import minitensor as mt

    try:
        batch = np.broadcast_shapes(batch_q, batch_kv)
    except ValueError:
        return  # batch dims that do not broadcast: the shapes' own error is tested elsewhere
    rng = np.random.default_rng(seed)
    arrays = [rng.standard_normal(b + s) for b, s in ((batch_q, (L, E)), (batch_kv, (S, E)), (batch_kv, (S, Ev)))]
    m, causal = None, mask == "causal"
    if mask == "bool":
        m = rng.random((L, S)) < 0.7
        m[:, 0] = True
    elif mask == "float":
        m = rng.uniform(-1, 1, batch + (L, S))
    g = rng.standard_normal(batch + (L, Ev))
    before = mt.get_backend()
    mt.set_backend(backend)
    try:
        results = []
        for fn in (lambda q, k, v: mt.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=m, is_causal=causal),
                   lambda q, k, v: _composite_sdpa(q, k, v, m, causal, 1 / np.sqrt(E))):
            ts = [mt.tensor(a, requires_grad=True) for a in arrays]
            out = fn(*ts)
            out.backward(mt.tensor(g))
            results.append([out.detach().numpy()] + [t.grad.numpy() for t in ts])
    finally:
        mt.set_backend(before)
    for fused, twin in zip(*results):
        np.testing.assert_allclose(fused, twin, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["numpy", "native"])
def test_fused_kernel_backward_and_create_graph_backward_agree(backend):
    """The backward kernel (grad mode off) and the Tensor-op formula used under create_graph give the same
    gradients; the create_graph one can be differentiated again."""
    import minitensor as mt

    rng = np.random.default_rng(5)
    arrays = [rng.standard_normal(s) for s in ((2, 4, 3), (2, 6, 3), (2, 6, 5))]
    mask = np.where(rng.random((2, 4, 6)) < 0.3, -np.inf, 0.0)
    mask[..., 0] = 0
    before = mt.get_backend()
    mt.set_backend(backend)
    try:
        grads = []
        for create_graph in (False, True):
            ts = [mt.tensor(a, requires_grad=True) for a in arrays]
            out = mt.nn.functional.scaled_dot_product_attention(*ts, attn_mask=mask)
            grads.append(mt.autograd.grad([out], ts, [mt.tensor(np.ones((2, 4, 5)))], create_graph=create_graph))
        second = mt.autograd.grad([sum((g * g).sum() for g in grads[1])], ts[:1])[0]
        assert np.isfinite(second.numpy()).all() and np.abs(second.numpy()).sum() > 0
    finally:
        mt.set_backend(before)
    for fused, composite in zip(*grads):
        np.testing.assert_allclose(fused.detach().numpy(), composite.detach().numpy(), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("batch_first", [False, True])
def test_multihead_attention_fused_path_equals_the_weights_path(batch_first):
    """need_weights=False takes the fused kernel (output stored head-concatenated); need_weights=True spells the
    weights out. Same outputs and gradients, with a key padding mask and a causal mask."""
    import minitensor as mt

    mt.manual_seed(0)
    mha = mt.nn.MultiheadAttention(32, 4, batch_first=batch_first, dtype=mt.float64)
    rng = np.random.default_rng(3)
    x_np = rng.standard_normal((5, 3, 32) if not batch_first else (3, 5, 32))
    pad = np.zeros((3, 5), bool)
    pad[1, 3:] = True
    causal = np.triu(np.full((5, 5), -np.inf), 1)
    results = []
    for need_weights in (False, True):
        mha.zero_grad()
        x = mt.tensor(x_np, requires_grad=True)
        out, _ = mha(x, x, x, key_padding_mask=pad, attn_mask=causal, need_weights=need_weights)
        out.backward(mt.tensor(np.cos(np.arange(out.numel()).reshape(out.shape))))
        results.append([out.detach().numpy(), x.grad.numpy()] + [p.grad.numpy() for p in mha.parameters()])
    for fused, spelled in zip(*results):
        np.testing.assert_allclose(fused, spelled, rtol=1e-12, atol=1e-12)
