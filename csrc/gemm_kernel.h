// The GEMM micro-kernel and macro-kernel, written once as templates over (type, vector width, MR, NV).
//
// They use GCC vector extensions, not ISA intrinsics: gemm.cpp instantiates them inside functions marked
// __attribute__((target("avx2,fma"))) or target("avx512f,...") (and once for the x86-64 baseline, SSE2),
// and the compiler emits the vector FMAs of that ISA. So there is one micro-kernel, not one per ISA, and
// the module needs no -march flag: the dispatcher picks the instantiation the CPU supports.
//
// Micro-kernel: C[MR x NR] = alpha * A_sliver (MR x kc, packed k-major) @ B_sliver (kc x NR, packed k-major)
// + beta * C, with NR = NV vectors of W elements. The MR x NV accumulators stay in registers; each k step
// loads NV vectors of B, broadcasts MR scalars of A and issues MR*NV fused multiply-adds.
#pragma once

#include <algorithm>
#include <cstring>

#include "common.h"

namespace mt {

template <class T, int W>
struct VecT;
template <>
struct VecT<float, 4> { typedef float type __attribute__((vector_size(16))); };
template <>
struct VecT<float, 8> { typedef float type __attribute__((vector_size(32))); };
template <>
struct VecT<float, 16> { typedef float type __attribute__((vector_size(64))); };
template <>
struct VecT<double, 2> { typedef double type __attribute__((vector_size(16))); };
template <>
struct VecT<double, 4> { typedef double type __attribute__((vector_size(32))); };
template <>
struct VecT<double, 8> { typedef double type __attribute__((vector_size(64))); };

template <class T, int W, int MR, int NV>
MT_ALWAYS_INLINE void micro_kernel(index_t kc, const T* __restrict a, const T* __restrict b, T* c, index_t rs_c,
                                   index_t cs_c, index_t m, index_t n, T alpha, T beta) {
    typedef typename VecT<T, W>::type V;
    constexpr int NR = NV * W;
    V acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[i][j] = V{};
    for (index_t k = 0; k < kc; ++k) {
        V bv[NV];
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) std::memcpy(&bv[j], b + j * W, sizeof(V));
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            const V ai = V{} + a[i];
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) acc[i][j] += ai * bv[j];
        }
        a += MR;
        b += NR;
    }
    if (m == MR && n == NR && cs_c == 1) {  // a full tile of row-major C: vector stores
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) {
                T* p = c + i * rs_c + j * W;
                V out = acc[i][j] * alpha;
                if (beta != T(0)) {  // beta == 0 must not read C (it may hold garbage, even NaN)
                    V old;
                    std::memcpy(&old, p, sizeof(V));
                    out += old * beta;
                }
                std::memcpy(p, &out, sizeof(V));
            }
        }
        return;
    }
    // an edge tile or a strided C: through a local tile, writing only the m x n valid elements
    alignas(64) T tile[MR * NR];
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NV; ++j) std::memcpy(tile + i * NR + j * W, &acc[i][j], sizeof(V));
    for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < n; ++j) {
            T* p = c + i * rs_c + j * cs_c;
            *p = beta != T(0) ? alpha * tile[i * NR + j] + beta * *p : alpha * tile[i * NR + j];
        }
}

// C[mc x nc] (+)= alpha * Ap @ Bp over one packed block: Ap holds ceil(mc/MR) slivers of MR x kc, Bp holds
// ceil(nc/NR) slivers of kc x NR. Loop order (jr outer, ir inner) keeps one B sliver in L1 while the A
// slivers stream from L2, as in BLIS.
template <class T, int W, int MR, int NV>
MT_ALWAYS_INLINE void macro_kernel(index_t mc, index_t nc, index_t kc, const T* Ap, const T* Bp, T* C, index_t rs_c,
                                   index_t cs_c, T alpha, T beta) {
    constexpr int NR = NV * W;
    for (index_t jr = 0; jr < nc; jr += NR) {
        const index_t n = std::min<index_t>(NR, nc - jr);
        const T* b = Bp + (jr / NR) * NR * kc;
        for (index_t ir = 0; ir < mc; ir += MR) {
            const index_t m = std::min<index_t>(MR, mc - ir);
            micro_kernel<T, W, MR, NV>(kc, Ap + (ir / MR) * MR * kc, b, C + ir * rs_c + jr * cs_c, rs_c, cs_c, m, n,
                                       alpha, beta);
        }
    }
}

}  // namespace mt
