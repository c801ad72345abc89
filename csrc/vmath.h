// Vectorizable math for the row kernels (softmax, layer_norm): written as plain scalar C++ that GCC
// auto-vectorizes when inlined into a function compiled for AVX2 or AVX-512 (see MT_ISA_DISPATCH).
//
// - exp_nonpos(x): e^x for x <= 0 (what softmax needs: x - max), branch-free so loops over it vectorize.
//   Cephes' polynomial (float, ~1 ulp) / Pade (double, ~1 ulp) on the reduced argument; 2^n is built by
//   integer arithmetic on the exponent bits. Below the normal range it returns exactly 0, so masked (-inf)
//   positions get exactly zero weight; NaN stays NaN.
// - lane_sum / lane_max: reductions over kLanes interleaved partial results, combined in a fixed order.
//   GCC does not vectorize a plain floating-point reduction (it would reorder the additions); with
//   explicit lanes it does, and the result does not depend on the ISA's vector width.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "common.h"

namespace mt {

constexpr int kLanes = 16;

template <class To, class From>
MT_ALWAYS_INLINE To bits(From x) {
    static_assert(sizeof(To) == sizeof(From), "bit cast between types of different sizes");
    To y;
    std::memcpy(&y, &x, sizeof(To));
    return y;
}

MT_ALWAYS_INLINE float exp_nonpos(float x) {
    const float lo = -87.0f;                      // e^-87 ~ 1.6e-38: the smallest normal float is 1.2e-38
    const float magic = 12582912.0f;              // 1.5 * 2^23: adding it rounds to an integer in the low bits
    const float xc = x < lo ? lo : x;
    const float t = xc * 1.44269504088896341f + magic;
    const float n = t - magic;                    // round(x / ln 2)
    const float r = xc - n * 0.693359375f - n * -2.12194440e-4f;  // x - n ln 2 (ln 2 split in two)
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    const int32_t e = (bits<int32_t>(t) - bits<int32_t>(magic) + 127) << 23;  // the float 2^n
    const float y = p * bits<float>(e);
    return x < lo ? 0.0f : y;
}

MT_ALWAYS_INLINE double exp_nonpos(double x) {
    const double lo = -708.0;
    const double magic = 6755399441055744.0;      // 1.5 * 2^52
    const double xc = x < lo ? lo : x;
    const double t = xc * 1.4426950408889634074 + magic;
    const double n = t - magic;
    const double r = xc - n * 6.93145751953125e-1 - n * 1.42860682030941723212e-6;
    const double rr = r * r;
    const double px = r * ((1.26177193074810590878e-4 * rr + 3.02994407707441961300e-2) * rr + 9.99999999999999999910e-1);
    const double qx = ((3.00198505138664455042e-6 * rr + 2.52448340349684104192e-3) * rr + 2.27265548208155028766e-1) * rr +
                      2.00000000000000000009e0;
    const double p = 1.0 + 2.0 * px / (qx - px);
    const int64_t e = (bits<int64_t>(t) - bits<int64_t>(magic) + 1023) << 52;
    const double y = p * bits<double>(e);
    return x < lo ? 0.0 : y;
}

template <class T, class F>
MT_ALWAYS_INLINE T lane_sum(index_t n, F value) {
    T acc[kLanes] = {};
    index_t j = 0;
    for (; j + kLanes <= n; j += kLanes)
        for (int l = 0; l < kLanes; ++l) acc[l] += value(j + l);
    for (int l = 0; j < n; ++j, ++l) acc[l] += value(j);
    T s = 0;
    for (int l = 0; l < kLanes; ++l) s += acc[l];
    return s;
}

template <class T, class F>
MT_ALWAYS_INLINE T lane_max(index_t n, F value) {
    T acc[kLanes];
    for (int l = 0; l < kLanes; ++l) acc[l] = -std::numeric_limits<T>::infinity();
    index_t j = 0;
    for (; j + kLanes <= n; j += kLanes)
        for (int l = 0; l < kLanes; ++l) {
            const T v = value(j + l);
            acc[l] = v > acc[l] || v != v ? v : acc[l];  // NaN wins, as in numpy's max
        }
    for (int l = 0; j < n; ++j, ++l) {
        const T v = value(j);
        acc[l] = v > acc[l] || v != v ? v : acc[l];
    }
    T m = acc[0];
    for (int l = 1; l < kLanes; ++l) m = acc[l] > m || acc[l] != acc[l] ? acc[l] : m;
    return m;
}

// Define NAME_scalar / NAME_avx2 / NAME_avx512 from one always-inline template NAME_impl<T>, and NAME<T>(isa,
// args...) that calls the variant for the ISA. The body is compiled (and vectorized) once per ISA.
#if MT_X86
#define MT_ISA_DISPATCH(NAME, PARAMS, ARGS)                                                      \
    template <class T>                                                                          \
    static void NAME##_scalar PARAMS { NAME##_impl<T> ARGS; }                                   \
    template <class T>                                                                          \
    MT_TARGET_AVX2 static void NAME##_avx2 PARAMS { NAME##_impl<T> ARGS; }                      \
    template <class T>                                                                          \
    MT_TARGET_AVX512 static void NAME##_avx512 PARAMS { NAME##_impl<T> ARGS; }                  \
    template <class T>                                                                          \
    static auto NAME##_for(Isa isa) {                                                           \
        return isa == Isa::avx512 ? NAME##_avx512<T> : isa == Isa::avx2 ? NAME##_avx2<T> : NAME##_scalar<T>; \
    }
#else
#define MT_ISA_DISPATCH(NAME, PARAMS, ARGS)                                                      \
    template <class T>                                                                          \
    static void NAME##_scalar PARAMS { NAME##_impl<T> ARGS; }                                   \
    template <class T>                                                                          \
    static auto NAME##_for(Isa) { return NAME##_scalar<T>; }
#endif

}  // namespace mt
