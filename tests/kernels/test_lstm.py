"""The fused LSTM cell kernels (minitensor._C.lstm_cell_forward / lstm_cell_backward) against the numpy reference
(backend/numpy_ref.py, evaluated in long double on the same inputs), on every ISA body this CPU runs, with
canaries around every output; the Python op on non-contiguous inputs; errors at the C++ boundary.

Tolerances, derived (u = eps/2 of the kernel's dtype; the long-double reference is exact at this scale):
- each activation (sigmoid, tanh) is within 3 ulp <= 6u of the truth (test_activations_are_within_a_few_ulp
  measures it: about 2 ulp), so with |i|, |f|, |g|, |o| <= 1:
  c' = f c + i g:   |err| <= 6u|c| + 6u + 6u + 2 roundings of u(|c| + 1)            <= 14u (1 + |c|)
  h' = o tanh(c'):  |err| <= 6u + 6u + (1 - t^2) 14u (1 + |c|) + u                  <= 27u (1 + |c|)
  checked with margin: 32u (1 + |c|) and 64u (1 + |c|).
- backward: dc' = dc + dh o (1 - t^2) carries |err| <= (|dh| + |dc|) 64u (1 + |c|) (dominated by 2|dt|);
  every gradient is dc' (or dh) times factors of magnitude <= 1 (or |c| for d_f) with errors of a few u each:
  |err| <= 128u (1 + |c|)^2 (|dh| + |dc|), checked per hidden unit for all four gate gradients and d_c.
"""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import minitensor as mt
from minitensor.backend import numpy_ref

from .conftest import Canaried, supported_isas

SHAPES = [(1, 1), (3, 5), (2, 16), (7, 17), (4, 33), (5, 48), (64, 128), (1, 1000), (9, 3), (0, 5), (5, 0), (0, 0)]
DTYPES = [np.float32, np.float64]


def u(dtype):
    return np.finfo(dtype).eps / 2


def inputs(n, h, dtype, seed, scale=3.0):
    rng = np.random.default_rng(seed)
    gates = (rng.standard_normal((n, 4 * h)) * scale).astype(dtype)
    c = (rng.standard_normal((n, h)) * 2).astype(dtype)
    dh = rng.standard_normal((n, h)).astype(dtype)
    dc = rng.standard_normal((n, h)).astype(dtype)
    return gates, c, dh, dc


def forward(C, gates, c, isa=None):
    n, h = c.shape
    h_out, c_out = Canaried((n, h), c.dtype), Canaried((n, h), c.dtype)
    C.lstm_cell_forward(gates, c, h_out.array, c_out.array, isa=isa)
    h_out.check()
    c_out.check()
    return h_out.array, c_out.array


def backward(C, gates, c, dh, dc, isa=None, want_dc=True):
    n, h = c.shape
    dg, dcp = Canaried((n, 4 * h), c.dtype), Canaried((n, h), c.dtype)
    C.lstm_cell_backward(gates, c, dh, dc, dg.array, dcp.array if want_dc else None, isa=isa)
    dg.check()
    dcp.check()
    return dg.array, dcp.array


def long(*arrays):
    return [None if a is None else a.astype(np.longdouble) for a in arrays]


def assert_within(actual, expected, bound, what):
    err = np.abs(actual.astype(np.longdouble) - expected)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.size else None
    assert (err <= bound).all(), (f"{what}: error {float(err[worst]):.3g} above the bound {float(bound[worst]):.3g} "
                                  f"at {worst}")


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_forward_matches_reference(C, isa, dtype, shape):
    if isa not in supported_isas():
        pytest.skip(f"this CPU has no {isa}")
    gates, c, _, _ = inputs(*shape, dtype, seed=sum(shape))
    h, c_next = forward(C, gates, c, isa)
    rh, rc = numpy_ref.lstm_cell(*long(gates, c))
    scale = 1 + np.abs(c.astype(np.longdouble))
    assert_within(c_next, rc, 32 * u(dtype) * scale, "c'")
    assert_within(h, rh, 64 * u(dtype) * scale, "h'")


@pytest.mark.parametrize("isa", ["scalar", "avx2", "avx512"])
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("grads", ["both", "dh", "dc", "none"])
def test_backward_matches_reference(C, isa, dtype, shape, grads):
    if isa not in supported_isas():
        pytest.skip(f"this CPU has no {isa}")
    gates, c, dh, dc = inputs(*shape, dtype, seed=sum(shape) + 1)
    dh = dh if grads in ("both", "dh") else None
    dc = dc if grads in ("both", "dc") else None
    dg, dcp = backward(C, gates, c, dh, dc, isa)
    rg, rc = numpy_ref.lstm_cell_backward(*long(gates, c, dh, dc))
    size = sum(np.abs(g.astype(np.longdouble)) for g in (dh, dc) if g is not None)
    bound = 128 * u(dtype) * (1 + np.abs(c.astype(np.longdouble))) ** 2 * (size if grads != "none" else 0)
    assert_within(dcp, rc, bound, "d_c")
    assert_within(dg, rg, np.concatenate([bound] * 4, axis=-1), "d_gates")
    if grads == "none":
        assert (dg == 0).all() and (dcp == 0).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_backward_without_dc_out_writes_only_d_gates(C, dtype):
    gates, c, dh, dc = inputs(6, 19, dtype, seed=5)
    dg, dcp = backward(C, gates, c, dh, dc, want_dc=False)
    np.testing.assert_array_equal(dg, backward(C, gates, c, dh, dc)[0])
    assert (dcp == dtype(1234.5678)).all()  # untouched: still the sentinel


@pytest.mark.parametrize("dtype", DTYPES)
def test_activations_are_within_a_few_ulp(C, dtype):
    """sigmoid and tanh alone: gates i = -inf, f = +inf, o = +inf make c' = c and h' = tanh(c) exactly
    (i = 0, f = o = 1); with c = 1, i = -inf, f = x: c' = sigmoid(x)."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.uniform(-1, 1, 2000), rng.uniform(-20, 20, 2000), np.linspace(-0.7, 0.7, 701),
                        np.sign(rng.standard_normal(1000)) * 10.0 ** rng.uniform(-9, 1.6, 1000)]).astype(dtype)
    H = x.size
    for isa in supported_isas():
        gates = np.zeros((1, 4 * H), dtype)
        gates[0, :H], gates[0, H:2 * H], gates[0, 3 * H:] = -np.inf, np.inf, np.inf
        t, c_same = forward(C, gates, x[None, :].copy(), isa)
        np.testing.assert_array_equal(c_same[0], x)
        gates[0, H:2 * H] = x
        _, s = forward(C, gates, np.ones((1, H), dtype), isa)
        for name, got, want in (("tanh", t[0], np.tanh(x.astype(np.longdouble))),
                                ("sigmoid", s[0], numpy_ref._sigmoid(x.astype(np.longdouble)))):
            ulp = np.spacing(np.abs(want.astype(dtype))).astype(np.longdouble)
            ulps = np.abs(got.astype(np.longdouble) - want) / ulp
            assert ulps.max() <= 3, f"{isa} {name}: {float(ulps.max()):.2f} ulp at x = {x[np.argmax(ulps)]!r}"


@pytest.mark.parametrize("dtype", DTYPES)
def test_extreme_values_limits_and_nan(C, dtype):
    big = [-np.inf, -1e4, -100.0, -50.0, -20.0, 20.0, 50.0, 100.0, 1e4, np.inf]
    H = len(big)
    gates = np.array([np.roll(big, k) for k in range(4)], dtype).reshape(1, 4 * H)
    c = np.array([[-1e3, -1.0, 0.0, 1.0, 1e3] * 2], dtype)
    for isa in supported_isas():
        h, c_next = forward(C, gates, c, isa)
        rh, rc = numpy_ref.lstm_cell(*long(gates, c))
        np.testing.assert_allclose(c_next, rc.astype(np.float64), rtol=8 * u(dtype), atol=8 * u(dtype))
        np.testing.assert_allclose(h, rh.astype(np.float64), rtol=8 * u(dtype), atol=8 * u(dtype))
        dh, dc = np.ones((1, H), dtype), np.ones((1, H), dtype)
        dg, dcp = backward(C, gates, c, dh, dc, isa)
        rg, rdc = numpy_ref.lstm_cell_backward(*long(gates, c, dh, dc))
        assert np.isfinite(dg).all() and np.isfinite(dcp).all()
        np.testing.assert_allclose(dg, rg.astype(np.float64), rtol=64 * u(dtype), atol=64 * u(dtype) * 1e3)
        np.testing.assert_allclose(dcp, rdc.astype(np.float64), rtol=64 * u(dtype), atol=64 * u(dtype))
    nan_gates = np.zeros((2, 4 * 3), dtype)
    nan_gates[0, 1] = np.nan  # unit 1 of row 0, gate i
    h, c_next = forward(C, nan_gates, np.zeros((2, 3), dtype))
    assert np.isnan(h[0, 1]) and np.isnan(c_next[0, 1])
    assert np.isfinite(np.delete(h.ravel(), 1)).all()


def test_tail_and_vector_paths_agree_bitwise(C):
    """An element in a row's tail (H not a multiple of the vector width) goes through the same code as one in a
    full vector: H = 17 and H = 32 rows holding the same values give the same bits."""
    for dtype in DTYPES:
        gates32, c32, dh32, dc32 = inputs(3, 32, dtype, seed=9)
        g17 = np.concatenate([gates32[:, q * 32: q * 32 + 17] for q in range(4)], axis=1)
        h32, cn32 = forward(C, gates32, c32)
        h17, cn17 = forward(C, g17, np.ascontiguousarray(c32[:, :17]))
        np.testing.assert_array_equal(h17, h32[:, :17])
        np.testing.assert_array_equal(cn17, cn32[:, :17])
        dg32, dc32_ = backward(C, gates32, c32, dh32, dc32)
        dg17, dc17 = backward(C, g17, np.ascontiguousarray(c32[:, :17]), np.ascontiguousarray(dh32[:, :17]),
                              np.ascontiguousarray(dc32[:, :17]))
        np.testing.assert_array_equal(dg17, np.concatenate([dg32[:, q * 32: q * 32 + 17] for q in range(4)], axis=1))
        np.testing.assert_array_equal(dc17, dc32_[:, :17])


@pytest.mark.parametrize("backend", ["numpy", "native"])
@given(layout=st.sampled_from(["transposed", "strided", "reversed", "misaligned"]), dtype=st.sampled_from(DTYPES),
       n=st.integers(1, 9), h=st.integers(1, 21))
@settings(max_examples=25)
def test_python_op_takes_non_contiguous_inputs(C, backend, layout, dtype, n, h):
    gates, c, dh, dc = inputs(n, h, dtype, seed=n * 100 + h)

    def relayout(a):
        if layout == "transposed":
            return np.asfortranarray(a)
        if layout == "strided":
            big = np.zeros(a.shape + (3,), a.dtype)
            big[..., 1] = a
            return big[..., 1]
        if layout == "reversed":
            return np.flip(np.flip(a, 0).copy(), 0)
        raw = np.zeros(a.nbytes + 1, np.uint8)  # contiguous, but not aligned to the element size
        view = np.frombuffer(raw.data, dtype=a.dtype, count=a.size, offset=1).reshape(a.shape)
        view[...] = a
        return view

    before = mt.get_backend()
    mt.set_backend(backend)
    try:
        results = []
        for make in (np.ascontiguousarray, relayout):
            g_t = mt.Tensor._wrap(make(gates))
            c_t = mt.Tensor._wrap(make(c))
            g_t.requires_grad = c_t.requires_grad = True
            h_next, c_next = mt.nn.functional.lstm_cell(g_t, c_t)
            mt.autograd.backward([h_next, c_next], [mt.Tensor._wrap(make(dh)), mt.Tensor._wrap(make(dc))])
            results.append([h_next.detach().numpy(), c_next.detach().numpy(), g_t.grad.numpy(), c_t.grad.numpy()])
    finally:
        mt.set_backend(before)
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)


def test_kernel_errors(C):
    f32, f64 = np.float32, np.float64
    g, c = np.zeros((3, 8), f32), np.zeros((3, 2), f32)
    h, cn = np.empty((3, 2), f32), np.empty((3, 2), f32)
    fwd = C.lstm_cell_forward
    with pytest.raises(ValueError, match=r"lstm_cell: gates has shape \(3, 7\), expected \(N, 4H\)"):
        fwd(np.zeros((3, 7), f32), c, h, cn)
    with pytest.raises(ValueError, match=r"lstm_cell: gates has shape \(24,\), expected \(N, 4H\)"):
        fwd(np.zeros(24, f32), c, h, cn)
    with pytest.raises(ValueError, match=r"lstm_cell: c has shape \(3, 3\), expected \(3, 2\) \(from gates \(3, 8\)"):
        fwd(g, np.zeros((3, 3), f32), h, cn)
    with pytest.raises(ValueError, match=r"lstm_cell: c has shape \(2, 2\), expected \(3, 2\)"):
        fwd(g, np.zeros((2, 2), f32), h, cn)
    with pytest.raises(ValueError, match=r"lstm_cell: h_out has shape \(3, 4\), expected \(3, 2\)"):
        fwd(g, c, np.empty((3, 4), f32), cn)
    with pytest.raises(ValueError, match=r"lstm_cell: c_out has shape \(6,\), expected \(3, 2\)"):
        fwd(g, c, h, np.empty(6, f32))
    with pytest.raises(ValueError, match="lstm_cell: c has dtype float64, expected float32"):
        fwd(g, np.zeros((3, 2), f64), h, cn)
    with pytest.raises(ValueError, match="lstm_cell: h_out has dtype float64, expected float32"):
        fwd(g, c, np.empty((3, 2), f64), cn)
    with pytest.raises(ValueError, match="lstm_cell: gates must be float32 or float64, got int64"):
        fwd(np.zeros((3, 8), np.int64), c, h, cn)
    with pytest.raises(ValueError, match="lstm_cell: gates must be C-contiguous"):
        fwd(np.zeros((8, 3), f32).T, c, h, cn)
    with pytest.raises(ValueError, match="lstm_cell: c must be C-contiguous"):
        fwd(g, np.zeros((3, 4), f32)[:, ::2], h, cn)
    with pytest.raises(ValueError, match="lstm_cell: h_out must be C-contiguous"):
        fwd(g, c, np.empty((2, 3), f32).T, cn)
    raw = np.zeros(4 * 24 + 1, np.uint8)
    misaligned = np.frombuffer(raw.data, dtype=f32, count=24, offset=1).reshape(3, 8)
    with pytest.raises(ValueError, match="lstm_cell: gates is not aligned"):
        fwd(misaligned, c, h, cn)
    readonly = np.empty((3, 2), f32)
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="lstm_cell: c_out is read-only"):
        fwd(g, c, h, readonly)
    with pytest.raises(ValueError, match="lstm_cell: h_out overlaps the input c"):
        fwd(g, c, c, cn)
    with pytest.raises(ValueError, match="lstm_cell: h_out overlaps c_out"):
        fwd(g, c, h, h)
    with pytest.raises(ValueError, match="lstm_cell: isa must be"):
        fwd(g, c, h, cn, isa="avx1024")

    bwd = C.lstm_cell_backward
    dg, dcp = np.empty((3, 8), f32), np.empty((3, 2), f32)
    with pytest.raises(ValueError, match=r"lstm_cell: dh has shape \(3, 3\), expected \(3, 2\)"):
        bwd(g, c, np.zeros((3, 3), f32), None, dg, dcp)
    with pytest.raises(ValueError, match="lstm_cell: dc has dtype float64, expected float32"):
        bwd(g, c, None, np.zeros((3, 2), f64), dg, dcp)
    with pytest.raises(ValueError, match=r"lstm_cell: d_gates_out has shape \(3, 2\), expected \(3, 8\)"):
        bwd(g, c, None, None, np.empty((3, 2), f32), dcp)
    with pytest.raises(ValueError, match=r"lstm_cell: dc_out has shape \(3, 8\), expected \(3, 2\)"):
        bwd(g, c, None, None, dg, np.empty((3, 8), f32))
    with pytest.raises(ValueError, match="lstm_cell: dh must be C-contiguous"):
        bwd(g, c, np.zeros((2, 3), f32).T, None, dg, dcp)
    with pytest.raises(ValueError, match="lstm_cell: d_gates_out overlaps the input gates"):
        bwd(g, c, None, None, g, dcp)


def test_python_op_errors():
    F = mt.nn.functional
    g, c = mt.zeros(3, 8), mt.zeros(3, 2)
    with pytest.raises(ValueError, match=r"lstm_cell: gates of shape \(3, 7\) and c of shape \(3, 2\) do not fit"):
        F.lstm_cell(mt.zeros(3, 7), c)
    with pytest.raises(ValueError, match=r"lstm_cell: gates of shape \(3, 8\) and c of shape \(3, 3\) do not fit"):
        F.lstm_cell(g, mt.zeros(3, 3))
    with pytest.raises(ValueError, match=r"lstm_cell: gates of shape \(8,\) and c of shape \(2,\) do not fit"):
        F.lstm_cell(mt.zeros(8), mt.zeros(2))
    with pytest.raises(ValueError, match="lstm_cell: gates \\(float32\\) and c \\(float64\\) must have the same"):
        F.lstm_cell(g, mt.zeros(3, 2, dtype=mt.float64))
    with pytest.raises(ValueError, match="lstm_cell: gates \\(int64\\) and c \\(int64\\)"):
        F.lstm_cell(mt.zeros(3, 8, dtype=mt.int64), mt.zeros(3, 2, dtype=mt.int64))


@pytest.mark.parametrize("backend", ["numpy", "native"])
@pytest.mark.parametrize("outputs", ["both", "h", "c"])
def test_fused_and_create_graph_backward_agree(backend, outputs):
    """The backward kernel (grad mode off) and the Tensor-op formula used under create_graph give the same
    gradients, with either output's gradient absent."""
    gates_np, c_np, dh_np, dc_np = inputs(5, 7, np.float64, seed=11)
    before = mt.get_backend()
    mt.set_backend(backend)
    try:
        grads = []
        for create_graph in (False, True):
            gates, c = mt.tensor(gates_np, requires_grad=True), mt.tensor(c_np, requires_grad=True)
            h, c_next = mt.nn.functional.lstm_cell(gates, c)
            roots = {"both": [h, c_next], "h": [h], "c": [c_next]}[outputs]
            seeds = {"both": [dh_np, dc_np], "h": [dh_np], "c": [dc_np]}[outputs]
            grads.append([g.detach().numpy() for g in mt.autograd.grad(
                roots, [gates, c], [mt.tensor(s) for s in seeds], create_graph=create_graph)])
    finally:
        mt.set_backend(before)
    for fused, composite in zip(*grads):
        np.testing.assert_allclose(fused, composite, rtol=1e-13, atol=1e-14)
