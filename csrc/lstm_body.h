// The fused LSTM cell kernels, compiled once per ISA: lstm.cpp includes this file three times, after
// row_kernels_body.h (Lanes, exp_nonpos_lanes) and activations_body.h (sigmoid_reg, tanh_reg, register-wide
// vectors), inside `#pragma GCC target(...)` and a namespace of its own, like row_kernels.cpp does.
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
// A row's last H % lanes elements go through a zero-padded one-vector buffer, so every element takes the same
// vector code (results do not depend on where an element falls in a row).
#ifndef MT_KERNEL_ISA
#error "lstm_body.h is included by lstm.cpp with MT_KERNEL_ISA set"
#endif

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
