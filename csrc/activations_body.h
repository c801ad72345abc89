// Activations on register-wide vectors, compiled once per ISA (included after row_kernels_body.h, for Lanes and
// exp_nonpos_lanes, inside `#pragma GCC target(...)` and a namespace, by lstm.cpp and elementwise.cpp).
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
// Vectors are one register of the ISA (16 bytes SSE2, 32 AVX2, 64 AVX-512), not row_kernels' fixed 16 lanes:
// GCC splits arithmetic on a wider vector into registers, but lowers a comparison (the selects here and in
// exp_nonpos_lanes) wider than a register lane by lane, with branches: several times slower.
//
// - gelu(x) = x Phi(x), Phi the standard normal CDF, float32: Phi(x) = 1 - erfc(z)/2 for x >= 0 and erfc(z)/2
//   for x < 0, z = |x|/sqrt(2), with erfc(z) = t P(t) exp(-z^2), t = 1/(1 + 0.3 z), P of degree 8 fitted here
//   (iteratively reweighted least squares on [0, 9.5] against math.erfc: relative error 2e-8). Phi for x < 0
//   is never 1 + (a number near -1), so the far left tail keeps its relative precision (torch's and numpy's
//   0.5 (1 + erf) cancel to 0 there). Measured against float64 (tests/kernels/test_activations.py): <= 10 ulp
//   relative for x >= -3, then growing with x^2 (the rounding of z^2 inside exp) to ~50 ulp at -9.
//   float64 keeps std::erf, element by element (the gradient checks run in float64; exactness first).
//   The tanh form uses tanh_reg (both dtypes).
//
#ifndef MT_KERNEL_ISA
#error "activations_body.h is included with MT_KERNEL_ISA set"
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


// Phi(x) (the standard normal CDF) and phi(x) (its density), float32, one register: see the top of this file.
MT_ALWAYS_INLINE void normal_cdf_pdf(Reg<float>::V x, Reg<float>::V& cdf, Reg<float>::V& pdf) {
    typedef Reg<float>::V V;
    typedef Reg<float>::M M;
    const V z = (V)((M)x & ~sign_mask<float>()) * 0.70710678118654752f;
    const V one = V{} + 1.0f;
    const V t = one / (one + 0.3f * z);
    V p = V{} + -1.294349598e-01f;
    p = p * t + 4.851002789e-01f;
    p = p * t + -5.112333319e-01f;
    p = p * t + 5.464016170e-01f;
    p = p * t + -9.363476261e-02f;
    p = p * t + 2.144372700e-01f;
    p = p * t + 1.484823277e-01f;
    p = p * t + 1.706919241e-01f;
    p = p * t + 1.691896172e-01f;
    const V g = exp_nonpos_lanes<float, Reg<float>::lanes>(-(z * z));  // exp(-x^2 / 2)
    const V half_erfc = 0.5f * t * p * g;
    cdf = select_lanes<V, M>(x >= 0.0f, one - half_erfc, half_erfc);
    pdf = g * 0.39894228040143268f;  // 1 / sqrt(2 pi)
}

// u = sqrt(2/pi) (x + 0.044715 x^3) and tanh(u), the tanh form of gelu.
template <class T>
MT_ALWAYS_INLINE typename Reg<T>::V gelu_tanh_u(typename Reg<T>::V x) {
    return T(0.7978845608028654) * (x + T(0.044715) * x * x * x);
}

// The limits at +-inf (and the far tails) are kept exact: where Phi(x) (or 1 + tanh(u)) is 0, x * 0 would be NaN at
// x = -inf, so x is replaced by -1 there (gelu = -0); where phi(x) (or 1 - tanh(u)^2) is 0, the term x * phi(x) is
// 0, not inf * 0. So gelu(-inf) = -0, gelu(inf) = inf, gelu'(inf) = 1, gelu'(-inf) = 0; NaN stays NaN.
template <class T>
MT_ALWAYS_INLINE typename Reg<T>::V gelu_reg(typename Reg<T>::V x, bool tanh_form) {
    typedef typename Reg<T>::V V;
    typedef typename Reg<T>::M M;
    const V minus_one = V{} - T(1);
    if (tanh_form) {
        const V u = T(1) + tanh_reg<T>(gelu_tanh_u<T>(x));
        return T(0.5) * select_lanes<V, M>(u == T(0), minus_one, x) * u;
    }
    if constexpr (sizeof(T) == 4) {
        V cdf, pdf;
        normal_cdf_pdf(x, cdf, pdf);
        return select_lanes<V, M>(cdf == T(0), minus_one, x) * cdf;
    } else {
        for (int l = 0; l < Reg<T>::lanes; ++l) {
            const T u = T(1) + std::erf(x[l] * T(0.7071067811865476));
            x[l] = u == T(0) ? T(-0.0) : T(0.5) * x[l] * u;
        }
        return x;
    }
}

// d gelu / dx
template <class T>
MT_ALWAYS_INLINE typename Reg<T>::V gelu_grad_reg(typename Reg<T>::V x, bool tanh_form) {
    typedef typename Reg<T>::V V;
    typedef typename Reg<T>::M M;
    const V zero = V{};
    if (tanh_form) {
        const T k = T(0.7978845608028654), c = T(0.044715);
        const V t = tanh_reg<T>(gelu_tanh_u<T>(x));
        const V s = T(1) - t * t;  // tanh'(u)
        const V slope = T(0.5) * x * s * k * (T(1) + T(3) * c * x * x);
        return T(0.5) * (T(1) + t) + select_lanes<V, M>(s == T(0), zero, slope);
    }
    if constexpr (sizeof(T) == 4) {
        V cdf, pdf;
        normal_cdf_pdf(x, cdf, pdf);
        return cdf + select_lanes<V, M>(pdf == T(0), zero, x) * pdf;
    } else {
        for (int l = 0; l < Reg<T>::lanes; ++l) {
            const T v = x[l];
            const T pdf = std::exp(T(-0.5) * v * v) * T(0.3989422804014327);
            x[l] = T(0.5) * (T(1) + std::erf(v * T(0.7071067811865476))) + (pdf == T(0) ? T(0) : v * pdf);
        }
        return x;
    }
}

// y[i] = gelu(x[i]) (g == nullptr) or g[i] * gelu'(x[i]) for i in [i0, i1); the last partial register goes
// through a zero-padded buffer, so every element takes the same vector code.
template <class T>
void gelu_range(index_t i0, index_t i1, const T* x, const T* g, T* y, bool tanh_form) {
    typedef typename Reg<T>::V V;
    constexpr int L = Reg<T>::lanes;
    index_t i = i0;
    auto one = [&](V v, const T* gp) { return g ? load_reg(gp) * gelu_grad_reg<T>(v, tanh_form) : gelu_reg<T>(v, tanh_form); };
    for (; i + L <= i1; i += L) store_reg(y + i, one(load_reg(x + i), g ? g + i : nullptr));
    if (i < i1) {
        alignas(64) T xb[L] = {}, gb[L] = {}, yb[L];
        for (index_t j = 0; j < i1 - i; ++j) {
            xb[j] = x[i + j];
            if (g) gb[j] = g[i + j];
        }
        store_reg(yb, one(load_reg(xb), gb));
        for (index_t j = 0; j < i1 - i; ++j) y[i + j] = yb[j];
    }
}
