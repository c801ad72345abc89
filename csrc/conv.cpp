// im2col / col2im for NCHW with stride, padding and dilation, and conv2d forward and backward on them + GEMM.
//
//   cols[n] (C*kh*kw, OH*OW): row (c, i, j), column (oh, ow) holds x[n, c, oh*sh - ph + i*dh, ow*sw - pw + j*dw]
//                             (0 where that falls in the padding)
//   forward:  out[n] (OC, OH*OW) = W (OC, C*kh*kw) @ cols[n] + b
//   backward: dW = sum_n g[n] @ cols[n]^T,  db = sum over n, oh, ow of g,  dx[n] = col2im(W^T @ g[n])
//
// Images are processed one at a time, so an image's columns (C*kh*kw x OH*OW) stay in L2 between im2col and
// the GEMM that reads them (a batch-wide layout, one big GEMM, measured twice as slow: its columns spill to
// L3). Threads take whole images (each writes only its own outputs). dW and db sum over images: in chunks of
// a fixed number of images, added in chunk order, so results do not depend on the thread count. Every
// index into x and dx is range-checked against the padding, never clamped.
#include <algorithm>
#include <cstring>

#include "common.h"
#include "gemm.h"

namespace mt {

constexpr index_t kChunkImages = 4;  // images per partial sum of dW and db

struct Geometry {
    index_t C, H, W, kh, kw, sh, sw, ph, pw, dh, dw, OH, OW;
    index_t ckk() const { return C * kh * kw; }
    index_t L() const { return OH * OW; }
};

// The output columns ow whose input column iw = ow * sw - pw + j * dw falls inside [0, W): [lo, hi).
static void valid_columns(const Geometry& g, index_t j, index_t& lo, index_t& hi) {
    const index_t offset = j * g.dw - g.pw;  // iw = ow * sw + offset
    lo = offset >= 0 ? 0 : (-offset + g.sw - 1) / g.sw;
    hi = offset >= g.W ? 0 : std::min(g.OW, (g.W - 1 - offset) / g.sw + 1);
    if (hi < lo) hi = lo;
}

// Image n's columns: row r = (c, i, j) at cols + r * row_stride. For the (N, C*kh*kw, L) layout of the
// im2col kernel row_stride = L; for the batch layout (C*kh*kw, N, L) that conv2d uses, row_stride = N * L.
template <class T>
static void im2col_image(const T* x, const Geometry& g, T* cols, index_t row_stride) {
    for (index_t j = 0; j < g.kw; ++j) {
        index_t lo, hi;
        valid_columns(g, j, lo, hi);
        const index_t offset = j * g.dw - g.pw;
        for (index_t c = 0; c < g.C; ++c)
            for (index_t i = 0; i < g.kh; ++i) {
                T* row = cols + ((c * g.kh + i) * g.kw + j) * row_stride;
                for (index_t oh = 0; oh < g.OH; ++oh) {
                    const index_t ih = oh * g.sh - g.ph + i * g.dh;
                    T* out = row + oh * g.OW;
                    if (ih < 0 || ih >= g.H) {
                        std::fill(out, out + g.OW, T(0));
                        continue;
                    }
                    const T* in = x + (c * g.H + ih) * g.W;  // in[ow * sw + offset] is valid for lo <= ow < hi
                    std::fill(out, out + lo, T(0));
                    if (g.sw == 1 && hi > lo)
                        std::memcpy(out + lo, in + lo + offset, (hi - lo) * sizeof(T));
                    else
                        for (index_t ow = lo; ow < hi; ++ow) out[ow] = in[ow * g.sw + offset];
                    std::fill(out + hi, out + g.OW, T(0));
                }
            }
    }
}

template <class T>
static void col2im_image(const T* cols, const Geometry& g, T* x, index_t row_stride) {
    std::fill(x, x + g.C * g.H * g.W, T(0));
    for (index_t c = 0; c < g.C; ++c)
        for (index_t i = 0; i < g.kh; ++i)
            for (index_t j = 0; j < g.kw; ++j) {
                index_t lo, hi;
                valid_columns(g, j, lo, hi);
                const index_t offset = j * g.dw - g.pw;
                const T* row = cols + ((c * g.kh + i) * g.kw + j) * row_stride;
                for (index_t oh = 0; oh < g.OH; ++oh) {
                    const index_t ih = oh * g.sh - g.ph + i * g.dh;
                    if (ih < 0 || ih >= g.H) continue;
                    T* out = x + (c * g.H + ih) * g.W;
                    const T* in = row + oh * g.OW;
                    for (index_t ow = lo; ow < hi; ++ow) out[ow * g.sw + offset] += in[ow];
                }
            }
}

static Geometry geometry(index_t C, index_t H, index_t W, index_t kh, index_t kw, const std::vector<index_t>& s,
                         const std::vector<index_t>& p, const std::vector<index_t>& d, const char* op) {
    if (s.size() != 2 || p.size() != 2 || d.size() != 2) value_error(std::string(op) + ": stride, padding and dilation must be pairs");
    if (s[0] < 1 || s[1] < 1 || d[0] < 1 || d[1] < 1 || p[0] < 0 || p[1] < 0 || kh < 1 || kw < 1)
        value_error(std::string(op) + ": stride and dilation must be >= 1, padding >= 0 and the kernel non-empty");
    Geometry g{C, H, W, kh, kw, s[0], s[1], p[0], p[1], d[0], d[1], 0, 0};
    g.OH = (H + 2 * g.ph - g.dh * (kh - 1) - 1) / g.sh + 1;
    g.OW = (W + 2 * g.pw - g.dw * (kw - 1) - 1) / g.sw + 1;
    if (H + 2 * g.ph < g.dh * (kh - 1) + 1 || W + 2 * g.pw < g.dw * (kw - 1) + 1)
        value_error(std::string(op) + ": the kernel does not fit the padded input");
    return g;
}

static std::vector<index_t> shape_of(const py::array& a) { return std::vector<index_t>(a.shape(), a.shape() + a.ndim()); }

static bool parallel_images(index_t n, const Geometry& g, index_t oc) {
    return n > 1 && max_threads() > 1 && n * oc * g.ckk() * g.L() >= kParallelGrain;
}

// sum of p[0..n) over 16 interleaved partial sums added in a fixed order: vectorized (a plain `acc += p[l]`
// loop is one dependency chain the compiler may not reorder), and the same result on every machine.
template <class T>
static T lane_sum16(const T* p, index_t n) {
    typedef T V __attribute__((vector_size(16 * sizeof(T))));
    V acc = {};
    index_t l = 0;
    for (; l + 16 <= n; l += 16) {
        V v;
        std::memcpy(&v, p + l, sizeof(V));
        acc += v;
    }
    T s = 0;
    for (int i = 0; i < 16; ++i) s += acc[i];
    for (; l < n; ++l) s += p[l];
    return s;
}

template <class T>
static void conv_forward(const py::array& x_in, const py::array& w_in, const py::object& b_in, const std::vector<index_t>& s,
                         const std::vector<index_t>& p, const std::vector<index_t>& d, const py::array& out_arr) {
    auto x = contiguous_input<T>(x_in, "conv2d", "input");
    auto w = contiguous_input<T>(w_in, "conv2d", "weight");
    if (x.ndim() != 4 || w.ndim() != 4 || x.shape(1) != w.shape(1))
        value_error("conv2d: expected input (N, C, H, W) and weight (OC, C, kh, kw), got " + shape_str(x) + " and " + shape_str(w));
    const index_t N = x.shape(0), OC = w.shape(0);
    const Geometry g = geometry(x.shape(1), x.shape(2), x.shape(3), w.shape(2), w.shape(3), s, p, d, "conv2d");
    py::array_t<T, py::array::c_style> bk;
    const T* b = nullptr;
    if (!b_in.is_none()) {
        bk = contiguous_input<T>(py::cast<py::array>(b_in), "conv2d", "bias");
        if (bk.ndim() != 1 || bk.shape(0) != OC) value_error("conv2d: bias has shape " + shape_str(bk) + ", expected (" + std::to_string(OC) + ",)");
        b = bk.data();
    }
    T* out = output_buffer<T>(out_arr, {N, OC, g.OH, g.OW}, "conv2d", "out");
    const T *xp = x.data(), *wp = w.data();
    const Isa isa = detected_isa();
    py::gil_scoped_release release;
    const index_t L = g.L(), CKK = g.ckk();
    const bool per_image = parallel_images(N, g, OC);
    const int inner = per_image ? 1 : max_threads();
#pragma omp parallel if (per_image)
    {
        Scratch<T> cols(CKK * L);
#pragma omp for schedule(static)
        for (index_t n = 0; n < N; ++n) {
            im2col_image(xp + n * g.C * g.H * g.W, g, cols.ptr, L);
            T* on = out + n * OC * L;
            gemm<T>(OC, L, CKK, T(1), {wp, CKK, 1}, {cols.ptr, L, 1}, T(0), on, L, 1, inner, isa);
            if (b)
                for (index_t o = 0; o < OC; ++o)
                    for (index_t l = 0; l < L; ++l) on[o * L + l] += b[o];
        }
    }
}

template <class T>
static void conv_backward(const py::array& g_in, const py::array& x_in, const py::array& w_in, const std::vector<index_t>& s,
                          const std::vector<index_t>& p, const std::vector<index_t>& d, const py::object& dx_out,
                          const py::object& dw_out, const py::object& db_out) {
    auto go = contiguous_input<T>(g_in, "conv2d_backward", "grad");
    auto x = contiguous_input<T>(x_in, "conv2d_backward", "input");
    auto w = contiguous_input<T>(w_in, "conv2d_backward", "weight");
    if (x.ndim() != 4 || w.ndim() != 4 || x.shape(1) != w.shape(1))
        value_error("conv2d_backward: expected input (N, C, H, W) and weight (OC, C, kh, kw), got " + shape_str(x) + " and " + shape_str(w));
    const index_t N = x.shape(0), OC = w.shape(0);
    const Geometry g = geometry(x.shape(1), x.shape(2), x.shape(3), w.shape(2), w.shape(3), s, p, d, "conv2d_backward");
    if (shape_of(go) != std::vector<index_t>{N, OC, g.OH, g.OW})
        value_error("conv2d_backward: grad has shape " + shape_str(go) + ", expected (" + std::to_string(N) + ", " +
                    std::to_string(OC) + ", " + std::to_string(g.OH) + ", " + std::to_string(g.OW) + ")");
    T* dx = dx_out.is_none() ? nullptr : output_buffer<T>(py::cast<py::array>(dx_out), shape_of(x), "conv2d_backward", "dx");
    T* dw = dw_out.is_none() ? nullptr : output_buffer<T>(py::cast<py::array>(dw_out), shape_of(w), "conv2d_backward", "dweight");
    T* db = db_out.is_none() ? nullptr : output_buffer<T>(py::cast<py::array>(db_out), {OC}, "conv2d_backward", "dbias");
    const T *gp = go.data(), *xp = x.data(), *wp = w.data();
    const Isa isa = detected_isa();
    py::gil_scoped_release release;
    const index_t L = g.L(), CKK = g.ckk(), CHW = g.C * g.H * g.W;
    const bool per_image = parallel_images(N, g, OC);
    const int inner = per_image ? 1 : max_threads();
    if (dx) {
#pragma omp parallel if (per_image)
        {
            Scratch<T> dcols(CKK * L);
#pragma omp for schedule(static)
            for (index_t n = 0; n < N; ++n) {
                gemm<T>(CKK, L, OC, T(1), Mat<T>{wp, CKK, 1}.transposed(), {gp + n * OC * L, L, 1}, T(0), dcols.ptr, L, 1,
                        inner, isa);
                col2im_image(dcols.ptr, g, dx + n * CHW, L);
            }
        }
    }
    if (dw || db) {
        const index_t chunks = (N + kChunkImages - 1) / kChunkImages;
        std::vector<T> pw(dw ? static_cast<std::size_t>(chunks * OC * CKK) : 0), pb(db ? static_cast<std::size_t>(chunks * OC) : 0, T(0));
#pragma omp parallel if (per_image)
        {
            Scratch<T> cols(dw ? CKK * L : 0);
#pragma omp for schedule(static)
            for (index_t c = 0; c < chunks; ++c)
                for (index_t n = c * kChunkImages; n < std::min(N, (c + 1) * kChunkImages); ++n) {
                    const T* gn = gp + n * OC * L;
                    if (dw) {
                        im2col_image(xp + n * CHW, g, cols.ptr, L);
                        // as dW^T (CKK x OC) = cols @ g^T into a row-major partial (CKK, OC), transposed when the
                        // chunks are added: CKK rows and OC columns fill the register tiles better than OC rows
                        // (often 32 or 64) do, and a row-major C is stored in whole vectors
                        gemm<T>(CKK, OC, L, T(1), {cols.ptr, L, 1}, Mat<T>{gn, L, 1}.transposed(),
                                n == c * kChunkImages ? T(0) : T(1), pw.data() + c * OC * CKK, OC, 1, inner, isa);
                    }
                    if (db)
                        for (index_t o = 0; o < OC; ++o) pb[c * OC + o] += lane_sum16(gn + o * L, L);
                }
        }
        if (dw) {  // chunk order: deterministic
            std::fill(dw, dw + OC * CKK, T(0));
            for (index_t c = 0; c < chunks; ++c)
                for (index_t o = 0; o < OC; ++o)
                    for (index_t k = 0; k < CKK; ++k) dw[o * CKK + k] += pw[(c * CKK + k) * OC + o];
        }
        if (db) {
            std::fill(db, db + OC, T(0));
            for (index_t c = 0; c < chunks; ++c)
                for (index_t o = 0; o < OC; ++o) db[o] += pb[c * OC + o];
        }
    }
}

template <class T>
static void im2col_entry(const py::array& x_in, index_t kh, index_t kw, const std::vector<index_t>& s,
                         const std::vector<index_t>& p, const std::vector<index_t>& d, const py::array& out_arr) {
    auto x = contiguous_input<T>(x_in, "im2col", "input");
    if (x.ndim() != 4) value_error("im2col: expected input (N, C, H, W), got " + shape_str(x));
    const Geometry g = geometry(x.shape(1), x.shape(2), x.shape(3), kh, kw, s, p, d, "im2col");
    const index_t N = x.shape(0);
    T* out = output_buffer<T>(out_arr, {N, g.ckk(), g.L()}, "im2col", "out");
    const T* xp = x.data();
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (N > 1 && N * g.ckk() * g.L() >= kParallelGrain && max_threads() > 1)
    for (index_t n = 0; n < N; ++n) im2col_image(xp + n * g.C * g.H * g.W, g, out + n * g.ckk() * g.L(), g.L());
}

template <class T>
static void col2im_entry(const py::array& cols_in, const std::vector<index_t>& x_shape, index_t kh, index_t kw,
                         const std::vector<index_t>& s, const std::vector<index_t>& p, const std::vector<index_t>& d,
                         const py::array& out_arr) {
    auto cols = contiguous_input<T>(cols_in, "col2im", "cols");
    if (x_shape.size() != 4) value_error("col2im: x_shape must be (N, C, H, W)");
    const Geometry g = geometry(x_shape[1], x_shape[2], x_shape[3], kh, kw, s, p, d, "col2im");
    const index_t N = x_shape[0];
    if (shape_of(cols) != std::vector<index_t>{N, g.ckk(), g.L()})
        value_error("col2im: cols has shape " + shape_str(cols) + ", expected (" + std::to_string(N) + ", " +
                    std::to_string(g.ckk()) + ", " + std::to_string(g.L()) + ")");
    T* out = output_buffer<T>(out_arr, x_shape, "col2im", "out");
    const T* cp = cols.data();
    py::gil_scoped_release release;
#pragma omp parallel for schedule(static) if (N > 1 && N * g.ckk() * g.L() >= kParallelGrain && max_threads() > 1)
    for (index_t n = 0; n < N; ++n) col2im_image(cp + n * g.ckk() * g.L(), g, out + n * g.C * g.H * g.W, g.L());
}

void register_conv(py::module_& m) {
    using V = std::vector<index_t>;
    m.def("conv2d_forward", [](const py::array& x, const py::array& w, const py::object& b, const V& s, const V& p,
                               const V& d, const py::array& out) {
        if (float_kind(x, "conv2d", "input") == 0) conv_forward<float>(x, w, b, s, p, d, out);
        else conv_forward<double>(x, w, b, s, p, d, out);
    }, py::arg("x"), py::arg("weight"), py::arg("bias"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("out"));
    m.def("conv2d_backward", [](const py::array& g, const py::array& x, const py::array& w, const V& s, const V& p,
                                const V& d, const py::object& dx, const py::object& dw, const py::object& db) {
        if (float_kind(x, "conv2d_backward", "input") == 0) conv_backward<float>(g, x, w, s, p, d, dx, dw, db);
        else conv_backward<double>(g, x, w, s, p, d, dx, dw, db);
    }, py::arg("grad"), py::arg("x"), py::arg("weight"), py::arg("stride"), py::arg("padding"), py::arg("dilation"),
       py::arg("dx"), py::arg("dweight"), py::arg("dbias"));
    m.def("im2col", [](const py::array& x, index_t kh, index_t kw, const V& s, const V& p, const V& d, const py::array& out) {
        if (float_kind(x, "im2col", "input") == 0) im2col_entry<float>(x, kh, kw, s, p, d, out);
        else im2col_entry<double>(x, kh, kw, s, p, d, out);
    }, py::arg("x"), py::arg("kh"), py::arg("kw"), py::arg("stride"), py::arg("padding"), py::arg("dilation"), py::arg("out"));
    m.def("col2im", [](const py::array& cols, const V& x_shape, index_t kh, index_t kw, const V& s, const V& p, const V& d,
                       const py::array& out) {
        if (float_kind(cols, "col2im", "cols") == 0) col2im_entry<float>(cols, x_shape, kh, kw, s, p, d, out);
        else col2im_entry<double>(cols, x_shape, kh, kw, s, p, d, out);
    }, py::arg("cols"), py::arg("x_shape"), py::arg("kh"), py::arg("kw"), py::arg("stride"), py::arg("padding"),
       py::arg("dilation"), py::arg("out"));
}

}  // namespace mt
