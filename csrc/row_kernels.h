// Row kernels (softmax family, layer_norm), compiled once per ISA in row_kernels.cpp; row_kernels<T>(isa)
// returns the set for an ISA. Each kernel processes the rows [r0, r1) of a C-contiguous (rows, n) array.
#pragma once

#include "common.h"

namespace mt {

// Maps a row of x (an index over all dims but the last) to the element offset of that row in a strided
// array: how a broadcast mask (a (S, S) causal mask, a (B, 1, 1, S) padding mask) is read without expanding.
struct RowIndexer {
    index_t nd = 0;
    index_t shape[16] = {}, stride[16] = {};
    index_t col_stride = 1;
    index_t offset(index_t r) const {
        index_t off = 0;
        for (index_t d = nd - 1; d >= 0; --d) {
            off += (r % shape[d]) * stride[d];
            r /= shape[d];
        }
        return off;
    }
};

template <class T>
struct RowKernels {
    void (*softmax)(index_t r0, index_t r1, index_t n, const T* x, T* y, const T* mask, const RowIndexer& mi, bool log);
    void (*softmax_back)(index_t r0, index_t r1, index_t n, const T* y, const T* g, T* dx, bool log);
    void (*ln_forward)(index_t r0, index_t r1, index_t n, const T* x, const T* w, const T* b, T eps, T* y, T* mean,
                       T* rstd);
    void (*ln_backward)(index_t r0, index_t r1, index_t n, const T* g, const T* x, const T* mean, const T* rstd,
                        const T* w, T* dx, T* pw, T* pb);
};

template <class T>
RowKernels<T> row_kernels(Isa isa);

// GELU on [i0, i1) of flat arrays (elementwise.cpp, per ISA): y = gelu(x), or y = g * gelu'(x) when g is given;
// y may be x. The GEMM's GELU epilogue runs it on each block of C it has just finished.
template <class T>
using GeluFn = void (*)(index_t i0, index_t i1, const T* x, const T* g, T* y, bool tanh_form);
template <class T>
GeluFn<T> gelu_kernel(Isa isa);

}  // namespace mt
