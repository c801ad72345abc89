// Fused scaled-dot-product attention (formulas in attention_body.h), over batch dims (N, H):
//
//   sdpa_forward(q (N, H, L, E), k (N, H, S, E), v (N, H, S, Ev), mask (N, H, L, S) or None, causal, scale,
//                out (N, H, L, Ev), lse (N, H, L))
//   sdpa_backward(q, k, v, mask, causal, scale, out, lse, dout (N, H, L, Ev), dq, dk, dv (shapes of q, k, v))
//
// q, k, v, mask, out (as a backward input) and dout are read through their strides: the head-split views of a
// projection MultiheadAttention makes ((L, N, 3E) -> (N, H, L, E), never copied), a padding mask broadcast over
// heads and queries with stride 0. The kernel copies each batch element's K and V once. The forward's out may be
// C-contiguous or the (1, 2, 0, 3) transpose of a C-contiguous (L, N, H, Ev) array (the heads side by side, as
// MultiheadAttention concatenates them, so that concat is free); lse, dq, dk, dv are C-contiguous. Shapes,
// dtypes and layouts are checked before any memory is touched; errors name the op and the shapes. Threads take
// whole batch elements, so results do not depend on the thread count. Subnormals are flushed to zero while the
// kernels run (FlushSubnormals, common.h).
#include <immintrin.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common.h"
#include "gemm.h"
#include "row_kernels.h"

namespace mt {

// One batch element of an operand: row i at p + i * s1, element d of it at row(i)[d * s2].
template <class T>
struct Rows {
    const T* p;
    index_t s1, s2;
    const T* row(index_t i) const { return p + i * s1; }
};

// A strided 4-D operand (N, H, rows, cols), batch element b = n * H + h; broadcast dims have stride 0.
template <class T>
struct View4 {
    const T* data = nullptr;
    index_t sn = 0, sh = 0, s1 = 0, s2 = 0, H = 1;
    Rows<T> batch(index_t b) const { return {data + (b / H) * sn + (b % H) * sh, s1, s2}; }
};

// Per-thread buffers for one batch element (attention_body.h), for a block of up to kMaxQ query rows: q
// transposed (E x kMaxQ) and row-major (kMaxQ x Ep), scores (S x kMaxQ), out transposed (Ev x kMaxQ; forward), do
// transposed (Ev x kMaxQ) and row-major (kMaxQ x Evp), dp / ds (S x kMaxQ), dq transposed (E x kMaxQ); dk (S x Ep)
// and dv (S x Evp) sums. k and v are read in place. Ep, Evp: E, Ev rounded up to 16, a whole number of registers
// on every ISA. kMaxQ = 32 is the largest query block (two AVX-512 registers of float).
constexpr index_t kMaxQ = 32;

template <class T>
struct AttnScratch {
    index_t Ep, Evp;
    std::vector<T> qt, qr, st, ot, dot, dor, dpt, dqt, dk, dv;
    static index_t pad(index_t n) { return (n + 15) / 16 * 16; }
    AttnScratch(index_t S, index_t E, index_t Ev, bool backward)
        : Ep(pad(E)), Evp(pad(Ev)), qt(E * kMaxQ), qr(backward ? kMaxQ * Ep : 0), st(S * kMaxQ),
          ot(backward ? 0 : Ev * kMaxQ), dot(backward ? Ev * kMaxQ : 0), dor(backward ? kMaxQ * Evp : 0),
          dpt(backward ? S * kMaxQ : 0), dqt(backward ? E * kMaxQ : 0), dk(backward ? S * Ep : 0),
          dv(backward ? S * Evp : 0) {}
};

namespace attn_base {
#define MT_KERNEL_ISA 0
#include "row_kernels_body.h"
#include "attention_body.h"
#undef MT_KERNEL_ISA
}  // namespace attn_base
#if MT_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace attn_avx2 {
#define MT_KERNEL_ISA 1
#include "row_kernels_body.h"
#include "attention_body.h"
#undef MT_KERNEL_ISA
}  // namespace attn_avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx2,fma")
namespace attn_avx512 {
#define MT_KERNEL_ISA 2
#include "row_kernels_body.h"
#include "attention_body.h"
#undef MT_KERNEL_ISA
}  // namespace attn_avx512
#pragma GCC pop_options
#endif

namespace {

std::string dims(const std::vector<index_t>& s) {
    std::string r = "(";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + (s.size() == 1 ? ",)" : ")");
}

template <class T>
View4<T> view4(const py::array& a, const std::vector<index_t>& shape, const char* op, const char* name) {
    View<T> v = view_of<T>(a, op, name, false);
    if (v.shape != shape) value_error(std::string(op) + ": " + name + " has shape " + shape_str(a) + ", expected " + dims(shape));
    View4<T> r;
    r.data = v.data, r.sn = v.strides[0], r.sh = v.strides[1], r.s1 = v.strides[2], r.s2 = v.strides[3];
    r.H = std::max<index_t>(shape[1], 1);
    return r;
}

struct Dims {
    index_t N, H, L, S, E, Ev;
    index_t B() const { return N * H; }
};

Dims check_qkv(const py::array& q, const py::array& k, const py::array& v, const char* op) {
    bool ok = q.ndim() == 4 && k.ndim() == 4 && v.ndim() == 4;
    for (int d = 0; ok && d < 2; ++d) ok = q.shape(d) == k.shape(d) && k.shape(d) == v.shape(d);
    if (!ok || q.shape(3) != k.shape(3) || k.shape(2) != v.shape(2))
        value_error(std::string(op) + ": shapes q " + shape_str(q) + ", k " + shape_str(k) + " and v " + shape_str(v) +
                    " do not fit (N, H, L, E), (N, H, S, E), (N, H, S, Ev)");
    return {q.shape(0), q.shape(1), q.shape(2), k.shape(2), q.shape(3), v.shape(3)};
}

template <class T>
struct Kernels {
    void (*forward)(index_t, index_t, index_t, index_t, T, const Rows<T>&, const Rows<T>&, const Rows<T>&,
                    const Rows<T>*, bool, T*, index_t, T*, AttnScratch<T>&);
    void (*backward)(index_t, index_t, index_t, index_t, T, const Rows<T>&, const Rows<T>&, const Rows<T>&,
                     const Rows<T>*, bool, const Rows<T>&, const T*, const Rows<T>&, T*, T*, T*, AttnScratch<T>&);
};

template <class T>
Kernels<T> kernels(Isa isa) {
#if MT_X86
    if (isa == Isa::avx512) return {attn_avx512::sdpa_forward_batch<T>, attn_avx512::sdpa_backward_batch<T>};
    if (isa == Isa::avx2) return {attn_avx2::sdpa_forward_batch<T>, attn_avx2::sdpa_backward_batch<T>};
#endif
    return {attn_base::sdpa_forward_batch<T>, attn_base::sdpa_backward_batch<T>};
}

bool parallel(const Dims& d) {
    return d.B() > 1 && max_threads() > 1 && d.B() * d.L * d.S * (d.E + d.Ev) >= kParallelGrain;
}

// q, k, v and the optional mask of an entry point, checked.
template <class T>
struct Operands {
    Dims d;
    View4<T> q, k, v, mask;
    bool has_mask;
    Operands(const py::array& q_a, const py::array& k_a, const py::array& v_a, const py::object& mask_o, const char* op)
        : d(check_qkv(q_a, k_a, v_a, op)), has_mask(!mask_o.is_none()) {
        q = view4<T>(q_a, {d.N, d.H, d.L, d.E}, op, "query");
        k = view4<T>(k_a, {d.N, d.H, d.S, d.E}, op, "key");
        v = view4<T>(v_a, {d.N, d.H, d.S, d.Ev}, op, "value");
        if (has_mask) mask = view4<T>(py::cast<py::array>(mask_o), {d.N, d.H, d.L, d.S}, op, "attn_mask");
    }
};

template <class T>
void forward(const py::array& q_a, const py::array& k_a, const py::array& v_a, const py::object& mask_o, bool causal,
             double scale, const py::array& out_a, const py::array& lse_a, Isa isa) {
    const char* op = "scaled_dot_product_attention";
    const Operands<T> x(q_a, k_a, v_a, mask_o, op);
    const Dims d = x.d;
    View<T> ov = view_of<T>(out_a, op, "out", true);
    if (ov.shape != std::vector<index_t>{d.N, d.H, d.L, d.Ev})
        value_error(std::string(op) + ": out has shape " + shape_str(out_a) + ", expected " + dims({d.N, d.H, d.L, d.Ev}));
    // out: any strides with unit stride along Ev (C-contiguous (N, H, L, Ev), or a transpose of (L, N, H, Ev) or
    // (N, L, H, Ev) that puts the heads side by side); each (n, h, l) row is written through the strides
    const auto& st = ov.strides;
    if (d.B() * d.L * d.Ev > 0 && d.Ev > 1 && st[3] != 1)
        value_error(std::string(op) + ": out must have unit stride along its last dim (Ev), got strides " +
                    dims({st[0], st[1], st[2], st[3]}) + " (in elements)");
    T* lse = output_buffer<T>(lse_a, {d.N, d.H, d.L}, op, "lse");
    const Kernels<T> kn = kernels<T>(isa);
    const T sc = static_cast<T>(scale);
    T* out = ov.data;
    if (d.B() * d.L == 0) return;
    const index_t sn = st[0], sh = st[1], os1 = st[2];
    py::gil_scoped_release release;
#pragma omp parallel if (parallel(d))
    {
        const FlushSubnormals ftz;
        AttnScratch<T> w(d.S, d.E, d.Ev, false);
#pragma omp for schedule(static)
        for (index_t b = 0; b < d.B(); ++b) {
            const Rows<T> m = x.has_mask ? x.mask.batch(b) : Rows<T>{};
            kn.forward(d.L, d.S, d.E, d.Ev, sc, x.q.batch(b), x.k.batch(b), x.v.batch(b), x.has_mask ? &m : nullptr,
                       causal, out + (b / d.H) * sn + (b % d.H) * sh, os1, lse + b * d.L, w);
        }
    }
}

template <class T>
void backward(const py::array& q_a, const py::array& k_a, const py::array& v_a, const py::object& mask_o, bool causal,
              double scale, const py::array& out_a, const py::array& lse_a, const py::array& dout_a,
              const py::array& dq_a, const py::array& dk_a, const py::array& dv_a, Isa isa) {
    const char* op = "scaled_dot_product_attention_backward";
    const Operands<T> x(q_a, k_a, v_a, mask_o, op);
    const Dims d = x.d;
    const View4<T> out = view4<T>(out_a, {d.N, d.H, d.L, d.Ev}, op, "out");
    const View4<T> dout = view4<T>(dout_a, {d.N, d.H, d.L, d.Ev}, op, "grad");
    auto lse_c = contiguous_input<T>(lse_a, op, "lse");
    if (lse_c.ndim() != 3 || lse_c.shape(0) != d.N || lse_c.shape(1) != d.H || lse_c.shape(2) != d.L)
        value_error(std::string(op) + ": lse has shape " + shape_str(lse_c) + ", expected " + dims({d.N, d.H, d.L}));
    T* dq = output_buffer<T>(dq_a, {d.N, d.H, d.L, d.E}, op, "dq");
    T* dk = output_buffer<T>(dk_a, {d.N, d.H, d.S, d.E}, op, "dk");
    T* dv = output_buffer<T>(dv_a, {d.N, d.H, d.S, d.Ev}, op, "dv");
    const T* lse = lse_c.data();
    const Kernels<T> kn = kernels<T>(isa);
    const T sc = static_cast<T>(scale);
    if (d.B() == 0) return;
    py::gil_scoped_release release;
#pragma omp parallel if (parallel(d))
    {
        const FlushSubnormals ftz;
        AttnScratch<T> w(d.S, d.E, d.Ev, true);
#pragma omp for schedule(static)
        for (index_t b = 0; b < d.B(); ++b) {
            const Rows<T> m = x.has_mask ? x.mask.batch(b) : Rows<T>{};
            kn.backward(d.L, d.S, d.E, d.Ev, sc, x.q.batch(b), x.k.batch(b), x.v.batch(b), x.has_mask ? &m : nullptr,
                        causal, out.batch(b), lse + b * d.L, dout.batch(b), dq + b * d.L * d.E, dk + b * d.S * d.E,
                        dv + b * d.S * d.Ev, w);
        }
    }
}

}  // namespace

void register_attention(py::module_& m) {
    m.def(
        "sdpa_forward",
        [](const py::array& q, const py::array& k, const py::array& v, const py::object& mask, bool causal,
           double scale, const py::array& out, const py::array& lse, const py::object& isa) {
            const Isa chosen = parse_isa(isa, "scaled_dot_product_attention");
            if (float_kind(q, "scaled_dot_product_attention", "query") == 0)
                forward<float>(q, k, v, mask, causal, scale, out, lse, chosen);
            else
                forward<double>(q, k, v, mask, causal, scale, out, lse, chosen);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"), py::arg("causal"), py::arg("scale"), py::arg("out"),
        py::arg("lse"), py::arg("isa") = py::none(),
        "out = softmax(scale q k^T + mask) v per (N, H) batch element, lse = the rows' log-sum-exp (for the backward).");
    m.def(
        "sdpa_backward",
        [](const py::array& q, const py::array& k, const py::array& v, const py::object& mask, bool causal,
           double scale, const py::array& out, const py::array& lse, const py::array& dout, const py::array& dq,
           const py::array& dk, const py::array& dv, const py::object& isa) {
            const Isa chosen = parse_isa(isa, "scaled_dot_product_attention_backward");
            if (float_kind(q, "scaled_dot_product_attention_backward", "query") == 0)
                backward<float>(q, k, v, mask, causal, scale, out, lse, dout, dq, dk, dv, chosen);
            else
                backward<double>(q, k, v, mask, causal, scale, out, lse, dout, dq, dk, dv, chosen);
        },
        py::arg("q"), py::arg("k"), py::arg("v"), py::arg("mask"), py::arg("causal"), py::arg("scale"), py::arg("out"),
        py::arg("lse"), py::arg("grad"), py::arg("dq"), py::arg("dk"), py::arg("dv"), py::arg("isa") = py::none(),
        "dq, dk, dv of scaled_dot_product_attention from the forward's out and lse and the gradient of out.");
}

}  // namespace mt
