// The GEMM micro-kernel and macro-kernel, written once as templates over (type, vector width, MR, NV).
//
// gemm.cpp includes this file once per ISA, each time inside `#pragma GCC target(...)` and its own
// namespace (MT_KERNEL_ISA = 0 for the x86-64 baseline, 1 for AVX2+FMA, 2 for AVX-512), so the same
// source is compiled into three sets of kernels and the module needs no -march flag: the dispatcher picks
// the set the CPU supports. The arithmetic uses GCC vector extensions; only the broadcast names an
// intrinsic (GCC 12 expands a generic 512-bit splat through the stack).
//
// Micro-kernel: C[MR x NR] = alpha * A_sliver (MR x kc, packed k-major) @ B_sliver (kc x NR, packed k-major)
// + beta * C, with NR = NV vectors of W elements. The MR x NV accumulators stay in registers; each k step
// loads NV vectors of B, broadcasts MR scalars of A and issues MR*NV fused multiply-adds.
#ifndef MT_KERNEL_ISA
#error "gemm_kernel.h is included by gemm.cpp with MT_KERNEL_ISA set"
#endif

// All lanes = x: one broadcast instruction of this ISA.
template <class V>
MT_ALWAYS_INLINE V splat(float x) {
#if MT_KERNEL_ISA == 2
    return (V)_mm512_set1_ps(x);
#elif MT_KERNEL_ISA == 1
    return (V)_mm256_set1_ps(x);
#else
    return (V)_mm_set1_ps(x);
#endif
}
template <class V>
MT_ALWAYS_INLINE V splat(double x) {
#if MT_KERNEL_ISA == 2
    return (V)_mm512_set1_pd(x);
#elif MT_KERNEL_ISA == 1
    return (V)_mm256_set1_pd(x);
#else
    return (V)_mm_set1_pd(x);
#endif
}

// A is read through strides: element (i, k) of the sliver is a[i * a_rs + k * a_cs]; a packed sliver has
// (a_rs, a_cs) = (1, MR), an unpacked row-major A (lda, 1). Rows past m (an edge tile) re-read row m - 1,
// so nothing outside A is touched; their results are never stored.
template <class T, int W, int MR, int NV>
MT_ALWAYS_INLINE void micro_kernel(index_t kc, const T* __restrict a, index_t a_rs, index_t a_cs,
                                   const T* __restrict b, T* c, index_t rs_c, index_t cs_c, index_t m, index_t n,
                                   T alpha, T beta) {
    typedef typename VecT<T, W>::type V;
    constexpr int NR = NV * W;
    const T* row[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) row[i] = a + (i < m ? i : m - 1) * a_rs;
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
            const V ai = splat<V>(row[i][k * a_cs]);
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) acc[i][j] += ai * bv[j];
        }
        b += NR;
    }
    if (cs_c == 1) {  // row-major C: whole vectors stored as vectors (all of them in a full tile), the rest lane by lane
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            if (i >= m) break;
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) {
                T* p = c + i * rs_c + j * W;
                V out = acc[i][j] * alpha;
                if ((j + 1) * W <= n) {
                    if (beta != T(0)) {  // beta == 0 must not read C (it may hold garbage, even NaN)
                        V old;
                        std::memcpy(&old, p, sizeof(V));
                        out += old * beta;
                    }
                    std::memcpy(p, &out, sizeof(V));
                } else {
                    for (index_t l = 0; l < n - j * W; ++l) p[l] = beta != T(0) ? out[l] + beta * p[l] : out[l];
                    break;
                }
            }
        }
        return;
    }
    // a strided C (a transposed output): element by element, writing only the m x n valid elements
    alignas(64) T tile[MR * NR];
    for (int i = 0; i < MR; ++i)
        for (int j = 0; j < NV; ++j) std::memcpy(tile + i * NR + j * W, &acc[i][j], sizeof(V));
    for (index_t i = 0; i < m; ++i)
        for (index_t j = 0; j < n; ++j) {
            T* p = c + i * rs_c + j * cs_c;
            *p = beta != T(0) ? alpha * tile[i * NR + j] + beta * *p : alpha * tile[i * NR + j];
        }
}

// ---------------------------------------------------------------------------------------------- packing
// Compiled per ISA like the kernels, so the copies use this ISA's vectors.
//
// A (mc x kc block) -> slivers of MR rows, k-major: Ap[s][k][i] = A(s*MR + i, k), zero past mc.
// The loop order follows A's layout so the source is read contiguously: row-major A row by row.
template <class T, int MR>
void pack_a(index_t mc, index_t kc, const T* A, index_t rs, index_t cs, T* Ap) {
    for (index_t s = 0; s < mc; s += MR) {
        const index_t rows = std::min<index_t>(MR, mc - s);
        T* out = Ap + s * kc;
        if (cs == 1) {
            for (index_t i = 0; i < rows; ++i) {
                const T* row = A + (s + i) * rs;
                for (index_t k = 0; k < kc; ++k) out[k * MR + i] = row[k];
            }
            for (index_t i = rows; i < MR; ++i)
                for (index_t k = 0; k < kc; ++k) out[k * MR + i] = T(0);
            continue;
        }
        for (index_t k = 0; k < kc; ++k) {
            const T* col = A + s * rs + k * cs;
            index_t i = 0;
            for (; i < rows; ++i) out[k * MR + i] = col[i * rs];
            for (; i < MR; ++i) out[k * MR + i] = T(0);
        }
    }
}

// B (kc x nc block), slivers [s0, s1) of NR columns, k-major: Bp[s][k][j] = B(k, s*NR + j), zero past nc.
// Row-major B is copied row by row (a whole sliver row as NV vectors); column-major B (a transposed view,
// rs == 1) column by column, so a transposed operand is read contiguously instead of with a stride of a
// whole row per element.
template <class T, int W, int NV>
void pack_b(index_t kc, index_t nc, const T* B, index_t rs, index_t cs, T* Bp, index_t s0, index_t s1) {
    typedef typename VecT<T, W>::type V;
    constexpr int NR = NV * W;
    for (index_t s = s0; s < s1; ++s) {
        const index_t j0 = s * NR;
        const index_t cols = std::min<index_t>(NR, nc - j0);
        T* out = Bp + j0 * kc;
        if (rs == 1 && cs != 1) {
            for (index_t j = 0; j < cols; ++j) {
                const T* col = B + (j0 + j) * cs;
                for (index_t k = 0; k < kc; ++k) out[k * NR + j] = col[k];
            }
            for (index_t j = cols; j < NR; ++j)
                for (index_t k = 0; k < kc; ++k) out[k * NR + j] = T(0);
            continue;
        }
        for (index_t k = 0; k < kc; ++k) {
            const T* row = B + k * rs + j0 * cs;
            T* o = out + k * NR;
            if (cs == 1 && cols == NR) {
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) std::memcpy(o + v * W, row + v * W, sizeof(V));
                continue;
            }
            const V zero = {};
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) std::memcpy(o + v * W, &zero, sizeof(V));
            if (cs == 1)
                for (index_t j = 0; j < cols; ++j) o[j] = row[j];
            else
                for (index_t j = 0; j < cols; ++j) o[j] = row[j * cs];
        }
    }
}

// C[mc x nc] (+)= alpha * A @ Bp over one block: Bp holds ceil(nc/NR) packed slivers of kc x NR; A is either
// packed (ceil(mc/MR) slivers of MR x kc) or, when !packed, read in place with strides (a_rs, a_cs). Loop
// order (jr outer, ir inner) keeps one B sliver in L1 while the A slivers stream from L2, as in BLIS.
template <class T, int W, int MR, int NV>
void macro_kernel(index_t mc, index_t nc, index_t kc, const T* A, bool packed, index_t a_rs, index_t a_cs,
                  const T* Bp, T* C, index_t rs_c, index_t cs_c, T alpha, T beta) {
    constexpr int NR = NV * W;
    for (index_t jr = 0; jr < nc; jr += NR) {
        const index_t n = std::min<index_t>(NR, nc - jr);
        const T* b = Bp + (jr / NR) * NR * kc;
        for (index_t ir = 0; ir < mc; ir += MR) {
            const index_t m = std::min<index_t>(MR, mc - ir);
            const T* a = packed ? A + (ir / MR) * MR * kc : A + ir * a_rs;
            micro_kernel<T, W, MR, NV>(kc, a, packed ? 1 : a_rs, packed ? MR : a_cs, b, C + ir * rs_c + jr * cs_c,
                                       rs_c, cs_c, m, n, alpha, beta);
        }
    }
}


// The machine's peak, measured: `chains` independent FMA dependency chains of vectors that stay in
// registers, enough to cover the FMA latency on every pipe. Returns the FLOPs done (2 per lane per FMA).
template <class T, int W>
double fma_probe(index_t iterations) {
    typedef typename VecT<T, W>::type V;
    constexpr int chains = 12;
    V acc[chains];
    const V mul = splat<V>(T(0.999999)), add = splat<V>(T(1e-7));
#pragma GCC unroll 12
    for (int c = 0; c < chains; ++c) acc[c] = splat<V>(T(1) + T(c) * T(1e-3));
    for (index_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 12
        for (int c = 0; c < chains; ++c) acc[c] = acc[c] * mul + add;
    }
    T keep = 0;
    for (int c = 0; c < chains; ++c)
        for (int l = 0; l < W; ++l) keep += acc[c][l];
    volatile T sink = keep;  // keep the loop from being optimised away
    (void)sink;
    return 2.0 * chains * W * static_cast<double>(iterations);
}
