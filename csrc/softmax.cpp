// softmax / log_softmax over the last dim, forward and backward, with an optional additive mask.
//
//   softmax:      y = exp(x + mask - m) / s,   m = max(x + mask), s = sum(exp(x + mask - m))
//   log_softmax:  y = (x + mask - m) - log(s)   (m + log(s) first would round log(s) away when |m| is large)
//   backward:     softmax  dx = y * (g - sum(g * y));   log_softmax  dx = g - exp(y) * sum(g)
//
// Subtracting the row max keeps exp from overflowing. A row whose every entry is masked (-inf) has no
// finite max; it comes out NaN, as in PyTorch. Rows are independent: threads split them, so results do not
// depend on the thread count. x, y, g, dx are C-contiguous (the Python side copies once if needed); the mask
// is read through its strides, so a (S, S) causal mask or a (B, 1, 1, S) padding mask is never expanded.
#include <cmath>
#include <cstring>
#include <limits>

#include "common.h"
#include "row_kernels.h"

namespace mt {

// Run fn(r0, r1) over row blocks, in parallel when there is enough work.
template <class F>
static void for_row_blocks(index_t rows, index_t n, F fn) {
    const index_t block = 16;
    const index_t blocks = (rows + block - 1) / block;
#pragma omp parallel if (rows * n >= kParallelGrain && max_threads() > 1)
    {
        const FlushSubnormals ftz;
#pragma omp for schedule(static)
        for (index_t b = 0; b < blocks; ++b) fn(b * block, std::min(rows, (b + 1) * block));
    }
}

static std::vector<index_t> shape_of(const py::array& a) {
    return std::vector<index_t>(a.shape(), a.shape() + a.ndim());
}

template <class T>
static void forward(const py::array& x_in, const py::array& y_out, const py::object& mask_in, bool log, Isa isa) {
    const char* op = log ? "log_softmax" : "softmax";
    auto x = contiguous_input<T>(x_in, op, "x");
    if (x.ndim() < 1) value_error(std::string(op) + ": x must have at least 1 dim");
    T* y = output_buffer<T>(y_out, shape_of(x), op, "out");
    const index_t n = x.shape(x.ndim() - 1);
    const index_t rows = n ? x.size() / n : 0;
    RowIndexer mi;
    const T* mask = nullptr;
    py::array mask_arr;
    if (!mask_in.is_none()) {
        mask_arr = py::cast<py::array>(mask_in);
        View<T> mv = view_of<T>(mask_arr, op, "mask", false);
        if (mv.shape != shape_of(x))
            value_error(std::string(op) + ": mask has shape " + shape_str(mask_arr) + ", expected the input's shape " +
                        shape_str(x) + " (broadcast it first)");
        if (mv.ndim() > 17) value_error(std::string(op) + ": at most 17 dims are supported");
        mi.nd = mv.ndim() - 1;
        for (index_t d = 0; d < mi.nd; ++d) {
            mi.shape[d] = mv.shape[d];
            mi.stride[d] = mv.strides[d];
        }
        mi.col_stride = mv.strides[mv.ndim() - 1];
        mask = mv.data;
    }
    const T* xp = x.data();
    auto fn = row_kernels<T>(isa).softmax;
    py::gil_scoped_release release;
    for_row_blocks(rows, n, [&](index_t r0, index_t r1) { fn(r0, r1, n, xp, y, mask, mi, log); });
}

template <class T>
static void backward(const py::array& y_in, const py::array& g_in, const py::array& dx_out, bool log, Isa isa) {
    const char* op = log ? "log_softmax_backward" : "softmax_backward";
    auto y = contiguous_input<T>(y_in, op, "y");
    auto g = contiguous_input<T>(g_in, op, "grad");
    if (shape_of(y) != shape_of(g))
        value_error(std::string(op) + ": y " + shape_str(y) + " and grad " + shape_str(g) + " must have the same shape");
    if (y.ndim() < 1) value_error(std::string(op) + ": y must have at least 1 dim");
    T* dx = output_buffer<T>(dx_out, shape_of(y), op, "out");
    const index_t n = y.shape(y.ndim() - 1);
    const index_t rows = n ? y.size() / n : 0;
    const T *yp = y.data(), *gp = g.data();
    auto fn = row_kernels<T>(isa).softmax_back;
    py::gil_scoped_release release;
    for_row_blocks(rows, n, [&](index_t r0, index_t r1) { fn(r0, r1, n, yp, gp, dx, log); });
}

void register_softmax(py::module_& m) {
    m.def(
        "softmax_forward",
        [](const py::array& x, const py::array& out, const py::object& mask, bool log) {
            if (float_kind(x, log ? "log_softmax" : "softmax", "x") == 0) forward<float>(x, out, mask, log, detected_isa());
            else forward<double>(x, out, mask, log, detected_isa());
        },
        py::arg("x"), py::arg("out"), py::arg("mask") = py::none(), py::arg("log") = false,
        "out = softmax(x + mask) (or log_softmax with log=True) over the last dim; mask has x's shape (any strides).");
    m.def(
        "softmax_backward",
        [](const py::array& y, const py::array& g, const py::array& out, bool log) {
            if (float_kind(y, "softmax_backward", "y") == 0) backward<float>(y, g, out, log, detected_isa());
            else backward<double>(y, g, out, log, detected_isa());
        },
        py::arg("y"), py::arg("grad"), py::arg("out"), py::arg("log") = false,
        "out = the gradient w.r.t. x of softmax (or log_softmax), given its output y and the gradient of y.");
}

}  // namespace mt
