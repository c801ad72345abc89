// Row kernels (softmax family, layer_norm) and the vectorizable math they use, compiled once per ISA:
// row_kernels.cpp includes this file three times, inside `#pragma GCC target(...)` and its own namespace,
// so every function here (lambdas and templates included) is compiled for that ISA from the start. (GCC
// lowers vector operations a function's own ISA lacks before inlining, so generic helpers merely inlined
// into an AVX-512 function would still run as scalar code.)
//
// - exp_nonpos(x): e^x for x <= 0 (what softmax needs: x - max). Cephes' polynomial (float, ~1 ulp) / Pade
//   (double, ~1 ulp) on the reduced argument; 2^n is built by integer arithmetic on the exponent bits.
//   Below the normal range it returns exactly 0, so masked (-inf) positions get exactly zero weight.
// - lane_sum / lane_max: reductions over kLanes interleaved partial results (a GCC vector), combined by a
//   fixed tree. GCC does not vectorize a plain floating-point reduction (that would reorder additions);
//   with an explicit vector it does, and since kLanes is fixed the result does not depend on the ISA.
#ifndef MT_KERNEL_ISA
#error "row_kernels_body.h is included by row_kernels.cpp with MT_KERNEL_ISA set"
#endif

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
    // the float 2^n; unsigned, since for a NaN x the exponent field is negative and shifting that is undefined
    const uint32_t e = (bits<uint32_t>(t) - bits<uint32_t>(magic) + 127u) << 23;
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
    const uint64_t e = (bits<uint64_t>(t) - bits<uint64_t>(magic) + 1023u) << 52;
    const double y = p * bits<double>(e);
    return x < lo ? 0.0 : y;
}

// N elements as one GCC vector: the compiler splits it into the registers of whatever ISA the caller is
// compiled for (for float, kLanes = 16 is one zmm, two ymm or four xmm).
template <class T, int N = kLanes>
struct Lanes {
    typedef T type __attribute__((vector_size(N * sizeof(T))));
};

template <class T>
MT_ALWAYS_INLINE typename Lanes<T>::type load_lanes(const T* p) {
    typename Lanes<T>::type v;
    std::memcpy(&v, p, sizeof(v));
    return v;
}

template <class T>
MT_ALWAYS_INLINE typename Lanes<T>::type gather_lanes(const T* p, index_t stride) {
    typename Lanes<T>::type v;
    for (int l = 0; l < kLanes; ++l) v[l] = p[l * stride];
    return v;
}

// Combine the two halves of v with op, down to one element: a fixed tree, so the result is the same on
// every ISA (and cheaper than a lane-by-lane loop, which would keep v in memory).
template <class T, int N, class Op>
MT_ALWAYS_INLINE T tree_reduce(typename Lanes<T, N>::type v, Op op) {
    if constexpr (N * sizeof(T) <= 16) {  // below one xmm register GCC emulates vectors: finish in scalars
        T r = v[0];
        for (int l = 1; l < N; ++l) {
            typename Lanes<T, 1>::type a = {r}, b = {v[l]};
            r = op(a, b)[0];
        }
        return r;
    } else {
        typename Lanes<T, N / 2>::type lo, hi;
        std::memcpy(&lo, &v, sizeof(lo));
        std::memcpy(&hi, reinterpret_cast<const char*>(&v) + sizeof(lo), sizeof(hi));
        return tree_reduce<T, N / 2>(op(lo, hi), op);
    }
}

// sum over j < n of f(j): `vec(j)` gives elements j..j+kLanes-1 as a Lanes vector, `one(j)` a single element.
// Four accumulators: one would chain every add on the previous one (4 cycles each), so a row in L1 would be
// summed at a quarter of the load rate; four independent chains keep the adder busy.
template <class T, class VecF, class OneF>
MT_ALWAYS_INLINE T lane_sum(index_t n, VecF vec, OneF one) {
    typename Lanes<T>::type acc = {}, acc1 = {}, acc2 = {}, acc3 = {};
    index_t j = 0;
    for (; j + 4 * kLanes <= n; j += 4 * kLanes) {
        acc += vec(j);
        acc1 += vec(j + kLanes);
        acc2 += vec(j + 2 * kLanes);
        acc3 += vec(j + 3 * kLanes);
    }
    for (; j + kLanes <= n; j += kLanes) acc += vec(j);
    acc = (acc + acc1) + (acc2 + acc3);
    T s = tree_reduce<T, kLanes>(acc, [](auto a, auto b) { return a + b; });
    for (; j < n; ++j) s += one(j);
    return s;
}

// Lanes of b where b > a or b is NaN, else of a: a max that lets NaN win, as numpy's does. Written as a
// bitwise select on the comparison masks (GCC lowers a vector `?:` on combined masks lane by lane).
template <class V>
MT_ALWAYS_INLINE V nan_max(V a, V b) {
    typedef decltype(a > b) M;
    const M take_b = (b > a) | (b != b);
    return (V)(((M)b & take_b) | ((M)a & ~take_b));
}

// exp_nonpos on a whole Lanes vector (the same steps and constants as the scalar versions above, with the
// selects done on comparison masks), so a row loop can exponentiate, store and sum in one pass. N lanes: a
// caller wanting every comparison vectorized passes the ISA's register width (GCC splits arithmetic on wider
// vectors into registers, but lowers a comparison wider than a register lane by lane).
template <class T, int N = kLanes>
MT_ALWAYS_INLINE typename Lanes<T, N>::type exp_nonpos_lanes(typename Lanes<T, N>::type x) {
    typedef typename Lanes<T, N>::type V;
    typedef decltype(x < x) M;  // integer lanes of T's width
    constexpr bool f32 = sizeof(T) == 4;
    const T lo = f32 ? T(-87.0) : T(-708.0);
    const T magic = f32 ? T(12582912.0) : T(6755399441055744.0);
    const M below = x < lo;
    const V xc = (V)(((M)(V{} + lo) & below) | ((M)x & ~below));
    const V t = xc * (f32 ? T(1.44269504088896341) : T(1.4426950408889634074)) + magic;
    const V n = t - magic;
    V p;
    if constexpr (f32) {
        const V r = xc - n * T(0.693359375) - n * T(-2.12194440e-4);
        p = T(1.9875691500e-4) - V{};
        p = p * r + T(1.3981999507e-3);
        p = p * r + T(8.3334519073e-3);
        p = p * r + T(4.1665795894e-2);
        p = p * r + T(1.6666665459e-1);
        p = p * r + T(5.0000001201e-1);
        p = p * r * r + r + T(1);
    } else {
        const V r = xc - n * T(6.93145751953125e-1) - n * T(1.42860682030941723212e-6);
        const V rr = r * r;
        const V px = r * ((T(1.26177193074810590878e-4) * rr + T(3.02994407707441961300e-2)) * rr +
                          T(9.99999999999999999910e-1));
        const V qx = ((T(3.00198505138664455042e-6) * rr + T(2.52448340349684104192e-3)) * rr +
                      T(2.27265548208155028766e-1)) * rr + T(2.00000000000000000009e0);
        p = T(1) + T(2) * px / (qx - px);
    }
    const M bias = (M)(V{} + magic);
    const M e = ((M)t - bias + (f32 ? 127 : 1023)) << (f32 ? 23 : 52);  // the float 2^n, lane by lane
    return (V)((M)(p * (V)e) & ~below);                                  // exactly 0 below the normal range
}

// max over j < n of f(j), NaN winning as in numpy.
template <class T, class VecF, class OneF>
MT_ALWAYS_INLINE T lane_max(index_t n, VecF vec, OneF one) {
    typedef typename Lanes<T>::type V;
    auto max_op = [](auto a, auto b) { return nan_max(a, b); };
    V acc = V{} - std::numeric_limits<T>::infinity(), acc1 = acc;  // two chains, as in lane_sum
    index_t j = 0;
    for (; j + 2 * kLanes <= n; j += 2 * kLanes) {
        acc = nan_max(acc, vec(j));
        acc1 = nan_max(acc1, vec(j + kLanes));
    }
    for (; j + kLanes <= n; j += kLanes) acc = nan_max(acc, vec(j));
    acc = nan_max(acc, acc1);
    T m = tree_reduce<T, kLanes>(acc, max_op);
    for (; j < n; ++j) {
        const T v = one(j);
        m = (v > m) | (v != v) ? v : m;
    }
    return m;
}


template <class T>
void softmax_rows(index_t r0, index_t r1, index_t n, const T* x, T* y, const T* mask,
                                        const RowIndexer& mi, bool log) {
    const T nan = std::numeric_limits<T>::quiet_NaN();
    for (index_t r = r0; r < r1; ++r) {
        const T* xr = x + r * n;
        T* yr = y + r * n;
        const T* mr = mask ? mask + mi.offset(r) : nullptr;
        const index_t ms = mi.col_stride;
        T m;
        auto one_x = [&](index_t j) { return xr[j]; };
        auto one_xm = [&](index_t j) { return xr[j] + mr[j * ms]; };
        if (!mr) m = lane_max<T>(n, [&](index_t j) { return load_lanes(xr + j); }, one_x);
        else if (ms == 1) m = lane_max<T>(n, [&](index_t j) { return load_lanes(xr + j) + load_lanes(mr + j); }, one_xm);
        else m = lane_max<T>(n, [&](index_t j) { return load_lanes(xr + j) + gather_lanes(mr + j * ms, ms); }, one_xm);
        if (m == -std::numeric_limits<T>::infinity()) {  // fully masked row
            for (index_t j = 0; j < n; ++j) yr[j] = nan;
            continue;
        }
        // one pass: e = exp(x + mask - m), stored into y and summed
        auto exp_store = [&](index_t j) {
            auto v = load_lanes(xr + j);
            if (mr) v += ms == 1 ? load_lanes(mr + j) : gather_lanes(mr + j * ms, ms);
            const auto e = exp_nonpos_lanes<T>(v - m);
            std::memcpy(yr + j, &e, sizeof(e));
            return e;
        };
        auto exp_store_one = [&](index_t j) { return yr[j] = exp_nonpos((mr ? xr[j] + mr[j * ms] : xr[j]) - m); };
        const T s = lane_sum<T>(n, exp_store, exp_store_one);
        if (!log) {
            const T inv = T(1) / s;
            for (index_t j = 0; j < n; ++j) yr[j] *= inv;
        } else {
            // (x - m) - log(s), not x - (m + log(s)): at |m| ~ 1e7 (float32) m + log(s) rounds log(s) away
            const T log_s = std::log(s);
            if (!mr)
                for (index_t j = 0; j < n; ++j) yr[j] = (xr[j] - m) - log_s;
            else
                for (index_t j = 0; j < n; ++j) yr[j] = (xr[j] + mr[j * ms] - m) - log_s;
        }
    }
}
template <class T>
void softmax_back_rows(index_t r0, index_t r1, index_t n, const T* y, const T* g, T* dx, bool log) {
    for (index_t r = r0; r < r1; ++r) {
        const T* yr = y + r * n;
        const T* gr = g + r * n;
        T* dr = dx + r * n;
        if (!log) {
            const T dot = lane_sum<T>(n, [&](index_t j) { return load_lanes(gr + j) * load_lanes(yr + j); },
                                      [&](index_t j) { return gr[j] * yr[j]; });
            for (index_t j = 0; j < n; ++j) dr[j] = yr[j] * (gr[j] - dot);
        } else {
            const T sg = lane_sum<T>(n, [&](index_t j) { return load_lanes(gr + j); }, [&](index_t j) { return gr[j]; });
            for (index_t j = 0; j < n; ++j) dr[j] = gr[j] - exp_nonpos(yr[j]) * sg;
        }
    }
}
template <class T>
void ln_forward_rows(index_t r0, index_t r1, index_t n, const T* x, const T* w, const T* b, T eps,
                                           T* y, T* mean, T* rstd) {
    for (index_t r = r0; r < r1; ++r) {
        const T* xr = x + r * n;
        T* yr = y + r * n;
        // Moments of x - k, k the row's first element: a constant row of 3e38 would overflow the plain sum
        // (inf, then NaN), and a large common offset would cost the mean its precision. d = x - mu = x - k - dmu.
        const T k = xr[0];
        const T dmu = lane_sum<T>(n, [&](index_t j) { return load_lanes(xr + j) - k; }, [&](index_t j) { return xr[j] - k; }) / T(n);
        const T var = lane_sum<T>(
                          n, [&](index_t j) { auto d = (load_lanes(xr + j) - k) - dmu; return d * d; },
                          [&](index_t j) { return (xr[j] - k - dmu) * (xr[j] - k - dmu); }) / T(n);
        const T rs = T(1) / std::sqrt(var + eps);
        const T mu = k + dmu;
        mean[r] = mu;
        rstd[r] = rs;
        if (w && b)
            for (index_t j = 0; j < n; ++j) yr[j] = (xr[j] - k - dmu) * rs * w[j] + b[j];
        else if (w)
            for (index_t j = 0; j < n; ++j) yr[j] = (xr[j] - k - dmu) * rs * w[j];
        else if (b)
            for (index_t j = 0; j < n; ++j) yr[j] = (xr[j] - k - dmu) * rs + b[j];
        else
            for (index_t j = 0; j < n; ++j) yr[j] = (xr[j] - k - dmu) * rs;
    }
}
// dx for rows [r0, r1); and, when pw/pb are given, this chunk's partial sums of g * xhat and g.
template <class T>
void ln_backward_rows(index_t r0, index_t r1, index_t n, const T* g, const T* x, const T* mean,
                                            const T* rstd, const T* w, T* dx, T* pw, T* pb) {
    const T inv_n = T(1) / T(n);
    for (index_t r = r0; r < r1; ++r) {
        const T *gr = g + r * n, *xr = x + r * n;
        T* dr = dx + r * n;
        const T mu = mean[r], rs = rstd[r];
        T a, c;
        if (w) {
            a = lane_sum<T>(n, [&](index_t j) { return load_lanes(gr + j) * load_lanes(w + j); },
                            [&](index_t j) { return gr[j] * w[j]; }) * inv_n;
            c = lane_sum<T>(n, [&](index_t j) { return load_lanes(gr + j) * load_lanes(w + j) * (load_lanes(xr + j) - mu) * rs; },
                            [&](index_t j) { return gr[j] * w[j] * (xr[j] - mu) * rs; }) * inv_n;
            for (index_t j = 0; j < n; ++j) dr[j] = rs * (gr[j] * w[j] - a - (xr[j] - mu) * rs * c);
        } else {
            a = lane_sum<T>(n, [&](index_t j) { return load_lanes(gr + j); }, [&](index_t j) { return gr[j]; }) * inv_n;
            c = lane_sum<T>(n, [&](index_t j) { return load_lanes(gr + j) * (load_lanes(xr + j) - mu) * rs; },
                            [&](index_t j) { return gr[j] * (xr[j] - mu) * rs; }) * inv_n;
            for (index_t j = 0; j < n; ++j) dr[j] = rs * (gr[j] - a - (xr[j] - mu) * rs * c);
        }
        if (pw) {
            for (index_t j = 0; j < n; ++j) pw[j] += gr[j] * (xr[j] - mu) * rs;
            for (index_t j = 0; j < n; ++j) pb[j] += gr[j];
        }
    }
}
