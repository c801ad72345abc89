// The fused LSTM cell, forward and backward (formulas and accuracy in lstm_body.h).
//
//   lstm_cell_forward(gates (N, 4H), c (N, H), h_out (N, H), c_out (N, H))
//   lstm_cell_backward(gates, c, dh (N, H) or None, dc (N, H) or None, d_gates_out (N, 4H), dc_out (N, H) or None)
//
// Every array must be C-contiguous, aligned, of one float dtype and exactly the expected shape: the Python side
// (backend/native.py) makes inputs contiguous, and anything else is a ValueError that names lstm_cell and the
// shapes seen and expected, raised before any memory is touched. Outputs may not overlap the inputs or each
// other. Rows are independent: threads split them (above kParallelGrain gate elements), so results do not
// depend on the thread count. `isa` (None: the best this CPU has) picks the compiled body, for tests.
#include <cmath>
#include <cstring>
#include <limits>

#include "common.h"
#include "gemm.h"
#include "row_kernels.h"

namespace mt {

namespace lstm_base {
#define MT_KERNEL_ISA 0
#include "row_kernels_body.h"
#include "activations_body.h"
#include "lstm_body.h"
#undef MT_KERNEL_ISA
}  // namespace lstm_base
#if MT_X86
#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace lstm_avx2 {
#define MT_KERNEL_ISA 1
#include "row_kernels_body.h"
#include "activations_body.h"
#include "lstm_body.h"
#undef MT_KERNEL_ISA
}  // namespace lstm_avx2
#pragma GCC pop_options
#pragma GCC push_options
#pragma GCC target("avx512f,avx512dq,avx2,fma")
namespace lstm_avx512 {
#define MT_KERNEL_ISA 2
#include "row_kernels_body.h"
#include "activations_body.h"
#include "lstm_body.h"
#undef MT_KERNEL_ISA
}  // namespace lstm_avx512
#pragma GCC pop_options
#endif

namespace {

constexpr const char* kOp = "lstm_cell";
constexpr index_t kBlockRows = 8;

template <class T>
struct LstmKernels {
    void (*forward)(index_t r0, index_t r1, index_t H, const T* gates, const T* c, T* h, T* c_next);
    void (*backward)(index_t r0, index_t r1, index_t H, const T* gates, const T* c, const T* dh, const T* dc,
                     T* d_gates, T* dc_prev);
};

#define MT_LSTM_KERNELS(NS, T) \
    LstmKernels<T> { NS::lstm_forward_rows<T>, NS::lstm_backward_rows<T> }

template <class T>
LstmKernels<T> lstm_kernels(Isa isa) {
#if MT_X86
    if (isa == Isa::avx512) return MT_LSTM_KERNELS(lstm_avx512, T);
    if (isa == Isa::avx2) return MT_LSTM_KERNELS(lstm_avx2, T);
#endif
    return MT_LSTM_KERNELS(lstm_base, T);
}

std::string dims_str(index_t rows, index_t cols) {
    return "(" + std::to_string(rows) + ", " + std::to_string(cols) + ")";
}

// The rows of a (rows, cols) array of dtype T, C-contiguous and aligned; anything else is a ValueError.
template <class T>
T* checked(const py::array& a, const char* name, index_t rows, index_t cols, bool writeable, const std::string& why) {
    if (!is_dtype<T>(a, kOp, name))
        value_error(std::string(kOp) + ": " + name + " has dtype " + std::string(py::str(a.dtype())) + ", expected " +
                    std::string(py::str(py::dtype::of<T>())) + " (the dtype of gates)");
    if (a.ndim() != 2 || a.shape(0) != rows || a.shape(1) != cols)
        value_error(std::string(kOp) + ": " + name + " has shape " + shape_str(a) + ", expected " +
                    dims_str(rows, cols) + why);
    View<T> v = view_of<T>(a, kOp, name, writeable);  // alignment, whole-element strides, writeability
    if (!v.contiguous()) value_error(std::string(kOp) + ": " + name + " must be C-contiguous");
    return v.data;
}

struct Span {
    const char* name;
    const char* lo;
    const char* hi;
};

void check_no_overlap(const std::vector<Span>& outputs, const std::vector<Span>& inputs) {
    auto overlap = [](const Span& a, const Span& b) {
        return a.lo < a.hi && b.lo < b.hi && a.lo < b.hi && b.lo < a.hi;
    };
    for (std::size_t k = 0; k < outputs.size(); ++k) {
        for (const Span& in : inputs)
            if (overlap(outputs[k], in))
                value_error(std::string(kOp) + ": " + outputs[k].name + " overlaps the input " + in.name);
        for (std::size_t m = k + 1; m < outputs.size(); ++m)
            if (overlap(outputs[k], outputs[m]))
                value_error(std::string(kOp) + ": " + outputs[k].name + " overlaps " + outputs[m].name);
    }
}

template <class T>
Span span(const char* name, const T* p, index_t n) {
    const char* lo = reinterpret_cast<const char*>(p);
    return {name, lo, p ? lo + n * static_cast<index_t>(sizeof(T)) : lo};
}

// N and H from gates (N, 4H).
void gate_dims(const py::array& gates, index_t& N, index_t& H) {
    if (gates.ndim() != 2 || gates.shape(1) % 4 != 0)
        value_error(std::string(kOp) + ": gates has shape " + shape_str(gates) +
                    ", expected (N, 4H): 2 dims, the last a multiple of 4 (the gates i, f, g, o)");
    N = gates.shape(0);
    H = gates.shape(1) / 4;
}

template <class F>
void for_row_blocks(index_t N, index_t H, F fn) {
    const index_t blocks = (N + kBlockRows - 1) / kBlockRows;
#pragma omp parallel if (N * 4 * H >= kParallelGrain && max_threads() > 1)
    {
        const FlushSubnormals ftz;
#pragma omp for schedule(static)
        for (index_t b = 0; b < blocks; ++b) fn(b * kBlockRows, std::min(N, (b + 1) * kBlockRows));
    }
}

// N and H from the gates, gates and c checked; returns the " (from gates ...)" note the other arrays' errors carry.
template <class T>
std::string checked_inputs(const py::array& gates_a, const py::array& c_a, index_t& N, index_t& H, const T*& gates,
                           const T*& c) {
    gate_dims(gates_a, N, H);
    const std::string why = " (from gates " + shape_str(gates_a) + ": N = " + std::to_string(N) + ", H = " +
                            std::to_string(H) + ")";
    gates = checked<T>(gates_a, "gates", N, 4 * H, false, "");
    c = checked<T>(c_a, "c", N, H, false, why);
    return why;
}

template <class T>
void forward(const py::array& gates_a, const py::array& c_a, const py::array& h_a, const py::array& cn_a, Isa isa) {
    index_t N, H;
    const T *gates, *c;
    const std::string why = checked_inputs<T>(gates_a, c_a, N, H, gates, c);
    T* h = checked<T>(h_a, "h_out", N, H, true, why);
    T* cn = checked<T>(cn_a, "c_out", N, H, true, why);
    check_no_overlap({span("h_out", h, N * H), span("c_out", cn, N * H)},
                     {span("gates", gates, N * 4 * H), span("c", c, N * H)});
    if (N * H == 0) return;
    auto fn = lstm_kernels<T>(isa).forward;
    py::gil_scoped_release release;
    for_row_blocks(N, H, [&](index_t r0, index_t r1) { fn(r0, r1, H, gates, c, h, cn); });
}

template <class T>
void backward(const py::array& gates_a, const py::array& c_a, const py::object& dh_o, const py::object& dc_o,
              const py::array& dg_a, const py::object& dcp_o, Isa isa) {
    index_t N, H;
    const T *gates, *c;
    const std::string why = checked_inputs<T>(gates_a, c_a, N, H, gates, c);
    // the optional arrays are held here: py::cast to py::array makes a new reference (or raises TypeError)
    py::array dh_arr, dc_arr, dcp_arr;
    const T* dh = nullptr;
    const T* dc = nullptr;
    T* dcp = nullptr;
    if (!dh_o.is_none()) dh = checked<T>(dh_arr = py::cast<py::array>(dh_o), "dh", N, H, false, why);
    if (!dc_o.is_none()) dc = checked<T>(dc_arr = py::cast<py::array>(dc_o), "dc", N, H, false, why);
    T* dg = checked<T>(dg_a, "d_gates_out", N, 4 * H, true, why);
    if (!dcp_o.is_none()) dcp = checked<T>(dcp_arr = py::cast<py::array>(dcp_o), "dc_out", N, H, true, why);
    check_no_overlap({span("d_gates_out", dg, N * 4 * H), span("dc_out", dcp, N * H)},
                     {span("gates", gates, N * 4 * H), span("c", c, N * H), span("dh", dh, N * H),
                      span("dc", dc, N * H)});
    if (N * H == 0) return;
    auto fn = lstm_kernels<T>(isa).backward;
    py::gil_scoped_release release;
    for_row_blocks(N, H, [&](index_t r0, index_t r1) { fn(r0, r1, H, gates, c, dh, dc, dg, dcp); });
}

// float32 or float64, from gates; anything else is a ValueError (as for every other bad argument here).
bool is_f64(const py::array& gates) {
    if (is_dtype<float>(gates, kOp, "gates")) return false;
    if (is_dtype<double>(gates, kOp, "gates")) return true;
    value_error(std::string(kOp) + ": gates must be float32 or float64, got " + std::string(py::str(gates.dtype())));
}

}  // namespace

void register_lstm(py::module_& m) {
    m.def(
        "lstm_cell_forward",
        [](const py::array& gates, const py::array& c, const py::array& h_out, const py::array& c_out,
           const py::object& isa) {
            const Isa chosen = parse_isa(isa, kOp);
            if (is_f64(gates)) forward<double>(gates, c, h_out, c_out, chosen);
            else forward<float>(gates, c, h_out, c_out, chosen);
        },
        py::arg("gates"), py::arg("c"), py::arg("h_out"), py::arg("c_out"), py::arg("isa") = py::none(),
        "LSTM cell: gates (N, 4H) pre-activation in the order i, f, g, o and c (N, H) -> h_out = o tanh(c'), "
        "c_out = c' = f c + i g (i, f, o sigmoid, g tanh). All arrays C-contiguous, one float dtype.");
    m.def(
        "lstm_cell_backward",
        [](const py::array& gates, const py::array& c, const py::object& dh, const py::object& dc,
           const py::array& d_gates_out, const py::object& dc_out, const py::object& isa) {
            const Isa chosen = parse_isa(isa, kOp);
            if (is_f64(gates)) backward<double>(gates, c, dh, dc, d_gates_out, dc_out, chosen);
            else backward<float>(gates, c, dh, dc, d_gates_out, dc_out, chosen);
        },
        py::arg("gates"), py::arg("c"), py::arg("dh"), py::arg("dc"), py::arg("d_gates_out"), py::arg("dc_out"),
        py::arg("isa") = py::none(),
        "Gradients of lstm_cell_forward: d_gates_out (N, 4H) and dc_out (N, H; None: not wanted) from the forward's "
        "gates and c and the gradients dh, dc of h and c' (None: zero).");
}

}  // namespace mt
