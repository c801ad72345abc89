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

// Masked vector accesses: lane_mask(count) covers the first `count` lanes (0 <= count <= W); masked_load gives
// those lanes of p and zero in the others, masked_store writes only those lanes. Nothing past p + count is read
// or written: AVX-512 and AVX2 mask the access, the baseline loops over the lanes. The in-place micro-kernel makes
// B's mask once and uses it for every k; load_first / store_first make it per call (edge tiles, edge slivers:
// a plain loop over the lanes there was turned into a call to memcpy by GCC, one per row of every edge tile).
#if MT_KERNEL_ISA == 2
template <class T, int W>
using MaskT = typename std::conditional<sizeof(T) == 4, __mmask16, __mmask8>::type;
template <class T, int W>
MT_ALWAYS_INLINE MaskT<T, W> lane_mask(index_t count) { return (MaskT<T, W>)((1u << count) - 1); }
template <class T, class V, class M>
MT_ALWAYS_INLINE V masked_load(const T* p, M mask) {
    if constexpr (sizeof(T) == 4) return (V)_mm512_maskz_loadu_ps(mask, p);
    else return (V)_mm512_maskz_loadu_pd(mask, p);
}
template <class T, class V, class M>
MT_ALWAYS_INLINE void masked_store(T* p, V v, M mask) {
    if constexpr (sizeof(T) == 4) _mm512_mask_storeu_ps(p, mask, (__m512)v);
    else _mm512_mask_storeu_pd(p, mask, (__m512d)v);
}
#elif MT_KERNEL_ISA == 1
template <class T, int W>
using MaskT = __m256i;
template <class T, int W>
MT_ALWAYS_INLINE __m256i lane_mask(index_t count) {
    if constexpr (sizeof(T) == 4) return _mm256_cmpgt_epi32(_mm256_set1_epi32((int)count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    else return _mm256_cmpgt_epi64(_mm256_set1_epi64x(count), _mm256_setr_epi64x(0, 1, 2, 3));
}
template <class T, class V, class M>
MT_ALWAYS_INLINE V masked_load(const T* p, M mask) {
    if constexpr (sizeof(T) == 4) return (V)_mm256_maskload_ps(p, mask);
    else return (V)_mm256_maskload_pd(p, mask);
}
template <class T, class V, class M>
MT_ALWAYS_INLINE void masked_store(T* p, V v, M mask) {
    if constexpr (sizeof(T) == 4) _mm256_maskstore_ps(p, mask, (__m256)v);
    else _mm256_maskstore_pd(p, mask, (__m256d)v);
}
#else
template <class T, int W>
using MaskT = index_t;  // the count itself
template <class T, int W>
MT_ALWAYS_INLINE index_t lane_mask(index_t count) { return count; }
template <class T, class V, class M>
MT_ALWAYS_INLINE V masked_load(const T* p, M count) {
    V v = {};
    for (index_t l = 0; l < count; ++l) v[l] = p[l];
    return v;
}
template <class T, class V, class M>
MT_ALWAYS_INLINE void masked_store(T* p, V v, M count) {
    for (index_t l = 0; l < count; ++l) p[l] = v[l];
}
#endif
template <class T, class V>
MT_ALWAYS_INLINE V load_first(const T* p, index_t count) {
    return masked_load<T, V>(p, lane_mask<T, int(sizeof(V) / sizeof(T))>(count));
}
template <class T, class V>
MT_ALWAYS_INLINE void store_first(T* p, V v, index_t count) {
    masked_store<T, V>(p, v, lane_mask<T, int(sizeof(V) / sizeof(T))>(count));
}

// A is read through strides: element (i, k) of the sliver is a[i * a_rs + k * a_cs]; a packed sliver has
// (a_rs, a_cs) = (1, MR), an unpacked row-major A (lda, 1). Rows past m (an edge tile) re-read row m - 1,
// so nothing outside A is touched; their results are never stored.
//
// B is a packed sliver (B_IN_PLACE false: row k at b + k * NR, zero-padded) or, for small products, B itself
// (row k at b + k * b_rs, n <= NR columns): its vectors past column n are loaded masked (masked_load), so
// nothing past B's last column is read and no per-product packing is paid.
//
// bias (nullptr: none) holds n values added to every row of the tile as it is stored: Linear's bias, fused.
// B_IN_PLACE kernels take the count of B's full vectors as FULL (0..NV): those are plain loads, only the rest are
// masked (a masked load costs an extra vector uop, and 12 FMAs per k leave no port for it).
template <class T, int W, int MR, int NV, bool B_IN_PLACE, int FULL = NV>
MT_ALWAYS_INLINE void micro_kernel(index_t kc, const T* __restrict a, index_t a_rs, index_t a_cs,
                                   const T* __restrict b, index_t b_rs, T* c, index_t rs_c, index_t cs_c, index_t m,
                                   index_t n, T alpha, T beta, const T* __restrict bias) {
    typedef typename VecT<T, W>::type V;
    constexpr int NR = NV * W;
    [[maybe_unused]] MaskT<T, W> bmask[NV];
    if constexpr (B_IN_PLACE)
        for (int j = 0; j < NV; ++j) bmask[j] = lane_mask<T, W>(std::clamp<index_t>(n - j * W, 0, W));
    const T* row[MR];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i) row[i] = a + (i < m ? i : m - 1) * a_rs;
    V acc[MR][NV];
#pragma GCC unroll 16
    for (int i = 0; i < MR; ++i)
#pragma GCC unroll 4
        for (int j = 0; j < NV; ++j) acc[i][j] = V{};
    if (cs_c == 1) {  // the C tile is read and written after the k loop: fetch its lines while the FMAs run
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            if (i >= m) break;
#pragma GCC unroll 8
            for (int l = 0; l < NR * int(sizeof(T)); l += 64) __builtin_prefetch(c + i * rs_c + l / int(sizeof(T)), 1);
        }
    }
#pragma GCC unroll 2  // two k steps per iteration: measured 2-7% (most on short K, e.g. attention's 16)
    for (index_t k = 0; k < kc; ++k) {
        V bv[NV];
        if constexpr (B_IN_PLACE) {
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) {
                if (j < FULL) std::memcpy(&bv[j], b + j * W, sizeof(V));
                else bv[j] = masked_load<T, V>(b + j * W, bmask[j]);
            }
            b += b_rs;
        } else {
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) std::memcpy(&bv[j], b + j * W, sizeof(V));
            b += NR;
        }
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            const V ai = splat<V>(row[i][k * a_cs]);
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) acc[i][j] += ai * bv[j];
        }
    }
    if (cs_c == 1) {  // row-major C: whole vectors stored as vectors (all of them in a full tile), the rest masked
        V bias_v[NV] = {};
        if (bias)
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) bias_v[j] = load_first<T, V>(bias + j * W, std::clamp<index_t>(n - j * W, 0, W));
#pragma GCC unroll 16
        for (int i = 0; i < MR; ++i) {
            if (i >= m) break;
#pragma GCC unroll 4
            for (int j = 0; j < NV; ++j) {
                T* p = c + i * rs_c + j * W;
                V out = acc[i][j] * alpha + bias_v[j];
                if ((j + 1) * W <= n) {
                    if (beta != T(0)) {  // beta == 0 must not read C (it may hold garbage, even NaN)
                        V old;
                        std::memcpy(&old, p, sizeof(V));
                        out += old * beta;
                    }
                    std::memcpy(p, &out, sizeof(V));
                } else {
                    if (beta != T(0)) out += load_first<T, V>(p, n - j * W) * beta;
                    store_first<T, V>(p, out, n - j * W);
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
            const T v = alpha * tile[i * NR + j] + (bias ? bias[j] : T(0));
            *p = beta != T(0) ? v + beta * *p : v;
        }
}

// ---------------------------------------------------------------------------------------------- packing
// Compiled per ISA like the kernels, so the copies use this ISA's vectors.
//
// A (mc x kc block) -> slivers of MR rows, k-major: Ap[s][k][i] = A(s*MR + i, k), zero past mc.
// The loop order follows A's layout so the source is read contiguously: row-major A row by row.
template <class T, int MR>
void pack_a(index_t mc, index_t kc, const T* A, index_t rs, index_t cs, T* Ap) {
    if (rs == 1 && cs != 1) {  // column-major A (a transposed operand, dW = gᵀ x): column k is contiguous, read
        const index_t full = mc / MR * MR;  // it whole, MR values into each sliver
        for (index_t k = 0; k < kc; ++k) {
            const T* col = A + k * cs;
            for (index_t s = 0; s < full; s += MR) std::memcpy(Ap + s * kc + k * MR, col + s, MR * sizeof(T));
            if (full < mc) {
                T* out = Ap + full * kc + k * MR;
                index_t i = 0;
                for (; i < mc - full; ++i) out[i] = col[full + i];
                for (; i < MR; ++i) out[i] = T(0);
            }
        }
        return;
    }
    for (index_t s = 0; s < mc; s += MR) {
        const index_t rows = std::min<index_t>(MR, mc - s);
        T* out = Ap + s * kc;
        if (cs == 1) {
            for (index_t i = 0; i < rows; ++i) {
                const T* row = A + (s + i) * rs;
                // each row is a separate short stream (kc elements, a page or more from the last one), which the
                // hardware prefetcher picks up too late: fetch the same row of the next sliver while copying this
                // one (measured: pack_a went from 8% of a 1024^3 product to 5%)
                if (s + MR + i < mc)
                    for (index_t k = 0; k < kc; k += 64 / sizeof(T)) __builtin_prefetch(row + MR * rs + k);
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
    if (rs == 1 && cs != 1) {
        for (index_t s = s0; s < s1; ++s) {
            const index_t j0 = s * NR;
            const index_t cols = std::min<index_t>(NR, nc - j0);
            T* out = Bp + j0 * kc;
            for (index_t j = 0; j < cols; ++j) {
                const T* col = B + (j0 + j) * cs;
                for (index_t k = 0; k < kc; ++k) out[k * NR + j] = col[k];
            }
            for (index_t j = cols; j < NR; ++j)
                for (index_t k = 0; k < kc; ++k) out[k * NR + j] = T(0);
        }
        return;
    }
    // Row by row across all the slivers, so each row of B is read as one contiguous stream. Sliver by sliver,
    // every row was a separate short read a row stride from the last (a page and a TLB entry each): measured
    // 1024^3 product, 6% faster. (Eight rows per sliver at a time measured slower than one.)
    const index_t full = std::min(s1, nc / NR);  // slivers [s0, full) have all NR columns
    for (index_t k = 0; k < kc; ++k) {
        const T* row = B + k * rs;
        for (index_t s = s0; s < s1; ++s) {
            const index_t j0 = s * NR;
            T* o = Bp + j0 * kc + k * NR;
            if (cs == 1 && s < full) {
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) std::memcpy(o + v * W, row + j0 + v * W, sizeof(V));
                continue;
            }
            const index_t cols = std::min<index_t>(NR, nc - j0);
            if (cs == 1) {  // the edge sliver: the columns past nc are zero
#pragma GCC unroll 4
                for (int v = 0; v < NV; ++v) {
                    const V x = load_first<T, V>(row + j0 + v * W, std::clamp<index_t>(cols - v * W, 0, W));
                    std::memcpy(o + v * W, &x, sizeof(V));
                }
                continue;
            }
            const V zero = {};
#pragma GCC unroll 4
            for (int v = 0; v < NV; ++v) std::memcpy(o + v * W, &zero, sizeof(V));
            for (index_t j = 0; j < cols; ++j) o[j] = row[(j0 + j) * cs];
        }
    }
}

// C[mc x nc] (+)= alpha * A @ B (+ bias, one value per column) over one block. B is either packed (b_rs == 0:
// ceil(nc/NR) slivers of kc x NR) or, for a small product, read in place (row stride b_rs, unit column stride);
// A is either packed (ceil(mc/MR) slivers of MR x kc) or, when !packed, read in place with strides (a_rs, a_cs).
// Loop order (jr outer, ir inner) keeps one B sliver in L1 while the A slivers stream from L2, as in BLIS.
template <class T, int W, int MR, int NV>
void macro_kernel(index_t mc, index_t nc, index_t kc, const T* A, bool packed, index_t a_rs, index_t a_cs,
                  const T* B, index_t b_rs, T* C, index_t rs_c, index_t cs_c, T alpha, T beta, const T* bias) {
    static_assert(NV == 2, "the in-place B dispatch below is written for two vectors");
    constexpr int NR = NV * W;
    const index_t ars = packed ? 1 : a_rs, acs = packed ? MR : a_cs;
    for (index_t jr = 0; jr < nc; jr += NR) {
        const index_t n = std::min<index_t>(NR, nc - jr);
        const T* b = b_rs ? B + jr : B + (jr / NR) * NR * kc;
        const T* bi = bias ? bias + jr : nullptr;
        for (index_t ir = 0; ir < mc; ir += MR) {
            const index_t m = std::min<index_t>(MR, mc - ir);
            const T* a = packed ? A + (ir / MR) * MR * kc : A + ir * a_rs;
            T* c = C + ir * rs_c + jr * cs_c;
            if (!b_rs)
                micro_kernel<T, W, MR, NV, false>(kc, a, ars, acs, b, 0, c, rs_c, cs_c, m, n, alpha, beta, bi);
            else if (n >= 2 * W)
                micro_kernel<T, W, MR, NV, true, 2>(kc, a, ars, acs, b, b_rs, c, rs_c, cs_c, m, n, alpha, beta, bi);
            else if (n > W)
                micro_kernel<T, W, MR, NV, true, 1>(kc, a, ars, acs, b, b_rs, c, rs_c, cs_c, m, n, alpha, beta, bi);
            else if (n == W)  // one vector wide: a one-vector tile, not half the FMAs on zeros
                micro_kernel<T, W, MR, 1, true, 1>(kc, a, ars, acs, b, b_rs, c, rs_c, cs_c, m, n, alpha, beta, bi);
            else
                micro_kernel<T, W, MR, 1, true, 0>(kc, a, ars, acs, b, b_rs, c, rs_c, cs_c, m, n, alpha, beta, bi);
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
