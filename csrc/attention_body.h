// Fused scaled-dot-product attention, forward and backward, for one batch element (one head) at a time;
// compiled once per ISA: attention.cpp includes this file three times, after row_kernels_body.h (nan_max,
// exp_nonpos_lanes), inside `#pragma GCC target(...)` and a namespace of its own.
//
// Per batch element (q: L x E, k: S x E, v: S x Ev, mask: L x S additive, read through its strides):
//   forward:   s = (scale q) k^T + mask (-inf where causal j > i),  m = rowmax s,  p = exp(s - m),  l = rowsum p,
//              o = (p v) / l,  lse = m + log l
//   backward:  p = exp(s - lse) (recomputed),  D = rowsum(do * o),  dp = do v^T,  ds = p (dp - D),
//              dq = scale ds k,  dk = ds^T (scale q),  dv = p^T do
// Query rows go in blocks of Q = two registers' worth (32 for float on AVX-512; one register for a last block
// of at most W rows), and a block's scores are kept
// transposed, key-major: row j of the block holds s[i][j] for the block's Q queries, one per vector lane. Then
// the softmax over keys is elementwise across those rows (max, exp, sum: no horizontal reductions), every
// product is a register-blocked sum of broadcast scalars times vectors (attention_body's `combine`, like a GEMM
// micro-kernel), and only S x Q scores live at a time, never the L x S matrix. Lanes of a partial block past L
// hold zeros and are never written out (and contribute exactly 0 to dk, dv: their p is exp(-inf) = 0).
// A row whose keys are all masked comes out NaN, as PyTorch's softmax of all -inf does, and so do the gradients
// it touches.
#ifndef MT_KERNEL_ISA
#error "attention_body.h is included by attention.cpp with MT_KERNEL_ISA set"
#endif

// Rows (one batch element of an operand, read through its strides) and AttnScratch (attention.cpp) are shared
// by every ISA body.

// Vectors of one register (W lanes); feature rows in the scratch are padded to multiples of 16 (a whole number
// of registers on every ISA), so every loop below runs whole vectors.
template <class T>
struct AttnVec {
    static constexpr int W = (MT_KERNEL_ISA == 2 ? 64 : MT_KERNEL_ISA == 1 ? 32 : 16) / static_cast<int>(sizeof(T));
    static constexpr int Q = 2 * W;  // query rows per block (at most: a last block may be one vector, W rows)
    static_assert(Q <= kMaxQ, "the scratch holds query blocks of at most kMaxQ rows");
    typedef typename Lanes<T, W>::type V;
    static MT_ALWAYS_INLINE V load(const T* p) {
        V v;
        std::memcpy(&v, p, sizeof(V));
        return v;
    }
    static MT_ALWAYS_INLINE void store(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }

    // y[t * ldy + (0, n)) (+)= sum over u < m of a[t * ats + u * aus] * x[u * ldx + (0, n)) for t < rows, n a
    // multiple of W: blocks of 4 t's x 2 vectors of accumulators stay in registers (a GEMM micro-kernel in
    // miniature), so no sum waits on FMA latency at every step and each loaded vector of x serves 4 rows. `a` is
    // only read one scalar at a time, through its strides: k and v are used in place, never copied.
    // TN rows of y (TN <= 4, a compile-time count: no per-step test of how many rows are left), columns
    // [c0, c0 + W * (TWO ? 2 : 1)).
    template <int TN, bool TWO>
    static MT_ALWAYS_INLINE void combine_tile(index_t t0, index_t c0, index_t m, const T* a, index_t ats, index_t aus,
                                              const T* x, index_t ldx, T* y, index_t ldy, bool accumulate) {
        V acc[TN][2] = {};
        for (index_t u = 0; u < m; ++u) {
            const V x0 = load(x + u * ldx + c0);
            const V x1 = TWO ? load(x + u * ldx + c0 + W) : V{};
#pragma GCC unroll 4
            for (int t = 0; t < TN; ++t) {
                const T at = a[(t0 + t) * ats + u * aus];
                acc[t][0] += at * x0;
                if (TWO) acc[t][1] += at * x1;
            }
        }
#pragma GCC unroll 4
        for (int t = 0; t < TN; ++t) {
            T* yt = y + (t0 + t) * ldy + c0;
            store(yt, accumulate ? load(yt) + acc[t][0] : acc[t][0]);
            if (TWO) store(yt + W, accumulate ? load(yt + W) + acc[t][1] : acc[t][1]);
        }
    }
    template <bool TWO>
    static MT_ALWAYS_INLINE void combine_rows(index_t t0, int tn, index_t c0, index_t m, const T* a, index_t ats,
                                              index_t aus, const T* x, index_t ldx, T* y, index_t ldy, bool acc) {
        switch (tn) {
            case 4: combine_tile<4, TWO>(t0, c0, m, a, ats, aus, x, ldx, y, ldy, acc); break;
            case 3: combine_tile<3, TWO>(t0, c0, m, a, ats, aus, x, ldx, y, ldy, acc); break;
            case 2: combine_tile<2, TWO>(t0, c0, m, a, ats, aus, x, ldx, y, ldy, acc); break;
            default: combine_tile<1, TWO>(t0, c0, m, a, ats, aus, x, ldx, y, ldy, acc); break;
        }
    }
    static void combine(index_t rows, index_t m, index_t n, const T* a, index_t ats, index_t aus, const T* x,
                        index_t ldx, T* y, index_t ldy, bool accumulate) {
        for (index_t t0 = 0; t0 < rows; t0 += 4) {
            const int tn = static_cast<int>(std::min<index_t>(4, rows - t0));
            for (index_t c0 = 0; c0 < n; c0 += 2 * W) {
                if (c0 + 2 * W <= n) combine_rows<true>(t0, tn, c0, m, a, ats, aus, x, ldx, y, ldy, accumulate);
                else combine_rows<false>(t0, tn, c0, m, a, ats, aus, x, ldx, y, ldy, accumulate);
            }
        }
    }
};

#if MT_KERNEL_ISA == 2
// The first `cnt` lanes (cnt <= W) of p[0], p[stride], p[2 * stride], ... as a vector, zero in the others: one
// masked AVX-512 gather (the lanes past cnt are not read). For the transposes of a query block, in and out.
template <class T>
MT_ALWAYS_INLINE typename AttnVec<T>::V gather_lanes(const T* p, index_t stride, index_t cnt) {
    typedef typename AttnVec<T>::V V;
    if constexpr (sizeof(T) == 4) {
        const __m512i idx = _mm512_mullo_epi32(_mm512_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15),
                                               _mm512_set1_epi32((int)stride));
        return (V)_mm512_mask_i32gather_ps(_mm512_setzero_ps(), (__mmask16)((1u << cnt) - 1), idx, p, 4);
    } else {
        const __m256i idx = _mm256_mullo_epi32(_mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7), _mm256_set1_epi32((int)stride));
        return (V)_mm512_mask_i32gather_pd(_mm512_setzero_pd(), (__mmask8)((1u << cnt) - 1), idx, p, 8);
    }
}
#endif

// Gather rows [i0, i0 + rows) of a (L x n) operand transposed into xt (n x Q; lanes past `rows` zero) and, when
// `xr` is given, row-major into xr (Q x np, zero-padded), times `scale`.
template <class T, int NB>
void gather_block(const Rows<T>& x, index_t i0, index_t rows, index_t n, index_t np, T scale, T* xt, T* xr) {
    constexpr int W = AttnVec<T>::W, Q = NB * W;
#if MT_KERNEL_ISA == 2
    // the transposed copy with masked gathers down each column, W rows at a time (one element at a time, it was a
    // quarter of the forward); the lanes past `rows` come out zero
    if (!xr && x.s1 > 0 && x.s1 * W < (index_t(1) << 30)) {
        for (int c = 0; c < NB; ++c) {
            const index_t cnt = std::clamp<index_t>(rows - c * W, 0, W);
            const T* base = x.row(i0 + std::min<index_t>(c * W, rows > 0 ? rows - 1 : 0));
            for (index_t d = 0; d < n; ++d)
                AttnVec<T>::store(xt + d * Q + c * W, gather_lanes<T>(base + d * x.s2, x.s1, cnt) * scale);
        }
        return;
    }
#endif
    std::fill(xt, xt + n * Q, T(0));
    if (xr) std::fill(xr, xr + Q * np, T(0));
    for (index_t r = 0; r < rows; ++r) {
        const T* xi = x.row(i0 + r);
        for (index_t d = 0; d < n; ++d) {
            const T val = scale * xi[d * x.s2];
            xt[d * Q + r] = val;
            if (xr) xr[r * np + d] = val;
        }
    }
}

// The block's scores, key-major, into w.st (S x Q): (scale q_i) . k_j + mask, -inf where causal masks them. Lanes
// past `rows` get -inf too (so their p is 0). Reads w.qt; returns the per-lane max over keys in mx (2 vectors).
template <class T, int NB>
void block_scores(index_t i0, index_t rows, index_t S, index_t E, const Rows<T>& k, const Rows<T>* mask, bool causal,
                  AttnScratch<T>& w, typename AttnVec<T>::V* mx) {
    typedef AttnVec<T> A;
    typedef typename A::V V;
    typedef decltype(V{} < V{}) M;
    constexpr int W = A::W, Q = NB * W;
    T* st = w.st.data();
    A::combine(S, E, Q, k.p, k.s1, k.s2, w.qt.data(), Q, st, Q, false);
    const T ninf = -std::numeric_limits<T>::infinity();
    if (mask) {
        if (mask->s1 == 0) {  // the same mask row for every query (key padding): one broadcast per key
            const T* m0 = mask->row(0);
            for (index_t j = 0; j < S; ++j)
                for (int c = 0; c < Q; c += W) A::store(st + j * Q + c, A::load(st + j * Q + c) + m0[j * mask->s2]);
        } else {
            for (index_t r = 0; r < rows; ++r) {
                const T* mi = mask->row(i0 + r);
                for (index_t j = 0; j < S; ++j) st[j * Q + r] += mi[j * mask->s2];
            }
        }
    }
    V lane = {};
    for (int l = 0; l < W; ++l) lane[l] = T(l);
    for (int c = 0; c < NB; ++c) mx[c] = V{} + ninf;
    for (index_t j = 0; j < S; ++j) {
        for (int c = 0; c < NB; ++c) {
            V sj = A::load(st + j * Q + c * W);
            const V row = lane + T(i0 + c * W);            // the query index of each lane
            M off = row >= T(rows + i0);                    // lanes past the block's rows
            if (causal) off |= (V{} + T(j)) > row;         // keys after the query
            sj = (V)(((M)(V{} + ninf) & off) | ((M)sj & ~off));
            A::store(st + j * Q + c * W, sj);
            mx[c] = nan_max(mx[c], sj);
        }
    }
}

// st[j] = exp(st[j] - shift) lane by lane (shift: the max forward, lse backward); the per-lane sums into sum.
template <class T, int NB>
void block_exp(index_t S, T* st, const typename AttnVec<T>::V* shift, typename AttnVec<T>::V* sum) {
    typedef AttnVec<T> A;
    constexpr int W = A::W, Q = NB * W;
    for (int c = 0; c < NB; ++c) sum[c] = typename A::V{};
    for (index_t j = 0; j < S; ++j)
        for (int c = 0; c < NB; ++c) {
            const auto e = exp_nonpos_lanes<T, W>(A::load(st + j * Q + c * W) - shift[c]);
            A::store(st + j * Q + c * W, e);
            sum[c] += e;
        }
}

// One block of NB vectors of query rows [i0, i0 + rows), rows <= NB * W.
template <class T, int NB>
void sdpa_forward_block(index_t i0, index_t rows, index_t S, index_t E, index_t Ev, T scale, const Rows<T>& q,
                        const Rows<T>& k, const Rows<T>& v, const Rows<T>* mask, bool causal, T* out, index_t os1,
                        T* lse, AttnScratch<T>& w) {
    typedef AttnVec<T> A;
    typedef typename A::V V;
    constexpr int W = A::W, Q = NB * W;
    const T ninf = -std::numeric_limits<T>::infinity();
    gather_block<T, NB>(q, i0, rows, E, 0, scale, w.qt.data(), static_cast<T*>(nullptr));
    V mx[NB], l[NB];
    block_scores<T, NB>(i0, rows, S, E, k, mask, causal, w, mx);
    block_exp<T, NB>(S, w.st.data(), mx, l);  // a fully masked lane: -inf - -inf = NaN, which flows into its out
    A::combine(Ev, S, Q, v.p, v.s2, v.s1, w.st.data(), Q, w.ot.data(), Q, false);  // o^T = v^T p^T
    for (index_t r = 0; r < rows; ++r) {
        const T m = mx[r / W][r % W], sum = l[r / W][r % W], inv = T(1) / sum;
        T* oi = out + (i0 + r) * os1;
        index_t d = 0;
#if MT_KERNEL_ISA == 2
        for (; d < Ev; d += W) {  // column r of o^T, W features at a time: a gather and a masked store
            const index_t cnt = std::min<index_t>(W, Ev - d);
            const V col = gather_lanes<T>(w.ot.data() + d * Q + r, Q, cnt) * inv;
            if constexpr (sizeof(T) == 4) _mm512_mask_storeu_ps(oi + d, (__mmask16)((1u << cnt) - 1), (__m512)col);
            else _mm512_mask_storeu_pd(oi + d, (__mmask8)((1u << cnt) - 1), (__m512d)col);
        }
#endif
        for (; d < Ev; ++d) oi[d] = w.ot[d * Q + r] * inv;
        lse[i0 + r] = m == ninf ? ninf : m + std::log(sum);
    }
}

// Query rows in blocks of two vectors, and a last block of one vector when at most W rows are left (L = 65 on
// AVX-512: 32 + 32 + 16 lanes of work instead of 32 + 32 + 32).
template <class T>
void sdpa_forward_batch(index_t L, index_t S, index_t E, index_t Ev, T scale, const Rows<T>& q, const Rows<T>& k,
                        const Rows<T>& v, const Rows<T>* mask, bool causal, T* out, index_t os1, T* lse,
                        AttnScratch<T>& w) {
    constexpr int W = AttnVec<T>::W;
    for (index_t i0 = 0; i0 < L;) {
        const index_t left = L - i0;
        if (left > W) {
            sdpa_forward_block<T, 2>(i0, std::min<index_t>(2 * W, left), S, E, Ev, scale, q, k, v, mask, causal, out,
                                     os1, lse, w);
            i0 += 2 * W;
        } else {
            sdpa_forward_block<T, 1>(i0, left, S, E, Ev, scale, q, k, v, mask, causal, out, os1, lse, w);
            i0 += W;
        }
    }
}

// One block of NB vectors of query rows [i0, i0 + rows): dq written, dk and dv summed into the scratch.
template <class T, int NB>
void sdpa_backward_block(index_t i0, index_t rows, index_t S, index_t E, index_t Ev, T scale, const Rows<T>& q,
                         const Rows<T>& k, const Rows<T>& v, const Rows<T>* mask, bool causal, const Rows<T>& out,
                         const T* lse, const Rows<T>& dout, T* dq, AttnScratch<T>& w) {
    typedef AttnVec<T> A;
    typedef typename A::V V;
    constexpr int W = A::W, Q = NB * W;
    const index_t Ep = w.Ep, Evp = w.Evp;
    const T nan = std::numeric_limits<T>::quiet_NaN(), inf = std::numeric_limits<T>::infinity();
    gather_block<T, NB>(q, i0, rows, E, Ep, scale, w.qt.data(), w.qr.data());
    gather_block<T, NB>(dout, i0, rows, Ev, Evp, T(1), w.dot.data(), w.dor.data());
    V mx[NB], shift[NB], unused[NB], D[NB];
    block_scores<T, NB>(i0, rows, S, E, k, mask, causal, w, mx);
    for (int c = 0; c < NB; ++c)
        for (int l = 0; l < W; ++l) {
            const index_t r = c * W + l;
            // lse of the row; +inf past the block (p = 0 there); -inf (fully masked) gives NaN, as softmax's
            shift[c][l] = r < rows ? (lse[i0 + r] == -inf ? nan : lse[i0 + r]) : inf;
            T Dr = 0;  // D = do . o for the row
            if (r < rows) {
                const T *gi = dout.row(i0 + r), *oi = out.row(i0 + r);
                for (index_t d = 0; d < Ev; ++d) Dr += gi[d * dout.s2] * oi[d * out.s2];
            }
            D[c][l] = Dr;
        }
    block_exp<T, NB>(S, w.st.data(), shift, unused);  // st = p
    // dp^T = v do^T (S x Q), then ds = p (dp - D) in place
    A::combine(S, Ev, Q, v.p, v.s1, v.s2, w.dot.data(), Q, w.dpt.data(), Q, false);
    for (index_t j = 0; j < S; ++j)
        for (int c = 0; c < NB; ++c) {
            T* dpj = w.dpt.data() + j * Q + c * W;
            A::store(dpj, A::load(w.st.data() + j * Q + c * W) * (A::load(dpj) - D[c]));
        }
    // dq^T = k^T ds^T (E x Q);  dk += ds^T (scale q);  dv += p^T do
    A::combine(E, S, Q, k.p, k.s2, k.s1, w.dpt.data(), Q, w.dqt.data(), Q, false);
    for (index_t r = 0; r < rows; ++r)
        for (index_t d = 0; d < E; ++d) dq[(i0 + r) * E + d] = scale * w.dqt[d * Q + r];
    A::combine(S, rows, Ep, w.dpt.data(), Q, 1, w.qr.data(), Ep, w.dk.data(), Ep, true);
    A::combine(S, rows, Evp, w.st.data(), Q, 1, w.dor.data(), Evp, w.dv.data(), Evp, true);
}

// dq, dk, dv: this batch element's contiguous (L, E), (S, E), (S, Ev); dK and dV are summed in the scratch. Query
// blocks as in the forward.
template <class T>
void sdpa_backward_batch(index_t L, index_t S, index_t E, index_t Ev, T scale, const Rows<T>& q, const Rows<T>& k,
                         const Rows<T>& v, const Rows<T>* mask, bool causal, const Rows<T>& out, const T* lse,
                         const Rows<T>& dout, T* dq, T* dk, T* dv, AttnScratch<T>& w) {
    constexpr int W = AttnVec<T>::W;
    const index_t Ep = w.Ep, Evp = w.Evp;
    std::fill(w.dk.begin(), w.dk.end(), T(0));
    std::fill(w.dv.begin(), w.dv.end(), T(0));
    for (index_t i0 = 0; i0 < L;) {
        const index_t left = L - i0;
        if (left > W) {
            sdpa_backward_block<T, 2>(i0, std::min<index_t>(2 * W, left), S, E, Ev, scale, q, k, v, mask, causal, out,
                                      lse, dout, dq, w);
            i0 += 2 * W;
        } else {
            sdpa_backward_block<T, 1>(i0, left, S, E, Ev, scale, q, k, v, mask, causal, out, lse, dout, dq, w);
            i0 += W;
        }
    }
    for (index_t j = 0; j < S; ++j) {
        for (index_t d = 0; d < E; ++d) dk[j * E + d] = w.dk[j * Ep + d];
        for (index_t d = 0; d < Ev; ++d) dv[j * Ev + d] = w.dv[j * Evp + d];
    }
}
