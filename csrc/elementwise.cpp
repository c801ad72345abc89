// Elementwise kernels whose numpy versions are slow: erf, and GELU forward/backward (erf or tanh form).
//
//   gelu(x)  = x * Phi(x),  Phi(x) = (1 + erf(x / sqrt 2)) / 2;   gelu'(x) = Phi(x) + x * exp(-x^2 / 2) / sqrt(2 pi)
//   tanh form: gelu(x) = x/2 (1 + tanh(u)),  u = sqrt(2/pi) (x + 0.044715 x^3)
// Elements are independent, so threads split ranges and results do not depend on the thread count.
#include <cmath>

#include "common.h"

namespace mt {

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

template <class T>
static T gelu_value(T x, bool tanh_form) {
    if (tanh_form) {
        const T k = T(0.7978845608028654), u = k * (x + T(0.044715) * x * x * x);
        return T(0.5) * x * (T(1) + std::tanh(u));
    }
    return T(0.5) * x * (T(1) + std::erf(x * T(0.7071067811865476)));
}

template <class T>
static T gelu_grad(T x, bool tanh_form) {
    if (tanh_form) {
        const T k = T(0.7978845608028654), c = T(0.044715);
        const T t = std::tanh(k * (x + c * x * x * x));
        return T(0.5) * (T(1) + t) + T(0.5) * x * (T(1) - t * t) * k * (T(1) + T(3) * c * x * x);
    }
    const T cdf = T(0.5) * (T(1) + std::erf(x * T(0.7071067811865476)));
    return cdf + x * std::exp(T(-0.5) * x * x) * T(0.3989422804014327);
}

template <class T>
static void gelu_backward(const py::array& x_in, const py::array& g_in, const py::array& out, bool tanh_form) {
    auto g = contiguous_input<T>(g_in, "gelu_backward", "grad");
    if (g.ndim() != x_in.ndim() || !std::equal(g.shape(), g.shape() + g.ndim(), x_in.shape()))
        value_error("gelu_backward: grad " + shape_str(g) + " and x " + shape_str(x_in) + " must have the same shape");
    const T* gp = g.data();
    elementwise<T>(x_in, out, "gelu_backward", [gp, tanh_form](T x, index_t i) { return gp[i] * gelu_grad(x, tanh_form); });
}

void register_elementwise(py::module_& m) {
    m.def("erf", [](const py::array& x, const py::array& out) {
        if (float_kind(x, "erf", "x") == 0) elementwise<float>(x, out, "erf", [](float v, index_t) { return std::erf(v); });
        else elementwise<double>(x, out, "erf", [](double v, index_t) { return std::erf(v); });
    }, py::arg("x"), py::arg("out"));
    m.def("gelu", [](const py::array& x, const py::array& out, bool tanh_form) {
        if (float_kind(x, "gelu", "x") == 0)
            elementwise<float>(x, out, "gelu", [tanh_form](float v, index_t) { return gelu_value(v, tanh_form); });
        else
            elementwise<double>(x, out, "gelu", [tanh_form](double v, index_t) { return gelu_value(v, tanh_form); });
    }, py::arg("x"), py::arg("out"), py::arg("tanh") = false);
    m.def("gelu_backward", [](const py::array& x, const py::array& g, const py::array& out, bool tanh_form) {
        if (float_kind(x, "gelu_backward", "x") == 0) gelu_backward<float>(x, g, out, tanh_form);
        else gelu_backward<double>(x, g, out, tanh_form);
    }, py::arg("x"), py::arg("grad"), py::arg("out"), py::arg("tanh") = false);
}

}  // namespace mt
