// The fused LSTM cell kernels and the sigmoid / tanh they use, compiled once per ISA: lstm.cpp includes this
// file three times, after row_kernels_body.h (for Lanes and exp_nonpos_lanes), inside `#pragma GCC target(...)`
// and a namespace of its own, like row_kernels.cpp does for the row kernels.
//
// Activations, on vectors (the selects are bitwise, on comparison masks):
// - sigmoid(x) = 1 / (1 + e) for x >= 0, e / (1 + e) for x < 0, with e = exp(-|x|): exp only ever sees a
//   non-positive argument, so nothing overflows. Errors: exp ~1 ulp, then one add and one divide: <= ~3 ulp.
//   Below the normal range of exp (x < -87 in float32, -708 in float64) it returns exactly 0 (the true value
//   is below 1.6e-38 / 3.3e-308 there).
// - tanh(x): for |x| < 0.625 Cephes' odd polynomial (float32: x + x^3 P(x^2), degree 5; float64: x + x^3
//   P(x^2)/Q(x^2)), ~1-2 ulp; above, (1 - e) / (1 + e) with e = exp(-2|x|) <= 0.29, so 1 - e has no
//   cancellation: ~2-3 ulp; the sign is copied from x. (1 - e)/(1 + e) alone would lose all precision near 0.
// NaN propagates through both; +-inf gives the limits (sigmoid 1 / 0, tanh +-1). Measured (tests/kernels/
// test_lstm.py): at most ~2 ulp for both, float32 and float64, on every ISA.
//
// Cell (gates in PyTorch's order i, f, g, o; each gate a block of H columns of a (N, 4H) row):
//   forward:   i, f, o = sigmoid(.),  g = tanh(.),  c' = f c + i g,  h' = o tanh(c')
//   backward:  dc' = dc_next + dh o (1 - tanh(c')^2)
//              di = dc' g i (1 - i),  df = dc' c f (1 - f),  dg = dc' i (1 - g^2),  do = dh tanh(c') o (1 - o)
//              dc = dc' f
// The backward recomputes the activations from the gates (the saved forward input) in registers instead of
// reading a saved workspace: the same instructions on the same inputs, so the values match the forward's bit
// for bit.
//
// Vectors are one register of the ISA (16 bytes SSE2, 32 AVX2, 64 AVX-512), not row_kernels' fixed 16 lanes:
// GCC splits arithmetic on a wider vector into registers, but lowers a comparison (the selects here and in
// exp_nonpos_lanes) wider than a register lane by lane, with branches: several times slower. A row's last
// H % lanes elements go through a zero-padded one-vector buffer, so every element takes the same vector code
// (results do not depend on where an element falls in a row).
#ifndef MT_KERNEL_ISA
#error "lstm_body.h is included by lstm.cpp with MT_KERNEL_ISA set"
#endif

constexpr int kRegisterBytes = MT_KERNEL_ISA == 2 ? 64 : MT_KERNEL_ISA == 1 ? 32 : 16;

template <class T>
struct Reg {
    static constexpr int lanes = kRegisterBytes / static_cast<int>(sizeof(T));
    typedef typename Lanes<T, lanes>::type V;
    typedef decltype(V{} < V{}) M;  // integer lanes of T's width
};

template <class T>
MT_ALWAYS_INLINE typename Reg<T>::V load_reg(const T* p) {
    typename Reg<T>::V v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

template <class T>
MT_ALWAYS_INLINE void store_reg(T* p, typename Reg<T>::V v) {
    std::memcpy(p, &v, sizeof(v));
}

template <class V, class M>
MT_ALWAYS_INLINE V select_lanes(M take_a, V a, V b) {
    return (V)(((M)a & take_a) | ((M)b & ~take_a));
}

// The sign bit of every lane: the bits in which -1 and 1 differ. (Not (M)(V{} + T(-0.0)): +0 + -0 is +0.)
template <class T>
MT_ALWAYS_INLINE typename Reg<T>::M sign_mask() {
    typedef typename Reg<T>::V V;
    typedef typename Reg<T>::M M;
    return (M)(V{} + T(1)) ^ (M)(V{} - T(1));
}

template <class T>
MT_ALWAYS_INLINE typename Reg<T>::V sigmoid_reg(typename Reg<T>::V x) {
    typedef typename Reg<T>::V V;
    typedef typename Reg<T>::M M;
    const V e = exp_nonpos_lanes<T, Reg<T>::lanes>((V)((M)x | sign_mask<T>()));  // exp(-|x|)
    const V one = V{} + T(1);
    return select_lanes<V, M>(x >= T(0), one, e) / (one + e);
}

template <class T>
MT_ALWAYS_INLINE typename Reg<T>::V tanh_reg(typename Reg<T>::V x) {
    typedef typename Reg<T>::V V;
    typedef typename Reg<T>::M M;
    const M sign = sign_mask<T>();
    const V ax = (V)((M)x & ~sign);
    const V one = V{} + T(1);
    const V e = exp_nonpos_lanes<T, Reg<T>::lanes>(T(-2) * ax);
    const V big = (V)((M)((one - e) / (one + e)) | ((M)x & sign));
    const V z = x * x;
    V small;
    if constexpr (sizeof(T) == 4) {
        V p = T(-5.70498872745e-3) + V{};
        p = p * z + T(2.06390887954e-2);
        p = p * z + T(-5.37397155531e-2);
        p = p * z + T(1.33314422036e-1);
        p = p * z + T(-3.33332819422e-1);
        small = p * z * x + x;
    } else {
        const V p = (T(-9.64399179425052238628e-1) * z + T(-9.92877231001918586564e1)) * z +
                    T(-1.61468768441708447952e3);
        const V q = ((z + T(1.12811678491632931402e2)) * z + T(2.23548839060100448583e3)) * z +
                    T(4.84406305325125486048e3);
        small = x + x * (z * p / q);
    }
    return select_lanes<V, M>(ax < T(0.625), small, big);
}

// One register-wide slice of the cell, forward.
template <class T>
MT_ALWAYS_INLINE void cell_forward_reg(const T* gi, const T* gf, const T* gg, const T* go, const T* c, T* h, T* cn) {
    typedef typename Reg<T>::V V;
    const V i = sigmoid_reg<T>(load_reg(gi)), f = sigmoid_reg<T>(load_reg(gf));
    const V g = tanh_reg<T>(load_reg(gg)), o = sigmoid_reg<T>(load_reg(go));
    const V c_next = f * load_reg(c) + i * g;
    store_reg(cn, c_next);
    store_reg(h, o * tanh_reg<T>(c_next));
}

// One register-wide slice of the cell, backward. dh / dc may be null (a zero gradient); dc_prev may be null
// (not wanted).
template <class T>
MT_ALWAYS_INLINE void cell_backward_reg(const T* gi, const T* gf, const T* gg, const T* go, const T* c, const T* dh,
                                        const T* dc, T* di, T* df, T* dg, T* dout, T* dc_prev) {
    typedef typename Reg<T>::V V;
    const V i = sigmoid_reg<T>(load_reg(gi)), f = sigmoid_reg<T>(load_reg(gf));
    const V g = tanh_reg<T>(load_reg(gg)), o = sigmoid_reg<T>(load_reg(go));
    const V cp = load_reg(c);
    const V tc = tanh_reg<T>(f * cp + i * g);
    const V one = V{} + T(1);
    const V dhv = dh ? load_reg(dh) : V{};
    const V dcn = (dc ? load_reg(dc) : V{}) + dhv * o * (one - tc * tc);
    store_reg(di, dcn * g * i * (one - i));
    store_reg(df, dcn * cp * f * (one - f));
    store_reg(dg, dcn * i * (one - g * g));
    store_reg(dout, dhv * tc * o * (one - o));
    if (dc_prev) store_reg(dc_prev, dcn * f);
}

// Rows [r0, r1) of gates (N, 4H) and c (N, H) -> h' and c' (N, H). All arrays C-contiguous.
template <class T>
void lstm_forward_rows(index_t r0, index_t r1, index_t H, const T* gates, const T* c, T* h, T* c_next) {
    constexpr index_t W = Reg<T>::lanes;
    for (index_t r = r0; r < r1; ++r) {
        const T* g = gates + r * 4 * H;
        const T* cr = c + r * H;
        T *hr = h + r * H, *cnr = c_next + r * H;
        index_t j = 0;
        for (; j + W <= H; j += W)
            cell_forward_reg<T>(g + j, g + H + j, g + 2 * H + j, g + 3 * H + j, cr + j, hr + j, cnr + j);
        if (j < H) {  // the tail, through zero-padded buffers
            const index_t n = H - j;
            T in[5][W] = {}, out[2][W];
            for (index_t k = 0; k < n; ++k) {
                for (int q = 0; q < 4; ++q) in[q][k] = g[q * H + j + k];
                in[4][k] = cr[j + k];
            }
            cell_forward_reg<T>(in[0], in[1], in[2], in[3], in[4], out[0], out[1]);
            for (index_t k = 0; k < n; ++k) {
                hr[j + k] = out[0][k];
                cnr[j + k] = out[1][k];
            }
        }
    }
}

// Rows [r0, r1): d_gates (N, 4H) and, when dc_prev is given, dc_prev (N, H), from gates, c and the gradients
// dh, dc of h' and c' (N, H; either may be null: zero).
template <class T>
void lstm_backward_rows(index_t r0, index_t r1, index_t H, const T* gates, const T* c, const T* dh, const T* dc,
                        T* d_gates, T* dc_prev) {
    constexpr index_t W = Reg<T>::lanes;
    for (index_t r = r0; r < r1; ++r) {
        const T* g = gates + r * 4 * H;
        const T* cr = c + r * H;
        const T* dhr = dh ? dh + r * H : nullptr;
        const T* dcr = dc ? dc + r * H : nullptr;
        T* dg = d_gates + r * 4 * H;
        T* dcp = dc_prev ? dc_prev + r * H : nullptr;
        index_t j = 0;
        for (; j + W <= H; j += W)
            cell_backward_reg<T>(g + j, g + H + j, g + 2 * H + j, g + 3 * H + j, cr + j, dhr ? dhr + j : nullptr,
                                 dcr ? dcr + j : nullptr, dg + j, dg + H + j, dg + 2 * H + j, dg + 3 * H + j,
                                 dcp ? dcp + j : nullptr);
        if (j < H) {
            const index_t n = H - j;
            T in[7][W] = {}, out[5][W];
            for (index_t k = 0; k < n; ++k) {
                for (int q = 0; q < 4; ++q) in[q][k] = g[q * H + j + k];
                in[4][k] = cr[j + k];
                if (dhr) in[5][k] = dhr[j + k];
                if (dcr) in[6][k] = dcr[j + k];
            }
            cell_backward_reg<T>(in[0], in[1], in[2], in[3], in[4], dhr ? in[5] : nullptr, dcr ? in[6] : nullptr,
                                 out[0], out[1], out[2], out[3], dcp ? out[4] : nullptr);
            for (index_t k = 0; k < n; ++k) {
                for (int q = 0; q < 4; ++q) dg[q * H + j + k] = out[q][k];
                if (dcp) dcp[j + k] = out[4][k];
            }
        }
    }
}
