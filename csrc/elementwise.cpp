// Elementwise kernels whose numpy versions are slow: erf, GELU forward/backward (erf or tanh form), and the add of
// two big arrays of one shape (numpy's runs on one thread; residual streams and gradient sums are memory-bound).
//
//   gelu(x)  = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2;   gelu'(x) = Phi(x) + x * exp(-x^2 / 2) / sqrt(2 pi)
//   tanh form: gelu(x) = x/2 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
//   Both run on vectors, per ISA (activations_body.h: the float32 Phi and its accuracy); erf keeps std::erf.
// Elements are independent, so threads split ranges and results do not depend on the thread count.
#include <cmath>
#include <cstring>
#include <limits>

#include "common.h"
#include "gemm.h"
#include "row_kernels.h"

namespace mt {

// GELU forward and backward on vectors (activations_body.h), compiled once per ISA.
namespace act_base {
#define MT_KERNEL_ISA 0
#include "row_kernels_body.h"
#include "activations_body.h"
#undef MT_KERNEL_ISA
}  // namespace act_base
#if MT_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace act_avx2 {
#define MT_KERNEL_ISA 1
#include "row_kernels_body.h"
#include "activations_body.h"
#undef MT_KERNEL_ISA
}  // namespace act_avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx2,fma")
namespace act_avx512 {
#define MT_KERNEL_ISA 2
#include "row_kernels_body.h"
#include "activations_body.h"
#undef MT_KERNEL_ISA
}  // namespace act_avx512
#pragma GCC pop_options
#endif

template <class T>
GeluFn<T> gelu_kernel(Isa isa) {
#if MT_X86
    if (isa == Isa::avx512) return act_avx512::gelu_range<T>;
    if (isa == Isa::avx2) return act_avx2::gelu_range<T>;
#endif
    return act_base::gelu_range<T>;
}
template GeluFn<float> gelu_kernel<float>(Isa);
template GeluFn<double> gelu_kernel<double>(Isa);

template <class T, class F>
static void elementwise(const py::array& x_in, const py::array& out_arr, const char* op, F fn) {
    auto x = contiguous_input<T>(x_in, op, "x");
    T* out = output_buffer<T>(out_arr, std::vector<index_t>(x.shape(), x.shape() + x.ndim()), op, "out");
    const T* xp = x.data();
    const index_t n = x.size();
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (n >= kParallelGrain && max_threads() > 1)
    for (index_t i = 0; i < n; ++i) out[i] = fn(xp[i], i);
}

// gelu (g_in None) or its backward g * gelu'(x), in blocks of a fixed size split between threads.
template <class T>
static void gelu_entry(const py::array& x_in, const py::object& g_in, const py::array& out_arr, bool tanh_form, Isa isa) {
    const char* op = g_in.is_none() ? "gelu" : "gelu_backward";
    auto x = contiguous_input<T>(x_in, op, "x");
    const std::vector<index_t> shape(x.shape(), x.shape() + x.ndim());
    py::array_t<T, py::array::c_style> g;
    if (!g_in.is_none()) {
        g = contiguous_input<T>(py::cast<py::array>(g_in), op, "grad");
        if (std::vector<index_t>(g.shape(), g.shape() + g.ndim()) != shape)
            value_error("gelu_backward: grad " + shape_str(g) + " and x " + shape_str(x) + " must have the same shape");
    }
    T* out = output_buffer<T>(out_arr, shape, op, "out");
    const T* xp = x.data();
    const T* gp = g_in.is_none() ? nullptr : g.data();
    const index_t n = x.size();
    const GeluFn<T> fn = gelu_kernel<T>(isa);
    constexpr index_t block = 4096;
    py::gil_scoped_release release;
#pragma omp parallel if (n >= kParallelGrain && max_threads() > 1)
    {
        const FlushSubnormals ftz;
#pragma omp for schedule(static)
        for (index_t b = 0; b < (n + block - 1) / block; ++b)
            fn(b * block, std::min(n, (b + 1) * block), xp, gp, out, tanh_form);
    }
}

// out = a + b for two arrays of one shape; a thread per range (memory-bound: the second core's bandwidth)
template <class T>
static void add_entry(const py::array& a_in, const py::array& b_in, const py::array& out_arr) {
    auto a = contiguous_input<T>(a_in, "add", "a");
    auto b = contiguous_input<T>(b_in, "add", "b");
    const std::vector<index_t> shape(a.shape(), a.shape() + a.ndim());
    if (std::vector<index_t>(b.shape(), b.shape() + b.ndim()) != shape)
        value_error("add: a " + shape_str(a) + " and b " + shape_str(b) + " must have the same shape");
    T* out = output_buffer<T>(out_arr, shape, "add", "out");
    const T* ap = a.data();
    const T* bp = b.data();
    const index_t n = a.size();
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (n >= 4 * kParallelGrain && max_threads() > 1)
    for (index_t i = 0; i < n; ++i) out[i] = ap[i] + bp[i];
}

// dst = src for two arrays of one shape and dtype, any strides (a transposed gradient made contiguous, slices
// written into a bigger gradient): rows along the last dim, split between threads. view_of checks both; every
// offset stays inside the arrays because it is computed from their own shapes and strides.
template <class T>
static void copy_entry(const py::array& src_in, const py::array& dst_in) {
    const View<T> s = view_of<T>(src_in, "copy", "src", false);
    const View<T> d = view_of<T>(dst_in, "copy", "dst", true);
    if (s.shape != d.shape)
        value_error("copy: src " + shape_str(src_in) + " and dst " + shape_str(dst_in) + " must have the same shape");
    const index_t size = d.size();
    if (size == 0) return;
    const index_t nd = d.ndim();
    if (nd == 0) {
        *d.data = *s.data;
        return;
    }
    const index_t inner = d.shape[nd - 1], rows = size / inner;
    const index_t s_inner = s.strides[nd - 1], d_inner = d.strides[nd - 1];
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (size >= 4 * kParallelGrain && max_threads() > 1)
    for (index_t r = 0; r < rows; ++r) {
        index_t so = 0, dof = 0, rest = r;
        for (index_t k = nd - 2; k >= 0; --k) {
            const index_t i = rest % d.shape[k];
            rest /= d.shape[k];
            so += i * s.strides[k];
            dof += i * d.strides[k];
        }
        const T* sp = s.data + so;
        T* dp = d.data + dof;
        if (s_inner == 1 && d_inner == 1)
            std::memcpy(dp, sp, inner * sizeof(T));
        else
            for (index_t j = 0; j < inner; ++j) dp[j * d_inner] = sp[j * s_inner];
    }
}

void register_elementwise(py::module_& m) {
    m.def("copy", [](const py::array& src, const py::array& dst) {
        if (float_kind(dst, "copy", "dst") == 0) copy_entry<float>(src, dst);
        else copy_entry<double>(src, dst);
    }, py::arg("src"), py::arg("dst"), "dst[...] = src for arrays of one shape and dtype (any strides), on all threads.");
    m.def("add", [](const py::array& a, const py::array& b, const py::array& out) {
        if (float_kind(a, "add", "a") == 0) add_entry<float>(a, b, out);
        else add_entry<double>(a, b, out);
    }, py::arg("a"), py::arg("b"), py::arg("out"), "out = a + b for two arrays of one shape, on all threads.");
    m.def("erf", [](const py::array& x, const py::array& out) {
        if (float_kind(x, "erf", "x") == 0) elementwise<float>(x, out, "erf", [](float v, index_t) { return std::erf(v); });
        else elementwise<double>(x, out, "erf", [](double v, index_t) { return std::erf(v); });
    }, py::arg("x"), py::arg("out"));
    m.def("gelu", [](const py::array& x, const py::array& out, bool tanh_form, const py::object& isa) {
        const Isa chosen = parse_isa(isa, "gelu");
        if (float_kind(x, "gelu", "x") == 0) gelu_entry<float>(x, py::none(), out, tanh_form, chosen);
        else gelu_entry<double>(x, py::none(), out, tanh_form, chosen);
    }, py::arg("x"), py::arg("out"), py::arg("tanh") = false, py::arg("isa") = py::none(),
       "out = gelu(x) (erf form, or the tanh approximation when tanh=True); isa picks the compiled body (tests).");
    m.def("gelu_backward", [](const py::array& x, const py::array& g, const py::array& out, bool tanh_form,
                              const py::object& isa) {
        const Isa chosen = parse_isa(isa, "gelu_backward");
        if (float_kind(x, "gelu_backward", "x") == 0) gelu_entry<float>(x, g, out, tanh_form, chosen);
        else gelu_entry<double>(x, g, out, tanh_form, chosen);
    }, py::arg("x"), py::arg("grad"), py::arg("out"), py::arg("tanh") = false, py::arg("isa") = py::none(),
       "out = grad * gelu'(x); isa picks the compiled body (tests).");
}

}  // namespace mt
