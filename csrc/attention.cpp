// Fused scaled-dot-product attention (formulas in attention_body.h):
//
//   sdpa_forward(q (B, L, E), k (B, S, E), v (B, S, Ev), mask (B, L, S) or None, causal, scale, out (B, L, Ev), lse (B, L))
//   sdpa_backward(q, k, v, mask, causal, scale, out, lse, dout (B, L, Ev), dq (B, L, E), dk (B, S, E), dv (B, S, Ev))
//
// q, k, v, mask, out (as a backward input) and dout are read through their strides (a head-split view of a
// projection, a mask broadcast with stride 0, ...); the kernel copies each batch element's K and V once. The
// forward's out may be C-contiguous or the (1, 0, 2) transpose of a C-contiguous (L, B, Ev) array (the layout
// MultiheadAttention concatenates heads in, so that concat is free); lse, dq, dk, dv are C-contiguous. Shapes,
// dtypes and layouts are checked before any memory is touched; errors name the op and the shapes. Threads take
// whole batch elements, so results do not depend on the thread count.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

#include "common.h"
#include "gemm.h"
#include "row_kernels.h"

namespace mt {

// A strided 3-D operand: element (b, i, j) at data[b * s0 + i * s1 + j * s2].
template <class T>
struct View3 {
    const T* data;
    index_t s0, s1, s2;
    const T* at(index_t b, index_t i) const { return data + b * s0 + i * s1; }
};

constexpr int kAttnRows = 4;  // query rows processed together (register blocking, attention_body.h)

// Per-thread buffers for one batch element: kt (E x Sp, K transposed), kc (S x Ep) and vc (S x Evp) copies,
// vt (Ev x Sp, V transposed), dk (S x Ep) and dv (S x Evp) sums (backward); for a block of kAttnRows query rows:
// scores (Sp each), scale * q (Ep), o (Evp), do (Evp), dp / ds (Sp), dq (Ep). Rows are padded with zeros to a
// multiple of 16 (the row kernels' lanes; a whole number of registers on every ISA).
template <class T>
struct AttnScratch {
    index_t Sp, Ep, Evp;
    std::vector<T> kt, kc, vc, vt, dk, dv, s, q, o, g, dp, dq;
    static index_t pad(index_t n) { return (n + 15) / 16 * 16; }
    AttnScratch(index_t S, index_t E, index_t Ev, bool backward)
        : Sp(pad(S)), Ep(pad(E)), Evp(pad(Ev)), kt(E * Sp), kc(S * Ep), vc(S * Evp), vt(backward ? Ev * Sp : 0),
          dk(backward ? S * Ep : 0), dv(backward ? S * Evp : 0), s(kAttnRows * Sp), q(kAttnRows * Ep),
          o(kAttnRows * Evp), g(backward ? kAttnRows * Evp : 0), dp(backward ? kAttnRows * Sp : 0),
          dq(backward ? kAttnRows * Ep : 0) {}
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

template <class T>
using V3 = View3<T>;

std::string dims(const std::vector<index_t>& s) {
    std::string r = "(";
    for (std::size_t i = 0; i < s.size(); ++i) r += (i ? ", " : "") + std::to_string(s[i]);
    return r + (s.size() == 1 ? ",)" : ")");
}

template <class T>
V3<T> view3(const py::array& a, const std::vector<index_t>& shape, const char* op, const char* name) {
    View<T> v = view_of<T>(a, op, name, false);
    if (v.shape != shape) value_error(std::string(op) + ": " + name + " has shape " + shape_str(a) + ", expected " + dims(shape));
    return {v.data, v.strides[0], v.strides[1], v.strides[2]};
}

struct Dims {
    index_t B, L, S, E, Ev;
};

template <class T>
Dims check_qkv(const py::array& q, const py::array& k, const py::array& v, const char* op) {
    if (q.ndim() != 3 || k.ndim() != 3 || v.ndim() != 3 || q.shape(0) != k.shape(0) || k.shape(0) != v.shape(0) ||
        q.shape(2) != k.shape(2) || k.shape(1) != v.shape(1))
        value_error(std::string(op) + ": shapes q " + shape_str(q) + ", k " + shape_str(k) + " and v " + shape_str(v) +
                    " do not fit (B, L, E), (B, S, E), (B, S, Ev)");
    return {q.shape(0), q.shape(1), k.shape(1), q.shape(2), v.shape(2)};
}

template <class T>
struct Kernels {
    void (*forward)(index_t, index_t, index_t, index_t, index_t, T, const V3<T>&, const V3<T>&, const V3<T>&,
                    const V3<T>*, bool, T*, index_t, index_t, T*, AttnScratch<T>&);
    void (*backward)(index_t, index_t, index_t, index_t, index_t, T, const V3<T>&, const V3<T>&, const V3<T>&,
                     const V3<T>*, bool, const V3<T>&, const T*, const V3<T>&, T*, T*, T*, AttnScratch<T>&);
};

template <class T>
Kernels<T> kernels(Isa isa) {
#if MT_X86
    if (isa == Isa::avx512) return {attn_avx512::sdpa_forward_batch<T>, attn_avx512::sdpa_backward_batch<T>};
    if (isa == Isa::avx2) return {attn_avx2::sdpa_forward_batch<T>, attn_avx2::sdpa_backward_batch<T>};
#endif
    return {attn_base::sdpa_forward_batch<T>, attn_base::sdpa_backward_batch<T>};
}

bool parallel(const Dims& d) { return d.B > 1 && max_threads() > 1 && d.B * d.L * d.S * (d.E + d.Ev) >= kParallelGrain; }

template <class T>
void forward(const py::array& q_a, const py::array& k_a, const py::array& v_a, const py::object& mask_o, bool causal,
             double scale, const py::array& out_a, const py::array& lse_a, Isa isa) {
    const char* op = "scaled_dot_product_attention";
    const Dims d = check_qkv<T>(q_a, k_a, v_a, op);
    const V3<T> q = view3<T>(q_a, {d.B, d.L, d.E}, op, "query"), k = view3<T>(k_a, {d.B, d.S, d.E}, op, "key");
    const V3<T> v = view3<T>(v_a, {d.B, d.S, d.Ev}, op, "value");
    V3<T> mask{};
    const bool has_mask = !mask_o.is_none();
    if (has_mask) mask = view3<T>(py::cast<py::array>(mask_o), {d.B, d.L, d.S}, op, "attn_mask");
    View<T> ov = view_of<T>(out_a, op, "out", true);
    if (ov.shape != std::vector<index_t>{d.B, d.L, d.Ev})
        value_error(std::string(op) + ": out has shape " + shape_str(out_a) + ", expected " + dims({d.B, d.L, d.Ev}));
    const bool row_major = ov.strides[0] == d.L * d.Ev && ov.strides[1] == d.Ev;
    const bool seq_major = ov.strides[0] == d.Ev && ov.strides[1] == d.B * d.Ev;
    if (d.B * d.L * d.Ev > 0 && (ov.strides[2] != 1 || !(row_major || seq_major)))
        value_error(std::string(op) + ": out must be C-contiguous (B, L, Ev) or the (1, 0, 2) transpose of a "
                    "C-contiguous (L, B, Ev) array");
    T* lse = output_buffer<T>(lse_a, {d.B, d.L}, op, "lse");
    const Kernels<T> kn = kernels<T>(isa);
    const T sc = static_cast<T>(scale);
    const index_t os0 = ov.strides[0], os1 = ov.strides[1];
    T* out = ov.data;
    if (d.B * d.L == 0) return;
    py::gil_scoped_release release;
#pragma omp parallel if (parallel(d))
    {
        AttnScratch<T> w(d.S, d.E, d.Ev, false);
#pragma omp for schedule(static)
        for (index_t b = 0; b < d.B; ++b)
            kn.forward(b, d.L, d.S, d.E, d.Ev, sc, q, k, v, has_mask ? &mask : nullptr, causal, out, os0, os1, lse, w);
    }
}

template <class T>
void backward(const py::array& q_a, const py::array& k_a, const py::array& v_a, const py::object& mask_o, bool causal,
              double scale, const py::array& out_a, const py::array& lse_a, const py::array& dout_a,
              const py::array& dq_a, const py::array& dk_a, const py::array& dv_a, Isa isa) {
    const char* op = "scaled_dot_product_attention_backward";
    const Dims d = check_qkv<T>(q_a, k_a, v_a, op);
    const V3<T> q = view3<T>(q_a, {d.B, d.L, d.E}, op, "query"), k = view3<T>(k_a, {d.B, d.S, d.E}, op, "key");
    const V3<T> v = view3<T>(v_a, {d.B, d.S, d.Ev}, op, "value");
    V3<T> mask{};
    const bool has_mask = !mask_o.is_none();
    if (has_mask) mask = view3<T>(py::cast<py::array>(mask_o), {d.B, d.L, d.S}, op, "attn_mask");
    const V3<T> out = view3<T>(out_a, {d.B, d.L, d.Ev}, op, "out");
    const V3<T> dout = view3<T>(dout_a, {d.B, d.L, d.Ev}, op, "grad");
    auto lse_c = contiguous_input<T>(lse_a, op, "lse");
    if (lse_c.ndim() != 2 || lse_c.shape(0) != d.B || lse_c.shape(1) != d.L)
        value_error(std::string(op) + ": lse has shape " + shape_str(lse_c) + ", expected " + dims({d.B, d.L}));
    T* dq = output_buffer<T>(dq_a, {d.B, d.L, d.E}, op, "dq");
    T* dk = output_buffer<T>(dk_a, {d.B, d.S, d.E}, op, "dk");
    T* dv = output_buffer<T>(dv_a, {d.B, d.S, d.Ev}, op, "dv");
    const T* lse = lse_c.data();
    const Kernels<T> kn = kernels<T>(isa);
    const T sc = static_cast<T>(scale);
    if (d.B == 0) return;
    py::gil_scoped_release release;
#pragma omp parallel if (parallel(d))
    {
        AttnScratch<T> w(d.S, d.E, d.Ev, true);
#pragma omp for schedule(static)
        for (index_t b = 0; b < d.B; ++b)
            kn.backward(b, d.L, d.S, d.E, d.Ev, sc, q, k, v, has_mask ? &mask : nullptr, causal, out, lse, dout, dq, dk,
                        dv, w);
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
        "out = softmax(scale q k^T + mask) v per batch element, lse = the rows' log-sum-exp (for the backward).");
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
