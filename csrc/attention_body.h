// Fused scaled-dot-product attention, forward and backward, for one batch element (one head) at a time;
// compiled once per ISA: attention.cpp includes this file three times, after row_kernels_body.h (lane_sum,
// lane_max, exp_nonpos_lanes), inside `#pragma GCC target(...)` and a namespace of its own.
//
// Per batch element (q: L x E, k: S x E, v: S x Ev, mask: L x S additive, read through its strides):
//   forward, row by row:   s = (scale q_i) K^T + mask_i  (-inf where causal j > i),   m = max s,
//                          p = exp(s - m),  l = sum p,   o_i = (p V) / l,   lse_i = m + log l
//   backward, row by row:  p = exp(s - lse_i) (recomputed),  D_i = do_i . o_i,  dp = do_i V^T,
//                          ds = p (dp - D_i),  dq_i = scale ds K,  dK += ds^T (scale q_i),  dV += p^T do_i
// Only one row of scores lives at a time (S numbers, never the L x S matrix), so memory does not grow with L*S.
// The inner loops run over keys (scores: one FMA per key lane per feature of q, with K transposed into a
// per-batch copy) or over features (axpy into o_i, dq_i, dK_j, dV_j), so every loop is a vector loop with no
// reduction but the row's max and sums (fixed-order lane reductions). A row whose keys are all masked comes
// out NaN, as PyTorch's softmax of all -inf does, and so do the gradients it touches.
#ifndef MT_KERNEL_ISA
#error "attention_body.h is included by attention.cpp with MT_KERNEL_ISA set"
#endif

// Rows (one batch element of an operand, read through its strides) and AttnScratch (attention.cpp) are shared
// by every ISA body.

// Vectors of one register (W lanes); the scratch rows are padded to multiples of 16 (a whole number of
// registers on every ISA), so every inner loop runs whole vectors with no remainder: the trip counts are small
// (E = 16 is one AVX-512 vector), and a compiler-vectorized loop's peeling and remainder code would cost more
// than the work.
template <class T>
struct AttnVec {
    static constexpr int W = (MT_KERNEL_ISA == 2 ? 64 : MT_KERNEL_ISA == 1 ? 32 : 16) / static_cast<int>(sizeof(T));
    typedef typename Lanes<T, W>::type V;
    static MT_ALWAYS_INLINE V load(const T* p) {
        V v;
        std::memcpy(&v, p, sizeof(V));
        return v;
    }
    static MT_ALWAYS_INLINE void store(T* p, V v) { std::memcpy(p, &v, sizeof(V)); }

    // For the `rows` (<= R) rows r of a block: y[r * ldy + (0, n)) = sum over t < m of a[r * lda + t] *
    // x[t * ldx + (0, n)), n a multiple of W. A block of query rows at a time, like a GEMM micro-kernel: R x 2
    // accumulators stay in registers, so the sum is not one chain of dependent FMAs per row (a single row's
    // sum would wait on FMA latency at every step) and each loaded vector of x serves R rows.
    static MT_ALWAYS_INLINE void combine(int rows, index_t m, index_t n, const T* a, index_t lda, const T* x,
                                         index_t ldx, T* y, index_t ldy) {
        for (index_t c0 = 0; c0 < n; c0 += 2 * W) {
            const bool two = c0 + 2 * W <= n;
            V acc[kAttnRows][2] = {};
            for (index_t t = 0; t < m; ++t) {
                const V x0 = load(x + t * ldx + c0);
                const V x1 = two ? load(x + t * ldx + c0 + W) : V{};
#pragma GCC unroll 8
                for (int r = 0; r < kAttnRows; ++r) {
                    if (r >= rows) break;
                    const T ar = a[r * lda + t];
                    acc[r][0] += ar * x0;
                    acc[r][1] += ar * x1;
                }
            }
#pragma GCC unroll 8
            for (int r = 0; r < kAttnRows; ++r) {
                if (r >= rows) break;
                store(y + r * ldy + c0, acc[r][0]);
                if (two) store(y + r * ldy + c0 + W, acc[r][1]);
            }
        }
    }
};

// Copy batch element b of k and v into the scratch (any strides in; contiguous, padded, transposed copies out).
template <class T>
void load_kv(index_t S, index_t E, index_t Ev, const Rows<T>& k, const Rows<T>& v, AttnScratch<T>& w,
             bool backward) {
    const index_t Sp = w.Sp, Ep = w.Ep, Evp = w.Evp;
    std::fill(w.kt.begin(), w.kt.end(), T(0));
    std::fill(w.kc.begin(), w.kc.end(), T(0));
    std::fill(w.vc.begin(), w.vc.end(), T(0));
    if (backward) std::fill(w.vt.begin(), w.vt.end(), T(0));
    for (index_t j = 0; j < S; ++j) {
        const T* kj = k.row(j);
        const T* vj = v.row(j);
        for (index_t d = 0; d < E; ++d) w.kc[j * Ep + d] = w.kt[d * Sp + j] = kj[d * k.s2];
        for (index_t d = 0; d < Ev; ++d) w.vc[j * Evp + d] = vj[d * v.s2];
        if (backward)
            for (index_t d = 0; d < Ev; ++d) w.vt[d * Sp + j] = w.vc[j * Evp + d];
    }
}

// The scores of query rows [i0, i0 + rows) into w.s (rows of Sp): (scale q_i) . k_j + mask, -inf where masked
// out (causal, padding lanes j >= S); scale * q_i into w.q (rows of Ep, zero past E); each row's max into mx.
template <class T>
void score_rows(index_t i0, int rows, index_t S, index_t E, T scale, const Rows<T>& q, const Rows<T>* mask,
                bool causal, AttnScratch<T>& w, T* mx) {
    const index_t Sp = w.Sp, Ep = w.Ep;
    for (int r = 0; r < rows; ++r) {
        const T* qi = q.row(i0 + r);
        T* qr = w.q.data() + r * Ep;
        for (index_t d = 0; d < E; ++d) qr[d] = scale * qi[d * q.s2];
    }
    AttnVec<T>::combine(rows, E, Sp, w.q.data(), Ep, w.kt.data(), Sp, w.s.data(), Sp);
    const T ninf = -std::numeric_limits<T>::infinity();
    for (int r = 0; r < rows; ++r) {
        const index_t i = i0 + r;
        T* s = w.s.data() + r * Sp;
        if (mask) {
            const T* mi = mask->row(i);
            for (index_t j = 0; j < S; ++j) s[j] += mi[j * mask->s2];
        }
        for (index_t j = causal ? std::min(i + 1, S) : S; j < Sp; ++j) s[j] = ninf;
        mx[r] = lane_max<T>(Sp, [&](index_t j) { return load_lanes(s + j); }, [&](index_t j) { return s[j]; });
    }
}

// s[j] = exp(s[j] - shift) for j < Sp, returning the sum (shift = the row max forward, lse backward).
template <class T>
T exp_row(T* s, index_t Sp, T shift) {
    return lane_sum<T>(
        Sp,
        [&](index_t j) {
            const auto e = exp_nonpos_lanes<T>(load_lanes(s + j) - shift);
            std::memcpy(s + j, &e, sizeof(e));
            return e;
        },
        [&](index_t j) { return s[j] = exp_nonpos(s[j] - shift); });
}

template <class T>
void sdpa_forward_batch(index_t L, index_t S, index_t E, index_t Ev, T scale, const Rows<T>& q, const Rows<T>& k,
                        const Rows<T>& v, const Rows<T>* mask, bool causal, T* out, index_t os1, T* lse,
                        AttnScratch<T>& w) {
    load_kv(S, E, Ev, k, v, w, false);
    const index_t Sp = w.Sp, Evp = w.Evp;
    const T nan = std::numeric_limits<T>::quiet_NaN(), ninf = -std::numeric_limits<T>::infinity();
    T mx[kAttnRows], inv[kAttnRows];
    for (index_t i0 = 0; i0 < L; i0 += kAttnRows) {
        const int rows = static_cast<int>(std::min<index_t>(kAttnRows, L - i0));
        score_rows(i0, rows, S, E, scale, q, mask, causal, w, mx);
        for (int r = 0; r < rows; ++r) {
            T* s = w.s.data() + r * Sp;
            if (!(mx[r] > ninf)) {  // every key masked (or NaN): NaN out, as softmax gives
                for (index_t j = 0; j < Sp; ++j) s[j] = nan;
                lse[i0 + r] = mx[r] == mx[r] ? ninf : nan;
                inv[r] = nan;
                continue;
            }
            const T l = exp_row(s, Sp, mx[r]);
            inv[r] = T(1) / l;
            lse[i0 + r] = mx[r] + std::log(l);
        }
        AttnVec<T>::combine(rows, S, Evp, w.s.data(), Sp, w.vc.data(), Evp, w.o.data(), Evp);
        for (int r = 0; r < rows; ++r) {
            T* oi = out + (i0 + r) * os1;
            const T* o = w.o.data() + r * Evp;
            for (index_t d = 0; d < Ev; ++d) oi[d] = o[d] * inv[r];
        }
    }
}

// dq, dk, dv: this batch element's contiguous (L, E), (S, E), (S, Ev); dK and dV are summed in the scratch.
template <class T>
void sdpa_backward_batch(index_t L, index_t S, index_t E, index_t Ev, T scale, const Rows<T>& q, const Rows<T>& k,
                         const Rows<T>& v, const Rows<T>* mask, bool causal, const Rows<T>& out, const T* lse,
                         const Rows<T>& dout, T* dq, T* dk, T* dv, AttnScratch<T>& w) {
    typedef typename AttnVec<T>::V V;
    constexpr int W = AttnVec<T>::W;
    load_kv(S, E, Ev, k, v, w, true);
    const index_t Sp = w.Sp, Ep = w.Ep, Evp = w.Evp;
    std::fill(w.dk.begin(), w.dk.end(), T(0));
    std::fill(w.dv.begin(), w.dv.end(), T(0));
    std::fill(w.g.begin(), w.g.end(), T(0));
    const T nan = std::numeric_limits<T>::quiet_NaN();
    T mx[kAttnRows], Di[kAttnRows];
    for (index_t i0 = 0; i0 < L; i0 += kAttnRows) {
        const int rows = static_cast<int>(std::min<index_t>(kAttnRows, L - i0));
        score_rows(i0, rows, S, E, scale, q, mask, causal, w, mx);
        for (int r = 0; r < rows; ++r) {
            const index_t i = i0 + r;
            T* s = w.s.data() + r * Sp;
            const T li = lse[i];
            if (li > -std::numeric_limits<T>::infinity()) exp_row(s, Sp, li);
            else for (index_t j = 0; j < Sp; ++j) s[j] = nan;  // a fully masked row: NaN flows on, as in softmax
            // do_i (zero past Ev) and D_i = do_i . o_i
            T* g = w.g.data() + r * Evp;
            const T* gi = dout.row(i);
            const T* oi = out.row(i);
            T acc = 0;
            for (index_t d = 0; d < Ev; ++d) {
                g[d] = gi[d * dout.s2];
                acc += g[d] * oi[d * out.s2];
            }
            Di[r] = acc;
        }
        // dp = do V^T over keys, then ds = p (dp - D_i), in place in w.dp
        AttnVec<T>::combine(rows, Ev, Sp, w.g.data(), Evp, w.vt.data(), Sp, w.dp.data(), Sp);
        for (int r = 0; r < rows; ++r) {
            const T* s = w.s.data() + r * Sp;
            T* dp = w.dp.data() + r * Sp;
            for (index_t j = 0; j < Sp; ++j) dp[j] = s[j] * (dp[j] - Di[r]);
        }
        AttnVec<T>::combine(rows, S, Ep, w.dp.data(), Sp, w.kc.data(), Ep, w.dq.data(), Ep);  // dq = ds K
        for (int r = 0; r < rows; ++r) {
            T* dq_out = dq + (i0 + r) * E;
            for (index_t d = 0; d < E; ++d) dq_out[d] = scale * w.dq[r * Ep + d];
        }
        // dV_j += sum_r p_rj do_r,  dK_j += sum_r ds_rj (scale q_r)
        for (index_t j = 0; j < S; ++j) {
            for (index_t c = 0; c < Evp; c += W) {
                V acc = AttnVec<T>::load(w.dv.data() + j * Evp + c);
                for (int r = 0; r < rows; ++r) acc += w.s[r * Sp + j] * AttnVec<T>::load(w.g.data() + r * Evp + c);
                AttnVec<T>::store(w.dv.data() + j * Evp + c, acc);
            }
            for (index_t c = 0; c < Ep; c += W) {
                V acc = AttnVec<T>::load(w.dk.data() + j * Ep + c);
                for (int r = 0; r < rows; ++r) acc += w.dp[r * Sp + j] * AttnVec<T>::load(w.q.data() + r * Ep + c);
                AttnVec<T>::store(w.dk.data() + j * Ep + c, acc);
            }
        }
    }
    for (index_t j = 0; j < S; ++j) {
        for (index_t d = 0; d < E; ++d) dk[j * E + d] = w.dk[j * Ep + d];
        for (index_t d = 0; d < Ev; ++d) dv[j * Ev + d] = w.dv[j * Evp + d];
    }
}
