// GEMM: C = alpha * A @ B + beta * C for strided float/double matrices (see gemm.cpp).
#pragma once

#include "common.h"
#include "row_kernels.h"

namespace mt {

// A matrix read through strides: element (i, j) is data[i * rs + j * cs]. A transpose is the same data
// with rs and cs swapped; a broadcast dimension has stride 0. Nothing is ever copied to change layout.
template <class T>
struct Mat {
    const T* data;
    index_t rs, cs;
    Mat transposed() const { return {data, cs, rs}; }
};

// C (M x N, element (i, j) at C[i * rs_c + j * cs_c]) = alpha * A (M x K) @ B (K x N) + beta * C (+ bias[j]).
// beta == 0 never reads C. bias (N contiguous values, or nullptr) is added as C is stored: a fused epilogue.
// `threads` > 1 allows an OpenMP parallel region (used only for big problems).
// gelu (or nullptr): applied in place to each block of C as soon as its last k block is done, while the block is
// still in cache (Linear + GELU in one pass over the output).
template <class T>
void gemm(index_t M, index_t N, index_t K, T alpha, Mat<T> A, Mat<T> B, T beta, T* C, index_t rs_c, index_t cs_c,
          int threads, Isa isa, const T* bias = nullptr, GeluFn<T> gelu = nullptr);

// None -> detected_isa(); "avx512" / "avx2" / "scalar" (if supported); errors name `op`
Isa parse_isa(const py::object& isa, const char* op = "gemm");

void register_gemm(py::module_& m);

}  // namespace mt
