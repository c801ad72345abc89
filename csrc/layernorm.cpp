// layer_norm over the last dim, forward and backward.
//
//   forward:   mean = sum(x)/N,  rstd = 1/sqrt(sum((x - mean)^2)/N + eps),  y = (x - mean) * rstd * w + b
//              (the sums are taken of x - x[0]: a row of 3e38s does not overflow, a large offset costs no precision)
//   backward:  xhat = (x - mean) * rstd,  gh = g * w
//              dx = rstd * (gh - sum(gh)/N - xhat * sum(gh * xhat)/N)
//              dw = sum over rows of g * xhat,  db = sum over rows of g
//
// Each row is read from memory once: its later passes hit L1/L2 (a row of up to a few thousand elements).
// dw and db sum over rows: rows are cut into chunks of a fixed size, each chunk's partial sums are made
// by one thread, and the partials are added in chunk order, so the result is bitwise the same for any
// number of threads.
#include <cmath>

#include "common.h"
#include "row_kernels.h"

namespace mt {

constexpr index_t kChunkRows = 32;

static std::vector<index_t> shape_of(const py::array& a) {
    return std::vector<index_t>(a.shape(), a.shape() + a.ndim());
}

template <class T>
static const T* optional_vector(const py::object& obj, index_t n, const char* op, const char* name,
                                py::array_t<T, py::array::c_style>& keep) {
    if (obj.is_none()) return nullptr;
    keep = contiguous_input<T>(py::cast<py::array>(obj), op, name);
    if (keep.ndim() != 1 || keep.shape(0) != n)
        value_error(std::string(op) + ": " + name + " has shape " + shape_str(keep) + ", expected (" + std::to_string(n) + ",)");
    return keep.data();
}

template <class T>
static void forward(const py::array& x_in, const py::object& w_in, const py::object& b_in, double eps,
                    const py::array& y_out, const py::array& mean_out, const py::array& rstd_out) {
    auto x = contiguous_input<T>(x_in, "layer_norm", "x");
    if (x.ndim() < 1 || x.shape(x.ndim() - 1) == 0)
        value_error("layer_norm: x must have at least 1 dim and a non-empty last dim, got " + shape_str(x));
    const index_t n = x.shape(x.ndim() - 1), rows = x.size() / n;
    py::array_t<T, py::array::c_style> wk, bk;
    const T* w = optional_vector<T>(w_in, n, "layer_norm", "weight", wk);
    const T* b = optional_vector<T>(b_in, n, "layer_norm", "bias", bk);
    std::vector<index_t> row_shape = shape_of(x);
    row_shape.pop_back();
    T* y = output_buffer<T>(y_out, shape_of(x), "layer_norm", "out");
    T* mean = output_buffer<T>(mean_out, row_shape, "layer_norm", "mean");
    T* rstd = output_buffer<T>(rstd_out, row_shape, "layer_norm", "rstd");
    const T* xp = x.data();
    auto fn = row_kernels<T>(detected_isa()).ln_forward;
    const T e = static_cast<T>(eps);
    py::gil_scoped_release release;
    const index_t blocks = (rows + kChunkRows - 1) / kChunkRows;
#pragma omp parallel if (rows * n >= kParallelGrain && max_threads() > 1)
    {
        const FlushSubnormals ftz;
#pragma omp for schedule(static)
        for (index_t blk = 0; blk < blocks; ++blk)
            fn(blk * kChunkRows, std::min(rows, (blk + 1) * kChunkRows), n, xp, w, b, e, y, mean, rstd);
    }
}

template <class T>
static void backward(const py::array& g_in, const py::array& x_in, const py::array& mean_in, const py::array& rstd_in,
                     const py::object& w_in, const py::array& dx_out, const py::object& dw_out, const py::object& db_out) {
    auto g = contiguous_input<T>(g_in, "layer_norm_backward", "grad");
    auto x = contiguous_input<T>(x_in, "layer_norm_backward", "x");
    if (shape_of(g) != shape_of(x) || x.ndim() < 1 || x.shape(x.ndim() - 1) == 0)
        value_error("layer_norm_backward: grad " + shape_str(g) + " and x " + shape_str(x) +
                    " must have the same shape, with a non-empty last dim");
    const index_t n = x.shape(x.ndim() - 1), rows = x.size() / n;
    auto mean = contiguous_input<T>(mean_in, "layer_norm_backward", "mean");
    auto rstd = contiguous_input<T>(rstd_in, "layer_norm_backward", "rstd");
    if (mean.size() != rows || rstd.size() != rows)
        value_error("layer_norm_backward: mean and rstd must hold one value per row (" + std::to_string(rows) + ")");
    py::array_t<T, py::array::c_style> wk;
    const T* w = optional_vector<T>(w_in, n, "layer_norm_backward", "weight", wk);
    T* dx = output_buffer<T>(dx_out, shape_of(x), "layer_norm_backward", "dx");
    T* dw = w ? output_buffer<T>(py::cast<py::array>(dw_out), {n}, "layer_norm_backward", "dweight") : nullptr;
    T* db = w ? output_buffer<T>(py::cast<py::array>(db_out), {n}, "layer_norm_backward", "dbias") : nullptr;
    const T *gp = g.data(), *xp = x.data(), *mp = mean.data(), *rp = rstd.data();
    auto fn = row_kernels<T>(detected_isa()).ln_backward;
    py::gil_scoped_release release;
    const index_t chunks = (rows + kChunkRows - 1) / kChunkRows;
    std::vector<T> partial(w ? static_cast<std::size_t>(2 * chunks * n) : 0, T(0));
#pragma omp parallel if (rows * n >= kParallelGrain && max_threads() > 1)
    {
        const FlushSubnormals ftz;
#pragma omp for schedule(static)
        for (index_t c = 0; c < chunks; ++c) {
            T* pw = w ? partial.data() + 2 * c * n : nullptr;
            fn(c * kChunkRows, std::min(rows, (c + 1) * kChunkRows), n, gp, xp, mp, rp, w, dx, pw, pw ? pw + n : nullptr);
        }
    }
    if (w) {
        for (index_t j = 0; j < n; ++j) dw[j] = db[j] = T(0);
        for (index_t c = 0; c < chunks; ++c)  // in chunk order: deterministic
            for (index_t j = 0; j < n; ++j) {
                dw[j] += partial[2 * c * n + j];
                db[j] += partial[2 * c * n + n + j];
            }
    }
}

void register_layernorm(py::module_& m) {
    m.def(
        "layer_norm_forward",
        [](const py::array& x, const py::object& w, const py::object& b, double eps, const py::array& y,
           const py::array& mean, const py::array& rstd) {
            if (float_kind(x, "layer_norm", "x") == 0) forward<float>(x, w, b, eps, y, mean, rstd);
            else forward<double>(x, w, b, eps, y, mean, rstd);
        },
        py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("eps"), py::arg("out"), py::arg("mean"), py::arg("rstd"),
        "Normalise the last dim of x into out; mean and rstd (one per row) are written for the backward.");
    m.def(
        "layer_norm_backward",
        [](const py::array& g, const py::array& x, const py::array& mean, const py::array& rstd, const py::object& w,
           const py::array& dx, const py::object& dw, const py::object& db) {
            if (float_kind(x, "layer_norm_backward", "x") == 0) backward<float>(g, x, mean, rstd, w, dx, dw, db);
            else backward<double>(g, x, mean, rstd, w, dx, dw, db);
        },
        py::arg("grad"), py::arg("x"), py::arg("mean"), py::arg("rstd"), py::arg("weight"), py::arg("dx"),
        py::arg("dweight"), py::arg("dbias"),
        "dx (and dweight, dbias when weight is given) of layer_norm from the forward's mean and rstd.");
}

}  // namespace mt
